//! Fixture hosts for discovery and config tests: real directory trees in a `TempDir`, laid out
//! as the kernel lays out sysfs (relative links, real dirs under `devices/`), plus a /dev root.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use hostdev_agent::config::{AgentConfig, ServeMode, parse};
use hostdev_agent::sysfs::HostPaths;
use tempfile::TempDir;

pub struct FakeHost {
    pub dir: TempDir,
    pub paths: HostPaths,
}

/// A PCI function to create.
pub struct Pci<'a> {
    pub addr: &'a str,
    pub vendor: u16,
    pub device: u16,
    pub driver: Option<&'a str>,
    pub group: Option<u32>,
    pub numa: i64,
}

impl<'a> Pci<'a> {
    /// A function bound to vfio-pci in its own group, no NUMA.
    pub fn vfio(addr: &'a str, vendor: u16, device: u16, group: u32) -> Self {
        Pci {
            addr,
            vendor,
            device,
            driver: Some("vfio-pci"),
            group: Some(group),
            numa: -1,
        }
    }
}

fn write(path: &Path, text: &str) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).unwrap();
    }
    fs::write(path, text).unwrap();
}

fn link(target: &str, at: &Path) {
    if let Some(p) = at.parent() {
        fs::create_dir_all(p).unwrap();
    }
    let _ = fs::remove_file(at);
    symlink(target, at).unwrap();
}

/// `../` repeated once per component of `rel` (a path from the sysfs root to a dir).
fn up(rel: &str) -> String {
    "../".repeat(rel.split('/').count())
}

impl FakeHost {
    pub fn new() -> Self {
        // tmpfs when there is one: in memory like sysfs, and fast to build and tear down.
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .unwrap();
        let sys = dir.path().join("sys");
        let dev = dir.path().join("dev");
        for d in [
            "bus/pci/devices",
            "bus/pci/drivers/vfio-pci",
            "kernel/iommu_groups",
            "devices/pci0000:00",
        ] {
            fs::create_dir_all(sys.join(d)).unwrap();
        }
        fs::create_dir_all(dev.join("vfio")).unwrap();
        write(&dev.join("vfio/vfio"), "");
        FakeHost {
            paths: HostPaths::new(&sys, &dev),
            dir,
        }
    }

    pub fn sys(&self) -> &Path {
        &self.paths.sysfs_root
    }

    pub fn dev(&self) -> &Path {
        &self.paths.dev_root
    }

    fn pci_rel(addr: &str) -> String {
        format!("devices/pci0000:00/{addr}")
    }

    fn iommu_group(&self, group: u32, dev_rel: &str) {
        let g = self
            .sys()
            .join(format!("kernel/iommu_groups/{group}/devices"));
        fs::create_dir_all(&g).unwrap();
        let name = dev_rel.rsplit('/').next().unwrap();
        link(&format!("../../../../{dev_rel}"), &g.join(name));
        link(
            &format!("{}kernel/iommu_groups/{group}", up(dev_rel)),
            &self.sys().join(dev_rel).join("iommu_group"),
        );
    }

    /// Adds a PCI function; a vfio-pci function with a group also gets `/dev/vfio/<group>`.
    pub fn add_pci(&self, p: Pci) -> PathBuf {
        let rel = Self::pci_rel(p.addr);
        let d = self.sys().join(&rel);
        fs::create_dir_all(&d).unwrap();
        write(&d.join("vendor"), &format!("0x{:04x}\n", p.vendor));
        write(&d.join("device"), &format!("0x{:04x}\n", p.device));
        write(&d.join("numa_node"), &format!("{}\n", p.numa));
        let mut uevent = String::new();
        if let Some(drv) = p.driver {
            uevent.push_str(&format!("DRIVER={drv}\n"));
            fs::create_dir_all(self.sys().join(format!("bus/pci/drivers/{drv}"))).unwrap();
            link(
                &format!("{}bus/pci/drivers/{drv}", up(&rel)),
                &d.join("driver"),
            );
            link(
                &format!("../../../../{rel}"),
                &self.sys().join(format!("bus/pci/drivers/{drv}/{}", p.addr)),
            );
        }
        uevent.push_str(&format!(
            "PCI_CLASS=30200\nPCI_ID={:04X}:{:04X}\nPCI_SUBSYS_ID=10DE:12A2\nPCI_SLOT_NAME={}\n",
            p.vendor, p.device, p.addr
        ));
        write(&d.join("uevent"), &uevent);
        if let Some(g) = p.group {
            self.iommu_group(g, &rel);
            if p.driver == Some("vfio-pci") {
                write(&self.dev().join(format!("vfio/{g}")), "");
            }
        }
        link(
            &format!("../../../{rel}"),
            &self.sys().join(format!("bus/pci/devices/{}", p.addr)),
        );
        d
    }

    /// Adds an mdev parent card (bound to `nvidia`) with types `(id, name, available)`.
    pub fn add_mdev_parent(&self, addr: &str, numa: i64, types: &[(&str, &str, u32)]) {
        self.add_pci(Pci {
            addr,
            vendor: 0x10de,
            device: 0x1eb8,
            driver: Some("nvidia"),
            group: Some(900),
            numa,
        });
        let rel = Self::pci_rel(addr);
        for (id, name, avail) in types {
            let t = self.sys().join(&rel).join("mdev_supported_types").join(id);
            fs::create_dir_all(t.join("devices")).unwrap();
            write(&t.join("name"), &format!("{name}\n"));
            write(&t.join("device_api"), "vfio-pci\n");
            write(&t.join("available_instances"), &format!("{avail}\n"));
            write(&t.join("create"), "");
        }
        link(
            &format!("../../{rel}"),
            &self.sys().join(format!("class/mdev_bus/{addr}")),
        );
    }

    /// Adds an mdev of `type_id` under `parent`, in IOMMU group `group`.
    pub fn add_mdev(&self, parent: &str, uuid: &str, type_id: &str, group: u32) {
        let rel = format!("{}/{uuid}", Self::pci_rel(parent));
        let d = self.sys().join(&rel);
        fs::create_dir_all(&d).unwrap();
        link(
            &format!("../mdev_supported_types/{type_id}"),
            &d.join("mdev_type"),
        );
        write(&d.join("remove"), "");
        self.iommu_group(group, &rel);
        link(
            &format!("../../../{rel}"),
            &self.sys().join(format!("bus/mdev/devices/{uuid}")),
        );
        let t = self
            .sys()
            .join(Self::pci_rel(parent))
            .join("mdev_supported_types")
            .join(type_id);
        link(&format!("../../../{uuid}"), &t.join("devices").join(uuid));
        write(&self.dev().join(format!("vfio/{group}")), "");
    }

    /// Plays the kernel's part after a reconcile on this plain tree: every UUID written to a
    /// `create` file becomes an mdev (instances drop by one), every `remove` holding `1`
    /// removes its mdev. Returns how many mdevs were created and removed.
    pub fn apply_mdev_writes(&self, first_group: u32) -> (usize, usize) {
        let mut created = 0;
        let mut removed = 0;
        let mut group = first_group;
        let class = self.sys().join("class/mdev_bus");
        let Ok(parents) = fs::read_dir(&class) else {
            return (0, 0);
        };
        let mut parents: Vec<String> = parents
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        parents.sort();
        for parent in parents {
            let prel = Self::pci_rel(&parent);
            let pdir = self.sys().join(&prel);
            for entry in fs::read_dir(&pdir).unwrap() {
                let entry = entry.unwrap();
                let remove = entry.path().join("remove");
                if fs::read_to_string(&remove)
                    .map(|s| s.trim() == "1")
                    .unwrap_or(false)
                {
                    let uuid = entry.file_name().into_string().unwrap();
                    let type_id = fs::read_link(entry.path().join("mdev_type")).unwrap();
                    let type_id = type_id.file_name().unwrap().to_str().unwrap().to_string();
                    let t = pdir.join("mdev_supported_types").join(&type_id);
                    fs::remove_file(t.join("devices").join(&uuid)).unwrap();
                    fs::remove_file(self.sys().join(format!("bus/mdev/devices/{uuid}"))).unwrap();
                    fs::remove_dir_all(entry.path()).unwrap();
                    let avail: u32 = fs::read_to_string(t.join("available_instances"))
                        .unwrap()
                        .trim()
                        .parse()
                        .unwrap();
                    write(&t.join("available_instances"), &format!("{}\n", avail + 1));
                    removed += 1;
                }
            }
            let types = pdir.join("mdev_supported_types");
            for t in fs::read_dir(&types).unwrap() {
                let t = t.unwrap();
                let type_id = t.file_name().into_string().unwrap();
                let text = fs::read_to_string(t.path().join("create")).unwrap();
                write(&t.path().join("create"), "");
                for chunk in text.as_bytes().chunks(36).filter(|c| c.len() == 36) {
                    let uuid = std::str::from_utf8(chunk).unwrap();
                    self.add_mdev(&parent, uuid, &type_id, group);
                    group += 1;
                    let avail: u32 = fs::read_to_string(t.path().join("available_instances"))
                        .unwrap()
                        .trim()
                        .parse()
                        .unwrap();
                    write(
                        &t.path().join("available_instances"),
                        &format!("{}\n", avail.saturating_sub(1)),
                    );
                    created += 1;
                }
            }
        }
        (created, removed)
    }

    /// Adds a USB device `path` (e.g. `1-1.4`) on controller 0000:00:14.0; `devname` overrides
    /// the uevent DEVNAME (None: the kernel's `bus/usb/BBB/DDD`).
    pub fn add_usb(
        &self,
        path: &str,
        vendor: u16,
        product: u16,
        devnum: u32,
        devname: Option<&str>,
    ) {
        let bus: u32 = path.split('-').next().unwrap().parse().unwrap();
        let ctrl = "devices/pci0000:00/0000:00:14.0";
        if !self.sys().join(ctrl).join("numa_node").exists() {
            write(&self.sys().join(ctrl).join("numa_node"), "0\n");
        }
        let hub = format!("{ctrl}/usb{bus}");
        if !self.sys().join(&hub).exists() {
            fs::create_dir_all(self.sys().join(&hub)).unwrap();
            write(&self.sys().join(&hub).join("idVendor"), "1d6b\n");
            link(
                &format!("../../../{hub}"),
                &self.sys().join(format!("bus/usb/devices/usb{bus}")),
            );
        }
        let rel = format!("{hub}/{path}");
        let d = self.sys().join(&rel);
        fs::create_dir_all(&d).unwrap();
        write(&d.join("idVendor"), &format!("{vendor:04x}\n"));
        write(&d.join("idProduct"), &format!("{product:04x}\n"));
        write(&d.join("busnum"), &format!("{bus}\n"));
        write(&d.join("devnum"), &format!("{devnum}\n"));
        let node = format!("bus/usb/{bus:03}/{devnum:03}");
        let devname = devname.unwrap_or(&node);
        write(
            &d.join("uevent"),
            &format!(
                "MAJOR=189\nMINOR={}\nDEVNAME={devname}\nDEVTYPE=usb_device\nDRIVER=usb\nPRODUCT={vendor:x}/{product:x}/0\nTYPE=0/0/0\nBUSNUM={bus:03}\nDEVNUM={devnum:03}\n",
                (bus - 1) * 128 + devnum - 1
            ),
        );
        write(&self.dev().join(&node), "");
        link(
            &format!("../../../{rel}"),
            &self.sys().join(format!("bus/usb/devices/{path}")),
        );
        // an interface, as the kernel lists them beside devices
        let iface = format!("{rel}/{path}:1.0");
        fs::create_dir_all(self.sys().join(&iface)).unwrap();
        link(
            &format!("../../../{iface}"),
            &self.sys().join(format!("bus/usb/devices/{path}:1.0")),
        );
    }

    /// Removes a USB device node (unplugged device whose sysfs entry lingers, or lost health).
    pub fn remove_dev_node(&self, rel: &str) {
        fs::remove_file(self.dev().join(rel)).unwrap();
    }
}

/// Parses YAML config text, panicking with the error (tests only).
pub fn config(yaml: &str) -> AgentConfig {
    parse(yaml, "test.yaml").unwrap_or_else(|e| panic!("config does not parse: {e}"))
}

pub fn config_all(yaml: &str) -> AgentConfig {
    config(yaml).with_serve(ServeMode::All)
}
