//! One simulated node: a mocksys host on a FUSE mount, a fake kubelet, and the real agent.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use fake_kubelet::FakeKubelet;
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

/// How often the agent's safety-net resync runs inside the harness (wake-ups do the real work).
const AGENT_RESYNC: std::time::Duration = std::time::Duration::from_secs(2);

pub struct SimNode {
    pub name: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub host: Host,
    pub kubelet: FakeKubelet,
    mount: Option<Mount>,
    agent: Option<(CancellationToken, RunningAgent)>,
    config_file: PathBuf,
    plugin_dir: PathBuf,
    seed: u64,
    agent_starts: u64,
    uevents: bool,
    // Last: the directory goes after everything inside it is unmounted and stopped.
    root: tempfile::TempDir,
}

impl SimNode {
    /// Builds the node and starts its kubelet and agent. `kubevirt_json` is the configuration file's text.
    pub async fn start(
        name: &str,
        labels: std::collections::BTreeMap<String, String>,
        host: Host,
        kubevirt_json: &str,
        seed: u64,
        netlink: bool,
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
        let config_file = root.path().join("kubevirt.json");
        std::fs::write(&config_file, kubevirt_json)
            .context("writing the KubeVirt configuration")?;
        let kubelet = FakeKubelet::start(fake_kubelet::Config::new(&plugin_dir).with_seed(seed))
            .await
            .with_context(|| format!("starting the kubelet of node {name}"))?;
        let mut node = SimNode {
            name: name.to_owned(),
            labels,
            host,
            kubelet,
            mount: Some(mount),
            agent: None,
            config_file,
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

    pub fn config_file(&self) -> &Path {
        &self.config_file
    }

    /// Replaces the configuration file the way a ConfigMap update does: write aside, rename over.
    pub fn write_config(&self, kubevirt_json: &str) -> Result<()> {
        let tmp = self.root.path().join(".kubevirt.json.new");
        std::fs::write(&tmp, kubevirt_json).context("writing the new configuration")?;
        std::fs::rename(&tmp, &self.config_file).context("replacing the configuration")?;
        Ok(())
    }

    pub fn agent_status(&self) -> Option<hostdev_agent::manager::AgentStatus> {
        self.agent.as_ref().map(|(_, a)| a.status.borrow().clone())
    }

    pub fn agent_status_receiver(
        &self,
    ) -> Option<tokio::sync::watch::Receiver<hostdev_agent::manager::AgentStatus>> {
        self.agent.as_ref().map(|(_, a)| a.status.clone())
    }

    pub async fn start_agent(&mut self) -> Result<()> {
        let mut options = AgentOptions::new(&self.config_file, &self.name);
        options.host = HostPaths::new(self.sys_root(), self.dev_root());
        options.plugin_dir = self.plugin_dir.clone();
        options.resync = AGENT_RESYNC;
        options.uevents = self.uevents;
        let mut labels = NodeLabels::for_node(&self.name);
        labels.0.extend(self.labels.clone());
        options.node_labels = labels;
        self.agent_starts += 1;
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
        self.agent = Some((token, agent));
        Ok(())
    }

    pub async fn stop_agent(&mut self) {
        if let Some((token, agent)) = self.agent.take() {
            token.cancel();
            agent.wait().await;
        }
    }

    /// Stops the agent and kubelet, then unmounts; also done (less gracefully) on drop.
    pub async fn shutdown(mut self) {
        self.stop_agent().await;
        self.kubelet.stop().await;
        if let Some(m) = self.mount.take() {
            drop(m.unmount());
        }
    }
}
