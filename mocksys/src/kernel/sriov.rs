//! SR-IOV: `sriov_numvfs` creates and removes virtual functions.

use super::Kernel;
use crate::errno::Errno;
use crate::spec::{PciAddress, PciSpec};

/// First VF's routing id past the PF's, and the stride between VFs (as an SR-IOV
/// capability would advertise them).
const VF_OFFSET: u16 = 8;
const VF_STRIDE: u16 = 1;

impl Kernel {
    /// The address VF `index` (0-based) of a PF gets.
    pub fn vf_address(pf: PciAddress, index: u16) -> Option<PciAddress> {
        let rid = pf
            .routing_id()
            .checked_add(VF_OFFSET)?
            .checked_add(index.checked_mul(VF_STRIDE)?)?;
        Some(PciAddress::from_routing_id(pf.domain, rid))
    }

    /// The PF's enabled VFs, in index order.
    pub fn vfs_of(&self, pf: PciAddress) -> Vec<PciAddress> {
        let n = self.pci.get(&pf).map_or(0, |f| f.num_vfs);
        (0..n).filter_map(|i| Kernel::vf_address(pf, i)).collect()
    }

    /// `sriov_numvfs`.
    pub fn set_numvfs(&mut self, pf: PciAddress, data: &[u8]) -> Result<(), Errno> {
        let text = std::str::from_utf8(data).map_err(|_| Errno::EINVAL)?;
        let n = super::mdev::parse_ulong(text)
            .and_then(|n| u16::try_from(n).ok())
            .ok_or(Errno::EINVAL)?;
        let f = self.pci.get(&pf).ok_or(Errno::ENODEV)?;
        if n > f.spec.total_vfs {
            return Err(Errno::ERANGE);
        }
        if n == f.num_vfs {
            return Ok(());
        }
        let Some(driver) = f.driver.as_deref() else {
            return Err(Errno::ENOENT);
        };
        if !self.driver(driver).is_some_and(|d| d.sriov) {
            return Err(Errno::ENOENT);
        }
        if n == 0 {
            self.disable_vfs(pf);
            return Ok(());
        }
        if f.num_vfs != 0 {
            return Err(Errno::EBUSY);
        }
        self.enable_vfs(pf, n)
    }

    fn enable_vfs(&mut self, pf: PciAddress, n: u16) -> Result<(), Errno> {
        let addresses: Vec<PciAddress> = (0..n)
            .map(|i| Kernel::vf_address(pf, i).ok_or(Errno::ERANGE))
            .collect::<Result<_, _>>()?;
        if addresses.iter().any(|a| self.pci.contains_key(a)) {
            return Err(Errno::EBUSY);
        }
        let pf_fn = self.pci[&pf].clone();
        if let Some(f) = self.pci.get_mut(&pf) {
            f.num_vfs = n;
        }
        let by_vfio = pf_fn.driver.as_deref() == Some("vfio-pci");
        for a in addresses {
            let s = &pf_fn.spec;
            let mut spec = PciSpec::new(a, s.vendor, s.vf_device.unwrap_or(s.device), s.class);
            spec.subsystem_vendor = s.subsystem_vendor;
            spec.subsystem_device = s.subsystem_device;
            spec.revision = s.revision;
            spec.numa_node = s.numa_node;
            spec.parent = s.parent;
            spec.bridge = false;
            let group = self.iommu.then(|| self.alloc_group());
            self.insert_function(spec, group);
            if let Some(vf) = self.pci.get_mut(&a) {
                vf.physfn = Some(pf);
                // vfio-pci's bus notifier keeps its PF's VFs for itself.
                if by_vfio {
                    vf.driver_override = Some("vfio-pci".to_owned());
                }
            }
            self.emit_pci("add", a);
            self.autoprobe(a);
        }
        Ok(())
    }

    pub(super) fn disable_vfs(&mut self, pf: PciAddress) {
        for a in self.vfs_of(pf).into_iter().rev() {
            self.remove_function(a);
        }
        if let Some(f) = self.pci.get_mut(&pf) {
            f.num_vfs = 0;
        }
    }
}
