//! The `host:` mapping of a scenario: raw YAML structs, then validated [`HostSpec`].
//!
//! Parsing is two-staged, like every input of the project: serde reads [`RawHost`] (every
//! validated field is a [`Spanned`] so errors can point at it), then [`RawHost::validate`] turns
//! it into a [`HostSpec`] or a [`SpecError`] naming file, line, column and field. A harness that
//! reads a bigger document embeds [`RawHost`] (or [`RawPci`] / [`RawUsb`] for `plug` steps) in
//! its own structs; the spans are then positions in that document, and the same validation
//! applies.

mod address;
pub mod validate;

pub use address::{PciAddress, parse_hex_id};

use std::path::Path;

use serde::Deserialize;
use serde_saphyr::Spanned;

/// A whole host, as a host file or a scenario's `host:` holds it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawHost {
    /// Default true; false = booted without `intel_iommu=on` (no IOMMU groups, vfio-pci fails).
    #[serde(default)]
    pub iommu: Option<bool>,
    /// Loaded drivers; default: every driver named below plus vfio-pci.
    #[serde(default)]
    pub modules: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub pci: Vec<Spanned<RawPci>>,
    #[serde(default)]
    pub usb: Vec<Spanned<RawUsb>>,
}

/// One PCI function of a host file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawPci {
    pub address: Spanned<String>,
    /// `vendor:device`, hex.
    #[serde(default)]
    pub id: Option<Spanned<String>>,
    /// Six hex digits, `010802`.
    #[serde(default)]
    pub class: Option<Spanned<String>>,
    /// Subsystem `vendor:device`, hex.
    #[serde(default)]
    pub subsystem: Option<Spanned<String>>,
    /// Two hex digits.
    #[serde(default)]
    pub revision: Option<Spanned<String>>,
    /// Bound at start; `none` leaves a preset's device unbound.
    #[serde(default)]
    pub driver: Option<Spanned<String>>,
    #[serde(default)]
    pub iommu_group: Option<Spanned<u32>>,
    #[serde(default)]
    pub numa_node: Option<i32>,
    #[serde(default)]
    pub irq: Option<u32>,
    #[serde(default)]
    pub preset: Option<Spanned<String>>,
    #[serde(default)]
    pub mdev_types: Option<Vec<Spanned<RawMdevType>>>,
    /// SR-IOV capability: how many VFs `sriov_numvfs` may enable.
    #[serde(default)]
    pub total_vfs: Option<u16>,
    /// The VFs' device id (hex); default the PF's.
    #[serde(default)]
    pub vf_device: Option<Spanned<String>>,
    /// The bridge this function sits behind (its sysfs dir nests under the bridge's).
    #[serde(default)]
    pub parent: Option<Spanned<String>>,
    /// A PCI bridge (header type 1); default: true for class 0604.
    #[serde(default)]
    pub bridge: Option<bool>,
}

/// A mediated device type a parent offers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawMdevType {
    /// `<driver>-<name>`: the driver that registers it is the part before the first `-`.
    pub id: Spanned<String>,
    pub name: String,
    pub available_instances: u32,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub device_api: Option<String>,
}

/// One USB device.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawUsb {
    pub bus: Spanned<u8>,
    /// Port path below the root hub: `1`, `1.4`.
    pub port: Spanned<String>,
    #[serde(default)]
    pub id: Option<Spanned<String>>,
    #[serde(default)]
    pub preset: Option<Spanned<String>>,
    #[serde(default)]
    pub manufacturer: Option<String>,
    #[serde(default)]
    pub product: Option<String>,
    #[serde(default)]
    pub serial: Option<String>,
    /// Mbit/s as sysfs spells it: `1.5`, `12`, `480`, `5000`, `10000`, `20000`.
    #[serde(default)]
    pub speed: Option<Spanned<String>>,
    /// bDeviceClass, two hex digits.
    #[serde(default)]
    pub class: Option<Spanned<String>>,
    /// bInterfaceClass of its one interface, two hex digits.
    #[serde(default)]
    pub interface_class: Option<Spanned<String>>,
    #[serde(default)]
    pub devnum: Option<Spanned<u8>>,
    /// bcdDevice, four hex digits.
    #[serde(default)]
    pub bcd_device: Option<Spanned<String>>,
}

/// A validated host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostSpec {
    pub iommu: bool,
    /// Module names as `/sys/module` spells them (`vfio_pci`), in load order.
    pub modules: Vec<String>,
    pub pci: Vec<PciSpec>,
    pub usb: Vec<UsbSpec>,
}

/// A validated PCI function.
#[derive(Debug, Clone, PartialEq)]
pub struct PciSpec {
    pub address: PciAddress,
    pub vendor: u16,
    pub device: u16,
    /// 24 bits: base class, subclass, prog-if.
    pub class: u32,
    pub subsystem_vendor: u16,
    pub subsystem_device: u16,
    pub revision: u8,
    /// Driver name (`vfio-pci`, `nvme`) bound at start or at plug.
    pub driver: Option<String>,
    pub iommu_group: Option<u32>,
    pub numa_node: i32,
    pub irq: Option<u32>,
    pub mdev_types: Vec<MdevTypeSpec>,
    pub total_vfs: u16,
    pub vf_device: Option<u16>,
    pub parent: Option<PciAddress>,
    pub bridge: bool,
}

impl PciSpec {
    /// A plain endpoint with the given identity; other fields at their defaults.
    pub fn new(address: PciAddress, vendor: u16, device: u16, class: u32) -> PciSpec {
        PciSpec {
            address,
            vendor,
            device,
            class,
            subsystem_vendor: vendor,
            subsystem_device: 0,
            revision: 0,
            driver: None,
            iommu_group: None,
            numa_node: -1,
            irq: None,
            mdev_types: Vec::new(),
            total_vfs: 0,
            vf_device: None,
            parent: None,
            bridge: class >> 8 == 0x0604,
        }
    }
}

/// A validated mediated device type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdevTypeSpec {
    pub id: String,
    pub name: String,
    /// Instances when the parent has no mdevs.
    pub max_instances: u32,
    pub description: Option<String>,
    pub device_api: String,
}

impl MdevTypeSpec {
    /// The driver that registers this type: the id's part before the first `-`.
    pub fn driver(&self) -> &str {
        self.id.split('-').next().unwrap_or("")
    }
}

/// A validated USB device.
#[derive(Debug, Clone, PartialEq)]
pub struct UsbSpec {
    pub bus: u8,
    /// Port path below the root hub (`1`, `1.4`).
    pub port: String,
    pub vendor: u16,
    pub product_id: u16,
    pub bcd_device: u16,
    pub manufacturer: Option<String>,
    pub product: Option<String>,
    pub serial: Option<String>,
    pub speed: UsbSpeed,
    pub class: u8,
    pub interface_class: u8,
    pub devnum: Option<u8>,
}

impl UsbSpec {
    /// The sysfs name: `1-1.4`.
    pub fn name(&self) -> String {
        format!("{}-{}", self.bus, self.port)
    }
}

/// USB link speeds, as sysfs `speed` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsbSpeed {
    Low,
    Full,
    High,
    Super,
    SuperPlus,
    SuperPlus2x2,
}

impl UsbSpeed {
    pub fn parse(s: &str) -> Option<UsbSpeed> {
        Some(match s.trim() {
            "1.5" => UsbSpeed::Low,
            "12" => UsbSpeed::Full,
            "480" => UsbSpeed::High,
            "5000" => UsbSpeed::Super,
            "10000" => UsbSpeed::SuperPlus,
            "20000" => UsbSpeed::SuperPlus2x2,
            _ => return None,
        })
    }
    /// The `speed` attribute (without newline).
    pub fn sysfs(self) -> &'static str {
        match self {
            UsbSpeed::Low => "1.5",
            UsbSpeed::Full => "12",
            UsbSpeed::High => "480",
            UsbSpeed::Super => "5000",
            UsbSpeed::SuperPlus => "10000",
            UsbSpeed::SuperPlus2x2 => "20000",
        }
    }
    /// bcdUSB a device at this speed reports.
    pub fn bcd_usb(self) -> u16 {
        match self {
            UsbSpeed::Low | UsbSpeed::Full => 0x0110,
            UsbSpeed::High => 0x0200,
            UsbSpeed::Super => 0x0300,
            UsbSpeed::SuperPlus => 0x0310,
            UsbSpeed::SuperPlus2x2 => 0x0320,
        }
    }
}

/// A host file that cannot be used; every variant names where.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}:{column}: {message}")]
    Yaml {
        file: String,
        line: u64,
        column: u64,
        message: String,
    },
    #[error("{file}:{line}:{column}: {field}: {message}")]
    Invalid {
        file: String,
        line: u64,
        column: u64,
        /// `pci[2].address`.
        field: String,
        message: String,
    },
    /// A valid host file whose initial state the kernel refuses (e.g. a bind that fails).
    #[error("host cannot be built: {0}")]
    Build(#[source] crate::kernel::KernelError),
}

impl SpecError {
    /// (line, column) when the error has a position.
    pub fn position(&self) -> Option<(u64, u64)> {
        match self {
            SpecError::Io { .. } | SpecError::Build(_) => None,
            SpecError::Yaml { line, column, .. } | SpecError::Invalid { line, column, .. } => {
                Some((*line, *column))
            }
        }
    }
}

impl HostSpec {
    /// Parses and validates a host file's text; `file` names it in errors.
    pub fn from_yaml_str(text: &str, file: &str) -> Result<HostSpec, SpecError> {
        let raw: RawHost = if text.trim().is_empty() {
            RawHost::default()
        } else {
            serde_saphyr::from_str(text).map_err(|e| yaml_error(file, &e))?
        };
        raw.validate(file)
    }

    /// Reads, parses and validates a host file.
    pub fn load(path: impl AsRef<Path>) -> Result<HostSpec, SpecError> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Io {
            file: file.clone(),
            source,
        })?;
        HostSpec::from_yaml_str(&text, &file)
    }
}

impl RawHost {
    /// Validates a host read by serde; positions come from the spans, so they are positions in
    /// whatever document the host was read from.
    pub fn validate(&self, file: &str) -> Result<HostSpec, SpecError> {
        validate::host(self, file)
    }
}

impl RawPci {
    /// Validates one PCI function on its own (a `plug` step). `modules` are the loaded modules
    /// when known: a `driver:` outside them is an error.
    pub fn validate(
        &self,
        file: &str,
        field: &str,
        modules: Option<&[String]>,
    ) -> Result<PciSpec, SpecError> {
        validate::pci(self, file, field, modules)
    }
}

impl RawUsb {
    /// Validates one USB device on its own (a `plug` step).
    pub fn validate(&self, file: &str, field: &str) -> Result<UsbSpec, SpecError> {
        validate::usb(self, file, field)
    }
}

/// A YAML syntax or shape error, with its position.
pub fn yaml_error(file: &str, e: &serde_saphyr::Error) -> SpecError {
    let (line, column) = e
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0));
    // The bare message: the position is ours to print, and a snippet would repeat it.
    let message = serde_saphyr::MessageFormatter::format_message(
        &serde_saphyr::DefaultMessageFormatter,
        e.without_snippet(),
    )
    .chars()
    .map(|c| if c.is_control() { ' ' } else { c })
    .collect();
    SpecError::Yaml {
        file: file.to_owned(),
        line,
        column,
        message,
    }
}

/// The module name `/sys/module` shows for a module or driver name (`vfio-pci` -> `vfio_pci`).
pub fn module_name(name: &str) -> String {
    name.replace('-', "_")
}

#[cfg(test)]
mod tests;
