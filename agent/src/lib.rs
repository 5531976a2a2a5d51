//! hostdev-agent: serves PCI, mediated and USB host devices to the kubelet, as KubeVirt does.
//!
//! - [`inventory`]: what discovery found, in the shape the plugins serve (the contract below).
//! - [`sysfs`]: where sysfs and /dev are (`HostPaths`), and reads that never leave those roots.
//! - [`config`]: the KubeVirt CR (`permittedHostDevices`, `mediatedDevicesConfiguration`) validated into `AgentConfig`.
//! - [`plugin`]: one device plugin per resource (ListAndWatch, Allocate, preferred allocation, sockets).
//! - [`registration`]: Register with `kubelet.sock`, retried with backoff.
//! - [`watch`]: wake-ups: kernel uevents, inotify on the dev root, the plugin dir and the config.
//! - [`metrics`]: Prometheus `/metrics`.
pub mod inventory;
pub mod sysfs;
pub mod metrics;
pub mod plugin;
pub mod registration;
pub mod watch;
pub mod config;
