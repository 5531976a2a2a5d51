use super::*;
use crate::errno::Errno;

const QAT: &str = r#"
pci:
  - {address: "0000:3d:00.0", preset: intel-qat}
  - {address: "0000:3e:00.0", preset: intel-qat, driver: vfio-pci}
  - {address: "0000:3f:00.0", preset: intel-qat, driver: none}
"#;

fn qat() -> Kernel {
    let mut k = kernel(QAT);
    k.modprobe("qat_c62xvf").unwrap();
    k.take_events();
    k
}

#[test]
fn sriov_numvfs_above_totalvfs_is_erange() {
    let mut k = qat();
    assert_eq!(
        k.set_numvfs(addr("0000:3d:00.0"), b"17\n"),
        Err(Errno::ERANGE)
    );
}

#[test]
fn sriov_numvfs_garbage_is_einval() {
    let mut k = qat();
    assert_eq!(
        k.set_numvfs(addr("0000:3d:00.0"), b"four"),
        Err(Errno::EINVAL)
    );
}

#[test]
fn sriov_numvfs_creates_vfs_with_virtfn_and_physfn() {
    let mut k = qat();
    let pf = addr("0000:3d:00.0");
    k.set_numvfs(pf, b"2\n").unwrap();
    let vfs = k.vfs_of(pf);
    assert_eq!(
        vfs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        ["0000:3d:01.0", "0000:3d:01.1"]
    );
    let vf = &k.pci[&vfs[0]];
    assert_eq!(vf.physfn, Some(pf));
    assert_eq!(vf.spec.device, 0x6f55);
    assert!(vf.iommu_group.is_some() && vf.iommu_group != k.pci[&pf].iommu_group);
    // VFs are probed as they appear: the VF driver takes them.
    assert_eq!(vf.driver.as_deref(), Some("qat_c62xvf"));
    let ev = k.take_events();
    assert_eq!(ev.iter().filter(|e| e.action == "add").count(), 2);
}

#[test]
fn sriov_numvfs_nonzero_to_another_nonzero_is_ebusy() {
    let mut k = qat();
    let pf = addr("0000:3d:00.0");
    k.set_numvfs(pf, b"2").unwrap();
    assert_eq!(k.set_numvfs(pf, b"4"), Err(Errno::EBUSY));
    // The same value again is accepted and changes nothing.
    k.take_events();
    k.set_numvfs(pf, b"2").unwrap();
    assert!(k.take_events().is_empty());
}

#[test]
fn sriov_numvfs_zero_removes_the_vfs() {
    let mut k = qat();
    let pf = addr("0000:3d:00.0");
    k.set_numvfs(pf, b"3").unwrap();
    k.set_numvfs(pf, b"0").unwrap();
    assert!(k.vfs_of(pf).is_empty());
    assert!(!k.pci.contains_key(&addr("0000:3d:01.0")));
}

#[test]
fn sriov_numvfs_on_a_pf_without_driver_is_enoent() {
    let mut k = qat();
    assert_eq!(k.set_numvfs(addr("0000:3f:00.0"), b"1"), Err(Errno::ENOENT));
}

#[test]
fn vfs_of_a_vfio_pci_pf_get_vfio_pci() {
    let mut k = qat();
    let pf = addr("0000:3e:00.0");
    k.set_numvfs(pf, b"1").unwrap();
    let vf = &k.pci[&k.vfs_of(pf)[0]];
    assert_eq!(vf.driver_override.as_deref(), Some("vfio-pci"));
    assert_eq!(vf.driver.as_deref(), Some("vfio-pci"));
}

#[test]
fn vfio_pci_probe_of_a_pf_with_vfs_is_ebusy() {
    let mut k = qat();
    let pf = addr("0000:3d:00.0");
    k.set_numvfs(pf, b"1").unwrap();
    k.set_driver_override(pf, b"vfio-pci").unwrap();
    // Still bound to qat: unbinding the PF driver disables its VFs, so bind a copy's state by hand.
    if let Some(f) = k.pci.get_mut(&pf) {
        f.driver = None;
    }
    assert_eq!(k.bind("vfio-pci", "0000:3d:00.0"), Err(Errno::EBUSY));
}

#[test]
fn unbinding_the_pf_driver_removes_its_vfs() {
    let mut k = qat();
    let pf = addr("0000:3d:00.0");
    k.set_numvfs(pf, b"2").unwrap();
    k.take_events();
    k.unbind("qat_c62x", "0000:3d:00.0").unwrap();
    assert!(k.vfs_of(pf).is_empty());
    let ev = actions(&k.take_events());
    assert_eq!(
        ev.last().map(String::as_str),
        Some("unbind@/devices/pci0000:00/0000:3d:00.0")
    );
    assert!(ev.contains(&"remove@/devices/pci0000:00/0000:3d:01.0".to_owned()));
}
