//! Faults armed on attributes the kernel already holds in its page cache: the next read after
//! the rule is added fails, whichever name the program reads through and however the rule was
//! added (`Host::faults().add` or `Host::inject_fault`), even on a file descriptor held open
//! across the injection. Regression tests for the `sysfs-read-errors` scenario, whose agent
//! kept discovering a drive because its `uevent` page was still cached when the rule arrived.
//!
//! Nothing here waits on timing: each test first proves the page is resident (`mincore`), so
//! the read after the injection can only fail if the injection dropped it.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mocksys::faults::{FaultRule, Times};
use mocksys::fuse::FuseOptions;
use mocksys::mount::{Mount, MountOptions};
use mocksys::spec::HostSpec;
use mocksys::{Errno, Host, SysBackend};
use rstest::rstest;

const HOST: &str = r#"
pci:
  - {address: "0000:05:00.0", preset: qemu-nvme, driver: vfio-pci, iommuGroup: 5}
  - {address: "0000:06:00.0", preset: qemu-nvme, driver: vfio-pci, iommuGroup: 6}
"#;
const LINKED: &str = "bus/pci/devices/0000:06:00.0";
const REAL: &str = "devices/pci0000:00/0000:06:00.0";

struct Served {
    host: Host,
    mount: Mount,
    _dir: tempfile::TempDir,
}

impl Served {
    fn new(strict_open: bool) -> Served {
        // A test that cannot run fails: it never passes by skipping.
        assert!(
            Path::new("/dev/fuse").exists(),
            "/dev/fuse is missing: these tests need FUSE"
        );
        let spec = HostSpec::from_yaml_str(HOST, "fault-cache-host.yaml").expect("host spec");
        let host = Host::from_spec(&spec).expect("host");
        let dir = tempfile::tempdir().expect("temp dir");
        let backend: Arc<dyn SysBackend> = Arc::new(host.clone());
        let options = MountOptions {
            fuse: FuseOptions {
                strict_open,
                ..FuseOptions::default()
            },
            ..MountOptions::default()
        };
        let mount = Mount::new(backend, dir.path(), options).expect("mount");
        Served {
            host,
            mount,
            _dir: dir,
        }
    }

    fn sys(&self, rel: &str) -> PathBuf {
        self.mount.sys_path().join(rel)
    }
}

/// Reads as the agent does: one `read(2)` of a page from offset 0.
fn read_page(file: &File) -> Result<Vec<u8>, i32> {
    let mut buf = vec![0u8; 4096];
    match file.read_at(&mut buf, 0) {
        Ok(n) => {
            buf.truncate(n);
            Ok(buf)
        }
        Err(e) => Err(e.raw_os_error().unwrap_or(0)),
    }
}

fn read_path(path: &Path) -> Result<Vec<u8>, i32> {
    let file = File::open(path).map_err(|e| e.raw_os_error().unwrap_or(0))?;
    read_page(&file)
}

/// True when the first page of `file` is in the kernel's page cache (it is mapped, never
/// touched: `mincore` reports residency without faulting anything in).
fn first_page_cached(file: &File) -> bool {
    let len = 4096;
    // SAFETY: a fresh shared read-only mapping of a page of an open file; only mincore looks
    // at it, and it is unmapped before returning.
    unsafe {
        let addr = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        assert_ne!(
            addr,
            libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        let mut vec = [0u8; 1];
        let rc = libc::mincore(addr, len, vec.as_mut_ptr());
        let err = std::io::Error::last_os_error();
        libc::munmap(addr, len);
        assert_eq!(rc, 0, "mincore: {err}");
        vec[0] & 1 == 1
    }
}

/// Reads `path` until its page is cached (the first read may go through readahead only).
fn cache(path: &Path) -> Vec<u8> {
    let file = File::open(path).expect("open");
    let content = read_page(&file).expect("read before the fault");
    assert_eq!(read_page(&file).expect("second read"), content);
    assert!(
        first_page_cached(&file),
        "{} is not in the page cache, so this test would not test the cache",
        path.display()
    );
    content
}

#[derive(Clone, Copy, Debug)]
enum AddedBy {
    TableAdd,
    InjectFault,
}

fn add(host: &Host, by: AddedBy, rule: FaultRule) {
    match by {
        AddedBy::TableAdd => {
            host.faults().add(rule);
        }
        AddedBy::InjectFault => {
            host.inject_fault(rule);
        }
    }
}

#[rstest]
fn a_rule_added_after_a_cached_read_fails_the_next_read(
    #[values(AddedBy::TableAdd, AddedBy::InjectFault)] by: AddedBy,
    #[values(LINKED, REAL)] rule_dir: &str,
    #[values(LINKED, REAL)] read_dir: &str,
) {
    let s = Served::new(false);
    let uevent = s.sys(&format!("{read_dir}/uevent"));
    let before = cache(&uevent);
    assert!(String::from_utf8_lossy(&before).contains("PCI_ID=8086:5845"));
    add(
        &s.host,
        by,
        FaultRule::errno(
            &format!("/sys/{rule_dir}/uevent"),
            Errno::EIO,
            Times::Always,
        ),
    );
    for name in [LINKED, REAL] {
        assert_eq!(
            read_path(&s.sys(&format!("{name}/uevent"))),
            Err(libc::EIO),
            "read through {name} after the rule on {rule_dir}"
        );
    }
    s.host.faults().clear();
    assert_eq!(
        read_path(&uevent).unwrap(),
        before,
        "cleared: content again"
    );
}

#[rstest]
fn a_descriptor_held_open_across_the_injection_sees_the_fault(#[values(false, true)] strict: bool) {
    let s = Served::new(strict);
    let vendor = s.sys(&format!("{LINKED}/vendor"));
    let held = File::open(&vendor).expect("open");
    assert_eq!(read_page(&held).unwrap(), b"0x8086\n");
    if !strict {
        assert!(first_page_cached(&held), "vendor is not cached");
    }
    s.host.faults().add(FaultRule::errno(
        &format!("/sys/{LINKED}/vendor"),
        Errno::EIO,
        Times::Once,
    ));
    assert_eq!(read_page(&held), Err(libc::EIO), "the held descriptor");
    assert_eq!(
        read_page(&held).unwrap(),
        b"0x8086\n",
        "a Once rule fires once"
    );
}

#[test]
fn a_prefix_rule_through_the_bus_link_drops_every_cached_attribute_below_it() {
    let s = Served::new(false);
    let files = ["uevent", "vendor", "device"].map(|f| s.sys(&format!("{LINKED}/{f}")));
    for f in &files {
        cache(f);
    }
    let other = s.sys("bus/pci/devices/0000:05:00.0/vendor");
    cache(&other);
    s.host.faults().add(FaultRule::errno(
        &format!("/sys/{LINKED}/*"),
        Errno::EIO,
        Times::Always,
    ));
    for f in &files {
        assert_eq!(read_path(f), Err(libc::EIO), "{}", f.display());
    }
    assert_eq!(read_path(&other).unwrap(), b"0x8086\n", "another device");
}

#[test]
fn removing_a_rule_is_announced_so_no_failure_is_repeated() {
    let s = Served::new(false);
    let vendor = s.sys(&format!("{REAL}/vendor"));
    cache(&vendor);
    let id = s.host.faults().add(FaultRule::errno(
        &format!("{REAL}/vendor"),
        Errno::EIO,
        Times::Always,
    ));
    assert_eq!(read_path(&vendor), Err(libc::EIO));
    assert!(s.host.faults().remove(id));
    assert!(s.host.faults().is_empty());
    assert_eq!(read_path(&vendor).unwrap(), b"0x8086\n");
}
