//! A tiny device plugin for tests: a real tonic DevicePlugin server on a unix socket whose
//! devices and answers the test steers, and which records every call it gets.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use hostdev_api::v1beta1::device_plugin_server::{DevicePlugin, DevicePluginServer};
use hostdev_api::v1beta1::registration_client::RegistrationClient;
use hostdev_api::v1beta1::{
    AllocateRequest, AllocateResponse, ContainerAllocateResponse,
    ContainerPreferredAllocationRequest, ContainerPreferredAllocationResponse, Device,
    DevicePluginOptions, DeviceSpec, Empty, ListAndWatchResponse, NumaNode,
    PreStartContainerRequest, PreStartContainerResponse, PreferredAllocationRequest,
    PreferredAllocationResponse, RegisterRequest, TopologyInfo,
};
use parking_lot::Mutex;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// Generous deadline for conditions in tests; only reached when something is broken.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn device(id: &str, healthy: bool, numa: Option<i64>) -> Device {
    Device {
        id: id.to_owned(),
        health: if healthy {
            hostdev_api::HEALTHY
        } else {
            hostdev_api::UNHEALTHY
        }
        .to_owned(),
        topology: numa.map(|n| TopologyInfo {
            nodes: vec![NumaNode { id: n }],
        }),
    }
}

pub fn healthy(ids: &[&str]) -> Vec<Device> {
    ids.iter().map(|id| device(id, true, None)).collect()
}

/// How the plugin answers Allocate.
#[derive(Clone, Debug, Default)]
pub enum AllocateMode {
    /// One container response with env `TEST_DEVICES=<ids>` and a device node per ID.
    #[default]
    Normal,
    /// A response with no container responses.
    Empty,
    Fail(String),
    Hang,
}

#[derive(Clone, Debug, Default)]
pub struct Behaviour {
    pub options: DevicePluginOptions,
    pub options_hang: bool,
    pub options_fail: Option<String>,
    /// GetPreferredAllocation answer; None answers the first `allocation_size` available IDs.
    pub preferred: Option<Vec<String>>,
    /// When set, GetPreferredAllocation waits for this before answering.
    pub preferred_gate: Option<Arc<Notify>>,
    pub allocate: AllocateMode,
    pub prestart_fail: Option<String>,
    pub prestart_hang: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Call {
    Options,
    ListAndWatch,
    Preferred(ContainerPreferredAllocationRequest),
    Allocate(Vec<String>),
    PreStart(Vec<String>),
}

pub struct Control {
    devices: watch::Sender<Vec<Device>>,
    /// Bumped to end every open ListAndWatch stream.
    end_streams: watch::Sender<u64>,
    behaviour: Mutex<Behaviour>,
    calls: Mutex<Vec<Call>>,
    calls_changed: watch::Sender<u64>,
}

impl Control {
    fn record(&self, c: Call) {
        self.calls.lock().push(c);
        self.calls_changed.send_modify(|v| *v += 1);
    }
}

pub struct TestPlugin {
    pub resource: String,
    pub socket_name: String,
    pub socket: PathBuf,
    pub ctl: Arc<Control>,
    shutdown: CancellationToken,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl TestPlugin {
    /// Serves a plugin for `resource` on `<dir>/<socket_name>` with `devices`.
    pub async fn serve(
        dir: &Path,
        socket_name: &str,
        resource: &str,
        devices: Vec<Device>,
        behaviour: Behaviour,
    ) -> Self {
        let ctl = Arc::new(Control {
            devices: watch::channel(devices).0,
            end_streams: watch::channel(0).0,
            behaviour: Mutex::new(behaviour),
            calls: Mutex::new(vec![]),
            calls_changed: watch::channel(0).0,
        });
        let mut plugin = Self {
            resource: resource.to_owned(),
            socket_name: socket_name.to_owned(),
            socket: dir.join(socket_name),
            ctl,
            shutdown: CancellationToken::new(),
            server: None,
        };
        plugin.start_server();
        plugin
    }

    fn start_server(&mut self) {
        let incoming =
            hostdev_api::unix::bind(&self.socket, 0o600).expect("test plugin binds its socket");
        let svc = PluginService {
            ctl: Arc::clone(&self.ctl),
        };
        self.shutdown = CancellationToken::new();
        let shutdown = self.shutdown.clone().cancelled_owned();
        self.server = Some(tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(DevicePluginServer::new(svc))
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await;
        }));
    }

    /// Serves again on the same socket name (after a kubelet restart deleted it).
    pub async fn reserve(&mut self) {
        self.stop().await;
        self.start_server();
    }

    pub async fn register(&self, kubelet_socket: &Path) -> Result<(), Status> {
        self.register_with(
            kubelet_socket,
            hostdev_api::VERSION,
            &self.resource,
            DevicePluginOptions::default(),
        )
        .await
    }

    pub async fn register_with(
        &self,
        kubelet_socket: &Path,
        version: &str,
        resource: &str,
        options: DevicePluginOptions,
    ) -> Result<(), Status> {
        let channel = hostdev_api::unix::connect(kubelet_socket)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        RegistrationClient::new(channel)
            .register(RegisterRequest {
                version: version.to_owned(),
                endpoint: self.socket_name.clone(),
                resource_name: resource.to_owned(),
                options: Some(options),
            })
            .await
            .map(|_| ())
    }

    pub fn set_devices(&self, devices: Vec<Device>) {
        self.ctl.devices.send_replace(devices);
    }

    pub fn steer(&self, f: impl FnOnce(&mut Behaviour)) {
        f(&mut self.ctl.behaviour.lock());
    }

    /// Ends every open ListAndWatch stream while the server keeps running.
    pub fn end_streams(&self) {
        self.ctl.end_streams.send_modify(|v| *v += 1);
    }

    pub fn calls(&self) -> Vec<Call> {
        self.ctl.calls.lock().clone()
    }

    /// Waits (without polling) until the recorded calls satisfy `cond`.
    pub async fn wait_calls(&self, mut cond: impl FnMut(&[Call]) -> bool) {
        let mut rx = self.ctl.calls_changed.subscribe();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            rx.borrow_and_update();
            if cond(&self.ctl.calls.lock()) {
                return;
            }
            if !matches!(
                tokio::time::timeout_at(deadline, rx.changed()).await,
                Ok(Ok(()))
            ) {
                panic!("plugin calls never matched; calls: {:?}", self.calls());
            }
        }
    }

    /// Stops serving and removes the socket.
    pub async fn stop(&mut self) {
        self.end_streams();
        self.shutdown.cancel();
        if let Some(mut server) = self.server.take()
            && tokio::time::timeout(Duration::from_secs(2), &mut server)
                .await
                .is_err()
        {
            server.abort();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for TestPlugin {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(s) = self.server.take() {
            s.abort();
        }
    }
}

struct PluginService {
    ctl: Arc<Control>,
}

type DeviceStream = Pin<Box<dyn Stream<Item = Result<ListAndWatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl DevicePlugin for PluginService {
    async fn get_device_plugin_options(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<DevicePluginOptions>, Status> {
        self.ctl.record(Call::Options);
        let b = self.ctl.behaviour.lock().clone();
        if b.options_hang {
            std::future::pending::<()>().await;
        }
        if let Some(msg) = b.options_fail {
            return Err(Status::internal(msg));
        }
        Ok(Response::new(b.options))
    }

    type ListAndWatchStream = DeviceStream;

    async fn list_and_watch(&self, _: Request<Empty>) -> Result<Response<DeviceStream>, Status> {
        self.ctl.record(Call::ListAndWatch);
        let devices = self.ctl.devices.subscribe();
        let mut end = self.ctl.end_streams.subscribe();
        end.borrow_and_update();
        let stream = futures::stream::unfold(
            (devices, end, true),
            |(mut devices, mut end, first)| async move {
                if !first {
                    tokio::select! {
                        r = devices.changed() => r.ok()?,
                        _ = end.changed() => return None,
                    }
                }
                let list = devices.borrow_and_update().clone();
                Some((
                    Ok(ListAndWatchResponse { devices: list }),
                    (devices, end, false),
                ))
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_preferred_allocation(
        &self,
        request: Request<PreferredAllocationRequest>,
    ) -> Result<Response<PreferredAllocationResponse>, Status> {
        let req = request.into_inner();
        let first = req.container_requests.first().cloned().unwrap_or_default();
        self.ctl.record(Call::Preferred(first.clone()));
        let b = self.ctl.behaviour.lock().clone();
        if let Some(gate) = b.preferred_gate {
            gate.notified().await;
        }
        let ids = b.preferred.unwrap_or_else(|| {
            let n = usize::try_from(first.allocation_size).unwrap_or(0);
            first
                .available_device_i_ds
                .iter()
                .take(n)
                .cloned()
                .collect()
        });
        Ok(Response::new(PreferredAllocationResponse {
            container_responses: vec![ContainerPreferredAllocationResponse { device_i_ds: ids }],
        }))
    }

    async fn allocate(
        &self,
        request: Request<AllocateRequest>,
    ) -> Result<Response<AllocateResponse>, Status> {
        let ids: Vec<String> = request
            .into_inner()
            .container_requests
            .into_iter()
            .flat_map(|c| c.devices_ids)
            .collect();
        self.ctl.record(Call::Allocate(ids.clone()));
        let mode = self.ctl.behaviour.lock().allocate.clone();
        match mode {
            AllocateMode::Normal => {
                let mut resp = ContainerAllocateResponse::default();
                resp.envs.insert("TEST_DEVICES".into(), ids.join(","));
                resp.devices = ids
                    .iter()
                    .map(|id| DeviceSpec {
                        container_path: format!("/dev/test/{id}"),
                        host_path: format!("/dev/test/{id}"),
                        permissions: "rw".into(),
                    })
                    .collect();
                Ok(Response::new(AllocateResponse {
                    container_responses: vec![resp],
                }))
            }
            AllocateMode::Empty => Ok(Response::new(AllocateResponse::default())),
            AllocateMode::Fail(msg) => Err(Status::internal(msg)),
            AllocateMode::Hang => {
                std::future::pending::<()>().await;
                Err(Status::internal("unreachable"))
            }
        }
    }

    async fn pre_start_container(
        &self,
        request: Request<PreStartContainerRequest>,
    ) -> Result<Response<PreStartContainerResponse>, Status> {
        self.ctl
            .record(Call::PreStart(request.into_inner().devices_ids));
        let b = self.ctl.behaviour.lock().clone();
        if b.prestart_hang {
            std::future::pending::<()>().await;
        }
        if let Some(msg) = b.prestart_fail {
            return Err(Status::internal(msg));
        }
        Ok(Response::new(PreStartContainerResponse {}))
    }
}

/// A started fake kubelet in a fresh temp dir with short timeouts; the seed comes from
/// `FAKE_KUBELET_SEED` when set and is printed so a failure can be replayed.
pub async fn kubelet(grace: Duration) -> (tempfile::TempDir, fake_kubelet::FakeKubelet) {
    let dir = tempfile::tempdir().expect("tempdir");
    let kubelet = kubelet_in(dir.path(), grace).await;
    (dir, kubelet)
}

pub fn seed() -> u64 {
    let seed = std::env::var("FAKE_KUBELET_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261129);
    eprintln!("SEED={seed}");
    seed
}

pub async fn kubelet_in(dir: &Path, grace: Duration) -> fake_kubelet::FakeKubelet {
    let config = fake_kubelet::Config::new(dir)
        .with_seed(seed())
        .with_grace_period(grace)
        .with_rpc_timeouts(Duration::from_secs(5));
    fake_kubelet::FakeKubelet::start(config)
        .await
        .expect("fake kubelet starts")
}

/// Serves a plugin, registers it and waits until the kubelet has its first device list.
pub async fn registered(
    kubelet: &fake_kubelet::FakeKubelet,
    socket_name: &str,
    resource: &str,
    devices: Vec<Device>,
    behaviour: Behaviour,
) -> TestPlugin {
    let n = devices.len();
    let plugin = TestPlugin::serve(kubelet.dir(), socket_name, resource, devices, behaviour).await;
    plugin
        .register(&kubelet.socket_path())
        .await
        .expect("registration succeeds");
    let res = resource.to_owned();
    kubelet
        .wait_for(
            move |s| {
                s.is_registered(&res) && s.resource_status(&res).is_some_and(|r| r.capacity == n)
            },
            WAIT,
        )
        .await
        .expect("devices arrive");
    plugin
}

impl TestPlugin {
    /// IDs of the devices the plugin currently advertises.
    pub fn ctl_devices(&self) -> Vec<String> {
        self.ctl
            .devices
            .borrow()
            .iter()
            .map(|d| d.id.clone())
            .collect()
    }
}
