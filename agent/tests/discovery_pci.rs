//! PCI discovery rules on fixture sysfs trees.

mod support;

use hostdev_agent::discovery::discover;
use hostdev_agent::inventory::{DeviceKind, Inventory, Member, Skipped};
use support::{FakeHost, Pci, config, config_all};

const T4: &str = "permittedHostDevices:
  pciHostDevices:
  - pciVendorSelector: 10DE:1EB8
    resourceName: nvidia.com/T4
";

fn skipped<'a>(inv: &'a Inventory, device: &str) -> &'a Skipped {
    inv.skipped
        .iter()
        .find(|s| s.device == device)
        .unwrap_or_else(|| panic!("{device} not skipped; skipped: {:#?}", inv.skipped))
}

fn ids(inv: &Inventory, resource: &str) -> Vec<String> {
    inv.resources[resource]
        .devices
        .iter()
        .map(|d| d.id.clone())
        .collect()
}

#[test]
fn vfio_function_is_advertised_by_its_iommu_group() {
    let host = FakeHost::new();
    host.add_pci(Pci {
        numa: 1,
        ..Pci::vfio("0000:65:00.0", 0x10de, 0x1eb8, 17)
    });
    let inv = discover(&host.paths, &config(T4));
    let r = &inv.resources["nvidia.com/T4"];
    assert_eq!(r.kind, DeviceKind::Pci);
    assert_eq!(r.devices.len(), 1);
    let d = &r.devices[0];
    assert_eq!(d.id, "17");
    assert!(d.healthy);
    assert_eq!(d.numa_nodes, [1]);
    assert_eq!(
        d.members,
        [Member::Pci {
            address: "0000:65:00.0".into(),
            iommu_group: 17,
            numa_node: Some(1)
        }]
    );
    assert!(inv.skipped.is_empty(), "{:?}", inv.skipped);
}

#[test]
fn wrong_driver_unbound_and_no_group_are_skipped_with_reasons() {
    let host = FakeHost::new();
    host.add_pci(Pci {
        driver: Some("nvidia"),
        ..Pci::vfio("0000:65:00.0", 0x10de, 0x1eb8, 1)
    });
    host.add_pci(Pci {
        driver: None,
        ..Pci::vfio("0000:66:00.0", 0x10de, 0x1eb8, 2)
    });
    host.add_pci(Pci {
        group: None,
        ..Pci::vfio("0000:67:00.0", 0x10de, 0x1eb8, 0)
    });
    let inv = discover(&host.paths, &config(T4));
    assert!(inv.resources["nvidia.com/T4"].devices.is_empty());
    assert_eq!(
        skipped(&inv, "pci 0000:65:00.0").reason,
        "[10de:1eb8] matches permittedHostDevices.pciHostDevices[0] (nvidia.com/T4) but is bound to nvidia, not vfio-pci"
    );
    assert!(
        skipped(&inv, "pci 0000:66:00.0")
            .reason
            .contains("bound to no driver")
    );
    assert!(
        skipped(&inv, "pci 0000:67:00.0")
            .reason
            .contains("has no IOMMU group")
    );
}

#[test]
fn unmatched_function_is_skipped_as_unmatched() {
    let host = FakeHost::new();
    host.add_pci(Pci::vfio("0000:00:1f.0", 0x8086, 0x2668, 3));
    let inv = discover(&host.paths, &config(T4));
    assert_eq!(
        skipped(&inv, "pci 0000:00:1f.0").reason,
        "[8086:2668] matches no permitted selector"
    );
    assert!(
        inv.resources.contains_key("nvidia.com/T4"),
        "a served resource is listed even with no devices"
    );
}

#[test]
fn external_entries_are_explained_when_serving_kubevirt_only() {
    let host = FakeHost::new();
    host.add_pci(Pci::vfio("0000:65:00.0", 0x10de, 0x1eb8, 1));
    let cfg = config(&format!("{T4}    externalResourceProvider: true\n"));
    let inv = discover(&host.paths, &cfg);
    assert!(inv.resources.is_empty());
    let reason = &skipped(&inv, "pci 0000:65:00.0").reason;
    assert!(
        reason.contains("an external device plugin serves"),
        "{reason}"
    );
    let inv = discover(
        &host.paths,
        &cfg.with_serve(hostdev_agent::config::ServeMode::External),
    );
    assert_eq!(ids(&inv, "nvidia.com/T4"), ["1"]);
}

#[test]
fn functions_sharing_a_group_become_one_device_with_every_member() {
    let host = FakeHost::new();
    host.add_pci(Pci::vfio("0000:65:00.0", 0x10de, 0x1eb8, 5));
    host.add_pci(Pci::vfio("0000:65:00.1", 0x10de, 0x1eb8, 5));
    host.add_pci(Pci::vfio("0000:66:00.0", 0x10de, 0x1eb8, 6));
    let inv = discover(&host.paths, &config(T4));
    let r = &inv.resources["nvidia.com/T4"];
    assert_eq!(ids(&inv, "nvidia.com/T4"), ["5", "6"]);
    let addresses: Vec<&str> = r.devices[0]
        .members
        .iter()
        .map(|m| match m {
            Member::Pci { address, .. } => address.as_str(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        addresses,
        ["0000:65:00.0", "0000:65:00.1"],
        "no function of the group vanishes (KubeVirt #11412)"
    );
    assert_eq!(r.notes.len(), 1);
    assert!(
        r.notes[0].contains("IOMMU group 5 holds 2 permitted PCI devices"),
        "{}",
        r.notes[0]
    );
    assert!(inv.skipped.is_empty());
}

#[test]
fn a_group_wanted_by_two_resources_goes_to_the_earlier_entry() {
    let host = FakeHost::new();
    host.add_pci(Pci::vfio("0000:65:00.0", 0x10de, 0x1eb8, 5));
    host.add_pci(Pci::vfio("0000:65:00.1", 0x10de, 0x10f8, 5));
    let cfg = config(
        "permittedHostDevices:
  pciHostDevices:
  - pciVendorSelector: 10de:10f8
    resourceName: nvidia.com/T4-audio
  - pciVendorSelector: 10de:1eb8
    resourceName: nvidia.com/T4
",
    );
    let inv = discover(&host.paths, &cfg);
    assert_eq!(ids(&inv, "nvidia.com/T4-audio"), ["5"]);
    assert!(ids(&inv, "nvidia.com/T4").is_empty());
    let reason = &skipped(&inv, "pci 0000:65:00.0").reason;
    assert!(
        reason.contains("IOMMU group 5 is advertised by nvidia.com/T4-audio"),
        "{reason}"
    );
    assert!(
        reason.contains("pciHostDevices[0] comes before permittedHostDevices.pciHostDevices[1]"),
        "{reason}"
    );
}

#[test]
fn health_follows_the_vfio_group_node() {
    let host = FakeHost::new();
    host.add_pci(Pci::vfio("0000:65:00.0", 0x10de, 0x1eb8, 9));
    host.remove_dev_node("vfio/9");
    let inv = discover(&host.paths, &config(T4));
    assert!(!inv.resources["nvidia.com/T4"].devices[0].healthy);
}

#[test]
fn ids_fall_back_to_vendor_and_device_files() {
    let host = FakeHost::new();
    let dir = host.add_pci(Pci::vfio("0000:65:00.0", 0x10de, 0x1eb8, 3));
    std::fs::write(
        dir.join("uevent"),
        "DRIVER=vfio-pci\nPCI_SLOT_NAME=0000:65:00.0\n",
    )
    .unwrap();
    let inv = discover(&host.paths, &config(T4));
    assert_eq!(ids(&inv, "nvidia.com/T4"), ["3"]);
}

#[test]
fn unreadable_identity_is_skipped_with_errno_and_path() {
    let host = FakeHost::new();
    let dir = host.add_pci(Pci::vfio("0000:65:00.0", 0x10de, 0x1eb8, 3));
    host.add_pci(Pci::vfio("0000:66:00.0", 0x10de, 0x1eb8, 4));
    // Directories where files should be: read() fails with EISDIR even for root.
    for f in ["uevent", "vendor"] {
        std::fs::remove_file(dir.join(f)).unwrap();
        std::fs::create_dir(dir.join(f)).unwrap();
    }
    let inv = discover(&host.paths, &config(T4));
    assert_eq!(
        ids(&inv, "nvidia.com/T4"),
        ["4"],
        "one bad device does not fail the others"
    );
    let reason = &skipped(&inv, "pci 0000:65:00.0").reason;
    assert!(reason.contains("EISDIR"), "{reason}");
    assert!(
        reason.contains("devices/pci0000:00/0000:65:00.0/vendor"),
        "{reason}"
    );
}

#[test]
fn address_pins_pick_specific_functions() {
    let host = FakeHost::new();
    host.add_pci(Pci::vfio("0000:05:00.0", 0x8086, 0x5845, 10));
    host.add_pci(Pci::vfio("0000:06:00.0", 0x8086, 0x5845, 11));
    let cfg = config(
        "permittedHostDevices:
  pciHostDevices:
  - pciVendorSelector: 8086:5845
    resourceName: devices.kubevirt.io/nvme-fast
    pciAddresses: ['06:00.0']
  - pciVendorSelector: 8086:5845
    resourceName: devices.kubevirt.io/nvme
",
    );
    let inv = discover(&host.paths, &cfg);
    assert_eq!(ids(&inv, "devices.kubevirt.io/nvme-fast"), ["11"]);
    assert_eq!(ids(&inv, "devices.kubevirt.io/nvme"), ["10"]);
}

#[test]
fn the_same_selector_twice_the_later_resource_name_wins() {
    let host = FakeHost::new();
    host.add_pci(Pci::vfio("0000:65:00.0", 0x10de, 0x1eb8, 1));
    let cfg = config(
        "permittedHostDevices:
  pciHostDevices:
  - pciVendorSelector: 10de:1eb8
    resourceName: nvidia.com/T4
  - pciVendorSelector: 10de:1eb8
    resourceName: nvidia.com/gpu
",
    );
    let inv = discover(&host.paths, &cfg);
    // KubeVirt keys its PCI entries by selector in a map: the later entry overwrites.
    assert_eq!(ids(&inv, "nvidia.com/gpu"), ["1"]);
    assert!(!inv.resources.contains_key("nvidia.com/T4"), "{inv:?}");
    assert!(
        cfg.rejected[0].message.contains("pciHostDevices[1]"),
        "{:?}",
        cfg.rejected
    );
}

#[test]
fn entries_sharing_a_name_serve_the_union_of_their_selectors() {
    let host = FakeHost::new();
    host.add_pci(Pci::vfio("0000:00:1b.0", 0x8086, 0x2668, 12));
    host.add_pci(Pci::vfio("0000:00:1c.0", 0x8086, 0x293e, 2));
    let cfg = config(
        "permittedHostDevices:
  pciHostDevices:
  - {pciVendorSelector: '8086:2668', resourceName: example.com/audio}
  - {pciVendorSelector: '8086:293e', resourceName: example.com/audio}
",
    );
    let inv = discover(&host.paths, &cfg);
    assert_eq!(inv.resources.len(), 1);
    assert_eq!(
        ids(&inv, "example.com/audio"),
        ["2", "12"],
        "ids sort numerically"
    );
}

#[test]
fn resource_name_without_slash_serves_nothing_and_others_still_serve() {
    let host = FakeHost::new();
    host.add_pci(Pci::vfio("0000:00:1b.0", 0x8086, 0x2668, 1));
    host.add_pci(Pci::vfio("0000:65:00.0", 0x10de, 0x1eb8, 2));
    let cfg = config_all(
        "permittedHostDevices:
  pciHostDevices:
  - {pciVendorSelector: '8086:2668', resourceName: soundcard}
  - {pciVendorSelector: '10de:1eb8', resourceName: nvidia.com/T4}
",
    );
    let inv = discover(&host.paths, &cfg);
    assert_eq!(inv.resources.keys().collect::<Vec<_>>(), ["nvidia.com/T4"]);
    assert_eq!(ids(&inv, "nvidia.com/T4"), ["2"]);
    assert_eq!(
        skipped(&inv, "pci 0000:00:1b.0").reason,
        "[8086:2668] matches no permitted selector"
    );
}

#[test]
fn missing_sysfs_root_is_reported_not_fatal() {
    let paths =
        hostdev_agent::sysfs::HostPaths::new("/nonexistent-sysfs-root", "/nonexistent-dev-root");
    let inv = discover(&paths, &config(T4));
    assert!(inv.resources["nvidia.com/T4"].devices.is_empty());
    assert_eq!(inv.skipped[0].device, "sysfs");
    assert!(
        inv.skipped[0].reason.contains("ENOENT"),
        "{:?}",
        inv.skipped
    );
}

#[test]
fn a_group_with_a_function_on_a_host_driver_is_explained() {
    let host = FakeHost::new();
    host.add_pci(Pci::vfio("0000:65:00.0", 0x10de, 0x1eb8, 5));
    host.add_pci(Pci {
        driver: Some("snd_hda_intel"),
        ..Pci::vfio("0000:65:00.1", 0x10de, 0x10f8, 5)
    });
    let bridge = host.add_pci(Pci {
        driver: Some("pcieport"),
        ..Pci::vfio("0000:64:00.0", 0x8086, 0x1901, 5)
    });
    std::fs::write(bridge.join("class"), "0x060400\n").unwrap();
    let inv = discover(&host.paths, &config(T4));
    let r = &inv.resources["nvidia.com/T4"];
    assert_eq!(ids(&inv, "nvidia.com/T4"), ["5"]);
    assert_eq!(r.notes.len(), 1, "{:?}", r.notes);
    assert!(
        r.notes[0].contains("IOMMU group 5 also holds 0000:65:00.1 (bound to snd_hda_intel)"),
        "{}",
        r.notes[0]
    );
    assert!(
        !r.notes[0].contains("0000:64:00.0"),
        "bridges do not break a group: {}",
        r.notes[0]
    );
}

#[test]
fn a_bus_entry_that_is_a_plain_directory_is_read_in_place() {
    let host = FakeHost::new();
    let real = host.add_pci(Pci::vfio("0000:65:00.0", 0x10de, 0x1eb8, 8));
    let entry = host.sys().join("bus/pci/devices/0000:65:00.0");
    std::fs::remove_file(&entry).unwrap();
    std::fs::create_dir(&entry).unwrap();
    for f in ["uevent", "numa_node"] {
        std::fs::copy(real.join(f), entry.join(f)).unwrap();
    }
    std::os::unix::fs::symlink("../../../../bus/pci/drivers/vfio-pci", entry.join("driver"))
        .unwrap();
    std::os::unix::fs::symlink(
        "../../../../kernel/iommu_groups/8",
        entry.join("iommu_group"),
    )
    .unwrap();
    let inv = discover(&host.paths, &config(T4));
    assert_eq!(ids(&inv, "nvidia.com/T4"), ["8"], "{:?}", inv.skipped);
}
