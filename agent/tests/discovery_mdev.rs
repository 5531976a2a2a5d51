//! Mediated-device discovery and mdev management on fixture sysfs trees.

mod support;

use hostdev_agent::config::NodeLabels;
use hostdev_agent::discovery::discover;
use hostdev_agent::inventory::{Inventory, Member};
use hostdev_agent::mdev_manager::{SeededUuids, UuidSource, reconcile_mdevs};
use support::{FakeHost, config};

const Q1: &str = "permittedHostDevices:
  mediatedDevices:
  - mdevNameSelector: GRID T4-1Q
    resourceName: nvidia.com/GRID_T4-1Q
";

const T4_TYPES: &[(&str, &str, u32)] = &[
    ("nvidia-222", "GRID T4-1B", 16),
    ("nvidia-228", "GRID T4-8A", 2),
    ("nvidia-230", "GRID T4-1Q", 16),
];

fn ids(inv: &Inventory, resource: &str) -> Vec<String> {
    inv.resources[resource]
        .devices
        .iter()
        .map(|d| d.id.clone())
        .collect()
}

#[test]
fn missing_mdev_bus_is_normal() {
    let host = FakeHost::new();
    let inv = discover(&host.paths, &config(Q1));
    assert!(inv.skipped.is_empty(), "KubeVirt #10344: {:?}", inv.skipped);
    assert!(ids(&inv, "nvidia.com/GRID_T4-1Q").is_empty());
}

#[test]
fn mdev_is_advertised_by_its_group_with_type_and_parent() {
    let host = FakeHost::new();
    host.add_mdev_parent("0000:65:00.0", 1, T4_TYPES);
    let uuid = "6f0c0a55-0c4e-4d4b-9a7c-1b1a2f3e4d5c";
    host.add_mdev("0000:65:00.0", uuid, "nvidia-230", 40);
    host.add_mdev(
        "0000:65:00.0",
        "11111111-2222-4333-8444-555555555555",
        "nvidia-222",
        41,
    );
    let inv = discover(&host.paths, &config(Q1));
    let r = &inv.resources["nvidia.com/GRID_T4-1Q"];
    assert_eq!(r.devices.len(), 1);
    assert_eq!(r.devices[0].id, "40");
    assert!(r.devices[0].healthy);
    assert_eq!(r.devices[0].numa_nodes, [1], "NUMA of the parent card");
    assert_eq!(
        r.devices[0].members,
        [Member::Mdev {
            uuid: uuid.into(),
            parent: "0000:65:00.0".into(),
            type_id: "nvidia-230".into(),
            type_name: "GRID T4-1Q".into(),
            iommu_group: 40
        }]
    );
    let other = inv
        .skipped
        .iter()
        .find(|s| s.device == "mdev 11111111-2222-4333-8444-555555555555")
        .unwrap();
    assert_eq!(
        other.reason,
        "type nvidia-222 (\"GRID T4-1B\") on 0000:65:00.0 matches no permitted selector"
    );
}

#[test]
fn type_without_name_matches_by_type_id_and_names_are_normalised() {
    let host = FakeHost::new();
    host.add_mdev_parent(
        "0000:65:00.0",
        -1,
        &[
            ("i915-GVTg_V5_4", "  GVTg V5 4 ", 2),
            ("nvidia-230", "x", 1),
        ],
    );
    host.add_mdev(
        "0000:65:00.0",
        "aaaaaaaa-0000-4000-8000-000000000001",
        "i915-GVTg_V5_4",
        50,
    );
    host.add_mdev(
        "0000:65:00.0",
        "aaaaaaaa-0000-4000-8000-000000000002",
        "nvidia-230",
        51,
    );
    std::fs::remove_file(
        host.sys()
            .join("devices/pci0000:00/0000:65:00.0/mdev_supported_types/nvidia-230/name"),
    )
    .unwrap();
    let cfg = config(
        "permittedHostDevices:
  mediatedDevices:
  - {mdevNameSelector: 'GVTg V5 4', resourceName: intel.com/gvt}
  - {mdevNameSelector: nvidia-230, resourceName: nvidia.com/by-id}
",
    );
    let inv = discover(&host.paths, &cfg);
    assert_eq!(ids(&inv, "intel.com/gvt"), ["50"]);
    assert_eq!(ids(&inv, "nvidia.com/by-id"), ["51"]);
    assert!(
        inv.resources["intel.com/gvt"].devices[0]
            .numa_nodes
            .is_empty()
    );
}

#[test]
fn parent_pin_selects_one_card() {
    let host = FakeHost::new();
    host.add_mdev_parent("0000:65:00.0", 0, T4_TYPES);
    host.add_mdev_parent("0000:66:00.0", 0, T4_TYPES);
    host.add_mdev(
        "0000:65:00.0",
        "aaaaaaaa-0000-4000-8000-000000000001",
        "nvidia-230",
        60,
    );
    host.add_mdev(
        "0000:66:00.0",
        "aaaaaaaa-0000-4000-8000-000000000002",
        "nvidia-230",
        61,
    );
    let cfg = config(&format!("{Q1}    parentAddresses: ['66:00.0']\n"));
    let inv = discover(&host.paths, &cfg);
    assert_eq!(ids(&inv, "nvidia.com/GRID_T4-1Q"), ["61"]);
}

fn mdevs_of(host: &FakeHost, parent: &str, type_id: &str) -> usize {
    let d = host.sys().join(format!(
        "devices/pci0000:00/{parent}/mdev_supported_types/{type_id}/devices"
    ));
    std::fs::read_dir(d).map(|r| r.count()).unwrap_or(0)
}

const SEED: u64 = 0x5eed_0001;

#[test]
fn reconcile_creates_available_instances_of_one_type_per_empty_card() {
    eprintln!("SEED={SEED:#x}");
    let host = FakeHost::new();
    host.add_mdev_parent("0000:65:00.0", 0, T4_TYPES);
    let cfg =
        config("mediatedDevicesConfiguration:\n  mediatedDeviceTypes: [nvidia-228, nvidia-230]\n");
    let labels = NodeLabels::for_node("node01");
    let report = reconcile_mdevs(&host.paths, &cfg, &labels, &mut SeededUuids::new(SEED));
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(
        report.created.len(),
        2,
        "nvidia-228 (first desired type) has 2 instances"
    );
    assert!(
        report
            .created
            .iter()
            .all(|c| c.type_id == "nvidia-228" && c.parent == "0000:65:00.0")
    );
    let mut expected = SeededUuids::new(SEED);
    assert_eq!(
        report.created[0].uuid,
        expected.next_uuid(),
        "UUIDs come from the injected source"
    );
    assert_eq!(host.apply_mdev_writes(100), (2, 0));
    assert_eq!(mdevs_of(&host, "0000:65:00.0", "nvidia-228"), 2);
    // Converged: a second pass changes nothing.
    let again = reconcile_mdevs(&host.paths, &cfg, &labels, &mut SeededUuids::new(SEED + 1));
    assert!(
        again.created.is_empty() && again.removed.is_empty(),
        "{again:?}"
    );
}

#[test]
fn reconcile_spreads_desired_types_over_cards() {
    let host = FakeHost::new();
    host.add_mdev_parent("0000:65:00.0", 0, T4_TYPES);
    host.add_mdev_parent("0000:66:00.0", 0, T4_TYPES);
    let cfg =
        config("mediatedDevicesConfiguration:\n  mediatedDeviceTypes: [nvidia-228, nvidia-230]\n");
    let report = reconcile_mdevs(
        &host.paths,
        &cfg,
        &NodeLabels::for_node("n"),
        &mut SeededUuids::new(SEED),
    );
    let per_card: Vec<(&str, &str)> = report
        .created
        .iter()
        .map(|c| (c.parent.as_str(), c.type_id.as_str()))
        .collect();
    assert_eq!(
        per_card
            .iter()
            .filter(|c| **c == ("0000:65:00.0", "nvidia-228"))
            .count(),
        2
    );
    assert_eq!(
        per_card
            .iter()
            .filter(|c| **c == ("0000:66:00.0", "nvidia-230"))
            .count(),
        16
    );
}

#[test]
fn reconcile_removes_undesired_and_recreates_after_remove_and_readd() {
    let host = FakeHost::new();
    host.add_mdev_parent("0000:65:00.0", 0, T4_TYPES);
    let labels = NodeLabels::for_node("node01");
    let mut uuids = SeededUuids::new(SEED);
    let with = config("mediatedDevicesConfiguration:\n  mediatedDeviceTypes: [nvidia-228]\n");
    let without = config("mediatedDevicesConfiguration:\n  mediatedDeviceTypes: []\n");
    reconcile_mdevs(&host.paths, &with, &labels, &mut uuids);
    host.apply_mdev_writes(100);
    assert_eq!(mdevs_of(&host, "0000:65:00.0", "nvidia-228"), 2);

    let removed = reconcile_mdevs(&host.paths, &without, &labels, &mut uuids);
    assert_eq!(removed.removed.len(), 2, "{removed:?}");
    assert!(removed.created.is_empty());
    assert_eq!(host.apply_mdev_writes(200), (0, 2));
    assert_eq!(mdevs_of(&host, "0000:65:00.0", "nvidia-228"), 0);

    let readded = reconcile_mdevs(&host.paths, &with, &labels, &mut uuids);
    assert_eq!(
        readded.created.len(),
        2,
        "KubeVirt #8425: re-added types are created again: {readded:?}"
    );
    assert_eq!(host.apply_mdev_writes(300), (2, 0));
    assert_eq!(mdevs_of(&host, "0000:65:00.0", "nvidia-228"), 2);
}

#[test]
fn reconcile_uses_the_node_list_when_the_node_matches() {
    let host = FakeHost::new();
    host.add_mdev_parent("0000:65:00.0", 0, T4_TYPES);
    host.add_mdev(
        "0000:65:00.0",
        "aaaaaaaa-0000-4000-8000-000000000001",
        "nvidia-228",
        70,
    );
    let cfg = config(
        "mediatedDevicesConfiguration:
  mediatedDeviceTypes: [nvidia-228]
  nodeMediatedDeviceTypes:
  - nodeSelector: {kubernetes.io/hostname: node01}
    mediatedDeviceTypes: [nvidia-230]
",
    );
    let other = reconcile_mdevs(
        &host.paths,
        &cfg,
        &NodeLabels::for_node("node02"),
        &mut SeededUuids::new(SEED),
    );
    assert!(
        other.removed.is_empty() && other.created.is_empty(),
        "{other:?}"
    );
    let report = reconcile_mdevs(
        &host.paths,
        &cfg,
        &NodeLabels::for_node("node01"),
        &mut SeededUuids::new(SEED),
    );
    assert_eq!(report.desired, ["nvidia-230"]);
    assert_eq!(report.removed.len(), 1);
    // On a kernel the removal is immediate and the same pass creates; this plain tree applies
    // the write afterwards, so the next pass sees the empty card.
    assert_eq!(host.apply_mdev_writes(100), (0, 1));
    let report = reconcile_mdevs(
        &host.paths,
        &cfg,
        &NodeLabels::for_node("node01"),
        &mut SeededUuids::new(SEED),
    );
    assert_eq!(report.created.len(), 16);
    assert!(report.created.iter().all(|c| c.type_id == "nvidia-230"));
}

#[test]
fn reconcile_reports_failed_writes_and_continues() {
    let host = FakeHost::new();
    host.add_mdev_parent("0000:65:00.0", 0, T4_TYPES);
    host.add_mdev_parent("0000:66:00.0", 0, T4_TYPES);
    let broken = host
        .sys()
        .join("devices/pci0000:00/0000:65:00.0/mdev_supported_types/nvidia-228/create");
    std::fs::remove_file(&broken).unwrap();
    std::fs::create_dir(&broken).unwrap(); // writing a directory: EISDIR
    let cfg = config("mediatedDevicesConfiguration:\n  mediatedDeviceTypes: [nvidia-228]\n");
    let report = reconcile_mdevs(
        &host.paths,
        &cfg,
        &NodeLabels::for_node("n"),
        &mut SeededUuids::new(SEED),
    );
    assert_eq!(report.errors.len(), 1, "{report:?}");
    let shown = report.errors[0].to_string();
    assert!(
        shown.contains("EISDIR")
            && shown.contains("0000:65:00.0/mdev_supported_types/nvidia-228/create"),
        "{shown}"
    );
    assert_eq!(report.created.len(), 2, "the other card is still served");
}

#[test]
fn unmanaged_configuration_touches_nothing() {
    let host = FakeHost::new();
    host.add_mdev_parent("0000:65:00.0", 0, T4_TYPES);
    host.add_mdev(
        "0000:65:00.0",
        "aaaaaaaa-0000-4000-8000-000000000001",
        "nvidia-228",
        70,
    );
    let report = reconcile_mdevs(
        &host.paths,
        &config(Q1),
        &NodeLabels::for_node("n"),
        &mut SeededUuids::new(SEED),
    );
    assert!(!report.managed);
    assert!(report.removed.is_empty() && report.created.is_empty());
}
