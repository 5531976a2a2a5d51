//! The runner really checks: a wrong expectation fails with a report naming the step, what was
//! expected, what was seen, and the seed that replays it.

use hostdev_harness::scenario;
use hostdev_harness::sim::{RunOptions, run_scenario};

const SCENARIO: &str = r#"name: runner-check
seed: 11
kubevirt:
  developerConfiguration: {featureGates: [HostDevices]}
  permittedHostDevices:
    pciHostDevices:
      - {pciVendorSelector: "8086:5845", resourceName: devices.kubevirt.io/nvme}
nodes:
  - name: node01
    host:
      pci:
        - {address: "0000:05:00.0", preset: qemu-nvme, driver: vfio-pci, iommuGroup: 5}
steps:
  - expect: {node: node01, allocatable: {devices.kubevirt.io/nvme: 1}}
  - apply:
      kind: VirtualMachineInstance
      metadata: {name: v}
      spec: {domain: {devices: {hostDevices: [{name: n, deviceName: devices.kubevirt.io/nvme}]}}}
  - expect: {vmi: v, phase: Running, env: {PCI_RESOURCE_DEVICES_KUBEVIRT_IO_NVME: "0000:05:00.0"}}
"#;

#[test]
fn a_passing_scenario_passes() {
    let sc = scenario::parse(SCENARIO, "runner-check.yaml").unwrap();
    let out = run_scenario(&sc, RunOptions::default());
    assert!(out.passed(), "{}", out.failure.unwrap_or_default());
    assert_eq!(out.seed, 11);
}

#[test]
fn a_wrong_expectation_fails_with_a_full_report() {
    let text = SCENARIO.replace("nvme: 1}}", "nvme: 2}, timeout: 300ms}");
    let sc = scenario::parse(&text, "runner-check.yaml").unwrap();
    let out = run_scenario(
        &sc,
        RunOptions {
            seed: Some(99),
            ..RunOptions::default()
        },
    );
    let report = out.failure.expect("the scenario must fail");
    assert!(report.contains("failed with seed 99"), "{report}");
    assert!(report.contains("hostdev run --seed 99"), "{report}");
    assert!(report.contains("step 1 (expect)"), "{report}");
    assert!(report.contains("expected 2, got 1"), "{report}");
    assert!(
        report.contains("node node01: devices.kubevirt.io/nvme: 1/1 allocatable"),
        "{report}"
    );
    assert!(
        report.contains("last kubelet log lines (node01)"),
        "{report}"
    );
}

#[test]
fn a_wrong_env_value_fails() {
    let text = SCENARIO.replace(
        "NVME: \"0000:05:00.0\"",
        "NVME: \"0000:06:00.0\", timeout: 300ms",
    );
    let sc = scenario::parse(&text, "runner-check.yaml").unwrap();
    let report = run_scenario(&sc, RunOptions::default())
        .failure
        .expect("must fail");
    assert!(
        report.contains(
            "env PCI_RESOURCE_DEVICES_KUBEVIRT_IO_NVME: expected 0000:06:00.0, got \"0000:05:00.0\""
        ),
        "{report}"
    );
}

#[test]
fn explain_records_the_state_after_each_step() {
    let sc = scenario::parse(SCENARIO, "runner-check.yaml").unwrap();
    let out = run_scenario(
        &sc,
        RunOptions {
            explain: true,
            ..RunOptions::default()
        },
    );
    assert_eq!(out.explain.len(), 3);
    assert!(
        out.explain[2].contains("vmi v: Running on node01"),
        "{}",
        out.explain[2]
    );
}

/// The seed document's warning, shown: with two identical NVMe drives on a node, which one a
/// VMI gets is the kubelet's random choice; across seeds both are picked, and each seed replays.
#[test]
fn nvme_seed_sweep_picks_both_drives_and_replays() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios/pci/nvme-random-assignment.yaml");
    let sc = scenario::load(&path).unwrap();
    let mut picked = std::collections::BTreeMap::new();
    for seed in 0..12u64 {
        let out = run_scenario(
            &sc,
            RunOptions {
                seed: Some(seed),
                explain: true,
                ..RunOptions::default()
            },
        );
        assert!(
            out.passed(),
            "seed {seed}: {}",
            out.failure.unwrap_or_default()
        );
        let last = out.explain.last().cloned().unwrap_or_default();
        let addr = ["0000:05:00.0", "0000:06:00.0"]
            .into_iter()
            .find(|a| last.contains(&format!("NVME={a}")))
            .expect("an address");
        picked.insert(seed, addr);
    }
    let distinct: std::collections::BTreeSet<_> = picked.values().collect();
    assert_eq!(
        distinct.len(),
        2,
        "both drives should be picked across seeds: {picked:?}"
    );
    // The same seed picks the same drive again.
    for seed in [3u64, 8] {
        let out = run_scenario(
            &sc,
            RunOptions {
                seed: Some(seed),
                explain: true,
                ..RunOptions::default()
            },
        );
        assert!(
            out.explain
                .last()
                .unwrap()
                .contains(&format!("NVME={}", picked[&seed])),
            "seed {seed} did not replay"
        );
    }
}

/// As root, each scenario runs in a network namespace of its own, so hosts multicast real uevents
/// that never reach the machine's namespace.
#[test]
fn scenarios_get_a_private_network_namespace_as_root() {
    if !nix::unistd::Uid::effective().is_root() {
        mocksys::testing::cannot_run("not root, so no private network namespace");
        return;
    }
    let private = std::thread::spawn(hostdev_harness::sim::netns::enter_private)
        .join()
        .unwrap();
    assert!(
        private,
        "a fresh thread should be able to enter a private network namespace"
    );
    assert!(
        !hostdev_harness::sim::netns::is_private(),
        "this thread stays in the machine's namespace"
    );
}

/// As root, a scenario's mounts live in a mount namespace of its own: invisible outside, and gone
/// with the process even if it is killed.
#[test]
fn scenario_mounts_stay_inside_the_scenarios_mount_namespace() {
    if !nix::unistd::Uid::effective().is_root() {
        mocksys::testing::cannot_run("not root, so no private mount namespace");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().to_owned();
    let seen_inside = std::thread::spawn(move || {
        assert!(hostdev_harness::sim::netns::enter_private_mounts());
        nix::mount::mount(
            Some("tmpfs"),
            &target,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        let inside = std::fs::read_to_string("/proc/thread-self/mountinfo").unwrap();
        inside.contains(&target.display().to_string())
    })
    .join()
    .unwrap();
    assert!(seen_inside, "the thread sees its own mount");
    let outside = std::fs::read_to_string("/proc/thread-self/mountinfo").unwrap();
    assert!(
        !outside.contains(&dir.path().display().to_string()),
        "the mount must not be visible outside"
    );
}
