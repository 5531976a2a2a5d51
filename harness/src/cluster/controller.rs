//! virt-controller's rendering of a VMI's virt-launcher pod: the permitted-device check and
//! the extended resources the pod requests.
//!
//! KubeVirt checks `permittedHostDevices` here, not at admission: a VMI naming a device that
//! is not permitted is created, and stays Pending while the controller fails to render its pod
//! (and retries, so a later configuration that permits the device lets it start).

use std::collections::BTreeMap;

use super::admission::AdmissionConfig;
use crate::scenario::VmiManifest;

/// The reason virt-controller gives when it cannot create the pod (its event and the VMI's
/// `Synchronized` condition).
pub const FAILED_CREATE: &str = "FailedCreate";

/// Renders the pod as far as host devices go: `Err` is the VMI's Pending reason,
/// `FailedCreate: failed to render launch manifest: ...` with every offender, space-joined as
/// virt-controller joins them.
pub fn render_pod(vmi: &VmiManifest, cfg: &AdmissionConfig) -> Result<(), String> {
    let Some(permitted) = &cfg.permitted_resources else {
        return Ok(());
    };
    let devices = &vmi.spec.domain.devices;
    let mut errors = Vec::new();
    for (kind, list) in [
        ("GPU", &devices.gpus),
        ("HostDevice", &devices.host_devices),
    ] {
        for d in list {
            if !permitted.iter().any(|p| p == &d.device_name) {
                errors.push(format!(
                    "{kind} {} is not permitted in permittedHostDevices configuration",
                    d.device_name
                ));
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{FAILED_CREATE}: failed to render launch manifest: {}",
            errors.join(" ")
        ))
    }
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
        let list = |prefix: &str, names: &[&str]| {
            names
                .iter()
                .enumerate()
                .map(|(i, d)| format!("{{name: {prefix}{i}, deviceName: {d}}}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let yaml = format!(
            "kind: VirtualMachineInstance\nmetadata: {{name: v}}\nspec:\n  domain:\n    devices:\n      gpus: [{}]\n      hostDevices: [{}]\n",
            list("g", gpus),
            list("h", hostdevs)
        );
        serde_saphyr::from_str(&yaml).unwrap()
    }

    fn permitting(names: &[&str]) -> AdmissionConfig {
        AdmissionConfig {
            feature_gates: vec!["HostDevices".into()],
            permitted_resources: Some(names.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn every_offender_is_named_in_one_failed_create_message() {
        let cfg = permitting(&["intel.com/qat"]);
        assert!(render_pod(&vmi(&[], &["intel.com/qat"]), &cfg).is_ok());
        let err =
            render_pod(&vmi(&["nvidia.com/T4"], &["intel.com/qat", "x.io/y"]), &cfg).unwrap_err();
        assert_eq!(
            err,
            "FailedCreate: failed to render launch manifest: GPU nvidia.com/T4 is not permitted in \
             permittedHostDevices configuration HostDevice x.io/y is not permitted in \
             permittedHostDevices configuration"
        );
    }

    #[test]
    fn without_permitted_host_devices_anything_renders() {
        let cfg = AdmissionConfig::default();
        assert!(render_pod(&vmi(&["a.io/g"], &["b.io/h"]), &cfg).is_ok());
    }

    #[test]
    fn each_entry_requests_one_device() {
        let r = resource_requests(&vmi(&["a.io/gpu"], &["a.io/gpu", "b.io/nvme"]));
        assert_eq!(r.get("a.io/gpu"), Some(&2));
        assert_eq!(r.get("b.io/nvme"), Some(&1));
    }
}
