//! Shared pieces of the serving tests: a sysfs + /dev fixture tree in a TempDir (laid out as the
//! kernel lays it out, relative links included), configuration files, and waiting helpers.

#![allow(dead_code)]

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;

/// Generous: a loaded CI machine with two cores shared by several builds.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A node: `sys/`, `dev/`, the kubelet's plugin directory and a config directory.
pub struct Node {
    pub dir: TempDir,
}

impl Node {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("hd")
            .tempdir()
            .expect("temp dir");
        for sub in [
            "sys/bus/pci/devices",
            "sys/bus/pci/drivers/vfio-pci",
            "sys/bus/usb/devices",
            "sys/kernel/iommu_groups",
            "dev/vfio",
            "plugins",
            "config",
        ] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("fixture dir");
        }
        std::fs::write(dir.path().join("dev/vfio/vfio"), "").expect("vfio container node");
        Node { dir }
    }

    pub fn sys(&self) -> PathBuf {
        self.dir.path().join("sys")
    }
    pub fn dev(&self) -> PathBuf {
        self.dir.path().join("dev")
    }
    pub fn plugins(&self) -> PathBuf {
        self.dir.path().join("plugins")
    }
    pub fn config_file(&self) -> PathBuf {
        self.dir.path().join("config/kubevirt.yaml")
    }

    /// Writes the configuration atomically (write a temp file, rename over), as editors and
    /// ConfigMap updates do.
    pub fn write_config(&self, text: &str) {
        let tmp = self.dir.path().join("config/.kubevirt.yaml.tmp");
        std::fs::write(&tmp, text).expect("config temp file");
        std::fs::rename(&tmp, self.config_file()).expect("config rename");
    }

    /// A PCI function under the root complex, bound to `driver` (or unbound), in `group`.
    /// The dev node `/dev/vfio/<group>` is created last, as the kernel does on a vfio-pci bind,
    /// so the agent's dev-root watch fires once the sysfs side is complete.
    pub fn add_pci(
        &self,
        bdf: &str,
        vendor: u16,
        device: u16,
        group: u32,
        numa: i64,
        driver: Option<&str>,
    ) {
        let sys = self.sys();
        let real = sys.join("devices/pci0000:00").join(bdf);
        std::fs::create_dir_all(&real).expect("pci dir");
        let mut uevent = String::new();
        if let Some(d) = driver {
            uevent.push_str(&format!("DRIVER={d}\n"));
        }
        uevent.push_str(&format!(
            "PCI_CLASS=30200\nPCI_ID={vendor:04X}:{device:04X}\nPCI_SLOT_NAME={bdf}\n"
        ));
        std::fs::write(real.join("uevent"), uevent).expect("uevent");
        std::fs::write(real.join("vendor"), format!("0x{vendor:04x}\n")).expect("vendor");
        std::fs::write(real.join("device"), format!("0x{device:04x}\n")).expect("device");
        std::fs::write(real.join("numa_node"), format!("{numa}\n")).expect("numa_node");
        if let Some(d) = driver {
            std::fs::create_dir_all(sys.join("bus/pci/drivers").join(d)).expect("driver dir");
            symlink(format!("../../../bus/pci/drivers/{d}"), real.join("driver"))
                .expect("driver link");
        }
        let group_dir = sys.join(format!("kernel/iommu_groups/{group}/devices"));
        std::fs::create_dir_all(&group_dir).expect("group dir");
        symlink(
            format!("../../../kernel/iommu_groups/{group}"),
            real.join("iommu_group"),
        )
        .expect("group link");
        symlink(
            format!("../../../../devices/pci0000:00/{bdf}"),
            group_dir.join(bdf),
        )
        .expect("group member link");
        symlink(
            format!("../../../devices/pci0000:00/{bdf}"),
            sys.join("bus/pci/devices").join(bdf),
        )
        .expect("bus link");
        if driver == Some("vfio-pci") {
            std::fs::write(self.dev().join(format!("vfio/{group}")), "").expect("vfio group node");
        }
    }

    /// Unplugs a PCI function: sysfs first, then its group node (the dev-root watch fires).
    pub fn remove_pci(&self, bdf: &str, group: u32) {
        let sys = self.sys();
        let _ = std::fs::remove_file(sys.join("bus/pci/devices").join(bdf));
        let _ =
            std::fs::remove_file(sys.join(format!("kernel/iommu_groups/{group}/devices/{bdf}")));
        let _ = std::fs::remove_dir_all(sys.join("devices/pci0000:00").join(bdf));
        let _ = std::fs::remove_file(self.dev().join(format!("vfio/{group}")));
    }

    /// An mdev `uuid` of `type_id` (named `type_name`) on parent function `parent`, in its own
    /// IOMMU `group`; the group node comes last.
    pub fn add_mdev(&self, uuid: &str, parent: &str, type_id: &str, type_name: &str, group: u32) {
        let sys = self.sys();
        let parent_dir = sys.join("devices/pci0000:00").join(parent);
        let type_dir = parent_dir.join("mdev_supported_types").join(type_id);
        std::fs::create_dir_all(type_dir.join("devices")).expect("mdev type dir");
        std::fs::write(type_dir.join("name"), format!("{type_name}\n")).expect("type name");
        std::fs::write(type_dir.join("device_api"), "vfio-pci\n").expect("device_api");
        let real = parent_dir.join(uuid);
        std::fs::create_dir_all(&real).expect("mdev dir");
        symlink(
            format!("../mdev_supported_types/{type_id}"),
            real.join("mdev_type"),
        )
        .expect("mdev_type link");
        let group_dir = sys.join(format!("kernel/iommu_groups/{group}/devices"));
        std::fs::create_dir_all(&group_dir).expect("group dir");
        symlink(
            format!("../../../../kernel/iommu_groups/{group}"),
            real.join("iommu_group"),
        )
        .expect("group link");
        std::fs::create_dir_all(sys.join("bus/mdev/devices")).expect("mdev bus");
        symlink(
            format!("../../../devices/pci0000:00/{parent}/{uuid}"),
            sys.join("bus/mdev/devices").join(uuid),
        )
        .expect("mdev bus link");
        std::fs::write(self.dev().join(format!("vfio/{group}")), "").expect("vfio group node");
    }

    /// A USB device `name` (e.g. `1-1`) on `bus` with `devnum`; the dev node comes last.
    pub fn add_usb(&self, name: &str, bus: u32, devnum: u32, vendor: u16, product: u16) {
        let sys = self.sys();
        let real = sys.join(format!("devices/pci0000:00/0000:00:14.0/usb{bus}/{name}"));
        std::fs::create_dir_all(&real).expect("usb dir");
        let devname = format!("bus/usb/{bus:03}/{devnum:03}");
        let minor = (bus - 1) * 128 + devnum - 1;
        std::fs::write(
            real.join("uevent"),
            format!(
                "MAJOR=189\nMINOR={minor}\nDEVNAME={devname}\nDEVTYPE=usb_device\nDRIVER=usb\nPRODUCT={vendor:x}/{product:x}/100\nTYPE=0/0/0\nBUSNUM={bus:03}\nDEVNUM={devnum:03}\n"
            ),
        )
        .expect("usb uevent");
        std::fs::write(real.join("idVendor"), format!("{vendor:04x}\n")).expect("idVendor");
        std::fs::write(real.join("idProduct"), format!("{product:04x}\n")).expect("idProduct");
        std::fs::write(real.join("busnum"), format!("{bus}\n")).expect("busnum");
        std::fs::write(real.join("devnum"), format!("{devnum}\n")).expect("devnum");
        symlink(
            format!("../../../devices/pci0000:00/0000:00:14.0/usb{bus}/{name}"),
            sys.join("bus/usb/devices").join(name),
        )
        .expect("usb bus link");
        let node = self.dev().join(&devname);
        std::fs::create_dir_all(node.parent().expect("bus dir")).expect("usb bus dir");
        std::fs::write(node, "").expect("usb node");
    }

    /// Unplugs a USB device: sysfs first, then its dev node.
    pub fn remove_usb(&self, name: &str, bus: u32, devnum: u32) {
        let sys = self.sys();
        let _ = std::fs::remove_file(sys.join("bus/usb/devices").join(name));
        let _ = std::fs::remove_dir_all(
            sys.join(format!("devices/pci0000:00/0000:00:14.0/usb{bus}/{name}")),
        );
        let _ = std::fs::remove_file(self.dev().join(format!("bus/usb/{bus:03}/{devnum:03}")));
    }

    /// The plugin sockets currently in the plugin directory (not kubelet.sock).
    pub fn plugin_sockets(&self) -> Vec<PathBuf> {
        let mut sockets: Vec<PathBuf> = std::fs::read_dir(self.plugins())
            .map(|entries| entries.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        sockets.retain(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with("kubevirt-") && name.ends_with(".sock")
        });
        sockets.sort();
        sockets
    }
}

/// A PCI + USB configuration in KubeVirt's `spec.configuration` shape.
pub fn config_yaml(pci_selectors: &[(&str, &str)], usb: &[(&str, &str, &str)]) -> String {
    let mut text = String::from("permittedHostDevices:\n");
    if !pci_selectors.is_empty() {
        text.push_str("  pciHostDevices:\n");
        for (selector, resource) in pci_selectors {
            text.push_str(&format!(
                "  - pciVendorSelector: \"{selector}\"\n    resourceName: {resource}\n"
            ));
        }
    }
    if !usb.is_empty() {
        text.push_str("  usb:\n");
        for (resource, vendor, product) in usb {
            text.push_str(&format!(
                "  - resourceName: {resource}\n    selectors:\n    - vendor: \"{vendor}\"\n      product: \"{product}\"\n"
            ));
        }
    }
    text
}

pub fn path_str(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Waits until `cond` holds for the watched value, failing the test with `what` at the deadline.
pub async fn wait_watch<T: Clone>(
    rx: &mut tokio::sync::watch::Receiver<T>,
    what: &str,
    mut cond: impl FnMut(&T) -> bool,
) -> T {
    match tokio::time::timeout(DEADLINE, rx.wait_for(|v| cond(v))).await {
        Ok(Ok(value)) => value.clone(),
        Ok(Err(_)) => panic!("waiting for {what}: the sender is gone"),
        Err(_) => panic!("waiting for {what}: not within {DEADLINE:?}"),
    }
}

/// Waits until `cond` holds, re-checking whenever `poke` says something may have changed
/// (here: inotify-free conditions such as a file appearing, checked on a short cadence).
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !cond() {
        if tokio::time::Instant::now() > deadline {
            panic!("waiting for {what}: not within {DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
