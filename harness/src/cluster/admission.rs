//! virt-api's admission of a VirtualMachineInstance: the checks and messages KubeVirt gives.
//!
//! Only what virt-api itself checks lives here; `permittedHostDevices` is virt-controller's
//! check when it renders the pod ([`super::controller`]).

use crate::scenario::VmiManifest;

/// What the control plane reads of the KubeVirt configuration.
#[derive(Clone, Debug, Default)]
pub struct AdmissionConfig {
    pub feature_gates: Vec<String>,
    /// `Some` when `permittedHostDevices` is set: every requested deviceName must be in it.
    pub permitted_resources: Option<Vec<String>>,
}

/// Checks a VMI as virt-api does; `Err` carries KubeVirt's message(s), `; `-joined.
pub fn admit(vmi: &VmiManifest, cfg: &AdmissionConfig) -> Result<(), String> {
    let devices = &vmi.spec.domain.devices;
    let mut causes = Vec::new();
    // virt-api tests for the field, so `hostDevices: []` needs the gate too.
    if devices.host_devices_listed && !cfg.feature_gates.iter().any(|g| g == "HostDevices") {
        causes.push("Host Devices feature gate is not enabled in kubevirt-config");
    }
    if ramfb_displays(vmi) > 1 {
        causes.push("configuring multiple displays with ramfb is not valid");
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(causes.join("; "))
    }
}

/// GPUs whose `virtualGPUOptions` ask for a display with ramfb, counted as virt-api counts them:
/// only explicit options count (a GPU without options gets ramfb by default in virt-launcher,
/// yet is not counted), and an explicit `ramFB` needs `enabled: true`.
fn ramfb_displays(vmi: &VmiManifest) -> usize {
    vmi.spec
        .domain
        .devices
        .gpus
        .iter()
        .filter_map(|g| g.virtual_gpu_options.as_ref()?.display.as_ref())
        .filter(|d| d.enabled != Some(false))
        .filter(|d| d.ram_fb.as_ref().is_none_or(|r| r.enabled == Some(true)))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vmi(devices: &str) -> VmiManifest {
        let yaml = format!(
            "kind: VirtualMachineInstance\nmetadata: {{name: v}}\nspec:\n  domain:\n    devices:\n{devices}"
        );
        serde_saphyr::from_str(&yaml).unwrap()
    }

    const GATE_MESSAGE: &str = "Host Devices feature gate is not enabled in kubevirt-config";

    #[test]
    fn host_devices_need_the_feature_gate_but_gpus_do_not() {
        let cfg = AdmissionConfig::default();
        let hostdev = vmi("      hostDevices: [{name: h, deviceName: intel.com/qat}]\n");
        assert_eq!(admit(&hostdev, &cfg).unwrap_err(), GATE_MESSAGE);
        let gpu = vmi("      gpus: [{name: g, deviceName: nvidia.com/T4}]\n");
        assert!(admit(&gpu, &cfg).is_ok());
        let gated = AdmissionConfig {
            feature_gates: vec!["HostDevices".into()],
            permitted_resources: None,
        };
        assert!(admit(&hostdev, &gated).is_ok());
    }

    #[test]
    fn an_empty_host_devices_list_needs_the_gate_too() {
        let cfg = AdmissionConfig::default();
        assert_eq!(
            admit(&vmi("      hostDevices: []\n"), &cfg).unwrap_err(),
            GATE_MESSAGE
        );
        assert!(admit(&vmi("      gpus: []\n"), &cfg).is_ok());
    }

    #[test]
    fn admission_no_longer_checks_the_allowlist() {
        // virt-controller does, when rendering the pod (controller::render_pod).
        let cfg = AdmissionConfig {
            feature_gates: vec!["HostDevices".into()],
            permitted_resources: Some(vec![]),
        };
        assert!(
            admit(
                &vmi("      hostDevices: [{name: h, deviceName: x.io/y}]\n"),
                &cfg
            )
            .is_ok()
        );
    }

    #[test]
    fn two_explicit_ramfb_displays_are_rejected() {
        let cfg = AdmissionConfig::default();
        let two = vmi(
            "      gpus:\n        - {name: a, deviceName: n.com/v, virtualGPUOptions: {display: {enabled: true}}}\n        - {name: b, deviceName: n.com/v, virtualGPUOptions: {display: {ramFB: {enabled: true}}}}\n",
        );
        assert_eq!(
            admit(&two, &cfg).unwrap_err(),
            "configuring multiple displays with ramfb is not valid"
        );
        let one = vmi(
            "      gpus:\n        - {name: a, deviceName: n.com/v, virtualGPUOptions: {display: {enabled: true}}}\n        - {name: b, deviceName: n.com/v, virtualGPUOptions: {display: {ramFB: {enabled: false}}}}\n        - {name: c, deviceName: n.com/v}\n",
        );
        assert!(admit(&one, &cfg).is_ok());
    }
}
