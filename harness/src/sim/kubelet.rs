//! A node's kubelet: the project's fake kubelet (in process), or the kubelet's own device manager
//! (`upstream/bin/kubelet-dm`, Kubernetes' `pkg/kubelet/cm/devicemanager` as a pinned library)
//! driven over its line protocol (upstream/kubelet/README.md). The cluster sees one interface.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use fake_kubelet::{ContainerRequest, FakeKubelet, NodeStatus, ResourceStatus};
use parking_lot::Mutex;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::external::Notify;

/// How often the upstream kubelet's status is read (it has no change stream; the fake kubelet's
/// events stand in for this).
const STATUS_POLL: Duration = Duration::from_millis(20);
const KEPT_LOG_LINES: usize = 200;

/// What one container got: the env vars and the host paths of its device specs.
#[derive(Debug, Clone, Default)]
pub struct Allocated {
    pub envs: BTreeMap<String, String>,
    pub device_paths: Vec<String>,
}

pub enum NodeKubelet {
    Fake(FakeKubelet),
    Upstream(UpstreamKubelet),
}

impl NodeKubelet {
    pub fn node_status(&self) -> NodeStatus {
        match self {
            NodeKubelet::Fake(k) => k.node_status(),
            NodeKubelet::Upstream(k) => k.status.lock().clone(),
        }
    }

    /// Admits the container (one Allocate per resource, as the kubelet does).
    pub async fn allocate_container(&self, req: ContainerRequest) -> Result<Allocated, String> {
        match self {
            NodeKubelet::Fake(k) => k
                .allocate_container(req)
                .await
                .map(|allocations| {
                    let mut out = Allocated::default();
                    for a in allocations {
                        out.envs.extend(a.response.envs.clone());
                        out.device_paths
                            .extend(a.response.devices.iter().map(|d| d.host_path.clone()));
                    }
                    out
                })
                .map_err(|e| e.to_string()),
            NodeKubelet::Upstream(k) => k.allocate(req).await,
        }
    }

    /// The pod has terminated: its devices go back.
    pub async fn free_pod(&self, pod_uid: &str) {
        match self {
            NodeKubelet::Fake(k) => {
                k.free_pod(pod_uid);
            }
            NodeKubelet::Upstream(k) => {
                if let Err(e) = k
                    .command("free", serde_json::json!({ "pod": pod_uid }))
                    .await
                {
                    k.log(format!("free {pod_uid}: {e}"));
                }
            }
        }
    }

    pub async fn restart(&mut self) -> Result<()> {
        match self {
            NodeKubelet::Fake(k) => Ok(k.restart().await?),
            NodeKubelet::Upstream(k) => k.restart().await,
        }
    }

    pub async fn stop(&mut self) {
        match self {
            NodeKubelet::Fake(k) => k.stop().await,
            NodeKubelet::Upstream(k) => k.stop().await,
        }
    }

    pub fn recent_log(&self) -> Vec<String> {
        match self {
            NodeKubelet::Fake(k) => k.recent_log(),
            NodeKubelet::Upstream(k) => k.log.lock().iter().cloned().collect(),
        }
    }

    /// The fake kubelet, for what only it can tell (per-pod allocations with NUMA detail).
    pub fn fake(&self) -> Option<&FakeKubelet> {
        match self {
            NodeKubelet::Fake(k) => Some(k),
            NodeKubelet::Upstream(_) => None,
        }
    }
}

/// `kubelet-dm` as a child process. One command at a time; a poller keeps `status` current.
pub struct UpstreamKubelet {
    dir: PathBuf,
    program: PathBuf,
    io: Arc<tokio::sync::Mutex<Option<Io>>>,
    status: Arc<Mutex<NodeStatus>>,
    log: Arc<Mutex<VecDeque<String>>>,
    notify: Notify,
    poller: Option<tokio::task::JoinHandle<()>>,
}

struct Io {
    child: Child,
    stdin: ChildStdin,
    stdout: tokio::io::Lines<BufReader<ChildStdout>>,
}

#[derive(Deserialize)]
struct Reply {
    ok: bool,
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_kind: String,
}

#[derive(Deserialize)]
struct StatusReply {
    #[serde(default)]
    resources: BTreeMap<String, UpstreamResource>,
}

#[derive(Deserialize)]
struct UpstreamResource {
    capacity: usize,
    allocatable: usize,
    #[serde(default)]
    allocated: Vec<String>,
}

#[derive(Deserialize)]
struct AllocateReply {
    #[serde(default)]
    envs: BTreeMap<String, String>,
    #[serde(default)]
    device_specs: Vec<DeviceSpec>,
}

#[derive(Deserialize)]
struct DeviceSpec {
    host_path: String,
}

/// `upstream/bin/kubelet-dm` (built by `upstream/build.sh`), or `HOSTDEV_UPSTREAM_BIN`.
pub fn upstream_kubelet_program() -> PathBuf {
    super::external::upstream_bin().join("kubelet-dm")
}

impl UpstreamKubelet {
    /// Starts `kubelet-dm --dir DIR` and waits for its ready line.
    pub async fn start(dir: &Path, notify: Notify) -> Result<UpstreamKubelet> {
        let program = upstream_kubelet_program();
        if !program.is_file() {
            bail!(
                "kubelet: upstream needs {} (build it with upstream/build.sh)",
                program.display()
            );
        }
        let mut k = UpstreamKubelet {
            dir: dir.to_owned(),
            program,
            io: Arc::new(tokio::sync::Mutex::new(None)),
            status: Arc::new(Mutex::new(NodeStatus::default())),
            log: Arc::new(Mutex::new(VecDeque::new())),
            notify,
            poller: None,
        };
        k.spawn().await?;
        Ok(k)
    }

    fn log(&self, line: String) {
        push_line(&self.log, line);
    }

    async fn spawn(&mut self) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let mut child = Command::new(&self.program)
            .arg("--dir")
            .arg(&self.dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.program.display()))?;
        let stdin = child.stdin.take().context("kubelet-dm stdin")?;
        let mut stdout = BufReader::new(child.stdout.take().context("kubelet-dm stdout")?).lines();
        if let Some(stderr) = child.stderr.take() {
            let log = self.log.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    push_line(&log, l);
                }
            });
        }
        let ready = tokio::time::timeout(Duration::from_secs(30), stdout.next_line())
            .await
            .context("kubelet-dm gave no ready line in 30 s")?
            .context("reading kubelet-dm's ready line")?
            .ok_or_else(|| anyhow!("kubelet-dm exited before it was ready: {:?}", self.tail()))?;
        let reply: Reply =
            serde_json::from_str(&ready).with_context(|| format!("ready line {ready:?}"))?;
        if !reply.ok {
            bail!("kubelet-dm did not start: {}", reply.error);
        }
        self.log(format!("kubelet-dm ready: {ready}"));
        *self.io.lock().await = Some(Io {
            child,
            stdin,
            stdout,
        });
        // The new process's status before anyone looks: never the old one's (a restarted
        // manager shows 0 until its plugins register again).
        let first = run_command(&self.io, "status", None).await?;
        *self.status.lock() = serde_json::from_str::<StatusReply>(&first)
            .map(to_node_status)
            .with_context(|| format!("kubelet-dm status {first:?}"))?;
        (self.notify)();
        let (io, status, notify) = (self.io.clone(), self.status.clone(), self.notify.clone());
        self.poller = Some(tokio::spawn(async move {
            loop {
                match run_command(&io, "status", None).await {
                    Ok(line) => {
                        if let Ok(s) = serde_json::from_str::<StatusReply>(&line) {
                            let fresh = to_node_status(s);
                            let changed = *status.lock() != fresh;
                            if changed {
                                *status.lock() = fresh;
                                notify();
                            }
                        }
                    }
                    Err(_) => return,
                }
                tokio::time::sleep(STATUS_POLL).await;
            }
        }));
        Ok(())
    }

    fn tail(&self) -> Vec<String> {
        let l = self.log.lock();
        l.iter().skip(l.len().saturating_sub(5)).cloned().collect()
    }

    /// Runs one command; `Err` carries the manager's error text unchanged.
    async fn command(&self, verb: &str, arg: serde_json::Value) -> Result<String, String> {
        let line = run_command(&self.io, verb, Some(arg))
            .await
            .map_err(|e| format!("kubelet-dm: {e:#}"))?;
        match serde_json::from_str::<Reply>(&line) {
            Ok(r) if r.ok => Ok(line),
            Ok(r) if r.error_kind == "manager" => Err(r.error),
            Ok(r) => Err(format!("kubelet-dm ({}): {}", r.error_kind, r.error)),
            Err(e) => Err(format!("kubelet-dm replied {line:?}: {e}")),
        }
    }

    /// One protocol command (upstream/kubelet/README.md), its whole reply as JSON: for tests that
    /// compare what the manager said field by field. `Err` is the manager's text unchanged (kind
    /// `manager`), or names the kind.
    pub async fn raw_command(
        &self,
        verb: &str,
        arg: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, String> {
        let line = match arg {
            Some(a) => self.command(verb, a).await?,
            None => run_command(&self.io, verb, None)
                .await
                .map_err(|e| format!("kubelet-dm: {e:#}"))?,
        };
        serde_json::from_str(&line).map_err(|e| format!("kubelet-dm replied {line:?}: {e}"))
    }

    /// A kubelet restart (the process stops and starts over the same directory).
    pub async fn restart_process(&mut self) -> Result<()> {
        self.restart().await
    }

    /// Stops the process.
    pub async fn shutdown(&mut self) {
        self.stop().await
    }

    async fn allocate(&self, req: ContainerRequest) -> Result<Allocated, String> {
        let arg = serde_json::json!({
            "pod": req.pod_uid,
            "container": req.container,
            "resources": req.resources,
        });
        let line = self.command("allocate", arg).await?;
        let reply: AllocateReply =
            serde_json::from_str(&line).map_err(|e| format!("kubelet-dm allocate reply: {e}"))?;
        Ok(Allocated {
            envs: reply.envs,
            device_paths: reply
                .device_specs
                .into_iter()
                .map(|d| d.host_path)
                .collect(),
        })
    }

    /// A kubelet restart: the process stops and starts again over the same directory.
    async fn restart(&mut self) -> Result<()> {
        self.stop().await;
        self.log("kubelet-dm restarting".into());
        self.spawn().await
    }

    async fn stop(&mut self) {
        if let Some(p) = self.poller.take() {
            p.abort();
        }
        *self.status.lock() = NodeStatus::default();
        let mut guard = self.io.lock().await;
        if let Some(mut io) = guard.take() {
            let _ = io.stdin.write_all(b"stop\n").await;
            let _ = io.stdin.flush().await;
            drop(io.stdin);
            if tokio::time::timeout(Duration::from_secs(10), io.child.wait())
                .await
                .is_err()
            {
                let _ = io.child.kill().await;
            }
        }
    }
}

fn push_line(log: &Mutex<VecDeque<String>>, line: String) {
    super::external::push_bounded(log, line, KEPT_LOG_LINES);
}

async fn run_command(
    io: &tokio::sync::Mutex<Option<Io>>,
    verb: &str,
    arg: Option<serde_json::Value>,
) -> Result<String> {
    let mut guard = io.lock().await;
    let io = guard.as_mut().context("kubelet-dm is not running")?;
    let line = match arg {
        Some(a) => format!("{verb} {a}\n"),
        None => format!("{verb}\n"),
    };
    io.stdin
        .write_all(line.as_bytes())
        .await
        .context("writing a command")?;
    io.stdin.flush().await.context("writing a command")?;
    io.stdout
        .next_line()
        .await
        .context("reading a reply")?
        .context("kubelet-dm exited")
}

fn to_node_status(s: StatusReply) -> NodeStatus {
    NodeStatus {
        resources: s
            .resources
            .into_iter()
            .map(|(name, r)| {
                (
                    name,
                    ResourceStatus {
                        capacity: r.capacity,
                        allocatable: r.allocatable,
                        allocated: r.allocated.len(),
                    },
                )
            })
            .collect(),
    }
}
