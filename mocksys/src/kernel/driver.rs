//! Drivers: loading, matching, probe, bind/unbind, driver_override, dynamic ids.

use super::catalog::{IdMatch, lookup};
use super::{Kernel, KernelError};
use crate::errno::Errno;
use crate::spec::{PciAddress, module_name};

/// A registered PCI driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Driver {
    /// As under `/sys/bus/pci/drivers`.
    pub name: String,
    /// As under `/sys/module`.
    pub module: String,
    pub ids: Vec<IdMatch>,
    /// Added by `new_id`: (vendor, device).
    pub dynamic: Vec<(u16, u16)>,
    pub sriov: bool,
}

/// `driver_override` values of this length or more are refused (`PAGE_SIZE - 1`).
pub const OVERRIDE_MAX: usize = 4095;

impl Kernel {
    pub fn driver(&self, name: &str) -> Option<&Driver> {
        self.drivers.iter().find(|d| d.name == name)
    }

    /// Loads a module (`modprobe`): its driver directory appears; with `probe`, unbound
    /// devices its static table matches bind, as at module load. Unknown names load as a
    /// driver with no ids.
    pub(super) fn load_module(&mut self, name: &str, announce: bool) {
        let info = lookup(name);
        let module = info.map_or_else(|| module_name(name), |i| i.module.to_owned());
        if self.modules.contains(&module) {
            return;
        }
        let mut new_modules = Vec::new();
        if module == "vfio_pci" {
            for dep in ["vfio", "vfio_iommu_type1", "vfio_pci_core"] {
                if !self.modules.iter().any(|m| m == dep) {
                    new_modules.push(dep.to_owned());
                }
            }
        }
        new_modules.push(module.clone());
        for m in new_modules {
            self.modules.push(m.clone());
            if announce {
                self.emit("add", format!("/module/{m}"), "module", Vec::new());
            }
        }
        let driver = Driver {
            name: info.map_or_else(|| name.to_owned(), |i| i.name.to_owned()),
            module,
            ids: info.map_or_else(Vec::new, |i| i.ids.to_vec()),
            dynamic: Vec::new(),
            sriov: info.is_none_or(|i| i.sriov),
        };
        let name = driver.name.clone();
        self.drivers.push(driver);
        if announce {
            self.emit(
                "add",
                format!("/bus/pci/drivers/{name}"),
                "drivers",
                Vec::new(),
            );
            let unbound: Vec<PciAddress> = self
                .pci
                .values()
                .filter(|f| f.driver.is_none())
                .map(|f| f.address())
                .collect();
            for a in unbound {
                if self.matches(&name, a) {
                    // A probe that fails at module load leaves the device unbound, silently.
                    let _ = self.try_bind(&name, a);
                }
            }
        }
    }

    /// `modprobe NAME`: loads a module the model knows; unknown names are ENOENT.
    pub fn modprobe(&mut self, name: &str) -> Result<(), Errno> {
        if lookup(name).is_none() && !self.modules.contains(&module_name(name)) {
            return Err(Errno::ENOENT);
        }
        self.load_module(name, true);
        Ok(())
    }

    /// The kernel's `pci_bus_match`: the override decides alone when set.
    pub fn matches(&self, driver: &str, address: PciAddress) -> bool {
        let (Some(d), Some(f)) = (self.driver(driver), self.pci.get(&address)) else {
            return false;
        };
        if let Some(o) = &f.driver_override {
            return *o == d.name;
        }
        let s = &f.spec;
        d.ids.iter().any(|m| m.matches(s.vendor, s.device, s.class))
            || d.dynamic.contains(&(s.vendor, s.device))
    }

    /// The driver's probe: vfio-pci refuses bridges, devices without IOMMU group and PFs with VFs.
    fn probe(&self, driver: &str, address: PciAddress) -> Result<(), Errno> {
        let f = self.pci.get(&address).ok_or(Errno::ENODEV)?;
        if driver == "vfio-pci" {
            if f.spec.bridge {
                return Err(Errno::EINVAL);
            }
            if f.iommu_group.is_none() {
                return Err(Errno::EINVAL);
            }
            if f.num_vfs > 0 {
                return Err(Errno::EBUSY);
            }
        }
        Ok(())
    }

    /// Probe then attach, with the bind uevent.
    fn try_bind(&mut self, driver: &str, address: PciAddress) -> Result<(), Errno> {
        self.probe(driver, address)?;
        // vfio-pci registers a device cdev with the lowest free index, as ida_alloc does.
        let cdev = (driver == "vfio-pci").then(|| {
            let used: std::collections::BTreeSet<u32> =
                self.pci.values().filter_map(|f| f.vfio_cdev).collect();
            (0..).find(|i| !used.contains(i)).unwrap_or(0)
        });
        if let Some(f) = self.pci.get_mut(&address) {
            f.driver = Some(driver.to_owned());
            f.vfio_cdev = cdev;
        }
        self.emit_pci("bind", address);
        Ok(())
    }

    /// Detaches the driver: the parent's mdevs and VFs go first, then the unbind uevent.
    pub(super) fn detach(&mut self, address: PciAddress) {
        if self.pci.get(&address).is_none_or(|f| f.driver.is_none()) {
            return;
        }
        self.remove_mdevs_of(address);
        if self.pci.get(&address).is_some_and(|f| f.num_vfs > 0) {
            self.disable_vfs(address);
        }
        if let Some(f) = self.pci.get_mut(&address) {
            f.driver = None;
            f.vfio_cdev = None;
        }
        self.emit_pci("unbind", address);
    }

    pub(super) fn bind_initial(
        &mut self,
        address: PciAddress,
        driver: &str,
    ) -> Result<(), KernelError> {
        if self.driver(driver).is_none() {
            return Err(KernelError::DriverNotLoaded {
                address,
                driver: driver.to_owned(),
            });
        }
        self.try_bind(driver, address)
            .map_err(|errno| KernelError::Bind {
                address,
                driver: driver.to_owned(),
                errno,
            })
    }

    /// `drivers/X/bind`.
    pub fn bind(&mut self, driver: &str, bdf: &str) -> Result<(), Errno> {
        let address = self.find_pci(bdf).ok_or(Errno::ENODEV)?;
        if !self.matches(driver, address) {
            return Err(Errno::ENODEV);
        }
        if self.pci[&address].driver.is_some() {
            return Err(Errno::EBUSY);
        }
        self.try_bind(driver, address)
    }

    /// `drivers/X/unbind`.
    pub fn unbind(&mut self, driver: &str, bdf: &str) -> Result<(), Errno> {
        let address = self.find_pci(bdf).ok_or(Errno::ENODEV)?;
        if self.pci[&address].driver.as_deref() != Some(driver) {
            return Err(Errno::ENODEV);
        }
        self.detach(address);
        Ok(())
    }

    /// `<dev>/driver_override`: sets or clears; binds and unbinds nothing.
    pub fn set_driver_override(&mut self, address: PciAddress, data: &[u8]) -> Result<(), Errno> {
        if data.len() >= OVERRIDE_MAX {
            return Err(Errno::EINVAL);
        }
        let cut = data.split(|b| *b == b'\n').next().unwrap_or_default();
        let f = self.pci.get_mut(&address).ok_or(Errno::ENODEV)?;
        f.driver_override = if cut.is_empty() {
            None
        } else {
            Some(String::from_utf8_lossy(cut).into_owned())
        };
        Ok(())
    }

    /// `drivers/X/new_id`: "vendor device [subvendor subdevice class class_mask]".
    pub fn new_id(&mut self, driver: &str, text: &str) -> Result<(), Errno> {
        let fields = parse_id_fields(text)?;
        let (vendor, device) = (fields[0] as u16, fields[1] as u16);
        let class = fields.get(4).copied().unwrap_or(0);
        let d = self.driver(driver).ok_or(Errno::ENODEV)?;
        if d.dynamic.contains(&(vendor, device))
            || d.ids.iter().any(|m| m.matches(vendor, device, class))
        {
            return Err(Errno::EEXIST);
        }
        if let Some(d) = self.drivers.iter_mut().find(|d| d.name == driver) {
            d.dynamic.push((vendor, device));
        }
        // driver_attach: every unbound matching device; probe failures are not reported.
        let unbound: Vec<PciAddress> = self
            .pci
            .values()
            .filter(|f| f.driver.is_none())
            .map(|f| f.address())
            .collect();
        for a in unbound {
            if self.matches(driver, a) {
                let _ = self.try_bind(driver, a);
            }
        }
        Ok(())
    }

    /// `drivers/X/remove_id`: forgets a dynamic id; unbinds nothing.
    pub fn remove_id(&mut self, driver: &str, text: &str) -> Result<(), Errno> {
        let fields = parse_id_fields(text)?;
        let id = (fields[0] as u16, fields[1] as u16);
        let d = self
            .drivers
            .iter_mut()
            .find(|d| d.name == driver)
            .ok_or(Errno::ENODEV)?;
        let before = d.dynamic.len();
        d.dynamic.retain(|x| *x != id);
        if d.dynamic.len() == before {
            return Err(Errno::ENODEV);
        }
        Ok(())
    }

    /// `bus/pci/drivers_probe`: binds an unbound device to its override or first matching driver.
    pub fn drivers_probe(&mut self, bdf: &str) -> Result<(), Errno> {
        let address = self.find_pci(bdf).ok_or(Errno::ENODEV)?;
        self.autoprobe(address);
        Ok(())
    }

    /// The kernel's device_attach: first matching driver whose probe succeeds wins.
    pub(super) fn autoprobe(&mut self, address: PciAddress) {
        if self.pci.get(&address).is_none_or(|f| f.driver.is_some()) {
            return;
        }
        let names: Vec<String> = self.drivers.iter().map(|d| d.name.clone()).collect();
        for name in names {
            if self.matches(&name, address) && self.try_bind(&name, address).is_ok() {
                return;
            }
        }
    }

    /// A device by the name written to a bus attribute (trailing newline already cut).
    pub fn find_pci(&self, bdf: &str) -> Option<PciAddress> {
        let a = PciAddress::parse(bdf)?;
        // The kernel compares device names exactly: `05:00.0` or upper case name nothing.
        (a.to_string() == bdf && self.pci.contains_key(&a)).then_some(a)
    }
}

fn parse_id_fields(text: &str) -> Result<Vec<u32>, Errno> {
    let fields: Vec<&str> = text.split_whitespace().collect();
    if fields.len() < 2 {
        return Err(Errno::EINVAL);
    }
    fields
        .iter()
        .take(6)
        .map(|f| {
            let f = f.strip_prefix("0x").unwrap_or(f);
            u32::from_str_radix(f, 16).map_err(|_| Errno::EINVAL)
        })
        .collect()
}
