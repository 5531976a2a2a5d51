use super::*;

fn err(text: &str) -> SpecError {
    HostSpec::from_yaml_str(text, "host.yaml").unwrap_err()
}

fn invalid_at(e: &SpecError) -> (u64, u64, &str) {
    match e {
        SpecError::Invalid {
            line,
            column,
            field,
            ..
        } => (*line, *column, field.as_str()),
        other => panic!("want Invalid, got {other}"),
    }
}

#[test]
fn the_scenario_format_example_host_parses() {
    let text = r#"
iommu: true
modules: [nvme, vfio-pci]
pci:
  - address: "0000:05:00.0"
    id: "8086:5845"
    class: "010802"
    driver: nvme
    iommuGroup: 5
    numaNode: 0
  - {address: "0000:06:00.0", preset: qemu-nvme, driver: vfio-pci}
  - address: "0000:65:00.0"
    preset: tesla-t4
    mdevTypes:
      - {id: nvidia-230, name: "GRID T4-1Q", availableInstances: 16}
usb:
  - {bus: 1, port: "1", id: "46f4:0001", manufacturer: QEMU, product: QEMU USB HARDDRIVE}
"#;
    let h = HostSpec::from_yaml_str(text, "host.yaml").unwrap();
    assert_eq!(h.modules, vec!["nvme", "vfio_pci"]);
    assert_eq!(h.pci[0].driver.as_deref(), Some("nvme"));
    assert_eq!(h.pci[0].iommu_group, Some(5));
    assert_eq!(h.pci[0].numa_node, 0);
    assert_eq!(h.pci[1].driver.as_deref(), Some("vfio-pci"));
    assert_eq!(
        (h.pci[1].vendor, h.pci[1].device, h.pci[1].class),
        (0x8086, 0x5845, 0x010802)
    );
    // nvidia is not in `modules`: the preset's driver stays unloaded and the T4 unbound.
    assert_eq!(h.pci[2].driver, None);
    assert_eq!(h.pci[2].mdev_types.len(), 1);
    assert_eq!(h.usb[0].product.as_deref(), Some("QEMU USB HARDDRIVE"));
    assert_eq!(h.usb[0].serial, None);
}

#[test]
fn default_modules_are_the_named_drivers_plus_vfio_pci() {
    let h = HostSpec::from_yaml_str(
        "pci:\n  - {address: \"0000:65:00.0\", preset: tesla-t4}\n",
        "h",
    )
    .unwrap();
    assert_eq!(h.modules, vec!["nvidia", "vfio_pci"]);
    assert_eq!(h.pci[0].driver.as_deref(), Some("nvidia"));
    assert!(h.iommu);
}

#[test]
fn unquoted_scalars_read_as_strings() {
    let h = HostSpec::from_yaml_str(
        "pci:\n  - {address: 0000:05:00.0, id: 8086:5845, class: 010802}\nusb:\n  - {bus: 1, port: 1, id: 46f4:0001, speed: 480}\n",
        "h",
    )
    .unwrap();
    assert_eq!(h.pci[0].class, 0x010802);
    assert_eq!(h.usb[0].port, "1");
}

#[test]
fn duplicate_pci_address_is_an_error_at_the_second() {
    let e = err(
        "pci:\n  - {address: \"0000:05:00.0\", preset: qemu-nvme}\n  - {address: \"0000:05:00.0\", preset: qemu-nvme}\n",
    );
    let (line, _, field) = invalid_at(&e);
    assert_eq!((line, field), (3, "pci[1].address"));
    assert!(e.to_string().starts_with("host.yaml:3:"), "{e}");
    assert!(
        e.to_string().contains("duplicate PCI address 0000:05:00.0"),
        "{e}"
    );
}

#[test]
fn bad_address_is_an_error() {
    let e = err("pci:\n  - {address: \"05:00\", preset: qemu-nvme}\n");
    assert_eq!(invalid_at(&e).2, "pci[0].address");
}

#[test]
fn bad_id_is_an_error() {
    let e =
        err("pci:\n  - address: \"0000:05:00.0\"\n    id: \"8086-5845\"\n    class: \"010802\"\n");
    assert_eq!(invalid_at(&e), (3, 9, "pci[0].id"));
}

#[test]
fn bad_class_is_an_error() {
    let e = err("pci:\n  - {address: \"0000:05:00.0\", id: \"8086:5845\", class: \"0108\"}\n");
    assert_eq!(invalid_at(&e).2, "pci[0].class");
}

#[test]
fn unknown_preset_is_an_error_listing_the_known_ones() {
    let e = err("pci:\n  - {address: \"0000:05:00.0\", preset: tesla-t5}\n");
    assert_eq!(invalid_at(&e).2, "pci[0].preset");
    assert!(e.to_string().contains("tesla-t4"), "{e}");
}

#[test]
fn driver_not_in_modules_is_an_error() {
    let e = err(
        "modules: [nvme]\npci:\n  - {address: \"0000:05:00.0\", preset: qemu-nvme, driver: vfio-pci}\n",
    );
    assert_eq!(invalid_at(&e).2, "pci[0].driver");
    assert!(e.to_string().contains("not loaded"), "{e}");
}

#[test]
fn unknown_field_is_an_error_with_position() {
    let e = err("pci:\n  - {address: \"0000:05:00.0\", preset: qemu-nvme, colour: red}\n");
    match e {
        SpecError::Yaml { line, message, .. } => {
            assert_eq!(line, 2);
            assert!(message.contains("colour"), "{message}");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn duplicate_usb_port_is_an_error() {
    let e = err(
        "usb:\n  - {bus: 1, port: \"1\", preset: qemu-usb-storage}\n  - {bus: 1, port: \"1\", id: \"046d:c52b\"}\n",
    );
    assert_eq!(invalid_at(&e).2, "usb[1].port");
}

#[test]
fn non_hex_usb_id_is_an_error() {
    let e = err("usb:\n  - {bus: 1, port: \"1\", id: \"46g4:0001\"}\n");
    assert_eq!(invalid_at(&e).2, "usb[0].id");
}

#[test]
fn usb_port_behind_a_missing_hub_is_an_error() {
    let e = err("usb:\n  - {bus: 1, port: \"1.4\", id: \"46f4:0001\"}\n");
    assert_eq!(invalid_at(&e).2, "usb[0].port");
}

#[test]
fn explicit_fields_override_the_preset() {
    let h = HostSpec::from_yaml_str(
        "pci:\n  - {address: \"0000:65:00.0\", preset: tesla-t4, id: \"10de:1eb9\", driver: none, numaNode: 1}\n",
        "h",
    )
    .unwrap();
    let p = &h.pci[0];
    assert_eq!(
        (p.vendor, p.device, p.class, p.revision),
        (0x10de, 0x1eb9, 0x030200, 0xa1)
    );
    assert_eq!(p.driver, None);
    assert_eq!(p.numa_node, 1);
    assert_eq!(p.mdev_types.len(), 17);
}

#[test]
fn a_raw_host_embedded_in_a_bigger_document_reports_document_positions() {
    #[derive(serde::Deserialize)]
    struct Doc {
        #[allow(dead_code)]
        name: String,
        host: RawHost,
    }
    let doc: Doc = serde_saphyr::from_str(
        "name: x\nhost:\n  pci:\n    - {address: \"0000:05:00.0\", preset: nope}\n",
    )
    .unwrap();
    let e = doc.host.validate("scenario.yaml").unwrap_err();
    assert_eq!(invalid_at(&e).0, 4);
}

#[test]
fn empty_text_is_an_empty_host() {
    let h = HostSpec::from_yaml_str("", "h").unwrap();
    assert!(h.pci.is_empty() && h.usb.is_empty());
    assert_eq!(h.modules, vec!["vfio_pci"]);
}

#[test]
fn vfio_pci_at_boot_without_iommu_is_an_error() {
    let e = err(
        "iommu: false\npci:\n  - {address: \"0000:05:00.0\", preset: qemu-nvme, driver: vfio-pci}\n",
    );
    assert_eq!(invalid_at(&e).2, "pci[0].driver");
    assert!(e.to_string().contains("IOMMU"), "{e}");
}

#[test]
fn yaml_errors_carry_one_position_and_no_snippet() {
    let e = err("pci: [\n");
    assert_eq!(e.position(), Some((1, 6)));
    assert_eq!(e.to_string(), "host.yaml:1:6: unclosed bracket '['");
}
