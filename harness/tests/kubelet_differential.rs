//! The fake kubelet against the kubelet's own device manager (`upstream/bin/kubelet-dm`,
//! Kubernetes v1.37.2), result by result: the same plugin, the same pods, the same calls on each,
//! and every answer compared field by field. Where the two differ on purpose, the test asserts
//! the documented difference (fake-kubelet/README.md, "Differences from the real kubelet").
//!
//! Needs upstream/bin/kubelet-dm (`bash upstream/build.sh`); without it every case fails.
//! The fake kubelet's seed comes from `HOSTDEV_DIFF_SEED` (default 20261129) and is printed.

mod support_plugin;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fake_kubelet::{ContainerRequest, FakeKubelet};
use hostdev_harness::sim::kubelet::UpstreamKubelet;
use serde_json::{Value, json};
use support_plugin::{TestPlugin, device, healthy};

const WAIT: Duration = Duration::from_secs(10);
const R: &str = "example.com/dev";

fn seed() -> u64 {
    let seed = std::env::var("HOSTDEV_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261129);
    eprintln!("fake kubelet seed: {seed} (replay: HOSTDEV_DIFF_SEED={seed})");
    seed
}

/// What the kubelet holds for one resource, in the terms both can report.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct ResView {
    capacity: usize,
    allocatable: usize,
    healthy: Vec<String>,
    unhealthy: Vec<String>,
    allocated: Vec<String>,
    stopped: bool,
}

/// What one admitted container got.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Got {
    devices: BTreeMap<String, Vec<String>>,
    envs: BTreeMap<String, String>,
    /// (container path, host path, permissions), sorted by container path.
    specs: Vec<(String, String, String)>,
}

enum Kubelet {
    Fake(FakeKubelet),
    Up(UpstreamKubelet),
}

struct Side {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    k: Kubelet,
}

/// Both kubelets, each in a directory of its own.
async fn both() -> (Side, Side) {
    let seed = seed();
    let fdir = tempfile::tempdir().expect("tempdir");
    let config = fake_kubelet::Config::new(fdir.path())
        .with_seed(seed)
        .with_rpc_timeouts(Duration::from_secs(5));
    let fake = FakeKubelet::start(config)
        .await
        .expect("fake kubelet starts");
    let udir = tempfile::tempdir().expect("tempdir");
    let up = UpstreamKubelet::start(udir.path(), Arc::new(|| {}))
        .await
        .expect("kubelet-dm starts (build it with `bash upstream/build.sh`)");
    (
        Side {
            dir: fdir.path().to_owned(),
            _dir: fdir,
            k: Kubelet::Fake(fake),
        },
        Side {
            dir: udir.path().to_owned(),
            _dir: udir,
            k: Kubelet::Up(up),
        },
    )
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

impl Side {
    fn socket(&self) -> PathBuf {
        self.dir.join("kubelet.sock")
    }

    fn plugin(&self, socket_name: &str, devices: Vec<hostdev_api::v1beta1::Device>) -> TestPlugin {
        TestPlugin::serve(&self.dir, socket_name, R, devices)
    }

    async fn status(&self) -> BTreeMap<String, ResView> {
        match &self.k {
            Kubelet::Fake(k) => k.with_state(|s| {
                s.resources()
                    .map(|name| {
                        let devices = s.devices(name).unwrap_or_default();
                        let (h, u): (Vec<_>, Vec<_>) = devices.iter().partition(|d| d.is_healthy());
                        let view = ResView {
                            capacity: devices.len(),
                            allocatable: h.len(),
                            healthy: h.iter().map(|d| d.id.clone()).collect(),
                            unhealthy: u.iter().map(|d| d.id.clone()).collect(),
                            allocated: s.allocated_ids(name).into_iter().collect(),
                            stopped: s.endpoint(name).is_some_and(|e| e.stopped),
                        };
                        (name.to_owned(), view)
                    })
                    .collect()
            }),
            Kubelet::Up(k) => {
                let reply = k.raw_command("status", None).await.expect("status");
                let mut out = BTreeMap::new();
                for (name, r) in reply["resources"].as_object().expect("resources") {
                    let n = |f: &str| r[f].as_u64().unwrap_or_default() as usize;
                    out.insert(
                        name.clone(),
                        ResView {
                            capacity: n("capacity"),
                            allocatable: n("allocatable"),
                            healthy: strings(&r["healthy"]),
                            unhealthy: strings(&r["unhealthy"]),
                            allocated: strings(&r["allocated"]),
                            stopped: r["stopped"].as_bool().unwrap_or_default(),
                        },
                    );
                }
                out
            }
        }
    }

    /// Waits until `R` has this capacity and allocatable count.
    async fn wait(&self, capacity: usize, allocatable: usize) {
        match &self.k {
            Kubelet::Fake(k) => k
                .wait_for(
                    |s| {
                        s.resource_status(R)
                            .is_some_and(|r| r.capacity == capacity && r.allocatable == allocatable)
                    },
                    WAIT,
                )
                .await
                .unwrap_or_else(|e| panic!("fake: {e}")),
            Kubelet::Up(k) => {
                let arg = json!({"resource": R, "capacity": capacity, "allocatable": allocatable,
                    "timeout_ms": WAIT.as_millis() as u64});
                k.raw_command("wait", Some(arg))
                    .await
                    .unwrap_or_else(|e| panic!("upstream: {e}"));
            }
        }
    }

    async fn allocate(
        &self,
        pod: &str,
        container: &str,
        resources: &[(&str, usize)],
        init: bool,
    ) -> Result<Got, String> {
        let resources: BTreeMap<String, usize> = resources
            .iter()
            .map(|(r, n)| ((*r).to_owned(), *n))
            .collect();
        match &self.k {
            Kubelet::Fake(k) => {
                let req = ContainerRequest {
                    pod_uid: pod.into(),
                    container: container.into(),
                    resources,
                    numa_affinity: None,
                };
                let allocs = if init {
                    k.allocate_init_container(req).await
                } else {
                    k.allocate_container(req).await
                }
                .map_err(|e| e.to_string())?;
                let mut got = Got::default();
                for a in allocs {
                    if !a.device_ids.is_empty() {
                        got.devices.insert(a.resource.clone(), a.device_ids.clone());
                    }
                    for (name, value) in &a.response.envs {
                        got.envs
                            .entry(name.clone())
                            .or_insert_with(|| value.clone());
                    }
                    got.specs.extend(a.response.devices.iter().map(|d| {
                        (
                            d.container_path.clone(),
                            d.host_path.clone(),
                            d.permissions.clone(),
                        )
                    }));
                }
                got.specs.sort();
                Ok(got)
            }
            Kubelet::Up(k) => {
                let arg = json!({"pod": pod, "container": container, "resources": resources, "init": init});
                let r = k.raw_command("allocate", Some(arg)).await?;
                let mut got = Got::default();
                for (res, ids) in r["devices"].as_object().expect("devices") {
                    let ids = strings(ids);
                    if !ids.is_empty() {
                        got.devices.insert(res.clone(), ids);
                    }
                }
                for (k, v) in r["envs"].as_object().expect("envs") {
                    got.envs
                        .insert(k.clone(), v.as_str().unwrap_or_default().into());
                }
                for d in r["device_specs"].as_array().expect("device_specs") {
                    let s = |f: &str| d[f].as_str().unwrap_or_default().to_owned();
                    got.specs
                        .push((s("container_path"), s("host_path"), s("permissions")));
                }
                got.specs.sort();
                Ok(got)
            }
        }
    }

    /// Frees the pod; true when it held devices.
    async fn free(&self, pod: &str) -> bool {
        match &self.k {
            Kubelet::Fake(k) => k.free_pod(pod) > 0,
            Kubelet::Up(k) => {
                let r = k
                    .raw_command("free", Some(json!({"pod": pod})))
                    .await
                    .expect("free");
                r["freed"].as_bool().unwrap_or_default()
            }
        }
    }

    async fn restart(&mut self) {
        match &mut self.k {
            Kubelet::Fake(k) => k.restart().await.expect("fake restart"),
            Kubelet::Up(k) => k.restart_process().await.expect("upstream restart"),
        }
    }

    async fn stop(&mut self) {
        match &mut self.k {
            Kubelet::Fake(k) => k.stop().await,
            Kubelet::Up(k) => k.shutdown().await,
        }
    }
}

/// Asserts both sides gave the same answer, naming the step.
#[track_caller]
fn same<T: PartialEq + std::fmt::Debug>(step: &str, fake: T, up: T) {
    assert_eq!(
        fake, up,
        "{step}: fake kubelet (left) vs kubelet-dm (right)"
    );
}

async fn same_status(step: &str, f: &Side, u: &Side) {
    same(step, f.status().await, u.status().await);
}

fn sockets_of(dir: &Path) -> PathBuf {
    dir.join("kubelet.sock")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_accepted_and_refused_with_the_same_text() {
    let (mut f, mut u) = both().await;
    let pf = f.plugin("p.sock", healthy(&["a"]));
    let pu = u.plugin("p.sock", healthy(&["a"]));
    for (version, resource) in [
        ("v1alpha", R),
        ("v1beta1", "gpu"),
        ("v1beta1", "kubernetes.io/gpu"),
        ("v1beta1", "example.com/-gpu"),
        ("v1beta1", "requests.example.com/gpu"),
    ] {
        let rf = pf.register_with(&f.socket(), version, resource).await;
        let ru = pu.register_with(&u.socket(), version, resource).await;
        assert!(ru.is_err(), "kubelet-dm accepted {version} {resource}");
        same(&format!("register {version} {resource}"), rf, ru);
    }
    same_status("after refusals", &f, &u).await;
    same(
        "good registration",
        pf.register(&f.socket()).await,
        pu.register(&u.socket()).await,
    );
    f.wait(1, 1).await;
    u.wait(1, 1).await;
    same_status("after registration", &f, &u).await;
    f.stop().await;
    u.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_follows_health_and_the_plugin_going_away() {
    let (mut f, mut u) = both().await;
    let mut pf = f.plugin("p.sock", healthy(&["a", "b", "c"]));
    let mut pu = u.plugin("p.sock", healthy(&["a", "b", "c"]));
    pf.register(&f.socket()).await.expect("fake registers");
    pu.register(&u.socket()).await.expect("upstream registers");
    f.wait(3, 3).await;
    u.wait(3, 3).await;
    same_status("registered", &f, &u).await;

    let sick = vec![device("a", true), device("b", false), device("c", true)];
    pf.set_devices(sick.clone());
    pu.set_devices(sick);
    f.wait(3, 2).await;
    u.wait(3, 2).await;
    same_status("b unhealthy", &f, &u).await;
    same(
        "allocate 3 with b unhealthy",
        f.allocate("p1", "c", &[(R, 3)], false).await,
        u.allocate("p1", "c", &[(R, 3)], false).await,
    );

    pf.stop().await;
    pu.stop().await;
    f.wait(3, 0).await;
    u.wait(3, 0).await;
    same_status("plugin gone", &f, &u).await;
    same(
        "allocate with the plugin gone",
        f.allocate("p2", "c", &[(R, 1)], false).await,
        u.allocate("p2", "c", &[(R, 1)], false).await,
    );
    f.stop().await;
    u.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocate_results_and_refusals_and_free() {
    let (mut f, mut u) = both().await;
    let pf = f.plugin("p.sock", healthy(&["a", "b"]));
    let pu = u.plugin("p.sock", healthy(&["a", "b"]));
    pf.register(&f.socket()).await.expect("fake registers");
    pu.register(&u.socket()).await.expect("upstream registers");
    f.wait(2, 2).await;
    u.wait(2, 2).await;

    let gf = f.allocate("p1", "c", &[(R, 2)], false).await;
    let gu = u.allocate("p1", "c", &[(R, 2)], false).await;
    assert!(gu.is_ok(), "kubelet-dm: {gu:?}");
    same("p1 takes both", gf, gu);
    same_status("after p1", &f, &u).await;
    same(
        "re-admitting p1 keeps its devices",
        f.allocate("p1", "c", &[(R, 2)], false).await,
        u.allocate("p1", "c", &[(R, 2)], false).await,
    );
    same(
        "over-allocation",
        f.allocate("p2", "c", &[(R, 1)], false).await,
        u.allocate("p2", "c", &[(R, 1)], false).await,
    );
    // Documented difference: kubelet-dm skips a resource nobody registered.
    assert_eq!(
        u.allocate("p3", "c", &[("example.com/none", 1)], false)
            .await,
        Ok(Got::default()),
        "kubelet-dm skips an unknown resource"
    );
    assert_eq!(
        f.allocate("p3", "c", &[("example.com/none", 1)], false)
            .await,
        Err("cannot allocate unregistered device example.com/none".to_owned()),
        "the fake kubelet refuses an unknown resource (fake-kubelet/README.md)"
    );
    same("free p1", f.free("p1").await, u.free("p1").await);
    same("free p1 again", f.free("p1").await, u.free("p1").await);
    same(
        "p4 after the free",
        f.allocate("p4", "c", &[(R, 2)], false).await,
        u.allocate("p4", "c", &[(R, 2)], false).await,
    );
    same_status("after p4", &f, &u).await;

    let sick = vec![device("a", false), device("b", true)];
    pf.set_devices(sick.clone());
    pu.set_devices(sick);
    f.wait(2, 1).await;
    u.wait(2, 1).await;
    same_status("a unhealthy", &f, &u).await;
    same(
        "p4 re-admitted with a unhealthy",
        f.allocate("p4", "c", &[(R, 2)], false).await,
        u.allocate("p4", "c", &[(R, 2)], false).await,
    );
    rejected(&f, &u, "p4").await;
    same(
        "p5 gets the one healthy device",
        f.allocate("p5", "c", &[(R, 1)], false).await,
        u.allocate("p5", "c", &[(R, 1)], false).await,
    );
    same_status("after p5", &f, &u).await;
    same(
        "p5 changes its request",
        f.allocate("p5", "c", &[(R, 2)], false).await,
        u.allocate("p5", "c", &[(R, 2)], false).await,
    );
    rejected(&f, &u, "p5").await;

    let sick = vec![device("a", false), device("b", false)];
    pf.set_devices(sick.clone());
    pu.set_devices(sick);
    f.wait(2, 0).await;
    u.wait(2, 0).await;
    same(
        "p6 with every device unhealthy",
        f.allocate("p6", "c", &[(R, 1)], false).await,
        u.allocate("p6", "c", &[(R, 1)], false).await,
    );
    f.stop().await;
    u.stop().await;
}

/// Documented difference: kubelet-dm rejects a pod whose admission failed (it is no longer
/// active, so there is nothing to free); the fake kubelet keeps what the pod held until it is
/// freed. Freeing it on the fake side puts both in the same state again.
async fn rejected(f: &Side, u: &Side, pod: &str) {
    assert!(!u.free(pod).await, "kubelet-dm rejected {pod} already");
    assert!(f.free(pod).await, "the fake kubelet kept what {pod} held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_allocations_until_the_plugin_is_back() {
    let (mut f, mut u) = both().await;
    let mut pf = f.plugin("p.sock", healthy(&["a", "b"]));
    let mut pu = u.plugin("p.sock", healthy(&["a", "b"]));
    pf.register(&f.socket()).await.expect("fake registers");
    pu.register(&u.socket()).await.expect("upstream registers");
    f.wait(2, 2).await;
    u.wait(2, 2).await;
    same(
        "p1 takes both",
        f.allocate("p1", "c", &[(R, 2)], false).await,
        u.allocate("p1", "c", &[(R, 2)], false).await,
    );
    if let Kubelet::Fake(k) = &f.k {
        k.flush_checkpoint().await;
    }

    f.restart().await;
    u.restart().await;
    same_status("restarted, plugin not back", &f, &u).await;
    assert!(
        !sockets_of(&u.dir).with_file_name("p.sock").exists(),
        "kubelet-dm deleted the plugin socket"
    );
    same(
        "p2 before re-registration",
        f.allocate("p2", "c", &[(R, 1)], false).await,
        u.allocate("p2", "c", &[(R, 1)], false).await,
    );

    pf.reserve().await;
    pu.reserve().await;
    pf.register(&f.socket()).await.expect("fake re-registers");
    pu.register(&u.socket())
        .await
        .expect("upstream re-registers");
    f.wait(2, 2).await;
    u.wait(2, 2).await;
    same_status("plugin back", &f, &u).await;
    same(
        "p1 re-admitted keeps both",
        f.allocate("p1", "c", &[(R, 2)], false).await,
        u.allocate("p1", "c", &[(R, 2)], false).await,
    );
    same(
        "p3 finds none free",
        f.allocate("p3", "c", &[(R, 1)], false).await,
        u.allocate("p3", "c", &[(R, 1)], false).await,
    );
    same("free p1", f.free("p1").await, u.free("p1").await);
    same(
        "p4 after p1 is freed",
        f.allocate("p4", "c", &[(R, 2)], false).await,
        u.allocate("p4", "c", &[(R, 2)], false).await,
    );
    f.stop().await;
    u.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reregistration_while_the_old_stream_is_open() {
    let (mut f, mut u) = both().await;
    let old_f = f.plugin("old.sock", healthy(&["a", "b"]));
    let old_u = u.plugin("old.sock", healthy(&["a", "b"]));
    old_f.register(&f.socket()).await.expect("fake registers");
    old_u
        .register(&u.socket())
        .await
        .expect("upstream registers");
    f.wait(2, 2).await;
    u.wait(2, 2).await;
    // A second registration on a new socket, the old stream still open.
    let new_f = f.plugin("new.sock", healthy(&["a", "b", "c"]));
    let new_u = u.plugin("new.sock", healthy(&["a", "b", "c"]));
    new_f
        .register(&f.socket())
        .await
        .expect("fake re-registers");
    new_u
        .register(&u.socket())
        .await
        .expect("upstream re-registers");
    f.wait(3, 3).await;
    u.wait(3, 3).await;
    same_status("re-registered, old stream open", &f, &u).await;
    // The old plugin ends its stream: the new endpoint must keep serving.
    old_f.end_streams();
    old_u.end_streams();
    // Settled when the old stream's end has been seen; kubelet-dm shows one endpoint then.
    if let Kubelet::Up(k) = &u.k {
        let arg = json!({"resource": R, "endpoints": 1, "timeout_ms": WAIT.as_millis() as u64});
        k.raw_command("wait", Some(arg))
            .await
            .expect("kubelet-dm drops the old endpoint");
    }
    same_status("old stream ended", &f, &u).await;
    same(
        "allocate from the new endpoint",
        f.allocate("p1", "c", &[(R, 3)], false).await,
        u.allocate("p1", "c", &[(R, 3)], false).await,
    );
    f.stop().await;
    u.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_containers_reuse_init_container_devices() {
    let (mut f, mut u) = both().await;
    let pf = f.plugin("p.sock", healthy(&["a", "b"]));
    let pu = u.plugin("p.sock", healthy(&["a", "b"]));
    pf.register(&f.socket()).await.expect("fake registers");
    pu.register(&u.socket()).await.expect("upstream registers");
    f.wait(2, 2).await;
    u.wait(2, 2).await;
    same(
        "init container takes both",
        f.allocate("p1", "setup", &[(R, 2)], true).await,
        u.allocate("p1", "setup", &[(R, 2)], true).await,
    );
    same(
        "app container reuses them",
        f.allocate("p1", "compute", &[(R, 2)], false).await,
        u.allocate("p1", "compute", &[(R, 2)], false).await,
    );
    same_status("init and app hold the same devices", &f, &u).await;
    same(
        "another pod finds none free",
        f.allocate("p2", "c", &[(R, 1)], false).await,
        u.allocate("p2", "c", &[(R, 1)], false).await,
    );
    same("free p1", f.free("p1").await, u.free("p1").await);
    same(
        "p3 after the free",
        f.allocate("p3", "c", &[(R, 2)], false).await,
        u.allocate("p3", "c", &[(R, 2)], false).await,
    );
    f.stop().await;
    u.stop().await;
}
