//! Attribute reads through the mocksys FUSE mount against their baselines, in one run:
//!
//! - first reads (fresh inodes: every read is of a file the kernel has not seen since a fresh
//!   mount) through mocksys vs. a minimal FUSE file system serving constant files (the floor
//!   of FUSE itself);
//! - repeated reads of unchanged attributes through mocksys vs. a plain directory holding the
//!   same files;
//! - the time to mount a host of 1,024 PCI functions and 256 USB devices.
//!
//! Each read is `open + read + close` (`std::fs::read`). Ratios are printed at the end.
//! Aims: first reads within 1.2x of the floor, repeated reads within 1.5x of the plain
//! directory, mount under 200 ms.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use criterion::Criterion;
use fuser::{
    FileAttr, FileHandle, FileType, Filesystem, Generation, INodeNo, LockOwner, OpenFlags,
    ReplyAttr, ReplyData, ReplyEntry, ReplyOpen, Request,
};
use mocksys::mount::{Mount, MountOptions};
use mocksys::plaindir::PlainDir;
use mocksys::spec::HostSpec;
use mocksys::tree::NodeKind;
use mocksys::{Host, SysBackend};

const PCI: usize = 1024;
const USB: usize = 256;

/// A host file with `PCI` NVMe functions (one per IOMMU group) and `USB` storage devices.
fn big_host_yaml() -> String {
    let mut y = String::from("pci:\n");
    for i in 0..PCI {
        let (bus, dev, func) = (1 + i / 256, (i / 8) % 32, i % 8);
        y += &format!(
            "  - {{address: \"0000:{bus:02x}:{dev:02x}.{func}\", preset: qemu-nvme, driver: nvme, iommuGroup: {}}}\n",
            100 + i
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
    y
}

fn big_host() -> Host {
    let spec = HostSpec::from_yaml_str(&big_host_yaml(), "bench-host.yaml").expect("bench host");
    Host::from_spec(&spec).expect("boot bench host")
}

/// Every readable text attribute of every PCI function, device by device.
fn attribute_paths(host: &Host) -> Vec<String> {
    let tree = host.tree();
    let mut paths: Vec<String> = tree
        .iter()
        .filter(|(p, n)| {
            p.starts_with("devices/pci")
                && n.readable()
                && matches!(&n.kind, NodeKind::File { size, .. } if *size == 4096)
        })
        .map(|(p, _)| p.to_owned())
        .collect();
    paths.sort();
    paths
}

/// The floor: a FUSE file system serving constant files with only lookup, getattr and read,
/// long TTLs and ENOSYS for open. It has the shape of the attribute set it is compared with
/// (`dirs` directories of `per_dir` files under the root), so both cost the same number of
/// lookups per read; what remains is the cost of mocksys itself.
struct ConstFs {
    dirs: u64,
    per_dir: u64,
}

const CONST_CONTENT: &[u8] = b"0x8086\n";
const TTL: Duration = Duration::from_secs(3600);
const FILE_INO_BASE: u64 = 1 << 32;

impl ConstFs {
    fn attr(ino: u64) -> FileAttr {
        let dir = ino < FILE_INO_BASE;
        FileAttr {
            ino: INodeNo(ino),
            size: if dir { 0 } else { CONST_CONTENT.len() as u64 },
            blocks: 0,
            atime: SystemTime::UNIX_EPOCH,
            mtime: SystemTime::UNIX_EPOCH,
            ctime: SystemTime::UNIX_EPOCH,
            crtime: SystemTime::UNIX_EPOCH,
            kind: if dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            },
            perm: if dir { 0o755 } else { 0o444 },
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }
}

impl Filesystem for ConstFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = name.to_str().unwrap_or("");
        let ino = if parent.0 == 1 {
            name.strip_prefix('d')
                .and_then(|n| n.parse::<u64>().ok())
                .filter(|k| *k < self.dirs)
                .map(|k| 2 + k)
        } else {
            name.strip_prefix('f')
                .and_then(|n| n.parse::<u64>().ok())
                .filter(|i| *i < self.per_dir)
                .map(|i| FILE_INO_BASE + (parent.0 - 2) * self.per_dir + i)
        };
        match ino {
            Some(ino) => reply.entry(&TTL, &Self::attr(ino), Generation(0)),
            None => reply.error(fuser::Errno::ENOENT),
        }
    }
    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        reply.attr(&TTL, &Self::attr(ino.0));
    }
    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.error(fuser::Errno::ENOSYS);
    }
    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.error(fuser::Errno::ENOSYS);
    }
    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        _size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let start = (offset as usize).min(CONST_CONTENT.len());
        reply.data(&CONST_CONTENT[start..]);
    }
}

fn mount_floor(dir: &Path, dirs: u64, per_dir: u64) -> fuser::BackgroundSession {
    let mut config = fuser::Config::default();
    config.n_threads = Some(4);
    fuser::spawn_mount(ConstFs { dirs, per_dir }, dir, &config)
        .expect("mount the floor file system")
}

/// Total time and count per measured kind, for the ratios printed at the end.
#[derive(Default)]
struct Tally {
    totals: std::collections::HashMap<&'static str, (Duration, u64)>,
}

impl Tally {
    fn record(&mut self, name: &'static str, total: Duration, reads: u64) {
        let e = self.totals.entry(name).or_default();
        e.0 += total;
        e.1 += reads;
    }
    /// Time per read over every measured read (warm-up included), weighted by reads.
    fn mean(&self, name: &str) -> Option<Duration> {
        let (total, reads) = self.totals.get(name)?;
        (*reads > 0).then(|| total.div_f64(*reads as f64))
    }
}

/// Reads `count` files from a fresh mount each time the previous one is used up; only the
/// reads are timed.
fn first_reads<M>(count: u64, paths: &[PathBuf], mut fresh: impl FnMut() -> M) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = count as usize;
    while left > 0 {
        let mounted = fresh();
        let n = left.min(paths.len());
        let start = Instant::now();
        for p in &paths[..n] {
            std::hint::black_box(std::fs::read(p).expect("read attribute"));
        }
        total += start.elapsed();
        drop(mounted);
        left -= n;
    }
    total
}

fn repeated_reads(count: u64, paths: &[PathBuf]) -> Duration {
    let start = Instant::now();
    for i in 0..count as usize {
        std::hint::black_box(std::fs::read(&paths[i % paths.len()]).expect("read attribute"));
    }
    start.elapsed()
}

fn main() {
    if !Path::new("/dev/fuse").exists() {
        eprintln!("SKIPPED: /dev/fuse is missing; the mocksys FUSE benchmark needs it");
        return;
    }
    let mut c = Criterion::default().sample_size(10).configure_from_args();
    let tally = Arc::new(Mutex::new(Tally::default()));

    let boot = Instant::now();
    let host = big_host();
    let boot = boot.elapsed();
    let attrs = attribute_paths(&host);
    let backend: Arc<dyn SysBackend> = Arc::new(host.clone());

    // Mount time (FUSE sys + /dev) of the 1,024 + 256 host.
    let mut mount_times = Vec::new();
    c.bench_function("mocksys/mount_1024pci_256usb", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().unwrap();
                let start = Instant::now();
                let m = Mount::new(backend.clone(), dir.path(), MountOptions::default())
                    .expect("mount");
                let took = start.elapsed();
                total += took;
                mount_times.push(took);
                drop(m);
            }
            total
        })
    });

    // First reads through mocksys: fresh mounts, every file read once per mount.
    let t = tally.clone();
    c.bench_function("mocksys/first_read/fuse", |b| {
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir().unwrap();
            let paths: Vec<PathBuf> = attrs
                .iter()
                .map(|p| dir.path().join("sys").join(p))
                .collect();
            let total = first_reads(iters, &paths, || {
                Mount::new(backend.clone(), dir.path(), MountOptions::default()).expect("mount")
            });
            t.lock().expect("tally").record("fuse_first", total, iters);
            total
        })
    });

    // The floor: the same number of reads from a constant FUSE file system.
    let t = tally.clone();
    let dirs = PCI as u64;
    let per_dir = (attrs.len() as u64).div_ceil(dirs);
    c.bench_function("mocksys/first_read/fuse_floor", |b| {
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir().unwrap();
            let paths: Vec<PathBuf> = (0..dirs * per_dir)
                .map(|i| {
                    dir.path()
                        .join(format!("d{}/f{}", i / per_dir, i % per_dir))
                })
                .collect();
            let total = first_reads(iters, &paths, || mount_floor(dir.path(), dirs, per_dir));
            t.lock().expect("tally").record("floor_first", total, iters);
            total
        })
    });

    // Repeated reads of unchanged attributes: mocksys vs a plain directory with the same files.
    let repeat_set: Vec<&String> = attrs.iter().take(1000).collect();
    let dir = tempfile::tempdir().unwrap();
    let mount = Mount::new(backend.clone(), dir.path(), MountOptions::default()).expect("mount");
    let fuse_paths: Vec<PathBuf> = repeat_set
        .iter()
        .map(|p| mount.sys_path().join(p))
        .collect();
    repeated_reads(fuse_paths.len() as u64, &fuse_paths);
    let t = tally.clone();
    c.bench_function("mocksys/repeat_read/fuse", |b| {
        b.iter_custom(|iters| {
            let total = repeated_reads(iters, &fuse_paths);
            t.lock().expect("tally").record("fuse_repeat", total, iters);
            total
        })
    });
    drop(mount);

    // The same reads with strict opens (OPEN + RELEASE round trips, direct I/O), for reference.
    let dir = tempfile::tempdir().unwrap();
    let strict = MountOptions {
        fuse: mocksys::fuse::FuseOptions {
            strict_open: true,
            ..Default::default()
        },
        ..MountOptions::default()
    };
    let mount = Mount::new(backend.clone(), dir.path(), strict).expect("mount");
    let strict_paths: Vec<PathBuf> = repeat_set
        .iter()
        .map(|p| mount.sys_path().join(p))
        .collect();
    let t = tally.clone();
    c.bench_function("mocksys/repeat_read/fuse_strict_open", |b| {
        b.iter_custom(|iters| {
            let total = repeated_reads(iters, &strict_paths);
            t.lock()
                .expect("tally")
                .record("strict_repeat", total, iters);
            total
        })
    });
    drop(mount);

    let plain_dir = tempfile::tempdir().unwrap();
    let plain = PlainDir::new(&*backend, plain_dir.path()).expect("plain dir");
    let plain_paths: Vec<PathBuf> = repeat_set.iter().map(|p| plain.path().join(p)).collect();
    repeated_reads(plain_paths.len() as u64, &plain_paths);
    let t = tally.clone();
    c.bench_function("mocksys/repeat_read/plain_dir", |b| {
        b.iter_custom(|iters| {
            let total = repeated_reads(iters, &plain_paths);
            t.lock()
                .expect("tally")
                .record("plain_repeat", total, iters);
            total
        })
    });
    drop(plain);

    c.final_summary();

    let t = tally.lock().expect("tally");
    let show = |d: Option<Duration>| {
        d.map_or("n/a".to_owned(), |d| {
            format!("{:.2} us", d.as_secs_f64() * 1e6)
        })
    };
    let ratio = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
        (Some(a), Some(b)) => format!("{:.2}x", a.as_secs_f64() / b.as_secs_f64()),
        _ => "n/a".into(),
    };
    mount_times.sort();
    let median_mount = mount_times.get(mount_times.len() / 2).copied();
    println!(
        "\nmocksys FUSE summary ({} attribute files, host boot {:.0} ms)",
        attrs.len(),
        boot.as_secs_f64() * 1e3
    );
    println!(
        "  first read   fuse {} | floor {} | fuse/floor {} (aim <= 1.2x)",
        show(t.mean("fuse_first")),
        show(t.mean("floor_first")),
        ratio(t.mean("fuse_first"), t.mean("floor_first"))
    );
    println!(
        "  repeat read  fuse {} | plain {} | fuse/plain {} (aim <= 1.5x)",
        show(t.mean("fuse_repeat")),
        show(t.mean("plain_repeat")),
        ratio(t.mean("fuse_repeat"), t.mean("plain_repeat"))
    );
    println!(
        "  repeat read  strict-open fuse {} | strict/plain {}",
        show(t.mean("strict_repeat")),
        ratio(t.mean("strict_repeat"), t.mean("plain_repeat"))
    );
    println!(
        "  mount 1024 PCI + 256 USB: median {} (aim < 200 ms)",
        median_mount.map_or("n/a".into(), |d| format!("{:.1} ms", d.as_secs_f64() * 1e3))
    );
}
