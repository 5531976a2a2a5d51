//! The `hostdev` binary as a user runs it: exit codes, error locations, JUnit, explain.

use std::process::Command;

fn hostdev() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hostdev"))
}

const PASSING: &str = r#"name: cli-pass
kubevirt:
  developerConfiguration: {featureGates: [HostDevices]}
  permittedHostDevices:
    pciHostDevices: [{pciVendorSelector: "8086:5845", resourceName: devices.kubevirt.io/nvme}]
nodes:
  - name: node01
    host:
      pci: [{address: "0000:05:00.0", preset: qemu-nvme, driver: vfio-pci, iommuGroup: 5}]
steps:
  - expect: {node: node01, allocatable: {devices.kubevirt.io/nvme: 1}}
"#;

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn run_exits_zero_only_when_every_scenario_passes_and_writes_junit() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yaml", PASSING);
    let junit = dir.path().join("junit.xml");
    let out = hostdev()
        .arg("run")
        .arg("--junit")
        .arg(&junit)
        .arg("--timings")
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 passed, 0 failed"), "{stdout}");
    assert!(stdout.contains("median scenario"), "{stdout}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("tests=\"1\" failures=\"0\""), "{xml}");

    let failing = PASSING
        .replace("nvme: 1}}", "nvme: 3}, timeout: 200ms}")
        .replace("cli-pass", "cli-fail");
    write(dir.path(), "b.yaml", &failing);
    let out = hostdev()
        .arg("run")
        .arg("--seed")
        .arg("42")
        .arg("--junit")
        .arg(&junit)
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("1 passed, 1 failed"), "{stdout}");
    assert!(stdout.contains("FAIL cli-fail"), "{stdout}");
    assert!(
        stdout.contains("hostdev run --seed 42"),
        "the replay command is shown: {stdout}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("failures=\"1\"") && xml.contains("<failure"),
        "{xml}"
    );
}

#[test]
fn validate_names_file_line_and_column_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "good.yaml", PASSING);
    let out = hostdev().arg("validate").arg(&good).output().unwrap();
    assert!(out.status.success());
    let bad = write(
        dir.path(),
        "bad.yaml",
        &PASSING.replace("  - expect:", "  - expectt:"),
    );
    let out = hostdev().arg("validate").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:11:5: unknown variant `expectt`",
            bad.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("11 |   - expectt:"), "{stderr}");
}

#[test]
fn explain_prints_the_state_after_each_step() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "a.yaml", PASSING);
    let out = hostdev().arg("explain").arg(&file).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("after step 1 (expect, line 11)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("node node01: devices.kubevirt.io/nvme: 1/1 allocatable"),
        "{stdout}"
    );
}

#[test]
fn schema_prints_json() {
    let out = hostdev().arg("schema").output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["title"], "hostdev scenario");
}

#[test]
fn generate_prints_a_valid_scenario_that_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = hostdev()
        .args(["generate", "--seed", "3"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let again = hostdev()
        .args(["generate", "--seed", "3"])
        .output()
        .unwrap();
    assert_eq!(
        out.stdout, again.stdout,
        "the same seed gives the same scenario"
    );
    let file = write(
        dir.path(),
        "gen.yaml",
        &String::from_utf8_lossy(&out.stdout),
    );
    let run = hostdev().arg("run").arg(&file).output().unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stdout)
    );
}
