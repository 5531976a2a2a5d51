//! One kubelet device plugin per resource.
//!
//! - [`allocate`]: what Allocate hands a container, per device kind (env vars and device specs,
//!   exactly as KubeVirt's virt-launcher expects them).
//! - [`preferred`]: GetPreferredAllocation (NUMA locality and pinned addresses).
//! - [`server`]: the plugin logic ([`PluginCore`]) and the thin tonic adapter over it.
//! - [`lifecycle`]: one running plugin ([`PluginHandle`]): serve on a fresh socket, register,
//!   re-serve when the kubelet restarts.
//! - [`socket`]: unique socket names, and removing stale ones of an earlier run.
//!
//! Device state lives in a `tokio::sync::watch` holding the resource's current [`Resource`]; the
//! manager replaces it, ListAndWatch maps it. The state outlives every socket generation, so a
//! kubelet restart never loses devices.

pub mod allocate;
pub mod iommufd;
pub mod lifecycle;
pub mod owner;
pub mod preferred;
pub mod server;
pub mod socket;

use std::path::PathBuf;
use std::sync::Arc;

use crate::inventory::Resource;

pub use allocate::{AllocateError, env_var_name};
pub use iommufd::{Iommufd, IommufdSwitch};
pub use lifecycle::{PluginHandle, PluginSettings};
pub use owner::DeviceOwner;
pub use preferred::PinnedAddresses;
pub use server::{PluginCore, PluginError};

/// The state every request handler reads: the resource as last discovered.
pub type SharedResource = Arc<Resource>;

/// Where device nodes are. `local` is where the agent itself finds them (`--dev-root`, checked
/// by PreStartContainer); `node` is the same directory as the kubelet and the container runtime
/// see it on the node, which Allocate names as host paths. They differ when the agent runs with
/// the node's `/dev` mounted elsewhere (`--dev-root /host/dev --node-dev-root /dev`). The
/// container path is always the `/dev/...` path the guest tooling expects.
///
/// `usb_owner`: who USB device nodes are chowned to on Allocate (KubeVirt gives them to qemu,
/// 107:107); `None` leaves them alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevRoot {
    pub local: PathBuf,
    pub node: PathBuf,
    pub usb_owner: Option<DeviceOwner>,
    /// Where PCI Allocate finds VFIO device cdevs while the `IOMMUFD` gate is on.
    pub iommufd: Option<Iommufd>,
}

impl DevRoot {
    /// The agent sees the node's device nodes where the node does.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        DevRoot {
            local: root.clone(),
            node: root,
            usb_owner: None,
            iommufd: None,
        }
    }

    /// The agent sees the node's `node` directory at `local`.
    pub fn mapped(local: impl Into<PathBuf>, node: impl Into<PathBuf>) -> Self {
        DevRoot {
            local: local.into(),
            node: node.into(),
            usb_owner: None,
            iommufd: None,
        }
    }

    /// PCI Allocate also hands out `vfio/devices/vfioN` while `iommufd`'s switch is on.
    pub fn with_iommufd(mut self, iommufd: Option<Iommufd>) -> Self {
        self.iommufd = iommufd;
        self
    }

    /// USB device nodes handed out are chowned to `owner` first.
    pub fn with_usb_owner(mut self, owner: Option<DeviceOwner>) -> Self {
        self.usb_owner = owner;
        self
    }

    /// The node's path of `relative` (e.g. `vfio/12`), for the kubelet.
    pub fn host_path(&self, relative: &str) -> PathBuf {
        self.node.join(relative)
    }

    /// Where the agent finds `relative` itself.
    pub fn local_path(&self, relative: &str) -> PathBuf {
        self.local.join(relative)
    }

    /// The path a container sees for `relative`: always under `/dev`.
    pub fn container_path(relative: &str) -> String {
        format!("/dev/{relative}")
    }
}
