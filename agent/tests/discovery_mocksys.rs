//! Discovery and mdev management against mocksys's FUSE mount: the kernel's layout and write
//! semantics (mdev `create`/`remove` take effect immediately, with the kernel's errnos), not
//! a hand-made tree. Skipped visibly where /dev/fuse is missing.

use std::sync::Arc;

use hostdev_agent::config::{NodeLabels, ServeMode, parse};
use hostdev_agent::discovery::discover;
use hostdev_agent::inventory::Member;
use hostdev_agent::mdev_manager::{SeededUuids, reconcile_mdevs};
use hostdev_agent::sysfs::HostPaths;
use mocksys::mount::{Mount, MountOptions};
use mocksys::spec::HostSpec;
use mocksys::{Host, SysBackend};

const HOST: &str = r#"
pci:
  - {address: "0000:05:00.0", preset: qemu-nvme, driver: vfio-pci, iommuGroup: 5, numaNode: 0}
  - {address: "0000:06:00.0", preset: qemu-nvme, driver: nvme, iommuGroup: 6}
  - {address: "0000:65:00.0", preset: tesla-t4, driver: nvidia, iommuGroup: 40, numaNode: 1}
usb:
  - {bus: 1, port: "1", preset: qemu-usb-storage}
"#;

const CONFIG: &str = "permittedHostDevices:
  pciHostDevices:
  - {pciVendorSelector: '8086:5845', resourceName: devices.kubevirt.io/nvme}
  mediatedDevices:
  - {mdevNameSelector: GRID T4-2Q, resourceName: nvidia.com/GRID_T4-2Q}
  usb:
  - resourceName: kubevirt.io/storage
    selectors: [{vendor: '46f4', product: '0001'}]
";

struct Mounted {
    mount: Option<Mount>,
    _dir: tempfile::TempDir,
}

impl Mounted {
    fn paths(&self) -> HostPaths {
        let m = self.mount.as_ref().unwrap_or_else(|| unreachable!());
        HostPaths::new(m.sys_path(), m.dev_path())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(m) = self.mount.take() {
            m.unmount();
        }
    }
}

fn mounted() -> Option<Mounted> {
    if !std::path::Path::new("/dev/fuse").exists() {
        mocksys::testing::cannot_run("/dev/fuse is missing on this machine");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = HostSpec::from_yaml_str(HOST, "test-host.yaml").expect("host spec");
    let host = Host::from_spec(&spec).expect("host");
    let backend: Arc<dyn SysBackend> = Arc::new(host);
    let mount = Mount::new(backend, dir.path(), MountOptions::default()).expect("mount");
    Some(Mounted {
        mount: Some(mount),
        _dir: dir,
    })
}

#[test]
fn discovery_on_a_mocksys_mount() {
    let Some(m) = mounted() else { return };
    let cfg = parse(CONFIG, "test.yaml")
        .unwrap()
        .with_serve(ServeMode::All);
    let inv = discover(&m.paths(), &cfg);
    let nvme = &inv.resources["devices.kubevirt.io/nvme"].devices;
    assert_eq!(nvme.len(), 1, "{inv:#?}");
    assert_eq!(nvme[0].id, "5");
    assert!(nvme[0].healthy, "/dev/vfio/5 exists");
    assert_eq!(nvme[0].numa_nodes, [0]);
    assert!(
        inv.skipped
            .iter()
            .any(|s| s.device == "pci 0000:06:00.0" && s.reason.contains("bound to nvme")),
        "{inv:#?}"
    );
    let usb = &inv.resources["kubevirt.io/storage"].devices;
    assert_eq!(usb.len(), 1, "{inv:#?}");
    assert!(usb[0].healthy);
    assert!(
        matches!(&usb[0].members[0], Member::Usb { bus: 1, devname, .. } if devname.starts_with("bus/usb/001/"))
    );
}

#[test]
fn mdev_reconcile_on_a_mocksys_mount_creates_removes_and_recreates() {
    let Some(m) = mounted() else { return };
    let paths = m.paths();
    let labels = NodeLabels::for_node("node01");
    let seed = 0x5eed_0002;
    eprintln!("SEED={seed:#x}");
    let mut uuids = SeededUuids::new(seed);
    let with = parse(
        &format!("{CONFIG}mediatedDevicesConfiguration:\n  mediatedDeviceTypes: [nvidia-231]\n"),
        "with",
    )
    .unwrap();
    let without = parse(
        &format!("{CONFIG}mediatedDevicesConfiguration:\n  mediatedDeviceTypes: []\n"),
        "without",
    )
    .unwrap();

    let created = reconcile_mdevs(&paths, &with, &labels, &mut uuids);
    assert!(created.errors.is_empty(), "{created:?}");
    assert_eq!(
        created.created.len(),
        8,
        "GRID T4-2Q has 8 instances: {created:?}"
    );
    let inv = discover(&paths, &with);
    let q2 = &inv.resources["nvidia.com/GRID_T4-2Q"].devices;
    assert_eq!(q2.len(), 8, "{inv:#?}");
    assert!(
        q2.iter().all(|d| d.healthy && d.numa_nodes == [1]),
        "{q2:#?}"
    );

    let removed = reconcile_mdevs(&paths, &without, &labels, &mut uuids);
    assert!(removed.errors.is_empty(), "{removed:?}");
    assert_eq!(removed.removed.len(), 8);
    assert!(
        discover(&paths, &without).resources["nvidia.com/GRID_T4-2Q"]
            .devices
            .is_empty()
    );

    let again = reconcile_mdevs(&paths, &with, &labels, &mut uuids);
    assert_eq!(
        again.created.len(),
        8,
        "KubeVirt #8425: re-added type created again: {again:?}"
    );
    assert_eq!(
        discover(&paths, &with).resources["nvidia.com/GRID_T4-2Q"]
            .devices
            .len(),
        8
    );
}

/// A larger host on the FUSE mount: 256 NVMe functions on vfio-pci, 8 T4s on which the reconcile
/// creates one 16Q/16A mdev each through `create`, 64 USB devices. Every device is advertised or
/// explained. (The 1,024-function host is the benches' job; this keeps the suite quick.)
#[test]
fn large_host_on_a_mocksys_mount() {
    if !std::path::Path::new("/dev/fuse").exists() {
        mocksys::testing::cannot_run("/dev/fuse is missing on this machine");
        return;
    }
    let mut yaml = String::from("pci:\n");
    for i in 0..256u32 {
        let addr = format!("0000:{:02x}:{:02x}.{}", 1 + i / 64, (i / 8) % 8, i % 8);
        yaml += &format!(
            "  - {{address: \"{addr}\", preset: qemu-nvme, driver: vfio-pci, iommuGroup: {i}, numaNode: {}}}\n",
            i % 2
        );
    }
    for p in 0..8u32 {
        yaml += &format!(
            "  - {{address: \"0000:{:02x}:00.0\", preset: tesla-t4, driver: nvidia, iommuGroup: {}, numaNode: 0}}\n",
            0x80 + p,
            5000 + p
        );
    }
    yaml += "usb:\n";
    for i in 0..64u32 {
        yaml += &format!(
            "  - {{bus: {}, port: \"{}\", preset: qemu-usb-storage}}\n",
            1 + i / 16,
            1 + i % 16
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = HostSpec::from_yaml_str(&yaml, "large.yaml").expect("host spec");
    let backend: Arc<dyn SysBackend> = Arc::new(Host::from_spec(&spec).expect("host"));
    let m = Mounted {
        mount: Some(Mount::new(backend, dir.path(), MountOptions::default()).expect("mount")),
        _dir: dir,
    };
    let paths = m.paths();
    let cfg = parse(
        &format!("{CONFIG}mediatedDevicesConfiguration:\n  mediatedDeviceTypes: [nvidia-234, nvidia-229]\n"),
        "large",
    )
    .unwrap()
    .with_serve(ServeMode::All);
    let mdevs = reconcile_mdevs(
        &paths,
        &cfg,
        &NodeLabels::for_node("n"),
        &mut SeededUuids::new(7),
    );
    assert!(
        mdevs.errors.is_empty(),
        "{:?}",
        &mdevs.errors[..3.min(mdevs.errors.len())]
    );
    assert_eq!(
        mdevs.created.len(),
        8,
        "one instance of a 16Q / 16A type per card"
    );
    let t = std::time::Instant::now();
    let inv = discover(&paths, &cfg);
    let took = t.elapsed();
    assert_eq!(inv.resources["devices.kubevirt.io/nvme"].devices.len(), 256);
    assert_eq!(inv.resources["kubevirt.io/storage"].devices.len(), 64);
    assert!(
        inv.resources["devices.kubevirt.io/nvme"]
            .devices
            .iter()
            .all(|d| d.healthy)
    );
    let skipped_mdevs = inv
        .skipped
        .iter()
        .filter(|s| s.device.starts_with("mdev "))
        .count();
    assert_eq!(
        skipped_mdevs, 8,
        "16Q/16A mdevs match no GRID T4-2Q selector and are explained"
    );
    eprintln!("discover on FUSE (256 PCI + 8 mdev + 64 USB): {took:?} (information only)");
}
