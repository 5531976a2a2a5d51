//! virt-api's admission of a VirtualMachineInstance: the checks and messages KubeVirt gives.

use std::collections::BTreeMap;

use crate::scenario::VmiManifest;

/// What admission needs from the KubeVirt configuration.
#[derive(Clone, Debug, Default)]
pub struct AdmissionConfig {
    pub feature_gates: Vec<String>,
    /// `Some` when `permittedHostDevices` is set: every requested deviceName must be in it.
    pub permitted_resources: Option<Vec<String>>,
}

/// Checks a VMI as virt-api does; `Err` carries KubeVirt's message.
pub fn admit(vmi: &VmiManifest, cfg: &AdmissionConfig) -> Result<(), String> {
    let devices = &vmi.spec.domain.devices;
    if !devices.host_devices.is_empty() && !cfg.feature_gates.iter().any(|g| g == "HostDevices") {
        return Err("Host Devices feature gate is not enabled in kubevirt-config".into());
    }
    if let Some(permitted) = &cfg.permitted_resources {
        for (kind, list) in [
            ("GPU", &devices.gpus),
            ("HostDevice", &devices.host_devices),
        ] {
            for d in list.iter() {
                if !permitted.iter().any(|p| p == &d.device_name) {
                    return Err(format!(
                        "{kind} {} is not permitted in permittedHostDevices configuration",
                        d.device_name
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The extended resources the VMI's pod requests: one per gpu/hostDevice entry.
pub fn resource_requests(vmi: &VmiManifest) -> BTreeMap<String, u32> {
    let devices = &vmi.spec.domain.devices;
    let mut out = BTreeMap::new();
    for d in devices.gpus.iter().chain(devices.host_devices.iter()) {
        *out.entry(d.device_name.clone()).or_insert(0) += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vmi(gpus: &[&str], hostdevs: &[&str]) -> VmiManifest {
        let yaml = format!(
            "kind: VirtualMachineInstance\nmetadata: {{name: v}}\nspec:\n  domain:\n    devices:\n      gpus: [{}]\n      hostDevices: [{}]\n",
            gpus.iter()
                .enumerate()
                .map(|(i, d)| format!("{{name: g{i}, deviceName: {d}}}"))
                .collect::<Vec<_>>()
                .join(", "),
            hostdevs
                .iter()
                .enumerate()
                .map(|(i, d)| format!("{{name: h{i}, deviceName: {d}}}"))
                .collect::<Vec<_>>()
                .join(", "),
        );
        serde_saphyr::from_str(&yaml).unwrap()
    }

    #[test]
    fn host_devices_need_the_feature_gate_but_gpus_do_not() {
        let cfg = AdmissionConfig::default();
        let err = admit(&vmi(&[], &["intel.com/qat"]), &cfg).unwrap_err();
        assert_eq!(
            err,
            "Host Devices feature gate is not enabled in kubevirt-config"
        );
        assert!(admit(&vmi(&["nvidia.com/T4"], &[]), &cfg).is_ok());
        let gated = AdmissionConfig {
            feature_gates: vec!["HostDevices".into()],
            permitted_resources: None,
        };
        assert!(admit(&vmi(&[], &["intel.com/qat"]), &gated).is_ok());
    }

    #[test]
    fn names_outside_the_allowlist_are_rejected() {
        let cfg = AdmissionConfig {
            feature_gates: vec!["HostDevices".into()],
            permitted_resources: Some(vec!["intel.com/qat".into()]),
        };
        assert!(admit(&vmi(&[], &["intel.com/qat"]), &cfg).is_ok());
        let err = admit(&vmi(&["nvidia.com/T4"], &[]), &cfg).unwrap_err();
        assert!(err.contains("GPU nvidia.com/T4 is not permitted"), "{err}");
        let err = admit(&vmi(&[], &["x.io/y"]), &cfg).unwrap_err();
        assert!(err.contains("HostDevice x.io/y is not permitted"), "{err}");
    }

    #[test]
    fn each_entry_requests_one_device() {
        let r = resource_requests(&vmi(&["a.io/gpu"], &["a.io/gpu", "b.io/nvme"]));
        assert_eq!(r.get("a.io/gpu"), Some(&2));
        assert_eq!(r.get("b.io/nvme"), Some(&1));
    }
}
