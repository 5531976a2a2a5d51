//! Seeded random simulation with invariants.
//!
//! For each seed the generator in `hostdev_harness::sim::random` writes a random scenario as YAML text: one or two nodes with a few
//! QEMU NVMe functions (some on vfio-pci, some on nvme) and QEMU USB sticks, a KubeVirt
//! configuration permitting both, then 15-30 random steps (vfioBind, USB plug/unplug on fresh
//! ports, PCI hotplug, VMIs applied and deleted, kubelet and agent restarts, a resource dropped
//! from or re-added to the configuration). After every step the generator writes an `expect` with
//! the allocatable counts its own model of the hosts predicts, so the file replays as is with
//! `hostdev run --seed S FILE`.
//!
//! The scenario is parsed with the library (so it is validated) and driven step by step through
//! the [`Cluster`] API. After each step the test waits until the cluster settles (an agent pass
//! after the step, then the kubelet's node status equal to what sysfs says and quiet), lets
//! Pending VMIs retry, and checks invariants against the truth computed from the mocksys hosts,
//! never from the agent's own output:
//!
//! 1. per node and resource, the kubelet's allocatable equals the agent's healthy advertised
//!    devices, never exceeds what sysfs shows bound to vfio-pci / plugged, and (settled) equals it;
//! 2. no device is allocated to two Running VMIs on the same node;
//! 3. every Running VMI's env addresses exist in its node's sysfs (and are the devices the kubelet
//!    allocated) and its device paths exist on its node's /dev, unless a step unplugged them;
//! 4. the agent reports no configuration (or discovery) error, since every configuration is valid;
//! 5. a Pending VMI has the scheduler's reason, and no node has room for it;
//! 6. a VMI fails only at admission (a resource not permitted when it was applied).
//!
//! `HOSTDEV_SIM_SEEDS=N` runs seeds 0..N (default 8), `HOSTDEV_SIM_SEEDS=A..B` seeds A..B,
//! `HOSTDEV_SEED=S` exactly seed S; `HOSTDEV_SIM_JOBS` seeds at a time (default 2). Every fourth
//! seed runs without uevents (inotify and the resync only). A failure prints the seed, the step,
//! the invariant and the whole generated scenario; `hostdev generate --seed S` prints it too.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hostdev_harness::scenario::{self, Phase, Scenario, Step};
use hostdev_harness::sim::cluster::Cluster;
use hostdev_harness::sim::node::SimNode;
use hostdev_harness::sim::random::{NVME, RESOURCES, STORAGE, generate};
use hostdev_harness::sim::{expect, logs, netns, run, steps};

const DEFAULT_SEEDS: u64 = 8;

/// Longest wait for the cluster to settle after a step: above the agent's 2 s safety-net resync.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(6);
/// The cluster counts as settled when converged and no change arrived for this long.
const QUIET: Duration = Duration::from_millis(60);
/// Re-check at least this often while waiting (a /dev change has no exact subscription).
const RECHECK: Duration = Duration::from_millis(50);

// ---------------------------------------------------------------------------------------------
// The truth, from the mocksys hosts (the kernel model behind each node's sysfs).

#[derive(Debug, Default, Clone, PartialEq)]
struct NodeTruth {
    /// Kubelet device ids a correct agent advertises for nvme: IOMMU groups of 8086:5845
    /// functions bound to vfio-pci.
    nvme: BTreeSet<String>,
    /// For storage: USB sysfs names of 46f4:0001 devices.
    storage: BTreeSet<String>,
}

impl NodeTruth {
    fn of(node: &SimNode) -> NodeTruth {
        node.host.inspect(|k| NodeTruth {
            nvme: k
                .pci
                .values()
                .filter(|f| {
                    f.spec.vendor == 0x8086
                        && f.spec.device == 0x5845
                        && f.driver.as_deref() == Some("vfio-pci")
                })
                .filter_map(|f| f.iommu_group.map(|g| g.to_string()))
                .collect(),
            storage: k
                .usb
                .values()
                .filter(|d| d.spec.vendor == 0x46f4 && d.spec.product_id == 0x0001)
                .map(|d| d.name())
                .collect(),
        })
    }

    fn ids(&self, resource: &str) -> &BTreeSet<String> {
        if resource == NVME {
            &self.nvme
        } else {
            &self.storage
        }
    }
}

/// What the test tracks beside the cluster: the configuration in force and what steps unplugged.
struct Tracker {
    permitted: BTreeMap<String, bool>,
    /// Per node: `bus:devnum` of USB devices a step unplugged (a VM holding one lost it).
    unplugged: BTreeMap<String, BTreeSet<String>>,
    /// Per node: USB sysfs names a step unplugged.
    unplugged_ports: BTreeMap<String, BTreeSet<String>>,
    /// Test-only sabotage: from this step on, node01's nvme truth is off by one.
    sabotage_from: Option<usize>,
    /// The step being run (None before the first).
    step: Option<usize>,
}

impl Tracker {
    fn new(sc: &Scenario, sabotage_from: Option<usize>) -> Tracker {
        let mut t = Tracker {
            permitted: BTreeMap::new(),
            unplugged: BTreeMap::new(),
            unplugged_ports: BTreeMap::new(),
            sabotage_from,
            step: None,
        };
        let kubevirt = sc
            .raw
            .kubevirt
            .as_ref()
            .map(|k| k.value.clone())
            .unwrap_or_default();
        t.configure(&kubevirt);
        t
    }

    fn configure(&mut self, kubevirt: &serde_json::Value) {
        let p = &kubevirt["permittedHostDevices"];
        // A CR its CRD rejects (an entry without a required field) is rejected by the agent
        // too, and the last good configuration keeps serving.
        let lacks = |key: &str, fields: &[&str]| {
            p[key].as_array().is_some_and(|a| {
                a.iter()
                    .any(|e| fields.iter().any(|f| e.get(*f).is_none_or(|v| v.is_null())))
            })
        };
        if lacks("pciHostDevices", &["pciVendorSelector", "resourceName"])
            || lacks("usb", &["resourceName"])
        {
            return;
        }
        let names = |key: &str| -> Vec<String> {
            p[key]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|e| e["resourceName"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let nvme = names("pciHostDevices").iter().any(|n| n == NVME);
        let storage = names("usb").iter().any(|n| n == STORAGE);
        self.permitted.insert(NVME.into(), nvme);
        self.permitted.insert(STORAGE.into(), storage);
    }

    /// Records what a step is about to change that the invariants must know about.
    fn before_step(&mut self, cluster: &Cluster, step: &Step) {
        match step {
            Step::Configure(c) => self.configure(&c.kubevirt.value),
            Step::Unplug(u) => {
                if let (Some(port), Ok(node)) = (&u.usb, cluster.node(&u.node.value)) {
                    let devnum = node.host.inspect(|k| {
                        k.usb
                            .get(&port.value)
                            .map(|d| format!("{}:{}", d.spec.bus, d.devnum))
                    });
                    if let Some(d) = devnum {
                        self.unplugged
                            .entry(node.name.clone())
                            .or_default()
                            .insert(d);
                    }
                    self.unplugged_ports
                        .entry(node.name.clone())
                        .or_default()
                        .insert(port.value.clone());
                }
            }
            _ => {}
        }
    }

    fn permitted(&self, resource: &str) -> bool {
        self.permitted.get(resource).copied().unwrap_or(false)
    }

    /// The number of healthy devices of `resource` the node's kubelet must settle on.
    fn expected(&self, node: &SimNode, truth: &NodeTruth, resource: &str) -> usize {
        if !self.permitted(resource) {
            return 0;
        }
        let n = truth.ids(resource).len();
        let sabotaged = self
            .sabotage_from
            .zip(self.step)
            .is_some_and(|(s, i)| i >= s)
            && node.name == "node01"
            && resource == NVME;
        n + usize::from(sabotaged)
    }
}

// ---------------------------------------------------------------------------------------------
// Settling and the invariants.

/// A broken invariant: which, and what was seen.
struct Broken {
    invariant: &'static str,
    detail: String,
}

const INV1: &str = "1 (allocatable = healthy advertised devices = what sysfs shows)";
const INV2: &str = "2 (no device allocated to two Running VMIs on a node)";
const INV3: &str = "3 (Running VMIs' env addresses and device paths exist on their node)";
const INV4: &str = "4 (no configuration or discovery error for valid configurations)";
const INV5: &str = "5 (a Pending VMI has the scheduler's reason and no node has room for it, or virt-controller's FailedCreate for a device not permitted)";
const INV6: &str = "6 (a VMI fails only at admission)";

/// Whether every node's kubelet shows what sysfs says, after the agent passes the step needs.
fn converged(
    cluster: &Cluster,
    tracker: &Tracker,
    passes_after: &BTreeMap<String, u64>,
) -> Result<(), String> {
    let mut problems = Vec::new();
    for node in &cluster.nodes {
        if let Some(before) = passes_after.get(&node.name) {
            let passes = node.agent_status().map_or(0, |s| s.passes);
            if passes <= *before {
                problems.push(format!(
                    "{}: no agent pass after the step yet ({passes} passes)",
                    node.name
                ));
            }
        }
        let truth = NodeTruth::of(node);
        let status = node.kubelet.node_status();
        for r in RESOURCES {
            let want = tracker.expected(node, &truth, r);
            let have = status.allocatable(r);
            if have != want {
                problems.push(format!(
                    "{}: {r} allocatable {have}, sysfs says {want}",
                    node.name
                ));
            }
            if tracker.permitted(r) {
                let capacity = status.capacity(r);
                if capacity != want {
                    problems.push(format!(
                        "{}: {r} capacity {capacity}, sysfs says {want}",
                        node.name
                    ));
                }
                let healthy: BTreeSet<String> = node
                    .kubelet
                    .fake()
                    .and_then(|k| k.devices(r))
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|d| d.is_healthy())
                    .map(|d| d.id)
                    .collect();
                if tracker.sabotage_from.is_none() && &healthy != truth.ids(r) {
                    problems.push(format!(
                        "{}: {r} healthy device ids {healthy:?}, sysfs says {:?}",
                        node.name,
                        truth.ids(r)
                    ));
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Waits until the cluster has converged and is quiet, or `timeout` passes (the mismatch).
async fn settle(
    cluster: &Cluster,
    tracker: &Tracker,
    passes_after: &BTreeMap<String, u64>,
    timeout: Duration,
) -> Result<(), String> {
    let started = Instant::now();
    let deadline = started + timeout;
    let mut changes = cluster.changes();
    loop {
        changes.borrow_and_update();
        let state = converged(cluster, tracker, passes_after);
        let now = Instant::now();
        if state.is_ok() {
            if now >= deadline
                || tokio::time::timeout(QUIET, changes.changed())
                    .await
                    .is_err()
            {
                return Ok(());
            }
            continue;
        }
        if now >= deadline {
            return state.map_err(|m| format!("{m} (waited {timeout:?})"));
        }
        let _ = tokio::time::timeout(RECHECK.min(deadline - now), changes.changed()).await;
    }
}

/// Env var of a resource: `devices.kubevirt.io/nvme` → `DEVICES_KUBEVIRT_IO_NVME`.
fn env_suffix(resource: &str) -> String {
    resource.to_uppercase().replace(['.', '/'], "_")
}

fn read_trim(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

/// `bus:devnum` → sysfs name of every USB device in the node's mounted sysfs.
fn usb_in_sysfs(node: &SimNode) -> BTreeMap<String, String> {
    let dir = node.local_path("/sys/bus/usb/devices");
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if let (Some(bus), Some(dev)) = (read_trim(&p.join("busnum")), read_trim(&p.join("devnum")))
        {
            out.insert(
                format!("{bus}:{dev}"),
                entry.file_name().to_string_lossy().into_owned(),
            );
        }
    }
    out
}

/// A device path handed to a container, on the node (host paths under its dev root, or `/dev/...`).
fn local_dev_path(node: &SimNode, host_path: &str) -> PathBuf {
    if Path::new(host_path).starts_with(node.dev_root()) {
        PathBuf::from(host_path)
    } else {
        node.local_path(host_path)
    }
}

/// Checks every invariant once against the settled cluster.
fn check_invariants(cluster: &Cluster, tracker: &Tracker) -> Result<(), Broken> {
    let broken = |invariant, detail| Err(Broken { invariant, detail });
    let truths: BTreeMap<String, NodeTruth> = cluster
        .nodes
        .iter()
        .map(|n| (n.name.clone(), NodeTruth::of(n)))
        .collect();
    // 1 and 4, per node.
    for node in &cluster.nodes {
        let truth = &truths[&node.name];
        let status = node.kubelet.node_status();
        let agent = node.agent_status().unwrap_or_default();
        for r in RESOURCES {
            let allocatable = status.allocatable(r);
            let advertised = agent
                .resources
                .get(r)
                .map_or(0, |res| res.devices.iter().filter(|d| d.healthy).count());
            if allocatable != advertised {
                return broken(
                    INV1,
                    format!(
                        "{}: {r} allocatable {allocatable}, the agent advertises {advertised} healthy",
                        node.name
                    ),
                );
            }
            let want = tracker.expected(node, truth, r);
            if allocatable != want {
                return broken(
                    INV1,
                    format!(
                        "{}: {r} allocatable {allocatable}, sysfs shows {want} {}",
                        node.name,
                        if allocatable > want {
                            "(more than exists)"
                        } else {
                            "(after settling)"
                        }
                    ),
                );
            }
        }
        if let Some(e) = &agent.last_config_error {
            return broken(INV4, format!("{}: config error {e:?}", node.name));
        }
        if let Some(e) = &agent.last_discovery_error {
            return broken(INV4, format!("{}: discovery error {e:?}", node.name));
        }
    }
    // 2 and 3, per node over its Running VMIs.
    for node in &cluster.nodes {
        let unplugged = tracker
            .unplugged
            .get(&node.name)
            .cloned()
            .unwrap_or_default();
        let unplugged_ports = tracker
            .unplugged_ports
            .get(&node.name)
            .cloned()
            .unwrap_or_default();
        let usb = usb_in_sysfs(node);
        let mut held: BTreeMap<(String, String), String> = BTreeMap::new();
        let mut addresses: BTreeMap<String, String> = BTreeMap::new();
        for (name, vmi) in &cluster.vmis {
            if vmi.phase != Phase::Running || vmi.node.as_deref() != Some(&node.name) {
                continue;
            }
            let allocations = node
                .kubelet
                .fake()
                .map(|k| k.pod_allocations(&vmi.pod_uid))
                .unwrap_or_default();
            for a in &allocations {
                for id in &a.device_ids {
                    if let Some(other) = held.insert((a.resource.clone(), id.clone()), name.clone())
                    {
                        return broken(
                            INV2,
                            format!(
                                "{}: {} device {id} is allocated to {other} and {name}",
                                node.name, a.resource
                            ),
                        );
                    }
                }
            }
            for (resource, want) in &vmi.requests {
                let ids: Vec<&String> = allocations
                    .iter()
                    .filter(|a| &a.resource == resource)
                    .flat_map(|a| a.device_ids.iter())
                    .collect();
                if ids.len() != *want as usize {
                    return broken(
                        INV3,
                        format!(
                            "{name} requested {want} {resource}, the kubelet holds {ids:?} for it"
                        ),
                    );
                }
                let (prefix, is_pci) = if resource == NVME {
                    ("PCI_RESOURCE_", true)
                } else {
                    ("USB_RESOURCE_", false)
                };
                let var = format!("{prefix}{}", env_suffix(resource));
                let Some(value) = vmi.env.get(&var) else {
                    return broken(INV3, format!("{name}: env {var} is not set: {:?}", vmi.env));
                };
                let entries: Vec<&str> = value.split(',').filter(|s| !s.is_empty()).collect();
                if entries.len() != *want as usize {
                    return broken(
                        INV3,
                        format!("{name}: {var}={value} for {want} requested device(s)"),
                    );
                }
                for entry in entries {
                    if let Some(other) = addresses.insert(entry.to_owned(), name.clone()) {
                        return broken(
                            INV2,
                            format!("{}: {entry} is in the env of {other} and {name}", node.name),
                        );
                    }
                    if is_pci {
                        let dev = node.local_path(&format!("/sys/bus/pci/devices/{entry}"));
                        let driver = std::fs::read_link(dev.join("driver")).ok();
                        let group = std::fs::read_link(dev.join("iommu_group")).ok();
                        let driver = driver
                            .as_ref()
                            .and_then(|d| d.file_name())
                            .map(|d| d.to_string_lossy().into_owned());
                        let group = group
                            .as_ref()
                            .and_then(|g| g.file_name())
                            .map(|g| g.to_string_lossy().into_owned());
                        if driver.as_deref() != Some("vfio-pci") {
                            return broken(
                                INV3,
                                format!(
                                    "{name}: {var} names {entry}, which in {}'s sysfs is bound to {driver:?}",
                                    node.name
                                ),
                            );
                        }
                        if !group.as_ref().is_some_and(|g| ids.contains(&g)) {
                            return broken(
                                INV3,
                                format!(
                                    "{name}: {entry} is in IOMMU group {group:?}, the kubelet allocated {ids:?}",
                                ),
                            );
                        }
                    } else if unplugged.contains(entry) {
                        // A step unplugged the stick this VM held; it is gone, as on a real host.
                    } else {
                        match usb.get(entry) {
                            None => {
                                return broken(
                                    INV3,
                                    format!(
                                        "{name}: {var} names USB {entry}, which is not in {}'s sysfs",
                                        node.name
                                    ),
                                );
                            }
                            Some(port) if !ids.contains(&port) => {
                                return broken(
                                    INV3,
                                    format!(
                                        "{name}: USB {entry} is {port}, the kubelet allocated {ids:?}"
                                    ),
                                );
                            }
                            Some(_) => {}
                        }
                    }
                }
                if !is_pci {
                    for id in &ids {
                        if !unplugged_ports.contains(*id) && !usb.values().any(|p| p == *id) {
                            return broken(
                                INV3,
                                format!(
                                    "{name}: allocated USB {id} is not in {}'s sysfs",
                                    node.name
                                ),
                            );
                        }
                    }
                }
            }
            for p in &vmi.device_paths {
                let local = local_dev_path(node, p);
                let gone_usb = unplugged.iter().any(|bd| {
                    let (b, d) = bd.split_once(':').unwrap_or_default();
                    let (b, d) = (b.parse::<u32>().unwrap_or(0), d.parse::<u32>().unwrap_or(0));
                    p.ends_with(&format!("bus/usb/{b:03}/{d:03}"))
                });
                if !gone_usb && local.symlink_metadata().is_err() {
                    return broken(
                        INV3,
                        format!("{name}: device {p} does not exist on {}", node.name),
                    );
                }
            }
        }
    }
    // 5 and 6.
    for (name, vmi) in &cluster.vmis {
        match vmi.phase {
            // virt-controller could not render its pod: a device it asks for is not permitted.
            Phase::Pending
                if vmi.reason.starts_with("FailedCreate:")
                    && vmi.reason.contains("is not permitted") => {}
            Phase::Pending => {
                if !vmi.reason.contains("nodes are available") {
                    return broken(
                        INV5,
                        format!("{name} is Pending with reason {:?}", vmi.reason),
                    );
                }
                for node in &cluster.nodes {
                    let selector = &vmi.manifest.spec.node_selector;
                    let matches = selector.iter().all(|(k, v)| {
                        (k == "kubernetes.io/hostname" && v == &node.name)
                            || node.labels.get(k) == Some(v)
                    });
                    if !matches {
                        continue;
                    }
                    let truth = &truths[&node.name];
                    let fits = vmi.requests.iter().all(|(r, want)| {
                        let used: u32 = cluster
                            .vmis
                            .values()
                            .filter(|v| {
                                v.phase == Phase::Running && v.node.as_deref() == Some(&node.name)
                            })
                            .map(|v| v.requests.get(r).copied().unwrap_or(0))
                            .sum();
                        let have = tracker.expected(node, truth, r) as u32;
                        have.saturating_sub(used) >= *want
                    });
                    if fits {
                        return broken(
                            INV5,
                            format!(
                                "{name} is Pending ({}) although {} has room for {:?}",
                                vmi.reason, node.name, vmi.requests
                            ),
                        );
                    }
                }
            }
            Phase::Failed if !vmi.reason.contains("admission webhook denied") => {
                return broken(INV6, format!("{name} failed: {}", vmi.reason));
            }
            _ => {}
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Driving one seed.

#[derive(Clone, Copy)]
struct Options {
    settle_timeout: Duration,
    /// Test-only: make node01's nvme truth wrong from this step index (0-based) on.
    sabotage_from: Option<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            settle_timeout: SETTLE_TIMEOUT,
            sabotage_from: None,
        }
    }
}

/// What a run went through, so a green run shows it exercised something.
#[derive(Default, Clone, Copy)]
struct Stats {
    actions: usize,
    /// Invariant checks passed (one per action step).
    checks: usize,
    /// VMI observations after checks, by phase.
    running: usize,
    pending: usize,
    failed: usize,
    /// Running VMIs seen holding a USB stick a step had unplugged.
    orphaned: usize,
    /// The hosts multicast uevents to the agents.
    uevents: bool,
}

struct SeedRun {
    seed: u64,
    stats: Stats,
    duration: Duration,
    /// The whole failure report, or None.
    failure: Option<String>,
}

/// Which nodes need an agent pass after the step, with their pass count before it.
fn passes_needed(cluster: &Cluster, step: &Step) -> BTreeMap<String, u64> {
    let passes = |n: &SimNode| n.agent_status().map_or(0, |s| s.passes);
    let one = |node: &str| -> BTreeMap<String, u64> {
        cluster
            .node(node)
            .map(|n| BTreeMap::from([(n.name.clone(), passes(n))]))
            .unwrap_or_default()
    };
    match step {
        Step::VfioBind(s) => one(&s.node.value),
        Step::Plug(s) => one(&s.node.value),
        Step::Unplug(s) => one(&s.node.value),
        Step::Write(s) => one(&s.node.value),
        Step::Modprobe(s) => one(&s.node.value),
        Step::Configure(_) => cluster
            .nodes
            .iter()
            .map(|n| (n.name.clone(), passes(n)))
            .collect(),
        _ => BTreeMap::new(),
    }
}

async fn drive(
    sc: &Scenario,
    seed: u64,
    netlink: bool,
    options: Options,
) -> (Stats, Option<String>) {
    let mut stats = Stats::default();
    let mut cluster = match Cluster::start(sc, seed, netlink, None, Default::default()).await {
        Ok(c) => c,
        Err(e) => return (stats, Some(format!("setting up the cluster failed: {e:#}"))),
    };
    let mut tracker = Tracker::new(sc, options.sabotage_from);
    let total = sc.raw.steps.len();
    // Before the first step: every agent has run a pass and the kubelets show the hosts.
    let initial: BTreeMap<String, u64> =
        cluster.nodes.iter().map(|n| (n.name.clone(), 0)).collect();
    let mut failure = settle(&cluster, &tracker, &initial, options.settle_timeout)
        .await
        .err()
        .map(|m| {
            describe(
                sc,
                seed,
                netlink,
                None,
                INV1,
                &format!("before the first step: {m}"),
                &cluster,
            )
        });
    for (i, step) in sc.raw.steps.iter().enumerate() {
        if failure.is_some() {
            break;
        }
        tracker.step = Some(i);
        let result = match &step.value {
            Step::Expect(e) => expect::check(&cluster, e).map_err(|m| Broken {
                invariant: "the generator's model (the scenario's own expect)",
                detail: m,
            }),
            other => {
                stats.actions += 1;
                let mut needed = passes_needed(&cluster, other);
                tracker.before_step(&cluster, other);
                match steps::run_step(&mut cluster, sc, other).await {
                    Err(e) => Err(Broken {
                        invariant: "the step itself",
                        detail: format!("{e:#}"),
                    }),
                    Ok(()) => {
                        if let Step::Restart(r) = other
                            && r.component == scenario::Component::Agent
                        {
                            // A new agent counts its passes from zero.
                            needed.insert(r.node.value.clone(), 0);
                        }
                        match settle(&cluster, &tracker, &needed, options.settle_timeout).await {
                            Err(m) => Err(Broken {
                                invariant: INV1,
                                detail: format!("not settled: {m}"),
                            }),
                            Ok(()) => {
                                cluster.reconcile().await;
                                tokio::task::block_in_place(|| check_invariants(&cluster, &tracker))
                            }
                        }
                    }
                }
            }
        };
        if result.is_ok() && !matches!(step.value, Step::Expect(_)) {
            stats.checks += 1;
            for v in cluster.vmis.values() {
                match v.phase {
                    Phase::Running => stats.running += 1,
                    Phase::Pending => stats.pending += 1,
                    Phase::Failed => stats.failed += 1,
                    _ => {}
                }
                let gone = tracker.unplugged.get(v.node.as_deref().unwrap_or_default());
                if v.phase == Phase::Running
                    && v.env.iter().any(|(k, val)| {
                        k.starts_with("USB_RESOURCE_")
                            && val.split(',').any(|e| gone.is_some_and(|g| g.contains(e)))
                    })
                {
                    stats.orphaned += 1;
                }
            }
        }
        if let Err(b) = result {
            failure = Some(describe(
                sc,
                seed,
                netlink,
                Some((i, total)),
                b.invariant,
                &b.detail,
                &cluster,
            ));
        }
    }
    cluster.shutdown().await;
    (stats, failure)
}

/// The failure report: seed, step, invariant, cluster, logs, and the scenario to replay.
fn describe(
    sc: &Scenario,
    seed: u64,
    netlink: bool,
    step: Option<(usize, usize)>,
    invariant: &str,
    detail: &str,
    cluster: &Cluster,
) -> String {
    let file = sc.file.display();
    let mut out = format!(
        "random simulation failed with seed {seed} ({})\n",
        if netlink {
            "uevents on"
        } else {
            "uevents off: agents woken by inotify and the resync only"
        }
    );
    match step {
        Some((i, total)) => {
            let s = &sc.raw.steps[i];
            let line = s.referenced.line() as usize;
            let text = sc.source.lines().nth(line.saturating_sub(1)).unwrap_or("");
            let _ = writeln!(
                out,
                "at step {} of {total} ({}) at {file}:{line}: {}",
                i + 1,
                s.value.kind(),
                text.trim()
            );
        }
        None => {
            let _ = writeln!(out, "before step 1 (the cluster as started)");
        }
    }
    let _ = writeln!(out, "invariant {invariant} broke:\n  {detail}\n");
    let _ = writeln!(
        out,
        "replay: HOSTDEV_SEED={seed} cargo nextest run -p hostdev-harness --test random_sim random_scenarios\n\
         or save the scenario below as {file} and run: hostdev run --seed {seed} {file}\n"
    );
    let _ = writeln!(out, "cluster:\n{}", run::state(cluster));
    let _ = writeln!(
        out,
        "last agent log lines (process-wide: with HOSTDEV_SIM_JOBS > 1 other seeds' lines may mix in):"
    );
    for l in logs::last(15) {
        let _ = writeln!(out, "  {l}");
    }
    for n in &cluster.nodes {
        let lines = n.kubelet.recent_log();
        let _ = writeln!(out, "last kubelet log lines ({}):", n.name);
        for l in lines.iter().skip(lines.len().saturating_sub(8)) {
            let _ = writeln!(out, "  {l}");
        }
    }
    let _ = writeln!(out, "\n--- {file} ---\n{}--- end ---", sc.source);
    out
}

/// Moves this thread into a private network namespace; true when uevents may be multicast in it.
///
/// `netns::enter_private` unshares, but then compares with `/proc/1/ns/net`, which some sandboxes
/// (this one included) hide even from root, and so reports false although the thread is already in
/// a new namespace: the run would go without uevents. mocksys's own check falls back to the parent
/// process's namespace there, so it is asked as well (it refuses a shared namespace by itself).
fn private_netns() -> bool {
    netns::enter_private()
        || mocksys::netlink::shares_reference_namespace().is_ok_and(|(_, shared)| !shared)
}

/// Every fourth seed runs without uevents, as where netlink is unavailable: the agent then has
/// only inotify on the dev root and its periodic resync (a function hot-plugged on nvme changes
/// nothing under /dev, so only the resync sees it).
fn uevents_for(seed: u64) -> bool {
    seed % 4 != 3
}

/// Generates, parses and runs one seed on a thread of its own (own network namespace, runtime).
fn run_seed(seed: u64, options: Options) -> SeedRun {
    run_text(seed, &generate(seed), options)
}

/// Parses and runs scenario text with `seed` (generated, or written by hand in a test).
fn run_text(seed: u64, yaml: &str, options: Options) -> SeedRun {
    logs::install();
    let started = Instant::now();
    let sc = match scenario::parse(yaml, format!("random-sim-{seed}.yaml")) {
        Ok(sc) => sc,
        Err(e) => {
            return SeedRun {
                seed,
                stats: Stats::default(),
                duration: started.elapsed(),
                failure: Some(format!(
                    "seed {seed}: the generated scenario does not parse: {e}\n{yaml}"
                )),
            };
        }
    };
    let (stats, failure) = std::thread::scope(|s| {
        s.spawn(|| {
            let netlink = private_netns() && uevents_for(seed);
            match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => {
                    let (stats, failure) = rt.block_on(drive(&sc, seed, netlink, options));
                    (
                        Stats {
                            uevents: netlink,
                            ..stats
                        },
                        failure,
                    )
                }
                Err(e) => (
                    Stats::default(),
                    Some(format!("seed {seed}: cannot build a runtime: {e}")),
                ),
            }
        })
        .join()
        .unwrap_or_else(|_| {
            (
                Stats::default(),
                Some(format!("seed {seed}: the simulation thread panicked")),
            )
        })
    });
    SeedRun {
        seed,
        stats,
        duration: started.elapsed(),
        failure,
    }
}

/// `HOSTDEV_SEED=S`: just S; else `HOSTDEV_SIM_SEEDS=N` (default 8): seeds 0..N, or
/// `HOSTDEV_SIM_SEEDS=A..B`: seeds A..B (a sweep in slices that each fit nextest's timeout).
fn seeds() -> Vec<u64> {
    let number = |name: &str, v: &str| {
        v.trim()
            .parse::<u64>()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
    };
    if let Ok(v) = std::env::var("HOSTDEV_SEED") {
        return vec![number("HOSTDEV_SEED", &v)];
    }
    match std::env::var("HOSTDEV_SIM_SEEDS") {
        Err(_) => (0..DEFAULT_SEEDS).collect(),
        Ok(v) => match v.split_once("..") {
            Some((a, b)) => {
                (number("HOSTDEV_SIM_SEEDS", a)..number("HOSTDEV_SIM_SEEDS", b)).collect()
            }
            None => (0..number("HOSTDEV_SIM_SEEDS", &v)).collect(),
        },
    }
}

/// Runs `seeds` on `jobs` threads; results in seed order.
fn run_seeds(seeds: &[u64], jobs: usize, options: Options) -> Vec<SeedRun> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = parking_lot::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(&seed) = seeds.get(i) else { break };
                    let r = run_seed(seed, options);
                    let st = r.stats;
                    eprintln!(
                        "seed {seed} (uevents {}): {} steps, {} checks in {:.2?}: VMIs seen {} Running, {} Pending, {} Failed, {} holding an unplugged stick: {}",
                        if st.uevents { "on" } else { "off" },
                        st.actions,
                        st.checks,
                        r.duration,
                        st.running,
                        st.pending,
                        st.failed,
                        st.orphaned,
                        if r.failure.is_some() { "FAILED" } else { "ok" }
                    );
                    results.lock().push(r);
                }
            });
        }
    });
    let mut out = results.into_inner();
    out.sort_by_key(|r| r.seed);
    out
}

fn jobs() -> usize {
    std::env::var("HOSTDEV_SIM_JOBS")
        .ok()
        .and_then(|j| j.parse().ok())
        .unwrap_or(2)
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[test]
fn random_scenarios_keep_the_invariants() {
    let seeds = seeds();
    let started = Instant::now();
    let runs = run_seeds(&seeds, jobs(), Options::default());
    let failures: Vec<&String> = runs.iter().filter_map(|r| r.failure.as_ref()).collect();
    eprintln!(
        "{} seed(s) ({:?}) in {:.2?}, {} failed",
        runs.len(),
        seeds,
        started.elapsed(),
        failures.len()
    );
    if !failures.is_empty() {
        let failed: Vec<u64> = runs
            .iter()
            .filter(|r| r.failure.is_some())
            .map(|r| r.seed)
            .collect();
        panic!(
            "{} of {} seed(s) broke an invariant: {failed:?}\n\n{}",
            failures.len(),
            runs.len(),
            failures
                .iter()
                .map(|f| f.as_str())
                .collect::<Vec<_>>()
                .join("\n\n")
        );
    }
}

/// The generator is a pure function of the seed, every scenario it writes is valid, and each
/// has 15-30 steps, each followed by one expect per node.
#[test]
fn generated_scenarios_are_valid_and_replay_from_the_seed() {
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for seed in 0..300 {
        let yaml = generate(seed);
        assert_eq!(yaml, generate(seed), "seed {seed} is not deterministic");
        let sc = scenario::parse(&yaml, format!("random-sim-{seed}.yaml"))
            .unwrap_or_else(|e| panic!("seed {seed}: {e}\n{yaml}"));
        assert_eq!(sc.seed(None), seed);
        let nodes = sc.raw.nodes.len();
        let actions: Vec<&Step> = sc
            .raw
            .steps
            .iter()
            .map(|s| &s.value)
            .filter(|s| !matches!(s, Step::Expect(_)))
            .collect();
        assert!((15..=30).contains(&actions.len()), "seed {seed}");
        assert_eq!(
            sc.raw.steps.len(),
            actions.len() * (nodes + 1),
            "seed {seed}"
        );
        for s in actions {
            let kind = match s {
                Step::Restart(r) if r.component == scenario::Component::Agent => "restart agent",
                Step::Restart(_) => "restart kubelet",
                Step::Plug(p) if p.pci.is_some() => "plug pci",
                Step::Plug(_) => "plug usb",
                other => other.kind(),
            };
            *kinds.entry(kind).or_default() += 1;
        }
    }
    for kind in [
        "vfioBind",
        "plug usb",
        "unplug",
        "plug pci",
        "apply",
        "delete",
        "restart kubelet",
        "restart agent",
        "configure",
    ] {
        assert!(
            kinds.get(kind).copied().unwrap_or(0) > 50,
            "{kind}: {kinds:?}"
        );
    }
    assert_ne!(generate(1), generate(2));
}

/// The checker sees what a VM holds: a drive unbound from vfio-pci under a Running VMI (a step
/// the generator never writes) breaks invariant 3, though the node's counts are right.
#[test]
fn a_device_taken_from_a_running_vmi_breaks_invariant_3() {
    let yaml = r#"name: taken
kubevirt: {developerConfiguration: {featureGates: [HostDevices]}, permittedHostDevices: {pciHostDevices: [{pciVendorSelector: "8086:5845", resourceName: devices.kubevirt.io/nvme}]}}
nodes:
  - name: node01
    host:
      pci: [{address: "0000:05:00.0", preset: qemu-nvme, driver: vfio-pci, iommuGroup: 5}]
steps:
  - apply:
      kind: VirtualMachineInstance
      metadata: {name: vmi-1}
      spec: {domain: {devices: {hostDevices: [{name: d0, deviceName: devices.kubevirt.io/nvme}]}}}
  - write: {node: node01, path: /sys/bus/pci/drivers/vfio-pci/unbind, value: "0000:05:00.0"}
"#;
    let report = run_text(17, yaml, Options::default())
        .failure
        .expect("the unbind must be caught");
    assert!(report.contains("failed with seed 17"), "{report}");
    assert!(report.contains("at step 2 of 2 (write)"), "{report}");
    assert!(report.contains(INV3), "{report}");
    assert!(
        report.contains("names 0000:05:00.0, which in node01's sysfs is bound to None"),
        "{report}"
    );
}

/// A configuration the agent rejects (one KubeVirt's CRD rejects: no resourceName; the generator
/// writes only valid ones) breaks invariant 4.
#[test]
fn a_rejected_configuration_breaks_invariant_4() {
    let yaml = r#"name: rejected
kubevirt: {developerConfiguration: {featureGates: [HostDevices]}, permittedHostDevices: {pciHostDevices: [{pciVendorSelector: "8086:5845", resourceName: devices.kubevirt.io/nvme}]}}
nodes:
  - name: node01
    host:
      pci: [{address: "0000:05:00.0", preset: qemu-nvme, driver: vfio-pci, iommuGroup: 5}]
steps:
  - configure:
      unchecked: true
      kubevirt: {developerConfiguration: {featureGates: [HostDevices]}, permittedHostDevices: {pciHostDevices: [{pciVendorSelector: "8086:5845"}]}}
"#;
    let report = run_text(5, yaml, Options::default())
        .failure
        .expect("the rejected configuration must be caught");
    assert!(report.contains("at step 1 of 1 (configure)"), "{report}");
    assert!(report.contains(INV4), "{report}");
    assert!(report.contains("node01: config error"), "{report}");
}

/// The checker really checks: with node01's nvme truth made wrong from a given step on, the run
/// fails at that step and the report names the seed, the step, the invariant and the scenario.
#[test]
fn a_broken_invariant_is_reported_with_seed_step_and_scenario() {
    let seed = 3;
    let yaml = generate(seed);
    let sc = scenario::parse(&yaml, "x.yaml").unwrap();
    // The first action step (index 0); its expects follow.
    assert!(!matches!(sc.raw.steps[0].value, Step::Expect(_)));
    let run = run_seed(
        seed,
        Options {
            settle_timeout: Duration::from_millis(400),
            sabotage_from: Some(0),
        },
    );
    let report = run.failure.expect("the sabotaged run must fail");
    assert!(report.contains("failed with seed 3"), "{report}");
    assert!(report.contains("at step 1 of"), "{report}");
    assert!(report.contains(INV1), "{report}");
    assert!(
        report.contains("node01: devices.kubevirt.io/nvme allocatable"),
        "{report}"
    );
    assert!(
        report.contains("hostdev run --seed 3 random-sim-3.yaml"),
        "{report}"
    );
    assert!(report.contains(&yaml), "{report}");
}

/// The runner `hostdev run` uses replays a generated scenario as is: its expects hold.
#[test]
fn generated_scenarios_replay_with_the_scenario_runner() {
    for seed in [0, 5] {
        let sc = scenario::parse(&generate(seed), format!("random-sim-{seed}.yaml")).unwrap();
        let out = hostdev_harness::sim::run_scenario(&sc, Default::default());
        assert!(out.passed(), "{}", out.failure.unwrap_or_default());
        assert_eq!(out.seed, seed);
    }
}
