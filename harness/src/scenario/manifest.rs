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
#[serde(rename_all = "camelCase")]
pub struct Devices {
    #[serde(default)]
    pub gpus: Vec<DeviceRequest>,
    #[serde(default)]
    pub host_devices: Vec<DeviceRequest>,
}

/// One `gpus[]` or `hostDevices[]` entry: a VM-side name and the resource it draws from.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRequest {
    pub name: String,
    pub device_name: String,
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
