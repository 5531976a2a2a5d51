use std::sync::Mutex as StdMutex;

use super::*;
use crate::faults::{FaultRule, Times};
use crate::spec::HostSpec;

pub(crate) const EXAMPLE: &str = r#"
modules: [nvme, vfio-pci, nvidia]
pci:
  - {address: "0000:05:00.0", id: "8086:5845", class: "010802", driver: nvme, iommuGroup: 5, numaNode: 0}
  - {address: "0000:06:00.0", preset: qemu-nvme, driver: vfio-pci}
  - {address: "0000:65:00.0", preset: tesla-t4}
usb:
  - {bus: 1, port: "1", id: "46f4:0001", manufacturer: QEMU, product: QEMU USB HARDDRIVE}
"#;

pub(crate) fn example() -> Host {
    Host::from_spec(&HostSpec::from_yaml_str(EXAMPLE, "example.yaml").unwrap()).unwrap()
}

fn read(h: &Host, p: &str) -> String {
    String::from_utf8_lossy(&h.read(p).unwrap_or_else(|e| panic!("{p}: {e}"))).into_owned()
}

fn recorder(h: &Host) -> Arc<StdMutex<Vec<Change>>> {
    let seen = Arc::new(StdMutex::new(Vec::new()));
    let s = seen.clone();
    h.subscribe(Box::new(move |c: &Change| {
        s.lock().unwrap().push(c.clone())
    }));
    seen
}

#[test]
fn reads_follow_links_and_accept_sys_prefixes() {
    let h = example();
    assert_eq!(read(&h, "bus/pci/devices/0000:05:00.0/vendor"), "0x8086\n");
    assert_eq!(
        read(&h, "/sys/bus/pci/devices/0000:65:00.0/class"),
        "0x030200\n"
    );
    assert_eq!(
        read(
            &h,
            "/sys/bus/pci/devices/0000:05:00.0/driver/0000:05:00.0/device"
        ),
        "0x5845\n"
    );
    assert_eq!(
        h.resolve("/sys/bus/pci/devices/0000:05:00.0").unwrap(),
        "devices/pci0000:00/0000:05:00.0"
    );
}

#[test]
fn reading_a_write_only_attribute_is_eacces() {
    let h = example();
    assert_eq!(h.read("bus/pci/drivers/nvme/bind"), Err(Errno::EACCES));
}

#[test]
fn writing_a_read_only_attribute_is_eacces() {
    let h = example();
    assert_eq!(
        h.write("bus/pci/devices/0000:05:00.0/vendor", b"0x1234"),
        Err(Errno::EACCES)
    );
}

#[test]
fn missing_paths_are_enoent_and_dirs_eisdir() {
    let h = example();
    assert_eq!(
        h.read("bus/pci/devices/0000:99:00.0/vendor"),
        Err(Errno::ENOENT)
    );
    assert_eq!(h.read("bus/pci/devices/0000:05:00.0"), Err(Errno::EISDIR));
    assert_eq!(
        h.write("bus/pci/drivers/nope/bind", b"x"),
        Err(Errno::ENOENT)
    );
}

#[test]
fn the_seed_docs_three_writes_move_a_device_to_vfio_pci() {
    let h = example();
    let seen = recorder(&h);
    h.write("/sys/bus/pci/drivers/nvidia/unbind", b"0000:65:00.0\n")
        .unwrap();
    h.write(
        "/sys/bus/pci/devices/0000:65:00.0/driver_override",
        b"vfio-pci\n",
    )
    .unwrap();
    h.write("/sys/bus/pci/drivers/vfio-pci/bind", b"0000:65:00.0\n")
        .unwrap();
    assert_eq!(
        h.resolve("bus/pci/devices/0000:65:00.0/driver").unwrap(),
        "bus/pci/drivers/vfio-pci"
    );
    assert!(
        h.tree()
            .get("bus/pci/drivers/vfio-pci/0000:65:00.0")
            .is_some()
    );
    assert!(
        h.tree()
            .get("devices/pci0000:00/0000:65:00.0/mdev_supported_types")
            .is_none()
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3, "one change per write");
    assert_eq!(seen[0].uevents[0].action, "unbind");
    assert!(
        seen[0]
            .diff
            .removed
            .iter()
            .any(|(p, _)| p == "devices/pci0000:00/0000:65:00.0/driver")
    );
    assert!(seen[1].uevents.is_empty());
    assert_eq!(
        seen[1].diff.changed,
        ["devices/pci0000:00/0000:65:00.0/driver_override"]
    );
    assert_eq!(seen[2].uevents[0].get("DRIVER"), Some("vfio-pci"));
    assert!(
        seen[2]
            .diff
            .added
            .contains(&"devices/pci0000:00/0000:65:00.0/driver".to_owned())
    );
    let group = h.inspect(|k| k.pci[&"0000:65:00.0".parse_addr()].iommu_group.unwrap());
    assert!(
        seen[2]
            .dev_nodes
            .iter()
            .any(|n| n.path == format!("vfio/{group}"))
    );
}

trait ParseAddr {
    fn parse_addr(&self) -> crate::spec::PciAddress;
}
impl ParseAddr for str {
    fn parse_addr(&self) -> crate::spec::PciAddress {
        crate::spec::PciAddress::parse(self).unwrap()
    }
}

#[test]
fn vfio_bind_performs_the_three_writes() {
    let h = example();
    let events = h.subscribe_uevents();
    h.vfio_bind("0000:05:00.0").unwrap();
    assert_eq!(
        read(&h, "bus/pci/devices/0000:05:00.0/driver_override"),
        "vfio-pci\n"
    );
    assert!(h.dev_nodes().iter().any(|n| n.path == "vfio/5"));
    // 0000:06:00.0 took vfio0 at boot; this one gets the next cdev.
    assert_eq!(
        read(&h, "bus/pci/devices/0000:05:00.0/vfio-dev/vfio1/dev"),
        "237:1\n"
    );
    assert!(h.dev_nodes().iter().any(|n| n.path == "vfio/devices/vfio1"));
    let got: Vec<_> = events.try_iter().map(|e| e.action).collect();
    assert_eq!(got, ["unbind", "bind"]);
    let e = h.vfio_bind("0000:99:00.0").unwrap_err();
    assert_eq!(e.errno, Errno::ENOENT, "{e}");
    assert!(
        e.to_string().contains("0000:99:00.0/driver_override"),
        "{e}"
    );
}

#[test]
fn failed_writes_change_nothing_and_notify_nobody() {
    let h = example();
    let seen = recorder(&h);
    let before = h.tree();
    assert_eq!(
        h.write("bus/pci/drivers/nvme/bind", b"0000:05:00.0"),
        Err(Errno::EBUSY)
    );
    assert!(seen.lock().unwrap().is_empty());
    assert!(Arc::ptr_eq(&before, &h.tree()));
}

#[test]
fn seqnums_increase_across_changes() {
    let h = example();
    let rx = h.subscribe_uevents();
    h.write("bus/pci/drivers/nvme/unbind", b"0000:05:00.0")
        .unwrap();
    h.write("bus/pci/drivers_probe", b"0000:05:00.0").unwrap();
    h.unplug_usb("1-1").unwrap();
    let seq: Vec<u64> = rx.try_iter().map(|e| e.seqnum).collect();
    assert!(seq.len() >= 4);
    assert!(seq.windows(2).all(|w| w[1] == w[0] + 1), "{seq:?}");
}

#[test]
fn mdev_create_and_remove_through_paths() {
    let h = example();
    let t = "bus/pci/devices/0000:65:00.0/mdev_supported_types/nvidia-230";
    h.write(
        &format!("{t}/create"),
        b"9f5a7d2e-6b3c-4f1a-8e2d-1c0b9a8f7e6d\n",
    )
    .unwrap();
    assert_eq!(read(&h, &format!("{t}/available_instances")), "15\n");
    let m = "/sys/bus/mdev/devices/9f5a7d2e-6b3c-4f1a-8e2d-1c0b9a8f7e6d";
    assert_eq!(
        h.resolve(&format!("{m}/mdev_type")).unwrap(),
        "devices/pci0000:00/0000:65:00.0/mdev_supported_types/nvidia-230"
    );
    assert_eq!(
        h.write(
            &format!("{t}/create"),
            b"9f5a7d2e-6b3c-4f1a-8e2d-1c0b9a8f7e6d"
        ),
        Err(Errno::EEXIST)
    );
    h.write(&format!("{m}/remove"), b"1\n").unwrap();
    assert_eq!(read(&h, &format!("{t}/available_instances")), "16\n");
}

#[test]
fn faults_apply_to_reads_through_links_and_run_out() {
    let h = example();
    h.faults().add(FaultRule::errno(
        "/sys/bus/pci/devices/0000:05:00.0/uevent",
        Errno::EIO,
        Times::Times(2),
    ));
    let real = "devices/pci0000:00/0000:05:00.0/uevent";
    assert_eq!(h.read(real), Err(Errno::EIO));
    assert_eq!(
        h.read("bus/pci/devices/0000:05:00.0/uevent"),
        Err(Errno::EIO)
    );
    assert!(read(&h, real).starts_with("DRIVER=nvme\n"));
}

#[test]
fn write_faults_fail_the_write_without_effect() {
    let h = example();
    let mut rule = FaultRule::errno("bus/pci/drivers/nvme/unbind", Errno::EPERM, Times::Once);
    rule.op = crate::faults::FaultOp::Write;
    h.faults().add(rule);
    assert_eq!(
        h.write("bus/pci/drivers/nvme/unbind", b"0000:05:00.0"),
        Err(Errno::EPERM)
    );
    assert!(
        h.tree()
            .get("devices/pci0000:00/0000:05:00.0/driver")
            .is_some()
    );
    h.write("bus/pci/drivers/nvme/unbind", b"0000:05:00.0")
        .unwrap();
}

#[test]
fn modprobe_through_the_host_notifies_with_the_new_driver_dir() {
    let h = Host::from_spec(&HostSpec::from_yaml_str("modules: [nvme]\n", "h").unwrap()).unwrap();
    let seen = recorder(&h);
    h.modprobe("vfio-pci").unwrap();
    let seen = seen.lock().unwrap();
    assert!(
        seen[0]
            .diff
            .added
            .contains(&"bus/pci/drivers/vfio-pci/bind".to_owned())
    );
    assert!(seen[0].dev_nodes.iter().any(|n| n.path == "vfio/vfio"));
}

#[test]
fn plug_and_unplug_usb_and_pci_through_the_host() {
    let h = example();
    let rx = h.subscribe_uevents();
    h.unplug_usb("1-1").unwrap();
    assert!(h.tree().get("bus/usb/devices/1-1").is_none());
    let spec = crate::spec::PciSpec::new("0000:09:00.0".parse_addr(), 0x1af4, 0x1041, 0x020000);
    h.plug_pci(spec).unwrap();
    assert_eq!(read(&h, "bus/pci/devices/0000:09:00.0/vendor"), "0x1af4\n");
    h.unplug_pci("0000:09:00.0").unwrap();
    assert!(
        h.unplug_pci("0000:09:00.0")
            .unwrap_err()
            .to_string()
            .contains("0000:09:00.0")
    );
    let actions: Vec<_> = rx
        .try_iter()
        .map(|e| format!("{}:{}", e.action, e.subsystem))
        .collect();
    assert!(
        actions.contains(&"add:pci".to_owned()) && actions.contains(&"remove:usb".to_owned()),
        "{actions:?}"
    );
}

mod invariants;
mod lspci;
mod paths;

#[test]
fn injected_faults_announce_the_paths_they_cover_so_caches_drop_them() {
    let h = example();
    let seen = recorder(&h);
    h.inject_fault(FaultRule::errno(
        "/sys/bus/pci/devices/0000:05:00.0/uevent",
        Errno::EIO,
        Times::Once,
    ));
    let changes = seen.lock().unwrap();
    assert_eq!(changes.len(), 1);
    let changed = &changes[0].diff.changed;
    assert!(
        changed.contains(&"devices/pci0000:00/0000:05:00.0/uevent".to_owned()),
        "{changed:?}"
    );
    assert!(changes[0].uevents.is_empty());
    drop(changes);
    assert_eq!(
        h.read("bus/pci/devices/0000:05:00.0/uevent"),
        Err(Errno::EIO)
    );

    // A prefix rule announces every attribute under it.
    h.inject_fault(FaultRule::errno(
        "/sys/devices/pci0000:00/0000:06:00.0/*",
        Errno::EIO,
        Times::Always,
    ));
    let changes = seen.lock().unwrap();
    let changed = &changes[1].diff.changed;
    assert!(
        changed.iter().any(|p| p.ends_with("0000:06:00.0/vendor")),
        "{changed:?}"
    );
    assert!(
        changed
            .iter()
            .all(|p| p.starts_with("devices/pci0000:00/0000:06:00.0/")),
        "{changed:?}"
    );
}
