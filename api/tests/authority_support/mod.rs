//! A real tonic server from hostdev-api (Registration and DevicePlugin) on a real unix socket,
//! with or without the `:authority` layer, recording the authority each request reached the
//! services with.
#![allow(dead_code)]

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use hostdev_api::v1beta1::device_plugin_server::{DevicePlugin, DevicePluginServer};
use hostdev_api::v1beta1::registration_server::{Registration, RegistrationServer};
use hostdev_api::v1beta1::{
    AllocateRequest, AllocateResponse, ContainerAllocateResponse, Device, DevicePluginOptions,
    DeviceSpec, Empty, ListAndWatchResponse, PreStartContainerRequest, PreStartContainerResponse,
    PreferredAllocationRequest, PreferredAllocationResponse, RegisterRequest,
};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// Number of ListAndWatch messages the test plugin sends before ending the stream.
pub const LIST_AND_WATCH_MESSAGES: usize = 3;

/// What a request looked like when it reached the services.
#[derive(Clone, Debug, PartialEq)]
pub struct Seen {
    pub path: String,
    pub authority: Option<String>,
    /// Length of the `x-big` metadata value, when sent (the large-header tests).
    pub big: Option<usize>,
}

#[derive(Clone, Default)]
pub struct Record {
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub registered: Arc<Mutex<Vec<RegisterRequest>>>,
}

impl Record {
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn authorities(&self) -> Vec<Option<String>> {
        self.seen().into_iter().map(|s| s.authority).collect()
    }
}

#[derive(Clone)]
struct Services {
    record: Record,
}

#[tonic::async_trait]
impl Registration for Services {
    async fn register(&self, req: Request<RegisterRequest>) -> Result<Response<Empty>, Status> {
        self.record
            .registered
            .lock()
            .unwrap()
            .push(req.into_inner());
        Ok(Response::new(Empty {}))
    }
}

type DeviceStream = Pin<Box<dyn Stream<Item = Result<ListAndWatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl DevicePlugin for Services {
    async fn get_device_plugin_options(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<DevicePluginOptions>, Status> {
        Ok(Response::new(DevicePluginOptions::default()))
    }

    type ListAndWatchStream = DeviceStream;

    async fn list_and_watch(&self, _: Request<Empty>) -> Result<Response<DeviceStream>, Status> {
        let messages = (1..=LIST_AND_WATCH_MESSAGES).map(|n| {
            Ok(ListAndWatchResponse {
                devices: (0..n)
                    .map(|i| Device {
                        id: format!("dev-{i}"),
                        health: hostdev_api::HEALTHY.into(),
                        topology: None,
                    })
                    .collect(),
            })
        });
        Ok(Response::new(Box::pin(tokio_stream::iter(
            messages.collect::<Vec<_>>(),
        ))))
    }

    async fn get_preferred_allocation(
        &self,
        _: Request<PreferredAllocationRequest>,
    ) -> Result<Response<PreferredAllocationResponse>, Status> {
        Ok(Response::new(PreferredAllocationResponse::default()))
    }

    /// Answers each container with `DEVICES=<ids>` and a device node per ID; echoes the
    /// `x-call` metadata, so a client can tell its answers apart.
    async fn allocate(
        &self,
        req: Request<AllocateRequest>,
    ) -> Result<Response<AllocateResponse>, Status> {
        let call = req
            .metadata()
            .get("x-call")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let container_responses = req
            .into_inner()
            .container_requests
            .into_iter()
            .map(|c| {
                let mut r = ContainerAllocateResponse::default();
                r.envs.insert("DEVICES".into(), c.devices_ids.join(","));
                r.envs.insert("CALL".into(), call.clone());
                r.devices = c
                    .devices_ids
                    .iter()
                    .map(|id| DeviceSpec {
                        container_path: format!("/dev/{id}"),
                        host_path: format!("/dev/{id}"),
                        permissions: "rw".into(),
                    })
                    .collect();
                r
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

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub record: Record,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

/// Serves both services on `<tempdir>/plugin.sock`, through the layer when `layered`.
pub async fn serve(layered: bool) -> TestServer {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("plugin.sock");
    let record = Record::default();
    let services = Services {
        record: record.clone(),
    };
    let seen = Arc::clone(&record.seen);
    let recorder =
        tower::ServiceBuilder::new().map_request(move |req: http::Request<tonic::body::Body>| {
            seen.lock().unwrap().push(Seen {
                path: req.uri().path().to_owned(),
                authority: req.uri().authority().map(|a| a.to_string()),
                big: req.headers().get("x-big").map(|v| v.len()),
            });
            req
        });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let router = tonic::transport::Server::builder()
        // Room for the large-metadata tests; hyper's default is 16 KiB.
        .http2_max_header_list_size(1 << 20)
        .layer(recorder)
        .add_service(RegistrationServer::new(services.clone()))
        .add_service(DevicePluginServer::new(services));
    let shutdown = async move {
        let _ = stopped.await;
    };
    let task = if layered {
        let incoming = hostdev_api::unix::bind(&socket, 0o600).expect("bind layered");
        tokio::spawn(async move {
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
                .expect("layered server");
        })
    } else {
        let incoming = hostdev_api::unix::bind_raw(&socket, 0o600).expect("bind raw");
        tokio::spawn(async move {
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
                .expect("raw server");
        })
    };
    TestServer {
        dir,
        socket,
        record,
        stop: Some(stop),
        task,
    }
}
