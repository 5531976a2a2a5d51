//! The simulated cluster: nodes, VMIs, and the control loop (admission, scheduling, kubelet
//! allocation, virt-launcher) that a scenario's steps act on.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use fake_kubelet::ContainerRequest;
use tokio::sync::watch;

use super::node::SimNode;
use super::vmi::VmiState;
use crate::cluster::admission::{AdmissionConfig, admit};
use crate::cluster::controller;
use crate::cluster::launcher;
use crate::cluster::scheduler::{NodeView, schedule};
use crate::scenario::{AgentChoice, KubeletChoice, Phase, Scenario, StopSignal, VmiManifest};

/// The container of the virt-launcher pod that holds the devices.
const COMPUTE_CONTAINER: &str = "compute";

pub struct Cluster {
    pub seed: u64,
    pub nodes: Vec<SimNode>,
    pub vmis: BTreeMap<String, VmiState>,
    /// VMI names in apply order: pending VMIs are retried in this order.
    order: Vec<String>,
    admission: AdmissionConfig,
    pods_created: u64,
    /// Bumped on every change anywhere (host, kubelet, agent); expectations wait on it.
    changes: watch::Sender<u64>,
    forwarders: Vec<tokio::task::JoinHandle<()>>,
}

impl Cluster {
    /// Builds every node of the scenario and starts its kubelet and agent; `agent` overrides
    /// every node's choice.
    pub async fn start(
        sc: &Scenario,
        seed: u64,
        netlink: bool,
        agent: Option<&AgentChoice>,
        kubelet: KubeletChoice,
    ) -> Result<Cluster> {
        let kubevirt = sc
            .raw
            .kubevirt
            .as_ref()
            .map(|k| k.value.clone())
            .unwrap_or(serde_json::json!({}));
        let (changes, _) = watch::channel(0u64);
        let mut cluster = Cluster {
            seed,
            nodes: Vec::new(),
            vmis: BTreeMap::new(),
            order: Vec::new(),
            admission: admission_config(&kubevirt),
            pods_created: 0,
            changes,
            forwarders: Vec::new(),
        };
        let json = serde_json::to_string_pretty(&kubevirt)?;
        for (i, (n, spec)) in sc.raw.nodes.iter().zip(&sc.hosts).enumerate() {
            let host = mocksys::Host::from_spec(spec)
                .map_err(|e| anyhow::anyhow!("node {}: {e}", n.value.name.value))?;
            let node_seed = derive_seed(seed, i as u64);
            let choice = agent
                .or(n.value.agent.as_ref().map(|a| &a.value))
                .or(sc.raw.agent.as_ref().map(|a| &a.value))
                .cloned()
                .unwrap_or_default()
                .with_dir(sc.file.parent().unwrap_or(std::path::Path::new(".")));
            let tx = cluster.changes.clone();
            let notify: super::external::Notify = std::sync::Arc::new(move || {
                tx.send_modify(|n| *n += 1);
            });
            let node = SimNode::start(
                &n.value.name.value,
                n.value.labels.clone(),
                host,
                &json,
                node_seed,
                netlink,
                choice,
                kubelet,
                notify,
            )
            .await?;
            cluster.watch_node(&node);
            cluster.nodes.push(node);
        }
        Ok(cluster)
    }

    fn watch_node(&mut self, node: &SimNode) {
        use mocksys::SysBackend;
        let tx = self.changes.clone();
        node.host.subscribe(Box::new(move |_| {
            tx.send_modify(|n| *n += 1);
        }));
        // The upstream kubelet wakes waiters through its status poller instead.
        if let Some(kubelet) = node.kubelet.fake() {
            let tx = self.changes.clone();
            let mut events = kubelet.subscribe();
            self.forwarders.push(tokio::spawn(async move {
                use tokio::sync::broadcast::error::RecvError;
                while let Ok(_) | Err(RecvError::Lagged(_)) = events.recv().await {
                    tx.send_modify(|n| *n += 1);
                }
            }));
        }
        self.forward_agent(node.agent_status_receiver());
    }

    /// Bumps the change counter whenever the agent finishes a pass.
    fn forward_agent(
        &mut self,
        status: Option<watch::Receiver<hostdev_agent::manager::AgentStatus>>,
    ) {
        if let Some(mut status) = status {
            let tx = self.changes.clone();
            self.forwarders.push(tokio::spawn(async move {
                while status.changed().await.is_ok() {
                    tx.send_modify(|n| *n += 1);
                }
            }));
        }
    }

    /// A problem when some node's external agent exited on its own and `expect` (the step about
    /// to run) does not expect that with `agentExit`.
    pub fn unexpected_agent_exit(
        &self,
        expect: Option<&crate::scenario::Expect>,
    ) -> Option<String> {
        for n in &self.nodes {
            let Some(status) = n.agent_exit() else {
                continue;
            };
            if n.agent_exit_acknowledged() {
                continue;
            }
            let expected = expect.is_some_and(|e| {
                e.agent_exit.is_some() && e.node.as_ref().is_some_and(|x| x.value == n.name)
            });
            if !expected {
                return Some(format!(
                    "the agent of node {} exited unexpectedly ({}): {}",
                    n.name,
                    super::external::exit_word(&status),
                    n.agent_command_line().unwrap_or_default()
                ));
            }
        }
        None
    }

    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub fn node(&self, name: &str) -> Result<&SimNode> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .with_context(|| format!("unknown node {name}"))
    }

    pub fn node_mut(&mut self, name: &str) -> Result<&mut SimNode> {
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .with_context(|| format!("unknown node {name}"))
    }

    /// Restarts a node's agent (stop, then start on the same host and directories).
    pub async fn restart_agent(&mut self, name: &str, signal: StopSignal) -> Result<()> {
        let node = self.node_mut(name)?;
        node.stop_agent(signal).await;
        node.start_agent().await?;
        let status = node.agent_status_receiver();
        self.forward_agent(status);
        Ok(())
    }

    /// Replaces the KubeVirt configuration: admission uses it at once, agents reload it.
    pub fn configure(&mut self, kubevirt: &serde_json::Value) -> Result<()> {
        self.admission = admission_config(kubevirt);
        let json = serde_json::to_string_pretty(kubevirt)?;
        for n in &mut self.nodes {
            n.write_config(&json)?;
        }
        Ok(())
    }

    /// Creates a VMI: admission now, scheduling and allocation in [`Cluster::reconcile`].
    pub async fn apply(&mut self, manifest: VmiManifest) {
        self.pods_created += 1;
        let name = manifest.metadata.name.clone();
        let pod_uid = format!("virt-launcher-{name}-{}", self.pods_created);
        let mut vmi = VmiState::new(manifest, pod_uid);
        if let Err(reason) = admit(&vmi.manifest, &self.admission) {
            vmi.fail(format!("admission webhook denied the request: {reason}"));
        }
        self.vmis.insert(name.clone(), vmi);
        self.order.retain(|n| n != &name);
        self.order.push(name);
        self.reconcile().await;
    }

    /// Deletes a VMI and frees its devices.
    pub async fn delete(&mut self, name: &str) -> Result<()> {
        let vmi = self
            .vmis
            .remove(name)
            .with_context(|| format!("no VMI {name}"))?;
        self.order.retain(|n| n != name);
        if let Some(node) = &vmi.node
            && let Ok(node) = self.node(node)
        {
            node.kubelet.free_pod(&vmi.pod_uid).await;
        }
        self.reconcile().await;
        Ok(())
    }

    /// Moves every Pending VMI on if the cluster now allows it.
    pub async fn reconcile(&mut self) {
        for name in self.order.clone() {
            if self
                .vmis
                .get(&name)
                .is_some_and(|v| v.phase == Phase::Pending)
            {
                self.try_start(&name).await;
            }
        }
    }

    fn node_views(&self) -> Vec<NodeView> {
        self.nodes
            .iter()
            .map(|n| {
                let status = n.kubelet.node_status();
                let mut labels = n.labels.clone();
                labels.insert("kubernetes.io/hostname".into(), n.name.clone());
                let mut requested: BTreeMap<String, u64> = BTreeMap::new();
                for v in self
                    .vmis
                    .values()
                    .filter(|v| v.node.as_deref() == Some(&n.name) && v.phase == Phase::Running)
                {
                    for (r, c) in &v.requests {
                        *requested.entry(r.clone()).or_default() += u64::from(*c);
                    }
                }
                NodeView {
                    name: n.name.clone(),
                    labels,
                    allocatable: status
                        .resources
                        .iter()
                        .map(|(r, s)| (r.clone(), s.allocatable as u64))
                        .collect(),
                    requested,
                }
            })
            .collect()
    }

    async fn try_start(&mut self, name: &str) {
        let views = self.node_views();
        let Some(vmi) = self.vmis.get(name) else {
            return;
        };
        // virt-controller renders the pod first; until it can, the VMI stays Pending.
        if let Err(reason) = controller::render_pod(&vmi.manifest, &self.admission) {
            if let Some(v) = self.vmis.get_mut(name) {
                v.reason = reason;
            }
            return;
        }
        let chosen = match schedule(&views, &vmi.manifest.spec.node_selector, &vmi.requests) {
            Ok(node) => node,
            Err(reason) => {
                if let Some(v) = self.vmis.get_mut(name) {
                    v.reason = reason;
                }
                return;
            }
        };
        let (pod_uid, requests) = (vmi.pod_uid.clone(), vmi.requests.clone());
        let Ok(node) = self.node(&chosen) else { return };
        let mut env = BTreeMap::new();
        let mut paths = Vec::new();
        let mut failure = None;
        if !requests.is_empty() {
            let req = ContainerRequest {
                pod_uid: pod_uid.clone(),
                container: COMPUTE_CONTAINER.into(),
                resources: requests
                    .iter()
                    .map(|(k, v)| (k.clone(), *v as usize))
                    .collect(),
                numa_affinity: None,
            };
            match node.kubelet.allocate_container(req).await {
                Ok(allocated) => {
                    env.extend(allocated.envs);
                    paths.extend(allocated.device_paths);
                }
                Err(e) => {
                    failure = Some(format!(
                        "UnexpectedAdmissionError: allocate failed due to {e}"
                    ))
                }
            }
        }
        if failure.is_none() {
            failure = paths.iter().find_map(|p| missing_device(node, p));
        }
        let manifest = self.vmis[name].manifest.clone();
        let hostdevs = match &failure {
            None => launcher::hostdevs(&manifest, &env)
                .map_err(|e| failure = Some(e))
                .unwrap_or_default(),
            Some(_) => Vec::new(),
        };
        if failure.is_some() {
            node.kubelet.free_pod(&pod_uid).await;
        }
        if let Some(v) = self.vmis.get_mut(name) {
            v.node = Some(chosen);
            v.env = env;
            v.device_paths = paths;
            v.hostdevs = hostdevs;
            match failure {
                Some(reason) => v.fail(reason),
                None => {
                    v.phase = Phase::Running;
                    v.reason.clear();
                }
            }
        }
    }

    /// Stops every node; mounts are gone when this returns.
    pub async fn shutdown(mut self) {
        for f in self.forwarders.drain(..) {
            f.abort();
        }
        for n in self.nodes.drain(..) {
            n.shutdown().await;
        }
    }
}

/// A device path handed to a container must exist on the node's /dev (host paths are under
/// the node's dev root; `/dev/...` paths are mapped there).
fn missing_device(node: &SimNode, host_path: &str) -> Option<String> {
    let dev_root = node.dev_root();
    let local = if std::path::Path::new(host_path).starts_with(&dev_root) {
        std::path::PathBuf::from(host_path)
    } else if host_path.starts_with("/dev/") {
        node.local_path(host_path)
    } else {
        return Some(format!(
            "device {host_path} handed to the container is outside /dev of node {}",
            node.name
        ));
    };
    if local.exists() {
        None
    } else {
        Some(format!(
            "device {host_path} handed to the container does not exist on node {}",
            node.name
        ))
    }
}

/// Per-node seeds from the run's seed (splitmix64), so nodes differ but replay exactly.
pub fn derive_seed(seed: u64, index: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15u64.wrapping_mul(index + 1));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What virt-api reads of the configuration: feature gates and the permitted resource names.
pub fn admission_config(kubevirt: &serde_json::Value) -> AdmissionConfig {
    let config = if kubevirt.get("spec").is_some() {
        &kubevirt["spec"]["configuration"]
    } else {
        kubevirt
    };
    let feature_gates = config["developerConfiguration"]["featureGates"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|g| g.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let permitted = &config["permittedHostDevices"];
    let permitted_resources = permitted.as_object().map(|p| {
        ["pciHostDevices", "mediatedDevices", "usb"]
            .iter()
            .flat_map(|k| {
                p.get(*k)
                    .and_then(|v| v.as_array())
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|e| e["resourceName"].as_str().map(str::to_owned))
            .collect()
    });
    AdmissionConfig {
        feature_gates,
        permitted_resources,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_config_reads_a_whole_cr_or_its_configuration() {
        let cr = serde_json::json!({"kind": "KubeVirt", "spec": {"configuration": {
            "developerConfiguration": {"featureGates": ["HostDevices"]},
            "permittedHostDevices": {"pciHostDevices": [{"pciVendorSelector": "8086:5845", "resourceName": "a.io/n"}],
                                     "usb": [{"resourceName": "a.io/u", "selectors": []}]}}}});
        let a = admission_config(&cr);
        assert_eq!(a.feature_gates, vec!["HostDevices"]);
        assert_eq!(
            a.permitted_resources,
            Some(vec!["a.io/n".to_string(), "a.io/u".to_string()])
        );
        let bare =
            admission_config(&serde_json::json!({"developerConfiguration": {"featureGates": []}}));
        assert_eq!(bare.permitted_resources, None);
    }

    #[test]
    fn derived_seeds_differ_per_node_and_replay() {
        assert_ne!(derive_seed(7, 0), derive_seed(7, 1));
        assert_eq!(derive_seed(7, 1), derive_seed(7, 1));
        assert_ne!(derive_seed(7, 0), derive_seed(8, 0));
    }
}
