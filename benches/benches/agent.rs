//! hostdev-agent serving benchmarks, each next to a baseline measured in the same run:
//! - `hotplug_to_list_and_watch/agent`: a vfio-bound PCI function appears (sysfs written, then
//!   its `/dev/vfio/<group>` node created, as the kernel orders it) until the plugin's
//!   ListAndWatch stream carries it: inotify wake-up, rediscovery of the whole tree, diff,
//!   stream message. Baseline `.../stream_only`: the same plugin handed the new device set
//!   directly (no watch, no discovery), i.e. the gRPC streaming floor. `.../agent_1000_present`:
//!   the same with 1,000 devices already served (every wake-up rediscovers all of them); its
//!   baseline `.../discovery_pass_1001` is one discovery pass over that tree alone.
//!   p50/p99 of every agent sample are printed after the run (aim: p99 under 50 ms).
//! - idle RSS (run once, printed): the agent serving 1,000 PCI devices in a child process, at
//!   rest, against a child running only an idle tokio runtime (aim: under 30 MB).
//!
//! The fixture is a plain directory tree laid out as sysfs (relative links included) plus a
//! `/dev` directory; the FUSE mocksys host can replace it without changing the measurement.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion};
use hostdev_agent::inventory::{DeviceKind, Member, PluginDevice, Resource};
use hostdev_agent::manager::{AgentOptions, CancellationToken, configured_source, start_agent};
use hostdev_agent::metrics::Metrics;
use hostdev_agent::plugin::{DevRoot, PinnedAddresses, PluginHandle, PluginSettings};
use hostdev_agent::sysfs::HostPaths;
use hostdev_api::v1beta1::device_plugin_client::DevicePluginClient;
use hostdev_api::v1beta1::{Empty, ListAndWatchResponse};
use tokio::runtime::Runtime;
use tonic::Streaming;

const RESOURCE: &str = "example.com/nvme";
const CHILD_ENV: &str = "HOSTDEV_BENCH_CHILD";
const IDLE_DEVICES: u32 = 1_000;

/// A node tree: `sys/`, `dev/`, `plugins/`, `kubevirt.yaml`.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        for sub in [
            "sys/bus/pci/devices",
            "sys/bus/pci/drivers/vfio-pci",
            "sys/devices/pci0000:00",
            "dev/vfio",
            "plugins",
        ] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("fixture dir");
        }
        std::fs::write(dir.path().join("dev/vfio/vfio"), "").expect("vfio node");
        std::fs::write(
            dir.path().join("kubevirt.yaml"),
            format!("permittedHostDevices:\n  pciHostDevices:\n  - pciVendorSelector: \"144D:A808\"\n    resourceName: {RESOURCE}\n"),
        )
        .expect("config");
        Fixture { dir }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn options(&self) -> AgentOptions {
        let mut options = AgentOptions::new(self.root().join("kubevirt.yaml"), "bench-node");
        options.host = HostPaths::new(self.root().join("sys"), self.root().join("dev"));
        options.plugin_dir = self.root().join("plugins");
        options
    }

    fn bdf(index: u32) -> String {
        format!("0000:{:02x}:{:02x}.0", 1 + index / 32, index % 32)
    }

    /// A Samsung NVMe function bound to vfio-pci, alone in IOMMU group `index + 100`.
    fn add(&self, index: u32) {
        let sys = self.root().join("sys");
        let bdf = Self::bdf(index);
        let group = index + 100;
        let real = sys.join("devices/pci0000:00").join(&bdf);
        std::fs::create_dir_all(&real).expect("device dir");
        std::fs::write(
            real.join("uevent"),
            format!("DRIVER=vfio-pci\nPCI_ID=144D:A808\nPCI_SLOT_NAME={bdf}\n"),
        )
        .expect("uevent");
        std::fs::write(real.join("vendor"), "0x144d\n").expect("vendor");
        std::fs::write(real.join("device"), "0xa808\n").expect("device");
        std::fs::write(real.join("numa_node"), format!("{}\n", index % 2)).expect("numa");
        symlink("../../../bus/pci/drivers/vfio-pci", real.join("driver")).expect("driver link");
        std::fs::create_dir_all(sys.join(format!("kernel/iommu_groups/{group}/devices")))
            .expect("group");
        symlink(
            format!("../../../kernel/iommu_groups/{group}"),
            real.join("iommu_group"),
        )
        .expect("group link");
        symlink(
            format!("../../../devices/pci0000:00/{bdf}"),
            sys.join("bus/pci/devices").join(&bdf),
        )
        .expect("bus link");
    }

    /// The kernel creates the group node once the function is bound: the agent's wake-up.
    fn add_node(&self, index: u32) {
        std::fs::write(self.root().join(format!("dev/vfio/{}", index + 100)), "")
            .expect("group node");
    }

    fn remove(&self, index: u32) {
        let sys = self.root().join("sys");
        let bdf = Self::bdf(index);
        let _ = std::fs::remove_file(sys.join("bus/pci/devices").join(&bdf));
        let _ = std::fs::remove_dir_all(sys.join("devices/pci0000:00").join(&bdf));
        let _ = std::fs::remove_file(self.root().join(format!("dev/vfio/{}", index + 100)));
    }

    /// The agent's plugin socket, once it serves.
    fn plugin_socket(&self) -> Option<PathBuf> {
        std::fs::read_dir(self.root().join("plugins"))
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "sock"))
    }
}

async fn wait_socket(fixture: &Fixture) -> PathBuf {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(socket) = fixture.plugin_socket() {
            return socket;
        }
        assert!(
            Instant::now() < deadline,
            "the agent never served its plugin socket"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn open_stream(socket: &Path) -> Streaming<ListAndWatchResponse> {
    let channel = hostdev_api::unix::connect(socket)
        .await
        .expect("dial the plugin");
    DevicePluginClient::new(channel)
        .list_and_watch(Empty {})
        .await
        .expect("ListAndWatch")
        .into_inner()
}

/// Reads the stream until a message satisfies `done`.
async fn until(
    stream: &mut Streaming<ListAndWatchResponse>,
    done: impl Fn(&ListAndWatchResponse) -> bool,
) {
    loop {
        let message = stream
            .message()
            .await
            .expect("stream healthy")
            .expect("stream open");
        if done(&message) {
            return;
        }
    }
}

fn has(id: u32) -> impl Fn(&ListAndWatchResponse) -> bool {
    let id = (id + 100).to_string();
    move |m| m.devices.iter().any(|d| d.id == id)
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let rank = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[rank.min(samples.len() - 1)]
}

/// Hotplug latency of the real agent with `present` devices already served (at least one):
/// one more function appears and leaves, again and again. Returns every sample.
fn agent_hotplug(
    group: &mut BenchmarkGroup<'_, WallTime>,
    runtime: &Runtime,
    name: &str,
    present: u32,
) -> Vec<Duration> {
    let present = present.max(1);
    let fixture = Fixture::new();
    for index in 0..present {
        fixture.add(index);
        fixture.add_node(index);
    }
    let hot = present;
    let shutdown = CancellationToken::new();
    let options = fixture.options();
    let (agent, mut stream) = runtime.block_on(async {
        let agent = start_agent(
            options.clone(),
            Box::new(configured_source(&options)),
            shutdown.clone(),
        )
        .await
        .expect("agent starts");
        let mut stream = open_stream(&wait_socket(&fixture).await).await;
        until(&mut stream, |m| m.devices.len() == present as usize).await;
        (agent, stream)
    });
    let samples = Arc::new(Mutex::new(Vec::new()));
    let recorded = samples.clone();
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    fixture.add(hot);
                    let start = Instant::now();
                    fixture.add_node(hot);
                    until(&mut stream, has(hot)).await;
                    let took = start.elapsed();
                    recorded.lock().expect("samples").push(took);
                    total += took;
                    fixture.remove(hot);
                    until(&mut stream, |m| !has(hot)(m)).await;
                }
                total
            })
        })
    });
    runtime.block_on(async {
        shutdown.cancel();
        agent.wait().await;
    });
    samples.lock().expect("samples").clone()
}

/// Baseline of `agent_1000_present`: one discovery pass over the same tree (the floor of a
/// design that rediscovers from sysfs on every wake-up), without watches, diff or gRPC.
fn discovery_pass(group: &mut BenchmarkGroup<'_, WallTime>, devices: u32) {
    let fixture = Fixture::new();
    for index in 0..devices {
        fixture.add(index);
        fixture.add_node(index);
    }
    let options = fixture.options();
    let config = hostdev_agent::config::load(&options.config_file).expect("config");
    group.bench_function("discovery_pass_1001", |b| {
        b.iter(|| {
            let inventory = hostdev_agent::discovery::discover(&options.host, &config);
            assert_eq!(
                inventory.resources[RESOURCE].devices.len(),
                devices as usize
            );
        })
    });
}

fn report_percentiles(what: &str, mut samples: Vec<Duration>) {
    if samples.is_empty() {
        return;
    }
    let p50 = percentile(&mut samples, 0.50);
    let p99 = percentile(&mut samples, 0.99);
    let verdict = if p99 < Duration::from_millis(50) {
        "met"
    } else {
        "NOT met"
    };
    println!(
        "hotplug-to-ListAndWatch, {what}, {} samples: p50 {p50:?}, p99 {p99:?} (aim p99 < 50 ms: {verdict})",
        samples.len()
    );
}

fn hotplug(c: &mut Criterion, runtime: &Runtime) {
    let mut group = c.benchmark_group("hotplug_to_list_and_watch");
    group.sample_size(30);
    let one = agent_hotplug(&mut group, runtime, "agent", 1);
    let thousand = agent_hotplug(&mut group, runtime, "agent_1000_present", IDLE_DEVICES);
    discovery_pass(&mut group, IDLE_DEVICES + 1);

    // Baseline: the same kind of plugin, handed the new set directly.
    let device = |id: u32| PluginDevice {
        id: (id + 100).to_string(),
        healthy: true,
        numa_nodes: vec![0],
        members: vec![Member::Pci {
            address: Fixture::bdf(id),
            iommu_group: id + 100,
            numa_node: Some(0),
        }],
    };
    let resource = |ids: &[u32]| Resource {
        name: "example.com/baseline".into(),
        kind: DeviceKind::Pci,
        devices: ids.iter().map(|&i| device(i)).collect(),
        notes: vec![],
    };
    let baseline_dir = tempfile::tempdir().expect("baseline dir");
    let settings = PluginSettings {
        plugin_dir: baseline_dir.path().to_path_buf(),
        dev_root: DevRoot::new(baseline_dir.path().to_path_buf()),
        metrics: Metrics::new(),
    };
    let (plugin, mut baseline_stream) = runtime.block_on(async {
        let plugin = PluginHandle::start(resource(&[0]), PinnedAddresses::default(), settings);
        let deadline = Instant::now() + Duration::from_secs(20);
        while plugin.socket_path().is_none() {
            assert!(Instant::now() < deadline, "baseline plugin never served");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut stream = open_stream(&plugin.socket_path().expect("socket")).await;
        until(&mut stream, has(0)).await;
        (plugin, stream)
    });
    group.bench_function("stream_only", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    plugin.update(resource(&[0, 1]));
                    until(&mut baseline_stream, has(1)).await;
                    total += start.elapsed();
                    plugin.update(resource(&[0]));
                    until(&mut baseline_stream, |m| !has(1)(m)).await;
                }
                total
            })
        })
    });
    group.finish();

    report_percentiles("1 device present", one);
    report_percentiles("1,000 devices present", thousand);
    runtime.block_on(plugin.stop());
}

/// Resident set size of `pid` in kB, from /proc.
fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
        .expect("VmRSS")
}

/// Runs this binary as a child in `mode` (`agent <dir>` or `bare <dir>`); it writes `<dir>/ready`.
fn spawn_child(mode: &str, dir: &Path) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().expect("own path"))
        .env(CHILD_ENV, mode)
        .env("HOSTDEV_BENCH_DIR", dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn child")
}

fn stop_child(mut child: std::process::Child) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
}

fn idle_rss(runtime: &Runtime) {
    let fixture = Fixture::new();
    for index in 0..IDLE_DEVICES {
        fixture.add(index);
        fixture.add_node(index);
    }
    let agent = spawn_child("agent", fixture.root());
    runtime.block_on(async {
        let mut stream = open_stream(&wait_socket(&fixture).await).await;
        until(&mut stream, |m| m.devices.len() == IDLE_DEVICES as usize).await;
        // Let start-up allocations settle: the figure wanted is the agent at rest.
        tokio::time::sleep(Duration::from_secs(1)).await;
    });
    let agent_kb = rss_kb(agent.id());
    stop_child(agent);

    let bare_dir = tempfile::tempdir().expect("bare dir");
    let bare = spawn_child("bare", bare_dir.path());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !bare_dir.path().join("ready").exists() {
        assert!(Instant::now() < deadline, "bare child never got ready");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_secs(1));
    let bare_kb = rss_kb(bare.id());
    stop_child(bare);
    let verdict = if agent_kb < 30 * 1024 {
        "met"
    } else {
        "NOT met"
    };
    println!(
        "idle RSS: agent serving {IDLE_DEVICES} devices {:.1} MB; baseline idle tokio runtime {:.1} MB (aim < 30 MB: {verdict})",
        agent_kb as f64 / 1024.0,
        bare_kb as f64 / 1024.0
    );
}

/// The child side of [`idle_rss`].
fn child(mode: &str) {
    let dir = PathBuf::from(std::env::var("HOSTDEV_BENCH_DIR").expect("HOSTDEV_BENCH_DIR"));
    let runtime = Runtime::new().expect("runtime");
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let on_signal = shutdown.clone();
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("SIGTERM handler");
        tokio::spawn(async move {
            terminate.recv().await;
            on_signal.cancel();
        });
        match mode {
            "agent" => {
                let mut options = AgentOptions::new(dir.join("kubevirt.yaml"), "bench-node");
                options.host = HostPaths::new(dir.join("sys"), dir.join("dev"));
                options.plugin_dir = dir.join("plugins");
                let _ = hostdev_agent::run_agent(options, shutdown).await;
            }
            _ => {
                std::fs::write(dir.join("ready"), "").expect("ready marker");
                shutdown.cancelled().await;
            }
        }
    });
}

fn main() {
    if let Ok(mode) = std::env::var(CHILD_ENV) {
        child(&mode);
        return;
    }
    let runtime = Runtime::new().expect("runtime");
    let mut criterion = Criterion::default().configure_from_args();
    hotplug(&mut criterion, &runtime);
    criterion.final_summary();
    idle_rss(&runtime);
}
