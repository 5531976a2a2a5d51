//! Errors at the fake kubelet's edges. Texts follow the kubelet's own messages (see
//! `shared/reference/kubelet-device-plugin.md`) so plugin authors see what a node would tell them.

use std::path::PathBuf;
use std::time::Duration;

/// Why a `Register` call was refused; the `Display` text is what the plugin receives as the gRPC
/// status message (code `Unknown`, like the kubelet's plain Go errors).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    #[error(
        "requested API version \"{0}\" is not supported by kubelet. Supported version is [\"v1beta1\"]"
    )]
    UnsupportedVersion(String),
    #[error("the ResourceName \"{0}\" is invalid")]
    InvalidResourceName(String),
    #[error("failed to dial device plugin: {0}")]
    Dial(String),
    #[error("failed to get device plugin options: {0}")]
    Options(String),
    #[error("kubelet is shutting down; registration of {0} abandoned")]
    ShuttingDown(String),
}

/// Why an allocation for a container failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocateError {
    #[error("cannot allocate unregistered device {0}")]
    Unregistered(String),
    #[error("no healthy devices present; cannot allocate unhealthy devices {0}")]
    NoHealthyDevices(String),
    #[error(
        "previously allocated devices are no longer healthy; cannot allocate unhealthy devices {0}"
    )]
    PreviouslyAllocatedUnhealthy(String),
    #[error(
        "requested number of devices unavailable for {resource}. Requested: {requested}, Available: {available}"
    )]
    Unavailable {
        resource: String,
        requested: usize,
        available: usize,
    },
    #[error(
        "pod \"{pod_uid}\" container \"{container}\" changed request for resource \"{resource}\" from {from} to {to}"
    )]
    ChangedRequest {
        pod_uid: String,
        container: String,
        resource: String,
        from: usize,
        to: usize,
    },
    #[error(
        "unexpectedly allocated less resources than required. Requested: {requested}, Got: {got}"
    )]
    Shortfall { requested: usize, got: usize },
    #[error("unknown Device Plugin {0}")]
    UnknownPlugin(String),
    #[error("endpoint {0} has been stopped")]
    EndpointStopped(String),
    #[error("endpoint stopped for resource \"{0}\"")]
    PreferredEndpointStopped(String),
    #[error("device plugin GetPreferredAllocation rpc failed with err: {0}")]
    PreferredAllocationRpc(RpcError),
    #[error("{0}")]
    AllocateRpc(RpcError),
    #[error("no containers return in allocation response for resource {0}")]
    EmptyResponse(String),
    #[error("device plugin PreStartContainer rpc failed with err: {0}")]
    PreStartRpc(RpcError),
    #[error("kubelet is not running; cannot allocate {0}")]
    NotRunning(String),
}

/// A failed RPC to a plugin, rendered like Go's gRPC errors and naming the plugin's socket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rpc error: code = {code} desc = {message} (resource {resource}, endpoint {})", endpoint.display())]
pub struct RpcError {
    pub resource: String,
    pub endpoint: PathBuf,
    /// The gRPC code name as Go spells it (`DeadlineExceeded`, `Unavailable`, ...).
    pub code: String,
    pub message: String,
}

impl RpcError {
    pub(crate) fn from_status(
        resource: &str,
        endpoint: &std::path::Path,
        s: &tonic::Status,
    ) -> Self {
        Self {
            resource: resource.to_owned(),
            endpoint: endpoint.to_owned(),
            code: format!("{:?}", s.code()),
            message: s.message().to_owned(),
        }
    }

    pub(crate) fn timeout(resource: &str, endpoint: &std::path::Path, after: Duration) -> Self {
        Self {
            resource: resource.to_owned(),
            endpoint: endpoint.to_owned(),
            code: "DeadlineExceeded".into(),
            message: format!("context deadline exceeded after {after:?}"),
        }
    }
}

/// Starting, stopping or restarting the fake kubelet failed.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    #[error("creating plugin directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cleaning plugin directory {path}: {source}")]
    CleanDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("serving registration socket: {0}")]
    Bind(std::io::Error),
    #[error("the fake kubelet is already running on {0}")]
    AlreadyRunning(PathBuf),
}

/// `wait_for` ran out of time; carries the last kubelet log lines to show in the failure.
#[derive(Debug, thiserror::Error)]
#[error("condition `{what}` not met within {timeout:?}; last kubelet log lines:\n{}", last_log.join("\n"))]
pub struct WaitTimeout {
    pub what: String,
    pub timeout: Duration,
    pub last_log: Vec<String>,
}
