//! The authoring mistakes that used to pass `hostdev validate` (and then run, testing nothing)
//! are rejected, each at its own line and column, all in one pass.

use hostdev_harness::scenario::{self, Span};

const GOOD: &str = r#"name: ok
kubevirt:
  developerConfiguration: {featureGates: [HostDevices]}
  permittedHostDevices:
    pciHostDevices:
      - {pciVendorSelector: "8086:5845", resourceName: devices.kubevirt.io/nvme}
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
  - expect: {vmi: vmi-a, phase: Running, node: {oneOf: [node01]}}
  - expect: {node: node01, allocated: {devices.kubevirt.io/nvme: 1}, allocatable: {devices.kubevirt.io/nvme: 1}}
"#;

fn err(text: &str) -> scenario::ScenarioError {
    scenario::parse(text, "t.yaml").expect_err("scenario should be rejected")
}

/// Every problem of the error, as (line, column, message).
fn all(e: &scenario::ScenarioError) -> Vec<(u32, u32, String)> {
    std::iter::once(e)
        .chain(&e.more)
        .map(|e| {
            let s = e.span.expect("every problem has a location");
            (s.line, s.column, e.message.clone())
        })
        .collect()
}

/// The 1-based column where `word` starts on 1-based `line` of `text`.
fn col(text: &str, line: u32, word: &str) -> u32 {
    let l = text.lines().nth(line as usize - 1).expect("line exists");
    l.find(word).expect("word on line") as u32 + 1
}

#[test]
fn the_good_scenario_with_allocated_and_a_node_choice_parses() {
    let sc = scenario::parse(GOOD, "t.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sc.raw.steps.len(), 3);
}

#[test]
fn a_misspelled_kubevirt_field_is_an_error_at_its_key_with_a_suggestion() {
    let text = GOOD.replace("{pciVendorSelector:", "{pciVendorselector:");
    let e = err(&text);
    let p = all(&e);
    assert_eq!(
        (p[0].0, p[0].1),
        (6, col(&text, 6, "pciVendorselector")),
        "{e}"
    );
    assert!(
        p[0].2.contains("unknown field `pciVendorselector`")
            && p[0].2.contains("did you mean `pciVendorSelector`"),
        "{e}"
    );
    assert_eq!(
        p.len(),
        1,
        "the suggestion stands for the missing field: {e}"
    );
}

#[test]
fn a_misspelled_top_level_kubevirt_field_is_an_error() {
    let text = GOOD.replace("  permittedHostDevices:", "  permittedHostDevice:");
    let e = err(&text);
    assert_eq!(e.span, Some(Span { line: 4, column: 3 }), "{e}");
    assert!(
        e.message.contains("did you mean `permittedHostDevices`"),
        "{e}"
    );
}

#[test]
fn a_misspelled_vmi_key_is_an_error_not_a_vmi_without_devices() {
    let text = GOOD.replace("            hostDevices:", "            GPUs:");
    let e = err(&text);
    assert_eq!(
        e.span,
        Some(Span {
            line: 20,
            column: 13
        }),
        "{e}"
    );
    assert!(
        e.message
            .contains("steps[0].apply.spec.domain.devices: unknown field `GPUs`"),
        "{e}"
    );
    assert!(e.message.contains("did you mean `gpus`"), "{e}");
}

#[test]
fn every_problem_of_a_file_is_reported_in_one_pass_in_file_order() {
    let text = GOOD
        .replace("  permittedHostDevices:", "  permittedHostDevice:")
        .replace("            hostDevices:", "            hostDevice:")
        .replace(
            "phase: Running, node: {oneOf: [node01]}",
            "phase: Running, node: node02",
        );
    let e = err(&text);
    let p = all(&e);
    assert_eq!(p.len(), 3, "{e}");
    assert_eq!(
        p.iter().map(|x| x.0).collect::<Vec<_>>(),
        vec![4, 20, 21],
        "{e}"
    );
    assert!(
        p[2].2
            .contains("unknown node \"node02\" (did you mean \"node01\"?"),
        "{e}"
    );
    let shown = e.to_string();
    assert_eq!(shown.matches("t.yaml:").count(), 3, "{shown}");
}

#[test]
fn a_typo_in_a_typed_field_is_reported_with_the_schema_problems() {
    let text = GOOD
        .replace("            hostDevices:", "            hostDevice:")
        .replace(
            "  - expect: {vmi: vmi-a, phase: Running,",
            "  - expect: {vmi: vmi-a, phas: Running,",
        );
    let e = err(&text);
    let p = all(&e);
    assert!(
        p.iter().any(|(_, _, m)| m.contains("unknown field `phas`")),
        "{e}"
    );
    assert!(
        p.iter()
            .any(|(l, _, m)| *l == 20 && m.contains("`hostDevice`")),
        "{e}"
    );
}

#[test]
fn a_bad_phase_lists_the_phases() {
    let text = GOOD.replace("phase: Running", "phase: running");
    let e = err(&text);
    assert_eq!(e.span.map(|s| s.line), Some(21), "{e}");
    assert!(
        e.message.contains("unknown variant `running`") && e.message.contains("`Running`"),
        "{e}"
    );
}

#[test]
fn configure_blocks_are_checked_too() {
    let text = GOOD.replace(
        "  - expect: {node: node01, allocated",
        "  - configure: {kubevirt: {permittedHostDevices: {pciHostDevice: []}}}\n  - expect: {node: node01, allocated",
    );
    let e = err(&text);
    assert_eq!(e.span.map(|s| s.line), Some(22), "{e}");
    assert!(
        e.message.contains(
            "steps[2].configure.kubevirt.permittedHostDevices: unknown field `pciHostDevice`"
        ),
        "{e}"
    );
}

#[test]
fn node_checks_need_a_single_node() {
    let text = GOOD.replace(
        "{node: node01, allocated",
        "{node: {oneOf: [node01]}, allocated",
    );
    let e = err(&text);
    assert!(e.message.contains("need one node name"), "{e}");
}

#[test]
fn a_structure_error_hints_at_indentation() {
    let text = GOOD.replace("    host:\n", "   host:\n");
    let e = err(&text);
    assert!(e.message.contains("check the indentation"), "{e}");
}

#[test]
fn two_files_with_one_name_are_both_errors_naming_each_other() {
    let dir = tempfile::tempdir().expect("temp dir");
    let a = dir.path().join("a.yaml");
    let b = dir.path().join("b.yaml");
    let c = dir.path().join("c.yaml");
    std::fs::write(&a, GOOD).unwrap();
    std::fs::write(&b, GOOD).unwrap();
    std::fs::write(&c, GOOD.replace("name: ok", "name: other")).unwrap();
    let loaded = hostdev_harness::suite::load_all(&[a.clone(), b.clone(), c]);
    let ea = loaded[0].as_ref().expect_err("a shares its name");
    let eb = loaded[1].as_ref().expect_err("b shares its name");
    assert!(loaded[2].is_ok());
    assert_eq!(ea.span, Some(Span { line: 1, column: 7 }), "{ea}");
    assert!(ea.message.contains(&b.display().to_string()), "{ea}");
    assert!(eb.message.contains(&a.display().to_string()), "{eb}");
}
