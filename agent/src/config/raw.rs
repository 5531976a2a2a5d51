//! The KubeVirt CR as written (field names verbatim), before validation.
//!
//! Unknown fields are accepted everywhere, as KubeVirt's API server accepts them (it prunes them).
//! In the host-device entries, where a typo (`pciVendorSelecter`) would otherwise go unnoticed,
//! `validate` names each one in a warning (see `validate::unknown_fields`).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

/// Whatever the file holds: a whole `KubeVirt` object, `{configuration: ...}`, or the
/// configuration itself. Exactly one of the three shapes is used (see `Top::configuration`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Top {
    pub kind: Option<Spanned<String>>,
    pub spec: Option<Spec>,
    pub configuration: Option<Configuration>,
    pub permitted_host_devices: Option<PermittedHostDevices>,
    pub mediated_devices_configuration: Option<MediatedDevicesConfiguration>,
    pub developer_configuration: Option<DeveloperConfiguration>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Spec {
    pub configuration: Option<Configuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Configuration {
    pub permitted_host_devices: Option<PermittedHostDevices>,
    pub mediated_devices_configuration: Option<MediatedDevicesConfiguration>,
    pub developer_configuration: Option<DeveloperConfiguration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeveloperConfiguration {
    #[serde(default)]
    pub feature_gates: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PermittedHostDevices {
    #[serde(default)]
    pub pci_host_devices: Vec<PciHostDevice>,
    #[serde(default)]
    pub mediated_devices: Vec<MediatedHostDevice>,
    #[serde(default)]
    pub usb: Vec<UsbHostDevice>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PciHostDevice {
    pub pci_vendor_selector: Spanned<String>,
    pub resource_name: Spanned<String>,
    #[serde(default)]
    pub external_resource_provider: bool,
    /// hostdev extension (KubeVirt prunes it): only functions at these PCI addresses.
    #[serde(default)]
    pub pci_addresses: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediatedHostDevice {
    pub mdev_name_selector: Spanned<String>,
    pub resource_name: Spanned<String>,
    #[serde(default)]
    pub external_resource_provider: bool,
    /// hostdev extension: only mdevs whose parent is at one of these PCI addresses.
    #[serde(default)]
    pub parent_addresses: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsbHostDevice {
    pub resource_name: Spanned<String>,
    #[serde(default)]
    pub selectors: Vec<UsbSelector>,
    #[serde(default)]
    pub external_resource_provider: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsbSelector {
    pub vendor: Spanned<String>,
    pub product: Spanned<String>,
    /// hostdev extension: only the device in this port (its sysfs name, e.g. `1-1.4`).
    pub port: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediatedDevicesConfiguration {
    /// Deprecated KubeVirt spelling, read only when `mediatedDeviceTypes` is empty.
    #[serde(default)]
    pub mediated_devices_types: Vec<Spanned<String>>,
    #[serde(default)]
    pub mediated_device_types: Vec<Spanned<String>>,
    #[serde(default)]
    pub node_mediated_device_types: Vec<NodeMediatedDeviceTypes>,
    pub enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeMediatedDeviceTypes {
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default)]
    pub mediated_devices_types: Vec<Spanned<String>>,
    #[serde(default)]
    pub mediated_device_types: Vec<Spanned<String>>,
}
