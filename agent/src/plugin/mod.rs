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
pub mod lifecycle;
pub mod preferred;
pub mod server;
pub mod socket;

use std::path::PathBuf;
use std::sync::Arc;

use crate::inventory::Resource;

pub use allocate::{AllocateError, env_var_name};
pub use lifecycle::{PluginHandle, PluginSettings};
pub use preferred::PinnedAddresses;
pub use server::{PluginCore, PluginError};

/// The state every request handler reads: the resource as last discovered.
pub type SharedResource = Arc<Resource>;

/// Where device nodes live on this host, e.g. `/dev`. Allocate names host paths under it, while
/// the container path is always the `/dev/...` path the guest tooling expects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevRoot(pub PathBuf);

impl DevRoot {
    /// The host path of `relative` (e.g. `vfio/12`) under the dev root.
    pub fn host_path(&self, relative: &str) -> PathBuf {
        self.0.join(relative)
    }

    /// The path a container sees for `relative`: always under `/dev`.
    pub fn container_path(relative: &str) -> String {
        format!("/dev/{relative}")
    }
}
