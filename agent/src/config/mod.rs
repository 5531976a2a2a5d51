//! Configuration: the KubeVirt CR format, verbatim, validated into [`AgentConfig`].
//!
//! The file may hold a whole `KubeVirt` object, `{configuration: ...}` or `spec.configuration`
//! itself, in YAML or JSON. Field paths in errors are relative to the configuration
//! (`permittedHostDevices.usb[1].selectors[0].vendor`), with the file's line:column.
//!
//! The file is rejected only for what KubeVirt's CRD rejects (a missing required field, a value
//! of the wrong type) and for YAML/JSON syntax; on reload, the last good configuration keeps
//! serving. Everything else KubeVirt accepts is accepted, and what is odd is a warning in
//! [`AgentConfig::rejected`] naming the field (shown by `hostdev-agent discover` and logged):
//! - a malformed selector or id (`pciVendorSelector: "10de"`, `vendor: "xyz"`), an empty
//!   `mdevNameSelector` or `selectors`: it can never match, so the entry is not served;
//! - an unknown field in a host-device entry: ignored, as KubeVirt's API server prunes it;
//! - a `resourceName` the kubelet would refuse (no `/`, bad characters, `kubernetes.io`
//!   domain): the entry is not served;
//! - two of KubeVirt's own PCI or mdev entries with the same selector: the later entry's
//!   resourceName wins (KubeVirt keeps them in a map keyed by selector);
//! - entries of one kind sharing a `resourceName` merge into one resource whose selector set
//!   is the union (one plugin); a later entry of another kind, or with a different
//!   `externalResourceProvider`, under the same name is not served (KubeVirt would start two
//!   plugins under one name).
//!
//! hostdev extensions (KubeVirt prunes unknown fields, so the same CR still works there):
//! `pciHostDevices[].pciAddresses`, `mediatedDevices[].parentAddresses`, `usb[].selectors[].port`
//! narrow an entry to specific devices, so a resource can name exactly one NVMe drive or one
//! USB port (the per-address choice KubeVirt users asked for in #11815 and #13754).

mod labels;
mod raw;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

pub use labels::{LabelsError, NodeLabels};
pub use validate::{is_usb_port, normalize_mdev_name, normalize_pci_address};

use crate::inventory::DeviceKind;

/// Which permitted entries this agent serves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum ServeMode {
    /// The entries KubeVirt serves itself (`externalResourceProvider` false).
    #[default]
    Kubevirt,
    /// The entries left to an external provider (`externalResourceProvider: true`).
    External,
    /// Both.
    All,
}

impl ServeMode {
    /// The flag value: `kubevirt`, `external`, `all`.
    pub fn as_str(self) -> &'static str {
        match self {
            ServeMode::Kubevirt => "kubevirt",
            ServeMode::External => "external",
            ServeMode::All => "all",
        }
    }

    pub fn serves(self, external: bool) -> bool {
        match self {
            ServeMode::Kubevirt => !external,
            ServeMode::External => external,
            ServeMode::All => true,
        }
    }
}

/// The validated configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentConfig {
    /// Where it came from (a file path, or what the caller of [`parse`] said).
    pub origin: String,
    /// Which resources discovery serves; set by the caller (the file does not say).
    pub serve: ServeMode,
    /// Permitted resources, merged by name, in the order their first entry appears.
    pub resources: Vec<ResourceConfig>,
    pub mdev_types: MdevTypesConfig,
    pub feature_gates: Vec<String>,
    /// Warnings: entries not served and fields ignored, each naming the field and why.
    pub rejected: Vec<FieldError>,
}

impl AgentConfig {
    /// The resources this agent serves under `self.serve`.
    pub fn served(&self) -> impl Iterator<Item = &ResourceConfig> {
        self.resources
            .iter()
            .filter(|r| self.serve.serves(r.external))
    }

    pub fn feature_gate(&self, gate: &str) -> bool {
        self.feature_gates.iter().any(|g| g == gate)
    }

    pub fn with_serve(mut self, serve: ServeMode) -> Self {
        self.serve = serve;
        self
    }
}

/// One permitted resource (one device plugin).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceConfig {
    pub name: String,
    pub external: bool,
    pub source: ResourceSource,
    /// The config entries it was built from (`permittedHostDevices.pciHostDevices[0]`).
    pub entries: Vec<String>,
}

impl ResourceConfig {
    pub fn kind(&self) -> DeviceKind {
        match self.source {
            ResourceSource::Pci(_) => DeviceKind::Pci,
            ResourceSource::Mdev(_) => DeviceKind::Mdev,
            ResourceSource::Usb(_) => DeviceKind::Usb,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResourceSource {
    Pci(Vec<PciSelector>),
    Mdev(Vec<MdevSelector>),
    /// One bundle per USB entry.
    Usb(Vec<UsbBundle>),
}

/// A PCI vendor:device selector, optionally pinned to addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciSelector {
    pub vendor: u16,
    pub device: u16,
    /// Lower-case `dddd:bb:dd.f`; empty means any address.
    pub addresses: Vec<String>,
    /// Position of its entry in `pciHostDevices` (earlier entries win an IOMMU group).
    pub order: usize,
    pub field: String,
}

impl PciSelector {
    pub fn matches(&self, vendor: u16, device: u16, address: &str) -> bool {
        self.vendor == vendor
            && self.device == device
            && (self.addresses.is_empty() || self.addresses.iter().any(|a| a == address))
    }
}

/// An mdev type-name selector (spaces already replaced by `_`, trimmed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MdevSelector {
    pub name: String,
    /// Lower-case parent PCI addresses; empty means any parent.
    pub parents: Vec<String>,
    pub order: usize,
    pub field: String,
}

impl MdevSelector {
    pub fn matches(&self, normalized_type_name: &str, parent: &str) -> bool {
        self.name == normalized_type_name
            && (self.parents.is_empty() || self.parents.iter().any(|p| p == parent))
    }
}

/// A USB entry: all its selectors must be filled for one kubelet device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsbBundle {
    pub selectors: Vec<UsbSelector>,
    /// Position of its entry in `usb` (earlier entries pick devices first).
    pub order: usize,
    pub field: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsbSelector {
    pub vendor: u16,
    pub product: u16,
    /// The sysfs name of the port (`1-1.4`) when pinned.
    pub port: Option<String>,
    pub field: String,
}

impl UsbSelector {
    pub fn matches(&self, vendor: u16, product: u16, path: &str) -> bool {
        self.vendor == vendor
            && self.product == product
            && self.port.as_deref().is_none_or(|p| p == path)
    }
}

/// `mediatedDevicesConfiguration`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MdevTypesConfig {
    /// False when the section is absent (deliberately unlike KubeVirt, which then removes every
    /// mdev it did not make), `enabled: false`, or the `DisableMDEVConfiguration` gate is set
    /// and `enabled` is not written: the agent then leaves mdevs alone.
    pub managed: bool,
    pub global: Vec<String>,
    pub per_node: Vec<NodeMdevTypes>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeMdevTypes {
    pub node_selector: BTreeMap<String, String>,
    pub types: Vec<String>,
}

impl MdevTypesConfig {
    /// The types wanted on a node: the union of every matching node entry's list; the global
    /// list when no entry matches or the matching ones name no type (as KubeVirt does).
    pub fn desired_for(&self, labels: &NodeLabels) -> Vec<String> {
        let mut types: Vec<String> = Vec::new();
        for node in &self.per_node {
            if labels.matches(&node.node_selector) {
                for t in &node.types {
                    if !types.contains(t) {
                        types.push(t.clone());
                    }
                }
            }
        }
        if types.is_empty() {
            self.global.clone()
        } else {
            types
        }
    }
}

/// One problem with one field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Path from the configuration: `permittedHostDevices.usb[1].selectors[0].vendor`.
    pub field: String,
    pub message: String,
    /// 1-based line and column in the file, when known.
    pub line: Option<u64>,
    pub column: Option<u64>,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let (Some(l), Some(c)) = (self.line, self.column) {
            write!(f, "{l}:{c}: ")?;
        }
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Why a configuration file was not used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{origin}:{line}:{column}: {message}")]
    Syntax {
        origin: String,
        line: u64,
        column: u64,
        message: String,
    },
    #[error("{}", list_problems(.origin, .problems))]
    Invalid {
        origin: String,
        problems: Vec<FieldError>,
    },
}

/// `file:line:col: field: message`, one per line after a count when there are several.
fn list_problems(origin: &str, problems: &[FieldError]) -> String {
    let lines: Vec<String> = (problems.iter())
        .map(|p| {
            if p.line.is_some() {
                format!("{origin}:{p}")
            } else {
                format!("{origin}: {p}")
            }
        })
        .collect();
    match lines.len() {
        1 => lines[0].clone(),
        n => format!("{origin}: {n} problems:\n  {}", lines.join("\n  ")),
    }
}

/// Reads and validates a configuration file.
pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(&text, &path.display().to_string())
}

/// Validates configuration text (YAML or JSON); `origin` names it in errors.
pub fn parse(text: &str, origin: &str) -> Result<AgentConfig, ConfigError> {
    validate::parse(text, origin)
}
