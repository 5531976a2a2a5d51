//! Creates and removes mediated devices to match `mediatedDevicesConfiguration`.
//!
//! Each call reconciles purely from desired (configuration + node labels) against actual
//! (sysfs); it keeps no memory of earlier calls, so a type removed from the configuration and
//! added back is created again (KubeVirt #8425 cannot happen). Per parent card:
//! - mdevs whose type is not desired are removed (`1` written to `<mdev>/remove`);
//! - a card left with no mdevs gets ONE desired type it supports (the desired type on the fewest
//!   cards so far, then config order, so several types spread over several cards), and
//!   `available_instances` mdevs of it, each created by writing a new UUID to `create`.
//!
//! Every failed write is reported with its path and errno; none stops the others.

use std::collections::BTreeMap;

use crate::config::{AgentConfig, NodeLabels};
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
            self.types.insert(type_id, TypeState { available, devices });
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
    for p in &mut parents {
        remove_undesired(p, &report.desired.clone(), &mut report);
    }
    create_missing(&mut parents, uuids, &mut report);
    report
}

fn remove_undesired(p: &mut Parent, desired: &[String], report: &mut MdevReport) {
    let mut removed_any = false;
    for (type_id, t) in &p.types {
        if desired.contains(type_id) {
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
    // How many cards already carry each desired type: new cards go to the least used type.
    let mut cards_per_type: BTreeMap<&str, usize> =
        report.desired.iter().map(|t| (t.as_str(), 0)).collect();
    for p in parents.iter() {
        for (type_id, t) in &p.types {
            if let Some(n) = cards_per_type.get_mut(type_id.as_str())
                && !t.devices.is_empty()
            {
                *n += 1;
            }
        }
    }
    let mut created = Vec::new();
    let mut errors = Vec::new();
    let mut notes = Vec::new();
    for p in parents.iter().filter(|p| p.mdev_count() == 0) {
        let choice = (report.desired.iter().enumerate())
            .filter(|(_, t)| p.types.get(t.as_str()).is_some_and(|s| s.available > 0))
            .min_by_key(|(i, t)| (cards_per_type.get(t.as_str()).copied().unwrap_or(0), *i));
        let Some((_, type_id)) = choice else {
            if !report.desired.is_empty() {
                notes.push(format!(
                    "{} supports none of the desired types {:?} (or has no instances left)",
                    p.name, report.desired
                ));
            }
            continue;
        };
        *cards_per_type.entry(type_id.as_str()).or_default() += 1;
        let available = p.types[type_id.as_str()].available;
        let type_dir = match p
            .dir
            .subdir("mdev_supported_types")
            .and_then(|d| d.subdir(type_id))
        {
            Ok(d) => d,
            Err(error) => {
                errors.push(MdevWriteError {
                    action: format!("create {type_id} on {}", p.name),
                    error,
                });
                continue;
            }
        };
        for _ in 0..available {
            let uuid = uuids.next_uuid();
            match type_dir.write("create", &uuid) {
                Ok(()) => created.push(MdevChange {
                    uuid,
                    parent: p.name.clone(),
                    type_id: type_id.clone(),
                }),
                Err(error) => {
                    errors.push(MdevWriteError {
                        action: format!("create {type_id} {uuid} on {}", p.name),
                        error,
                    });
                    break; // the card refuses more; the next reconcile retries
                }
            }
        }
    }
    report.created.extend(created);
    report.errors.extend(errors);
    report.notes.extend(notes);
}
