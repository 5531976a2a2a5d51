//! IOMMUFD: with KubeVirt's `IOMMUFD` feature gate on (alpha, PR #17956; not in v1.7.0), PCI
//! Allocate also hands out the function's VFIO device cdev, `/dev/vfio/devices/vfioN`, named by
//! the kernel under `<addr>/vfio-dev/` (KubeVirt `dm/common.go`). The gate lives in the CR, so
//! it can change at any reload: the manager's configuration source flips the shared switch and
//! Allocate reads sysfs at the time of the request, as KubeVirt does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::sysfs::HostPaths;

/// KubeVirt's feature-gate name.
pub const IOMMUFD_GATE: &str = "IOMMUFD";

/// Whether the configuration in force has the `IOMMUFD` gate; shared by the configuration
/// source (writer) and every plugin (readers).
#[derive(Clone, Debug, Default)]
pub struct IommufdSwitch(Arc<AtomicBool>);

impl IommufdSwitch {
    pub fn set(&self, on: bool) {
        self.0.store(on, Ordering::Relaxed);
    }

    pub fn is_on(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

impl PartialEq for IommufdSwitch {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for IommufdSwitch {}

/// Finds VFIO device cdevs in sysfs while the switch is on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Iommufd {
    pub host: HostPaths,
    pub switch: IommufdSwitch,
}

impl Iommufd {
    /// `vfio/devices/vfioN` (relative to the dev root) for the function at `address`, when the
    /// gate is on and the kernel gave it a cdev.
    pub fn cdev(&self, address: &str) -> Option<String> {
        if !self.switch.is_on() {
            return None;
        }
        let root = self.host.open_sysfs().ok()?;
        let names = root
            .list(Some(&format!("bus/pci/devices/{address}/vfio-dev")))
            .ok()?;
        let mut cdevs: Vec<String> = (names.into_iter())
            .filter(|n| {
                n.strip_prefix("vfio")
                    .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
            })
            .collect();
        cdevs.sort();
        cdevs.first().map(|n| format!("vfio/devices/{n}"))
    }
}
