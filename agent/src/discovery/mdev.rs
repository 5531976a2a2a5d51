//! Mediated devices, matched by type name (spaces as `_`, trimmed, as KubeVirt compares them).

use std::collections::HashMap;

use crate::config::{MdevSelector, ResourceConfig, ResourceSource, normalize_mdev_name};
use crate::inventory::{Inventory, Member, Skipped};
use crate::sysfs::{RelPath, SysDir};

use super::{Ctx, GroupCandidate, assign_groups, read_iommu_group, read_numa};

/// An mdev's type: its id (`nvidia-230`) and its name (`GRID T4-1Q`, or the id when the type
/// has no readable `name`).
pub fn read_type(root: &SysDir, mdev: &SysDir) -> Result<(String, String), String> {
    let rel = mdev
        .resolve_link("mdev_type")
        .map_err(|e| format!("cannot read its type: {e}"))?;
    let id = rel.file_name().to_string();
    let name = root
        .open_from_root(&rel)
        .and_then(|t| t.read_trimmed("name"))
        .unwrap_or_else(|_| id.clone());
    Ok((id, name))
}

fn selectors(cfg: &crate::config::AgentConfig) -> Vec<(&ResourceConfig, &MdevSelector)> {
    cfg.served()
        .filter_map(|r| match &r.source {
            ResourceSource::Mdev(sels) => Some(sels.iter().map(move |s| (r, s))),
            _ => None,
        })
        .flatten()
        .collect()
}

pub fn discover(ctx: &Ctx, inv: &mut Inventory) {
    // No mdev bus (module not loaded, no vGPU) is the normal case, not an error (KubeVirt #10344).
    let Some((bus, names)) = super::open_bus(ctx, inv, "mdev") else {
        return;
    };
    let served = selectors(ctx.cfg);
    let mut parent_numa: HashMap<RelPath, Option<i64>> = HashMap::new();
    let mut candidates = Vec::new();
    for uuid in names {
        let label = format!("mdev {uuid}");
        let mut skip = |reason: String| {
            inv.skipped.push(Skipped {
                device: label.clone(),
                reason,
            })
        };
        // Names end up in MDEV_PCI_RESOURCE_* (comma-joined) and libvirt XML: UUIDs only.
        let canonical = uuid::Uuid::parse_str(&uuid).map(|u| u.hyphenated().to_string());
        if canonical.as_deref() != Ok(uuid.as_str()) {
            skip(format!("{uuid:?} is not a lower-case hyphenated UUID"));
            continue;
        }
        let dir = match bus.entry(&uuid) {
            Ok(dir) => dir,
            Err(e) => {
                skip(format!("cannot open: {e}"));
                continue;
            }
        };
        let parent_rel = dir.rel().parent().unwrap_or_default();
        let parent = parent_rel.file_name().to_ascii_lowercase();
        let (type_id, type_name) = match read_type(ctx.root, &dir) {
            Ok(t) => t,
            Err(why) => {
                skip(why);
                continue;
            }
        };
        let normalized = normalize_mdev_name(&type_name);
        let what = format!("type {type_id} ({type_name:?}) on {parent}");
        let Some((resource, selector)) =
            served.iter().find(|(_, s)| s.matches(&normalized, &parent))
        else {
            skip(ctx.unserved_reason(&what, |r| {
                match &r.source {
                    ResourceSource::Mdev(sels) => sels
                        .iter()
                        .find(|s| s.matches(&normalized, &parent))
                        .map(|s| s.field.clone()),
                    _ => None,
                }
            }));
            continue;
        };
        let group = match read_iommu_group(&dir) {
            Ok(g) => g,
            Err(why) => {
                skip(format!(
                    "{what} matches {} ({}) but {why}",
                    selector.field, resource.name
                ));
                continue;
            }
        };
        let numa = *parent_numa.entry(parent_rel.clone()).or_insert_with(|| {
            ctx.root
                .open_from_root(&parent_rel)
                .ok()
                .and_then(|p| read_numa(&p))
        });
        candidates.push(GroupCandidate {
            resource: resource.name.clone(),
            order: selector.order,
            field: selector.field.clone(),
            label,
            group,
            numa,
            member: Member::Mdev {
                uuid: uuid.clone(),
                parent,
                type_id,
                type_name,
                iommu_group: group,
            },
        });
    }
    assign_groups(ctx, "mdev", candidates, inv);
}
