//! Full discovery of a large host against a bare loop reading the same sysfs files, in one run:
//! on a plain directory and on the mocksys FUSE mount.
//!
//! The host: 1,024 PCI functions (992 NVMe drives on vfio-pci, 32 Tesla T4s on nvidia with 16
//! GRID T4-1Q mdevs each: 512 mdevs) and 256 USB storage devices. The bare loop reads what
//! discovery must read (PCI `uevent`, `driver` and `iommu_group` links, `numa_node`; each
//! mdev's type name, group and parent NUMA node; USB ids and `uevent`; the /dev node of every
//! candidate), with no matching, no bundles and no safety checks: the floor for this tree.
//! Aim: discovery within 1.5x of the bare loop on each backend.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use hostdev_agent::config::AgentConfig;
use hostdev_agent::sysfs::HostPaths;
use mocksys::Host;
use mocksys::devdir::DevDir;
use mocksys::kernel::Kernel;
use mocksys::mount::{Mount, MountOptions};
use mocksys::plaindir::PlainDir;
use mocksys::spec::{HostSpec, PciAddress};

const NVME: usize = 992;
const T4: usize = 32;
const MDEVS_PER_T4: usize = 16;
const USB: usize = 256;

fn host() -> Host {
    let mut y = String::from("modules: [nvme, nvidia, vfio-pci]\npci:\n");
    for i in 0..NVME + T4 {
        let (bus, dev, func) = (1 + i / 256, (i / 8) % 32, i % 8);
        let what = if i < NVME {
            "preset: qemu-nvme, driver: vfio-pci"
        } else {
            "preset: tesla-t4, driver: nvidia"
        };
        y += &format!(
            "  - {{address: \"0000:{bus:02x}:{dev:02x}.{func}\", {what}, numaNode: {}}}\n",
            i % 2
        );
    }
    y += "usb:\n";
    for i in 0..USB {
        y += &format!(
            "  - {{bus: {}, port: \"{}\", preset: qemu-usb-storage}}\n",
            1 + i / 31,
            1 + i % 31
        );
    }
    let spec = HostSpec::from_yaml_str(&y, "discovery-bench.yaml").expect("bench host");
    // mdevs are created on the model before the host starts: one render instead of 512.
    let mut kernel = Kernel::from_spec(&spec).expect("boot");
    for t in 0..T4 {
        let i = NVME + t;
        let parent = PciAddress::parse(&format!(
            "0000:{:02x}:{:02x}.{}",
            1 + i / 256,
            (i / 8) % 32,
            i % 8
        ))
        .expect("address");
        for m in 0..MDEVS_PER_T4 {
            let uuid = format!("{:08x}-0000-4000-8000-{:012x}", t, m);
            kernel
                .mdev_create(parent, "nvidia-230", uuid.as_bytes())
                .expect("mdev create");
        }
    }
    Host::from_kernel(kernel)
}

fn config() -> AgentConfig {
    hostdev_agent::config::parse(
        r#"
permittedHostDevices:
  pciHostDevices: [{pciVendorSelector: "8086:5845", resourceName: devices.kubevirt.io/nvme}]
  mediatedDevices: [{mdevNameSelector: "GRID T4-1Q", resourceName: nvidia.com/GRID_T4-1Q}]
  usb: [{resourceName: kubevirt.io/storage, selectors: [{vendor: "46f4", product: "0001"}]}]
"#,
        "bench-config.yaml",
    )
    .expect("bench config")
}

fn link_name(p: &Path) -> Option<String> {
    std::fs::read_link(p)
        .ok()
        .and_then(|l| l.file_name().map(|n| n.to_string_lossy().into_owned()))
}

/// The floor: read what discovery reads, decide nothing. Returns a count so nothing is optimised away.
fn bare_loop(sys: &Path, dev: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(sys.join("bus/pci/devices"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let d = e.path();
        n += std::fs::read(d.join("uevent"))
            .map(|b| b.len())
            .unwrap_or(0);
        n += link_name(&d.join("driver")).map(|s| s.len()).unwrap_or(0);
        if let Some(g) = link_name(&d.join("iommu_group")) {
            n += dev.join("vfio").join(g).exists() as usize;
        }
        n += std::fs::read(d.join("numa_node"))
            .map(|b| b.len())
            .unwrap_or(0);
    }
    for e in std::fs::read_dir(sys.join("bus/mdev/devices"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let d = e.path();
        n += std::fs::read(d.join("mdev_type/name"))
            .map(|b| b.len())
            .unwrap_or(0);
        if let Some(g) = link_name(&d.join("iommu_group")) {
            n += dev.join("vfio").join(g).exists() as usize;
        }
        n += std::fs::read(d.join("../numa_node"))
            .map(|b| b.len())
            .unwrap_or(0);
    }
    for e in std::fs::read_dir(sys.join("bus/usb/devices"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("usb") || name.contains(':') {
            continue;
        }
        let d = e.path();
        n += std::fs::read(d.join("idVendor"))
            .map(|b| b.len())
            .unwrap_or(0);
        n += std::fs::read(d.join("idProduct"))
            .map(|b| b.len())
            .unwrap_or(0);
        let uevent = std::fs::read_to_string(d.join("uevent")).unwrap_or_default();
        if let Some(devname) = uevent.lines().find_map(|l| l.strip_prefix("DEVNAME=")) {
            n += dev.join(devname).exists() as usize;
        }
    }
    n
}

fn median_of(runs: usize, mut f: impl FnMut()) -> Duration {
    let mut t: Vec<Duration> = (0..runs)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed()
        })
        .collect();
    t.sort();
    t[runs / 2]
}

struct Backend {
    name: &'static str,
    sys: PathBuf,
    dev: PathBuf,
}

fn main() {
    let mut c = Criterion::default().configure_from_args().sample_size(10);
    let host = host();
    let cfg = config();
    let tmp = tempfile::tempdir().expect("tempdir");

    let plain_sys = tmp.path().join("plain/sys");
    let plain_dev = tmp.path().join("plain/dev");
    let _plain = PlainDir::new(&host, &plain_sys).expect("plain directory");
    let _plain_dev = DevDir::new(&host, &plain_dev).expect("plain dev");
    let mut backends = vec![Backend {
        name: "plain",
        sys: plain_sys,
        dev: plain_dev,
    }];

    let fuse = if Path::new("/dev/fuse").exists() {
        let m = Mount::new(
            Arc::new(host.clone()),
            &tmp.path().join("fuse"),
            MountOptions::default(),
        )
        .expect("FUSE mount");
        backends.push(Backend {
            name: "fuse",
            sys: m.sys_path(),
            dev: m.dev_path().to_owned(),
        });
        Some(m)
    } else {
        eprintln!("SKIPPED: /dev/fuse is missing; only the plain directory is measured");
        None
    };

    let mut ratios = Vec::new();
    for b in &backends {
        let paths = HostPaths::new(&b.sys, &b.dev);
        let inv = hostdev_agent::discovery::discover(&paths, &cfg);
        let count = |r: &str| inv.resources.get(r).map(|r| r.devices.len()).unwrap_or(0);
        assert_eq!(
            count("devices.kubevirt.io/nvme"),
            NVME,
            "{}: every drive discovered",
            b.name
        );
        assert_eq!(
            count("nvidia.com/GRID_T4-1Q"),
            T4 * MDEVS_PER_T4,
            "{}: every mdev discovered",
            b.name
        );
        assert_eq!(
            count("kubevirt.io/storage"),
            USB,
            "{}: every USB device discovered",
            b.name
        );

        let mut group = c.benchmark_group(format!("discovery_{}", b.name));
        group.bench_function("bare_loop", |bench| {
            bench.iter(|| bare_loop(&b.sys, &b.dev))
        });
        group.bench_function("discover", |bench| {
            bench.iter(|| hostdev_agent::discovery::discover(&paths, &cfg))
        });
        group.finish();

        let bare = median_of(9, || {
            std::hint::black_box(bare_loop(&b.sys, &b.dev));
        });
        let disc = median_of(9, || {
            std::hint::black_box(hostdev_agent::discovery::discover(&paths, &cfg));
        });
        ratios.push((b.name, disc, bare));
    }
    drop(fuse);
    println!(
        "\ndiscovery of 1,024 PCI functions, 512 mdevs, 256 USB devices (median of 9, same run):"
    );
    for (name, disc, bare) in ratios {
        println!(
            "  {name:>5}: discover {:>8.2} ms, bare loop {:>8.2} ms, ratio {:.2}x (aim <= 1.5x)",
            disc.as_secs_f64() * 1e3,
            bare.as_secs_f64() * 1e3,
            disc.as_secs_f64() / bare.as_secs_f64()
        );
    }
    c.final_summary();
}
