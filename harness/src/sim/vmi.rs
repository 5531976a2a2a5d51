//! VirtualMachineInstances in the simulated cluster, and the control loop that moves them on.

use std::collections::BTreeMap;

use crate::cluster::launcher::Hostdev;
use crate::scenario::{Phase, VmiManifest};

/// A VMI as the cluster tracks it.
#[derive(Clone, Debug)]
pub struct VmiState {
    pub manifest: VmiManifest,
    pub phase: Phase,
    pub node: Option<String>,
    /// Why it is Pending or Failed (the scheduler's, the kubelet's or KubeVirt's message).
    pub reason: String,
    /// The pod's env from the device plugins' Allocate responses.
    pub env: BTreeMap<String, String>,
    /// Device nodes handed to the container (host paths).
    pub device_paths: Vec<String>,
    pub hostdevs: Vec<Hostdev>,
    /// The virt-launcher pod's UID, unique per apply.
    pub pod_uid: String,
    /// Extended resources the pod requests.
    pub requests: BTreeMap<String, u32>,
}

impl VmiState {
    pub fn new(manifest: VmiManifest, pod_uid: String) -> Self {
        let requests = crate::cluster::controller::resource_requests(&manifest);
        VmiState {
            manifest,
            phase: Phase::Pending,
            node: None,
            reason: String::new(),
            env: BTreeMap::new(),
            device_paths: Vec::new(),
            hostdevs: Vec::new(),
            pod_uid,
            requests,
        }
    }

    pub fn fail(&mut self, reason: impl Into<String>) {
        self.phase = Phase::Failed;
        self.reason = reason.into();
    }

    /// One line for reports: `Running on node03; env {...}; hostdevs [...]`.
    pub fn describe(&self) -> String {
        let mut s = format!("{}", self.phase);
        if let Some(n) = &self.node {
            s.push_str(&format!(" on {n}"));
        }
        if !self.reason.is_empty() {
            s.push_str(&format!(" ({})", self.reason));
        }
        if !self.env.is_empty() {
            let env: Vec<String> = self.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push_str(&format!("; env {{{}}}", env.join(", ")));
        }
        if !self.hostdevs.is_empty() {
            let h: Vec<String> = self
                .hostdevs
                .iter()
                .map(|h| format!("{:?} {} ({})", h.kind, h.source, h.alias))
                .collect();
            s.push_str(&format!("; hostdevs [{}]", h.join(", ")));
        }
        s
    }
}
