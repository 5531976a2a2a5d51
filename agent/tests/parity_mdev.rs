//! KubeVirt parity of mdev type management (`dm/mediated_devices_types.go`, `virt-config`):
//! types named by id or by `_`-name, external types kept, round robin over cards, and the
//! configuration's edge cases (`enabled` vs the gate, deprecated spelling, node fallback,
//! same selector twice).

mod support;

use hostdev_agent::config::NodeLabels;
use hostdev_agent::discovery::discover;
use hostdev_agent::mdev_manager::{SeededUuids, reconcile_mdevs};
use support::{FakeHost, config};

const SEED: u64 = 0x9a41_7e57;

const T4_TYPES: &[(&str, &str, u32)] = &[
    ("nvidia-222", "GRID T4-1B", 16),
    ("nvidia-228", "GRID T4-8A", 2),
    ("nvidia-230", "GRID T4-1Q", 16),
];

fn node() -> NodeLabels {
    NodeLabels::for_node("node01")
}

fn created_per_card(host: &FakeHost, yaml: &str) -> Vec<(String, String, usize)> {
    let report = reconcile_mdevs(
        &host.paths,
        &config(yaml),
        &node(),
        &mut SeededUuids::new(SEED),
    );
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let mut out: Vec<(String, String, usize)> = Vec::new();
    for c in &report.created {
        match out
            .iter_mut()
            .find(|(p, t, _)| *p == c.parent && *t == c.type_id)
        {
            Some(e) => e.2 += 1,
            None => out.push((c.parent.clone(), c.type_id.clone(), 1)),
        }
    }
    out.sort();
    out
}

fn row(p: &str, t: &str, n: usize) -> (String, String, usize) {
    (p.into(), t.into(), n)
}

#[test]
fn desired_type_by_name_with_underscores_is_created() {
    let host = FakeHost::new();
    host.add_mdev_parent("0000:65:00.0", 0, T4_TYPES);
    let got = created_per_card(
        &host,
        "mediatedDevicesConfiguration:\n  mediatedDeviceTypes: [GRID_T4-1Q]\n",
    );
    assert_eq!(got, [row("0000:65:00.0", "nvidia-230", 16)]);
}

#[test]
fn desired_type_by_name_keeps_existing_mdevs_of_it() {
    let host = FakeHost::new();
    host.add_mdev_parent("0000:65:00.0", 0, T4_TYPES);
    host.add_mdev(
        "0000:65:00.0",
        "aaaaaaaa-0000-4000-8000-000000000001",
        "nvidia-230",
        70,
    );
    let cfg = config("mediatedDevicesConfiguration:\n  mediatedDeviceTypes: [GRID_T4-1Q]\n");
    let report = reconcile_mdevs(&host.paths, &cfg, &node(), &mut SeededUuids::new(SEED));
    assert!(report.removed.is_empty(), "kept by name: {report:?}");
    assert!(
        report.created.is_empty(),
        "the card already has an mdev: {report:?}"
    );
}

#[test]
fn external_provider_types_are_never_removed() {
    let host = FakeHost::new();
    host.add_mdev_parent("0000:65:00.0", 0, T4_TYPES);
    host.add_mdev_parent("0000:66:00.0", 0, T4_TYPES);
    host.add_mdev(
        "0000:65:00.0",
        "aaaaaaaa-0000-4000-8000-000000000001",
        "nvidia-222",
        70,
    );
    host.add_mdev(
        "0000:66:00.0",
        "aaaaaaaa-0000-4000-8000-000000000002",
        "nvidia-228",
        71,
    );
    let cfg = config(
        "permittedHostDevices:
  mediatedDevices:
  - mdevNameSelector: GRID T4-1B
    resourceName: nvidia.com/GRID_T4-1B
    externalResourceProvider: true
mediatedDevicesConfiguration:
  mediatedDeviceTypes: [nvidia-230]
",
    );
    let report = reconcile_mdevs(&host.paths, &cfg, &node(), &mut SeededUuids::new(SEED));
    let removed: Vec<&str> = report.removed.iter().map(|c| c.type_id.as_str()).collect();
    assert_eq!(
        removed,
        ["nvidia-228"],
        "PR #9250: external nvidia-222 kept: {report:?}"
    );
}

#[test]
fn several_types_go_round_robin_over_several_cards() {
    let host = FakeHost::new();
    for card in [
        "0000:65:00.0",
        "0000:66:00.0",
        "0000:67:00.0",
        "0000:68:00.0",
    ] {
        host.add_mdev_parent(card, 0, T4_TYPES);
    }
    // A card with any mdev (even of an undesired type that is kept) counts as configured.
    host.add_mdev(
        "0000:66:00.0",
        "aaaaaaaa-0000-4000-8000-000000000001",
        "nvidia-222",
        70,
    );
    let got = created_per_card(
        &host,
        "permittedHostDevices:
  mediatedDevices:
  - {mdevNameSelector: GRID T4-1B, resourceName: nvidia.com/B, externalResourceProvider: true}
mediatedDevicesConfiguration:
  mediatedDeviceTypes: [nvidia-228, GRID_T4-1Q]
",
    );
    assert_eq!(
        got,
        [
            row("0000:65:00.0", "nvidia-228", 2),
            row("0000:67:00.0", "nvidia-230", 16),
            row("0000:68:00.0", "nvidia-228", 2),
        ]
    );
}

fn managed(yaml: &str) -> bool {
    config(yaml).mdev_types.managed
}

#[test]
fn enabled_overrides_the_disable_gate() {
    let gate = "developerConfiguration:\n  featureGates: [DisableMDEVConfiguration]\n";
    assert!(!managed(&format!(
        "{gate}mediatedDevicesConfiguration:\n  mediatedDeviceTypes: [nvidia-230]\n"
    )));
    assert!(managed(&format!(
        "{gate}mediatedDevicesConfiguration:\n  enabled: true\n  mediatedDeviceTypes: [nvidia-230]\n"
    )));
    assert!(!managed(
        "mediatedDevicesConfiguration:\n  enabled: false\n  mediatedDeviceTypes: [nvidia-230]\n"
    ));
}

#[test]
fn deprecated_spelling_only_when_the_new_one_is_empty() {
    let both = config(
        "mediatedDevicesConfiguration:
  mediatedDevicesTypes: [nvidia-222]
  mediatedDeviceTypes: [nvidia-230]
  nodeMediatedDeviceTypes:
  - nodeSelector: {kubernetes.io/hostname: node01}
    mediatedDevicesTypes: [nvidia-222]
    mediatedDeviceTypes: [nvidia-228]
",
    );
    assert_eq!(both.mdev_types.global, ["nvidia-230"]);
    assert_eq!(both.mdev_types.desired_for(&node()), ["nvidia-228"]);
    let old = config("mediatedDevicesConfiguration:\n  mediatedDevicesTypes: [nvidia-222]\n");
    assert_eq!(old.mdev_types.desired_for(&node()), ["nvidia-222"]);
}

#[test]
fn matching_node_entries_without_types_fall_back_to_the_global_list() {
    let cfg = config(
        "mediatedDevicesConfiguration:
  mediatedDeviceTypes: [nvidia-230]
  nodeMediatedDeviceTypes:
  - nodeSelector: {kubernetes.io/hostname: node01}
",
    );
    assert_eq!(cfg.mdev_types.desired_for(&node()), ["nvidia-230"]);
}

#[test]
fn same_selector_twice_the_later_resource_name_wins() {
    let host = FakeHost::new();
    host.add_mdev_parent("0000:65:00.0", 0, T4_TYPES);
    host.add_mdev(
        "0000:65:00.0",
        "aaaaaaaa-0000-4000-8000-000000000001",
        "nvidia-230",
        70,
    );
    let cfg = config(
        "permittedHostDevices:
  mediatedDevices:
  - {mdevNameSelector: GRID T4-1Q, resourceName: nvidia.com/first}
  - {mdevNameSelector: GRID T4-1Q, resourceName: nvidia.com/second}
",
    );
    let inv = discover(&host.paths, &cfg);
    assert!(!inv.resources.contains_key("nvidia.com/first"), "{inv:?}");
    assert_eq!(inv.resources["nvidia.com/second"].devices.len(), 1);
    assert!(
        cfg.rejected.iter().any(|w| w.field
            == "permittedHostDevices.mediatedDevices[0].resourceName"
            && w.message.contains("mediatedDevices[1]")),
        "{:?}",
        cfg.rejected
    );
}
