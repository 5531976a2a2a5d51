//! `allocated:` counts the devices the node's kubelet has handed to containers, and a node
//! expectation with `oneOf` picks among nodes; both are run for real (FUSE host, kubelet,
//! agent), and a wrong count fails with a report that shows allocated beside allocatable.

use hostdev_harness::scenario;
use hostdev_harness::sim::{RunOptions, run_scenario};

const SCENARIO: &str = r#"name: allocated-check
seed: 3
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
        - {address: "0000:06:00.0", preset: qemu-nvme, driver: vfio-pci, iommuGroup: 6}
steps:
  - expect: {node: node01, allocatable: {devices.kubevirt.io/nvme: 2}, allocated: {devices.kubevirt.io/nvme: 0}}
  - apply:
      kind: VirtualMachineInstance
      metadata: {name: v}
      spec: {domain: {devices: {hostDevices: [{name: n, deviceName: devices.kubevirt.io/nvme}]}}}
  - expect: {vmi: v, phase: Running, node: {oneOf: [node01]}}
  - expect: {node: node01, allocatable: {devices.kubevirt.io/nvme: 2}, allocated: {devices.kubevirt.io/nvme: 1}}
  - delete: {vmi: v}
  - expect: {node: node01, allocated: {devices.kubevirt.io/nvme: 0}}
"#;

#[test]
fn allocated_follows_the_vmis_and_allocatable_does_not() {
    let sc = scenario::parse(SCENARIO, "allocated-check.yaml").unwrap_or_else(|e| panic!("{e}"));
    let out = run_scenario(&sc, RunOptions::default());
    assert!(out.passed(), "{}", out.failure.unwrap_or_default());
}

#[test]
fn a_wrong_allocated_count_fails_showing_allocated() {
    let text = SCENARIO.replace(
        "allocated: {devices.kubevirt.io/nvme: 1}}",
        "allocated: {devices.kubevirt.io/nvme: 2}, timeout: 300ms}",
    );
    let sc = scenario::parse(&text, "allocated-check.yaml").unwrap_or_else(|e| panic!("{e}"));
    let out = run_scenario(&sc, RunOptions::default());
    let report = out.failure.expect("the scenario must fail");
    assert!(report.contains("step 4 (expect)"), "{report}");
    assert!(
        report.contains("allocated devices.kubevirt.io/nvme on node01: expected 2, got 1"),
        "{report}"
    );
    assert!(
        report.contains("devices.kubevirt.io/nvme: 2/2 allocatable, 1 allocated"),
        "{report}"
    );
}
