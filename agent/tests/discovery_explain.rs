//! The `discover` output (text and JSON), on a fixture host and on this machine's real /sys.

mod support;

use hostdev_agent::config::{AgentConfig, ServeMode};
use hostdev_agent::discovery::discover;
use hostdev_agent::explain::{OutputFormat, render, render_json, render_text};
use hostdev_agent::sysfs::HostPaths;
use support::{FakeHost, Pci, config_all};

fn fixture_host() -> (FakeHost, AgentConfig) {
    let host = FakeHost::new();
    host.add_pci(Pci {
        numa: 0,
        ..Pci::vfio("0000:65:00.0", 0x10de, 0x1eb8, 5)
    });
    host.add_pci(Pci {
        numa: 0,
        ..Pci::vfio("0000:65:00.1", 0x10de, 0x1eb8, 5)
    });
    host.add_pci(Pci {
        driver: Some("nvme"),
        ..Pci::vfio("0000:05:00.0", 0x8086, 0x5845, 7)
    });
    host.add_usb("1-1", 0x46f4, 0x0001, 2, Some("../../etc/shadow"));
    host.add_usb("1-2", 0x045e, 0x07a5, 3, None);
    let cfg = config_all(
        "permittedHostDevices:
  pciHostDevices:
  - {pciVendorSelector: '10de:1eb8', resourceName: nvidia.com/T4}
  - {pciVendorSelector: '8086:5845', resourceName: devices.kubevirt.io/nvme}
  - {pciVendorSelector: '8086:2668', resourceName: sound}
  usb:
  - resourceName: kubevirt.io/storage
    selectors: [{vendor: '46f4', product: '0001'}]
  - resourceName: kubevirt.io/peripherals
    selectors: [{vendor: '045e', product: '07a5'}, {vendor: '062a', product: '4102'}]
",
    );
    (host, cfg)
}

#[test]
fn text_explains_every_advertised_and_skipped_device() {
    let (host, cfg) = fixture_host();
    let text = render_text(&discover(&host.paths, &cfg), &cfg);
    for expected in [
        "Configuration: test.yaml (--serve all)",
        "nvidia.com/T4 (pci): 1 device(s), 1 healthy",
        "  id 5  healthy  numa 0",
        "      0000:65:00.0",
        "      0000:65:00.1",
        "note: IOMMU group 5 holds 2 permitted PCI devices",
        "devices.kubevirt.io/nvme (pci): 0 device(s)",
        "pci 0000:05:00.0  [8086:5845] matches permittedHostDevices.pciHostDevices[1] (devices.kubevirt.io/nvme) but is bound to nvme, not vfio-pci",
        "usb 1-1           [46f4:0001] unsafe device node: DEVNAME \"../../etc/shadow\"",
        "usb 1-2           [045e:07a5] is in an incomplete bundle of kubevirt.io/peripherals",
        "Configuration entries not served (1):",
        "permittedHostDevices.pciHostDevices[2].resourceName: \"sound\" has no domain prefix",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[test]
fn json_carries_the_same_facts() {
    let (host, cfg) = fixture_host();
    let inv = discover(&host.paths, &cfg);
    let json = render_json(&inv, &cfg);
    assert_eq!(json["serve"], "all");
    let t4 = json["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "nvidia.com/T4")
        .unwrap();
    assert_eq!(t4["kind"], "pci");
    assert_eq!(t4["devices"][0]["id"], "5");
    assert_eq!(t4["devices"][0]["members"][1]["address"], "0000:65:00.1");
    assert_eq!(t4["devices"][0]["numaNodes"][0], 0);
    let skipped: Vec<&str> = json["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["device"].as_str().unwrap())
        .collect();
    assert_eq!(skipped.len(), inv.skipped.len());
    assert!(skipped.contains(&"usb 1-1"));
    assert_eq!(json["rejectedEntries"][0]["line"], 5);
    let printed = render(&inv, &cfg, OutputFormat::Json);
    let reparsed: serde_json::Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(reparsed, json);
}

/// The machine's real /sys: every PCI function is either advertised or explained, and nothing
/// panics. (Here the functions are virtio devices bound to virtio-pci.)
#[test]
fn real_sysfs_runs_cleanly_and_explains_every_pci_function() {
    let paths = HostPaths::default();
    let mut cfg = support::config(
        "permittedHostDevices:
  pciHostDevices:
  - {pciVendorSelector: '1af4:1041', resourceName: kubevirt.io/virtio-net}
  - {pciVendorSelector: '1af4:1042', resourceName: kubevirt.io/virtio-blk}
  mediatedDevices:
  - {mdevNameSelector: GRID T4-1Q, resourceName: nvidia.com/GRID_T4-1Q}
  usb:
  - resourceName: kubevirt.io/storage
    selectors: [{vendor: '46f4', product: '0001'}]
",
    );
    cfg.serve = ServeMode::All;
    let inv = discover(&paths, &cfg);
    let text = render_text(&inv, &cfg);
    eprintln!("{text}");
    let functions: Vec<String> = match std::fs::read_dir("/sys/bus/pci/devices") {
        Ok(dir) => dir
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()
            .unwrap(),
        Err(_) => Vec::new(), // no PCI bus visible (some containers): still must run cleanly
    };
    for f in &functions {
        let advertised = inv.resources.values().flat_map(|r| &r.devices).flat_map(|d| &d.members).any(
            |m| matches!(m, hostdev_agent::inventory::Member::Pci { address, .. } if address == f),
        );
        let explained = inv.skipped.iter().any(|s| s.device == format!("pci {f}"));
        assert!(
            advertised ^ explained,
            "{f} must be advertised or explained exactly once:\n{text}"
        );
    }
    assert!(
        !inv.skipped.iter().any(|s| s.device.ends_with("bus")),
        "no bus-level failure on a real host:\n{text}"
    );
    assert_eq!(inv.resources.len(), 4);
}

/// The whole text, against a golden file (`HOSTDEV_BLESS=1` rewrites it after a deliberate change).
#[test]
fn text_matches_the_golden_file() {
    let (host, cfg) = fixture_host();
    let text = render_text(&discover(&host.paths, &cfg), &cfg);
    let golden = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/explain/fixture-host.txt");
    if std::env::var_os("HOSTDEV_BLESS").is_some() {
        std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
        std::fs::write(&golden, &text).unwrap();
    }
    let expected = std::fs::read_to_string(&golden)
        .unwrap_or_else(|e| panic!("{}: {e} (HOSTDEV_BLESS=1 writes it)", golden.display()));
    assert_eq!(
        text, expected,
        "discover text changed; if deliberate, rerun with HOSTDEV_BLESS=1"
    );
}

#[test]
fn json_members_of_every_kind() {
    let host = FakeHost::new();
    host.add_mdev_parent("0000:65:00.0", 1, &[("nvidia-230", "GRID T4-1Q", 16)]);
    host.add_mdev(
        "0000:65:00.0",
        "6f0c0a55-0c4e-4d4b-9a7c-1b1a2f3e4d5c",
        "nvidia-230",
        40,
    );
    host.add_usb("1-1", 0x46f4, 0x0001, 2, None);
    let cfg = config_all(
        "permittedHostDevices:
  mediatedDevices:
  - {mdevNameSelector: GRID T4-1Q, resourceName: nvidia.com/GRID_T4-1Q}
  usb:
  - resourceName: kubevirt.io/storage
    selectors: [{vendor: '46f4', product: '0001'}]
",
    );
    let json = render_json(&discover(&host.paths, &cfg), &cfg);
    let by_name = |n: &str| {
        json["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == n)
            .unwrap()
            .clone()
    };
    let mdev = &by_name("nvidia.com/GRID_T4-1Q")["devices"][0];
    assert_eq!(mdev["id"], "40");
    assert_eq!(mdev["numaNodes"][0], 1);
    assert_eq!(
        mdev["members"][0],
        serde_json::json!({"kind": "mdev", "uuid": "6f0c0a55-0c4e-4d4b-9a7c-1b1a2f3e4d5c", "parent": "0000:65:00.0",
            "typeId": "nvidia-230", "typeName": "GRID T4-1Q", "iommuGroup": 40})
    );
    let usb = &by_name("kubevirt.io/storage")["devices"][0];
    assert_eq!(
        usb["members"][0],
        serde_json::json!({"kind": "usb", "path": "1-1", "bus": 1, "devnum": 2, "vendor": "46f4", "product": "0001",
            "devname": "bus/usb/001/002"})
    );
    assert_eq!(usb["healthy"], true);
}
