//! The parts of a KubeVirt `VirtualMachineInstance` manifest the simulated cluster acts on.
//!
//! Manifests are pasted verbatim from real clusters and docs, so unknown fields are accepted
//! and ignored; the fields read here are typed, so a wrong type is reported at its line.

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VmiManifest {
    #[serde(default)]
    pub api_version: Option<String>,
    pub kind: String,
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: VmiSpec,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct ObjectMeta {
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VmiSpec {
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default)]
    pub domain: Domain,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct Domain {
    #[serde(default)]
    pub devices: Devices,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(from = "RawDevices")]
pub struct Devices {
    pub gpus: Vec<DeviceRequest>,
    pub host_devices: Vec<DeviceRequest>,
    /// `hostDevices` is in the manifest, even as `[]`: virt-api's feature-gate check tests
    /// for the field (a non-nil slice), not for entries.
    pub host_devices_listed: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDevices {
    #[serde(default)]
    gpus: Vec<DeviceRequest>,
    #[serde(default)]
    host_devices: Option<Vec<DeviceRequest>>,
}

impl From<RawDevices> for Devices {
    fn from(raw: RawDevices) -> Self {
        Devices {
            gpus: raw.gpus,
            host_devices_listed: raw.host_devices.is_some(),
            host_devices: raw.host_devices.unwrap_or_default(),
        }
    }
}

/// One `gpus[]` or `hostDevices[]` entry: a VM-side name and the resource it draws from.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRequest {
    pub name: String,
    pub device_name: String,
    /// `gpus[]` only (KubeVirt's `VGPUOptions`): whether a vGPU's display and ramfb are on.
    #[serde(default, rename = "virtualGPUOptions")]
    pub virtual_gpu_options: Option<VgpuOptions>,
}

/// `virtualGPUOptions`: KubeVirt's pointers are `Option`s here, since an absent field and a
/// `false` one differ (absent `enabled` means on).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct VgpuOptions {
    #[serde(default)]
    pub display: Option<VgpuDisplay>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct VgpuDisplay {
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default, rename = "ramFB")]
    pub ram_fb: Option<FeatureState>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct FeatureState {
    #[serde(default)]
    pub enabled: Option<bool>,
}

impl VmiManifest {
    /// Checks what serde cannot: the kind and API group, unique device names.
    pub fn check(&self) -> Result<(), String> {
        if self.kind != "VirtualMachineInstance" {
            return Err(format!(
                "kind {:?} is not supported by apply (expected VirtualMachineInstance)",
                self.kind
            ));
        }
        if let Some(v) = &self.api_version
            && !v.starts_with("kubevirt.io/")
        {
            return Err(format!("apiVersion {v:?} is not a kubevirt.io version"));
        }
        if self.metadata.name.is_empty() {
            return Err("metadata.name is empty".into());
        }
        let devices = &self.spec.domain.devices;
        let mut seen = std::collections::BTreeSet::new();
        for (list, entries) in [
            ("gpus", &devices.gpus),
            ("hostDevices", &devices.host_devices),
        ] {
            for (i, d) in entries.iter().enumerate() {
                if !seen.insert(d.name.as_str()) {
                    return Err(format!(
                        "spec.domain.devices.{list}[{i}].name {:?} is used twice",
                        d.name
                    ));
                }
                if d.device_name.is_empty() {
                    return Err(format!(
                        "spec.domain.devices.{list}[{i}].deviceName is empty"
                    ));
                }
            }
        }
        Ok(())
    }
}
