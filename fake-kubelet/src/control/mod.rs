//! The `fake-kubelet` program's commands, shared by its two front ends: the console (one command
//! per line on stdin, answers on stdout) and the control socket `<dir>/fake-kubelet.ctl` that
//! `fake-kubelet ctl` talks to. Both parse into one [`Command`] and run it through one
//! [`Controller::execute`]; they differ only in how they read commands and render answers.
//!
//! - [`server::serve`]: runs a kubelet until SIGTERM, SIGINT, `stop` or `quit`, whatever stdin is.
//! - [`console`]: the stdin grammar and its `ok` / `error TEXT` answers.
//! - [`client::ctl`]: one request over the control socket, exit codes 0 / 1 / 2.
//!
//! The control protocol is line-delimited JSON over a 0600 unix socket: a request is a
//! serialized [`Command`] (`{"command":"free","pod":"p"}`), the answer one [`Response`] line.
//! Several requests may share a connection (e.g. `socat - UNIX-CONNECT:dir/fake-kubelet.ctl`).

pub mod client;
pub mod console;
pub mod server;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{AllocateError, KubeletError};
use crate::state::ContainerAllocation;

pub use server::{Controller, ServeError, serve};

/// File name of the control socket inside the plugin directory.
pub const CONTROL_SOCKET: &str = "fake-kubelet.ctl";

/// `<dir>/fake-kubelet.ctl`.
pub fn control_socket_path(dir: &Path) -> PathBuf {
    dir.join(CONTROL_SOCKET)
}

/// One thing the program can be asked to do. Also the `ctl` subcommands and the wire request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, clap::Subcommand)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Allocate COUNT devices of RESOURCE to a container, as at pod admission.
    Allocate {
        /// The pod's UID (any string).
        pod: String,
        /// The container's name.
        container: String,
        /// The extended resource, e.g. `nvidia.com/TU104GL_Tesla_T4`.
        resource: String,
        /// How many devices.
        count: usize,
        /// The topology manager's NUMA hint, e.g. `0,1`; without it every device is unaligned.
        #[arg(long, value_delimiter = ',')]
        #[serde(default, skip_serializing_if = "Option::is_none")]
        numa: Option<Vec<i64>>,
    },
    /// Free every device held by a pod.
    Free { pod: String },
    /// Capacity, allocatable, allocated and registration of every resource.
    Status,
    /// The devices of one resource with health and NUMA nodes.
    Devices { resource: String },
    /// Restart the kubelet: sockets deleted, allocations kept, capacity 0 until re-registration.
    Restart,
    /// Stop serving and exit cleanly, as on SIGTERM.
    Stop,
}

/// Why a command failed. `Usage` is the caller's fault (exit 2 for `ctl`); the rest are the
/// kubelet saying no (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Allocate(#[from] AllocateError),
    #[error("unknown resource {0}")]
    UnknownResource(String),
    #[error(transparent)]
    Kubelet(#[from] KubeletError),
    #[error("control socket {}: {source}", path.display())]
    ControlSocket {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What a command produced. Serialized (untagged) as the `result` of a [`Response`]; each
/// command has its own shape, documented in the crate README.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Outcome {
    Allocated(Allocated),
    Freed {
        pod: String,
        freed: usize,
    },
    Status(Status),
    Devices(Devices),
    /// `restart` and `stop`: `{}`.
    Done {},
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Allocated {
    pub pod: String,
    pub container: String,
    pub resource: String,
    /// Sorted device IDs.
    pub devices: Vec<String>,
    /// The same devices by NUMA node (`-1`: no topology), as in the checkpoint.
    pub devices_by_numa: BTreeMap<i64, Vec<String>>,
    pub envs: BTreeMap<String, String>,
    pub mounts: Vec<Mount>,
    pub device_specs: Vec<DeviceSpec>,
    pub annotations: BTreeMap<String, String>,
    pub cdi_devices: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    pub container_path: String,
    pub host_path: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceSpec {
    pub container_path: String,
    pub host_path: String,
    pub permissions: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// Whether the registration socket is served (false only mid-restart or after a failed one).
    pub running: bool,
    pub resources: BTreeMap<String, ResourceLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResourceLine {
    pub capacity: usize,
    pub allocatable: usize,
    pub allocated: usize,
    pub registered: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Devices {
    pub resource: String,
    pub devices: Vec<DeviceLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceLine {
    pub id: String,
    pub health: String,
    pub numa_nodes: Vec<i64>,
}

impl From<ContainerAllocation> for Allocated {
    fn from(a: ContainerAllocation) -> Self {
        let r = a.response;
        Self {
            pod: a.pod_uid,
            container: a.container,
            resource: a.resource,
            devices: a.device_ids,
            devices_by_numa: a.devices_by_numa,
            envs: r.envs.into_iter().collect(),
            mounts: r
                .mounts
                .into_iter()
                .map(|m| Mount {
                    container_path: m.container_path,
                    host_path: m.host_path,
                    read_only: m.read_only,
                })
                .collect(),
            device_specs: r
                .devices
                .into_iter()
                .map(|d| DeviceSpec {
                    container_path: d.container_path,
                    host_path: d.host_path,
                    permissions: d.permissions,
                })
                .collect(),
            annotations: r.annotations.into_iter().collect(),
            cdi_devices: r.cdi_devices.into_iter().map(|c| c.name).collect(),
        }
    }
}

impl Outcome {
    /// The human-readable answer, one entry per line (the console's format since the start).
    pub fn text(&self) -> Vec<String> {
        match self {
            Outcome::Allocated(a) => vec![format!("{} envs={:?}", a.devices.join(","), a.envs)],
            Outcome::Freed { freed, .. } => vec![format!("freed {freed}")],
            Outcome::Status(s) => s
                .resources
                .iter()
                .map(|(name, r)| {
                    format!(
                        "{name} capacity={} allocatable={} allocated={} registered={}",
                        r.capacity, r.allocatable, r.allocated, r.registered
                    )
                })
                .collect(),
            Outcome::Devices(d) => d
                .devices
                .iter()
                .map(|d| format!("{} {} numa={:?}", d.id, d.health, d.numa_nodes))
                .collect(),
            Outcome::Done {} => vec![],
        }
    }
}

/// The control socket's answer to one request, one JSON line:
/// `{"status":"ok","result":{..},"text":[..]}`, `{"status":"failed","error":".."}` or
/// `{"status":"bad_request","error":".."}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Response {
    Ok {
        result: serde_json::Value,
        text: Vec<String>,
    },
    Failed {
        error: String,
    },
    BadRequest {
        error: String,
    },
}

impl Response {
    pub fn from_result(r: Result<Outcome, CommandError>) -> Self {
        match r {
            Ok(outcome) => Response::Ok {
                text: outcome.text(),
                result: serde_json::to_value(&outcome)
                    .unwrap_or_else(|e| serde_json::json!({ "serialize_error": e.to_string() })),
            },
            Err(CommandError::Usage(error)) => Response::BadRequest { error },
            Err(e) => Response::Failed {
                error: e.to_string(),
            },
        }
    }
}

/// `500ms`, `30s`, `5m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("duration {s:?} has no number"))?;
    Ok(match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("duration {s:?}: unit must be ms, s, m or h")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("m").is_err());
    }

    #[test]
    fn commands_have_the_documented_wire_shape() {
        let c = Command::Allocate {
            pod: "p".into(),
            container: "c".into(),
            resource: "r/x".into(),
            count: 2,
            numa: Some(vec![0, 1]),
        };
        let json = serde_json::to_string(&c).expect("serialize");
        assert_eq!(
            json,
            r#"{"command":"allocate","pod":"p","container":"c","resource":"r/x","count":2,"numa":[0,1]}"#
        );
        assert_eq!(serde_json::from_str::<Command>(&json).expect("parse"), c);
        assert_eq!(
            serde_json::from_str::<Command>(r#"{"command":"status"}"#).expect("status"),
            Command::Status
        );
        assert!(serde_json::from_str::<Command>(r#"{"command":"free"}"#).is_err());
    }

    #[test]
    fn outcomes_serialize_to_their_documented_shapes() {
        let done = Response::from_result(Ok(Outcome::Done {}));
        assert_eq!(
            serde_json::to_string(&done).expect("serialize"),
            r#"{"status":"ok","result":{},"text":[]}"#
        );
        let freed = Response::from_result(Ok(Outcome::Freed {
            pod: "p".into(),
            freed: 1,
        }));
        assert_eq!(
            serde_json::to_string(&freed).expect("serialize"),
            r#"{"status":"ok","result":{"freed":1,"pod":"p"},"text":["freed 1"]}"#
        );
        let failed = Response::from_result(Err(CommandError::UnknownResource("r".into())));
        assert_eq!(
            serde_json::to_string(&failed).expect("serialize"),
            r#"{"status":"failed","error":"unknown resource r"}"#
        );
        let usage = Response::from_result(Err(CommandError::Usage("bad".into())));
        assert_eq!(
            serde_json::to_string(&usage).expect("serialize"),
            r#"{"status":"bad_request","error":"bad"}"#
        );
    }
}
