//! Any sequence of bind/unbind/override/new_id/probe writes keeps the model and tree coherent.

use proptest::prelude::*;

use super::*;

const DEVICES: [&str; 4] = [
    "0000:05:00.0",
    "0000:06:00.0",
    "0000:07:00.0",
    "0000:65:00.0",
];
const DRIVERS: [&str; 3] = ["nvme", "vfio-pci", "nvidia"];

const HOST: &str = r#"
modules: [nvme, vfio-pci, nvidia]
pci:
  - {address: "0000:05:00.0", preset: qemu-nvme, iommuGroup: 5}
  - {address: "0000:06:00.0", preset: qemu-nvme, iommuGroup: 6}
  - {address: "0000:07:00.0", preset: qemu-nvme, iommuGroup: 6}
  - {address: "0000:65:00.0", preset: tesla-t4}
"#;

#[derive(Debug, Clone)]
enum Op {
    Bind(usize, usize),
    Unbind(usize, usize),
    Override(usize, Option<usize>),
    NewId(usize),
    RemoveId(usize),
    Probe(usize),
    Mdev(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..3usize, 0..4usize).prop_map(|(d, x)| Op::Bind(d, x)),
        (0..3usize, 0..4usize).prop_map(|(d, x)| Op::Unbind(d, x)),
        (0..4usize, proptest::option::of(0..3usize)).prop_map(|(x, d)| Op::Override(x, d)),
        (0..3usize).prop_map(Op::NewId),
        (0..3usize).prop_map(Op::RemoveId),
        (0..4usize).prop_map(Op::Probe),
        (0..255u8).prop_map(Op::Mdev),
    ]
}

fn apply(h: &Host, op: &Op) {
    // Errors are fine: the invariants must hold whatever the kernel answered.
    let _ = match op {
        Op::Bind(d, x) => h.write(
            &format!("bus/pci/drivers/{}/bind", DRIVERS[*d]),
            DEVICES[*x].as_bytes(),
        ),
        Op::Unbind(d, x) => h.write(
            &format!("bus/pci/drivers/{}/unbind", DRIVERS[*d]),
            DEVICES[*x].as_bytes(),
        ),
        Op::Override(x, d) => h.write(
            &format!("bus/pci/devices/{}/driver_override", DEVICES[*x]),
            d.map_or("\n", |d| DRIVERS[d]).as_bytes(),
        ),
        Op::NewId(d) => h.write(
            &format!("bus/pci/drivers/{}/new_id", DRIVERS[*d]),
            b"8086 5845",
        ),
        Op::RemoveId(d) => h.write(
            &format!("bus/pci/drivers/{}/remove_id", DRIVERS[*d]),
            b"8086 5845",
        ),
        Op::Probe(x) => h.write("bus/pci/drivers_probe", DEVICES[*x].as_bytes()),
        Op::Mdev(n) => h.write(
            "bus/pci/devices/0000:65:00.0/mdev_supported_types/nvidia-231/create",
            format!("00000000-0000-4000-8000-0000000000{n:02x}").as_bytes(),
        ),
    };
}

fn check(h: &Host) {
    let tree = h.tree();
    let nodes = h.dev_nodes();
    h.inspect(|k| {
        for x in DEVICES {
            let dir = format!("devices/pci0000:00/{x}");
            let link = tree.get(&format!("{dir}/driver")).is_some();
            let bound = k.pci[&x.parse_addr()].driver.clone();
            assert_eq!(link, bound.is_some(), "{x}: driver link vs model");
            for d in DRIVERS {
                let listed = tree.get(&format!("bus/pci/drivers/{d}/{x}")).is_some();
                assert_eq!(
                    listed,
                    bound.as_deref() == Some(d),
                    "{x} in {d}'s dir iff bound to it"
                );
            }
        }
        for (g, members) in k.iommu_groups() {
            let has_node = nodes.iter().any(|n| n.path == format!("vfio/{g}"));
            let vfio_member = members.iter().any(|m| {
                k.mdevs.contains_key(m)
                    || crate::spec::PciAddress::parse(m)
                        .is_some_and(|a| k.pci[&a].driver.as_deref() == Some("vfio-pci"))
            });
            assert_eq!(
                has_node, vfio_member,
                "/dev/vfio/{g} iff a member is vfio-bound or an mdev"
            );
        }
        if k.pci[&"0000:65:00.0".parse_addr()].driver.as_deref() != Some("nvidia") {
            assert!(k.mdevs.is_empty(), "mdevs only under a registered parent");
        }
    });
}

/// Fixed so every run explores the same sequences; the shrunk failing sequence is printed.
const SEED: u64 = 0x5eed_0002;

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        rng_seed: proptest::test_runner::RngSeed::Fixed(SEED),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]
    #[test]
    fn any_sequence_of_writes_keeps_links_model_and_dev_vfio_in_step(ops in proptest::collection::vec(op(), 1..40)) {
        let h = Host::from_spec(&HostSpec::from_yaml_str(HOST, "h").unwrap()).unwrap();
        for o in &ops {
            apply(&h, o);
            check(&h);
        }
    }
}
