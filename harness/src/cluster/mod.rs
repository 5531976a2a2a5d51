//! The simulated control plane: what the API server, scheduler and virt-launcher would do.
//!
//! - [`admission`]: virt-api's checks of a VMI (the HostDevices feature gate, ramfb displays);
//! - [`controller`]: virt-controller rendering the pod (permitted device names, resource
//!   requests);
//! - [`scheduler`]: node selection by labels and allocatable extended resources, with the
//!   scheduler's own "0/N nodes are available" message;
//! - [`launcher`]: the libvirt `<hostdev>` elements built from the allocation's env vars.
pub mod admission;
pub mod controller;
pub mod launcher;
pub mod scheduler;
