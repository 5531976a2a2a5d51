//! The kubelet device-plugin API (v1beta1), shared by the agent and the lab.
//!
//! - [`v1beta1`]: the generated messages, clients and servers.
//! - constants the kubelet and plugins agree on ([`VERSION`], [`HEALTHY`], [`KUBELET_SOCKET`], ...).
//! - [`unix`]: connecting a tonic client to a unix socket, and serving on one.
//! - [`authority`]: the layer under every server from [`unix::bind`] that accepts the
//!   `:authority` of any real gRPC client (grpcio, grpc-java, ...), as the kubelet does.

pub mod v1beta1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("v1beta1");
}

pub mod authority;
pub mod unix;

/// The only API version the kubelet accepts in `RegisterRequest.version`.
pub const VERSION: &str = "v1beta1";
/// Health value of a usable device. Anything else counts as unhealthy.
pub const HEALTHY: &str = "Healthy";
/// Health value of a device that must not be allocated.
pub const UNHEALTHY: &str = "Unhealthy";
/// Default directory holding the kubelet socket and the plugin sockets.
pub const DEVICE_PLUGIN_DIR: &str = "/var/lib/kubelet/device-plugins";
/// File name of the kubelet's registration socket inside the plugin directory.
pub const KUBELET_SOCKET: &str = "kubelet.sock";
/// File name of the kubelet's device-manager checkpoint inside the plugin directory.
pub const CHECKPOINT_FILE: &str = "kubelet_internal_checkpoint";
/// How long the kubelet waits for PreStartContainer.
pub const PRE_START_CONTAINER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
