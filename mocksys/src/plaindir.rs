//! The same tree written into an ordinary directory, for machines without FUSE.
//!
//! Files carry the content and mode of the attribute, directories and relative symlinks are as
//! in the tree; every change of the backend (hotplug through the library API) is applied to
//! the directory. It serves reads only: a write to a file here changes the file, not the host,
//! and `stat` shows the content length instead of 4096. [`PLAIN_NOTE`] says so; the mount
//! writes it beside the tree and the CLI prints it.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

use crate::backend::{Change, SysBackend};
use crate::tree::{Node, NodeKind, Tree};

/// What a plain directory does not do.
pub const PLAIN_NOTE: &str = "mocksys plain directory: reads only. Writes to these files do NOT \
reach the host model (no bind/unbind/driver_override semantics, no errnos), attributes report \
their real length rather than 4096, and wrong-direction opens are not refused for root. \
Hotplug made through the library API is applied here.";

#[derive(Debug, thiserror::Error)]
#[error("plain sysfs directory {path}: {source}")]
pub struct PlainDirError {
    pub path: PathBuf,
    pub source: io::Error,
}

/// A directory kept equal to a backend's tree.
pub struct PlainDir {
    root: PathBuf,
    open: AtomicBool,
    /// Serialises applying changes.
    lock: Mutex<()>,
}

impl PlainDir {
    /// Writes `backend`'s tree into `root` (created if missing, must be empty) and follows it.
    pub fn new(backend: &dyn SysBackend, root: &Path) -> Result<Arc<PlainDir>, PlainDirError> {
        let err = |source| PlainDirError {
            path: root.to_owned(),
            source,
        };
        std::fs::create_dir_all(root).map_err(err)?;
        let dir = Arc::new(PlainDir {
            root: root.to_owned(),
            open: AtomicBool::new(true),
            lock: Mutex::new(()),
        });
        let follower = dir.clone();
        backend.subscribe(Box::new(move |change| {
            if follower.open.load(Ordering::SeqCst) {
                follower.apply(change);
            }
        }));
        let tree = backend.tree();
        let _guard = dir.lock.lock();
        let mut paths: Vec<&str> = tree.iter().map(|(p, _)| p).collect();
        paths.sort();
        for path in paths {
            if let Some(node) = tree.get(path) {
                dir.write_node(path, node).map_err(err)?;
            }
        }
        drop(_guard);
        Ok(dir)
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Stops following the backend (the files stay).
    pub fn close(&self) {
        self.open.store(false, Ordering::SeqCst);
    }

    fn apply(&self, change: &Change) {
        let _guard = self.lock.lock();
        let mut removed: Vec<&str> = change
            .diff
            .removed
            .iter()
            .map(|(p, _)| p.as_str())
            .collect();
        // Children before parents.
        removed.sort_by(|a, b| b.cmp(a));
        for path in removed {
            remove_any(&self.root.join(path));
        }
        let mut written: Vec<&String> = change
            .diff
            .added
            .iter()
            .chain(&change.diff.changed)
            .collect();
        written.sort();
        for path in written {
            if let Some(node) = change.tree.get(path)
                && let Err(e) = self.rewrite(&change.tree, path, node)
            {
                tracing::warn!(path, "cannot update plain sysfs: {e}");
            }
        }
    }

    fn rewrite(&self, _tree: &Tree, path: &str, node: &Node) -> io::Result<()> {
        let full = self.root.join(path);
        let same_kind = match std::fs::symlink_metadata(&full) {
            Ok(m) => match node.kind {
                NodeKind::Dir => m.is_dir(),
                NodeKind::File { .. } => m.is_file(),
                NodeKind::Symlink { .. } => false,
            },
            Err(_) => false,
        };
        if !same_kind {
            remove_any(&full);
        }
        self.write_node(path, node)
    }

    fn write_node(&self, path: &str, node: &Node) -> io::Result<()> {
        let full = self.root.join(path);
        match &node.kind {
            NodeKind::Dir => {
                std::fs::create_dir_all(&full)?;
                std::fs::set_permissions(&full, std::fs::Permissions::from_mode(node.perm.into()))
            }
            NodeKind::File { content, .. } => {
                if let Some(parent) = full.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                // Make it writable for the update, then give it its real mode.
                if full.exists() {
                    std::fs::set_permissions(&full, std::fs::Permissions::from_mode(0o644))?;
                }
                std::fs::write(&full, content)?;
                std::fs::set_permissions(&full, std::fs::Permissions::from_mode(node.perm.into()))
            }
            NodeKind::Symlink { target } => {
                if let Some(parent) = full.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                let _ = std::fs::remove_file(&full);
                std::os::unix::fs::symlink(target, &full)
            }
        }
    }
}

impl Drop for PlainDir {
    fn drop(&mut self) {
        self.close();
    }
}

fn remove_any(path: &Path) {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            let _ = std::fs::remove_dir_all(path);
        }
        Ok(_) => {
            let _ = std::fs::remove_file(path);
        }
        Err(_) => {}
    }
}
