//! Shared fixtures: a small PCI host in a [`MemBackend`], mounted over real FUSE in a TempDir.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mocksys::errno::Errno;
use mocksys::fuse::{FuseMount, FuseOptions};
use mocksys::testing::{MemBackend, MemEdit, MemNode};

/// Fails the calling test when the machine has no FUSE (see `mocksys::testing::cannot_run`).
#[macro_export]
macro_rules! require_fuse {
    () => {
        if !std::path::Path::new("/dev/fuse").exists() {
            mocksys::testing::cannot_run("/dev/fuse is missing on this machine");
            return;
        }
    };
}

pub const DEV: &str = "devices/pci0000:00/0000:00:05.0";
pub const BDF: &str = "0000:00:05.0";

/// A mounted backend; the mount is dropped (unmounted) before its directory.
pub struct Mounted {
    pub mount: FuseMount,
    pub backend: Arc<MemBackend>,
    pub dir: tempfile::TempDir,
}

impl Mounted {
    pub fn new(backend: Arc<MemBackend>, options: FuseOptions) -> Mounted {
        let dir = tempfile::tempdir().expect("temp dir");
        let mount = FuseMount::mount(backend.clone(), dir.path(), options).expect("mount");
        Mounted {
            mount,
            backend,
            dir,
        }
    }
    pub fn path(&self, rel: &str) -> PathBuf {
        self.mount.path().join(rel)
    }
}

pub fn options(strict_open: bool) -> FuseOptions {
    FuseOptions {
        strict_open,
        ..FuseOptions::default()
    }
}

fn attr(perm: u16, content: &str) -> MemNode {
    MemNode::Attr {
        perm,
        content: content.as_bytes().to_vec(),
    }
}

fn link(target: &str) -> MemNode {
    MemNode::Symlink(target.to_owned())
}

/// One NVMe function bound to `nvme`, with bind/unbind that follow the kernel's errnos.
pub fn small_host() -> Arc<MemBackend> {
    let b = Arc::new(MemBackend::new());
    let mut config = vec![0u8; 64];
    config[..4].copy_from_slice(&[0x86, 0x80, 0x45, 0x58]);
    b.set([
        (format!("{DEV}/vendor"), attr(0o444, "0x8086\n")),
        (format!("{DEV}/device"), attr(0o444, "0x5845\n")),
        (format!("{DEV}/driver_override"), attr(0o644, "(null)\n")),
        (format!("{DEV}/remove"), attr(0o200, "")),
        (
            format!("{DEV}/config"),
            MemNode::Binary {
                perm: 0o644,
                content: config,
            },
        ),
        (
            format!("{DEV}/driver"),
            link("../../../bus/pci/drivers/nvme"),
        ),
        (
            format!("bus/pci/devices/{BDF}"),
            link(&format!("../../../{DEV}")),
        ),
        ("bus/pci/drivers/nvme/bind".into(), attr(0o200, "")),
        ("bus/pci/drivers/nvme/unbind".into(), attr(0o200, "")),
        (
            format!("bus/pci/drivers/nvme/{BDF}"),
            link(&format!("../../../../{DEV}")),
        ),
    ]);
    b.on_write("bus/pci/drivers/nvme/unbind", |view, data| {
        let bdf = String::from_utf8_lossy(data).trim().to_owned();
        if bdf != BDF || view.get(&format!("{DEV}/driver")).is_none() {
            return Err(Errno::ENODEV);
        }
        Ok(MemEdit {
            remove: vec![
                format!("{DEV}/driver"),
                format!("bus/pci/drivers/nvme/{BDF}"),
            ],
            ..MemEdit::default()
        })
    });
    b.on_write("bus/pci/drivers/nvme/bind", |view, data| {
        let bdf = String::from_utf8_lossy(data).trim().to_owned();
        if bdf != BDF {
            return Err(Errno::ENODEV);
        }
        if view.get(&format!("{DEV}/driver")).is_some() {
            return Err(Errno::EBUSY);
        }
        Ok(MemEdit {
            set: vec![
                (
                    format!("{DEV}/driver"),
                    link("../../../bus/pci/drivers/nvme"),
                ),
                (
                    format!("bus/pci/drivers/nvme/{BDF}"),
                    link(&format!("../../../../{DEV}")),
                ),
            ],
            ..MemEdit::default()
        })
    });
    // driver_override keeps the value up to the first newline, like the kernel.
    b.on_write(&format!("{DEV}/driver_override"), |_, data| {
        let text = String::from_utf8_lossy(data);
        let value = text.split('\n').next().unwrap_or("");
        let shown = if value.is_empty() { "(null)" } else { value };
        Ok(MemEdit {
            set: vec![(
                format!("{DEV}/driver_override"),
                attr(0o644, &format!("{shown}\n")),
            )],
            ..MemEdit::default()
        })
    });
    b
}

/// Runs `bash -c script` (bash, because dash's `echo` reports every write error as
/// "I/O error" whatever the errno).
pub fn sh(script: &str) -> Output {
    Command::new("bash")
        .arg("-c")
        .arg(script)
        .output()
        .expect("run sh")
}

/// Waits for `cond` up to `limit`; false on timeout.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs `f` on a thread and fails the test if it has not finished within `limit`.
pub fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("{what} did not finish within {limit:?}"))
}

pub fn read_str(path: &Path) -> std::io::Result<String> {
    std::fs::read_to_string(path)
}
