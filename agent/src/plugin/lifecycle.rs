//! The life of one running plugin ([`PluginHandle`]): serve on a fresh socket, then register;
//! when the kubelet restarts (its socket re-created, or ours removed), tear that generation
//! down and do it again. The device state outlives every generation.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::preferred::PinnedAddresses;
use super::server::{PluginCore, PluginError, service};
use super::socket::{SOCKET_MODE, unique_socket_name};
use super::{DevRoot, SharedResource};
use crate::inventory::Resource;
use crate::metrics::Metrics;
use crate::registration::register_with_backoff;

/// How long a stopping generation may take to drain its connections before it is aborted.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before re-binding after a failed bind, so a full disk does not spin the CPU.
const REBIND_BACKOFF: Duration = Duration::from_millis(500);

/// What every plugin of one agent shares.
#[derive(Clone, Debug)]
pub struct PluginSettings {
    /// The kubelet's device-plugin directory: holds kubelet.sock and the plugin sockets.
    pub plugin_dir: PathBuf,
    pub dev_root: DevRoot,
    pub metrics: Arc<Metrics>,
}

impl PluginSettings {
    pub fn kubelet_socket(&self) -> PathBuf {
        self.plugin_dir.join(hostdev_api::KUBELET_SOCKET)
    }
}

/// A running plugin: its device state, its current socket, and the task that keeps it served
/// and registered.
#[derive(Debug)]
pub struct PluginHandle {
    name: String,
    state: watch::Sender<SharedResource>,
    pins: watch::Sender<PinnedAddresses>,
    restart: Arc<Notify>,
    stop: CancellationToken,
    socket: watch::Receiver<Option<PathBuf>>,
    registrations: watch::Receiver<u64>,
    task: JoinHandle<()>,
}

impl PluginHandle {
    /// Starts serving `resource` and registering it; returns at once, the task carries on.
    pub fn start(resource: Resource, pins: PinnedAddresses, settings: PluginSettings) -> Self {
        let name = resource.name.clone();
        let (state, state_rx) = watch::channel(Arc::new(resource));
        let (pins, pins_rx) = watch::channel(pins);
        let (socket_tx, socket) = watch::channel(None);
        let (registrations_tx, registrations) = watch::channel(0);
        let restart = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let core = PluginCore::new(
            state_rx,
            pins_rx,
            settings.dev_root.clone(),
            settings.metrics.clone(),
        );
        let runner = Runner {
            name: name.clone(),
            core,
            settings,
            restart: restart.clone(),
            stop: stop.clone(),
            socket: socket_tx,
            registrations: registrations_tx,
        };
        let task = tokio::spawn(runner.run());
        Self {
            name,
            state,
            pins,
            restart,
            stop,
            socket,
            registrations,
            task,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Replaces the advertised devices; ListAndWatch streams see the change only when there is
    /// one. Returns whether anything changed.
    pub fn update(&self, resource: Resource) -> bool {
        self.state.send_if_modified(|current| {
            if **current == resource {
                false
            } else {
                *current = Arc::new(resource);
                true
            }
        })
    }

    pub fn set_pins(&self, pins: PinnedAddresses) {
        self.pins.send_if_modified(|current| {
            let changed = *current != pins;
            *current = pins;
            changed
        });
    }

    /// The devices currently advertised.
    pub fn resource(&self) -> SharedResource {
        self.state.borrow().clone()
    }

    /// The kubelet restarted (or our socket was removed): serve on a new socket and register again.
    pub fn kubelet_restarted(&self) {
        self.restart.notify_one();
    }

    /// The socket currently served, if any.
    pub fn socket_path(&self) -> Option<PathBuf> {
        self.socket.borrow().clone()
    }

    /// Whether `path` is this plugin's current socket.
    pub fn owns_socket(&self, path: &Path) -> bool {
        self.socket.borrow().as_deref() == Some(path)
    }

    /// Successful registrations so far; changes wake [`Self::registrations_watch`] receivers.
    pub fn registrations_watch(&self) -> watch::Receiver<u64> {
        self.registrations.clone()
    }

    /// Stops serving: ListAndWatch streams get an empty list, the socket is removed.
    pub async fn stop(self) {
        self.stop.cancel();
        if let Err(error) = self.task.await {
            tracing::error!(resource = %self.name, %error, "plugin task ended abnormally");
        }
    }
}

struct Runner {
    name: String,
    core: PluginCore,
    settings: PluginSettings,
    restart: Arc<Notify>,
    stop: CancellationToken,
    socket: watch::Sender<Option<PathBuf>>,
    registrations: watch::Sender<u64>,
}

enum GenerationEnd {
    Stop,
    Restart,
}

impl Runner {
    async fn run(self) {
        loop {
            match self.generation().await {
                GenerationEnd::Stop => break,
                GenerationEnd::Restart => {
                    tracing::info!(resource = %self.name, "re-serving on a new socket and registering again");
                }
            }
        }
    }

    /// One socket's life: bind, serve, register, wait for a restart or stop, clean up.
    async fn generation(&self) -> GenerationEnd {
        let socket_name = unique_socket_name(&self.name);
        let socket_path = self.settings.plugin_dir.join(&socket_name);
        let incoming = match hostdev_api::unix::bind(&socket_path, SOCKET_MODE) {
            Ok(incoming) => incoming,
            Err(source) => {
                let error = PluginError::Bind {
                    resource: self.name.clone(),
                    socket: socket_path,
                    source,
                };
                tracing::error!(%error, "cannot serve plugin");
                self.settings.metrics.error("serve");
                return tokio::select! {
                    _ = self.stop.cancelled() => GenerationEnd::Stop,
                    _ = self.restart.notified() => GenerationEnd::Restart,
                    _ = tokio::time::sleep(REBIND_BACKOFF) => GenerationEnd::Restart,
                };
            }
        };
        let generation_stop = self.stop.child_token();
        let shutdown = generation_stop.clone().cancelled_owned();
        let mut server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service(
                    self.core.clone(),
                    self.stop.clone(),
                    generation_stop.clone(),
                ))
                .serve_with_incoming_shutdown(incoming, shutdown),
        );
        self.socket.send_replace(Some(socket_path.clone()));
        tracing::info!(resource = %self.name, socket = %socket_path.display(), "serving");

        let kubelet_socket = self.settings.kubelet_socket();
        let resource = self.name.clone();
        let metrics = self.settings.metrics.clone();
        // A kubelet that is away makes every retry fail the same way: say it once (and again
        // when the reason changes), keep the rest at debug level.
        let mut last_reason = String::new();
        let register = register_with_backoff(
            &kubelet_socket,
            &socket_name,
            &resource,
            &generation_stop,
            move |error| {
                metrics.error("registration");
                let reason = error.to_string();
                if reason != last_reason {
                    tracing::warn!(%error, "registration failed; retrying with backoff");
                    last_reason = reason;
                } else {
                    tracing::debug!(%error, "registration failed again");
                }
            },
        );
        let mut registered = false;
        tokio::pin!(register);
        let end = loop {
            tokio::select! {
                _ = self.stop.cancelled() => break GenerationEnd::Stop,
                _ = self.restart.notified() => break GenerationEnd::Restart,
                served = &mut server => {
                    match served {
                        Ok(Ok(())) => tracing::warn!(resource = %self.name, "plugin server ended"),
                        Ok(Err(error)) => tracing::error!(resource = %self.name, %error, "plugin server failed"),
                        Err(error) => tracing::error!(resource = %self.name, %error, "plugin server task failed"),
                    }
                    self.settings.metrics.error("serve");
                    break GenerationEnd::Restart;
                }
                outcome = &mut register, if !registered => {
                    registered = true;
                    if outcome.is_ok() {
                        self.settings.metrics.registration(&self.name);
                        self.registrations.send_modify(|count| *count += 1);
                        tracing::info!(resource = %self.name, endpoint = %socket_name, "registered with the kubelet");
                    }
                }
            }
        };

        // Forget the socket before removing it, so its deletion is not mistaken for a restart.
        self.socket.send_replace(None);
        generation_stop.cancel();
        if !server.is_finished() {
            match tokio::time::timeout(DRAIN_TIMEOUT, &mut server).await {
                Ok(_) => {}
                Err(_) => {
                    tracing::warn!(resource = %self.name, "plugin server did not drain; aborting it");
                    server.abort();
                }
            }
        }
        match std::fs::remove_file(&socket_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(socket = %socket_path.display(), %error, "cannot remove plugin socket")
            }
        }
        end
    }
}
