use super::*;
use crate::errno::Errno;
use crate::kernel::KernelError;
use crate::spec::PciSpec;

#[test]
fn device_remove_takes_the_device_away_and_rescan_brings_it_back_probed() {
    let mut k = kernel(BASIC);
    let a = addr("0000:05:00.0");
    k.device_remove_write(a, b"1\n").unwrap();
    assert!(!k.pci.contains_key(&a));
    assert_eq!(
        actions(&k.take_events()),
        [
            "unbind@/devices/pci0000:00/0000:05:00.0",
            "remove@/devices/pci0000:00/0000:05:00.0"
        ]
    );
    k.rescan(b"1").unwrap();
    assert_eq!(driver_of(&k, "0000:05:00.0").as_deref(), Some("nvme"));
    assert_eq!(k.pci[&a].iommu_group, Some(5), "same group as before");
    assert_eq!(
        actions(&k.take_events()),
        [
            "add@/devices/pci0000:00/0000:05:00.0",
            "bind@/devices/pci0000:00/0000:05:00.0"
        ]
    );
}

#[test]
fn device_remove_0_does_nothing_and_garbage_is_einval() {
    let mut k = kernel(BASIC);
    let a = addr("0000:05:00.0");
    k.device_remove_write(a, b"0").unwrap();
    assert_eq!(k.device_remove_write(a, b"please"), Err(Errno::EINVAL));
    assert!(k.pci.contains_key(&a));
}

#[test]
fn device_remove_resets_driver_override() {
    let mut k = kernel(BASIC);
    let a = addr("0000:06:00.0");
    k.set_driver_override(a, b"vfio-pci").unwrap();
    k.device_remove_write(a, b"1").unwrap();
    k.rescan(b"1").unwrap();
    assert_eq!(k.pci[&a].driver_override, None);
    assert_eq!(driver_of(&k, "0000:06:00.0").as_deref(), Some("nvme"));
}

#[test]
fn removing_a_bridge_removes_what_is_behind_it() {
    let mut k = kernel(
        "pci:\n  - {address: \"0000:00:1c.0\", id: \"8086:a33c\", class: \"060400\"}\n  - {address: \"0000:02:00.0\", preset: qemu-nvme, parent: \"0000:00:1c.0\"}\n",
    );
    assert_eq!(
        k.pci_path(addr("0000:02:00.0")),
        "devices/pci0000:00/0000:00:1c.0/0000:02:00.0"
    );
    k.device_remove_write(addr("0000:00:1c.0"), b"1").unwrap();
    assert!(k.pci.is_empty());
    k.rescan(b"1").unwrap();
    assert_eq!(k.pci.len(), 2);
    assert_eq!(driver_of(&k, "0000:02:00.0").as_deref(), Some("nvme"));
}

#[test]
fn plug_pci_adds_in_its_own_group_and_binds_the_named_driver() {
    let mut k = kernel(BASIC);
    let mut spec = PciSpec::new(addr("0000:08:00.0"), 0x8086, 0x5845, 0x010802);
    spec.driver = Some("nvme".into());
    k.plug_pci(spec).unwrap();
    let f = &k.pci[&addr("0000:08:00.0")];
    assert_eq!(f.driver.as_deref(), Some("nvme"));
    let g = f.iommu_group.unwrap();
    assert_eq!(k.iommu_groups()[&g], ["0000:08:00.0"]);
    assert_eq!(
        actions(&k.take_events()),
        [
            "add@/devices/pci0000:00/0000:08:00.0",
            "bind@/devices/pci0000:00/0000:08:00.0"
        ]
    );
}

#[test]
fn plug_pci_of_an_existing_address_is_an_error_naming_it() {
    let mut k = kernel(BASIC);
    let e = k
        .plug_pci(PciSpec::new(addr("0000:05:00.0"), 1, 2, 3))
        .unwrap_err();
    assert_eq!(e, KernelError::PciExists(addr("0000:05:00.0")));
    assert!(e.to_string().contains("0000:05:00.0"));
}

#[test]
fn unplug_pci_removes_for_good() {
    let mut k = kernel(BASIC);
    k.unplug_pci("0000:05:00.0").unwrap();
    k.rescan(b"1").unwrap();
    assert!(!k.pci.contains_key(&addr("0000:05:00.0")));
    assert_eq!(
        k.unplug_pci("0000:05:00.0"),
        Err(KernelError::NoSuchPci("0000:05:00.0".into()))
    );
}
