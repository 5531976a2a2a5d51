//! PCI hot-remove and re-add: a device's `remove`, the bus `rescan`, and library plug/unplug.

use super::{Kernel, KernelError};
use crate::errno::Errno;
use crate::spec::validate::XHCI_ADDRESS;
use crate::spec::{PciAddress, PciSpec};

impl Kernel {
    /// Takes a function away with everything below it (children, VFs, mdevs), driver first.
    /// Returns the identities of the non-VF functions removed, for `rescan`.
    pub(super) fn remove_function(&mut self, address: PciAddress) -> Vec<PciSpec> {
        let mut gone = Vec::new();
        let children: Vec<PciAddress> = self
            .pci
            .values()
            .filter(|f| f.spec.parent == Some(address) && f.physfn.is_none())
            .map(|f| f.address())
            .collect();
        for c in children.into_iter().rev() {
            gone.extend(self.remove_function(c));
        }
        if !self.pci.contains_key(&address) {
            return gone;
        }
        self.detach(address);
        self.remove_mdevs_of(address);
        if self.pci.get(&address).is_some_and(|f| f.num_vfs > 0) {
            self.disable_vfs(address);
        }
        self.emit_pci("remove", address);
        if let Some(f) = self.pci.remove(&address) {
            if let Some(pf) = f.physfn.and_then(|pf| self.pci.get_mut(&pf)) {
                pf.num_vfs = pf.num_vfs.saturating_sub(1);
            }
            if f.physfn.is_none() {
                let mut spec = f.spec;
                spec.driver = None;
                spec.iommu_group = f.iommu_group;
                spec.irq = Some(f.irq);
                gone.push(spec);
            }
        }
        gone
    }

    /// `<dev>/remove`: any non-zero number hot-removes the device; `rescan` brings it back.
    pub fn device_remove_write(&mut self, address: PciAddress, data: &[u8]) -> Result<(), Errno> {
        let text = std::str::from_utf8(data).map_err(|_| Errno::EINVAL)?;
        let n = super::mdev::parse_ulong(text).ok_or(Errno::EINVAL)?;
        if n != 0 {
            let gone = self.remove_function(address);
            self.removed.extend(gone);
        }
        Ok(())
    }

    /// `bus/pci/rescan` (or a device's `rescan`): re-adds hot-removed functions and probes them.
    pub fn rescan(&mut self, data: &[u8]) -> Result<(), Errno> {
        let text = std::str::from_utf8(data).map_err(|_| Errno::EINVAL)?;
        let n = super::mdev::parse_ulong(text).ok_or(Errno::EINVAL)?;
        if n == 0 {
            return Ok(());
        }
        let mut back = std::mem::take(&mut self.removed);
        back.sort_by_key(|s| (!s.bridge, s.address));
        let mut added = Vec::new();
        for spec in back {
            if self.pci.contains_key(&spec.address)
                || spec.parent.is_some_and(|p| !self.pci.contains_key(&p))
            {
                continue;
            }
            let group = if self.iommu {
                Some(spec.iommu_group.unwrap_or_else(|| self.alloc_group()))
            } else {
                None
            };
            let a = spec.address;
            self.insert_function(spec, group);
            self.emit_pci("add", a);
            added.push(a);
        }
        for a in added {
            self.autoprobe(a);
        }
        Ok(())
    }

    /// Hot-plugs a function (as an `add` from firmware): its own IOMMU group unless the spec
    /// names one; bound to `spec.driver` when given, else left unbound.
    pub fn plug_pci(&mut self, spec: PciSpec) -> Result<(), KernelError> {
        let a = spec.address;
        if self.pci.contains_key(&a) {
            return Err(KernelError::PciExists(a));
        }
        if a == XHCI_ADDRESS && !self.usb.is_empty() {
            return Err(KernelError::Reserved(a));
        }
        if let Some(p) = spec.parent
            && !self.pci.contains_key(&p)
        {
            return Err(KernelError::NoBridge {
                address: a,
                parent: p,
            });
        }
        if let Some(d) = &spec.driver
            && self.driver(d).is_none()
        {
            return Err(KernelError::DriverNotLoaded {
                address: a,
                driver: d.clone(),
            });
        }
        self.removed.retain(|r| r.address != a);
        let group = if self.iommu {
            Some(spec.iommu_group.unwrap_or_else(|| self.alloc_group()))
        } else {
            None
        };
        let driver = spec.driver.clone();
        self.insert_function(spec, group);
        self.emit_pci("add", a);
        if let Some(d) = driver {
            self.bind_initial(a, &d)?;
        }
        Ok(())
    }

    /// Hot-unplugs a function and everything below it; it does not come back on `rescan`.
    pub fn unplug_pci(&mut self, address: &str) -> Result<(), KernelError> {
        let a = PciAddress::parse(address)
            .filter(|a| self.pci.contains_key(a))
            .ok_or_else(|| KernelError::NoSuchPci(address.to_owned()))?;
        self.remove_function(a);
        Ok(())
    }
}
