//! The real [`Host`] (from YAML) served through [`Mount`]: the seed's three `echo` commands,
//! `/dev/vfio/N` appearing, hotplug through the library API, faults and latency, the plain
//! directory, and `lspci -nnk` with the mount bound over `/sys` in a private mount namespace.

mod common;

use std::fs;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::sh;
use mocksys::faults::{FaultOp, FaultRule, Times};
use mocksys::fuse::FuseOptions;
use mocksys::mount::{Mount, MountOptions};
use mocksys::spec::HostSpec;
use mocksys::{Errno, Host, SysBackend};

const HOST: &str = r#"
pci:
  - {address: "0000:00:05.0", preset: qemu-nvme, driver: nvme, iommuGroup: 12}
  - {address: "0000:65:00.0", preset: tesla-t4, iommuGroup: 40, numaNode: 0}
usb:
  - {bus: 1, port: "1", preset: qemu-usb-storage}
"#;

fn host() -> Host {
    let spec = HostSpec::from_yaml_str(HOST, "test-host.yaml").expect("host spec");
    Host::from_spec(&spec).expect("host")
}

struct Served {
    mount: Mount,
    host: Host,
    _dir: tempfile::TempDir,
}

fn serve(options: MountOptions) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let host = host();
    let backend: Arc<dyn SysBackend> = Arc::new(host.clone());
    let mount = Mount::new(backend, dir.path(), options).expect("mount");
    Served {
        mount,
        host,
        _dir: dir,
    }
}

fn fuse(strict: bool) -> MountOptions {
    MountOptions {
        fuse: FuseOptions {
            strict_open: strict,
            ..FuseOptions::default()
        },
        ..MountOptions::default()
    }
}

#[test]
fn seed_echo_commands_move_a_device_to_vfio_pci() {
    require_fuse!();
    let s = serve(fuse(false));
    let sys = s.mount.sys_path();
    let dev = sys.join("bus/pci/devices/0000:00:05.0");
    assert_eq!(fs::read_to_string(dev.join("vendor")).unwrap(), "0x8086\n");
    assert!(!s.mount.dev_path().join("vfio/12").exists());
    let script = format!(
        "set -e
         echo 0000:00:05.0 > {sys}/bus/pci/devices/0000:00:05.0/driver/unbind
         echo vfio-pci > {sys}/bus/pci/devices/0000:00:05.0/driver_override
         echo 0000:00:05.0 > {sys}/bus/pci/drivers/vfio-pci/bind",
        sys = sys.display()
    );
    let out = sh(&script);
    assert!(out.status.success(), "{out:?}");
    let driver = fs::canonicalize(dev.join("driver")).unwrap();
    assert_eq!(driver, sys.join("bus/pci/drivers/vfio-pci"));
    assert_eq!(
        fs::read_to_string(dev.join("driver_override")).unwrap(),
        "vfio-pci\n"
    );
    assert!(
        s.mount.dev_path().join("vfio/12").exists(),
        "/dev/vfio/12 appeared"
    );
    assert!(
        fs::read_to_string(dev.join("uevent"))
            .unwrap()
            .contains("DRIVER=vfio-pci"),
        "uevent file re-read after the bind"
    );

    // Errnos as the shell sees them.
    let out = sh(&format!(
        "echo 0000:00:05.0 > {}/bus/pci/drivers/vfio-pci/bind",
        sys.display()
    ));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Device or resource busy"),
        "{out:?}"
    );
    let out = sh(&format!(
        "echo 0000:00:05.0 > {}/bus/pci/drivers/nvme/unbind",
        sys.display()
    ));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("No such device"),
        "{out:?}"
    );
    let out = sh(&format!(
        "echo 10de > {}/bus/pci/drivers/vfio-pci/new_id",
        sys.display()
    ));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Invalid argument"),
        "{out:?}"
    );

    // Back to nvme: /dev/vfio/12 goes away.
    let out = sh(&format!(
        "set -e; echo 0000:00:05.0 > {sys}/bus/pci/drivers/vfio-pci/unbind; echo > {sys}/bus/pci/devices/0000:00:05.0/driver_override; echo 0000:00:05.0 > {sys}/bus/pci/drivers_probe",
        sys = sys.display()
    ));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        fs::canonicalize(dev.join("driver")).unwrap(),
        sys.join("bus/pci/drivers/nvme")
    );
    assert!(!s.mount.dev_path().join("vfio/12").exists());
}

#[test]
fn dev_tree_has_real_nodes_and_follows_hotplug() {
    require_fuse!();
    let s = serve(fuse(false));
    let dev = s.mount.dev_path().to_owned();
    let device_node = dev.join("bus/usb/001/002");
    assert!(
        device_node.exists(),
        "the storage device's node (devnum 2 after the root hub)"
    );
    use std::os::unix::fs::FileTypeExt;
    let vfio = fs::symlink_metadata(dev.join("vfio/vfio")).unwrap();
    assert!(vfio.file_type().is_char_device() || vfio.is_file());
    s.host.unplug_usb("1-1").unwrap();
    assert!(!device_node.exists(), "node removed on unplug");
    assert!(!s.mount.sys_path().join("bus/usb/devices/1-1").exists());
}

#[test]
fn library_hotplug_and_binds_are_seen_without_stale_cache() {
    require_fuse!();
    let s = serve(fuse(false));
    let sys = s.mount.sys_path();
    let t4 = sys.join("bus/pci/devices/0000:65:00.0");
    let uevent = || fs::read_to_string(t4.join("uevent")).unwrap();
    let before = uevent();
    assert!(!before.contains("DRIVER=vfio-pci"), "{before}");
    assert!(!t4.join("driver").exists() || !before.is_empty());
    s.host.vfio_bind("0000:65:00.0").unwrap();
    assert!(
        uevent().contains("DRIVER=vfio-pci"),
        "new value after a library bind"
    );
    assert_eq!(
        fs::read_to_string(t4.join("driver_override")).unwrap(),
        "vfio-pci\n"
    );
    s.host.unplug_pci("0000:65:00.0").unwrap();
    assert!(!t4.exists(), "hot-removed device gone from the mount");
}

#[test]
fn injected_faults_and_latency_reach_programs() {
    require_fuse!();
    let s = serve(fuse(false));
    let path = "bus/pci/devices/0000:00:05.0/numa_node";
    s.host
        .faults()
        .add(FaultRule::errno(path, Errno::EIO, Times::Once));
    let file = s.mount.sys_path().join(path);
    assert_eq!(
        fs::read_to_string(&file).unwrap_err().raw_os_error(),
        Some(libc::EIO)
    );
    assert!(fs::read_to_string(&file).is_ok(), "fires once");

    let slow = "bus/pci/devices/0000:00:05.0/class";
    s.host.faults().add(FaultRule {
        path: slow.into(),
        op: FaultOp::Read,
        errno: None,
        times: Times::Once,
        latency: Duration::from_millis(200),
    });
    let start = Instant::now();
    assert_eq!(
        fs::read_to_string(s.mount.sys_path().join(slow)).unwrap(),
        "0x010802\n"
    );
    // A correctness check that the delay was applied, not a speed assertion.
    assert!(start.elapsed() >= Duration::from_millis(200));
}

#[test]
fn plain_directory_holds_the_same_tree_and_follows_hotplug() {
    let s = serve(MountOptions {
        plain: true,
        ..MountOptions::default()
    });
    assert!(s.mount.is_plain());
    let sys = s.mount.sys_path();
    let dev = sys.join("bus/pci/devices/0000:00:05.0");
    assert_eq!(fs::read_to_string(dev.join("vendor")).unwrap(), "0x8086\n");
    assert_eq!(
        fs::canonicalize(dev.join("driver")).unwrap(),
        fs::canonicalize(sys.join("bus/pci/drivers/nvme")).unwrap()
    );
    s.host.vfio_bind("0000:00:05.0").unwrap();
    assert!(
        fs::read_to_string(dev.join("uevent"))
            .unwrap()
            .contains("DRIVER=vfio-pci")
    );
    assert!(s.mount.dev_path().join("vfio/12").exists());
    let note = fs::read_to_string(sys.parent().unwrap().join("README.mocksys")).unwrap();
    assert!(note.contains("reads only"));
}

#[test]
fn lspci_sees_the_host_through_a_bind_over_sys() {
    require_fuse!();
    if sh("command -v lspci").stdout.is_empty() {
        mocksys::testing::cannot_run("lspci is missing (apt-get install -y pciutils)");
        return;
    }
    let s = serve(fuse(false));
    let out = sh(&format!(
        "unshare -m sh -c 'mount --bind {} /sys && lspci -nnk'",
        s.mount.sys_path().display()
    ));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("[8086:5845]"), "{text}");
    assert!(text.contains("[10de:1eb8]"), "{text}");
    assert!(text.contains("Kernel driver in use: nvme"), "{text}");
}

#[rstest::rstest]
fn writes_through_the_mount_under_concurrent_lookups_never_deadlock(
    #[values(false, true)] strict: bool,
) {
    require_fuse!();
    let s = serve(fuse(strict));
    let sys = s.mount.sys_path();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (sys, stop) = (sys.clone(), stop.clone());
            std::thread::spawn(move || {
                let dev = sys.join("bus/pci/devices/0000:00:05.0");
                let mut rounds = 0u64;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let _ = fs::read_dir(&dev).map(|d| d.count());
                    let _ = fs::read_dir(sys.join("bus/pci/drivers/nvme")).map(|d| d.count());
                    let _ = fs::symlink_metadata(dev.join("driver"));
                    let _ = fs::read_to_string(dev.join("uevent"));
                    rounds += 1;
                }
                rounds
            })
        })
        .collect();
    let sys2 = sys.clone();
    common::within(
        Duration::from_secs(60),
        "100 bind/unbind writes",
        move || {
            let write = |path: &str, value: &str| {
                fs::OpenOptions::new()
                    .write(true)
                    .open(sys2.join(path))
                    .and_then(|mut f| std::io::Write::write_all(&mut f, value.as_bytes()))
            };
            for _ in 0..50 {
                write("bus/pci/drivers/nvme/unbind", "0000:00:05.0\n").unwrap();
                write("bus/pci/drivers/nvme/bind", "0000:00:05.0\n").unwrap();
            }
        },
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    assert_eq!(
        fs::canonicalize(sys.join("bus/pci/devices/0000:00:05.0/driver")).unwrap(),
        sys.join("bus/pci/drivers/nvme")
    );
}

#[test]
fn dev_tree_changes_raise_inotify_events() {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    require_fuse!();
    let s = serve(fuse(false));
    let vfio = s.mount.dev_path().join("vfio");
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK).unwrap();
    inotify
        .add_watch(&vfio, AddWatchFlags::IN_CREATE | AddWatchFlags::IN_DELETE)
        .unwrap();
    s.host.vfio_bind("0000:00:05.0").unwrap();
    let mut names = Vec::new();
    let seen = common::wait_for(Duration::from_secs(10), || {
        if let Ok(events) = inotify.read_events() {
            names.extend(events.into_iter().filter_map(|e| e.name));
        }
        names.iter().any(|n| n == "12")
    });
    assert!(seen, "IN_CREATE for /dev/vfio/12, got {names:?}");
}

#[test]
fn netlink_carries_the_uevents_of_a_bind_in_a_private_namespace() {
    use std::os::fd::AsRawFd;
    // The listener and the mount live in a thread with its own network namespace.
    let result = std::thread::spawn(|| -> Result<Vec<mocksys::Uevent>, String> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("unshare: {e}"))?;
        let listener = mocksys::netlink::listen().map_err(|e| e.to_string())?;
        let timeout = nix::sys::time::TimeVal::new(10, 0);
        nix::sys::socket::setsockopt(
            &listener,
            nix::sys::socket::sockopt::ReceiveTimeout,
            &timeout,
        )
        .map_err(|e| e.to_string())?;
        let s = serve(MountOptions {
            plain: true,
            netlink: true,
            ..MountOptions::default()
        });
        s.host
            .vfio_bind("0000:00:05.0")
            .map_err(|e| e.to_string())?;
        let mut events = Vec::new();
        let mut buf = vec![0u8; 16384];
        while !events
            .iter()
            .any(|e: &mocksys::Uevent| e.action == "bind" && e.get("DRIVER") == Some("vfio-pci"))
        {
            let n = nix::sys::socket::recv(
                listener.as_raw_fd(),
                &mut buf,
                nix::sys::socket::MsgFlags::empty(),
            )
            .map_err(|e| format!("no bind uevent within 10 s ({e}); got {events:?}"))?;
            events.extend(mocksys::Uevent::from_wire(&buf[..n]));
        }
        Ok(events)
    })
    .join()
    .expect("netlink thread");
    match result {
        Ok(events) => assert!(events.iter().any(|e| e.action == "unbind"), "{events:?}"),
        Err(e) if e.starts_with("unshare") => {
            mocksys::testing::cannot_run(&format!("no private network namespace: {e}"))
        }
        Err(e) => panic!("{e}"),
    }
}
