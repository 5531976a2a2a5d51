//! Kernel model -> sysfs [`Tree`], exactly as Linux lays it out.
//!
//! Real directories live under `devices/`; everything else (`bus/`, `class/`, `kernel/`,
//! `module/`) is symlinks and attributes pointing into it, every link relative to the directory
//! holding it. Beside the tree the renderer records which paths are writable attributes and
//! what each one is ([`Attr`]), so a write is dispatched by path without parsing it.

mod binary;
mod pci;
mod usb;

pub use binary::{pci_config_space, usb_descriptors};

use std::collections::HashMap;

use crate::kernel::{Attr, Kernel};
use crate::tree::{InodeTable, Tree, TreeBuilder};

/// A rendered host: the tree and the writable attributes in it.
#[derive(Debug, Clone, Default)]
pub struct Rendered {
    pub tree: Tree,
    /// Every writable attribute's path (as in the tree) and what writing it does.
    pub attrs: HashMap<String, Attr>,
}

/// Renders the whole host.
pub fn render(k: &Kernel, inodes: &mut InodeTable) -> Rendered {
    let mut r = Renderer {
        b: TreeBuilder::new(inodes),
        attrs: HashMap::new(),
    };
    top_level(&mut r, k);
    pci::render_pci(&mut r, k);
    usb::render_usb(&mut r, k);
    Rendered {
        tree: r.b.build(),
        attrs: r.attrs,
    }
}

/// A tree builder that also records writable attributes.
pub(crate) struct Renderer<'a> {
    pub b: TreeBuilder<'a>,
    pub attrs: HashMap<String, Attr>,
}

impl Renderer<'_> {
    /// A read-only text attribute (0444).
    pub fn ro(&mut self, path: String, content: impl Into<Vec<u8>>) {
        self.b.attr(&path, 0o444, content);
    }
    /// A read-write text attribute (0644).
    pub fn rw(&mut self, path: String, content: impl Into<Vec<u8>>, attr: Attr) {
        self.b.attr(&path, 0o644, content);
        self.attrs.insert(path, attr);
    }
    /// A write-only attribute (0200): reading it is EACCES.
    pub fn wo(&mut self, path: String, attr: Attr) {
        self.b.attr(&path, 0o200, Vec::new());
        self.attrs.insert(path, attr);
    }
    /// A symlink at `path` to the tree path `to`, written relative as the kernel does.
    pub fn link(&mut self, path: String, to: &str) {
        let target = rel(&path, to);
        self.b.symlink(&path, target);
    }
    pub fn dir(&mut self, path: &str) {
        self.b.dir(path);
    }
}

/// The relative target for a link at `link` (a tree path) pointing to the tree path `to`.
pub fn rel(link: &str, to: &str) -> String {
    let from_dir: Vec<&str> = match link.rfind('/') {
        Some(i) => link[..i].split('/').collect(),
        None => Vec::new(),
    };
    let to_parts: Vec<&str> = to.split('/').collect();
    let common = from_dir
        .iter()
        .zip(&to_parts)
        .take_while(|(a, b)| a == b)
        .count();
    let mut out = String::with_capacity(to.len() + 3 * (from_dir.len() - common));
    for _ in common..from_dir.len() {
        out.push_str("../");
    }
    out.push_str(&to_parts[common..].join("/"));
    out
}

fn top_level(r: &mut Renderer, k: &Kernel) {
    for d in [
        "bus/pci/devices",
        "bus/pci/slots",
        "bus/usb/devices",
        "bus/usb/drivers/usb",
        "kernel/iommu_groups",
        "module",
    ] {
        r.dir(d);
    }
    // The mdev core is a module of its own, loaded with the first vendor driver that can
    // register mediated types (or by hand); without it the kernel has no mdev bus or class.
    if mdev_core_loaded(k) {
        for d in ["bus/mdev/devices", "bus/mdev/drivers", "class/mdev_bus"] {
            r.dir(d);
        }
    }
    for root in k.pci.keys().map(|a| a.domain).chain([0]) {
        r.ro(format!("devices/pci{root:04x}:00/uevent"), "");
    }
    r.wo("bus/pci/drivers_probe".into(), Attr::DriversProbe);
    r.wo("bus/pci/rescan".into(), Attr::Rescan);
    r.wo("bus/pci/uevent".into(), Attr::Ignored);
    r.rw("bus/pci/drivers_autoprobe".into(), "1\n", Attr::Ignored);
    r.ro("bus/usb/drivers_autoprobe".into(), "1\n");

    for m in &k.modules {
        r.ro(format!("module/{m}/initstate"), "live\n");
        r.ro(format!("module/{m}/refcnt"), "0\n");
        r.wo(format!("module/{m}/uevent"), Attr::Ignored);
    }
    for d in &k.drivers {
        let dir = format!("bus/pci/drivers/{}", d.name);
        r.wo(format!("{dir}/bind"), Attr::DriverBind(d.name.clone()));
        r.wo(format!("{dir}/unbind"), Attr::DriverUnbind(d.name.clone()));
        r.wo(format!("{dir}/new_id"), Attr::DriverNewId(d.name.clone()));
        r.wo(
            format!("{dir}/remove_id"),
            Attr::DriverRemoveId(d.name.clone()),
        );
        r.wo(format!("{dir}/uevent"), Attr::Ignored);
        r.link(format!("{dir}/module"), &format!("module/{}", d.module));
        r.link(format!("module/{}/drivers/pci:{}", d.module, d.name), &dir);
    }
    for g in k.iommu_groups().into_keys() {
        let dir = format!("kernel/iommu_groups/{g}");
        r.ro(format!("{dir}/type"), "DMA\n");
        r.ro(
            format!("{dir}/reserved_regions"),
            "0x00000000fee00000 0x00000000feefffff msi\n",
        );
        r.dir(&format!("{dir}/devices"));
    }
}

#[cfg(test)]
mod tests;

/// True when `/sys/bus/mdev` exists: the `mdev` (or `vfio_mdev`) module is loaded, or a loaded
/// driver registers mediated types for some function, or mediated devices exist.
pub(crate) fn mdev_core_loaded(k: &Kernel) -> bool {
    let loaded = |m: &str| k.modules.iter().any(|x| *x == crate::spec::module_name(m));
    loaded("mdev")
        || loaded("vfio_mdev")
        || !k.mdevs.is_empty()
        || k.pci
            .values()
            .any(|f| f.spec.mdev_types.iter().any(|t| loaded(t.driver())))
}
