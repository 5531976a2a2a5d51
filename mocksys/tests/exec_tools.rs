//! libusb and libudev programs, unmodified, on a synthetic host through `mocksys exec`: lsusb
//! (plain, `-t`, `-v`), `udevadm info` and `udevadm monitor` accept the FUSE /sys as sysfs (its
//! statfs says so) and see the synthetic devices and their hotplug events. Needs root, usbutils
//! and udev (`apt-get install -y usbutils udev`): without them these tests fail, they do not skip.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const HOST: &str = "\
pci:
  - {address: \"0000:65:00.0\", preset: tesla-t4, driver: vfio-pci, iommuGroup: 14}
usb:
  - {bus: 1, port: \"1\", preset: qemu-usb-storage}
";

fn host_file(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let p = dir.path().join("host.yaml");
    std::fs::write(&p, HOST).expect("write host file");
    p
}

fn exec(cmd: &[&str]) -> (String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let host = host_file(&dir);
    let out = Command::new(env!("CARGO_BIN_EXE_mocksys"))
        .arg("exec")
        .arg(&host)
        .arg("--")
        .args(cmd)
        .stdin(Stdio::null())
        .output()
        .expect("run mocksys exec");
    let stdout = strip_ansi(&String::from_utf8_lossy(&out.stdout));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({:?}; exit 127 means the tool is not installed):\n{stdout}\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

/// udevadm colours its output on some terminals; the tests read the text.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn statfs_says_sysfs() {
    let (out, _) = exec(&[
        "stat",
        "-f",
        "-c",
        "%T %t",
        "/sys",
        "/sys/bus/usb/devices/1-1/",
    ]);
    assert_eq!(out, "sysfs 62656572\nsysfs 62656572\n");
}

#[test]
fn lsusb_lists_the_synthetic_devices() {
    let (out, err) = exec(&["lsusb"]);
    assert!(
        out.contains("Bus 001 Device 002: ID 46f4:0001 QEMU QEMU USB HARDDRIVE"),
        "{out}{err}"
    );
    assert!(
        out.contains("Bus 001 Device 001: ID 1d6b:0002"),
        "{out}{err}"
    );
    // Nothing of the machine's: exactly the root hub and the one device.
    assert_eq!(out.lines().count(), 2, "{out}");
}

#[test]
fn lsusb_tree_names_the_drivers() {
    let (out, err) = exec(&["lsusb", "-t"]);
    assert!(
        out.contains("Bus 01.Port 1: Dev 1, Class=root_hub"),
        "{out}{err}"
    );
    assert!(
        out.contains("Port 1: Dev 2, If 0, Class=Mass Storage, Driver=usb-storage, 480M"),
        "{out}{err}"
    );
    // Every attribute `lsusb -t` reads exists (configuration, rx_lanes, tx_lanes...).
    assert!(!err.contains("No such file"), "{err}");
}

#[test]
fn lsusb_verbose_decodes_the_descriptors() {
    let (out, err) = exec(&["lsusb", "-v", "-d", "46f4:0001"]);
    for want in [
        "idVendor           0x46f4 QEMU",
        "idProduct          0x0001",
        "iProduct                2 QEMU USB HARDDRIVE",
        "bInterfaceClass         8 Mass Storage",
        "bEndpointAddress     0x81  EP 1 IN",
    ] {
        assert!(out.contains(want), "missing {want:?}:\n{out}{err}");
    }
}

#[test]
fn udevadm_info_reads_the_device() {
    let (out, err) = exec(&["udevadm", "info", "/sys/bus/usb/devices/1-1"]);
    for want in [
        "P: /devices/pci0000:00/0000:00:14.0/usb1/1-1",
        "U: usb",
        "E: PRODUCT=46f4/1/0",
        "E: DEVNAME=/dev/bus/usb/001/002",
        "E: DEVTYPE=usb_device",
    ] {
        assert!(out.contains(want), "missing {want:?}:\n{out}{err}");
    }
}

/// `udevadm monitor` in the node's view sees a hotplug made through the mount (a driver unbind)
/// on the udev line, through its subsystem filter (the header's subsystem hash) too. The kernel
/// line cannot show it: libudev drops kernel-group messages not sent by the kernel itself.
#[test]
fn udevadm_monitor_sees_hotplug() {
    let dir = tempfile::tempdir().expect("temp dir");
    let host = host_file(&dir);
    let script = "udevadm monitor --kernel --udev --subsystem-match=pci & \
                  read go; echo 0000:65:00.0 > /sys/bus/pci/drivers/vfio-pci/unbind; \
                  read done; kill $!; wait";
    let mut child = Command::new(env!("CARGO_BIN_EXE_mocksys"))
        .arg("exec")
        .arg(&host)
        .args(["--", "sh", "-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mocksys exec");
    let mut stdin = child.stdin.take().expect("stdin");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(strip_ansi(&line)).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let mut wait_for = |pred: &dyn Fn(&str) -> bool, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let hit = pred(&line);
                    seen.push(line);
                    if hit {
                        return;
                    }
                }
                Err(_) => panic!("no {what} from udevadm monitor; it printed:\n{seen:#?}"),
            }
        }
    };
    // Both monitors are set up before their header lines are printed.
    wait_for(&|l| l.starts_with("KERNEL - the kernel uevent"), "header");
    writeln!(stdin, "go").expect("write to the script");
    wait_for(
        &|l| {
            l.starts_with("UDEV  [")
                && l.contains("unbind")
                && l.ends_with("/devices/pci0000:00/0000:65:00.0 (pci)")
        },
        "udev-line unbind event",
    );
    writeln!(stdin, "done").expect("write to the script");
    drop(stdin);
    let status = child.wait().expect("wait for mocksys exec");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err)
        .expect("read stderr");
    assert!(status.success(), "{status:?}: {err}");
}

/// A static Go binary (raw system calls, no libc to preload into) gets the magic too, for
/// `statfs` and `fstatfs`. Needs Go (`go` on PATH or /usr/local/go/bin/go).
#[test]
fn a_static_go_binary_sees_sysfs() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("main.go"),
        r#"package main

import (
	"fmt"
	"os"
	"syscall"
)

func main() {
	var s syscall.Statfs_t
	if err := syscall.Statfs("/sys/bus/usb", &s); err != nil {
		panic(err)
	}
	fmt.Printf("statfs %x\n", s.Type)
	f, err := os.Open("/sys/bus/usb/devices/1-1/idVendor")
	if err != nil {
		panic(err)
	}
	if err := syscall.Fstatfs(int(f.Fd()), &s); err != nil {
		panic(err)
	}
	fmt.Printf("fstatfs %x\n", s.Type)
	if err := syscall.Statfs("/proc", &s); err != nil {
		panic(err)
	}
	fmt.Printf("proc %x\n", s.Type)
}
"#,
    )
    .expect("write main.go");
    std::fs::write(dir.path().join("go.mod"), "module probe\n\ngo 1.21\n").expect("write go.mod");
    let go = if Command::new("go").arg("version").output().is_ok() {
        "go".to_owned()
    } else {
        "/usr/local/go/bin/go".to_owned()
    };
    let bin = dir.path().join("probe");
    let out = Command::new(&go)
        .args(["build", "-o"])
        .arg(&bin)
        .arg(".")
        .current_dir(dir.path())
        .env("CGO_ENABLED", "0")
        .output()
        .unwrap_or_else(|e| panic!("running {go} (Go is needed for this test): {e}"));
    assert!(out.status.success(), "go build: {out:?}");
    let (out, err) = exec(&[bin.to_str().expect("utf-8 path")]);
    assert_eq!(
        out, "statfs 62656572\nfstatfs 62656572\nproc 9fa0\n",
        "{err}"
    );
}
