//! USB bundling on seeded random hosts and configurations: every device is advertised in
//! exactly one complete bundle or explained exactly once, and no entry could have formed another
//! bundle from what was left (bundling is greedy but never stops early). The seed is printed;
//! `HOSTDEV_SEED=<n>` replays one case.

mod support;

use std::collections::BTreeMap;

use hostdev_agent::discovery::discover;
use hostdev_agent::inventory::Member;
use support::{FakeHost, config_all};

/// splitmix64: small, seedable, good enough to draw test cases.
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

const IDS: [(u16, u16); 3] = [(0x046d, 0xc52b), (0x045e, 0x07a5), (0x46f4, 0x0001)];

fn run_case(seed: u64) {
    let mut rng = Rng(seed);
    let host = FakeHost::new();
    let n_devices = 1 + rng.below(10) as u32;
    let mut devices = BTreeMap::new();
    for i in 0..n_devices {
        let id = IDS[rng.below(IDS.len() as u64) as usize];
        let path = format!("{}-{}", 1 + i / 8, 1 + i % 8);
        host.add_usb(&path, id.0, id.1, 2 + i % 8, None);
        devices.insert(path, id);
    }
    let mut entries: Vec<(String, Vec<(u16, u16)>)> = Vec::new();
    let mut yaml = String::from("permittedHostDevices:\n  usb:\n");
    for e in 0..1 + rng.below(3) {
        let name = format!("example.com/r{}", rng.below(2 + e));
        let selectors: Vec<(u16, u16)> = (0..1 + rng.below(3))
            .map(|_| IDS[rng.below(IDS.len() as u64) as usize])
            .collect();
        yaml += &format!("  - resourceName: {name}\n    selectors:\n");
        for (v, p) in &selectors {
            yaml += &format!("    - {{vendor: '{v:04x}', product: '{p:04x}'}}\n");
        }
        entries.push((name, selectors));
    }
    let inv = discover(&host.paths, &config_all(&yaml));
    let context = format!(
        "SEED={seed} (HOSTDEV_SEED={seed} replays)\nconfig:\n{yaml}devices: {devices:?}\n{inv:#?}"
    );

    // Each device: in exactly one bundle, or skipped exactly once.
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut bundles: Vec<(String, Vec<(u16, u16)>)> = Vec::new();
    for r in inv.resources.values() {
        for d in &r.devices {
            let mut ids = Vec::new();
            for m in &d.members {
                let Member::Usb {
                    path,
                    vendor,
                    product,
                    ..
                } = m
                else {
                    panic!("not usb\n{context}")
                };
                *seen.entry(path.clone()).or_default() += 1;
                ids.push((*vendor, *product));
            }
            bundles.push((r.name.clone(), ids));
        }
    }
    let mut left: Vec<(u16, u16)> = Vec::new();
    for s in &inv.skipped {
        let path = s
            .device
            .strip_prefix("usb ")
            .unwrap_or_else(|| panic!("{}\n{context}", s.device));
        *seen.entry(path.to_string()).or_default() += 1;
        left.push(devices[path]);
    }
    for path in devices.keys() {
        assert_eq!(
            seen.get(path),
            Some(&1),
            "{path} must be accounted for exactly once\n{context}"
        );
    }

    // Every bundle is exactly one entry's selector multiset (for its resource).
    let sorted = |v: &[(u16, u16)]| {
        let mut v = v.to_vec();
        v.sort();
        v
    };
    for (name, ids) in &bundles {
        let ok = entries
            .iter()
            .any(|(n, sels)| n == name && sorted(sels) == sorted(ids));
        assert!(
            ok,
            "bundle {ids:?} of {name} matches no entry of it\n{context}"
        );
    }

    // Maximal: no entry can fill all its selectors from the devices left over.
    for (name, sels) in &entries {
        let mut pool = left.clone();
        let complete = sels.iter().all(|s| match pool.iter().position(|d| d == s) {
            Some(i) => {
                pool.remove(i);
                true
            }
            None => false,
        });
        assert!(
            !complete,
            "{name} could still form a bundle {sels:?} from leftovers {left:?}\n{context}"
        );
    }
}

#[test]
fn random_bundles_account_for_every_device() {
    if let Some(seed) = std::env::var("HOSTDEV_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return run_case(seed);
    }
    let base = 0xb0d1e5_u64;
    eprintln!("base SEED={base}; each failing case prints its own");
    for i in 0..60 {
        run_case(base + i);
    }
}
