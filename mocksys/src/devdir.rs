//! A real `/dev` directory kept in step with [`SysBackend::dev_nodes`]: entries are created and
//! removed as the host changes, so inotify watchers see them come and go as on devtmpfs.
//!
//! Device nodes are real character nodes (`mknod`, with the host's major:minor, so `stat`
//! reports what a program expects), inside a private tmpfs mounted `nodev`: opening one fails
//! with EACCES instead of reaching the machine's real device with that number (10:196 is the
//! real `/dev/vfio/vfio`). Where that cannot be done (not root), the directory is a plain one
//! and the nodes are empty regular files; [`DevDir::kind`] says which.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::{Mode, SFlag, makedev, mknod};
use parking_lot::Mutex;

use crate::backend::{DevNode, SysBackend};

/// How device nodes are represented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DevNodeKind {
    /// Character nodes on a private `nodev` tmpfs.
    CharOnNodevTmpfs,
    /// Empty regular files in a plain directory.
    RegularFile,
}

#[derive(Debug, thiserror::Error)]
#[error("/dev tree at {path}: {source}")]
pub struct DevDirError {
    pub path: PathBuf,
    pub source: io::Error,
}

/// A `/dev` tree that follows a backend.
pub struct DevDir {
    root: PathBuf,
    kind: DevNodeKind,
    current: Mutex<BTreeSet<DevNode>>,
    open: AtomicBool,
}

impl DevDir {
    /// Creates (or takes over) `root`, fills it with `backend`'s nodes and follows its changes.
    pub fn new(backend: &dyn SysBackend, root: &Path) -> Result<Arc<DevDir>, DevDirError> {
        let err = |source| DevDirError {
            path: root.to_owned(),
            source,
        };
        std::fs::create_dir_all(root).map_err(err)?;
        let mounted = nix::mount::mount(
            Some("mocksys-dev"),
            root,
            Some("tmpfs"),
            MsFlags::MS_NODEV | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("mode=755,size=1m"),
        );
        let kind = match mounted {
            Ok(()) => DevNodeKind::CharOnNodevTmpfs,
            Err(e) => {
                tracing::info!(path = %root.display(), "no tmpfs for /dev ({e}); using regular files");
                DevNodeKind::RegularFile
            }
        };
        let dir = Arc::new(DevDir {
            root: root.to_owned(),
            kind,
            current: Mutex::new(BTreeSet::new()),
            open: AtomicBool::new(true),
        });
        let follower = dir.clone();
        backend.subscribe(Box::new(move |change| {
            if follower.open.load(Ordering::SeqCst) {
                follower.sync(&change.dev_nodes);
            }
        }));
        dir.sync(&backend.dev_nodes());
        Ok(dir)
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    pub fn kind(&self) -> DevNodeKind {
        self.kind
    }

    /// Makes the directory hold exactly `nodes`.
    pub fn sync(&self, nodes: &[DevNode]) {
        let mut current = self.current.lock();
        let wanted: BTreeSet<DevNode> = nodes.iter().cloned().collect();
        for gone in current.difference(&wanted) {
            let path = self.root.join(&gone.path);
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), "cannot remove device node: {e}");
            }
            self.prune_parents(&path);
        }
        for new in wanted.difference(&current) {
            if let Err(e) = self.create(new) {
                tracing::warn!(node = %new.path, "cannot create device node: {e}");
            }
        }
        *current = wanted;
    }

    fn create(&self, node: &DevNode) -> io::Result<()> {
        let path = self.root.join(&node.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let _ = std::fs::remove_file(&path);
        let perm = node_mode(&node.path);
        match self.kind {
            DevNodeKind::CharOnNodevTmpfs => mknod(
                &path,
                SFlag::S_IFCHR,
                Mode::from_bits_truncate(perm),
                makedev(node.major.into(), node.minor.into()),
            )
            .map_err(io::Error::from),
            DevNodeKind::RegularFile => {
                std::fs::write(&path, b"")?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(perm))
            }
        }
    }

    /// Removes directories left empty up to (not including) the root (`/dev/bus/usb/001`).
    fn prune_parents(&self, path: &Path) {
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == self.root || !d.starts_with(&self.root) || std::fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
    }

    /// Stops following the backend and unmounts the tmpfs (drop does the same).
    pub fn close(&self) {
        if self.open.swap(false, Ordering::SeqCst)
            && self.kind == DevNodeKind::CharOnNodevTmpfs
            && let Err(e) = nix::mount::umount2(&self.root, MntFlags::MNT_DETACH)
        {
            tracing::warn!(path = %self.root.display(), "cannot unmount /dev tmpfs: {e}");
        }
    }
}

impl Drop for DevDir {
    fn drop(&mut self) {
        self.close();
    }
}

/// Modes as udev sets them by default.
fn node_mode(path: &str) -> u32 {
    if path == "vfio/vfio" {
        0o666
    } else if path.starts_with("bus/usb/") {
        0o664
    } else {
        0o600
    }
}
