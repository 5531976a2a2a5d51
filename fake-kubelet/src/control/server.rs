//! Serving: the kubelet, the control socket and the console, until SIGTERM, SIGINT or `stop`.
//!
//! Shutdown order: stop accepting, let in-flight commands answer (bounded), remove the control
//! socket, then [`FakeKubelet::stop`] (plugin streams end, `kubelet.sock` goes, the checkpoint
//! is flushed). A second signal during shutdown exits at once.

use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::console::{self, ConsoleLine};
use super::{
    Allocated, Command, CommandError, DeviceLine, Devices, Outcome, ResourceLine, Response, Status,
    control_socket_path,
};
use crate::config::Config;
use crate::error::KubeletError;
use crate::kubelet::FakeKubelet;
use crate::selection::AllocationRequest;

/// How long in-flight commands get to answer once shutdown starts (an Allocate to a hung
/// plugin is bounded by the RPC timeouts, which can be longer; it is then cut off).
const DRAIN: Duration = Duration::from_secs(5);

/// Why serving failed to start or ended badly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("installing the {signal} handler: {source}")]
    Signal {
        signal: &'static str,
        source: std::io::Error,
    },
    #[error(transparent)]
    Kubelet(#[from] KubeletError),
    #[error("binding control socket {}: {source}", path.display())]
    ControlSocket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} during shutdown; exited without cleaning up")]
    Interrupted(&'static str),
}

/// A running kubelet with its control socket; [`execute`](Self::execute) runs every command,
/// whichever front end it came from.
pub struct Controller {
    kubelet: FakeKubelet,
    control_path: PathBuf,
    /// Cancelled to stop serving (signal or `stop`).
    shutdown: CancellationToken,
    /// Ends the current accept loop when the control socket is bound again.
    accepting: Mutex<CancellationToken>,
    /// Accept loops, connections and the console: waited for (bounded) at shutdown.
    tasks: TaskTracker,
}

impl Controller {
    pub fn kubelet(&self) -> &FakeKubelet {
        &self.kubelet
    }

    /// `<dir>/fake-kubelet.ctl`.
    pub fn control_path(&self) -> &Path {
        &self.control_path
    }

    /// Runs one command. `stop` only requests the shutdown; the caller answers first.
    pub async fn execute(self: &Arc<Self>, command: Command) -> Result<Outcome, CommandError> {
        let k = &self.kubelet;
        Ok(match command {
            Command::Allocate {
                pod,
                container,
                resource,
                count,
                numa,
            } => {
                let mut req = AllocationRequest::new(pod, container, resource, count);
                if let Some(nodes) = numa {
                    req = req.with_numa_affinity(nodes);
                }
                Outcome::Allocated(Allocated::from(k.allocate(req).await?))
            }
            Command::Free { pod } => Outcome::Freed {
                freed: k.free_pod(&pod),
                pod,
            },
            Command::Status => Outcome::Status(k.with_state(|s| {
                Status {
                    running: s.is_running(),
                    resources: s
                        .node_status()
                        .resources
                        .into_iter()
                        .map(|(name, r)| {
                            let line = ResourceLine {
                                capacity: r.capacity,
                                allocatable: r.allocatable,
                                allocated: r.allocated,
                                registered: s.is_registered(&name),
                            };
                            (name, line)
                        })
                        .collect(),
                }
            })),
            Command::Devices { resource } => {
                let devices = k
                    .devices(&resource)
                    .ok_or_else(|| CommandError::UnknownResource(resource.clone()))?
                    .into_iter()
                    .map(|d| DeviceLine {
                        id: d.id,
                        health: d.health,
                        numa_nodes: d.numa_nodes,
                    })
                    .collect();
                Outcome::Devices(Devices { resource, devices })
            }
            Command::Restart => {
                let restarted = k.restart().await;
                // The kubelet's start deletes every socket in the directory, ours included.
                self.bind_control()
                    .map_err(|source| CommandError::ControlSocket {
                        path: self.control_path.clone(),
                        source,
                    })?;
                restarted?;
                Outcome::Done {}
            }
            Command::Stop => {
                self.shutdown.cancel();
                Outcome::Done {}
            }
        })
    }

    /// Binds the control socket (again) and starts accepting on it; the previous listener,
    /// whose path is gone after a restart, stops accepting. A no-op once shutdown started.
    fn bind_control(self: &Arc<Self>) -> std::io::Result<()> {
        if self.shutdown.is_cancelled() {
            return Ok(());
        }
        let listener = bind_private(&self.control_path)?;
        let token = self.shutdown.child_token();
        std::mem::replace(&mut *self.accepting.lock(), token.clone()).cancel();
        self.tasks
            .spawn(Arc::clone(self).accept_loop(listener, token));
        Ok(())
    }

    async fn accept_loop(self: Arc<Self>, listener: UnixListener, token: CancellationToken) {
        loop {
            let accepted = tokio::select! {
                _ = token.cancelled() => return,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((stream, _)) => {
                    self.tasks.spawn(Arc::clone(&self).connection(stream));
                }
                Err(e) => {
                    tracing::warn!("accepting on {}: {e}", self.control_path.display());
                    // Out of descriptors and the like: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Answers request lines until the client closes or shutdown starts. A command already
    /// read is always answered, so `stop` gets its reply.
    async fn connection(self: Arc<Self>, stream: UnixStream) {
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        loop {
            let line = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                l = lines.next_line() => l,
            };
            let line = match line {
                Ok(Some(l)) => l,
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!("control connection read: {e}");
                    return;
                }
            };
            let response = match serde_json::from_str::<Command>(&line) {
                Ok(command) => Response::from_result(self.execute(command).await),
                Err(e) => Response::BadRequest {
                    error: format!("bad request {line:?}: {e}"),
                },
            };
            let mut out = serde_json::to_string(&response).unwrap_or_else(|e| {
                format!(r#"{{"status":"failed","error":"serializing the answer: {e}"}}"#)
            });
            out.push('\n');
            if write.write_all(out.as_bytes()).await.is_err() {
                return;
            }
        }
    }

    /// Runs console lines from stdin until it ends or shutdown starts.
    async fn console(self: Arc<Self>, mut lines: tokio::sync::mpsc::Receiver<String>) {
        loop {
            let line = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                l = lines.recv() => l,
            };
            let Some(line) = line else {
                eprintln!(
                    "fake-kubelet: stdin ended; serving until SIGTERM, SIGINT or `fake-kubelet ctl --dir {} stop`",
                    self.kubelet.dir().display()
                );
                return;
            };
            let command = match console::parse(&line) {
                Ok(ConsoleLine::Empty) => continue,
                Ok(ConsoleLine::Help) => {
                    let mut help: Vec<String> = console::HELP.iter().map(|&s| s.into()).collect();
                    help.push("ok".into());
                    console::print(&help);
                    continue;
                }
                Ok(ConsoleLine::Run(c)) => c,
                Err(e) => {
                    console::print(&[format!("error {e}")]);
                    continue;
                }
            };
            match self.execute(command).await {
                Ok(outcome) => {
                    let mut out = outcome.text();
                    out.push("ok".into());
                    console::print(&out);
                }
                // One line, whatever the error text holds.
                Err(e) => console::print(&[format!("error {}", e.to_string().replace('\n', " "))]),
            }
        }
    }
}

/// Binds a unix listener at `path` with mode 0600 from the first moment: bound inside a fresh
/// 0700 directory, chmod-ed there, then renamed into place (replacing a stale socket), so no
/// one can connect while the mode is still the umask's.
fn bind_private(path: &Path) -> std::io::Result<UnixListener> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let staging = path.with_file_name(format!(".{name}.{}", std::process::id()));
    // Left over from a killed process with the same pid; ours alone.
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::DirBuilder::new().mode(0o700).create(&staging)?;
    let tmp = staging.join("socket");
    let bound = (|| {
        let l = std::os::unix::net::UnixListener::bind(&tmp)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&tmp, path)?;
        l.set_nonblocking(true)?;
        UnixListener::from_std(l)
    })();
    let _ = std::fs::remove_dir_all(&staging);
    bound
}

/// Serves a kubelet in `config.dir` with the control socket next to `kubelet.sock` and the
/// console on stdin, until SIGTERM, SIGINT or a `stop` command; then stops cleanly.
pub async fn serve(config: Config) -> Result<(), ServeError> {
    // Before anything is bound, so a signal sent once the sockets exist is always handled.
    let mut term = signal(SignalKind::terminate()).map_err(|source| ServeError::Signal {
        signal: "SIGTERM",
        source,
    })?;
    let mut int = signal(SignalKind::interrupt()).map_err(|source| ServeError::Signal {
        signal: "SIGINT",
        source,
    })?;
    let kubelet = FakeKubelet::start(config).await?;
    let shutdown = CancellationToken::new();
    let controller = Arc::new(Controller {
        control_path: control_socket_path(kubelet.dir()),
        kubelet,
        accepting: Mutex::new(shutdown.child_token()),
        shutdown,
        tasks: TaskTracker::new(),
    });
    if let Err(source) = controller.bind_control() {
        controller.kubelet.stop().await;
        return Err(ServeError::ControlSocket {
            path: controller.control_path.clone(),
            source,
        });
    }
    eprintln!(
        "fake-kubelet: serving {} (seed {}), control socket {}; type `help` for commands",
        controller.kubelet.socket_path().display(),
        controller.kubelet.config().seed,
        controller.control_path.display()
    );
    controller
        .tasks
        .spawn(Arc::clone(&controller).console(console::spawn_stdin_reader()));

    let reason = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
        _ = controller.shutdown.cancelled() => "stop command",
    };
    controller.shutdown.cancel();
    tracing::info!("stopping on {reason}");
    let stop = async {
        controller.tasks.close();
        if tokio::time::timeout(DRAIN, controller.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("commands still running after {DRAIN:?}; stopping anyway");
        }
        match std::fs::remove_file(&controller.control_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("removing {}: {e}", controller.control_path.display()),
        }
        controller.kubelet.stop().await;
    };
    tokio::select! {
        () = stop => {}
        _ = term.recv() => return Err(ServeError::Interrupted("SIGTERM")),
        _ = int.recv() => return Err(ServeError::Interrupted("SIGINT")),
    }
    eprintln!("fake-kubelet: stopped ({reason})");
    Ok(())
}
