//! External agents: any executable, run in the node's namespaces, started and stopped with its
//! node. The agents here are small shell scripts, so each test says exactly what the agent did.
//! Needs root (namespaces, FUSE): without it these tests fail.

use std::path::Path;

use hostdev_harness::scenario;
use hostdev_harness::sim::{Outcome, RunOptions, run_scenario};

const HOST: &str = r#"
nodes:
  - name: node01
    labels: {zone: a}
    host:
      pci:
        - {address: "0000:05:00.0", preset: qemu-nvme, driver: vfio-pci}
"#;

/// A scenario whose agent is `sh -c SCRIPT` (with `$1` = the test's directory), then `steps`.
fn run_with(dir: &Path, script: &str, steps: &str) -> Outcome {
    let yaml = format!(
        "name: external\nagent:\n  command: [sh, -c, {script:?}, sh, {dir:?}]\n  env: {{CONFIG: '{{config}}', LABELS: '{{labels}}'}}\n{HOST}steps:\n{steps}",
        dir = dir.display().to_string()
    );
    let file = dir.join("external.yaml");
    std::fs::write(&file, &yaml).expect("write scenario");
    let sc = scenario::load(&file).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    run_scenario(&sc, RunOptions::default())
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn the_agent_sees_the_nodes_sysfs_dev_plugin_dir_config_and_labels() {
    let dir = tempfile::tempdir().expect("temp dir");
    let script = r#"trap 'exit 0' TERM
        { ls /sys/bus/pci/devices; ls /dev/vfio; echo "pid $$"; echo "node $NODE_NAME";
          test -S /var/lib/kubelet/device-plugins/kubelet.sock && echo kubelet-sock;
          cat "$LABELS"; } > "$1/seen"
        echo looked; while :; do sleep 0.05; done"#;
    let out = run_with(
        dir.path(),
        script,
        "  - expect: {node: node01, agentLog: looked}\n",
    );
    assert!(out.passed(), "{}", out.failure.unwrap_or_default());
    let seen = read(&dir.path().join("seen"));
    let lines: Vec<&str> = seen.lines().collect();
    assert_eq!(lines[0], "0000:05:00.0", "{seen}");
    assert!(lines.contains(&"vfio"), "{seen}");
    assert!(lines.contains(&"pid 1"), "{seen}");
    assert!(lines.contains(&"node node01"), "{seen}");
    assert!(lines.contains(&"kubelet-sock"), "{seen}");
    assert!(
        lines.contains(&"kubernetes.io/hostname=node01") && lines.contains(&"zone=a"),
        "{seen}"
    );
}

#[test]
fn an_agent_that_exits_fails_the_scenario_with_its_status_and_output() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = run_with(
        dir.path(),
        "echo 'agent: cannot open the config' >&2; exit 3",
        "  - expect: {node: node01, allocatable: {devices.kubevirt.io/nvme: 1}, timeout: 30s}\n",
    );
    let report = out.failure.expect("the scenario fails");
    assert!(
        report.contains("the agent of node node01 exited unexpectedly (3)"),
        "{report}"
    );
    assert!(report.contains("agent: cannot open the config"), "{report}");
    assert!(
        report.contains("last agent log lines (node01: sh -c"),
        "{report}"
    );
    assert!(
        out.duration < std::time::Duration::from_secs(30),
        "failed at once, not at the timeout"
    );
}

#[test]
fn an_expected_exit_passes_and_names_its_code_or_signal() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = run_with(
        dir.path(),
        "exit 3",
        "  - expect: {node: node01, agentExit: \"3\"}\n",
    );
    assert!(out.passed(), "{}", out.failure.unwrap_or_default());

    let out = run_with(
        dir.path(),
        "exit 4",
        "  - expect: {node: node01, agentExit: \"3\", timeout: 200ms}\n",
    );
    let report = out.failure.expect("wrong code");
    assert!(
        report.contains("agent exit on node01: expected 3, got 4"),
        "{report}"
    );
}

#[test]
fn restart_terms_or_kills_and_starts_again() {
    let dir = tempfile::tempdir().expect("temp dir");
    let script = r#"trap 'echo term >> "$1/life"; exit 0' TERM; echo start >> "$1/life"; echo up
        while :; do sleep 0.05; done"#;
    let up = "  - expect: {node: node01, agentLog: up}\n";
    let out = run_with(
        dir.path(),
        script,
        &format!(
            "{up}  - restart: {{node: node01, component: agent}}\n{up}  - restart: {{node: node01, component: agent, signal: KILL}}\n{up}"
        ),
    );
    assert!(out.passed(), "{}", out.failure.unwrap_or_default());
    // The last `term` is the shutdown at the end of the scenario; KILL left no trace.
    assert_eq!(
        read(&dir.path().join("life")),
        "start\nterm\nstart\nstart\nterm\n"
    );
}

#[test]
fn configure_swaps_the_config_volume_atomically() {
    let dir = tempfile::tempdir().expect("temp dir");
    let script = r#"trap 'exit 0' TERM
        while :; do if grep -q QAT "$CONFIG"; then readlink "$(dirname "$CONFIG")/..data"; echo swapped; break; fi; sleep 0.05; done
        while :; do sleep 0.05; done"#;
    let steps = "  - configure: {kubevirt: {permittedHostDevices: {pciHostDevices: [{pciVendorSelector: \"8086:6f54\", resourceName: intel.com/QAT}]}}}\n  - expect: {node: node01, agentLog: swapped}\n  - expect: {node: node01, agentLog: \"..\"}\n  - expect: {node: node01, configError: never-logged, timeout: 300ms}\n";
    let out = run_with(dir.path(), script, steps);
    let report = out
        .failure
        .expect("configError on an external agent matches its log lines");
    assert!(
        report.contains("step 4 (expect)"),
        "the swap was seen (steps 2 and 3): {report}"
    );
    assert!(
        report.contains("expected a log line containing \"never-logged\""),
        "{report}"
    );
}
