//! Scenario files as written: serde structs mirroring `shared/scenario-format.md`.
//!
//! Every place a later check may need to point at carries its source location (`Spanned`), so
//! validation errors name the line and column of the offending value, not just the file.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::agent::{AgentChoice, KubeletChoice, StopSignal};
use super::duration::HumanDuration;
use super::expected::Expected;
use super::manifest::VmiManifest;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawScenario {
    pub name: Spanned<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub seed: Option<u64>,
    /// A whole KubeVirt CR or its `spec.configuration`.
    #[serde(default)]
    pub kubevirt: Option<Spanned<serde_json::Value>>,
    /// The agent of every node that does not choose its own (default `hostdev`, in process).
    #[serde(default)]
    pub agent: Option<Spanned<AgentChoice>>,
    /// The kubelet of every node (default `fake`).
    #[serde(default)]
    pub kubelet: Option<Spanned<KubeletChoice>>,
    /// A known defect of KubeVirt's own device plugins this scenario shows (`kubevirt#7084`):
    /// with `agent: kubevirt` the scenario is expected to fail (the compatibility table says so).
    #[serde(default)]
    pub upstream_defect: Option<String>,
    pub nodes: Vec<Spanned<RawNode>>,
    #[serde(default)]
    pub steps: Vec<Spanned<Step>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawNode {
    pub name: Spanned<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// This node's agent, over the scenario's `agent:`.
    #[serde(default)]
    pub agent: Option<Spanned<AgentChoice>>,
    /// The synthetic host: the mocksys host-file mapping, checked by mocksys.
    #[serde(default)]
    pub host: mocksys::spec::RawHost,
}

/// One step. The YAML key names the kind: `- vfioBind: {...}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub enum Step {
    VfioBind(VfioBind),
    Write(Write),
    Modprobe(Modprobe),
    Plug(Box<Plug>),
    Unplug(Unplug),
    Configure(Configure),
    Restart(Restart),
    Fault(Fault),
    Apply(Box<Spanned<VmiManifest>>),
    Delete(Delete),
    Expect(Box<Expect>),
}

impl Step {
    pub fn kind(&self) -> &'static str {
        match self {
            Step::VfioBind(_) => "vfioBind",
            Step::Write(_) => "write",
            Step::Modprobe(_) => "modprobe",
            Step::Plug(_) => "plug",
            Step::Unplug(_) => "unplug",
            Step::Configure(_) => "configure",
            Step::Restart(_) => "restart",
            Step::Fault(_) => "fault",
            Step::Apply(_) => "apply",
            Step::Delete(_) => "delete",
            Step::Expect(_) => "expect",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VfioBind {
    pub node: Spanned<String>,
    /// A PCI address.
    pub device: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Write {
    pub node: Spanned<String>,
    /// An absolute path under `/sys`.
    pub path: Spanned<String>,
    pub value: String,
    /// The errno the write must fail with (`EBUSY`); absent: it must succeed.
    #[serde(default)]
    pub expect_error: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Modprobe {
    pub node: Spanned<String>,
    pub module: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plug {
    pub node: Spanned<String>,
    /// A PCI function, in the host file's `pci:` item shape.
    #[serde(default)]
    pub pci: Option<Spanned<mocksys::spec::RawPci>>,
    /// A USB device, in the host file's `usb:` item shape.
    #[serde(default)]
    pub usb: Option<Spanned<mocksys::spec::RawUsb>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unplug {
    pub node: Spanned<String>,
    /// A PCI address.
    #[serde(default)]
    pub pci: Option<Spanned<String>>,
    /// A USB port path such as `1-1` or `1-1.4`.
    #[serde(default)]
    pub usb: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Configure {
    pub kubevirt: Spanned<serde_json::Value>,
    /// Skip KubeVirt's CRD check: the CR reaches the agents as written, as a ConfigMap copy of
    /// it would (no API server in between). For scenarios about a broken configuration.
    #[serde(default)]
    pub unchecked: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Restart {
    pub node: Spanned<String>,
    pub component: Component,
    /// For the agent: `TERM` (default: stop, then start again) or `KILL` (killed mid-flight).
    #[serde(default)]
    pub signal: Option<Spanned<StopSignal>>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Component {
    Kubelet,
    Agent,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    pub node: Spanned<String>,
    /// An absolute path under `/sys`.
    pub path: Spanned<String>,
    /// `EIO`, `ENODEV`, ... ; absent with `latency` alone.
    #[serde(default)]
    pub errno: Option<Spanned<String>>,
    /// How many operations fail: a number, or `always` (default 1).
    #[serde(default)]
    pub times: Option<Times>,
    /// `read`, `write` or `both` (default `read`).
    #[serde(default)]
    pub on: Option<FaultOp>,
    /// Added delay for each matching operation.
    #[serde(default)]
    pub latency: Option<HumanDuration>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Times {
    Count(u32),
    Word(TimesWord),
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum TimesWord {
    Always,
    Once,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum FaultOp {
    Read,
    Write,
    Both,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delete {
    pub vmi: Spanned<String>,
}

/// A condition that must hold, waited for up to `timeout` (default 5s).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Expect {
    /// The node the node checks look at (a name), or the node a VMI must run on (a name,
    /// `oneOf` or `pattern`).
    #[serde(default)]
    pub node: Option<Spanned<Expected<String>>>,
    /// Per resource name, on `node`: healthy devices, as the node's status reports them (does
    /// not fall when devices are handed out).
    #[serde(default)]
    pub allocatable: Option<BTreeMap<String, Expected<i64>>>,
    /// Per resource name, on `node`: healthy and unhealthy devices.
    #[serde(default)]
    pub capacity: Option<BTreeMap<String, Expected<i64>>>,
    /// Per resource name, on `node`: devices the kubelet has handed to containers (what
    /// `kubectl describe node` shows under "Allocated resources").
    #[serde(default)]
    pub allocated: Option<BTreeMap<String, Expected<i64>>>,
    /// A path under `/sys` or `/dev` on `node`, with `exists`.
    #[serde(default)]
    pub file: Option<Spanned<String>>,
    #[serde(default)]
    pub exists: Option<bool>,
    /// A substring of the agent's last rejected-configuration message on `node` (for an
    /// external agent: of a line it logged since it last started).
    #[serde(default)]
    pub config_error: Option<String>,
    /// A substring of a line the agent of `node` logged since it last started (an external
    /// agent's stdout or stderr; the in-process agent's log).
    #[serde(default)]
    pub agent_log: Option<String>,
    /// The agent of `node` has exited: its exit code (`"1"`) or the signal that killed it
    /// (`"SIGSEGV"`). Without this, an agent that exits on its own fails the scenario.
    #[serde(default)]
    pub agent_exit: Option<Expected<String>>,
    #[serde(default)]
    pub vmi: Option<Spanned<String>>,
    #[serde(default)]
    pub phase: Option<Expected<Phase>>,
    /// A substring of the VMI's condition message.
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub env: Option<BTreeMap<String, Expected<String>>>,
    #[serde(default)]
    pub hostdevs: Option<Vec<ExpectedHostdev>>,
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Scheduled,
    Running,
    Failed,
    Succeeded,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// One libvirt `<hostdev>` the VM must have.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExpectedHostdev {
    #[serde(rename = "type")]
    pub kind: HostdevType,
    pub source: Expected<String>,
    #[serde(default)]
    pub alias: Option<Expected<String>>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum HostdevType {
    Pci,
    Mdev,
    Usb,
}
