//! [`FakeKubelet`]: start, stop, kill, restart, and the calls tests and the harness make.

use std::os::unix::fs::FileTypeExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hostdev_api::v1beta1::DevicePluginOptions;
use hostdev_api::v1beta1::registration_server::RegistrationServer;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::allocation::{self, ContainerRequest};
use crate::checkpoint;
use crate::config::Config;
use crate::core::{Core, Persist, Run};
use crate::error::{AllocateError, KubeletError, WaitTimeout};
use crate::events::KubeletEvent;
use crate::registration::{RegistrationService, spawn_grace_timer};
use crate::selection::AllocationRequest;
use crate::state::{ContainerAllocation, DeviceStatus, Endpoint, NodeStatus, Resource, State};

/// A kubelet device manager serving `Registration` on `<dir>/kubelet.sock`.
/// Dropping it stops serving without cleaning up (like [`FakeKubelet::kill`]).
pub struct FakeKubelet {
    core: Arc<Core>,
}

impl FakeKubelet {
    /// Creates the directory, removes stale sockets (keeping the checkpoint), restores the
    /// checkpoint and serves the registration socket. Returns once the socket accepts.
    pub async fn start(config: Config) -> Result<Self, KubeletError> {
        let core = Arc::new(Core::new(config));
        core.log(format!(
            "fake kubelet starting in {} with seed {}",
            core.dir().display(),
            core.config.seed
        ));
        start_run(&core)?;
        Ok(Self { core })
    }

    /// Stops serving: ends every plugin stream, removes `kubelet.sock`. State stays readable.
    pub async fn stop(&self) {
        let Some(run) = self.core.run.lock().take() else {
            return;
        };
        self.core.state.lock().running = false;
        run.token.cancel();
        let mut server = run.server;
        // Graceful shutdown lets in-flight Register calls see the cancellation; bounded so a
        // client that never closes its connection cannot hold up the stop.
        if tokio::time::timeout(Duration::from_secs(2), &mut server)
            .await
            .is_err()
        {
            server.abort();
        }
        match std::fs::remove_file(self.core.config.socket_path()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => self.core.log(format!(
                "error: removing {}: {e}",
                self.core.config.socket_path().display()
            )),
        }
        self.core.flush_checkpoint().await;
        self.core.log("fake kubelet stopped");
        let state = self.core.state.lock();
        self.core
            .commit(state, Persist::No, vec![KubeletEvent::Stopped]);
    }

    /// Dies like a crashed process: streams end, nothing is cleaned up, no checkpoint written.
    /// Returns once the registration listener is closed.
    pub async fn kill(&self) {
        if let Some(server) = kill_run(&self.core) {
            // Aborted; awaiting makes sure the listener is dropped. The result is the cancellation.
            let _ = server.await;
        }
        // Changes acknowledged before the crash are on disk, as with the kubelet's synchronous writes.
        self.core.flush_checkpoint().await;
        self.core.log("fake kubelet killed");
        let state = self.core.state.lock();
        self.core
            .commit(state, Persist::No, vec![KubeletEvent::Stopped]);
    }

    /// [`stop`](Self::stop), then start again from the checkpoint: plugin sockets are deleted,
    /// allocations stay, every resource has capacity 0 until its plugin re-registers.
    pub async fn restart(&self) -> Result<(), KubeletError> {
        self.stop().await;
        self.core.log("fake kubelet restarting");
        start_run(&self.core)
    }

    /// Starts again after [`kill`](Self::kill) or [`stop`](Self::stop), exactly like a restart.
    pub fn resume(&self) -> Result<(), KubeletError> {
        start_run(&self.core)
    }

    /// Waits until the checkpoint on disk reflects every change made so far. Read the file
    /// after this; the writes themselves happen in the background.
    pub async fn flush_checkpoint(&self) {
        self.core.flush_checkpoint().await;
    }

    pub fn config(&self) -> &Config {
        &self.core.config
    }

    pub fn dir(&self) -> &Path {
        self.core.dir()
    }

    /// `<dir>/kubelet.sock`.
    pub fn socket_path(&self) -> PathBuf {
        self.core.config.socket_path()
    }

    pub fn checkpoint_path(&self) -> PathBuf {
        self.core.config.checkpoint_path()
    }

    /// Events from now on. Subscribe before acting to not miss the event the action causes.
    pub fn subscribe(&self) -> broadcast::Receiver<KubeletEvent> {
        self.core.subscribe()
    }

    /// Waits until `cond` holds for the state, re-checking on every change (no polling).
    pub async fn wait_for(
        &self,
        mut cond: impl FnMut(&State) -> bool,
        timeout: Duration,
    ) -> Result<(), WaitTimeout> {
        let mut changes = self.core.watch_changes();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            changes.borrow_and_update();
            if cond(&self.core.state.lock()) {
                return Ok(());
            }
            let woke = tokio::time::timeout_at(deadline, changes.changed()).await;
            if !matches!(woke, Ok(Ok(()))) {
                return Err(WaitTimeout {
                    what: format!("state condition; node status {:?}", self.node_status()),
                    timeout,
                    last_log: self.recent_log(),
                });
            }
        }
    }

    /// Reads the state under its lock.
    pub fn with_state<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.core.state.lock())
    }

    pub fn node_status(&self) -> NodeStatus {
        self.core.state.lock().node_status()
    }

    pub fn devices(&self, resource: &str) -> Option<Vec<DeviceStatus>> {
        self.core.state.lock().devices(resource)
    }

    /// Options kept for `resource` (from GetDevicePluginOptions, not from RegisterRequest).
    pub fn options(&self, resource: &str) -> Option<DevicePluginOptions> {
        self.core.state.lock().endpoint(resource).map(|e| e.options)
    }

    pub fn pod_allocations(&self, pod_uid: &str) -> Vec<ContainerAllocation> {
        self.core.state.lock().pod_allocations(pod_uid)
    }

    /// The last log lines, oldest first (bounded by `Config::log_capacity`).
    pub fn recent_log(&self) -> Vec<String> {
        self.core.recent_log()
    }

    /// Allocates devices of one resource to a container (see [`crate::selection`]).
    pub async fn allocate(
        &self,
        req: AllocationRequest,
    ) -> Result<ContainerAllocation, AllocateError> {
        allocation::allocate(&self.core, req).await
    }

    /// Allocates several resources to one container, one Allocate per resource.
    pub async fn allocate_container(
        &self,
        req: ContainerRequest,
    ) -> Result<Vec<ContainerAllocation>, AllocateError> {
        allocation::allocate_container(&self.core, req).await
    }

    /// Allocates to a (non-restartable) init container: the pod's app containers admitted later
    /// reuse its devices, as the kubelet's `devicesToReuse` does (a sidecar keeps its own: admit
    /// it with [`allocate_container`](Self::allocate_container)).
    pub async fn allocate_init_container(
        &self,
        req: ContainerRequest,
    ) -> Result<Vec<ContainerAllocation>, AllocateError> {
        let key = (req.pod_uid.clone(), req.container.clone());
        self.core.state.lock().init_containers.insert(key.clone());
        let result = allocation::allocate_container(&self.core, req).await;
        if result.is_err() {
            self.core.state.lock().init_containers.remove(&key);
        }
        result
    }

    /// Frees every device held by the pod; returns how many (container, resource) entries went.
    pub fn free_pod(&self, pod_uid: &str) -> usize {
        let mut state = self.core.state.lock();
        let freed = state.free_pod(pod_uid);
        if freed == 0 {
            return 0;
        }
        self.core.commit(
            state,
            Persist::Yes,
            vec![KubeletEvent::Freed {
                pod_uid: pod_uid.to_owned(),
            }],
        );
        self.core
            .log(format!("freed {freed} device entries of pod {pod_uid}"));
        freed
    }
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        let _ = kill_run(&self.core);
    }
}

/// Cancels the current run and aborts its server; returns the server task to await.
fn kill_run(core: &Core) -> Option<tokio::task::JoinHandle<()>> {
    let run = core.run.lock().take()?;
    core.state.lock().running = false;
    run.token.cancel();
    run.server.abort();
    Some(run.server)
}

/// One start: clean the directory, restore the checkpoint, bind, serve.
fn start_run(core: &Arc<Core>) -> Result<(), KubeletError> {
    let mut run = core.run.lock();
    if run.is_some() {
        return Err(KubeletError::AlreadyRunning(core.dir().to_owned()));
    }
    let dir = core.dir();
    std::fs::create_dir_all(dir).map_err(|source| KubeletError::CreateDir {
        path: dir.to_owned(),
        source,
    })?;
    remove_sockets(dir)?;
    let token = CancellationToken::new();
    let restored = restore(core, &token);
    let incoming =
        hostdev_api::unix::bind(core.config.socket_path(), 0o600).map_err(KubeletError::Bind)?;
    let service = RegistrationService {
        core: Arc::clone(core),
        run: token.clone(),
    };
    let shutdown = token.clone().cancelled_owned();
    let log_core = Arc::clone(core);
    let server = tokio::spawn(async move {
        let served = tonic::transport::Server::builder()
            .add_service(RegistrationServer::new(service))
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await;
        if let Err(e) = served {
            log_core.log(format!(
                "error: registration server on {}: {e}",
                log_core.config.socket_path().display()
            ));
        }
    });
    for (resource, generation, endpoint_token) in restored {
        spawn_grace_timer(Arc::clone(core), resource, generation, endpoint_token);
    }
    *run = Some(Run { token, server });
    drop(run);
    let socket = core.config.socket_path();
    core.log(format!("serving registration on {}", socket.display()));
    let state = core.state.lock();
    core.commit(state, Persist::No, vec![KubeletEvent::Started { socket }]);
    Ok(())
}

/// Deletes every socket in `dir` (the checkpoint is a regular file and stays), as the kubelet's
/// plugin-directory cleanup does; plugins see their socket vanish and re-register.
fn remove_sockets(dir: &Path) -> Result<(), KubeletError> {
    let wrap = |source| KubeletError::CleanDir {
        path: dir.to_owned(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(wrap)? {
        let entry = entry.map_err(wrap)?;
        if entry.file_type().map_err(wrap)?.is_socket() {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(wrap(e)),
            }
        }
    }
    Ok(())
}

/// Replaces the state with the checkpoint's: allocations kept, each registered resource present
/// with no devices and a stopped endpoint whose grace period starts now. Returns the timers to arm.
fn restore(core: &Core, run: &CancellationToken) -> Vec<(String, u64, CancellationToken)> {
    let path = core.config.checkpoint_path();
    let data = match checkpoint::read(&path) {
        Ok(d) => d.unwrap_or_default(),
        Err(e) => {
            // The kubelet logs and continues with empty state; so do we.
            core.log(format!("error: {e}; continuing without it"));
            core.emit(KubeletEvent::Error {
                context: "reading checkpoint".into(),
                message: e.to_string(),
            });
            Default::default()
        }
    };
    let mut state = State {
        running: true,
        ..State::default()
    };
    for entry in data.pod_device_entries {
        match checkpoint::allocation_from(&path, entry) {
            Ok(a) => {
                state.pods.insert(
                    (a.pod_uid.clone(), a.container.clone(), a.resource.clone()),
                    a,
                );
            }
            Err(e) => core.log(format!("error: {e}")),
        }
    }
    let mut timers = vec![];
    for resource in data.registered_devices.into_keys() {
        let generation = core.next_generation();
        let token = run.child_token();
        state.resources.insert(
            resource.clone(),
            Resource {
                devices: Default::default(),
                endpoint: Endpoint {
                    generation,
                    socket: None,
                    options: DevicePluginOptions::default(),
                    client: None,
                    stopped_at: Some(std::time::Instant::now()),
                    cancel: token.clone(),
                },
            },
        );
        timers.push((resource, generation, token));
    }
    core.log(format!(
        "restored {} allocations and {} registered resources from {}",
        state.pods.len(),
        timers.len(),
        path.display()
    ));
    *core.state.lock() = state;
    timers
}
