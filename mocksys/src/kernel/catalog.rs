//! The PCI drivers the model knows: name, module, static id table, SR-IOV support.
//!
//! A module a host file names that is not here loads as a driver of the same name with an
//! empty id table (it binds only what the host file binds, `driver_override` or `new_id`).

use crate::spec::module_name;

/// One entry of a driver's static id table; `None` matches any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMatch {
    pub vendor: Option<u16>,
    pub device: Option<u16>,
    pub class: u32,
    pub class_mask: u32,
}

impl IdMatch {
    pub fn matches(&self, vendor: u16, device: u16, class: u32) -> bool {
        self.vendor.is_none_or(|v| v == vendor)
            && self.device.is_none_or(|d| d == device)
            && (class & self.class_mask) == (self.class & self.class_mask)
    }
}

const fn id(vendor: u16, device: u16) -> IdMatch {
    IdMatch {
        vendor: Some(vendor),
        device: Some(device),
        class: 0,
        class_mask: 0,
    }
}

const fn class(vendor: Option<u16>, class: u32, class_mask: u32) -> IdMatch {
    IdMatch {
        vendor,
        device: None,
        class,
        class_mask,
    }
}

/// A driver as its module registers it.
#[derive(Debug, Clone, Copy)]
pub struct DriverInfo {
    /// The name under `/sys/bus/pci/drivers`.
    pub name: &'static str,
    /// The name under `/sys/module`.
    pub module: &'static str,
    pub ids: &'static [IdMatch],
    /// Has `sriov_configure`: `sriov_numvfs` works on PFs it drives.
    pub sriov: bool,
}

pub const CATALOG: &[DriverInfo] = &[
    DriverInfo {
        name: "vfio-pci",
        module: "vfio_pci",
        ids: &[],
        sriov: true,
    },
    DriverInfo {
        name: "nvme",
        module: "nvme",
        ids: &[class(None, 0x010802, 0xffffff)],
        sriov: false,
    },
    DriverInfo {
        name: "nvidia",
        module: "nvidia",
        ids: &[class(Some(0x10de), 0x030000, 0xff0000)],
        sriov: false,
    },
    DriverInfo {
        name: "i915",
        module: "i915",
        ids: &[class(Some(0x8086), 0x030000, 0xff0000)],
        sriov: true,
    },
    DriverInfo {
        name: "qat_c62x",
        module: "qat_c62x",
        ids: &[id(0x8086, 0x6f54), id(0x8086, 0x37c8)],
        sriov: true,
    },
    DriverInfo {
        name: "qat_c62xvf",
        module: "qat_c62xvf",
        ids: &[id(0x8086, 0x6f55), id(0x8086, 0x37c9)],
        sriov: false,
    },
    DriverInfo {
        name: "virtio-pci",
        module: "virtio_pci",
        ids: &[class(Some(0x1af4), 0, 0)],
        sriov: false,
    },
    DriverInfo {
        name: "i40e",
        module: "i40e",
        ids: &[id(0x8086, 0x1572), id(0x8086, 0x1583)],
        sriov: true,
    },
    DriverInfo {
        name: "iavf",
        module: "iavf",
        ids: &[id(0x8086, 0x154c)],
        sriov: false,
    },
    DriverInfo {
        name: "xhci_hcd",
        module: "xhci_pci",
        ids: &[class(None, 0x0c0330, 0xffffff)],
        sriov: false,
    },
    DriverInfo {
        name: "pcieport",
        module: "pcieportdrv",
        ids: &[class(None, 0x060400, 0xffff00)],
        sriov: false,
    },
];

/// The catalog entry for a driver or module name (`vfio-pci`, `vfio_pci`).
pub fn lookup(name: &str) -> Option<&'static DriverInfo> {
    let m = module_name(name);
    CATALOG
        .iter()
        .find(|d| d.name == name || d.module == m || module_name(d.name) == m)
}

/// The `/sys/module` name a driver or module name loads as.
pub fn module_of(name: &str) -> String {
    lookup(name).map_or_else(|| module_name(name), |d| d.module.to_owned())
}

/// The driver directory name a driver or module name registers.
pub fn driver_of(name: &str) -> String {
    lookup(name).map_or_else(|| name.to_owned(), |d| d.name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_modules_resolve_both_ways() {
        assert_eq!(module_of("vfio-pci"), "vfio_pci");
        assert_eq!(driver_of("vfio_pci"), "vfio-pci");
        assert_eq!(driver_of("xhci_pci"), "xhci_hcd");
        assert_eq!(module_of("xhci_hcd"), "xhci_pci");
        assert_eq!(module_of("my-driver"), "my_driver");
        assert_eq!(driver_of("my-driver"), "my-driver");
    }

    #[test]
    fn class_entries_match_under_their_mask() {
        let nvme = lookup("nvme").unwrap();
        assert!(nvme.ids[0].matches(0x8086, 0x5845, 0x010802));
        assert!(!nvme.ids[0].matches(0x8086, 0x5845, 0x010801));
        let nv = lookup("nvidia").unwrap();
        assert!(nv.ids[0].matches(0x10de, 0x1eb8, 0x030200));
        assert!(!nv.ids[0].matches(0x8086, 0x1eb8, 0x030200));
    }
}
