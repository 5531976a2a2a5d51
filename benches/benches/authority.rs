//! The `:authority` layer's cost on a real round trip.
//!
//! One tokio runtime serves the same minimal DevicePlugin twice, each on its own unix socket in
//! one temp dir:
//! - `plain_tonic`: the socket from `hostdev_api::unix::bind_raw`, tonic exactly as it comes.
//! - `through_layer`: the socket from `hostdev_api::unix::bind`, every accepted connection
//!   wrapped in `AuthorityFix` (each client header block HPACK-decoded, `:authority` checked,
//!   re-encoded and re-framed; all other frames copied through; server writes watched for
//!   SETTINGS).
//!
//! Each side has one tonic client with an open channel (from `hostdev_api::unix::connect`, whose
//! `:authority` is valid and so kept: the layer does all its work but changes nothing) and times
//! one unary Allocate of one device (answer: one env var and one device spec), request sent to
//! answer decoded.
//!
//! Two measurements, in the same run:
//! - the criterion group `authority_allocate`, one function per side;
//! - `interleaved` (printed): rounds of one call on each side, alternating which goes first,
//!   with the median of each side and their ratio. Alternating call by call exposes both sides
//!   to the same machine load, which the sequential criterion functions cannot. Aim: ratio
//!   under 1.1.

use std::path::Path;
use std::pin::Pin;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use hostdev_api::v1beta1::device_plugin_client::DevicePluginClient;
use hostdev_api::v1beta1::device_plugin_server::{DevicePlugin, DevicePluginServer};
use hostdev_api::v1beta1::{
    AllocateRequest, AllocateResponse, ContainerAllocateRequest, ContainerAllocateResponse,
    DevicePluginOptions, DeviceSpec, Empty, ListAndWatchResponse, PreStartContainerRequest,
    PreStartContainerResponse, PreferredAllocationRequest, PreferredAllocationResponse,
};
use tokio::runtime::Runtime;
use tonic::codegen::tokio_stream::{self, Stream};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

const INTERLEAVED_ROUNDS: usize = 4_000;

#[derive(Clone)]
struct Plugin;

type DeviceStream = Pin<Box<dyn Stream<Item = Result<ListAndWatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl DevicePlugin for Plugin {
    async fn get_device_plugin_options(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<DevicePluginOptions>, Status> {
        Ok(Response::new(DevicePluginOptions::default()))
    }

    type ListAndWatchStream = DeviceStream;

    async fn list_and_watch(&self, _: Request<Empty>) -> Result<Response<DeviceStream>, Status> {
        Ok(Response::new(Box::pin(tokio_stream::pending())))
    }

    async fn get_preferred_allocation(
        &self,
        _: Request<PreferredAllocationRequest>,
    ) -> Result<Response<PreferredAllocationResponse>, Status> {
        Ok(Response::new(PreferredAllocationResponse::default()))
    }

    async fn allocate(
        &self,
        request: Request<AllocateRequest>,
    ) -> Result<Response<AllocateResponse>, Status> {
        let container_responses = request
            .into_inner()
            .container_requests
            .into_iter()
            .map(|c| {
                let mut r = ContainerAllocateResponse::default();
                r.envs
                    .insert("BENCH_DEVICES".into(), c.devices_ids.join(","));
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

async fn serve_both(dir: &Path) -> (DevicePluginClient<Channel>, DevicePluginClient<Channel>) {
    let plain_socket = dir.join("plain.sock");
    let layer_socket = dir.join("layer.sock");
    let plain = hostdev_api::unix::bind_raw(&plain_socket, 0o600).expect("bind plain");
    let layered = hostdev_api::unix::bind(&layer_socket, 0o600).expect("bind layered");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(DevicePluginServer::new(Plugin))
            .serve_with_incoming(plain),
    );
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(DevicePluginServer::new(Plugin))
            .serve_with_incoming(layered),
    );
    let dial = |p: std::path::PathBuf| async move {
        DevicePluginClient::new(hostdev_api::unix::connect(p).await.expect("dial"))
    };
    (dial(plain_socket).await, dial(layer_socket).await)
}

async fn allocate_once(client: &mut DevicePluginClient<Channel>) -> Duration {
    let req = AllocateRequest {
        container_requests: vec![ContainerAllocateRequest {
            devices_ids: vec!["usb-1-2".into()],
        }],
    };
    let start = Instant::now();
    let resp = client.allocate(req).await.expect("allocate").into_inner();
    let elapsed = start.elapsed();
    assert_eq!(resp.container_responses.len(), 1);
    elapsed
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn interleaved(
    rt: &Runtime,
    plain: &mut DevicePluginClient<Channel>,
    layer: &mut DevicePluginClient<Channel>,
) {
    let (p, l) = rt.block_on(async {
        let (mut p, mut l) = (Vec::new(), Vec::new());
        for round in 0..INTERLEAVED_ROUNDS {
            if round % 2 == 0 {
                p.push(allocate_once(plain).await);
                l.push(allocate_once(layer).await);
            } else {
                l.push(allocate_once(layer).await);
                p.push(allocate_once(plain).await);
            }
        }
        (p, l)
    });
    let (p, l) = (median(p), median(l));
    println!(
        "authority_allocate/interleaved: {INTERLEAVED_ROUNDS} rounds; median plain_tonic {:.1} us, \
         through_layer {:.1} us, ratio {:.3} (aim < 1.1)",
        p.as_secs_f64() * 1e6,
        l.as_secs_f64() * 1e6,
        l.as_secs_f64() / p.as_secs_f64()
    );
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut plain, mut layer) = rt.block_on(serve_both(dir.path()));
    // Warm both connections (HPACK tables, buffers) before anything is timed.
    rt.block_on(async {
        for _ in 0..200 {
            allocate_once(&mut plain).await;
            allocate_once(&mut layer).await;
        }
    });
    interleaved(&rt, &mut plain, &mut layer);
    let mut group = c.benchmark_group("authority_allocate");
    for (name, client) in [("plain_tonic", &mut plain), ("through_layer", &mut layer)] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += allocate_once(client).await;
                    }
                    total
                })
            })
        });
    }
    group.finish();
    interleaved(&rt, &mut plain, &mut layer);
}

criterion_group!(authority_benches, benches);
criterion_main!(authority_benches);
