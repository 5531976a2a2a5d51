//! Configuration: the seed's and the reference's examples verbatim, the three document shapes,
//! JSON, merging, serve modes, node labels and mdev type selection.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;

use hostdev_agent::config::{
    ConfigError, NodeLabels, PciSelector, ResourceConfig, ResourceSource, ServeMode, UsbSelector,
    load, parse,
};
use hostdev_agent::inventory::DeviceKind;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config")
        .join(name)
}

fn resource<'a>(cfg: &'a hostdev_agent::config::AgentConfig, name: &str) -> &'a ResourceConfig {
    cfg.resources
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no resource {name} in {:?}", cfg.resources))
}

#[test]
fn seed_permitted_devices_example_parses_verbatim() {
    let cfg = load(&fixture("seed-permitted.yaml")).unwrap();
    let names: Vec<&str> = cfg.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "nvidia.com/TU104GL_Tesla_T4",
            "intel.com/qat",
            "nvidia.com/GRID_T4-1Q"
        ]
    );
    let t4 = resource(&cfg, "nvidia.com/TU104GL_Tesla_T4");
    assert!(t4.external);
    assert_eq!(
        t4.source,
        ResourceSource::Pci(vec![PciSelector {
            vendor: 0x10de,
            device: 0x1eb8,
            addresses: vec![],
            order: 0,
            field: "permittedHostDevices.pciHostDevices[0]".into()
        }])
    );
    let qat = resource(&cfg, "intel.com/qat");
    assert!(!qat.external);
    let ResourceSource::Mdev(sels) = &resource(&cfg, "nvidia.com/GRID_T4-1Q").source else {
        panic!("not mdev")
    };
    assert_eq!(
        sels[0].name, "GRID_T4-1Q",
        "spaces become _ as KubeVirt compares them"
    );
    assert!(
        !cfg.mdev_types.managed,
        "no mediatedDevicesConfiguration: mdevs are left alone"
    );
}

#[test]
fn seed_nvme_example_with_unquoted_selector_parses() {
    let cfg = load(&fixture("seed-nvme.yaml")).unwrap();
    let r = resource(&cfg, "devices.kubevirt.io/nvme");
    let ResourceSource::Pci(sels) = &r.source else {
        panic!("not pci")
    };
    assert_eq!((sels[0].vendor, sels[0].device), (0x8086, 0x5845));
}

#[test]
fn seed_usb_examples_parse_with_bundles() {
    let cfg = load(&fixture("seed-usb.yaml")).unwrap();
    let ResourceSource::Usb(b) = &resource(&cfg, "kubevirt.io/storage").source else {
        panic!("not usb")
    };
    assert_eq!(
        b[0].selectors,
        [UsbSelector {
            vendor: 0x46f4,
            product: 0x0001,
            port: None,
            field: "permittedHostDevices.usb[0].selectors[0]".into()
        }]
    );
    let cfg = load(&fixture("seed-usb-bundle.yaml")).unwrap();
    let ResourceSource::Usb(b) = &resource(&cfg, "kubevirt.io/peripherals").source else {
        panic!("not usb")
    };
    let ids: Vec<(u16, u16)> = b[0]
        .selectors
        .iter()
        .map(|s| (s.vendor, s.product))
        .collect();
    assert_eq!(ids, [(0x045e, 0x07a5), (0x062a, 0x4102), (0x072f, 0xb100)]);
}

#[test]
fn whole_kubevirt_cr_with_unknown_fields_is_accepted() {
    let cfg = load(&fixture("kubevirt-cr.yaml")).unwrap();
    assert_eq!(cfg.resources.len(), 3);
    assert_eq!(cfg.feature_gates, ["HostDevices", "GPU"]);
    assert!(cfg.feature_gate("HostDevices"));
    assert!(cfg.mdev_types.managed);
    assert_eq!(cfg.mdev_types.global, ["nvidia-222", "nvidia-228"]);
    assert_eq!(cfg.mdev_types.per_node[0].types, ["nvidia-234"]);
    assert_eq!(
        resource(&cfg, "kubevirt.io/storage").kind(),
        DeviceKind::Usb
    );
}

#[test]
fn spec_configuration_alone_and_whole_cr_give_the_same_config() {
    let body = "permittedHostDevices:\n  pciHostDevices:\n  - pciVendorSelector: 10de:1eb8\n    resourceName: nvidia.com/T4\n";
    let bare = parse(body, "x").unwrap();
    let indented: String = body.lines().map(|l| format!("    {l}\n")).collect();
    let whole = parse(
        &format!("apiVersion: kubevirt.io/v1\nkind: KubeVirt\nspec:\n  configuration:\n{indented}"),
        "x",
    )
    .unwrap();
    let wrapped: String = body.lines().map(|l| format!("  {l}\n")).collect();
    let configuration = parse(&format!("configuration:\n{wrapped}"), "x").unwrap();
    assert_eq!(bare.resources, whole.resources);
    assert_eq!(bare.resources, configuration.resources);
    assert_eq!(bare.resources.len(), 1);
}

#[test]
fn json_cr_with_tabs_parses() {
    let cfg = load(&fixture("kubevirt-cr.json")).unwrap();
    let names: Vec<&str> = cfg.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["kubevirt.io/sound-card", "kubevirt.io/storage"]);
    assert_eq!(cfg.feature_gates, ["HostDevices"]);
}

#[test]
fn json_syntax_error_names_line_and_column() {
    let text = "{\n  \"permittedHostDevices\": {\n    \"pciHostDevices\": [,]\n  }\n}\n";
    match parse(text, "cr.json") {
        Err(ConfigError::Syntax {
            origin,
            line,
            column,
            ..
        }) => {
            assert_eq!(origin, "cr.json");
            assert_eq!((line, column), (3, 24));
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

#[test]
fn yaml_syntax_error_names_line_and_column() {
    let text = "permittedHostDevices:\n  pciHostDevices:\n    - pciVendorSelector: \"10de:1eb8\n";
    let err = parse(text, "cr.yaml").unwrap_err();
    let ConfigError::Syntax { line, .. } = &err else {
        panic!("expected syntax error, got {err:?}")
    };
    assert!(*line >= 3, "{err}");
    assert!(err.to_string().starts_with("cr.yaml:"), "{err}");
}

#[test]
fn empty_file_permits_nothing() {
    let cfg = parse("", "empty.yaml").unwrap();
    assert!(cfg.resources.is_empty());
    let cfg = parse(
        "apiVersion: kubevirt.io/v1\nkind: KubeVirt\nspec: {}\n",
        "x",
    )
    .unwrap();
    assert!(cfg.resources.is_empty());
}

#[test]
fn missing_file_error_names_the_path() {
    let err = load(&fixture("does-not-exist.yaml")).unwrap_err();
    assert!(err.to_string().contains("does-not-exist.yaml"), "{err}");
}

#[test]
fn entries_of_one_kind_sharing_a_name_merge_into_one_resource() {
    let cfg = support::config(
        "permittedHostDevices:
  pciHostDevices:
  - pciVendorSelector: 8086:2668
    resourceName: example.com/audio
  - pciVendorSelector: 10de:1eb8
    resourceName: nvidia.com/T4
  - pciVendorSelector: 8086:293e
    resourceName: example.com/audio
",
    );
    assert_eq!(cfg.resources.len(), 2);
    let audio = resource(&cfg, "example.com/audio");
    let ResourceSource::Pci(sels) = &audio.source else {
        panic!("not pci")
    };
    let ids: Vec<(u16, usize)> = sels.iter().map(|s| (s.device, s.order)).collect();
    assert_eq!(ids, [(0x2668, 0), (0x293e, 2)]);
    assert_eq!(
        audio.entries,
        [
            "permittedHostDevices.pciHostDevices[0]",
            "permittedHostDevices.pciHostDevices[2]"
        ]
    );
}

#[test]
fn resource_name_without_slash_is_rejected_and_the_others_are_served() {
    let cfg = support::config(
        "permittedHostDevices:
  pciHostDevices:
  - pciVendorSelector: 8086:2668
    resourceName: soundcard
  - pciVendorSelector: 10de:1eb8
    resourceName: nvidia.com/T4
  usb:
  - resourceName: kubernetes.io/usb
    selectors: [{vendor: '46f4', product: '0001'}]
",
    );
    assert_eq!(
        cfg.resources
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        ["nvidia.com/T4"]
    );
    assert_eq!(cfg.rejected.len(), 2);
    assert_eq!(
        cfg.rejected[0].field,
        "permittedHostDevices.pciHostDevices[0].resourceName"
    );
    assert!(
        cfg.rejected[0].message.contains("no domain prefix"),
        "{}",
        cfg.rejected[0]
    );
    assert_eq!(
        (cfg.rejected[0].line, cfg.rejected[0].column),
        (Some(4), Some(19))
    );
    assert!(
        cfg.rejected[1].message.contains("kubernetes.io"),
        "{}",
        cfg.rejected[1]
    );
}

#[test]
fn serve_mode_selects_kubevirt_external_or_all_entries() {
    let cfg = load(&fixture("seed-permitted.yaml")).unwrap();
    let served = |mode| {
        cfg.clone()
            .with_serve(mode)
            .served()
            .map(|r| r.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        served(ServeMode::Kubevirt),
        ["intel.com/qat", "nvidia.com/GRID_T4-1Q"]
    );
    assert_eq!(served(ServeMode::External), ["nvidia.com/TU104GL_Tesla_T4"]);
    assert_eq!(served(ServeMode::All).len(), 3);
    assert_eq!(
        cfg.serve,
        ServeMode::Kubevirt,
        "the default serves what KubeVirt would"
    );
}

#[test]
fn hostdev_address_and_port_pins_parse() {
    let cfg = support::config(
        "permittedHostDevices:
  pciHostDevices:
  - pciVendorSelector: 8086:5845
    resourceName: devices.kubevirt.io/nvme-a
    pciAddresses: ['0000:05:00.0', '06:00.0']
  mediatedDevices:
  - mdevNameSelector: GRID T4-1Q
    resourceName: nvidia.com/T4-1Q-card0
    parentAddresses: ['0000:65:00.0']
  usb:
  - resourceName: kubevirt.io/front-port
    selectors:
    - {vendor: '46f4', product: '0001', port: '1-1.4'}
",
    );
    let ResourceSource::Pci(p) = &cfg.resources[0].source else {
        panic!()
    };
    assert_eq!(p[0].addresses, ["0000:05:00.0", "0000:06:00.0"]);
    assert!(p[0].matches(0x8086, 0x5845, "0000:05:00.0"));
    assert!(!p[0].matches(0x8086, 0x5845, "0000:07:00.0"));
    let ResourceSource::Mdev(m) = &cfg.resources[1].source else {
        panic!()
    };
    assert_eq!(m[0].parents, ["0000:65:00.0"]);
    let ResourceSource::Usb(u) = &cfg.resources[2].source else {
        panic!()
    };
    assert_eq!(u[0].selectors[0].port.as_deref(), Some("1-1.4"));
}

#[test]
fn node_labels_from_flag_and_file_keep_the_node_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("labels");
    std::fs::write(
        &file,
        "# node labels\nzone=\"a\"\nkubernetes.io/hostname=impostor\ngpu=t4\n",
    )
    .unwrap();
    let mut labels = NodeLabels::for_node("node01");
    labels.add_flag("rack=r1, gpu=none").unwrap();
    labels.add_file(&file).unwrap();
    let expect: BTreeMap<String, String> = [
        ("gpu", "t4"),
        ("kubernetes.io/hostname", "node01"),
        ("rack", "r1"),
        ("zone", "a"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(labels.0, expect);
    let err = labels.add_flag("novalue").unwrap_err();
    assert!(err.to_string().contains("novalue"), "{err}");
}

#[test]
fn node_mdev_types_replace_the_global_list_when_a_selector_matches() {
    // KubeVirt reads the deprecated mediatedDevicesTypes only when mediatedDeviceTypes is empty.
    let cfg = support::config(
        "mediatedDevicesConfiguration:
  mediatedDevicesTypes: [nvidia-222]
  mediatedDeviceTypes: [nvidia-228]
  nodeMediatedDeviceTypes:
  - nodeSelector: {kubernetes.io/hostname: node01}
    mediatedDeviceTypes: [nvidia-234]
  - nodeSelector: {gpu: t4}
    mediatedDevicesTypes: [nvidia-230, nvidia-234]
",
    );
    let t = &cfg.mdev_types;
    assert_eq!(
        t.desired_for(&NodeLabels::for_node("node02")),
        ["nvidia-228"]
    );
    assert_eq!(
        t.desired_for(&NodeLabels::for_node("node01")),
        ["nvidia-234"]
    );
    let mut both = NodeLabels::for_node("node01");
    both.add_flag("gpu=t4").unwrap();
    assert_eq!(
        t.desired_for(&both),
        ["nvidia-234", "nvidia-230"],
        "the union of every matching node entry"
    );
}

#[test]
fn mdev_management_can_be_switched_off() {
    let off = support::config(
        "mediatedDevicesConfiguration:\n  enabled: false\n  mediatedDeviceTypes: [nvidia-222]\n",
    );
    assert!(!off.mdev_types.managed);
    let gated = support::config(
        "developerConfiguration:\n  featureGates: [DisableMDEVConfiguration]\nmediatedDevicesConfiguration:\n  mediatedDeviceTypes: [nvidia-222]\n",
    );
    assert!(!gated.mdev_types.managed);
    let empty = support::config("mediatedDevicesConfiguration: {}\n");
    assert!(
        empty.mdev_types.managed,
        "an empty list is a managed state: no mdevs wanted"
    );
}
