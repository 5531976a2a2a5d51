//! The plugin logic ([`PluginCore`]), the thin tonic adapter over it, and the life of one
//! running plugin ([`PluginHandle`]): serve on a fresh socket, then register; when the kubelet
//! restarts (its socket re-created, or ours removed), tear that generation down and do it again.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::Stream;
use hostdev_api::v1beta1::device_plugin_server::{DevicePlugin, DevicePluginServer};
use hostdev_api::v1beta1::{
    AllocateRequest, AllocateResponse, ContainerPreferredAllocationResponse, Device,
    DevicePluginOptions, Empty, ListAndWatchResponse, NumaNode, PreStartContainerRequest,
    PreStartContainerResponse, PreferredAllocationRequest, PreferredAllocationResponse,
    TopologyInfo,
};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::allocate::{AllocateError, allocate_container, verify_present};
use super::preferred::{PinnedAddresses, preferred_devices};
use super::{DevRoot, SharedResource};
use crate::inventory::Resource;
use crate::metrics::Metrics;
use crate::registration::{PLUGIN_OPTIONS, register_with_backoff};

/// Plugin sockets are for root on the node only.
pub const SOCKET_MODE: u32 = 0o600;
/// How long a stopping generation may take to drain its connections before it is aborted.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before re-binding after a failed bind, so a full disk does not spin the CPU.
const REBIND_BACKOFF: Duration = Duration::from_millis(500);

/// Why a plugin request was refused.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error(transparent)]
    Devices(#[from] AllocateError),
    #[error("resource {resource}: allocation size {size} is negative")]
    NegativeSize { resource: String, size: i32 },
    #[error("resource {resource}: serving on {socket}: {source}")]
    Bind {
        resource: String,
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<PluginError> for Status {
    fn from(error: PluginError) -> Self {
        let message = error.to_string();
        match error {
            PluginError::Devices(AllocateError::UnknownDevice { .. }) => Status::not_found(message),
            PluginError::Devices(AllocateError::Unhealthy { .. })
            | PluginError::Devices(AllocateError::NodeMissing { .. }) => {
                Status::failed_precondition(message)
            }
            PluginError::Devices(AllocateError::UnsafeDevname { .. })
            | PluginError::Devices(AllocateError::KindMismatch { .. })
            | PluginError::Bind { .. } => Status::internal(message),
            PluginError::Devices(_) | PluginError::NegativeSize { .. } => {
                Status::invalid_argument(message)
            }
        }
    }
}

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

/// The logic of one plugin, free of gRPC plumbing: every method is a plain function of the
/// current device state.
#[derive(Clone, Debug)]
pub struct PluginCore {
    state: watch::Receiver<SharedResource>,
    pins: watch::Receiver<PinnedAddresses>,
    dev_root: DevRoot,
    metrics: Arc<Metrics>,
}

impl PluginCore {
    pub fn new(
        state: watch::Receiver<SharedResource>,
        pins: watch::Receiver<PinnedAddresses>,
        dev_root: DevRoot,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            state,
            pins,
            dev_root,
            metrics,
        }
    }

    fn current(&self) -> SharedResource {
        self.state.borrow().clone()
    }

    /// The full device list first, again on every change; when `stop` fires, an empty list
    /// (the kubelet then marks the devices unhealthy at once) and the end of the stream.
    pub fn list_and_watch(
        &self,
        stop: CancellationToken,
    ) -> impl Stream<Item = ListAndWatchResponse> + Send + 'static {
        let mut state = self.state.clone();
        state.mark_changed();
        futures::stream::unfold(Some((state, stop)), |step| async move {
            let (mut state, stop) = step?;
            tokio::select! {
                biased;
                _ = stop.cancelled() => Some((ListAndWatchResponse::default(), None)),
                changed = state.changed() => match changed {
                    Ok(()) => {
                        let response = to_list_response(&state.borrow_and_update());
                        Some((response, Some((state, stop))))
                    }
                    // The manager dropped the state: the plugin is gone.
                    Err(_) => Some((ListAndWatchResponse::default(), None)),
                },
            }
        })
    }

    pub fn allocate(&self, request: AllocateRequest) -> Result<AllocateResponse, PluginError> {
        let resource = self.current();
        let result = request
            .container_requests
            .iter()
            .map(|container| allocate_container(&resource, &container.devices_ids, &self.dev_root))
            .collect::<Result<Vec<_>, _>>();
        match result {
            Ok(container_responses) => {
                self.metrics.allocation(&resource.name);
                Ok(AllocateResponse {
                    container_responses,
                })
            }
            Err(error) => {
                self.metrics.allocation_error(&resource.name);
                Err(error.into())
            }
        }
    }

    pub fn preferred_allocation(
        &self,
        request: PreferredAllocationRequest,
    ) -> Result<PreferredAllocationResponse, PluginError> {
        let resource = self.current();
        let pins = self.pins.borrow().clone();
        let mut container_responses = Vec::with_capacity(request.container_requests.len());
        for container in request.container_requests {
            let size = usize::try_from(container.allocation_size).map_err(|_| {
                PluginError::NegativeSize {
                    resource: resource.name.clone(),
                    size: container.allocation_size,
                }
            })?;
            let device_i_ds = preferred_devices(
                &resource,
                &container.available_device_i_ds,
                &container.must_include_device_i_ds,
                size,
                &pins,
            );
            container_responses.push(ContainerPreferredAllocationResponse { device_i_ds });
        }
        Ok(PreferredAllocationResponse {
            container_responses,
        })
    }

    pub fn pre_start_container(
        &self,
        request: PreStartContainerRequest,
    ) -> Result<(), PluginError> {
        let resource = self.current();
        verify_present(&resource, &request.devices_ids, &self.dev_root).map_err(|error| {
            self.metrics.allocation_error(&resource.name);
            error.into()
        })
    }
}

/// The kubelet's view of a resource's devices.
pub fn to_list_response(resource: &Resource) -> ListAndWatchResponse {
    let devices = resource
        .devices
        .iter()
        .map(|device| Device {
            id: device.id.clone(),
            health: if device.healthy {
                hostdev_api::HEALTHY
            } else {
                hostdev_api::UNHEALTHY
            }
            .to_string(),
            topology: (!device.numa_nodes.is_empty()).then(|| TopologyInfo {
                nodes: device
                    .numa_nodes
                    .iter()
                    .map(|&id| NumaNode { id })
                    .collect(),
            }),
        })
        .collect();
    ListAndWatchResponse { devices }
}

/// The tonic adapter: turns requests into [`PluginCore`] calls and errors into statuses.
struct DevicePluginService {
    core: PluginCore,
    /// Ends this socket generation's ListAndWatch streams.
    stop: CancellationToken,
}

type ListStream = Pin<Box<dyn Stream<Item = Result<ListAndWatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl DevicePlugin for DevicePluginService {
    async fn get_device_plugin_options(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<DevicePluginOptions>, Status> {
        Ok(Response::new(PLUGIN_OPTIONS))
    }

    type ListAndWatchStream = ListStream;

    async fn list_and_watch(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListAndWatchStream>, Status> {
        use futures::StreamExt;
        let stream = self.core.list_and_watch(self.stop.clone()).map(Ok);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_preferred_allocation(
        &self,
        request: Request<PreferredAllocationRequest>,
    ) -> Result<Response<PreferredAllocationResponse>, Status> {
        Ok(Response::new(
            self.core.preferred_allocation(request.into_inner())?,
        ))
    }

    async fn allocate(
        &self,
        request: Request<AllocateRequest>,
    ) -> Result<Response<AllocateResponse>, Status> {
        let resource = self.core.current().name.clone();
        match self.core.allocate(request.into_inner()) {
            Ok(response) => Ok(Response::new(response)),
            Err(error) => {
                tracing::warn!(%resource, %error, "Allocate refused");
                Err(error.into())
            }
        }
    }

    async fn pre_start_container(
        &self,
        request: Request<PreStartContainerRequest>,
    ) -> Result<Response<PreStartContainerResponse>, Status> {
        self.core.pre_start_container(request.into_inner())?;
        Ok(Response::new(PreStartContainerResponse {}))
    }
}

/// `kubevirt-nvidia.com-T4-1764450000123456789.sock`: KubeVirt's prefix, the resource name
/// with `/` (and anything else unsafe in a file name) as `-`, and a strictly increasing
/// timestamp so that every generation of every plugin has its own socket.
pub fn unique_socket_name(resource: &str) -> String {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let stamp = LAST
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
            Some(now.max(last + 1))
        })
        .map(|last| now.max(last + 1))
        .unwrap_or(now);
    let mut name: String = resource
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    // Unix socket paths are limited to 107 bytes; keep the name well inside that.
    name.truncate(48);
    format!("kubevirt-{name}-{stamp}.sock")
}

/// Whether `name` is a socket name [`unique_socket_name`] makes: `kubevirt-...-<stamp>.sock` with
/// a nanosecond stamp. KubeVirt's own sockets (`kubevirt-<name>.sock`) never match.
pub fn is_generated_socket_name(name: &str) -> bool {
    let Some(stem) = name
        .strip_prefix("kubevirt-")
        .and_then(|n| n.strip_suffix(".sock"))
    else {
        return false;
    };
    stem.rsplit_once('-')
        .is_some_and(|(_, stamp)| stamp.len() >= 16 && stamp.bytes().all(|b| b.is_ascii_digit()))
}

/// Removes sockets an earlier agent left behind (killed before it could clean up): names this
/// agent generates, on which nobody listens any more. Returns the removed paths.
pub fn remove_stale_sockets(plugin_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(plugin_dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !is_generated_socket_name(name) {
            continue;
        }
        let path = entry.path();
        let refused = matches!(
            std::os::unix::net::UnixStream::connect(&path),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
        );
        if refused && std::fs::remove_file(&path).is_ok() {
            tracing::info!(socket = %path.display(), "removed a stale socket of an earlier run");
            removed.push(path);
        }
    }
    removed
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
        let service = DevicePluginService {
            core: self.core.clone(),
            stop: generation_stop.clone(),
        };
        let shutdown = generation_stop.clone().cancelled_owned();
        let mut server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(DevicePluginServer::new(service))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_socket_names_are_recognised() {
        assert!(is_generated_socket_name(&unique_socket_name(
            "nvidia.com/T4"
        )));
        assert!(
            !is_generated_socket_name("kubevirt-nvidia.com-T4.sock"),
            "KubeVirt's own"
        );
        assert!(!is_generated_socket_name("kubelet.sock"));
        assert!(!is_generated_socket_name("kubevirt-usb-1.sock"));
    }

    #[test]
    fn socket_names_are_unique_and_safe() {
        let a = unique_socket_name("nvidia.com/GRID T4-1Q");
        let b = unique_socket_name("nvidia.com/GRID T4-1Q");
        assert_ne!(a, b);
        assert!(a.starts_with("kubevirt-nvidia.com-GRID-T4-1Q-"), "{a}");
        assert!(a.ends_with(".sock"));
        assert!(!a.contains('/'));
    }
}
