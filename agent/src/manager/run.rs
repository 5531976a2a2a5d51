//! The agent as a library call: options in, watchers and manager running, until a token fires.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::source::{ConfiguredSource, DeviceSource, SourceError};
use super::{AgentStatus, Manager};
use crate::config::{AgentConfig, NodeLabels, ServeMode};
use crate::mdev_manager::RandomUuids;
use crate::metrics::Metrics;
use crate::plugin::{DevRoot, DeviceOwner, Iommufd, IommufdSwitch, PluginSettings};
use crate::sysfs::HostPaths;
use crate::watch::{WatchError, config_file, dev_root, plugin_dir, uevent};

/// Default interval of the safety-net resync.
pub const DEFAULT_RESYNC: Duration = Duration::from_secs(30);

/// Everything the agent needs to run, validated (see `cli` for the command line).
#[derive(Clone, Debug)]
pub struct AgentOptions {
    pub config_file: PathBuf,
    pub node_name: String,
    pub host: HostPaths,
    /// The node's own path of `host.dev_root`, when the agent sees the node's `/dev` elsewhere
    /// (e.g. mounted at `/host/dev`); Allocate names host paths under it. `None`: the same.
    pub node_dev_root: Option<PathBuf>,
    /// The kubelet's device-plugin directory.
    pub plugin_dir: PathBuf,
    pub serve: ServeMode,
    /// Labels for `nodeMediatedDeviceTypes[].nodeSelector` (`kubernetes.io/hostname` included).
    pub node_labels: NodeLabels,
    /// Where to serve `/metrics`; `None`: not at all.
    pub metrics_addr: Option<SocketAddr>,
    pub resync: Duration,
    /// Listen to kernel uevents (off only where netlink is unavailable).
    pub uevents: bool,
    /// Who USB device nodes are chowned to on Allocate (qemu, 107:107, as KubeVirt does);
    /// `None`: left as they are.
    pub usb_owner: Option<DeviceOwner>,
    /// On while the configuration in force has KubeVirt's `IOMMUFD` gate (set by the source
    /// from [`configured_source`], read by PCI Allocate).
    pub iommufd: IommufdSwitch,
}

impl AgentOptions {
    /// Production defaults (`/sys`, `/dev`, the kubelet's plugin directory, no metrics).
    pub fn new(config_file: impl Into<PathBuf>, node_name: impl Into<String>) -> Self {
        let node_name = node_name.into();
        AgentOptions {
            config_file: config_file.into(),
            node_labels: NodeLabels::for_node(&node_name),
            node_name,
            host: HostPaths::default(),
            node_dev_root: None,
            plugin_dir: PathBuf::from(hostdev_api::DEVICE_PLUGIN_DIR),
            serve: ServeMode::default(),
            metrics_addr: None,
            resync: DEFAULT_RESYNC,
            uevents: true,
            usb_owner: Some(DeviceOwner::default()),
            iommufd: IommufdSwitch::default(),
        }
    }
}

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("creating the device-plugin directory {path}: {source}")]
    PluginDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Watch(#[from] WatchError),
}

/// A started agent.
#[derive(Debug)]
pub struct RunningAgent {
    /// Changes after every manager pass.
    pub status: watch::Receiver<AgentStatus>,
    /// The bound metrics address (useful with port 0).
    pub metrics_addr: Option<SocketAddr>,
    pub metrics: Arc<Metrics>,
    task: JoinHandle<()>,
}

impl RunningAgent {
    /// Waits until the agent stopped (its shutdown token fired and every plugin was stopped).
    pub async fn wait(self) {
        if let Err(error) = self.task.await {
            tracing::error!(%error, "agent task ended abnormally");
        }
    }
}

/// The production device source for `options`: the config file, mdev reconciliation and the
/// discovery module.
pub fn configured_source(options: &AgentOptions) -> ConfiguredSource {
    ConfiguredSource::new(
        options.config_file.clone(),
        options.host.clone(),
        options.serve,
        options.node_labels.clone(),
        Box::new(|host, config, _labels| Ok(crate::discovery::discover(host, config))),
    )
    .with_mdev_reconciliation(Box::new(reconcile_mdevs))
    .with_iommufd_switch(options.iommufd.clone())
}

fn reconcile_mdevs(
    host: &HostPaths,
    config: &AgentConfig,
    labels: &NodeLabels,
) -> Result<(), SourceError> {
    let report = crate::mdev_manager::reconcile_mdevs(host, config, labels, &mut RandomUuids);
    for change in &report.removed {
        tracing::info!(uuid = %change.uuid, parent = %change.parent, mdev_type = %change.type_id, "mdev removed");
    }
    for change in &report.created {
        tracing::info!(uuid = %change.uuid, parent = %change.parent, mdev_type = %change.type_id, "mdev created");
    }
    for note in &report.notes {
        tracing::info!(%note, "mdev reconciliation");
    }
    if report.errors.is_empty() {
        Ok(())
    } else {
        let errors: Vec<String> = report.errors.iter().map(ToString::to_string).collect();
        Err(SourceError::Mdev(errors.join("; ")))
    }
}

/// Runs the agent until `shutdown` fires; plugins then advertise nothing and remove their sockets.
pub async fn run_agent(
    options: AgentOptions,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    let source = configured_source(&options);
    start_agent(options, Box::new(source), shutdown)
        .await?
        .wait()
        .await;
    Ok(())
}

/// Starts the watchers and the manager over `source`; returns once everything is watching and
/// the first pass is under way.
pub async fn start_agent(
    options: AgentOptions,
    source: Box<dyn DeviceSource>,
    shutdown: CancellationToken,
) -> Result<RunningAgent, AgentError> {
    std::fs::create_dir_all(&options.plugin_dir).map_err(|source| AgentError::PluginDir {
        path: options.plugin_dir.clone(),
        source,
    })?;
    crate::plugin::socket::remove_stale_sockets(&options.plugin_dir);
    let metrics = Metrics::new();
    // Serving devices matters more than exporting numbers: a taken port is logged, not fatal
    // (node-exporter's 9100 is a common neighbour on the host network).
    let metrics_addr = match options.metrics_addr {
        Some(addr) => match crate::metrics::serve(addr, metrics.clone(), shutdown.clone()).await {
            Ok(bound) => Some(bound),
            Err(error) => {
                metrics.error("metrics");
                tracing::error!(%error, "no metrics endpoint");
                None
            }
        },
        None => None,
    };

    // Watch first, discover second: whatever changes after this point wakes the manager.
    let (events, events_rx) = mpsc::unbounded_channel();
    plugin_dir::spawn(&options.plugin_dir, events.clone(), shutdown.clone())?;
    config_file::spawn(&options.config_file, events.clone(), shutdown.clone())?;
    dev_root::spawn(&options.host.dev_root, events.clone(), shutdown.clone())?;
    if options.uevents
        && let Err(error) = uevent::spawn(events.clone(), shutdown.clone())
    {
        metrics.error("watch");
        tracing::warn!(%error, "no kernel uevents; relying on inotify and the resync");
    }
    drop(events);

    let settings = PluginSettings {
        plugin_dir: options.plugin_dir.clone(),
        dev_root: DevRoot::mapped(
            options.host.dev_root.clone(),
            options
                .node_dev_root
                .clone()
                .unwrap_or_else(|| options.host.dev_root.clone()),
        )
        .with_usb_owner(options.usb_owner)
        .with_iommufd(Some(Iommufd {
            host: options.host.clone(),
            switch: options.iommufd.clone(),
        })),
        metrics: metrics.clone(),
    };
    let (manager, status) = Manager::new(source, settings, events_rx, options.resync);
    tracing::info!(
        node = %options.node_name,
        config = %options.config_file.display(),
        sysfs = %options.host.sysfs_root.display(),
        dev = %options.host.dev_root.display(),
        plugin_dir = %options.plugin_dir.display(),
        serve = ?options.serve,
        "hostdev-agent starting"
    );
    let task = tokio::spawn(manager.run(shutdown));
    Ok(RunningAgent {
        status,
        metrics_addr,
        metrics,
        task,
    })
}
