//! hostdev-agent: serves PCI, mediated and USB host devices to the kubelet, as KubeVirt does.
//!
//! - [`inventory`]: what discovery found, in the shape the plugins serve (the contract below).
//! - [`sysfs`]: where sysfs and /dev are (`HostPaths`), and reads that never leave those roots.
//! - [`config`]: the KubeVirt CR (`permittedHostDevices`, `mediatedDevicesConfiguration`) validated into `AgentConfig`.
//! - [`discovery`]: sysfs + config -> `Inventory` (PCI, mdev, USB bundles), every skip explained.
//! - [`mdev_manager`]: creates/removes mdevs to match `mediatedDevicesConfiguration` (desired vs actual, every time).
//! - [`explain`]: the text and JSON of `hostdev-agent discover` (what is advertised, and why not).
pub mod inventory;
pub mod sysfs;
pub mod config;
pub mod discovery;
pub mod mdev_manager;
pub mod explain;
