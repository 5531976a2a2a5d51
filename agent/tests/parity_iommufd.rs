//! IOMMUFD: behind KubeVirt's `IOMMUFD` gate, PCI Allocate also hands out the function's VFIO
//! device cdev `/dev/vfio/devices/vfioN`, named by `<addr>/vfio-dev/vfioN`.

mod support;

use std::fs;

use hostdev_agent::discovery::discover;
use hostdev_agent::plugin::allocate::allocate_container;
use hostdev_agent::plugin::{DevRoot, Iommufd, IommufdSwitch};
use support::{FakeHost, Pci, config};

const T4: &str = "permittedHostDevices:
  pciHostDevices:
  - {pciVendorSelector: 10DE:1EB8, resourceName: nvidia.com/T4}
";

fn paths_handed_out(host: &FakeHost, switch: &IommufdSwitch) -> Vec<String> {
    let inv = discover(&host.paths, &config(T4));
    let resource = &inv.resources["nvidia.com/T4"];
    let root = DevRoot::new(host.dev()).with_iommufd(Some(Iommufd {
        host: host.paths.clone(),
        switch: switch.clone(),
    }));
    let response = allocate_container(resource, &["17".into()], &root).unwrap();
    response
        .devices
        .iter()
        .map(|d| d.container_path.clone())
        .collect()
}

#[test]
fn gate_adds_the_vfio_device_cdev() {
    let host = FakeHost::new();
    let dir = host.add_pci(Pci::vfio("0000:65:00.0", 0x10de, 0x1eb8, 17));
    fs::create_dir_all(dir.join("vfio-dev/vfio3")).unwrap();
    fs::write(dir.join("vfio-dev/vfio3/dev"), "511:3\n").unwrap();
    fs::create_dir_all(host.dev().join("vfio/devices")).unwrap();
    fs::write(host.dev().join("vfio/devices/vfio3"), "").unwrap();
    let switch = IommufdSwitch::default();
    assert_eq!(
        paths_handed_out(&host, &switch),
        ["/dev/vfio/vfio", "/dev/vfio/17"],
        "gate off: legacy VFIO only"
    );
    switch.set(true);
    assert_eq!(
        paths_handed_out(&host, &switch),
        ["/dev/vfio/vfio", "/dev/vfio/17", "/dev/vfio/devices/vfio3"]
    );
}

#[test]
fn gate_without_a_cdev_hands_out_legacy_vfio() {
    let host = FakeHost::new();
    host.add_pci(Pci::vfio("0000:65:00.0", 0x10de, 0x1eb8, 17));
    let switch = IommufdSwitch::default();
    switch.set(true);
    assert_eq!(
        paths_handed_out(&host, &switch),
        ["/dev/vfio/vfio", "/dev/vfio/17"]
    );
}

#[test]
fn the_configuration_in_force_flips_the_switch() {
    use hostdev_agent::config::{NodeLabels, ServeMode};
    use hostdev_agent::manager::source::{ConfiguredSource, DeviceSource};
    let host = FakeHost::new();
    let file = host.sys().parent().unwrap().join("kubevirt.yaml");
    let switch = IommufdSwitch::default();
    let mut source = ConfiguredSource::new(
        file.clone(),
        host.paths.clone(),
        ServeMode::Kubevirt,
        NodeLabels::for_node("node01"),
        Box::new(|h, c, _| Ok(discover(h, c))),
    )
    .with_iommufd_switch(switch.clone());
    fs::write(
        &file,
        "developerConfiguration:\n  featureGates: [IOMMUFD]\n",
    )
    .unwrap();
    source.reload_config().unwrap();
    assert!(switch.is_on());
    fs::write(
        &file,
        "developerConfiguration:\n  featureGates: [HostDevices]\n",
    )
    .unwrap();
    source.reload_config().unwrap();
    assert!(!switch.is_on());
}
