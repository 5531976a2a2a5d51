//! What discovery found, in the shape the device plugins serve.
//!
//! Discovery (`discovery`) turns sysfs + configuration into an [`Inventory`]; the plugin
//! manager (`plugin`) serves each [`Resource`] as one device plugin. This module is the only
//! contract between the two.

use std::collections::BTreeMap;

/// Everything to advertise on this node, plus every device that was looked at and not advertised.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inventory {
    /// By resource name (`nvidia.com/GRID_T4-1Q`).
    pub resources: BTreeMap<String, Resource>,
    /// Devices seen and not advertised, each with the reason (for `discover` and the logs).
    pub skipped: Vec<Skipped>,
}

/// The kind of device a resource holds; it decides the env var and device specs of Allocate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DeviceKind {
    Pci,
    Mdev,
    Usb,
}

/// One resource: what one device plugin serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    pub name: String,
    pub kind: DeviceKind,
    /// Sorted by id; ids are unique within a resource.
    pub devices: Vec<PluginDevice>,
    /// Explanations worth showing an operator (e.g. an IOMMU group holding several functions).
    pub notes: Vec<String>,
}

/// One kubelet device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginDevice {
    /// The kubelet device ID. PCI and mdev: the IOMMU group number, as KubeVirt advertises them.
    /// USB: an id stable while the bundle's devices stay plugged.
    pub id: String,
    pub healthy: bool,
    /// NUMA nodes this device is attached to (empty: no topology).
    pub numa_nodes: Vec<i64>,
    /// What allocating this id hands to the container (several for a multi-function IOMMU group
    /// or a USB bundle).
    pub members: Vec<Member>,
}

/// One host device behind a kubelet device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Member {
    Pci {
        address: String,
        iommu_group: u32,
        numa_node: Option<i64>,
    },
    Mdev {
        uuid: String,
        parent: String,
        type_id: String,
        type_name: String,
        iommu_group: u32,
    },
    Usb {
        /// The sysfs name, e.g. `1-1.4`.
        path: String,
        bus: u32,
        devnum: u32,
        vendor: u16,
        product: u16,
        /// Relative to the dev root and checked to stay inside it: `bus/usb/001/002`.
        devname: String,
    },
}

/// A device that was looked at and is not advertised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// `pci 0000:05:00.0`, `mdev 6f0c...`, `usb 1-1`.
    pub device: String,
    /// Why, in words an operator acts on: `bound to nvme, not vfio-pci`.
    pub reason: String,
}
