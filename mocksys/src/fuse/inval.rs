//! Keeping the kernel's caches exact: which notifications a [`Change`] needs, and how they are
//! sent without deadlocking against the kernel.
//!
//! The mount hands the kernel long entry and attribute TTLs and lets it keep the page cache, so
//! an unchanged attribute costs no round trip. Everything a change touches is invalidated before
//! the call that made the change returns (for a write through the mount: before `write(2)`
//! returns), in two ways:
//!
//! - **Content, modes, directory listings**: the inode's mtime is bumped and its attributes are
//!   invalidated (`inval_inode` with a negative offset). The mount runs with
//!   `FUSE_AUTO_INVAL_DATA`, so the next read revalidates the attributes, sees the new mtime
//!   and drops the page cache (and a directory's cached listing) itself. An attribute-only
//!   invalidation takes no page or inode lock in the kernel, so it is safe inline from any
//!   request handler, even the write handler of the very file whose page is locked by the
//!   writer. (Invalidating pages from there would wait on that page lock forever.)
//! - **Names** (added, removed, or changed in kind, including negative dentries of added names):
//!   `inval_entry` takes the parent directory's `i_rwsem`, which a concurrent lookup may hold
//!   while it waits for a reply from this very server. Those run on a dedicated thread; the
//!   changing thread waits for it with a bound ([`FuseOptions::inval_wait`]). The mount serves
//!   with several worker threads, so the lookup that holds the lock is answered by another
//!   worker and the wait ends; the bound only guarantees progress if every worker were stuck.

use std::collections::HashMap;
use std::ffi::OsString;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, Sender};
use fuser::{INodeNo, Notifier};
use parking_lot::{Mutex, RwLock};

use crate::backend::Change;
use crate::tree::{Tree, split};

/// State shared by the request handlers and the change subscriber.
pub(crate) struct CacheState {
    notifier: RwLock<Option<Notifier>>,
    /// Cleared on unmount: the backend keeps the subscriber, but it must do nothing any more.
    open: AtomicBool,
    /// The tree as of the last change, to find the parents of removed paths.
    last_tree: Mutex<Arc<Tree>>,
    mtimes: Mutex<HashMap<u64, SystemTime>>,
    epoch: SystemTime,
    stamp: AtomicU64,
    entry_jobs: Mutex<Option<Sender<EntryJob>>>,
    inval_wait: Duration,
    /// Read errors to repeat once, by (inode, offset, pid): see [`CacheState::repeat_error`].
    failed_reads: Mutex<HashMap<(u64, u64, u32), crate::errno::Errno>>,
}

struct EntryJob {
    names: Vec<(u64, OsString)>,
    done: Sender<()>,
}

impl CacheState {
    pub(crate) fn new(tree: Arc<Tree>, inval_wait: Duration) -> Arc<CacheState> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let state = Arc::new(CacheState {
            notifier: RwLock::new(None),
            open: AtomicBool::new(true),
            last_tree: Mutex::new(tree),
            mtimes: Mutex::new(HashMap::new()),
            epoch: SystemTime::now(),
            stamp: AtomicU64::new(0),
            entry_jobs: Mutex::new(Some(tx)),
            inval_wait,
            failed_reads: Mutex::new(HashMap::new()),
        });
        let worker = Arc::downgrade(&state);
        let spawned = std::thread::Builder::new()
            .name("mocksys-inval".into())
            .spawn(move || entry_worker(rx, worker));
        if let Err(e) = spawned {
            tracing::error!("cannot start the invalidation thread: {e}; names go stale");
            *state.entry_jobs.lock() = None;
        }
        state
    }

    pub(crate) fn set_notifier(&self, notifier: Notifier) {
        *self.notifier.write() = Some(notifier);
    }

    /// Stops all further notifications and lets the invalidation thread end.
    pub(crate) fn close(&self) {
        self.open.store(false, Ordering::SeqCst);
        *self.notifier.write() = None;
        *self.entry_jobs.lock() = None;
    }

    /// The mtime served for `ino`: the mount time until its first change.
    pub(crate) fn mtime(&self, ino: u64) -> SystemTime {
        self.mtimes.lock().get(&ino).copied().unwrap_or(self.epoch)
    }

    /// Page-cache reads (the fast mode) go through readahead first, whose errors the kernel
    /// drops before retrying the same page with a second READ; an errno the backend returned
    /// once (an injected fault) would then never reach the program. So a failed READ is
    /// remembered and the retry, the same page for the same process, fails the same way.
    pub(crate) fn remember_failed_read(&self, key: (u64, u64, u32), errno: crate::errno::Errno) {
        self.failed_reads.lock().insert(key, errno);
    }

    /// The errno to repeat for this READ, if it retries one that just failed.
    pub(crate) fn repeat_error(&self, key: (u64, u64, u32)) -> Option<crate::errno::Errno> {
        self.failed_reads.lock().remove(&key)
    }

    /// Marks `ino` as changed now: a new mtime and invalidated attributes (see module docs).
    pub(crate) fn touch(&self, ino: u64) {
        let stamp = self.stamp.fetch_add(1, Ordering::SeqCst) + 1;
        let mtime = self.epoch + Duration::from_micros(stamp);
        self.mtimes.lock().insert(ino, mtime);
        self.failed_reads.lock().retain(|(i, _, _), _| *i != ino);
        if let Some(n) = self.notifier.read().as_ref()
            && let Err(e) = n.inval_inode(INodeNo(ino), -1, 0)
        {
            tracing::debug!(ino, "attribute invalidation refused: {e}");
        }
    }

    /// Invalidates everything `change` names; returns once the kernel has been told.
    pub(crate) fn on_change(&self, change: &Change) {
        if !self.open.load(Ordering::SeqCst) {
            return;
        }
        let old = std::mem::replace(&mut *self.last_tree.lock(), change.tree.clone());
        let new = &change.tree;
        let diff = &change.diff;
        let mut names = Vec::new();
        let mut name_of = |path: &str| {
            let (parent, name) = split(path);
            let parent_ino = new.get(parent).or_else(|| old.get(parent)).map(|n| n.ino);
            if let Some(parent_ino) = parent_ino {
                names.push((parent_ino, OsString::from(name)));
            }
        };
        for path in &diff.added {
            name_of(path);
        }
        for (path, _) in &diff.removed {
            name_of(path);
        }
        for path in &diff.changed {
            let kind_changed = match (old.get(path), new.get(path)) {
                (Some(o), Some(n)) => {
                    std::mem::discriminant(&o.kind) != std::mem::discriminant(&n.kind)
                }
                _ => false,
            };
            if kind_changed {
                name_of(path);
            }
        }
        for path in diff.changed.iter().chain(&diff.children_changed) {
            if let Some(node) = new.get(path) {
                self.touch(node.ino);
            }
        }
        if names.is_empty() || self.notifier.read().is_none() {
            return;
        }
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        let sent = match self.entry_jobs.lock().as_ref() {
            Some(tx) => tx
                .send(EntryJob {
                    names,
                    done: done_tx,
                })
                .is_ok(),
            None => false,
        };
        if sent && done_rx.recv_timeout(self.inval_wait).is_err() {
            tracing::warn!(
                "entry invalidation still pending after {:?}; continuing",
                self.inval_wait
            );
        }
    }
}

fn entry_worker(rx: Receiver<EntryJob>, state: std::sync::Weak<CacheState>) {
    while let Ok(job) = rx.recv() {
        let Some(state) = state.upgrade() else { return };
        let notifier = state.notifier.read().clone();
        drop(state);
        if let Some(n) = notifier {
            for (parent, name) in &job.names {
                if let Err(e) = n.inval_entry(INodeNo(*parent), name) {
                    tracing::debug!(parent, ?name, "entry invalidation refused: {e}");
                }
            }
        }
        let _ = job.done.send(());
    }
}
