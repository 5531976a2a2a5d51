use super::*;
use crate::spec::HostSpec;

pub(crate) const EXAMPLE: &str = r#"
modules: [nvme, vfio-pci, nvidia]
pci:
  - {address: "0000:05:00.0", id: "8086:5845", class: "010802", driver: nvme, iommuGroup: 5, numaNode: 0}
  - {address: "0000:06:00.0", preset: qemu-nvme, driver: vfio-pci}
  - {address: "0000:65:00.0", preset: tesla-t4}
usb:
  - {bus: 1, port: "1", id: "46f4:0001", manufacturer: QEMU, product: QEMU USB HARDDRIVE}
"#;

pub(crate) fn example() -> Host {
    Host::from_spec(&HostSpec::from_yaml_str(EXAMPLE, "example.yaml").unwrap()).unwrap()
}

#[test]
fn example_host_reads_through_links() {
    let h = example();
    assert_eq!(
        &*h.read("bus/pci/devices/0000:05:00.0/vendor").unwrap(),
        b"0x8086\n"
    );
    assert_eq!(
        &*h.read("/sys/bus/pci/devices/0000:65:00.0/class").unwrap(),
        b"0x030200\n"
    );
    let mut paths: Vec<_> = h.tree().iter().map(|(p, _)| p.to_owned()).collect();
    paths.sort();
    for p in paths.iter().filter(|p| !p.contains("mdev_supported_types")) {
        println!("{p}");
    }
}
