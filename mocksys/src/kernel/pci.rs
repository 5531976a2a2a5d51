//! PCI functions: identity, state, sysfs path and uevent environment.

use super::Kernel;
use crate::spec::validate::XHCI_ADDRESS;
use crate::spec::{PciAddress, PciSpec};

/// One PCI function as the kernel holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct PciFunction {
    /// Identity (its `driver` field is only the driver asked for at start or plug).
    pub spec: PciSpec,
    pub driver: Option<String>,
    pub driver_override: Option<String>,
    /// `None` on a host without IOMMU.
    pub iommu_group: Option<u32>,
    pub irq: u32,
    /// Enabled VFs (PFs only).
    pub num_vfs: u16,
    /// Set on VFs.
    pub physfn: Option<PciAddress>,
    /// Index of its VFIO device cdev (`vfio-dev/vfioN`, `/dev/vfio/devices/vfioN`) while
    /// bound to vfio-pci.
    pub vfio_cdev: Option<u32>,
}

impl PciFunction {
    pub fn address(&self) -> PciAddress {
        self.spec.address
    }

    pub fn is_pf(&self) -> bool {
        self.spec.total_vfs > 0 && self.physfn.is_none()
    }

    /// `PCI_CLASS=..` and friends, as the `uevent` file and uevents carry them.
    pub fn uevent_env(&self) -> Vec<(String, String)> {
        let s = &self.spec;
        let mut env = Vec::with_capacity(6);
        if let Some(d) = &self.driver {
            env.push(("DRIVER".to_owned(), d.clone()));
        }
        env.push(("PCI_CLASS".to_owned(), format!("{:X}", s.class)));
        env.push((
            "PCI_ID".to_owned(),
            format!("{:04X}:{:04X}", s.vendor, s.device),
        ));
        env.push((
            "PCI_SUBSYS_ID".to_owned(),
            format!("{:04X}:{:04X}", s.subsystem_vendor, s.subsystem_device),
        ));
        env.push(("PCI_SLOT_NAME".to_owned(), s.address.to_string()));
        env.push(("MODALIAS".to_owned(), self.modalias()));
        env
    }

    pub fn modalias(&self) -> String {
        let s = &self.spec;
        format!(
            "pci:v{:08X}d{:08X}sv{:08X}sd{:08X}bc{:02X}sc{:02X}i{:02X}",
            s.vendor,
            s.device,
            s.subsystem_vendor,
            s.subsystem_device,
            (s.class >> 16) & 0xff,
            (s.class >> 8) & 0xff,
            s.class & 0xff
        )
    }
}

impl Kernel {
    /// The function's real directory: `devices/pci0000:00/[bridge/]0000:05:00.0`.
    pub fn pci_path(&self, address: PciAddress) -> String {
        let mut chain = vec![address];
        let mut cur = self.pci.get(&address).and_then(|f| f.spec.parent);
        while let Some(p) = cur {
            if chain.contains(&p) {
                break;
            }
            chain.push(p);
            cur = self.pci.get(&p).and_then(|f| f.spec.parent);
        }
        let mut path = format!("devices/pci{:04x}:00", address.domain);
        for a in chain.iter().rev() {
            path.push('/');
            path.push_str(&a.to_string());
        }
        path
    }

    pub(super) fn pci_devpath(&self, address: PciAddress) -> String {
        format!("/{}", self.pci_path(address))
    }

    /// Adds a function with no driver (no uevent).
    pub(super) fn insert_function(&mut self, spec: PciSpec, iommu_group: Option<u32>) {
        let irq = spec.irq.unwrap_or_else(|| self.alloc_irq());
        let address = spec.address;
        self.pci.insert(
            address,
            PciFunction {
                spec,
                driver: None,
                driver_override: None,
                iommu_group,
                irq,
                num_vfs: 0,
                physfn: None,
                vfio_cdev: None,
            },
        );
    }

    pub(super) fn emit_pci(&mut self, action: &str, address: PciAddress) {
        let Some(f) = self.pci.get(&address) else {
            return;
        };
        let env = f.uevent_env();
        let devpath = self.pci_devpath(address);
        self.emit(action, devpath, "pci", env);
    }

    /// Makes sure the xHCI controller the USB devices hang off exists and is bound.
    pub(super) fn ensure_xhci(&mut self, announce: bool) {
        if self.pci.contains_key(&XHCI_ADDRESS) {
            return;
        }
        self.load_module("xhci_hcd", announce);
        let mut spec = PciSpec::new(XHCI_ADDRESS, 0x8086, 0xa36d, 0x0c0330);
        spec.subsystem_device = 0x7270;
        spec.revision = 0x10;
        let group = self.iommu.then(|| self.alloc_group());
        self.insert_function(spec, group);
        if announce {
            self.emit_pci("add", XHCI_ADDRESS);
        }
        if let Some(f) = self.pci.get_mut(&XHCI_ADDRESS) {
            f.driver = Some("xhci_hcd".to_owned());
        }
        if announce {
            self.emit_pci("bind", XHCI_ADDRESS);
        }
    }
}
