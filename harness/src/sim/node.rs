//! One simulated node: a mocksys host on a FUSE mount, a fake kubelet, and an agent: the
//! production agent in process, or any executable in the node's namespaces.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use fake_kubelet::FakeKubelet;

use super::kubelet::{NodeKubelet, UpstreamKubelet};
use hostdev_agent::config::NodeLabels;
use hostdev_agent::manager::source::ConfiguredSource;
use hostdev_agent::manager::{
    AgentOptions, CancellationToken, RunningAgent, SourceError, start_agent,
};
use hostdev_agent::mdev_manager::SeededUuids;
use hostdev_agent::sysfs::HostPaths;
use mocksys::host::Host;
use mocksys::mount::{Mount, MountOptions};
use parking_lot::Mutex;

use super::external::{self, ExternalAgent, Notify, Placeholders};
use super::volume::Volume;
use crate::scenario::{AgentChoice, KubeletChoice, StopSignal};

/// How often the agent's safety-net resync runs inside the harness (wake-ups do the real work).
const AGENT_RESYNC: std::time::Duration = std::time::Duration::from_secs(2);
/// The configuration file's name in its volume (`{config}`).
const CONFIG_FILE: &str = "kubevirt.json";
/// The labels file's name in its volume (`{labels}`).
const LABELS_FILE: &str = "labels";

/// `key=value` lines, `kubernetes.io/hostname` first as every node has it.
fn labels_text(node: &str, labels: &std::collections::BTreeMap<String, String>) -> String {
    let mut out = format!("kubernetes.io/hostname={node}\n");
    for (k, v) in labels {
        if k != "kubernetes.io/hostname" {
            out.push_str(&format!("{k}={v}\n"));
        }
    }
    out
}

/// The agent a node runs now.
enum Agent {
    InProcess(CancellationToken, RunningAgent),
    External(ExternalAgent),
}

pub struct SimNode {
    pub name: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub host: Host,
    pub kubelet: NodeKubelet,
    mount: Option<Mount>,
    choice: AgentChoice,
    agent: Option<Agent>,
    /// Wakes the cluster's waiters when an external agent logs or exits.
    notify: Notify,
    /// An `agentExit` expectation has seen the current agent's exit.
    exit_acknowledged: bool,
    config: Volume,
    labels_volume: Volume,
    plugin_dir: PathBuf,
    seed: u64,
    agent_starts: u64,
    uevents: bool,
    // Last: the directory goes after everything inside it is unmounted and stopped.
    root: tempfile::TempDir,
}

impl SimNode {
    /// Builds the node and starts its kubelet and agent. `kubevirt_json` is the configuration
    /// file's text; `notify` is called when an external agent logs a line or exits.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        name: &str,
        labels: std::collections::BTreeMap<String, String>,
        host: Host,
        kubevirt_json: &str,
        seed: u64,
        netlink: bool,
        agent: AgentChoice,
        kubelet: KubeletChoice,
        notify: Notify,
    ) -> Result<SimNode> {
        let root = tempfile::Builder::new()
            .prefix(&format!("hostdev-{name}-"))
            .tempdir()
            .context("creating the node directory")?;
        let options = MountOptions {
            netlink,
            ..MountOptions::default()
        };
        let backend: Arc<dyn mocksys::SysBackend> = Arc::new(host.clone());
        let mount = Mount::new(backend, &root.path().join("host"), options)
            .with_context(|| format!("mounting the host of node {name}"))?;
        let plugin_dir = root.path().join("device-plugins");
        // As a pod gets them: the CR from a ConfigMap volume, the labels from a downward-API one.
        let config = Volume::create(
            &root.path().join("kubevirt"),
            &[(CONFIG_FILE, kubevirt_json.as_bytes())],
        )
        .context("writing the KubeVirt configuration")?;
        let labels_volume = Volume::create(
            &root.path().join("podinfo"),
            &[(LABELS_FILE, labels_text(name, &labels).as_bytes())],
        )
        .context("writing the node labels")?;
        std::fs::create_dir(root.path().join("view"))
            .context("creating the agent view's scratch directory")?;
        let kubelet = match kubelet {
            KubeletChoice::Fake => NodeKubelet::Fake(
                FakeKubelet::start(fake_kubelet::Config::new(&plugin_dir).with_seed(seed))
                    .await
                    .with_context(|| format!("starting the kubelet of node {name}"))?,
            ),
            KubeletChoice::Upstream => NodeKubelet::Upstream(
                UpstreamKubelet::start(&plugin_dir, notify.clone())
                    .await
                    .with_context(|| format!("starting the upstream kubelet of node {name}"))?,
            ),
        };
        let mut node = SimNode {
            name: name.to_owned(),
            labels,
            host,
            kubelet,
            mount: Some(mount),
            choice: agent,
            agent: None,
            notify,
            exit_acknowledged: false,
            config,
            labels_volume,
            plugin_dir,
            seed,
            agent_starts: 0,
            uevents: netlink,
            root,
        };
        node.start_agent().await?;
        Ok(node)
    }

    pub fn sys_root(&self) -> PathBuf {
        self.mount
            .as_ref()
            .map(|m| m.sys_path())
            .unwrap_or_default()
    }

    pub fn dev_root(&self) -> PathBuf {
        self.mount
            .as_ref()
            .map(|m| m.dev_path().to_owned())
            .unwrap_or_default()
    }

    /// The node-local path for a scenario path under `/sys/` or `/dev/`.
    pub fn local_path(&self, path: &str) -> PathBuf {
        if let Some(rest) = path.strip_prefix("/sys/") {
            self.sys_root().join(rest)
        } else if let Some(rest) = path.strip_prefix("/dev/") {
            self.dev_root().join(rest)
        } else {
            self.root.path().join(path.trim_start_matches('/'))
        }
    }

    /// The configuration file as the agent reads it (`kubevirt/kubevirt.json -> ..data/...`).
    pub fn config_file(&self) -> PathBuf {
        self.config.path(CONFIG_FILE)
    }

    /// Replaces the configuration file the way a ConfigMap update does (a `..data` swap).
    pub fn write_config(&mut self, kubevirt_json: &str) -> Result<()> {
        self.config
            .update(&[(CONFIG_FILE, kubevirt_json.as_bytes())])
            .context("replacing the configuration")
    }

    pub fn agent_status(&self) -> Option<hostdev_agent::manager::AgentStatus> {
        match &self.agent {
            Some(Agent::InProcess(_, a)) => Some(a.status.borrow().clone()),
            _ => None,
        }
    }

    pub fn agent_status_receiver(
        &self,
    ) -> Option<tokio::sync::watch::Receiver<hostdev_agent::manager::AgentStatus>> {
        match &self.agent {
            Some(Agent::InProcess(_, a)) => Some(a.status.clone()),
            _ => None,
        }
    }

    /// True when this node's agent is a process in the node's namespaces.
    pub fn agent_is_external(&self) -> bool {
        !matches!(self.choice, AgentChoice::Hostdev)
    }

    /// An external agent's command line, for reports.
    pub fn agent_command_line(&self) -> Option<String> {
        match &self.agent {
            Some(Agent::External(a)) => Some(a.command_line()),
            _ => None,
        }
    }

    /// An external agent's last output lines.
    pub fn agent_log(&self, n: usize) -> Vec<String> {
        match &self.agent {
            Some(Agent::External(a)) => a.last_lines(n),
            _ => Vec::new(),
        }
    }

    /// Whether an external agent logged a line containing `text` since it started.
    pub fn agent_logged(&self, text: &str) -> bool {
        matches!(&self.agent, Some(Agent::External(a)) if a.logged(text))
    }

    /// How an external agent exited, if it has.
    pub fn agent_exit(&self) -> Option<std::process::ExitStatus> {
        match &self.agent {
            Some(Agent::External(a)) => a.exit_status(),
            _ => None,
        }
    }

    pub fn agent_exit_acknowledged(&self) -> bool {
        self.exit_acknowledged
    }

    /// Marks the current agent's exit as expected by the scenario.
    pub fn acknowledge_agent_exit(&mut self) {
        self.exit_acknowledged = true;
    }

    pub async fn start_agent(&mut self) -> Result<()> {
        self.agent_starts += 1;
        self.exit_acknowledged = false;
        let command = match &self.choice {
            AgentChoice::Hostdev => return self.start_in_process_agent().await,
            AgentChoice::Kubevirt => external::kubevirt_command(),
            AgentChoice::Command(c) => c.clone(),
        };
        let values = Placeholders {
            config: self.config_file(),
            node: self.name.clone(),
            labels: self.labels_volume.path(LABELS_FILE),
        };
        let mut view = hostdev_sandbox::NodeView::new(
            self.sys_root(),
            self.dev_root(),
            self.root.path().join("view"),
        )
        .with_plugin_dir(&self.plugin_dir)
        .with_sysfs_magic(true);
        if matches!(self.choice, AgentChoice::Kubevirt) {
            // KubeVirt runs its virt-chroot helper as /usr/bin/virt-chroot, as its image has it.
            view = view.with_layer(external::upstream_bin(), "/usr/bin");
        }
        let extra_path = [external::upstream_bin()];
        let agent =
            ExternalAgent::start(&command, &extra_path, &values, &view, self.notify.clone())
                .with_context(|| format!("node {}", self.name))?;
        self.agent = Some(Agent::External(agent));
        Ok(())
    }

    async fn start_in_process_agent(&mut self) -> Result<()> {
        let mut options = AgentOptions::new(self.config_file(), &self.name);
        options.host = HostPaths::new(self.sys_root(), self.dev_root());
        options.plugin_dir = self.plugin_dir.clone();
        options.resync = AGENT_RESYNC;
        options.uevents = self.uevents;
        let mut labels = NodeLabels::for_node(&self.name);
        labels.0.extend(self.labels.clone());
        options.node_labels = labels;
        // mdev UUIDs are seeded too, per node and per agent start, so a run replays exactly.
        let uuids = Arc::new(Mutex::new(SeededUuids::new(
            self.seed ^ self.agent_starts.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        )));
        let source = ConfiguredSource::new(
            options.config_file.clone(),
            options.host.clone(),
            options.serve,
            options.node_labels.clone(),
            Box::new(|host, config, _labels| Ok(hostdev_agent::discovery::discover(host, config))),
        )
        .with_mdev_reconciliation(Box::new(move |host, config, labels| {
            let report = hostdev_agent::mdev_manager::reconcile_mdevs(
                host,
                config,
                labels,
                &mut *uuids.lock(),
            );
            if report.errors.is_empty() {
                Ok(())
            } else {
                let errors: Vec<String> = report.errors.iter().map(ToString::to_string).collect();
                Err(SourceError::Mdev(errors.join("; ")))
            }
        }));
        let token = CancellationToken::new();
        let agent = start_agent(options, Box::new(source), token.clone())
            .await
            .with_context(|| format!("starting the agent of node {}", self.name))?;
        self.agent = Some(Agent::InProcess(token, agent));
        Ok(())
    }

    /// Stops the agent (an in-process agent is cancelled whatever `signal` says).
    pub async fn stop_agent(&mut self, signal: StopSignal) {
        match self.agent.take() {
            Some(Agent::InProcess(token, agent)) => {
                token.cancel();
                agent.wait().await;
            }
            Some(Agent::External(agent)) => {
                agent.stop(signal).await;
            }
            None => {}
        }
    }

    /// Stops the agent and kubelet, then unmounts; also done (less gracefully) on drop.
    pub async fn shutdown(mut self) {
        self.stop_agent(StopSignal::Term).await;
        self.kubelet.stop().await;
        if let Some(m) = self.mount.take() {
            drop(m.unmount());
        }
    }
}
