//! A small device plugin for the differential test: a real tonic DevicePlugin server on a unix
//! socket whose device list the test steers. The same plugin (same devices, same answers) is
//! served to each kubelet, so any difference in what comes back is the kubelet's.
//! (The minimum of fake-kubelet/tests/support: harness cannot use another crate's tests/.)
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use hostdev_api::v1beta1::device_plugin_server::{DevicePlugin, DevicePluginServer};
use hostdev_api::v1beta1::registration_client::RegistrationClient;
use hostdev_api::v1beta1::{
    AllocateRequest, AllocateResponse, ContainerAllocateResponse,
    ContainerPreferredAllocationResponse, Device, DevicePluginOptions, DeviceSpec, Empty,
    ListAndWatchResponse, PreStartContainerRequest, PreStartContainerResponse,
    PreferredAllocationRequest, PreferredAllocationResponse, RegisterRequest,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

pub fn device(id: &str, healthy: bool) -> Device {
    Device {
        id: id.to_owned(),
        health: if healthy {
            hostdev_api::HEALTHY
        } else {
            hostdev_api::UNHEALTHY
        }
        .to_owned(),
        topology: None,
    }
}

pub fn healthy(ids: &[&str]) -> Vec<Device> {
    ids.iter().map(|id| device(id, true)).collect()
}

pub struct TestPlugin {
    pub resource: String,
    pub socket_name: String,
    pub socket: PathBuf,
    devices: watch::Sender<Vec<Device>>,
    /// Bumped to end every open ListAndWatch stream.
    end_streams: watch::Sender<u64>,
    shutdown: CancellationToken,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl TestPlugin {
    /// Serves a plugin for `resource` on `<dir>/<socket_name>` with `devices`.
    pub fn serve(dir: &Path, socket_name: &str, resource: &str, devices: Vec<Device>) -> Self {
        let mut p = Self {
            resource: resource.to_owned(),
            socket_name: socket_name.to_owned(),
            socket: dir.join(socket_name),
            devices: watch::channel(devices).0,
            end_streams: watch::channel(0).0,
            shutdown: CancellationToken::new(),
            server: None,
        };
        p.start_server();
        p
    }

    fn start_server(&mut self) {
        let incoming = hostdev_api::unix::bind(&self.socket, 0o600)
            .unwrap_or_else(|e| panic!("test plugin binds {}: {e}", self.socket.display()));
        let svc = PluginService {
            devices: self.devices.clone(),
            end_streams: self.end_streams.clone(),
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

    /// Registers with the default version and resource; `Err` is the kubelet's status message.
    pub async fn register(&self, kubelet_socket: &Path) -> Result<(), String> {
        self.register_with(kubelet_socket, hostdev_api::VERSION, &self.resource)
            .await
    }

    pub async fn register_with(
        &self,
        kubelet_socket: &Path,
        version: &str,
        resource: &str,
    ) -> Result<(), String> {
        let channel = hostdev_api::unix::connect(kubelet_socket)
            .await
            .map_err(|e| format!("connecting {}: {e}", kubelet_socket.display()))?;
        RegistrationClient::new(channel)
            .register(RegisterRequest {
                version: version.to_owned(),
                endpoint: self.socket_name.clone(),
                resource_name: resource.to_owned(),
                options: Some(DevicePluginOptions::default()),
            })
            .await
            .map(|_| ())
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
    }

    pub fn set_devices(&self, devices: Vec<Device>) {
        self.devices.send_replace(devices);
    }

    /// Ends every open ListAndWatch stream while the server keeps running.
    pub fn end_streams(&self) {
        self.end_streams.send_modify(|v| *v += 1);
    }

    /// Stops serving and removes the socket: the plugin has gone away.
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
    devices: watch::Sender<Vec<Device>>,
    end_streams: watch::Sender<u64>,
}

type DeviceStream = Pin<Box<dyn Stream<Item = Result<ListAndWatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl DevicePlugin for PluginService {
    async fn get_device_plugin_options(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<DevicePluginOptions>, Status> {
        Ok(Response::new(DevicePluginOptions::default()))
    }

    type ListAndWatchStream = DeviceStream;

    async fn list_and_watch(&self, _: Request<Empty>) -> Result<Response<DeviceStream>, Status> {
        let devices = self.devices.subscribe();
        let mut end = self.end_streams.subscribe();
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
        _: Request<PreferredAllocationRequest>,
    ) -> Result<Response<PreferredAllocationResponse>, Status> {
        Ok(Response::new(PreferredAllocationResponse {
            container_responses: vec![ContainerPreferredAllocationResponse::default()],
        }))
    }

    /// One env and one device node per ID; IDs sorted, since the kubelet sends them in Go set
    /// order and the answer must not depend on it.
    async fn allocate(
        &self,
        request: Request<AllocateRequest>,
    ) -> Result<Response<AllocateResponse>, Status> {
        let container_responses = request
            .into_inner()
            .container_requests
            .into_iter()
            .map(|c| {
                let mut ids = c.devices_ids;
                ids.sort();
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
                resp
            })
            .collect();
        Ok(Response::new(AllocateResponse {
            container_responses,
        }))
    }

    async fn pre_start_container(
        &self,
        _: Request<PreStartContainerRequest>,
    ) -> Result<Response<PreStartContainerResponse>, Status> {
        Ok(Response::new(PreStartContainerResponse {}))
    }
}
