//! GetPreferredAllocation: which of the available devices a container should get.
//!
//! Order of preference, strongest first:
//! 1. `must_include` devices (the kubelet requires them);
//! 2. pinned addresses, in the operator's order (a choice KubeVirt users asked for, #11815);
//! 3. devices on the NUMA node the choice is already on (or the node able to hold the most);
//! 4. devices on other NUMA nodes, then devices without topology;
//! 5. ascending id (numeric when ids are IOMMU group numbers), so the answer is deterministic.
//!
//! An arbitrary pick among equal devices is not a preference: when NUMA placement is not at
//! stake, such ties are left to the kubelet, which chooses at random as it does for KubeVirt's
//! plugins. So "which of two identical drives" stays the kubelet's call unless a pin decides it.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use crate::inventory::{Member, PluginDevice, Resource};

/// Addresses the operator wants handed out first for one resource, most wanted first: PCI
/// addresses (`0000:65:00.0`), mdev UUIDs or parent PCI addresses, or USB sysfs names (`1-1.4`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PinnedAddresses(pub Vec<String>);

impl PinnedAddresses {
    /// The best (lowest) rank of any member of `device`, if one of its addresses is pinned.
    fn rank(&self, device: &PluginDevice) -> Option<usize> {
        device
            .members
            .iter()
            .filter_map(|member| {
                let (address, parent) = match member {
                    Member::Pci { address, .. } => (address, None),
                    Member::Mdev { uuid, parent, .. } => (uuid, Some(parent)),
                    Member::Usb { path, .. } => (path, None),
                };
                self.0.iter().position(|p| {
                    p.eq_ignore_ascii_case(address)
                        || parent.is_some_and(|parent| p.eq_ignore_ascii_case(parent))
                })
            })
            .min()
    }
}

/// Compares ids numerically when both are numbers (IOMMU groups: 2 before 10), else as text.
fn compare_ids(a: &str, b: &str) -> Ordering {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        (Ok(_), Err(_)) => Ordering::Less,
        (Err(_), Ok(_)) => Ordering::Greater,
        (Err(_), Err(_)) => a.cmp(b),
    }
}

/// The preferred `size` device ids out of `available` (fewer when fewer are available).
pub fn preferred_devices(
    resource: &Resource,
    available: &[String],
    must_include: &[String],
    size: usize,
    pinned: &PinnedAddresses,
) -> Vec<String> {
    let lookup: BTreeMap<&str, &PluginDevice> = resource
        .devices
        .iter()
        .map(|d| (d.id.as_str(), d))
        .collect();

    let mut chosen: Vec<String> = Vec::with_capacity(size);
    for id in must_include {
        if !chosen.contains(id) {
            chosen.push(id.clone());
        }
    }
    if chosen.len() >= size {
        return chosen;
    }
    let need = size - chosen.len();

    let mut candidates: Vec<&String> = Vec::new();
    for id in available {
        if !chosen.contains(id) && !candidates.contains(&id) {
            candidates.push(id);
        }
    }

    let first_node = |id: &str| lookup.get(id).and_then(|d| d.numa_nodes.first().copied());
    let target_node = numa_target(&chosen, &candidates, need, &first_node);

    // Sort key: pin rank, NUMA rank, id. Unknown ids (the kubelet's view can lag ours) go last.
    let key = |id: &str| {
        let device = lookup.get(id);
        let pin = device.and_then(|d| pinned.rank(d)).unwrap_or(usize::MAX);
        let numa = match (device, first_node(id)) {
            (None, _) => 3,
            (Some(_), Some(node)) if Some(node) == target_node => 0,
            (Some(_), Some(_)) => 1,
            (Some(_), None) => 2,
        };
        (pin, numa)
    };
    candidates.sort_by(|a, b| key(a).cmp(&key(b)).then_with(|| compare_ids(a, b)));
    let take = need.min(candidates.len());
    if take == 0 {
        return chosen;
    }
    // When the last place goes to one of several equal devices and NUMA placement is not at
    // stake, the choice is arbitrary: leave it to the kubelet (random, as with KubeVirt, whose
    // plugins state no preference) instead of always handing out the lowest id. The devices
    // preferred for a reason (pins, NUMA) are still returned; the kubelet fills the rest.
    let keys: Vec<(usize, u8)> = candidates.iter().map(|id| key(id)).collect();
    let boundary = keys[take - 1];
    let tie_spills_over = keys.get(take).is_some_and(|k| *k == boundary);
    let numa_nodes: std::collections::BTreeSet<i64> =
        candidates.iter().filter_map(|id| first_node(id)).collect();
    let take = if tie_spills_over && numa_nodes.len() <= 1 {
        keys.iter().take_while(|k| **k < boundary).count()
    } else {
        take
    };
    chosen.extend(candidates.into_iter().take(take).cloned());
    chosen
}

/// The NUMA node to fill from: the node most of the required devices sit on; without any, the
/// lowest node able to hold all `need` devices, else the node holding the most candidates.
fn numa_target(
    chosen: &[String],
    candidates: &[&String],
    need: usize,
    first_node: &dyn Fn(&str) -> Option<i64>,
) -> Option<i64> {
    let mut required: BTreeMap<i64, usize> = BTreeMap::new();
    for id in chosen {
        if let Some(node) = first_node(id) {
            *required.entry(node).or_default() += 1;
        }
    }
    if let Some((node, _)) = required
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
    {
        return Some(*node);
    }
    let mut free: BTreeMap<i64, usize> = BTreeMap::new();
    for id in candidates {
        if let Some(node) = first_node(id) {
            *free.entry(node).or_default() += 1;
        }
    }
    free.iter()
        .find(|(_, count)| **count >= need)
        .or_else(|| free.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0))))
        .map(|(node, _)| *node)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::DeviceKind;

    fn pci(id: &str, numa: Option<i64>, address: &str) -> PluginDevice {
        PluginDevice {
            id: id.into(),
            healthy: true,
            numa_nodes: numa.into_iter().collect(),
            members: vec![Member::Pci {
                address: address.into(),
                iommu_group: id.parse().unwrap_or(0),
                numa_node: numa,
            }],
        }
    }

    fn resource() -> Resource {
        Resource {
            name: "example.com/nvme".into(),
            kind: DeviceKind::Pci,
            devices: vec![
                pci("10", Some(0), "0000:10:00.0"),
                pci("11", Some(1), "0000:11:00.0"),
                pci("12", Some(1), "0000:12:00.0"),
                pci("2", Some(0), "0000:02:00.0"),
                pci("3", None, "0000:03:00.0"),
            ],
            notes: vec![],
        }
    }

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn fills_from_the_numa_node_of_must_include() {
        let all = ids(&["10", "11", "12", "2", "3"]);
        let got = preferred_devices(
            &resource(),
            &all,
            &ids(&["11"]),
            2,
            &PinnedAddresses::default(),
        );
        assert_eq!(got, ids(&["11", "12"]));
    }

    #[test]
    fn without_must_include_picks_a_node_that_holds_all() {
        let all = ids(&["10", "11", "12", "2", "3"]);
        let got = preferred_devices(&resource(), &all, &[], 2, &PinnedAddresses::default());
        assert_eq!(
            got,
            ids(&["2", "10"]),
            "node 0 holds two, ids numeric order"
        );
        let got = preferred_devices(
            &resource(),
            &ids(&["10", "11", "12", "3"]),
            &[],
            2,
            &PinnedAddresses::default(),
        );
        assert_eq!(got, ids(&["11", "12"]));
    }

    #[test]
    fn pinned_addresses_win_over_numa() {
        let all = ids(&["10", "11", "12", "2", "3"]);
        let pins = PinnedAddresses(ids(&["0000:03:00.0"]));
        let got = preferred_devices(&resource(), &all, &[], 1, &pins);
        assert_eq!(got, ids(&["3"]));
    }

    #[test]
    fn returns_what_is_available_when_short() {
        let got = preferred_devices(
            &resource(),
            &ids(&["3"]),
            &[],
            4,
            &PinnedAddresses::default(),
        );
        assert_eq!(got, ids(&["3"]));
    }

    #[test]
    fn an_arbitrary_choice_among_equal_devices_is_left_to_the_kubelet() {
        let equal = Resource {
            name: "devices.kubevirt.io/nvme".into(),
            kind: DeviceKind::Pci,
            devices: vec![
                pci("5", None, "0000:05:00.0"),
                pci("6", None, "0000:06:00.0"),
            ],
            notes: vec![],
        };
        let all = ids(&["5", "6"]);
        let none = PinnedAddresses::default();
        assert!(
            preferred_devices(&equal, &all, &[], 1, &none).is_empty(),
            "no reason to prefer either drive"
        );
        assert_eq!(
            preferred_devices(&equal, &all, &[], 2, &none),
            ids(&["5", "6"]),
            "both are needed: no choice to make"
        );
        let pinned = PinnedAddresses(vec!["0000:06:00.0".into()]);
        assert_eq!(
            preferred_devices(&equal, &all, &[], 1, &pinned),
            ids(&["6"]),
            "a pin is a reason"
        );
        assert_eq!(
            preferred_devices(&equal, &all, &ids(&["5"]), 1, &none),
            ids(&["5"])
        );
    }
}
