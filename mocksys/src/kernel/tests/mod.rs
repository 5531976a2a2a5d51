//! Rule tests of the kernel model: one test per rule of the reference, named after it.

mod drivers;
mod hotplug;
mod mdev;
mod sriov;
mod usb;

use super::Kernel;
use crate::backend::Uevent;
use crate::spec::{HostSpec, PciAddress};

pub(super) fn kernel(yaml: &str) -> Kernel {
    let spec = HostSpec::from_yaml_str(yaml, "test.yaml").unwrap_or_else(|e| panic!("{e}"));
    Kernel::from_spec(&spec).unwrap_or_else(|e| panic!("{e}"))
}

pub(super) fn addr(s: &str) -> PciAddress {
    PciAddress::parse(s).unwrap()
}

pub(super) fn driver_of(k: &Kernel, a: &str) -> Option<String> {
    k.pci[&addr(a)].driver.clone()
}

pub(super) fn actions(events: &[Uevent]) -> Vec<String> {
    events
        .iter()
        .map(|e| format!("{}@{}", e.action, e.devpath))
        .collect()
}

/// Two NVMe drives (one bound), a T4 on nvidia, a bridge, and vfio-pci loaded.
pub(super) const BASIC: &str = r#"
modules: [nvme, nvidia, vfio-pci]
pci:
  - {address: "0000:05:00.0", preset: qemu-nvme, iommuGroup: 5}
  - {address: "0000:06:00.0", preset: qemu-nvme, driver: none, iommuGroup: 6}
  - {address: "0000:07:00.0", preset: qemu-nvme, driver: none, iommuGroup: 6}
  - {address: "0000:65:00.0", preset: tesla-t4}
  - {address: "0000:00:1c.0", id: "8086:a33c", class: "060400"}
"#;
