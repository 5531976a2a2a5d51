//! hostdev-agent: serves PCI, mediated and USB host devices to the kubelet, as KubeVirt does.
//!
//! - [`inventory`]: what discovery found, in the shape the plugins serve (the contract below).
pub mod inventory;
