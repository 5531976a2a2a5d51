//! PCI discovery on seeded random hosts: functions spread over shared IOMMU groups, some on host
//! drivers, several entries (sometimes sharing a name). Every function is advertised once or
//! explained once; a group is one kubelet device of one resource; nothing on a host driver is
//! advertised; a permitted vfio-pci function is only left out because its group went to an
//! earlier entry. `HOSTDEV_SEED=<n>` replays one case.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use hostdev_agent::discovery::discover;
use hostdev_agent::inventory::Member;
use support::{FakeHost, Pci, config_all};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const IDS: [(u16, u16); 3] = [(0x10de, 0x1eb8), (0x10de, 0x10f8), (0x8086, 0x5845)];

struct Function {
    ids: (u16, u16),
    group: u32,
    vfio: bool,
}

fn run_case(seed: u64) {
    let mut rng = Rng(seed);
    let host = FakeHost::new();
    let mut functions: BTreeMap<String, Function> = BTreeMap::new();
    for i in 0..1 + rng.below(12) as u32 {
        let address = format!("0000:{:02x}:00.{}", 0x10 + i / 4, i % 4);
        let f = Function {
            ids: IDS[rng.below(3) as usize],
            group: rng.below(5) as u32,
            vfio: rng.below(4) != 0,
        };
        let driver = if f.vfio { "vfio-pci" } else { "nvme" };
        host.add_pci(Pci {
            driver: Some(driver),
            ..Pci::vfio(&address, f.ids.0, f.ids.1, f.group)
        });
        functions.insert(address, f);
    }
    let mut entries: Vec<(String, (u16, u16))> = Vec::new();
    let mut yaml = String::from("permittedHostDevices:\n  pciHostDevices:\n");
    for _ in 0..1 + rng.below(3) {
        let name = format!("example.com/r{}", rng.below(3));
        let ids = IDS[rng.below(3) as usize];
        yaml += &format!(
            "  - {{pciVendorSelector: '{:04x}:{:04x}', resourceName: {name}}}\n",
            ids.0, ids.1
        );
        entries.push((name, ids));
    }
    let inv = discover(&host.paths, &config_all(&yaml));
    let context = format!("SEED={seed} (HOSTDEV_SEED={seed} replays)\nconfig:\n{yaml}\n{inv:#?}");

    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut groups_owned: BTreeSet<String> = BTreeSet::new();
    for r in inv.resources.values() {
        for d in &r.devices {
            assert!(
                groups_owned.insert(d.id.clone()),
                "group {} advertised twice\n{context}",
                d.id
            );
            for m in &d.members {
                let Member::Pci {
                    address,
                    iommu_group,
                    ..
                } = m
                else {
                    panic!("not pci\n{context}")
                };
                assert_eq!(iommu_group.to_string(), d.id, "{context}");
                let f = &functions[address];
                assert!(
                    f.vfio,
                    "{address} is on a host driver yet advertised\n{context}"
                );
                assert!(
                    entries.iter().any(|(n, ids)| *n == r.name && *ids == f.ids),
                    "{address} advertised by {} which has no selector for it\n{context}",
                    r.name
                );
                *seen.entry(address.clone()).or_default() += 1;
            }
        }
    }
    for s in &inv.skipped {
        let address = s
            .device
            .strip_prefix("pci ")
            .unwrap_or_else(|| panic!("{}\n{context}", s.device));
        *seen.entry(address.to_string()).or_default() += 1;
        let f = &functions[address];
        let permitted = entries.iter().any(|(_, ids)| *ids == f.ids);
        if f.vfio && permitted {
            assert!(
                s.reason.contains("IOMMU group") && groups_owned.contains(&f.group.to_string()),
                "{address} is permitted and on vfio-pci; only a group taken by an earlier entry excuses it: {}\n{context}",
                s.reason
            );
        }
    }
    for address in functions.keys() {
        assert_eq!(
            seen.get(address),
            Some(&1),
            "{address} must be accounted for exactly once\n{context}"
        );
    }
}

#[test]
fn random_groups_account_for_every_function() {
    if let Some(seed) = std::env::var("HOSTDEV_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return run_case(seed);
    }
    let base = 0x9c1_u64 << 20;
    eprintln!("base SEED={base}; each failing case prints its own");
    for i in 0..60 {
        run_case(base + i);
    }
}
