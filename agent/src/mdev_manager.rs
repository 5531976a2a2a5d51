//! Creates and removes mediated devices to match `mediatedDevicesConfiguration`.
//!
//! Each call reconciles purely from desired (configuration + node labels) against actual
//! (sysfs); it keeps no memory of earlier calls, so a type removed from the configuration and
//! added back is created again (KubeVirt #8425 cannot happen). As KubeVirt's
//! `dm/mediated_devices_types.go` does:
//! - a desired entry names a type by its id (`nvidia-230`) or by its name with spaces written
//!   as `_` (`GRID_T4-1Q`), both for creating and for keeping;
//! - mdevs whose type is neither desired nor the selector of an `externalResourceProvider: true`
//!   mediated entry are removed (`1` written to `<mdev>/remove`);
//! - a card holding any mdev counts as configured and is left alone; the others are handed out
//!   round robin: the desired types take turns (in configuration order, where KubeVirt walks a
//!   Go map in random order), each taking its next unconfigured card that supports it, until the
//!   types or the cards run out. A card gets ONE type and `available_instances` mdevs of it,
//!   each created by writing a new UUID to `create`.
//!
//! Every failed write is reported with its path and errno; none stops the others.

use std::collections::BTreeMap;

use crate::config::{AgentConfig, NodeLabels, ResourceSource, normalize_mdev_name};
use crate::sysfs::{HostPaths, RelPath, SysDir, SysfsError};

/// Where new mdev UUIDs come from (random in production, seeded in tests).
pub trait UuidSource {
    fn next_uuid(&mut self) -> String;
}

/// Random v4 UUIDs.
pub struct RandomUuids;

impl UuidSource for RandomUuids {
    fn next_uuid(&mut self) -> String {
        uuid::Uuid::new_v4().to_string()
    }
}

/// Reproducible v4 UUIDs from a seed (splitmix64).
pub struct SeededUuids {
    state: u64,
}

impl SeededUuids {
    pub fn new(seed: u64) -> Self {
        SeededUuids { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl UuidSource for SeededUuids {
    fn next_uuid(&mut self) -> String {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        bytes[8..].copy_from_slice(&self.next_u64().to_le_bytes());
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .to_string()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MdevChange {
    pub uuid: String,
    pub parent: String,
    pub type_id: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MdevWriteError {
    /// What was being done: `remove mdev <uuid>`, `create nvidia-230 on 0000:65:00.0`.
    pub action: String,
    pub error: SysfsError,
}

impl std::fmt::Display for MdevWriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.action, self.error)
    }
}

/// What one reconcile did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MdevReport {
    /// False: the configuration does not manage mdevs; nothing was touched.
    pub managed: bool,
    pub desired: Vec<String>,
    pub removed: Vec<MdevChange>,
    pub created: Vec<MdevChange>,
    pub errors: Vec<MdevWriteError>,
    /// Worth telling an operator (a card supporting no desired type, ...).
    pub notes: Vec<String>,
}

/// One mdev type of a parent, as sysfs shows it now.
struct TypeState {
    /// The type's `name` with spaces as `_`, trimmed (empty when it has none).
    name: String,
    available: u32,
    devices: Vec<String>,
}

struct Parent {
    name: String,
    dir: SysDir,
    types: BTreeMap<String, TypeState>,
}

impl Parent {
    fn open(root: &SysDir, name: &str) -> Result<Parent, SysfsError> {
        let class = root.open_from_root(&RelPath::new("class/mdev_bus").unwrap_or_default())?;
        let dir = class.follow(name)?;
        let mut parent = Parent {
            name: name.to_ascii_lowercase(),
            dir,
            types: BTreeMap::new(),
        };
        parent.refresh()?;
        Ok(parent)
    }

    fn refresh(&mut self) -> Result<(), SysfsError> {
        self.types.clear();
        let types_dir = self.dir.subdir("mdev_supported_types")?;
        for type_id in types_dir.list(None)? {
            let t = types_dir.subdir(&type_id)?;
            let available = t
                .read_trimmed("available_instances")
                .ok()
                .and_then(|a| a.parse().ok())
                .unwrap_or(0);
            let devices = t.list(Some("devices")).unwrap_or_default();
            let name = t
                .read_trimmed("name")
                .map(|n| normalize_mdev_name(&n))
                .unwrap_or_default();
            self.types.insert(
                type_id,
                TypeState {
                    name,
                    available,
                    devices,
                },
            );
        }
        Ok(())
    }

    fn mdev_count(&self) -> usize {
        self.types.values().map(|t| t.devices.len()).sum()
    }
}

pub fn reconcile_mdevs(
    paths: &HostPaths,
    cfg: &AgentConfig,
    node_labels: &NodeLabels,
    uuids: &mut dyn UuidSource,
) -> MdevReport {
    let mut report = MdevReport {
        managed: cfg.mdev_types.managed,
        ..Default::default()
    };
    if !report.managed {
        return report;
    }
    report.desired = cfg.mdev_types.desired_for(node_labels);
    let root = match paths.open_sysfs() {
        Ok(root) => root,
        Err(error) => {
            report.errors.push(MdevWriteError {
                action: "open sysfs".into(),
                error,
            });
            return report;
        }
    };
    let names = match root.list(Some("class/mdev_bus")) {
        Ok(names) => names,
        Err(e) if e.is_not_found() => return report, // no mdev-capable card on this node
        Err(error) => {
            report.errors.push(MdevWriteError {
                action: "list mdev parents".into(),
                error,
            });
            return report;
        }
    };
    let mut parents = Vec::new();
    for name in names {
        match Parent::open(&root, &name) {
            Ok(p) => parents.push(p),
            Err(error) => report.errors.push(MdevWriteError {
                action: format!("read mdev parent {name}"),
                error,
            }),
        }
    }
    let keep: Vec<String> = (report.desired.iter().map(|t| normalize_mdev_name(t)))
        .chain(external_selectors(cfg))
        .collect();
    for p in &mut parents {
        remove_undesired(p, &keep, &mut report);
    }
    create_missing(&mut parents, uuids, &mut report);
    report
}

/// The type names of `externalResourceProvider: true` mediated entries: another provider made
/// those mdevs, so they are never removed (KubeVirt PR #9250).
fn external_selectors(cfg: &AgentConfig) -> impl Iterator<Item = String> + '_ {
    (cfg.resources.iter().filter(|r| r.external))
        .filter_map(|r| match &r.source {
            ResourceSource::Mdev(sels) => Some(sels.iter().map(|s| s.name.clone())),
            _ => None,
        })
        .flatten()
}

/// Whether `wanted` (an entry of a desired or kept list) names this type, by id or by name.
fn names_type(wanted: &str, type_id: &str, t: &TypeState) -> bool {
    wanted == type_id || (!t.name.is_empty() && wanted == t.name)
}

fn remove_undesired(p: &mut Parent, keep: &[String], report: &mut MdevReport) {
    let mut removed_any = false;
    for (type_id, t) in &p.types {
        if keep.iter().any(|k| names_type(k, type_id, t)) {
            continue;
        }
        for uuid in &t.devices {
            let result = p.dir.subdir(uuid).and_then(|m| m.write("remove", "1"));
            match result {
                Ok(()) => {
                    removed_any = true;
                    report.removed.push(MdevChange {
                        uuid: uuid.clone(),
                        parent: p.name.clone(),
                        type_id: type_id.clone(),
                    })
                }
                Err(error) => report.errors.push(MdevWriteError {
                    action: format!("remove mdev {uuid}"),
                    error,
                }),
            }
        }
    }
    if removed_any && let Err(error) = p.refresh() {
        report.errors.push(MdevWriteError {
            action: format!("re-read mdev parent {}", p.name),
            error,
        });
    }
}

fn create_missing(parents: &mut [Parent], uuids: &mut dyn UuidSource, report: &mut MdevReport) {
    // The ring: each desired type (once per type id, in configuration order) with the
    // unconfigured cards, in sysfs order, that support it.
    let mut ring: Vec<(String, Vec<usize>)> = Vec::new();
    let unconfigured: Vec<usize> = (0..parents.len())
        .filter(|&i| parents[i].mdev_count() == 0)
        .collect();
    for wanted in &report.desired {
        let wanted = normalize_mdev_name(wanted);
        for &i in &unconfigured {
            let p = &parents[i];
            let Some((type_id, _)) =
                (p.types.iter()).find(|(id, t)| names_type(&wanted, id, t) && t.available > 0)
            else {
                continue;
            };
            match ring.iter_mut().find(|(id, _)| id == type_id) {
                Some((_, cards)) if !cards.contains(&i) => cards.push(i),
                Some(_) => {}
                None => ring.push((type_id.clone(), vec![i])),
            }
        }
    }
    let mut configured = vec![false; parents.len()];
    while !ring.is_empty() {
        let mut k = 0;
        while k < ring.len() {
            let (type_id, cards) = &mut ring[k];
            if let Some(pos) = cards.iter().position(|&c| !configured[c]) {
                let card = cards[pos];
                cards.drain(..=pos);
                configured[card] = true;
                create_on(&parents[card], type_id, uuids, report);
            } else {
                cards.clear();
            }
            if ring[k].1.is_empty() {
                ring.remove(k);
            } else {
                k += 1;
            }
        }
    }
    if !report.desired.is_empty() {
        for &i in &unconfigured {
            if !configured[i] {
                report.notes.push(format!(
                    "{} supports none of the desired types {:?} (or has no instances left, or the types ran out of turns)",
                    parents[i].name, report.desired
                ));
            }
        }
    }
}

/// Creates `available_instances` mdevs of `type_id` on `p`.
fn create_on(p: &Parent, type_id: &str, uuids: &mut dyn UuidSource, report: &mut MdevReport) {
    let available = p.types[type_id].available;
    let type_dir = match p
        .dir
        .subdir("mdev_supported_types")
        .and_then(|d| d.subdir(type_id))
    {
        Ok(d) => d,
        Err(error) => {
            report.errors.push(MdevWriteError {
                action: format!("create {type_id} on {}", p.name),
                error,
            });
            return;
        }
    };
    for _ in 0..available {
        let uuid = uuids.next_uuid();
        match type_dir.write("create", &uuid) {
            Ok(()) => report.created.push(MdevChange {
                uuid,
                parent: p.name.clone(),
                type_id: type_id.to_string(),
            }),
            Err(error) => {
                report.errors.push(MdevWriteError {
                    action: format!("create {type_id} {uuid} on {}", p.name),
                    error,
                });
                break; // the card refuses more; the next reconcile retries
            }
        }
    }
}
