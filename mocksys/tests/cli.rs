//! The `mocksys` binary: `check` with positioned errors, `mount` until SIGTERM/SIGINT.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::wait_for;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const GOOD: &str =
    "pci:\n  - {address: \"0000:00:05.0\", preset: qemu-nvme, driver: nvme, iommuGroup: 12}\n";

fn mocksys() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mocksys"))
}

#[test]
fn check_accepts_a_good_file_and_positions_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, GOOD).unwrap();
    let out = mocksys().arg("check").arg(&good).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "pci:\n  - {address: \"0000:00:05.0\", preset: qemu-nvme}\n  - {address: \"0000:00:05.0\", preset: qemu-nvme}\n",
    )
    .unwrap();
    let out = mocksys().arg("check").arg(&bad).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml:3:"),
        "file:line:column expected: {err}"
    );
}

/// A running `mocksys mount`. Dropped on any path (a failed assertion included), it kills the
/// server and lazily unmounts what it left, so a failing test never leaks a mount.
struct Served {
    child: Option<Child>,
    sys: std::path::PathBuf,
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if mocksys::fuse::is_mounted(&self.sys) {
            let _ = nix::mount::umount2(&self.sys, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

fn stop(served: &mut Served, signal: Signal) -> (bool, String) {
    let mut child = served.child.take().expect("server still running");
    kill(Pid::from_raw(child.id() as i32), signal).unwrap();
    let exited = wait_for(Duration::from_secs(20), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !exited {
        let _ = child.kill();
        panic!("mocksys did not exit after {signal}");
    }
    let status = child.wait().unwrap();
    let mut stdout = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut stdout);
    }
    (status.success(), stdout)
}

fn start(args: &[&str], host: &Path, dir: &Path) -> Served {
    let child = mocksys()
        .arg("mount")
        .args(args)
        .arg(host)
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Served {
        child: Some(child),
        sys: dir.join("sys"),
    }
}

#[test]
fn mount_serves_until_sigterm_and_unmounts() {
    require_fuse!();
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("host.yaml");
    std::fs::write(&host, GOOD).unwrap();
    let root = dir.path().join("lab");
    let mut served = start(&[], &host, &root);
    let vendor = root.join("sys/bus/pci/devices/0000:00:05.0/vendor");
    let vfio = root.join("dev/vfio/vfio");
    assert!(
        wait_for(Duration::from_secs(20), || vendor.exists() && vfio.exists()),
        "sys and dev came up"
    );
    assert_eq!(std::fs::read_to_string(&vendor).unwrap(), "0x8086\n");
    let (ok, stdout) = stop(&mut served, Signal::SIGTERM);
    assert!(ok, "{stdout}");
    assert!(!mocksys::fuse::is_mounted(&root.join("sys")));
    assert!(!vendor.exists());
}

#[test]
fn plain_mount_says_it_has_no_write_semantics() {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("host.yaml");
    std::fs::write(&host, GOOD).unwrap();
    let root = dir.path().join("lab");
    let mut served = start(&["--plain"], &host, &root);
    let vendor = root.join("sys/bus/pci/devices/0000:00:05.0/vendor");
    assert!(wait_for(Duration::from_secs(20), || vendor.exists()));
    let (ok, stdout) = stop(&mut served, Signal::SIGINT);
    assert!(ok, "{stdout}");
    assert!(stdout.contains("reads only"), "{stdout}");
}
