use super::*;
use crate::host::resolve;
use crate::spec::HostSpec;
use crate::tree::NodeKind;

const HOST: &str = r#"
modules: [nvme, nvidia, vfio-pci, qat_c62x]
pci:
  - {address: "0000:05:00.0", preset: qemu-nvme, iommuGroup: 5, numaNode: 0}
  - {address: "0000:06:00.0", preset: qemu-nvme, driver: none}
  - {address: "0000:65:00.0", preset: tesla-t4}
  - {address: "0000:00:1c.0", id: "8086:a33c", class: "060400"}
  - {address: "0000:02:00.0", preset: qemu-nvme, parent: "0000:00:1c.0"}
  - {address: "0000:3d:00.0", preset: intel-qat}
usb:
  - {bus: 1, port: "1", preset: qemu-usb-storage}
  - {bus: 1, port: "2", id: "046d:c52b"}
"#;

fn rendered() -> (Kernel, Rendered) {
    let spec = HostSpec::from_yaml_str(HOST, "h").unwrap();
    let mut k = Kernel::from_spec(&spec).unwrap();
    k.set_numvfs(
        crate::spec::PciAddress::parse("0000:3d:00.0").unwrap(),
        b"1",
    )
    .unwrap();
    k.mdev_create(
        crate::spec::PciAddress::parse("0000:65:00.0").unwrap(),
        "nvidia-230",
        b"9f5a7d2e-6b3c-4f1a-8e2d-1c0b9a8f7e6d",
    )
    .unwrap();
    let r = render(&k, &mut InodeTable::default());
    (k, r)
}

fn text(r: &Rendered, path: &str) -> String {
    match &r.tree.get(path).unwrap_or_else(|| panic!("no {path}")).kind {
        NodeKind::File { content, .. } => String::from_utf8_lossy(content).into_owned(),
        other => panic!("{path} is {other:?}"),
    }
}

fn target(r: &Rendered, path: &str) -> String {
    match &r.tree.get(path).unwrap_or_else(|| panic!("no {path}")).kind {
        NodeKind::Symlink { target } => target.clone(),
        other => panic!("{path} is {other:?}"),
    }
}

const NVME: &str = "devices/pci0000:00/0000:05:00.0";

#[test]
fn rel_climbs_to_the_common_ancestor() {
    assert_eq!(
        rel("bus/pci/devices/X", "devices/pci0000:00/X"),
        "../../../devices/pci0000:00/X"
    );
    assert_eq!(
        rel("devices/pci0000:00/X/driver", "bus/pci/drivers/nvme"),
        "../../../bus/pci/drivers/nvme"
    );
    assert_eq!(
        rel("devices/pci0000:00/P/virtfn0", "devices/pci0000:00/V"),
        "../V"
    );
    assert_eq!(rel("a/b/c", "a/b/d"), "d");
}

#[test]
fn links_are_relative_as_the_kernel_makes_them() {
    let (_, r) = rendered();
    assert_eq!(
        target(&r, "bus/pci/devices/0000:05:00.0"),
        "../../../devices/pci0000:00/0000:05:00.0"
    );
    assert_eq!(
        target(&r, &format!("{NVME}/driver")),
        "../../../bus/pci/drivers/nvme"
    );
    assert_eq!(
        target(&r, &format!("{NVME}/iommu_group")),
        "../../../kernel/iommu_groups/5"
    );
    assert_eq!(target(&r, &format!("{NVME}/subsystem")), "../../../bus/pci");
    assert_eq!(
        target(&r, "kernel/iommu_groups/5/devices/0000:05:00.0"),
        "../../../../devices/pci0000:00/0000:05:00.0"
    );
    assert_eq!(
        target(&r, "bus/pci/drivers/nvme/0000:05:00.0"),
        "../../../../devices/pci0000:00/0000:05:00.0"
    );
    assert_eq!(
        target(&r, "bus/pci/drivers/nvme/module"),
        "../../../../module/nvme"
    );
    // One more `../` per bridge level.
    assert_eq!(
        target(&r, "devices/pci0000:00/0000:00:1c.0/0000:02:00.0/driver"),
        "../../../../bus/pci/drivers/nvme"
    );
    assert_eq!(
        target(&r, "devices/pci0000:00/0000:3d:00.0/virtfn0"),
        "../0000:3d:01.0"
    );
    assert_eq!(
        target(&r, "devices/pci0000:00/0000:3d:01.0/physfn"),
        "../0000:3d:00.0"
    );
    assert_eq!(
        target(&r, "class/mdev_bus/0000:65:00.0"),
        "../../devices/pci0000:00/0000:65:00.0"
    );
    let u = "9f5a7d2e-6b3c-4f1a-8e2d-1c0b9a8f7e6d";
    assert_eq!(
        target(&r, &format!("bus/mdev/devices/{u}")),
        format!("../../../devices/pci0000:00/0000:65:00.0/{u}")
    );
    assert_eq!(
        target(
            &r,
            &format!("devices/pci0000:00/0000:65:00.0/{u}/mdev_type")
        ),
        "../mdev_supported_types/nvidia-230"
    );
    assert_eq!(
        target(&r, "bus/usb/devices/1-1"),
        "../../../devices/pci0000:00/0000:00:14.0/usb1/1-1"
    );
}

#[test]
fn every_symlink_resolves_to_a_node() {
    let (_, r) = rendered();
    for (path, node) in r.tree.iter() {
        if matches!(node.kind, NodeKind::Symlink { .. }) {
            let real = resolve(&r.tree, path).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert!(r.tree.get(&real).is_some(), "{path} -> {real}");
        }
    }
}

#[test]
fn pci_attributes_have_the_kernel_formats() {
    let (_, r) = rendered();
    assert_eq!(text(&r, &format!("{NVME}/vendor")), "0x8086\n");
    assert_eq!(text(&r, &format!("{NVME}/device")), "0x5845\n");
    assert_eq!(text(&r, &format!("{NVME}/class")), "0x010802\n");
    assert_eq!(text(&r, &format!("{NVME}/revision")), "0x02\n");
    assert_eq!(text(&r, &format!("{NVME}/numa_node")), "0\n");
    assert_eq!(
        text(&r, "devices/pci0000:00/0000:06:00.0/numa_node"),
        "-1\n"
    );
    assert_eq!(text(&r, &format!("{NVME}/driver_override")), "(null)\n");
    assert_eq!(
        text(&r, &format!("{NVME}/modalias")),
        "pci:v00008086d00005845sv00001AF4sd00001100bc01sc08i02\n"
    );
    assert_eq!(
        text(&r, &format!("{NVME}/uevent")),
        "DRIVER=nvme\nPCI_CLASS=10802\nPCI_ID=8086:5845\nPCI_SUBSYS_ID=1AF4:1100\nPCI_SLOT_NAME=0000:05:00.0\nMODALIAS=pci:v00008086d00005845sv00001AF4sd00001100bc01sc08i02\n"
    );
    assert_eq!(
        text(&r, "devices/pci0000:00/0000:65:00.0/class"),
        "0x030200\n"
    );
    assert_eq!(
        text(&r, "devices/pci0000:00/0000:3d:00.0/sriov_totalvfs"),
        "16\n"
    );
    assert_eq!(
        text(&r, "devices/pci0000:00/0000:3d:00.0/sriov_numvfs"),
        "1\n"
    );
    assert_eq!(text(&r, "module/vfio_pci/initstate"), "live\n");
}

#[test]
fn modes_follow_the_show_and_store_sides() {
    let (_, r) = rendered();
    let perm = |p: &str| r.tree.get(p).unwrap_or_else(|| panic!("no {p}")).perm;
    for p in [
        "bus/pci/drivers/nvme/bind",
        "bus/pci/drivers/nvme/unbind",
        "bus/pci/drivers/nvme/new_id",
        "bus/pci/drivers/nvme/remove_id",
        "bus/pci/drivers_probe",
        "bus/pci/rescan",
        "devices/pci0000:00/0000:05:00.0/remove",
        "devices/pci0000:00/0000:65:00.0/mdev_supported_types/nvidia-230/create",
    ] {
        assert_eq!(perm(p), 0o200, "{p}");
        assert!(r.attrs.contains_key(p), "{p}");
    }
    for p in [
        &format!("{NVME}/driver_override"),
        &format!("{NVME}/uevent"),
        &"devices/pci0000:00/0000:3d:00.0/sriov_numvfs".to_owned(),
    ] {
        assert_eq!(perm(p), 0o644, "{p}");
    }
    assert_eq!(perm(&format!("{NVME}/vendor")), 0o444);
    assert_eq!(perm("bus/pci/devices/0000:05:00.0"), 0o777);
    assert!(r.tree.get(NVME).unwrap().is_dir());
    match &r.tree.get(&format!("{NVME}/vendor")).unwrap().kind {
        NodeKind::File { size, .. } => assert_eq!(*size, 4096),
        _ => unreachable!(),
    }
}

#[test]
fn config_space_carries_identity_and_a_capability_list() {
    let (_, r) = rendered();
    let NodeKind::File { content, size } = &r.tree.get(&format!("{NVME}/config")).unwrap().kind
    else {
        panic!()
    };
    assert_eq!((*size, content.len()), (256, 256));
    let w = |at: usize| u16::from_le_bytes([content[at], content[at + 1]]);
    assert_eq!((w(0), w(2)), (0x8086, 0x5845));
    assert_eq!(
        (content[0x0b], content[0x0a], content[0x09]),
        (0x01, 0x08, 0x02)
    );
    assert_eq!((w(0x2c), w(0x2e)), (0x1af4, 0x1100));
    assert_eq!(content[0x0e], 0);
    // Walk the list: PM, MSI, Express, end.
    let mut ids = Vec::new();
    let mut at = content[0x34] as usize;
    while at != 0 {
        ids.push(content[at]);
        at = content[at + 1] as usize;
    }
    assert_eq!(ids, [0x01, 0x05, 0x10]);
    let NodeKind::File {
        content: bridge, ..
    } = &r
        .tree
        .get("devices/pci0000:00/0000:00:1c.0/config")
        .unwrap()
        .kind
    else {
        panic!()
    };
    assert_eq!((bridge[0x0e], bridge[0x19]), (0x01, 0x02));
}

#[test]
fn mdev_types_and_instances_render() {
    let (_, r) = rendered();
    let t = "devices/pci0000:00/0000:65:00.0/mdev_supported_types";
    assert_eq!(text(&r, &format!("{t}/nvidia-230/name")), "GRID T4-1Q\n");
    assert_eq!(
        text(&r, &format!("{t}/nvidia-230/device_api")),
        "vfio-pci\n"
    );
    assert_eq!(
        text(&r, &format!("{t}/nvidia-230/available_instances")),
        "15\n"
    );
    assert_eq!(
        text(&r, &format!("{t}/nvidia-231/available_instances")),
        "0\n"
    );
    assert!(
        r.tree
            .get(&format!(
                "{t}/nvidia-230/devices/9f5a7d2e-6b3c-4f1a-8e2d-1c0b9a8f7e6d"
            ))
            .is_some()
    );
    assert!(
        r.tree
            .get("devices/pci0000:00/0000:05:00.0/mdev_supported_types")
            .is_none()
    );
}

#[test]
fn usb_attributes_have_the_kernel_formats() {
    let (_, r) = rendered();
    let d = "devices/pci0000:00/0000:00:14.0/usb1/1-1";
    assert_eq!(text(&r, &format!("{d}/idVendor")), "46f4\n");
    assert_eq!(text(&r, &format!("{d}/idProduct")), "0001\n");
    assert_eq!(text(&r, &format!("{d}/busnum")), "1\n");
    assert_eq!(text(&r, &format!("{d}/devnum")), "2\n");
    assert_eq!(text(&r, &format!("{d}/speed")), "480\n");
    assert_eq!(text(&r, &format!("{d}/version")), " 2.00\n");
    assert_eq!(text(&r, &format!("{d}/bDeviceClass")), "00\n");
    assert_eq!(text(&r, &format!("{d}/manufacturer")), "QEMU\n");
    assert_eq!(text(&r, &format!("{d}/product")), "QEMU USB HARDDRIVE\n");
    assert!(
        r.tree
            .get(&format!("{d}/1-1:1.0/bInterfaceClass"))
            .is_some()
    );
    // No strings given: the files are absent.
    assert!(
        r.tree
            .get("devices/pci0000:00/0000:00:14.0/usb1/1-2/manufacturer")
            .is_none()
    );
    assert!(
        r.tree
            .get("devices/pci0000:00/0000:00:14.0/usb1/1-2/serial")
            .is_none()
    );
    assert!(text(&r, &format!("{d}/uevent")).contains("DEVNAME=bus/usb/001/002\n"));
    let NodeKind::File { content, size } = &r.tree.get(&format!("{d}/descriptors")).unwrap().kind
    else {
        panic!()
    };
    assert_eq!(*size as usize, content.len());
    assert_eq!((content[0], content[1]), (18, 1));
    assert_eq!(u16::from_le_bytes([content[8], content[9]]), 0x46f4);
    assert_eq!((content[18], content[19]), (9, 2));
    assert_eq!(
        text(&r, "devices/pci0000:00/0000:00:14.0/usb1/idVendor"),
        "1d6b\n"
    );
}

#[test]
fn a_host_of_1024_pci_functions_and_256_usb_devices_renders() {
    let mut yaml = String::from("pci:\n");
    for i in 0..1024u32 {
        yaml.push_str(&format!(
            "  - {{address: \"0000:{:02x}:{:02x}.{}\", preset: qemu-nvme}}\n",
            1 + i / 64,
            (i / 2) % 32,
            i % 2
        ));
    }
    yaml.push_str("usb:\n");
    for i in 0..256u32 {
        yaml.push_str(&format!(
            "  - {{bus: {}, port: \"{}\", preset: qemu-usb-storage}}\n",
            1 + i / 16,
            1 + i % 16
        ));
    }
    let spec = HostSpec::from_yaml_str(&yaml, "big").unwrap();
    let k = Kernel::from_spec(&spec).unwrap();
    let mut inodes = InodeTable::default();
    let cpu_started = thread_cpu();
    let started = std::time::Instant::now();
    let r = render(&k, &mut inodes);
    let first_cpu = thread_cpu() - cpu_started;
    let first = started.elapsed();
    let started = std::time::Instant::now();
    let again = render(&k, &mut inodes);
    let second = started.elapsed();
    let started = std::time::Instant::now();
    let diff = crate::tree::Tree::diff(&r.tree, &again.tree);
    // Reported, not asserted: the criterion benches hold the speed aims.
    eprintln!(
        "{} nodes; render {first:?} ({first_cpu:?} CPU), re-render {second:?}, diff {:?}",
        r.tree.len(),
        started.elapsed()
    );
    assert!(diff.is_empty());
    let devs = r.tree.get("bus/pci/devices").unwrap().children.len();
    assert_eq!(devs, 1025, "1024 functions and the xHCI controller");
    assert_eq!(
        r.tree.get("bus/usb/devices").unwrap().children.len(),
        16 * 2 + 256 * 2
    );
}

/// CPU time of this thread: what a render costs, whatever else the machine is doing.
fn thread_cpu() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid, exclusively borrowed `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
