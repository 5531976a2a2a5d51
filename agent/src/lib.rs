//! hostdev-agent: serves PCI, mediated and USB host devices to the kubelet, as KubeVirt does.
//!
//! - [`inventory`]: what discovery found, in the shape the plugins serve (the contract below).
//! - [`sysfs`]: where sysfs and /dev are (`HostPaths`), and reads that never leave those roots.
//! - [`config`]: the KubeVirt CR (`permittedHostDevices`, `mediatedDevicesConfiguration`) validated into `AgentConfig`.
//! - [`discovery`]: sysfs + config -> `Inventory` (PCI, mdev, USB bundles), every skip explained.
//! - [`mdev_manager`]: creates/removes mdevs to match `mediatedDevicesConfiguration` (desired vs actual, every time).
//! - [`explain`]: the text and JSON of `hostdev-agent discover` (what is advertised, and why not).
//! - [`manager`]: the select loop turning config + discovery into running plugins; [`run_agent`].
//! - [`plugin`]: one device plugin per resource (ListAndWatch, Allocate, preferred allocation, sockets).
//! - [`registration`]: Register with `kubelet.sock`, retried with backoff.
//! - [`watch`]: wake-ups: kernel uevents, inotify on the dev root, the plugin dir and the config.
//! - [`metrics`]: Prometheus `/metrics`.
//! - [`cli`]: the command line, validated into [`AgentOptions`].
pub mod cli;
pub mod config;
pub mod discovery;
pub mod explain;
pub mod inventory;
pub mod manager;
pub mod mdev_manager;
pub mod metrics;
pub mod plugin;
pub mod registration;
pub mod sysfs;
pub mod watch;

pub use manager::{AgentOptions, run_agent};
