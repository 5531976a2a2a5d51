//! USB discovery and bundles on fixture sysfs trees.

mod support;

use hostdev_agent::discovery::discover;
use hostdev_agent::inventory::{Inventory, Member, Skipped};
use support::{FakeHost, config};

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

const PERIPHERALS: &str = "permittedHostDevices:
  usb:
  - resourceName: kubevirt.io/peripherals
    selectors:
    - {vendor: '045e', product: '07a5'}
    - {vendor: '062a', product: '4102'}
    - {vendor: '072f', product: 'b100'}
";

#[test]
fn single_device_is_advertised_with_bus_devnum_and_node() {
    let host = FakeHost::new();
    host.add_usb("1-1", 0x46f4, 0x0001, 2, None);
    let cfg = config(
        "permittedHostDevices:\n  usb:\n  - resourceName: kubevirt.io/storage\n    selectors: [{vendor: '46f4', product: '0001'}]\n",
    );
    let inv = discover(&host.paths, &cfg);
    let d = &inv.resources["kubevirt.io/storage"].devices;
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].id, "1-1");
    assert!(d[0].healthy);
    assert_eq!(d[0].numa_nodes, [0], "NUMA of the host controller");
    assert_eq!(
        d[0].members,
        [Member::Usb {
            path: "1-1".into(),
            bus: 1,
            devnum: 2,
            vendor: 0x46f4,
            product: 0x0001,
            devname: "bus/usb/001/002".into()
        }]
    );
    assert!(
        inv.skipped.is_empty(),
        "root hubs and interfaces are not devices: {:?}",
        inv.skipped
    );
}

#[test]
fn complete_bundles_become_one_device_each() {
    let host = FakeHost::new();
    for (i, (v, p)) in [(0x045e, 0x07a5), (0x062a, 0x4102), (0x072f, 0xb100)]
        .into_iter()
        .enumerate()
    {
        host.add_usb(&format!("1-{}", i + 1), v, p, 10 + i as u32, None);
        host.add_usb(&format!("2-{}", i + 1), v, p, 20 + i as u32, None);
    }
    let inv = discover(&host.paths, &config(PERIPHERALS));
    assert_eq!(
        ids(&inv, "kubevirt.io/peripherals"),
        ["1-1+1-2+1-3", "2-1+2-2+2-3"]
    );
    assert_eq!(
        inv.resources["kubevirt.io/peripherals"].devices[0]
            .members
            .len(),
        3
    );
    assert!(inv.skipped.is_empty(), "{:?}", inv.skipped);
}

#[test]
fn incomplete_bundle_is_dropped_and_reported_with_the_missing_selector() {
    let host = FakeHost::new();
    host.add_usb("1-1", 0x045e, 0x07a5, 3, None);
    host.add_usb("1-2", 0x072f, 0xb100, 4, None);
    let inv = discover(&host.paths, &config(PERIPHERALS));
    assert!(ids(&inv, "kubevirt.io/peripherals").is_empty());
    for dev in ["usb 1-1", "usb 1-2"] {
        let reason = &skipped(&inv, dev).reason;
        assert!(
            reason.contains("incomplete bundle of kubevirt.io/peripherals"),
            "{reason}"
        );
        assert!(
            reason.contains(
                "no free device for permittedHostDevices.usb[0].selectors[1] (062a:4102)"
            ),
            "{reason}"
        );
    }
}

#[test]
fn leftover_devices_of_a_partial_second_bundle_are_reported() {
    let host = FakeHost::new();
    host.add_usb("1-1", 0x045e, 0x07a5, 3, None);
    host.add_usb("1-2", 0x062a, 0x4102, 4, None);
    host.add_usb("1-3", 0x072f, 0xb100, 5, None);
    host.add_usb("1-4", 0x045e, 0x07a5, 6, None);
    let inv = discover(&host.paths, &config(PERIPHERALS));
    assert_eq!(ids(&inv, "kubevirt.io/peripherals"), ["1-1+1-2+1-3"]);
    assert!(
        skipped(&inv, "usb 1-4")
            .reason
            .contains("incomplete bundle")
    );
}

#[test]
fn earlier_entries_win_overlapping_devices() {
    let host = FakeHost::new();
    host.add_usb("1-1", 0x46f4, 0x0001, 2, None);
    host.add_usb("1-2", 0x0627, 0x0001, 3, None);
    let cfg = config(
        "permittedHostDevices:
  usb:
  - resourceName: kubevirt.io/storage
    selectors: [{vendor: '46f4', product: '0001'}]
  - resourceName: kubevirt.io/storage-and-tablet
    selectors: [{vendor: '46f4', product: '0001'}, {vendor: '0627', product: '0001'}]
",
    );
    let inv = discover(&host.paths, &cfg);
    assert_eq!(ids(&inv, "kubevirt.io/storage"), ["1-1"]);
    assert!(ids(&inv, "kubevirt.io/storage-and-tablet").is_empty());
    let reason = &skipped(&inv, "usb 1-2").reason;
    assert!(
        reason.contains("kubevirt.io/storage-and-tablet"),
        "{reason}"
    );
    assert!(
        reason.contains("usb[1].selectors[0] (46f4:0001)"),
        "{reason}"
    );
}

#[test]
fn entries_sharing_a_name_each_form_bundles_for_one_resource() {
    let host = FakeHost::new();
    host.add_usb("1-1", 0x46f4, 0x0001, 2, None);
    host.add_usb("1-2", 0x0627, 0x0001, 3, None);
    let cfg = config(
        "permittedHostDevices:
  usb:
  - resourceName: kubevirt.io/usb
    selectors: [{vendor: '46f4', product: '0001'}]
  - resourceName: kubevirt.io/usb
    selectors: [{vendor: '0627', product: '0001'}]
",
    );
    let inv = discover(&host.paths, &cfg);
    assert_eq!(ids(&inv, "kubevirt.io/usb"), ["1-1", "1-2"]);
}

#[test]
fn port_pin_selects_the_device_in_that_port() {
    let host = FakeHost::new();
    host.add_usb("1-1", 0x46f4, 0x0001, 2, None);
    host.add_usb("1-1.4", 0x46f4, 0x0001, 3, None);
    let cfg = config(
        "permittedHostDevices:
  usb:
  - resourceName: kubevirt.io/front
    selectors: [{vendor: '46f4', product: '0001', port: '1-1.4'}]
",
    );
    let inv = discover(&host.paths, &cfg);
    assert_eq!(ids(&inv, "kubevirt.io/front"), ["1-1.4"]);
    assert_eq!(
        skipped(&inv, "usb 1-1").reason,
        "[46f4:0001] matches no permitted selector"
    );
}

#[test]
fn missing_device_node_makes_the_bundle_unhealthy() {
    let host = FakeHost::new();
    host.add_usb("1-1", 0x46f4, 0x0001, 2, None);
    host.remove_dev_node("bus/usb/001/002");
    let cfg = config(
        "permittedHostDevices:\n  usb:\n  - resourceName: kubevirt.io/storage\n    selectors: [{vendor: '46f4', product: '0001'}]\n",
    );
    let inv = discover(&host.paths, &cfg);
    assert!(!inv.resources["kubevirt.io/storage"].devices[0].healthy);
}

#[test]
fn unreadable_uevent_is_skipped_with_errno() {
    let host = FakeHost::new();
    host.add_usb("1-1", 0x46f4, 0x0001, 2, None);
    let d = host
        .sys()
        .join("devices/pci0000:00/0000:00:14.0/usb1/1-1/uevent");
    std::fs::remove_file(&d).unwrap();
    std::fs::create_dir(&d).unwrap();
    let inv = discover(&host.paths, &config(PERIPHERALS));
    let reason = &skipped(&inv, "usb 1-1").reason;
    assert!(
        reason.contains("EISDIR") && reason.contains("usb1/1-1/uevent"),
        "{reason}"
    );
}
