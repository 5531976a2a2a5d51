//! Where the manager's inventories come from: the configuration file, mdev reconciliation and
//! discovery, behind one trait so the loop is independent of how devices are found.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::config::{AgentConfig, ConfigError, NodeLabels, ResourceSource, ServeMode};
use crate::inventory::Inventory;
use crate::plugin::{IommufdSwitch, PinnedAddresses};
use crate::sysfs::HostPaths;

/// Why a pass could not reload or discover. Each variant's text names the file or device.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("no configuration loaded yet: {0}")]
    NoConfig(String),
    #[error("discovery: {0}")]
    Discovery(String),
    #[error("mdev reconciliation: {0}")]
    Mdev(String),
}

/// What the manager asks of configuration and discovery. Methods block (they read files), so
/// the manager calls them on a blocking thread.
pub trait DeviceSource: Send + 'static {
    /// Re-reads the configuration. `Ok(true)`: a new configuration is in force; `Ok(false)`:
    /// unchanged; `Err`: rejected, the previous one stays in force.
    fn reload_config(&mut self) -> Result<bool, SourceError>;
    /// Reconciles mdevs (when configured), then discovers what to serve.
    fn discover(&mut self) -> Result<Inventory, SourceError>;
    /// Per resource, the addresses GetPreferredAllocation hands out first.
    fn pins(&self) -> BTreeMap<String, PinnedAddresses>;
}

/// Discovery as a function of the host and the configuration: the seam between the manager and
/// the discovery module (tests pass their own).
pub type DiscoverFn =
    dyn Fn(&HostPaths, &AgentConfig, &NodeLabels) -> Result<Inventory, SourceError> + Send + Sync;

/// mdev reconciliation (create and remove mdevs to match the configuration) as a function.
pub type ReconcileFn =
    dyn Fn(&HostPaths, &AgentConfig, &NodeLabels) -> Result<(), SourceError> + Send + Sync;

/// The production source: a configuration file, reloaded on demand, mdev reconciliation and
/// a discovery function.
pub struct ConfiguredSource {
    pub config_file: PathBuf,
    pub host: HostPaths,
    pub serve: ServeMode,
    pub labels: NodeLabels,
    /// The configuration in force (the last good one).
    config: Option<AgentConfig>,
    discover: Box<DiscoverFn>,
    reconcile_mdevs: Option<Box<ReconcileFn>>,
    /// Set from the `IOMMUFD` gate of each configuration put in force.
    iommufd: Option<IommufdSwitch>,
}

impl ConfiguredSource {
    pub fn new(
        config_file: PathBuf,
        host: HostPaths,
        serve: ServeMode,
        labels: NodeLabels,
        discover: Box<DiscoverFn>,
    ) -> Self {
        Self {
            config_file,
            host,
            serve,
            labels,
            config: None,
            discover,
            reconcile_mdevs: None,
            iommufd: None,
        }
    }

    /// Runs `reconcile` before every discovery whose configuration manages mdevs.
    pub fn with_mdev_reconciliation(mut self, reconcile: Box<ReconcileFn>) -> Self {
        self.reconcile_mdevs = Some(reconcile);
        self
    }

    /// Flips `switch` to the `IOMMUFD` gate of every configuration put in force.
    pub fn with_iommufd_switch(mut self, switch: IommufdSwitch) -> Self {
        self.iommufd = Some(switch);
        self
    }

    pub fn config(&self) -> Option<&AgentConfig> {
        self.config.as_ref()
    }
}

impl DeviceSource for ConfiguredSource {
    fn reload_config(&mut self) -> Result<bool, SourceError> {
        let loaded = crate::config::load(&self.config_file)?.with_serve(self.serve);
        if self.config.as_ref() == Some(&loaded) {
            return Ok(false);
        }
        for warning in &loaded.rejected {
            tracing::warn!(config = %loaded.origin, %warning, "configuration warning");
        }
        if let Some(switch) = &self.iommufd {
            switch.set(loaded.feature_gate(crate::plugin::iommufd::IOMMUFD_GATE));
        }
        self.config = Some(loaded);
        Ok(true)
    }

    fn discover(&mut self) -> Result<Inventory, SourceError> {
        let config = self.config.as_ref().ok_or_else(|| {
            SourceError::NoConfig(format!(
                "{} has not loaded successfully",
                self.config_file.display()
            ))
        })?;
        if let Some(reconcile) = &self.reconcile_mdevs
            && config.mdev_types.managed
            && let Err(error) = reconcile(&self.host, config, &self.labels)
        {
            // Discovery still runs: the mdevs that exist are served whatever reconciliation did.
            tracing::error!(%error, "mdev reconciliation failed");
        }
        (self.discover)(&self.host, config, &self.labels)
    }

    fn pins(&self) -> BTreeMap<String, PinnedAddresses> {
        self.config.as_ref().map(pins_of).unwrap_or_default()
    }
}

/// The hostdev address extensions (`pciAddresses`, `parentAddresses`, `selectors[].port`) in the
/// order written: discovery narrows a resource to them, and GetPreferredAllocation hands them
/// out in that order.
pub fn pins_of(config: &AgentConfig) -> BTreeMap<String, PinnedAddresses> {
    let mut pins = BTreeMap::new();
    for resource in config.served() {
        let addresses: Vec<String> = match &resource.source {
            ResourceSource::Pci(selectors) => {
                selectors.iter().flat_map(|s| s.addresses.clone()).collect()
            }
            ResourceSource::Mdev(selectors) => {
                selectors.iter().flat_map(|s| s.parents.clone()).collect()
            }
            ResourceSource::Usb(bundles) => bundles
                .iter()
                .flat_map(|b| b.selectors.iter().filter_map(|s| s.port.clone()))
                .collect(),
        };
        if !addresses.is_empty() {
            pins.insert(resource.name.clone(), PinnedAddresses(addresses));
        }
    }
    pins
}
