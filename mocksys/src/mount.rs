//! [`Mount`]: one guard serving a host at `DIR/sys` and `DIR/dev`, and optionally its uevents
//! on netlink. Dropping it stops everything and unmounts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::backend::SysBackend;
use crate::devdir::{DevDir, DevDirError};
use crate::fuse::{FuseError, FuseMount, FuseOptions, UnmountReport};
use crate::netlink::{NetlinkError, UeventFollower, UeventSender};
use crate::plaindir::{PLAIN_NOTE, PlainDir, PlainDirError};

/// What to serve.
#[derive(Clone, Debug, Default)]
pub struct MountOptions {
    pub fuse: FuseOptions,
    /// Write the tree into a plain directory instead of mounting FUSE (reads only).
    pub plain: bool,
    /// Multicast uevents on NETLINK_KOBJECT_UEVENT (only inside a private network namespace).
    pub netlink: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error(transparent)]
    Fuse(#[from] FuseError),
    #[error(transparent)]
    Plain(#[from] PlainDirError),
    #[error(transparent)]
    Dev(#[from] DevDirError),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error("cannot create {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
}

enum SysFront {
    Fuse(FuseMount),
    Plain(Arc<PlainDir>),
}

/// A served host. Fields drop in order: uevents stop, then sys, then dev.
pub struct Mount {
    _uevents: Option<UeventFollower>,
    sys: Option<SysFront>,
    dev: Arc<DevDir>,
    root: PathBuf,
}

impl Mount {
    /// Serves `backend` under `dir` (created if missing): `dir/sys` and `dir/dev`.
    pub fn new(
        backend: Arc<dyn SysBackend>,
        dir: &Path,
        options: MountOptions,
    ) -> Result<Mount, MountError> {
        let sys_path = dir.join("sys");
        std::fs::create_dir_all(&sys_path).map_err(|source| MountError::Dir {
            path: sys_path.clone(),
            source,
        })?;
        // Netlink first: it is the step that refuses (shared namespace) and holds nothing.
        let uevents = if options.netlink {
            Some(UeventSender::new()?.follow(&*backend))
        } else {
            None
        };
        let sys = if options.plain {
            let note = dir.join("README.mocksys");
            if let Err(e) = std::fs::write(&note, format!("{PLAIN_NOTE}\n")) {
                tracing::warn!(path = %note.display(), "cannot write the plain-directory note: {e}");
            }
            tracing::warn!("{PLAIN_NOTE}");
            SysFront::Plain(PlainDir::new(&*backend, &sys_path)?)
        } else {
            SysFront::Fuse(FuseMount::mount(backend.clone(), &sys_path, options.fuse)?)
        };
        let dev = DevDir::new(&*backend, &dir.join("dev"))?;
        Ok(Mount {
            _uevents: uevents,
            sys: Some(sys),
            dev,
            root: dir.to_owned(),
        })
    }

    /// `DIR/sys` (for FUSE, the canonical mount point).
    pub fn sys_path(&self) -> PathBuf {
        match &self.sys {
            Some(SysFront::Fuse(m)) => m.path().to_owned(),
            Some(SysFront::Plain(p)) => p.path().to_owned(),
            None => self.root.join("sys"),
        }
    }

    /// `DIR/dev`.
    pub fn dev_path(&self) -> &Path {
        self.dev.path()
    }

    /// True when serving a plain directory (no write semantics).
    pub fn is_plain(&self) -> bool {
        matches!(self.sys, Some(SysFront::Plain(_)))
    }

    /// Stops serving now (what drop does), reporting how the FUSE unmount went.
    pub fn unmount(mut self) -> UnmountReport {
        self.stop()
    }

    fn stop(&mut self) -> UnmountReport {
        self._uevents = None;
        let report = match self.sys.take() {
            Some(SysFront::Fuse(m)) => m.unmount(),
            Some(SysFront::Plain(p)) => {
                p.close();
                UnmountReport::default()
            }
            None => UnmountReport::default(),
        };
        self.dev.close();
        report
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.stop();
    }
}
