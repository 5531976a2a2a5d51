use super::*;
use crate::errno::Errno;

#[test]
fn unbind_of_unknown_device_is_enodev() {
    let mut k = kernel(BASIC);
    assert_eq!(k.unbind("nvme", "0000:99:00.0"), Err(Errno::ENODEV));
}

#[test]
fn unbind_from_a_driver_the_device_is_not_bound_to_is_enodev() {
    let mut k = kernel(BASIC);
    assert_eq!(k.unbind("vfio-pci", "0000:05:00.0"), Err(Errno::ENODEV));
    assert_eq!(k.unbind("nvme", "0000:06:00.0"), Err(Errno::ENODEV));
}

#[test]
fn unbind_detaches_and_raises_unbind() {
    let mut k = kernel(BASIC);
    k.unbind("nvme", "0000:05:00.0").unwrap();
    assert_eq!(driver_of(&k, "0000:05:00.0"), None);
    let ev = k.take_events();
    assert_eq!(actions(&ev), ["unbind@/devices/pci0000:00/0000:05:00.0"]);
    assert_eq!(ev[0].get("DRIVER"), None);
    assert_eq!(ev[0].get("PCI_ID"), Some("8086:5845"));
}

#[test]
fn bind_of_unknown_device_is_enodev() {
    let mut k = kernel(BASIC);
    assert_eq!(k.bind("nvme", "0000:99:00.0"), Err(Errno::ENODEV));
}

#[test]
fn bind_names_are_compared_exactly() {
    let mut k = kernel(BASIC);
    assert_eq!(k.bind("nvme", "06:00.0"), Err(Errno::ENODEV));
    assert_eq!(k.bind("nvme", " 0000:06:00.0"), Err(Errno::ENODEV));
}

#[test]
fn bind_to_a_driver_that_does_not_match_is_enodev() {
    let mut k = kernel(BASIC);
    assert_eq!(k.bind("nvidia", "0000:06:00.0"), Err(Errno::ENODEV));
}

#[test]
fn bind_when_already_bound_is_ebusy() {
    let mut k = kernel(BASIC);
    assert_eq!(k.bind("nvme", "0000:05:00.0"), Err(Errno::EBUSY));
    k.set_driver_override(addr("0000:05:00.0"), b"vfio-pci\n")
        .unwrap();
    assert_eq!(k.bind("vfio-pci", "0000:05:00.0"), Err(Errno::EBUSY));
}

#[test]
fn bind_when_not_matching_is_enodev_even_if_bound() {
    let mut k = kernel(BASIC);
    assert_eq!(k.bind("vfio-pci", "0000:05:00.0"), Err(Errno::ENODEV));
}

#[test]
fn bind_matching_static_table_binds_with_bind_uevent() {
    let mut k = kernel(BASIC);
    k.bind("nvme", "0000:06:00.0").unwrap();
    assert_eq!(driver_of(&k, "0000:06:00.0").as_deref(), Some("nvme"));
    let ev = k.take_events();
    assert_eq!(ev[0].action, "bind");
    assert_eq!(ev[0].get("DRIVER"), Some("nvme"));
}

#[test]
fn vfio_pci_has_no_static_ids() {
    let mut k = kernel(BASIC);
    assert_eq!(k.bind("vfio-pci", "0000:06:00.0"), Err(Errno::ENODEV));
}

#[test]
fn bind_via_driver_override_needs_no_ids() {
    let mut k = kernel(BASIC);
    k.set_driver_override(addr("0000:06:00.0"), b"vfio-pci")
        .unwrap();
    k.bind("vfio-pci", "0000:06:00.0").unwrap();
    assert_eq!(driver_of(&k, "0000:06:00.0").as_deref(), Some("vfio-pci"));
}

#[test]
fn driver_override_naming_another_driver_blocks_matching_ids() {
    let mut k = kernel(BASIC);
    k.set_driver_override(addr("0000:06:00.0"), b"vfio-pci\n")
        .unwrap();
    assert_eq!(k.bind("nvme", "0000:06:00.0"), Err(Errno::ENODEV));
}

#[test]
fn driver_override_is_cut_at_the_first_newline() {
    let mut k = kernel(BASIC);
    k.set_driver_override(addr("0000:06:00.0"), b"vfio-pci\nrest")
        .unwrap();
    assert_eq!(
        k.pci[&addr("0000:06:00.0")].driver_override.as_deref(),
        Some("vfio-pci")
    );
}

#[test]
fn driver_override_empty_or_newline_clears_it() {
    let mut k = kernel(BASIC);
    let a = addr("0000:06:00.0");
    for clear in [&b""[..], b"\n"] {
        k.set_driver_override(a, b"vfio-pci").unwrap();
        k.set_driver_override(a, clear).unwrap();
        assert_eq!(k.pci[&a].driver_override, None);
    }
}

#[test]
fn driver_override_of_4095_bytes_or_more_is_einval() {
    let mut k = kernel(BASIC);
    let a = addr("0000:06:00.0");
    assert_eq!(k.set_driver_override(a, &[b'x'; 4095]), Err(Errno::EINVAL));
    assert_eq!(k.set_driver_override(a, &[b'x'; 5000]), Err(Errno::EINVAL));
    k.set_driver_override(a, &[b'x'; 4094]).unwrap();
}

#[test]
fn driver_override_binds_and_unbinds_nothing() {
    let mut k = kernel(BASIC);
    k.set_driver_override(addr("0000:05:00.0"), b"vfio-pci")
        .unwrap();
    k.set_driver_override(addr("0000:06:00.0"), b"vfio-pci")
        .unwrap();
    assert_eq!(driver_of(&k, "0000:05:00.0").as_deref(), Some("nvme"));
    assert_eq!(driver_of(&k, "0000:06:00.0"), None);
    assert!(k.take_events().is_empty());
}

#[test]
fn new_id_with_fewer_than_two_fields_is_einval() {
    let mut k = kernel(BASIC);
    assert_eq!(k.new_id("vfio-pci", "8086"), Err(Errno::EINVAL));
    assert_eq!(k.new_id("vfio-pci", "\n"), Err(Errno::EINVAL));
}

#[test]
fn new_id_with_non_hex_fields_is_einval() {
    let mut k = kernel(BASIC);
    assert_eq!(k.new_id("vfio-pci", "80x6 5845"), Err(Errno::EINVAL));
}

#[test]
fn new_id_already_known_is_eexist() {
    let mut k = kernel(BASIC);
    k.new_id("vfio-pci", "10de 1eb8\n").unwrap();
    assert_eq!(k.new_id("vfio-pci", "10de 1eb8"), Err(Errno::EEXIST));
    // In the static table (with the class it matches on) is known too.
    assert_eq!(
        k.new_id("nvme", "8086 5845 0 0 010802 ffffff"),
        Err(Errno::EEXIST)
    );
}

#[test]
fn new_id_binds_every_unbound_matching_device_at_once() {
    let mut k = kernel(BASIC);
    k.new_id("vfio-pci", "8086 5845").unwrap();
    assert_eq!(driver_of(&k, "0000:06:00.0").as_deref(), Some("vfio-pci"));
    assert_eq!(driver_of(&k, "0000:07:00.0").as_deref(), Some("vfio-pci"));
    // The bound one stays where it is.
    assert_eq!(driver_of(&k, "0000:05:00.0").as_deref(), Some("nvme"));
    assert_eq!(
        k.take_events()
            .iter()
            .filter(|e| e.action == "bind")
            .count(),
        2
    );
}

#[test]
fn remove_id_of_unknown_id_is_enodev() {
    let mut k = kernel(BASIC);
    assert_eq!(k.remove_id("vfio-pci", "8086 5845"), Err(Errno::ENODEV));
    assert_eq!(k.remove_id("vfio-pci", "8086"), Err(Errno::EINVAL));
}

#[test]
fn remove_id_does_not_unbind() {
    let mut k = kernel(BASIC);
    k.new_id("vfio-pci", "8086 5845").unwrap();
    k.remove_id("vfio-pci", "8086 5845\n").unwrap();
    assert_eq!(driver_of(&k, "0000:06:00.0").as_deref(), Some("vfio-pci"));
    assert!(k.driver("vfio-pci").unwrap().dynamic.is_empty());
}

#[test]
fn drivers_probe_of_unknown_device_is_enodev() {
    let mut k = kernel(BASIC);
    assert_eq!(k.drivers_probe("0000:99:00.0"), Err(Errno::ENODEV));
}

#[test]
fn drivers_probe_binds_to_the_override() {
    let mut k = kernel(BASIC);
    k.set_driver_override(addr("0000:06:00.0"), b"vfio-pci")
        .unwrap();
    k.drivers_probe("0000:06:00.0").unwrap();
    assert_eq!(driver_of(&k, "0000:06:00.0").as_deref(), Some("vfio-pci"));
}

#[test]
fn drivers_probe_binds_to_the_first_matching_driver() {
    let mut k = kernel(BASIC);
    k.drivers_probe("0000:06:00.0").unwrap();
    assert_eq!(driver_of(&k, "0000:06:00.0").as_deref(), Some("nvme"));
}

#[test]
fn drivers_probe_of_a_bound_device_changes_nothing() {
    let mut k = kernel(BASIC);
    k.drivers_probe("0000:05:00.0").unwrap();
    assert_eq!(driver_of(&k, "0000:05:00.0").as_deref(), Some("nvme"));
    assert!(k.take_events().is_empty());
}

#[test]
fn vfio_pci_probe_of_a_bridge_is_einval() {
    let mut k = kernel(BASIC);
    k.set_driver_override(addr("0000:00:1c.0"), b"vfio-pci")
        .unwrap();
    assert_eq!(k.bind("vfio-pci", "0000:00:1c.0"), Err(Errno::EINVAL));
    assert_eq!(driver_of(&k, "0000:00:1c.0"), None);
}

#[test]
fn vfio_pci_probe_without_iommu_is_einval() {
    let mut k = kernel(&format!("iommu: false\n{BASIC}"));
    assert_eq!(k.pci[&addr("0000:06:00.0")].iommu_group, None);
    k.set_driver_override(addr("0000:06:00.0"), b"vfio-pci")
        .unwrap();
    assert_eq!(k.bind("vfio-pci", "0000:06:00.0"), Err(Errno::EINVAL));
    assert!(k.iommu_groups().is_empty());
}

#[test]
fn vfio_pci_does_not_check_group_viability() {
    // 06 and 07 share group 6; 07 stays unbound and 06 still binds.
    let mut k = kernel(BASIC);
    k.bind("nvme", "0000:07:00.0").unwrap();
    k.set_driver_override(addr("0000:06:00.0"), b"vfio-pci")
        .unwrap();
    k.bind("vfio-pci", "0000:06:00.0").unwrap();
}

#[test]
fn dev_vfio_group_appears_with_the_first_vfio_member_and_vanishes_with_the_last() {
    let mut k = kernel(BASIC);
    let has6 = |k: &Kernel| k.dev_nodes().iter().any(|n| n.path == "vfio/6");
    assert!(!has6(&k));
    k.new_id("vfio-pci", "8086 5845").unwrap();
    assert!(has6(&k));
    k.unbind("vfio-pci", "0000:06:00.0").unwrap();
    assert!(has6(&k), "07 is still vfio-bound");
    k.unbind("vfio-pci", "0000:07:00.0").unwrap();
    assert!(!has6(&k));
}

#[test]
fn modprobe_vfio_pci_creates_driver_module_and_dev_vfio() {
    let mut k =
        kernel("modules: [nvme]\npci:\n  - {address: \"0000:06:00.0\", preset: qemu-nvme}\n");
    assert!(k.driver("vfio-pci").is_none());
    assert!(!k.dev_nodes().iter().any(|n| n.path == "vfio/vfio"));
    k.modprobe("vfio-pci").unwrap();
    assert!(k.driver("vfio-pci").is_some());
    assert!(k.modules.iter().any(|m| m == "vfio_pci"));
    let vfio = k
        .dev_nodes()
        .into_iter()
        .find(|n| n.path == "vfio/vfio")
        .unwrap();
    assert_eq!((vfio.major, vfio.minor), (10, 196));
    let ev = k.take_events();
    assert!(actions(&ev).contains(&"add@/bus/pci/drivers/vfio-pci".to_owned()));
    assert!(actions(&ev).contains(&"add@/module/vfio_pci".to_owned()));
}

#[test]
fn modprobe_binds_unbound_devices_its_static_table_matches() {
    let mut k = kernel(
        "modules: [vfio-pci]\npci:\n  - {address: \"0000:06:00.0\", preset: qemu-nvme}\n  - {address: \"0000:07:00.0\", preset: qemu-nvme}\n",
    );
    k.set_driver_override(addr("0000:07:00.0"), b"vfio-pci")
        .unwrap();
    k.modprobe("nvme").unwrap();
    assert_eq!(driver_of(&k, "0000:06:00.0").as_deref(), Some("nvme"));
    assert_eq!(
        driver_of(&k, "0000:07:00.0"),
        None,
        "its override names another driver"
    );
}

#[test]
fn modprobe_of_an_unknown_module_is_enoent_and_twice_is_a_no_op() {
    let mut k = kernel(BASIC);
    assert_eq!(k.modprobe("no_such_module"), Err(Errno::ENOENT));
    k.modprobe("vfio_pci").unwrap();
    assert!(k.take_events().is_empty());
}

#[test]
fn vfio_pci_bind_registers_a_device_cdev_with_the_lowest_free_index() {
    let mut k = kernel(BASIC);
    k.new_id("vfio-pci", "8086 5845").unwrap();
    let idx = |k: &Kernel, a: &str| k.pci[&addr(a)].vfio_cdev;
    assert_eq!(
        (idx(&k, "0000:06:00.0"), idx(&k, "0000:07:00.0")),
        (Some(0), Some(1))
    );
    k.unbind("vfio-pci", "0000:06:00.0").unwrap();
    assert_eq!(idx(&k, "0000:06:00.0"), None);
    assert!(!k.dev_nodes().iter().any(|n| n.path == "vfio/devices/vfio0"));
    assert!(k.dev_nodes().iter().any(|n| n.path == "vfio/devices/vfio1"));
}
