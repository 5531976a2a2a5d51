//! The manager: one select loop that turns configuration + discovery into running plugins.
//!
//! Events (watch wake-ups, the resync tick, stop) are coalesced: everything queued when the loop
//! wakes is folded into one pass, so a burst of uevents costs one discovery. A pass is:
//! reload the configuration if it changed (a bad file keeps the last good one serving), run
//! discovery (mdev reconciliation first, inside the [`DeviceSource`]), then diff per resource:
//! start new plugins, stop removed ones, and update the device set of running ones in place
//! (KubeVirt #7084 left running plugins on their old device set).
//!
//! Kubelet events never wait for discovery: a re-created `kubelet.sock` or a removed plugin
//! socket goes straight to the plugins concerned, which re-serve and re-register.

pub mod run;
pub mod source;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::inventory::{Inventory, Resource};
use crate::metrics::Metrics;
use crate::plugin::{PinnedAddresses, PluginHandle, PluginSettings};
use crate::watch::WatchEvent;

pub use run::{AgentError, AgentOptions, RunningAgent, configured_source, run_agent, start_agent};
pub use source::{DeviceSource, SourceError};
/// The stop signal [`run_agent`] takes, re-exported so callers need not depend on tokio-util.
pub use tokio_util::sync::CancellationToken;

/// What the manager has done so far; tests and the harness wait on changes of it.
#[derive(Clone, Debug, Default)]
pub struct AgentStatus {
    /// Completed passes (each ran discovery once, successfully or not).
    pub passes: u64,
    /// Configuration files applied, including the first.
    pub config_loads: u64,
    /// Configuration files rejected (the last good one kept serving).
    pub config_failures: u64,
    pub last_config_error: Option<String>,
    pub last_discovery_error: Option<String>,
    /// The resources being served, with the devices last handed to their plugins.
    pub resources: BTreeMap<String, Arc<Resource>>,
    /// Devices seen and not advertised by the last discovery, with why.
    pub skipped: Vec<crate::inventory::Skipped>,
}

/// The loop's state: the source, the running plugins, and where to report.
pub struct Manager {
    source: Option<Box<dyn DeviceSource>>,
    settings: PluginSettings,
    plugins: BTreeMap<String, PluginHandle>,
    events: mpsc::UnboundedReceiver<WatchEvent>,
    resync: Duration,
    status: watch::Sender<AgentStatus>,
    metrics: Arc<Metrics>,
}

/// What one wake-up asks for, after coalescing everything queued.
#[derive(Default)]
struct Wanted {
    reload_config: bool,
    rediscover: bool,
    kubelet_restarted: bool,
    removed_sockets: Vec<PathBuf>,
    /// Re-serve plugins whose socket file vanished unnoticed (a watcher that failed).
    check_sockets: bool,
}

impl Wanted {
    fn add(&mut self, event: WatchEvent) {
        match event {
            WatchEvent::ConfigChanged => {
                self.reload_config = true;
                self.rediscover = true;
            }
            WatchEvent::Uevent | WatchEvent::DevRootChanged => self.rediscover = true,
            WatchEvent::KubeletSocketCreated => self.kubelet_restarted = true,
            WatchEvent::PluginSocketRemoved(path) => self.removed_sockets.push(path),
            WatchEvent::WatcherFailed { watcher, error } => {
                tracing::error!(watcher, %error, "watcher stopped; the periodic resync still covers it");
                self.rediscover = true;
            }
        }
    }
}

impl Manager {
    pub fn new(
        source: Box<dyn DeviceSource>,
        settings: PluginSettings,
        events: mpsc::UnboundedReceiver<WatchEvent>,
        resync: Duration,
    ) -> (Self, watch::Receiver<AgentStatus>) {
        let (status, status_rx) = watch::channel(AgentStatus::default());
        let metrics = settings.metrics.clone();
        let manager = Manager {
            source: Some(source),
            settings,
            plugins: BTreeMap::new(),
            events,
            resync,
            status,
            metrics,
        };
        (manager, status_rx)
    }

    /// Runs until `shutdown`, then stops every plugin (empty device list, socket removed).
    pub async fn run(mut self, shutdown: CancellationToken) {
        self.pass(true).await;
        let mut resync = tokio::time::interval(self.resync);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        resync.reset();
        loop {
            let mut wanted = Wanted::default();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                event = self.events.recv() => match event {
                    Some(event) => wanted.add(event),
                    // Every watcher is gone; keep serving on the resync alone.
                    None => {
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = resync.tick() => wanted.rediscover = true,
                        }
                    }
                },
                _ = resync.tick() => {
                    // Also re-read the file: a missed inotify event must not pin an old config.
                    wanted.reload_config = true;
                    wanted.rediscover = true;
                    wanted.check_sockets = true;
                }
            }
            while let Ok(event) = self.events.try_recv() {
                wanted.add(event);
            }
            self.handle_kubelet_events(&wanted);
            if wanted.rediscover {
                self.pass(wanted.reload_config).await;
            }
        }
        for (name, plugin) in std::mem::take(&mut self.plugins) {
            plugin.stop().await;
            self.metrics.remove_resource(&name);
        }
    }

    fn handle_kubelet_events(&self, wanted: &Wanted) {
        if wanted.kubelet_restarted {
            tracing::info!("kubelet.sock was created: re-registering every plugin");
            for plugin in self.plugins.values() {
                plugin.kubelet_restarted();
            }
            return;
        }
        for path in &wanted.removed_sockets {
            for plugin in self.plugins.values().filter(|p| p.owns_socket(path)) {
                tracing::info!(resource = plugin.name(), socket = %path.display(), "plugin socket removed: re-serving");
                plugin.kubelet_restarted();
            }
        }
        if wanted.check_sockets {
            for plugin in self.plugins.values() {
                if let Some(socket) = plugin.socket_path()
                    && !socket.exists()
                {
                    tracing::warn!(resource = plugin.name(), socket = %socket.display(), "plugin socket vanished unnoticed: re-serving");
                    plugin.kubelet_restarted();
                }
            }
        }
    }

    /// One reload + discovery + diff. Discovery reads sysfs, so it runs on a blocking thread.
    async fn pass(&mut self, reload_config: bool) {
        let Some(mut source) = self.source.take() else {
            return;
        };
        let (source, reload, discovered) = match tokio::task::spawn_blocking(move || {
            let reload = reload_config.then(|| source.reload_config());
            let discovered = source.discover();
            (source, reload, discovered)
        })
        .await
        {
            Ok(result) => result,
            Err(error) => {
                // The source panicked and is lost: nothing can be discovered any more, but the
                // plugins keep serving what they have.
                tracing::error!(%error, "discovery panicked; serving the last inventory");
                self.metrics.error("discovery");
                return;
            }
        };
        let pins = source.pins();
        self.source = Some(source);

        let mut status = self.status.borrow().clone();
        status.passes += 1;
        match reload {
            None => {}
            Some(Ok(false)) => {}
            Some(Ok(true)) => {
                status.config_loads += 1;
                status.last_config_error = None;
                self.metrics.config_reload(true);
                tracing::info!("configuration applied");
            }
            Some(Err(error)) => {
                status.config_failures += 1;
                status.last_config_error = Some(error.to_string());
                self.metrics.config_reload(false);
                tracing::error!(%error, "configuration rejected; the last good configuration keeps serving");
            }
        }
        self.metrics.discovery();
        match discovered {
            Ok(inventory) => {
                status.last_discovery_error = None;
                status.skipped = inventory.skipped.clone();
                self.apply(inventory, &pins).await;
            }
            Err(error) => {
                self.metrics.error("discovery");
                status.last_discovery_error = Some(error.to_string());
                tracing::error!(%error, "discovery failed; plugins keep their devices");
            }
        }
        status.resources = self
            .plugins
            .iter()
            .map(|(name, p)| (name.clone(), p.resource()))
            .collect();
        self.status.send_replace(status);
    }

    /// Brings the running plugins in line with `inventory`.
    async fn apply(&mut self, inventory: Inventory, pins: &BTreeMap<String, PinnedAddresses>) {
        let gone: Vec<String> = self
            .plugins
            .keys()
            .filter(|name| !inventory.resources.contains_key(*name))
            .cloned()
            .collect();
        for name in gone {
            if let Some(plugin) = self.plugins.remove(&name) {
                tracing::info!(resource = %name, "resource no longer served: stopping its plugin");
                plugin.stop().await;
                self.metrics.remove_resource(&name);
            }
        }
        for (name, resource) in inventory.resources {
            let healthy = resource.devices.iter().filter(|d| d.healthy).count() as u64;
            let unhealthy = resource.devices.len() as u64 - healthy;
            self.metrics.set_devices(&name, healthy, unhealthy);
            let resource_pins = pins.get(&name).cloned().unwrap_or_default();
            match self.plugins.get(&name) {
                Some(plugin) => {
                    plugin.set_pins(resource_pins);
                    if plugin.update(resource) {
                        tracing::info!(resource = %name, healthy, unhealthy, "device set changed");
                    }
                }
                None => {
                    tracing::info!(resource = %name, healthy, unhealthy, "starting plugin");
                    let plugin =
                        PluginHandle::start(resource, resource_pins, self.settings.clone());
                    self.plugins.insert(name, plugin);
                }
            }
        }
    }
}
