//! Broken scenarios of each kind give one error naming the line and column.

use hostdev_harness::scenario::{self, Span};

const GOOD: &str = r#"name: ok
nodes:
  - name: node01
    host:
      pci:
        - {address: "0000:05:00.0", preset: qemu-nvme, driver: vfio-pci}
steps:
  - apply:
      apiVersion: kubevirt.io/v1
      kind: VirtualMachineInstance
      metadata: {name: vmi-a}
      spec:
        domain:
          devices:
            hostDevices: [{name: nvme, deviceName: devices.kubevirt.io/nvme}]
  - expect: {vmi: vmi-a, phase: Running}
  - delete: {vmi: vmi-a}
"#;

fn err(text: &str) -> scenario::ScenarioError {
    scenario::parse(text, "t.yaml").expect_err("scenario should be rejected")
}

/// The 1-based column where `word` starts on 1-based `line` of `text`.
fn col(text: &str, line: u32, word: &str) -> u32 {
    let l = text.lines().nth(line as usize - 1).expect("line exists");
    l.find(word).expect("word on line") as u32 + 1
}

fn assert_at(e: &scenario::ScenarioError, line: u32, column: u32, needle: &str) {
    assert_eq!(
        e.span,
        Some(Span { line, column }),
        "wrong location in:\n{e}"
    );
    assert!(
        e.message.contains(needle),
        "message {:?} lacks {needle:?}",
        e.message
    );
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!("t.yaml:{line}:{column}: ")),
        "{shown}"
    );
    assert!(shown.lines().count() <= 12, "not one screen:\n{shown}");
}

#[test]
fn good_scenario_parses() {
    let sc = scenario::parse(GOOD, "t.yaml").unwrap();
    assert_eq!(sc.name(), "ok");
    assert_eq!(sc.raw.steps.len(), 3);
    assert_eq!(sc.seed(None), 0);
    assert_eq!(sc.seed(Some(9)), 9);
}

#[test]
fn yaml_syntax_error_names_line_and_column() {
    let e = err("name: x\nnodes: [\n  {name: a\n");
    assert!(e.span.is_some(), "{e}");
    assert!(e.to_string().starts_with("t.yaml:"), "{e}");
}

#[test]
fn unknown_step_names_line_and_column() {
    let text = GOOD.replace("  - delete: {vmi: vmi-a}", "  - frobnicate: {vmi: vmi-a}");
    assert_at(&err(&text), 17, 5, "unknown variant `frobnicate`");
}

#[test]
fn bad_field_type_names_line_and_column() {
    let text = GOOD.replace(
        "  - expect: {vmi: vmi-a, phase: Running}",
        "  - expect: {vmi: vmi-a, phase: Running, timeout: [1]}",
    );
    let e = err(&text);
    assert_eq!(e.span.map(|s| s.line), Some(16), "{e}");
}

#[test]
fn unknown_node_names_line_and_column() {
    let text = GOOD.replace(
        "  - expect: {vmi: vmi-a, phase: Running}",
        "  - restart: {node: node09, component: agent}",
    );
    assert_at(
        &err(&text),
        16,
        col(&text, 16, "node09"),
        "unknown node \"node09\"",
    );
}

#[test]
fn bad_manifest_names_line_and_column() {
    let text = GOOD.replace(
        "{name: nvme, deviceName: devices.kubevirt.io/nvme}",
        "{name: nvme}",
    );
    let e = err(&text);
    assert_eq!(e.span.map(|s| s.line), Some(15), "{e}");
    assert!(e.message.contains("deviceName"), "{e}");
    let text = GOOD.replace("kind: VirtualMachineInstance", "kind: Pod");
    let e = err(&text);
    assert!(e.message.contains("kind \"Pod\""), "{e}");
    assert_eq!(e.span.map(|s| s.line), Some(9), "{e}");
}

#[test]
fn unknown_field_and_bad_errno_and_bad_address() {
    let text = GOOD.replace(
        "  - delete: {vmi: vmi-a}",
        "  - delete: {vmi: vmi-a, force: true}",
    );
    assert_at(
        &err(&text),
        17,
        col(&text, 17, "force"),
        "unknown field `force`",
    );
    let text = GOOD.replace(
        "  - delete: {vmi: vmi-a}",
        "  - write: {node: node01, path: /sys/bus/pci/drivers/vfio-pci/bind, value: x, expectError: EWHAT}",
    );
    assert_at(&err(&text), 17, col(&text, 17, "EWHAT"), "not an errno");
    let text = GOOD.replace(
        "  - delete: {vmi: vmi-a}",
        "  - vfioBind: {node: node01, device: 05:00.0}",
    );
    assert_at(
        &err(&text),
        17,
        col(&text, 17, "05:00.0"),
        "not a PCI address",
    );
}

#[test]
fn references_to_vmis_must_follow_their_apply() {
    let text = GOOD.replace(
        "  - expect: {vmi: vmi-a, phase: Running}",
        "  - expect: {vmi: vmi-b, phase: Running}",
    );
    assert_at(&err(&text), 16, col(&text, 16, "vmi-b"), "not applied");
    let text = GOOD.replace(
        "  - expect: {vmi: vmi-a, phase: Running}",
        "  - expect: {phase: Running}",
    );
    assert_at(&err(&text), 16, 5, "need `vmi:`");
}

#[test]
fn duplicate_nodes_and_missing_nodes() {
    let text = GOOD.replace(
        "nodes:\n  - name: node01\n",
        "nodes:\n  - name: node01\n  - name: node01\n",
    );
    assert_at(&err(&text), 4, 11, "defined twice");
    let e = err("name: x\nnodes: []\n");
    assert!(e.message.contains("no nodes"), "{e}");
}

#[test]
fn the_error_shows_the_offending_line() {
    let text = GOOD.replace("  - delete: {vmi: vmi-a}", "  - frobnicate: {vmi: vmi-a}");
    let shown = err(&text).to_string();
    assert!(
        shown.contains("17 |   - frobnicate: {vmi: vmi-a}"),
        "{shown}"
    );
    assert!(shown.ends_with("^"), "{shown}");
}

#[test]
fn bad_host_is_reported_at_its_line_in_the_scenario() {
    let text = GOOD.replace("preset: qemu-nvme", "preset: qemu-nvmx");
    let e = err(&text);
    assert_eq!(e.span.map(|s| s.line), Some(6), "{e}");
    assert!(
        e.message.contains("node node01: host.") && e.message.contains("qemu-nvmx"),
        "{e}"
    );
    let text = GOOD.replace("\"0000:05:00.0\"", "\"0000:5:00.0\"");
    let e = err(&text);
    assert_eq!(e.span.map(|s| s.line), Some(6), "{e}");
}

#[test]
fn bad_plugged_device_is_reported_at_its_line() {
    let text = GOOD.replace(
        "  - delete: {vmi: vmi-a}",
        "  - plug: {node: node01, usb: {bus: 1, port: \"2\", id: \"zz:01\"}}",
    );
    let e = err(&text);
    assert_eq!(e.span.map(|s| s.line), Some(17), "{e}");
    assert!(e.message.contains("plug.usb"), "{e}");
}
