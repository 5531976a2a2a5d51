//! hostdev-agent: serves PCI, mediated and USB host devices to the kubelet, as KubeVirt does.
//!
//! - [`inventory`]: what discovery found, in the shape the plugins serve (the contract below).
//! - [`sysfs`]: where sysfs and /dev are (`HostPaths`), and reads that never leave those roots.
//! - [`config`]: the KubeVirt CR (`permittedHostDevices`, `mediatedDevicesConfiguration`) validated into `AgentConfig`.
pub mod inventory;
pub mod sysfs;
pub mod config;
