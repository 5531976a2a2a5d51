//! Discovery of a large host (1,024 PCI functions, 512 mdevs, 256 USB devices) advertises every
//! device. Timings are printed for information only (criterion benches judge speed).

mod support;

use std::time::{Duration, Instant};

use hostdev_agent::discovery::discover;
use support::{FakeHost, Pci, config};

fn large_host() -> FakeHost {
    let host = FakeHost::new();
    for i in 0..1024u32 {
        let addr = format!("0000:{:02x}:{:02x}.{}", 1 + i / 64, (i / 8) % 8, i % 8);
        host.add_pci(Pci {
            numa: (i % 2) as i64,
            ..Pci::vfio(&addr, 0x8086, 0x5845, i)
        });
    }
    let types = [("nvidia-230", "GRID T4-1Q", 16)];
    for p in 0..32u32 {
        let parent = format!("0000:{:02x}:00.0", 0x80 + p);
        host.add_mdev_parent(&parent, 0, &types);
        for m in 0..16u32 {
            let uuid = format!("{p:08x}-0000-4000-8000-{m:012x}");
            host.add_mdev(&parent, &uuid, "nvidia-230", 2000 + p * 16 + m);
        }
    }
    for i in 0..256u32 {
        host.add_usb(
            &format!("{}-{}", 1 + i / 64, 1 + i % 64),
            0x46f4,
            0x0001,
            2 + i % 64,
            None,
        );
    }
    host
}

/// What a minimal program reading the same files would do, without any checks.
fn bare_loop(host: &FakeHost) -> usize {
    let sys = host.sys();
    let mut n = 0;
    for e in std::fs::read_dir(sys.join("bus/pci/devices")).unwrap() {
        let p = e.unwrap().path();
        let _ = std::fs::read_to_string(p.join("uevent"));
        let _ = std::fs::read_link(p.join("driver"));
        let _ = std::fs::read_link(p.join("iommu_group"));
        let _ = std::fs::read_to_string(p.join("numa_node"));
        n += 1;
    }
    for e in std::fs::read_dir(sys.join("bus/mdev/devices")).unwrap() {
        let p = e.unwrap().path();
        let _ = std::fs::read_to_string(p.join("mdev_type/name"));
        let _ = std::fs::read_link(p.join("iommu_group"));
        let _ = std::fs::read_to_string(p.join("../numa_node"));
        n += 1;
    }
    for e in std::fs::read_dir(sys.join("bus/usb/devices")).unwrap() {
        let p = e.unwrap().path();
        let _ = std::fs::read_to_string(p.join("uevent"));
        let _ = std::fs::read_to_string(p.join("idVendor"));
        let _ = std::fs::read_to_string(p.join("idProduct"));
        n += 1;
    }
    n
}

fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

#[test]
fn large_host_advertises_every_device() {
    let host = large_host();
    let cfg = config(
        "permittedHostDevices:
  pciHostDevices:
  - {pciVendorSelector: '8086:5845', resourceName: devices.kubevirt.io/nvme}
  mediatedDevices:
  - {mdevNameSelector: GRID T4-1Q, resourceName: nvidia.com/GRID_T4-1Q}
  usb:
  - resourceName: kubevirt.io/storage
    selectors: [{vendor: '46f4', product: '0001'}]
",
    );
    let inv = discover(&host.paths, &cfg);
    assert_eq!(
        inv.resources["devices.kubevirt.io/nvme"].devices.len(),
        1024
    );
    assert_eq!(inv.resources["nvidia.com/GRID_T4-1Q"].devices.len(), 512);
    assert_eq!(inv.resources["kubevirt.io/storage"].devices.len(), 256);
    assert!(
        inv.resources
            .values()
            .flat_map(|r| &r.devices)
            .all(|d| d.healthy)
    );
    // 32 mdev parent cards are PCI functions bound to nvidia: explained, not advertised.
    assert_eq!(
        inv.skipped.len(),
        32,
        "{:?}",
        &inv.skipped[..3.min(inv.skipped.len())]
    );
    let ours = best_of(5, || discover(&host.paths, &cfg));
    let bare = best_of(5, || bare_loop(&host));
    eprintln!(
        "discover: {ours:?}, bare loop: {bare:?}, ratio {:.2} (information only; {} build)",
        ours.as_secs_f64() / bare.as_secs_f64(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
}
