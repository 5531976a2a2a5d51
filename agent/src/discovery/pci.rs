//! PCI functions bound to vfio-pci, matched by vendor:device (and optional address pins).

use crate::config::{PciSelector, ResourceConfig, ResourceSource, normalize_pci_address};
use crate::inventory::{Inventory, Member, Skipped};
use crate::sysfs::{RelPath, SysDir, SysfsError};

use super::{Ctx, GroupCandidate, assign_groups, read_iommu_group, read_numa};

pub const VFIO_DRIVER: &str = "vfio-pci";

/// vendor:device from `uevent`'s `PCI_ID=` (as KubeVirt), else from the `vendor`/`device` files.
pub fn read_ids(dir: &SysDir) -> Result<(u16, u16), SysfsError> {
    let from_uevent = dir.read("uevent").ok().and_then(|text| {
        let id = text.lines().find_map(|l| l.strip_prefix("PCI_ID="))?;
        let (v, d) = id.trim().split_once(':')?;
        Some((
            u16::from_str_radix(v, 16).ok()?,
            u16::from_str_radix(d, 16).ok()?,
        ))
    });
    if let Some(ids) = from_uevent {
        return Ok(ids);
    }
    let hex = |name: &str| -> Result<u16, SysfsError> {
        let text = dir.read_trimmed(name)?;
        u16::from_str_radix(text.trim_start_matches("0x"), 16).map_err(|_| SysfsError::Malformed {
            path: dir.rel().join(name).to_string(),
            content: text,
        })
    };
    Ok((hex("vendor")?, hex("device")?))
}

/// The driver a device is bound to (`None`: unbound); the link must stay inside the root.
pub fn read_driver(dir: &SysDir) -> Result<Option<String>, SysfsError> {
    match dir.resolve_link("driver") {
        Ok(rel) => Ok(Some(rel.file_name().to_string())),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

fn selectors(cfg: &crate::config::AgentConfig) -> Vec<(&ResourceConfig, &PciSelector)> {
    cfg.served()
        .filter_map(|r| match &r.source {
            ResourceSource::Pci(sels) => Some(sels.iter().map(move |s| (r, s))),
            _ => None,
        })
        .flatten()
        .collect()
}

pub fn discover(ctx: &Ctx, inv: &mut Inventory) {
    let Some((bus, names)) = super::open_bus(ctx, inv, "pci") else {
        return;
    };
    let served = selectors(ctx.cfg);
    let mut candidates = Vec::new();
    let mut host_bound: Vec<HostBound> = Vec::new();
    for name in names {
        let label = format!("pci {name}");
        let mut skip = |reason: String| {
            inv.skipped.push(Skipped {
                device: label.clone(),
                reason,
            })
        };
        // Names end up in PCI_RESOURCE_* (comma-joined) and libvirt XML: only the kernel's form.
        if normalize_pci_address(&name).as_deref() != Some(name.to_ascii_lowercase().as_str()) {
            skip(format!("{name:?} is not a PCI address (dddd:bb:dd.f)"));
            continue;
        }
        let dir = match bus.entry(&name) {
            Ok(dir) => dir,
            Err(e) => {
                skip(format!("cannot open: {e}"));
                continue;
            }
        };
        let (vendor, device) = match read_ids(&dir) {
            Ok(ids) => ids,
            Err(e) => {
                skip(format!("cannot read its vendor:device: {e}"));
                continue;
            }
        };
        let address = name.to_ascii_lowercase();
        let ids = format!("[{vendor:04x}:{device:04x}]");
        let mut matching = served
            .iter()
            .filter(|(_, s)| s.matches(vendor, device, &address));
        let Some((resource, selector)) = matching.next() else {
            host_bound.extend(HostBound::of(&dir, &address, None));
            skip(ctx.unserved_reason(&ids, |r| {
                match &r.source {
                    ResourceSource::Pci(sels) => sels
                        .iter()
                        .find(|s| s.matches(vendor, device, &address))
                        .map(|s| s.field.clone()),
                    _ => None,
                }
            }));
            continue;
        };
        for (other, sel) in matching.filter(|(r, _)| r.name != resource.name) {
            if let Some(r) = inv.resources.get_mut(&other.name) {
                r.notes.push(format!(
                    "{label} also matches {} but is advertised by {} ({} comes first)",
                    sel.field, resource.name, selector.field
                ));
            }
        }
        let wanted = format!("{ids} matches {} ({})", selector.field, resource.name);
        match read_driver(&dir) {
            Ok(Some(d)) if d == VFIO_DRIVER => {}
            Ok(Some(d)) => {
                skip(format!("{wanted} but is bound to {d}, not {VFIO_DRIVER}"));
                host_bound.extend(HostBound::of(&dir, &address, Some(d)));
                continue;
            }
            Ok(None) => {
                skip(format!(
                    "{wanted} but is bound to no driver (bind it to {VFIO_DRIVER})"
                ));
                continue;
            }
            Err(e) => {
                skip(format!("{wanted} but its driver is unreadable: {e}"));
                continue;
            }
        }
        let group = match read_iommu_group(&dir) {
            Ok(g) => g,
            Err(why) => {
                skip(format!("{wanted} but {why}"));
                continue;
            }
        };
        let numa = read_numa(&dir);
        candidates.push(GroupCandidate {
            resource: resource.name.clone(),
            order: selector.order,
            field: selector.field.clone(),
            label,
            group,
            numa,
            member: Member::Pci {
                address,
                iommu_group: group,
                numa_node: numa,
            },
        });
    }
    let mut blocked = std::collections::BTreeMap::new();
    for c in &candidates {
        if blocked.contains_key(&c.group) {
            continue;
        }
        let blockers: Vec<String> = (host_bound.iter())
            .filter(|h| h.group == c.group && !h.is_bridge(ctx.root))
            .map(|h| format!("{} (bound to {})", h.address, h.driver))
            .collect();
        if !blockers.is_empty() {
            blocked.insert(
                c.group,
                format!(
                    "IOMMU group {} also holds {}: VFIO refuses a group unless every device in it is bound to {VFIO_DRIVER} (or pci-stub) or unbound, so a VM given device {} fails to start until they are rebound",
                    c.group,
                    blockers.join(", "),
                    c.group
                ),
            );
        }
    }
    assign_groups(ctx, "PCI", candidates, inv);
    for (group, note) in blocked {
        let owner = inv.resources.values_mut().find(|r| {
            r.kind == crate::inventory::DeviceKind::Pci
                && r.devices.iter().any(|d| d.id == group.to_string())
        });
        if let Some(r) = owner {
            r.notes.push(note);
        }
    }
}

/// A function bound to a host driver other than vfio-pci/pci-stub: it makes its IOMMU group
/// unusable for VFIO (unless it is a bridge, which the kernel lets be), so a permitted function
/// sharing the group is explained.
struct HostBound {
    address: String,
    group: u32,
    driver: String,
    rel: RelPath,
}

impl HostBound {
    fn of(dir: &SysDir, address: &str, driver: Option<String>) -> Option<HostBound> {
        let driver = match driver {
            Some(d) => d,
            None => read_driver(dir).ok()??,
        };
        if driver == VFIO_DRIVER || driver == "pci-stub" {
            return None;
        }
        Some(HostBound {
            address: address.to_string(),
            group: read_iommu_group(dir).ok()?,
            driver,
            rel: dir.rel().clone(),
        })
    }

    fn is_bridge(&self, root: &SysDir) -> bool {
        (root.open_from_root(&self.rel))
            .and_then(|d| d.read_trimmed("class"))
            .is_ok_and(|c| c.starts_with("0x0604"))
    }
}
