//! Discovery: sysfs + configuration -> [`Inventory`].
//!
//! One module per device kind ([`pci`], [`mdev`], [`usb`]) over the shared pieces here.
//! Invariants: discovery never panics and never fails as a whole; every device it looks at is
//! either advertised or listed in [`Inventory::skipped`] with a reason (nothing is dropped
//! silently, unlike KubeVirt #11412); every served resource appears in the inventory, even with
//! no devices, so its plugin can advertise an empty list and pick devices up on hotplug.

pub mod mdev;
pub mod pci;
pub mod usb;

use std::collections::BTreeMap;

use crate::config::{AgentConfig, ResourceConfig};
use crate::inventory::{Inventory, Member, PluginDevice, Resource, Skipped};
use crate::sysfs::{HostPaths, SysDir};

/// Looks at every PCI function, mdev and USB device under `paths` and decides, per device,
/// which served resource advertises it or why none does.
pub fn discover(paths: &HostPaths, cfg: &AgentConfig) -> Inventory {
    let mut inv = Inventory::default();
    for r in cfg.served() {
        inv.resources.insert(
            r.name.clone(),
            Resource {
                name: r.name.clone(),
                kind: r.kind(),
                devices: Vec::new(),
                notes: Vec::new(),
            },
        );
    }
    let root = match paths.open_sysfs() {
        Ok(root) => root,
        Err(e) => {
            inv.skipped.push(Skipped {
                device: "sysfs".into(),
                reason: format!("cannot open the sysfs root: {e}"),
            });
            return inv;
        }
    };
    let dev = match paths.open_dev() {
        Ok(dev) => Some(dev),
        Err(e) => {
            inv.skipped.push(Skipped {
                device: "dev".into(),
                reason: format!(
                    "cannot open the dev root ({e}); every device is reported unhealthy"
                ),
            });
            None
        }
    };
    let ctx = Ctx {
        root: &root,
        dev: dev.as_ref(),
        cfg,
    };
    pci::discover(&ctx, &mut inv);
    mdev::discover(&ctx, &mut inv);
    usb::discover(&ctx, &mut inv);
    for r in inv.resources.values_mut() {
        r.devices.sort_by_cached_key(|d| natural_key(&d.id));
    }
    inv
}

/// What every kind's discovery needs.
pub struct Ctx<'a> {
    pub root: &'a SysDir,
    pub dev: Option<&'a SysDir>,
    pub cfg: &'a AgentConfig,
}

impl Ctx<'_> {
    /// A device is healthy when its node exists under the dev root.
    pub fn node_exists(&self, rel: &str) -> bool {
        self.dev.is_some_and(|d| d.exists(rel))
    }

    /// The reason for a device no served selector matched: maybe a resource this agent does
    /// not serve (external / kubevirt) wants it.
    pub fn unserved_reason(
        &self,
        what: &str,
        matches: impl Fn(&ResourceConfig) -> Option<String>,
    ) -> String {
        for r in self
            .cfg
            .resources
            .iter()
            .filter(|r| !self.cfg.serve.serves(r.external))
        {
            if let Some(field) = matches(r) {
                let who = if r.external {
                    "an external device plugin"
                } else {
                    "KubeVirt itself"
                };
                return format!(
                    "{what} matches {field} ({}), which {who} serves (this agent: --serve {})",
                    r.name,
                    self.cfg.serve.as_str()
                );
            }
        }
        format!("{what} matches no permitted selector")
    }
}

/// Numeric-aware sort key so ids `2` < `10`, and `1-1.2` < `1-1.10`.
fn natural_key(s: &str) -> Vec<(u64, String)> {
    let mut key = Vec::new();
    let mut num = String::new();
    let mut text = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
        } else {
            if !num.is_empty() {
                key.push((num.parse().unwrap_or(u64::MAX), std::mem::take(&mut text)));
                num.clear();
            }
            text.push(c);
        }
    }
    key.push((num.parse().unwrap_or(0), text));
    key
}

/// A function or mdev that matched a served resource and can be assigned.
pub struct GroupCandidate {
    pub resource: String,
    /// The matching selector's position in its config list (earlier entries win a group).
    pub order: usize,
    pub field: String,
    pub label: String,
    pub group: u32,
    pub numa: Option<i64>,
    pub member: Member,
}

/// Turns candidates into kubelet devices keyed by IOMMU group: a group is one device whose
/// members are every permitted function in it (a VM must own the whole group); a group wanted
/// by several resources goes to the earliest config entry and the rest are skipped, named.
pub fn assign_groups(ctx: &Ctx, kind: &str, candidates: Vec<GroupCandidate>, inv: &mut Inventory) {
    let mut groups: BTreeMap<u32, Vec<GroupCandidate>> = BTreeMap::new();
    for c in candidates {
        groups.entry(c.group).or_default().push(c);
    }
    for (group, mut members) in groups {
        members.sort_by_key(|m| m.order);
        let owner = members[0].resource.clone();
        let owner_field = members[0].field.clone();
        let (mine, others): (Vec<_>, Vec<_>) =
            members.into_iter().partition(|m| m.resource == owner);
        for o in others {
            inv.skipped.push(Skipped {
                device: o.label,
                reason: format!(
                    "its IOMMU group {group} is advertised by {owner} ({owner_field} comes before {}); a VM must own a whole group, so it cannot also be in {}",
                    o.field, o.resource
                ),
            });
        }
        let Some(resource) = inv.resources.get_mut(&owner) else {
            continue;
        };
        if mine.len() > 1 {
            let labels: Vec<&str> = mine.iter().map(|m| m.label.as_str()).collect();
            resource.notes.push(format!(
                "IOMMU group {group} holds {} permitted {kind} devices ({}): advertised as one device {group}; allocating it gives the VM all of them",
                mine.len(),
                labels.join(", ")
            ));
        }
        let mut numa: Vec<i64> = mine.iter().filter_map(|m| m.numa).collect();
        numa.sort_unstable();
        numa.dedup();
        resource.devices.push(PluginDevice {
            id: group.to_string(),
            healthy: ctx.node_exists(&format!("vfio/{group}")),
            numa_nodes: numa,
            members: mine.into_iter().map(|m| m.member).collect(),
        });
    }
}

/// Parses `numa_node` (`-1` or unreadable: no topology).
pub fn read_numa(dir: &SysDir) -> Option<i64> {
    dir.read_trimmed("numa_node")
        .ok()?
        .parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
}

/// The IOMMU group of a device: the `iommu_group` link must resolve lexically to
/// `kernel/iommu_groups/<N>` inside the root.
pub fn read_iommu_group(dir: &SysDir) -> Result<u32, String> {
    match dir.resolve_link("iommu_group") {
        Ok(rel) => {
            let parent = rel.parent().map(|p| p.to_string()).unwrap_or_default();
            match (parent.as_str(), rel.file_name().parse::<u32>()) {
                ("kernel/iommu_groups", Ok(n)) => Ok(n),
                _ => Err(format!(
                    "iommu_group link points to {rel}, not kernel/iommu_groups/<N>"
                )),
            }
        }
        Err(e) if e.is_not_found() => Err(
            "has no IOMMU group (boot the host with intel_iommu=on or amd_iommu=on)".to_string(),
        ),
        Err(e) => Err(format!("cannot read its IOMMU group: {e}")),
    }
}

/// Opens and lists `bus/<bus>/devices`. A missing bus is normal (no module, no devices) and
/// gives `None` silently (KubeVirt logged errors for a missing mdev bus, #10344); any other
/// failure is recorded as a skipped "<bus> bus" with its error, and gives `None` too.
pub(crate) fn open_bus(ctx: &Ctx, inv: &mut Inventory, bus: &str) -> Option<(SysDir, Vec<String>)> {
    let path = crate::sysfs::RelPath::new(&format!("bus/{bus}/devices")).unwrap_or_default();
    let dir = match ctx.root.open_from_root(&path) {
        Ok(dir) => dir,
        Err(e) if e.is_not_found() => return None,
        Err(e) => {
            inv.skipped.push(Skipped {
                device: format!("{bus} bus"),
                reason: format!("cannot open: {e}"),
            });
            return None;
        }
    };
    match dir.list(None) {
        Ok(names) => Some((dir, names)),
        Err(e) => {
            inv.skipped.push(Skipped {
                device: format!("{bus} bus"),
                reason: format!("cannot list: {e}"),
            });
            None
        }
    }
}
