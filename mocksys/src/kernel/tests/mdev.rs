use super::*;
use crate::errno::Errno;

const T4S: &str = r#"
pci:
  - {address: "0000:65:00.0", preset: tesla-t4}
  - {address: "0000:66:00.0", preset: tesla-t4}
  - {address: "0000:00:02.0", preset: intel-gvt}
"#;

const U1: &[u8] = b"9f5a7d2e-6b3c-4f1a-8e2d-1c0b9a8f7e6d\n";
const U2: &[u8] = b"0b4d8c2a-1e3f-4a5b-9c6d-7e8f9a0b1c2d";

fn t4() -> PciAddress {
    addr("0000:65:00.0")
}

#[test]
fn mdev_types_exist_only_while_bound_to_the_vendor_driver() {
    let mut k = kernel(T4S);
    assert_eq!(k.registered_types(t4()).len(), 17);
    k.unbind("nvidia", "0000:65:00.0").unwrap();
    assert!(k.registered_types(t4()).is_empty());
    k.set_driver_override(t4(), b"vfio-pci").unwrap();
    k.bind("vfio-pci", "0000:65:00.0").unwrap();
    assert!(
        k.registered_types(t4()).is_empty(),
        "vfio-pci registers no nvidia types"
    );
}

#[test]
fn mdev_create_with_a_byte_count_other_than_36_or_37_is_einval() {
    let mut k = kernel(T4S);
    assert_eq!(
        k.mdev_create(t4(), "nvidia-230", b"9f5a7d2e"),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        k.mdev_create(
            t4(),
            "nvidia-230",
            b"9f5a7d2e-6b3c-4f1a-8e2d-1c0b9a8f7e6d\n\n"
        ),
        Err(Errno::EINVAL)
    );
}

#[test]
fn mdev_create_with_a_bad_uuid_is_einval() {
    let mut k = kernel(T4S);
    assert_eq!(
        k.mdev_create(t4(), "nvidia-230", b"9f5a7d2e-6b3c-4f1a-8e2d-1c0b9a8f7e6z"),
        Err(Errno::EINVAL)
    );
}

#[test]
fn mdev_create_makes_a_lower_case_device_with_its_own_group_and_dev_vfio() {
    let mut k = kernel(T4S);
    k.mdev_create(t4(), "nvidia-230", b"9F5A7D2E-6B3C-4F1A-8E2D-1C0B9A8F7E6D")
        .unwrap();
    let m = &k.mdevs["9f5a7d2e-6b3c-4f1a-8e2d-1c0b9a8f7e6d"];
    assert!(k.pci.values().all(|f| f.iommu_group != Some(m.iommu_group)));
    assert!(
        k.dev_nodes()
            .iter()
            .any(|n| n.path == format!("vfio/{}", m.iommu_group))
    );
    let ev = k.take_events();
    assert_eq!(ev[0].action, "add");
    assert_eq!(ev[0].subsystem, "mdev");
    assert_eq!(
        ev[0].devpath,
        "/devices/pci0000:00/0000:65:00.0/9f5a7d2e-6b3c-4f1a-8e2d-1c0b9a8f7e6d"
    );
    assert_eq!(ev[0].get("MDEV_TYPE"), Some("nvidia-230"));
}

#[test]
fn mdev_create_with_a_uuid_used_under_any_parent_is_eexist() {
    let mut k = kernel(T4S);
    k.mdev_create(t4(), "nvidia-230", U1).unwrap();
    assert_eq!(
        k.mdev_create(addr("0000:66:00.0"), "nvidia-230", U1),
        Err(Errno::EEXIST)
    );
}

#[test]
fn mdev_create_with_no_instances_left_is_eusers() {
    let mut k = kernel(T4S);
    k.mdev_create(t4(), "nvidia-234", U1).unwrap();
    assert_eq!(k.available_instances(t4(), "nvidia-234"), 0);
    assert_eq!(k.mdev_create(t4(), "nvidia-234", U2), Err(Errno::EUSERS));
}

#[test]
fn available_instances_drop_by_one_per_mdev() {
    let mut k = kernel(T4S);
    assert_eq!(k.available_instances(t4(), "nvidia-230"), 16);
    k.mdev_create(t4(), "nvidia-230", U1).unwrap();
    assert_eq!(k.available_instances(t4(), "nvidia-230"), 15);
}

#[test]
fn nvidia_shows_zero_for_other_types_once_one_type_is_in_use() {
    let mut k = kernel(T4S);
    k.mdev_create(t4(), "nvidia-231", U1).unwrap();
    assert_eq!(k.available_instances(t4(), "nvidia-231"), 7);
    assert_eq!(k.available_instances(t4(), "nvidia-230"), 0);
    assert_eq!(k.mdev_create(t4(), "nvidia-230", U2), Err(Errno::EUSERS));
    // The other GPU is untouched.
    assert_eq!(
        k.available_instances(addr("0000:66:00.0"), "nvidia-230"),
        16
    );
}

#[test]
fn core_counted_types_share_the_parents_capacity() {
    let mut k = kernel(T4S);
    let gvt = addr("0000:00:02.0");
    assert_eq!(k.available_instances(gvt, "i915-GVTg_V5_4"), 4);
    k.mdev_create(gvt, "i915-GVTg_V5_4", U1).unwrap();
    assert_eq!(k.available_instances(gvt, "i915-GVTg_V5_4"), 3);
    assert_eq!(k.available_instances(gvt, "i915-GVTg_V5_8"), 6);
    assert_eq!(k.available_instances(gvt, "i915-GVTg_V5_2"), 1);
    assert_eq!(k.available_instances(gvt, "i915-GVTg_V5_1"), 0);
}

#[test]
fn mdev_remove_1_removes_0_does_nothing_and_garbage_is_einval() {
    let mut k = kernel(T4S);
    k.mdev_create(t4(), "nvidia-230", U1).unwrap();
    let u = "9f5a7d2e-6b3c-4f1a-8e2d-1c0b9a8f7e6d";
    assert_eq!(k.mdev_remove_write(u, b"yes"), Err(Errno::EINVAL));
    k.mdev_remove_write(u, b"0\n").unwrap();
    assert!(k.mdevs.contains_key(u));
    k.take_events();
    k.mdev_remove_write(u, b"1\n").unwrap();
    assert!(!k.mdevs.contains_key(u));
    assert_eq!(k.available_instances(t4(), "nvidia-230"), 16);
    assert_eq!(k.take_events()[0].action, "remove");
}

#[test]
fn unbinding_the_vendor_driver_removes_the_parents_mdevs_and_types() {
    let mut k = kernel(T4S);
    k.mdev_create(t4(), "nvidia-230", U1).unwrap();
    let group = k.mdevs.values().next().unwrap().iommu_group;
    k.take_events();
    k.unbind("nvidia", "0000:65:00.0").unwrap();
    assert!(k.mdevs.is_empty());
    assert!(
        !k.dev_nodes()
            .iter()
            .any(|n| n.path == format!("vfio/{group}"))
    );
    let ev = k.take_events();
    assert_eq!(
        (ev[0].action.as_str(), ev[0].subsystem.as_str()),
        ("remove", "mdev")
    );
    assert_eq!(ev[1].action, "unbind");
}

#[test]
fn mdev_create_on_a_type_the_parent_does_not_offer_is_enodev() {
    let mut k = kernel(T4S);
    assert_eq!(
        k.mdev_create(t4(), "i915-GVTg_V5_4", U1),
        Err(Errno::ENODEV)
    );
}
