//! The kernel model: PCI functions, drivers, IOMMU and VFIO groups, mdevs and USB devices.
//!
//! Pure state with the kernel's rules: every operation returns `Result<_, Errno>` (or a
//! [`KernelError`] for the library-level hotplug calls) and queues the uevents it raised.
//! Rendering the state as sysfs is [`crate::render`]'s job; nothing here knows about paths
//! except the device paths uevents carry.

pub mod catalog;
mod driver;
mod hotplug;
mod mdev;
mod pci;
mod sriov;
mod store;
mod usb;

#[cfg(test)]
mod tests;

pub use driver::Driver;
pub use mdev::Mdev;
pub use pci::PciFunction;
pub use store::Attr;
pub use usb::{UsbDevice, root_hub_product, usb_device_env, usb_modalias};

use std::collections::{BTreeMap, BTreeSet};

use crate::backend::{DevNode, Uevent};
use crate::spec::{HostSpec, PciAddress, PciSpec};

/// Major of the VFIO group character devices (dynamic on a real host; fixed here).
pub const VFIO_GROUP_MAJOR: u32 = 243;
/// Major of VFIO device cdevs (`/dev/vfio/devices/vfioN`; dynamic on a real host).
pub const VFIO_CDEV_MAJOR: u32 = 237;
/// Major of USB device nodes.
pub const USB_MAJOR: u32 = 189;

/// Why a library-level change (plug, unplug, initial binding) could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    #[error("PCI device {0} already exists")]
    PciExists(PciAddress),
    #[error("no PCI device {0}")]
    NoSuchPci(String),
    #[error("PCI device {address}: bridge {parent} is not present")]
    NoBridge {
        address: PciAddress,
        parent: PciAddress,
    },
    #[error("PCI device {address}: driver {driver} is not loaded")]
    DriverNotLoaded { address: PciAddress, driver: String },
    #[error("PCI device {address}: binding to {driver} failed: {errno}")]
    Bind {
        address: PciAddress,
        driver: String,
        errno: crate::Errno,
    },
    #[error("PCI device {0} is the xHCI controller of the USB devices")]
    Reserved(PciAddress),
    #[error("USB device {0} already exists")]
    UsbExists(String),
    #[error("no USB device {0}")]
    NoSuchUsb(String),
    #[error("USB device {port}: hub {hub} is not present")]
    NoHub { port: String, hub: String },
    #[error("USB device {port}: device number {devnum} is taken on bus {bus}")]
    DevnumTaken { port: String, bus: u8, devnum: u8 },
    #[error("USB bus {0}: no free device number")]
    NoDevnum(u8),
}

/// The whole modelled host.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// Booted with an IOMMU (`intel_iommu=on`): functions have IOMMU groups.
    pub iommu: bool,
    /// `/sys/module` names, in load order.
    pub modules: Vec<String>,
    /// PCI drivers, in registration order (probe order).
    pub drivers: Vec<Driver>,
    pub pci: BTreeMap<PciAddress, PciFunction>,
    /// Functions taken away by a `remove` write, re-added by `rescan`.
    pub removed: Vec<PciSpec>,
    /// By lower-case UUID.
    pub mdevs: BTreeMap<String, Mdev>,
    /// By sysfs name (`1-1.4`).
    pub usb: BTreeMap<String, UsbDevice>,
    last_devnum: BTreeMap<u8, u8>,
    next_group: u32,
    next_irq: u32,
    seqnum: u64,
    events: Vec<Uevent>,
}

impl Kernel {
    /// An empty host with the given IOMMU setting and nothing loaded.
    pub fn empty(iommu: bool) -> Kernel {
        Kernel {
            iommu,
            modules: Vec::new(),
            drivers: Vec::new(),
            pci: BTreeMap::new(),
            removed: Vec::new(),
            mdevs: BTreeMap::new(),
            usb: BTreeMap::new(),
            last_devnum: BTreeMap::new(),
            next_group: 0,
            next_irq: 16,
            seqnum: 0,
            events: Vec::new(),
        }
    }

    /// The host as booted: modules loaded, functions present, drivers bound as the spec says.
    /// Raises no uevents (they happened before anyone listened).
    pub fn from_spec(spec: &HostSpec) -> Result<Kernel, KernelError> {
        let mut k = Kernel::empty(spec.iommu);
        for m in &spec.modules {
            k.load_module(m, false);
        }
        let explicit: BTreeSet<u32> = spec.pci.iter().filter_map(|p| p.iommu_group).collect();
        let mut counter = 0;
        let mut group_of = |p: &PciSpec| match p.iommu_group {
            Some(g) => g,
            None => {
                while explicit.contains(&counter) {
                    counter += 1;
                }
                counter += 1;
                counter - 1
            }
        };
        let mut order: Vec<&PciSpec> = spec.pci.iter().collect();
        // Bridges first, so children always find their parent.
        order.sort_by_key(|p| (!p.bridge, p.address));
        let mut groups = BTreeMap::new();
        for p in &spec.pci {
            groups.insert(p.address, group_of(p));
        }
        k.next_group = groups
            .values()
            .copied()
            .max()
            .map_or(0, |g| g + 1)
            .max(counter);
        if !spec.usb.is_empty() {
            k.ensure_xhci(false);
        }
        for p in order {
            if p.parent.is_some_and(|b| !k.pci.contains_key(&b)) {
                return Err(KernelError::NoBridge {
                    address: p.address,
                    parent: p.parent.unwrap_or(p.address),
                });
            }
            let group = k.iommu.then(|| groups[&p.address]);
            k.insert_function(p.clone(), group);
        }
        for p in &spec.pci {
            if let Some(d) = &p.driver {
                k.bind_initial(p.address, d)?;
            }
        }
        for u in &spec.usb {
            k.plug_usb(u.clone())?;
        }
        k.events.clear();
        Ok(k)
    }

    /// Takes the uevents raised since the last call, in order.
    pub fn take_events(&mut self) -> Vec<Uevent> {
        std::mem::take(&mut self.events)
    }

    fn emit(&mut self, action: &str, devpath: String, subsystem: &str, env: Vec<(String, String)>) {
        self.seqnum += 1;
        self.events.push(Uevent {
            action: action.to_owned(),
            devpath,
            subsystem: subsystem.to_owned(),
            seqnum: self.seqnum,
            env,
        });
    }

    fn alloc_group(&mut self) -> u32 {
        let g = self.next_group;
        self.next_group += 1;
        g
    }

    fn alloc_irq(&mut self) -> u32 {
        let irq = self.next_irq;
        self.next_irq += 1;
        irq
    }

    /// True when the vfio core is loaded (`/dev/vfio/vfio` exists).
    pub fn vfio_loaded(&self) -> bool {
        self.modules.iter().any(|m| m == "vfio")
    }

    /// IOMMU groups that have a `/dev/vfio/N`: some member bound to vfio-pci, or an mdev.
    pub fn vfio_groups(&self) -> BTreeSet<u32> {
        let mut g: BTreeSet<u32> = self
            .pci
            .values()
            .filter(|f| f.driver.as_deref() == Some("vfio-pci"))
            .filter_map(|f| f.iommu_group)
            .collect();
        g.extend(self.mdevs.values().map(|m| m.iommu_group));
        g
    }

    /// Every IOMMU group with its members (PCI functions and mdevs by name).
    pub fn iommu_groups(&self) -> BTreeMap<u32, Vec<String>> {
        let mut groups: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for f in self.pci.values() {
            if let Some(g) = f.iommu_group {
                groups
                    .entry(g)
                    .or_default()
                    .push(f.spec.address.to_string());
            }
        }
        for m in self.mdevs.values() {
            groups
                .entry(m.iommu_group)
                .or_default()
                .push(m.uuid.clone());
        }
        groups
    }

    /// The character devices that exist now.
    pub fn dev_nodes(&self) -> Vec<DevNode> {
        let mut nodes = Vec::new();
        if self.vfio_loaded() {
            nodes.push(DevNode {
                path: "vfio/vfio".into(),
                major: 10,
                minor: 196,
            });
            for g in self.vfio_groups() {
                nodes.push(DevNode {
                    path: format!("vfio/{g}"),
                    major: VFIO_GROUP_MAJOR,
                    minor: g,
                });
            }
            for n in self.pci.values().filter_map(|f| f.vfio_cdev) {
                nodes.push(DevNode {
                    path: format!("vfio/devices/vfio{n}"),
                    major: VFIO_CDEV_MAJOR,
                    minor: n,
                });
            }
        }
        for bus in self.usb_buses() {
            nodes.push(usb::dev_node(bus, 1));
        }
        for d in self.usb.values() {
            nodes.push(usb::dev_node(d.spec.bus, d.devnum));
        }
        nodes.sort();
        nodes
    }
}
