//! Fake-kubelet benchmarks, each next to a baseline measured in the same run:
//! - `registration`: Register until the first ListAndWatch message is applied, against a fresh
//!   dial plus one unary call (GetDevicePluginOptions) on the same kind of unix socket.
//! - `allocation`: an allocation round trip (plan, Allocate RPC, checkpoint queued for the
//!   background writer), against a bare
//!   unary GetDevicePluginOptions on an open channel to the same plugin socket (the "echo"
//!   baseline: a plain unary call on the same socket type). Aim: within 1.5x.
//! - `scale` (run once, printed): 1,000 resources with 8 devices each registered to one fake
//!   kubelet; time for all, and RSS from /proc/self/status (aims: under 5 s, under 200 MB).
//!   RSS includes the 1,000 bench plugin servers living in the same process, so it is an upper
//!   bound for the kubelet alone.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use fake_kubelet::{AllocationRequest, Config, FakeKubelet, KubeletEvent};
use hostdev_api::v1beta1::device_plugin_client::DevicePluginClient;
use hostdev_api::v1beta1::device_plugin_server::{DevicePlugin, DevicePluginServer};
use hostdev_api::v1beta1::registration_client::RegistrationClient;
use hostdev_api::v1beta1::{
    AllocateRequest, AllocateResponse, ContainerAllocateResponse, Device, DevicePluginOptions,
    Empty, ListAndWatchResponse, PreStartContainerRequest, PreStartContainerResponse,
    PreferredAllocationRequest, PreferredAllocationResponse, RegisterRequest,
};
use tokio::runtime::Runtime;
use tonic::codegen::tokio_stream::{self, Stream, StreamExt as _};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// A minimal plugin: fixed devices, one ListAndWatch message then an open stream, plain answers.
#[derive(Clone)]
struct BenchPlugin {
    devices: Arc<Vec<Device>>,
}

type DeviceStream = Pin<Box<dyn Stream<Item = Result<ListAndWatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl DevicePlugin for BenchPlugin {
    async fn get_device_plugin_options(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<DevicePluginOptions>, Status> {
        Ok(Response::new(DevicePluginOptions::default()))
    }

    type ListAndWatchStream = DeviceStream;

    async fn list_and_watch(&self, _: Request<Empty>) -> Result<Response<DeviceStream>, Status> {
        let first = ListAndWatchResponse {
            devices: self.devices.as_ref().clone(),
        };
        let stream = tokio_stream::iter([Ok(first)]).chain(tokio_stream::pending());
        Ok(Response::new(Box::pin(stream)))
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
        let responses = request
            .into_inner()
            .container_requests
            .into_iter()
            .map(|c| {
                let mut r = ContainerAllocateResponse::default();
                r.envs
                    .insert("BENCH_DEVICES".into(), c.devices_ids.join(","));
                r
            })
            .collect();
        Ok(Response::new(AllocateResponse {
            container_responses: responses,
        }))
    }

    async fn pre_start_container(
        &self,
        _: Request<PreStartContainerRequest>,
    ) -> Result<Response<PreStartContainerResponse>, Status> {
        Ok(Response::new(PreStartContainerResponse {}))
    }
}

fn devices(n: usize) -> Arc<Vec<Device>> {
    Arc::new(
        (0..n)
            .map(|i| Device {
                id: format!("dev-{i}"),
                health: hostdev_api::HEALTHY.into(),
                topology: None,
            })
            .collect(),
    )
}

fn serve_plugin(dir: &std::path::Path, socket_name: &str, devices: Arc<Vec<Device>>) {
    let incoming =
        hostdev_api::unix::bind(dir.join(socket_name), 0o600).expect("bench plugin binds");
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(DevicePluginServer::new(BenchPlugin { devices }))
            .serve_with_incoming(incoming)
            .await;
    });
}

async fn registration_client(kubelet: &FakeKubelet) -> RegistrationClient<Channel> {
    RegistrationClient::new(
        hostdev_api::unix::connect(kubelet.socket_path())
            .await
            .expect("dial kubelet"),
    )
}

fn register_request(socket_name: &str, resource: &str) -> RegisterRequest {
    RegisterRequest {
        version: hostdev_api::VERSION.into(),
        endpoint: socket_name.into(),
        resource_name: resource.into(),
        options: None,
    }
}

fn bench_config(dir: &std::path::Path) -> Config {
    Config::new(dir).with_seed(1)
}

fn registration(c: &mut Criterion, rt: &Runtime) {
    let dir = tempfile::tempdir().expect("tempdir");
    let kubelet = rt.block_on(async {
        let k = FakeKubelet::start(bench_config(dir.path()))
            .await
            .expect("kubelet");
        serve_plugin(dir.path(), "reg.sock", devices(8));
        k
    });
    let mut registrar = rt.block_on(registration_client(&kubelet));
    let plugin_socket = dir.path().join("reg.sock");
    let mut group = c.benchmark_group("registration");
    group.bench_function("baseline_dial_and_unary", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let channel = hostdev_api::unix::connect(&plugin_socket)
                        .await
                        .expect("dial");
                    DevicePluginClient::new(channel)
                        .get_device_plugin_options(Empty {})
                        .await
                        .expect("unary");
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("register_to_first_list_and_watch", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let mut events = kubelet.subscribe();
                    let start = Instant::now();
                    registrar
                        .register(register_request("reg.sock", "bench.io/reg"))
                        .await
                        .expect("registered");
                    loop {
                        match events.recv().await {
                            Ok(KubeletEvent::DevicesChanged { healthy: 8, .. }) => break,
                            Ok(_) => {}
                            Err(e) => panic!("event stream: {e}"),
                        }
                    }
                    total += start.elapsed();
                }
                total
            })
        })
    });
    group.finish();
    rt.block_on(kubelet.stop());
}

fn allocation(c: &mut Criterion, rt: &Runtime) {
    let dir = tempfile::tempdir().expect("tempdir");
    let kubelet = rt.block_on(async {
        let k = FakeKubelet::start(bench_config(dir.path()))
            .await
            .expect("kubelet");
        serve_plugin(dir.path(), "alloc.sock", devices(8));
        let mut registrar = registration_client(&k).await;
        registrar
            .register(register_request("alloc.sock", "bench.io/alloc"))
            .await
            .expect("registered");
        k.wait_for(
            |s| s.node_status().allocatable("bench.io/alloc") == 8,
            Duration::from_secs(10),
        )
        .await
        .expect("devices");
        k
    });
    let mut echo = rt.block_on(async {
        DevicePluginClient::new(
            hostdev_api::unix::connect(dir.path().join("alloc.sock"))
                .await
                .expect("dial"),
        )
    });
    let mut group = c.benchmark_group("allocation");
    group.bench_function("baseline_unary_on_open_channel", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    echo.get_device_plugin_options(Empty {})
                        .await
                        .expect("unary");
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("allocate_1_device_round_trip", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for i in 0..iters {
                    let pod = format!("pod-{i}");
                    let start = Instant::now();
                    kubelet
                        .allocate(AllocationRequest::new(
                            pod.as_str(),
                            "c",
                            "bench.io/alloc",
                            1,
                        ))
                        .await
                        .expect("allocated");
                    total += start.elapsed();
                    kubelet.free_pod(&pod);
                }
                total
            })
        })
    });
    group.finish();
    rt.block_on(kubelet.stop());
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Registers `count` resources of 8 devices, one plugin socket each; returns the elapsed time.
async fn register_many(
    kubelet: &FakeKubelet,
    dir: &std::path::Path,
    count: usize,
    prefix: &str,
) -> Duration {
    let devs = devices(8);
    for i in 0..count {
        serve_plugin(dir, &format!("{prefix}-{i}.sock"), Arc::clone(&devs));
    }
    let registrar = registration_client(kubelet).await;
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let mut client = registrar.clone();
        let req = register_request(
            &format!("{prefix}-{i}.sock"),
            &format!("bench.io/{prefix}-{i}"),
        );
        tasks.spawn(async move { client.register(req).await.map(|_| ()) });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("task").expect("registered");
    }
    let wanted = count;
    let prefix_owned = format!("bench.io/{prefix}-");
    kubelet
        .wait_for(
            move |s| {
                s.resources()
                    .filter(|name| name.starts_with(&prefix_owned))
                    .filter(|name| s.resource_status(name).is_some_and(|r| r.allocatable == 8))
                    .count()
                    == wanted
            },
            Duration::from_secs(60),
        )
        .await
        .expect("all devices arrive");
    start.elapsed()
}

fn scale(rt: &Runtime) {
    let dir = tempfile::tempdir().expect("tempdir");
    rt.block_on(async {
        let kubelet = FakeKubelet::start(bench_config(dir.path())).await.expect("kubelet");
        let baseline = register_many(&kubelet, dir.path(), 1, "one").await;
        let rss_before = rss_kib();
        let all = register_many(&kubelet, dir.path(), 1000, "many").await;
        let rss_after = rss_kib();
        let checkpoint = std::fs::metadata(kubelet.checkpoint_path()).map(|m| m.len()).unwrap_or(0);
        println!(
            "scale/1000_resources_x_8_devices: registered all in {:.3} s (aim < 5 s); baseline one resource {:.3} ms \
             (x1000 = {:.3} s); VmRSS {} MiB before, {} MiB after, delta {} MiB (aim < 200 MB, includes 1000 plugin \
             servers); checkpoint {} KiB",
            all.as_secs_f64(),
            baseline.as_secs_f64() * 1e3,
            baseline.as_secs_f64() * 1000.0,
            rss_before / 1024,
            rss_after / 1024,
            rss_after.saturating_sub(rss_before) / 1024,
            checkpoint / 1024,
        );
        kubelet.stop().await;
    });
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    scale(&rt);
    registration(c, &rt);
    allocation(c, &rt);
}

criterion_group!(kubelet_benches, benches);
criterion_main!(kubelet_benches);
