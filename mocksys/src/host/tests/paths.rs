//! Every path the reference names exists where it says, and path-level writes reach the model.

use super::*;

const HOST: &str = r#"
modules: [nvme, nvidia, vfio-pci, qat_c62x]
pci:
  - {address: "0000:05:00.0", preset: qemu-nvme}
  - {address: "0000:65:00.0", preset: tesla-t4}
  - {address: "0000:3d:00.0", preset: intel-qat}
usb:
  - {bus: 1, port: "1", preset: qemu-usb-storage}
"#;

fn host() -> Host {
    Host::from_spec(&HostSpec::from_yaml_str(HOST, "h").unwrap()).unwrap()
}

#[test]
fn every_path_the_reference_names_is_there() {
    let h = host();
    h.write(
        "bus/pci/devices/0000:65:00.0/mdev_supported_types/nvidia-230/create",
        b"9f5a7d2e-6b3c-4f1a-8e2d-1c0b9a8f7e6d",
    )
    .unwrap();
    h.write("bus/pci/devices/0000:3d:00.0/sriov_numvfs", b"1")
        .unwrap();
    let dev = "bus/pci/devices/0000:05:00.0";
    let mut paths: Vec<String> = [
        "bus/pci/devices",
        "bus/pci/drivers/vfio-pci/bind",
        "bus/pci/drivers/vfio-pci/unbind",
        "bus/pci/drivers/vfio-pci/new_id",
        "bus/pci/drivers/vfio-pci/remove_id",
        "bus/pci/drivers_probe",
        "bus/pci/rescan",
        "bus/mdev/devices/9f5a7d2e-6b3c-4f1a-8e2d-1c0b9a8f7e6d/mdev_type",
        "bus/mdev/devices/9f5a7d2e-6b3c-4f1a-8e2d-1c0b9a8f7e6d/remove",
        "bus/mdev/devices/9f5a7d2e-6b3c-4f1a-8e2d-1c0b9a8f7e6d/iommu_group",
        "bus/usb/devices/usb1",
        "bus/usb/devices/1-1:1.0",
        "class/mdev_bus/0000:65:00.0/mdev_supported_types/nvidia-230/name",
        "class/mdev_bus/0000:65:00.0/mdev_supported_types/nvidia-230/device_api",
        "class/mdev_bus/0000:65:00.0/mdev_supported_types/nvidia-230/available_instances",
        "class/mdev_bus/0000:65:00.0/mdev_supported_types/nvidia-230/description",
        "class/mdev_bus/0000:65:00.0/mdev_supported_types/nvidia-230/create",
        "class/mdev_bus/0000:65:00.0/mdev_supported_types/nvidia-230/devices/9f5a7d2e-6b3c-4f1a-8e2d-1c0b9a8f7e6d",
        "module/vfio_pci/initstate",
        "bus/pci/devices/0000:3d:00.0/sriov_totalvfs",
        "bus/pci/devices/0000:3d:00.0/sriov_numvfs",
        "bus/pci/devices/0000:3d:00.0/virtfn0",
        "bus/pci/devices/0000:3d:01.0/physfn",
    ]
    .map(String::from)
    .to_vec();
    for a in [
        "vendor",
        "device",
        "subsystem_vendor",
        "subsystem_device",
        "class",
        "revision",
        "numa_node",
        "irq",
        "local_cpulist",
        "driver_override",
        "modalias",
        "uevent",
        "config",
        "remove",
        "driver",
        "iommu_group",
        "driver/unbind",
    ] {
        paths.push(format!("{dev}/{a}"));
    }
    for a in [
        "idVendor",
        "idProduct",
        "bcdDevice",
        "busnum",
        "devnum",
        "devpath",
        "speed",
        "version",
        "bDeviceClass",
        "manufacturer",
        "product",
        "serial",
        "uevent",
        "descriptors",
    ] {
        paths.push(format!("bus/usb/devices/1-1/{a}"));
    }
    let group = h.inspect(|k| {
        k.pci
            .values()
            .find(|f| f.spec.device == 0x5845)
            .and_then(|f| f.iommu_group)
    });
    paths.push(format!(
        "kernel/iommu_groups/{}/devices/0000:05:00.0",
        group.unwrap()
    ));
    for p in &paths {
        h.resolve(p).unwrap_or_else(|e| panic!("{p}: {e}"));
    }
}

#[test]
fn writing_an_action_to_uevent_raises_that_uevent_only() {
    let h = host();
    let rx = h.subscribe_uevents();
    h.write("bus/pci/devices/0000:05:00.0/uevent", b"change\n")
        .unwrap();
    let ev: Vec<_> = rx.try_iter().collect();
    assert_eq!(ev.len(), 1);
    assert_eq!(
        (ev[0].action.as_str(), ev[0].get("DRIVER")),
        ("change", Some("nvme"))
    );
    assert_eq!(
        h.write("bus/pci/devices/0000:05:00.0/uevent", b"explode"),
        Err(Errno::EINVAL)
    );
}

#[test]
fn remove_and_rescan_through_paths() {
    let h = host();
    h.write("bus/pci/devices/0000:05:00.0/remove", b"1\n")
        .unwrap();
    assert_eq!(
        h.resolve("bus/pci/devices/0000:05:00.0"),
        Err(Errno::ENOENT)
    );
    h.write("/sys/bus/pci/rescan", b"1\n").unwrap();
    assert_eq!(
        h.resolve("bus/pci/devices/0000:05:00.0/driver").unwrap(),
        "bus/pci/drivers/nvme"
    );
}

#[test]
fn sriov_numvfs_through_paths_keeps_erange_and_ebusy() {
    let h = host();
    let p = "bus/pci/devices/0000:3d:00.0/sriov_numvfs";
    assert_eq!(h.write(p, b"17\n"), Err(Errno::ERANGE));
    h.write(p, b"2\n").unwrap();
    assert_eq!(h.write(p, b"3\n"), Err(Errno::EBUSY));
    h.write(p, b"0\n").unwrap();
    assert_eq!(
        h.resolve("bus/pci/devices/0000:3d:01.0"),
        Err(Errno::ENOENT)
    );
}
