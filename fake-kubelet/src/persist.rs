//! Background checkpoint writer. The kubelet writes its checkpoint synchronously; on ext4 a
//! replace-by-rename costs about a millisecond, which would dominate every allocation, and
//! serializing the whole state on every ListAndWatch message makes registering N resources
//! O(N^2). Here a change only bumps a sequence number; one writer thread takes a snapshot of the
//! state *after* the newest request (so it contains every change requested so far), writes it,
//! and [`CheckpointWriter::flush`] waits until everything requested so far is on disk. Bursts of
//! changes collapse into few writes. Stop, kill and restart flush, so no acknowledged change is lost.

use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};
use tokio::sync::watch;

use crate::checkpoint;

type ErrorSink = Box<dyn Fn(String) + Send + Sync>;
/// Serializes the current state into checkpoint JSON.
type Snapshot = Box<dyn Fn() -> Vec<u8> + Send + Sync>;

pub(crate) struct CheckpointWriter {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    path: PathBuf,
    pending: Mutex<Pending>,
    wake: Condvar,
    /// Sequence number of the newest checkpoint on disk (or skipped in favour of a newer one).
    written: watch::Sender<u64>,
    snapshot: Snapshot,
    on_error: ErrorSink,
}

#[derive(Default)]
struct Pending {
    /// Newest requested sequence number not yet written.
    next: Option<u64>,
    submitted: u64,
    shutdown: bool,
}

impl CheckpointWriter {
    pub(crate) fn new(path: PathBuf, snapshot: Snapshot, on_error: ErrorSink) -> Self {
        let shared = Arc::new(Shared {
            path,
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            written: watch::channel(0).0,
            snapshot,
            on_error,
        });
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("checkpoint-writer".into())
            .spawn(move || write_loop(&worker))
            .ok();
        Self { shared, thread }
    }

    /// Asks for the state as of change `seq` (or later) to be written.
    pub(crate) fn request(&self, seq: u64) {
        let mut p = self.shared.pending.lock();
        if seq <= p.submitted {
            return;
        }
        p.submitted = seq;
        p.next = Some(seq);
        self.shared.wake.notify_one();
    }

    /// Waits until every checkpoint submitted before this call is written.
    pub(crate) async fn flush(&self) {
        let target = self.shared.pending.lock().submitted;
        let mut rx = self.shared.written.subscribe();
        // The sender lives as long as `self`, so this only ends when the target is reached.
        let _ = rx.wait_for(|w| *w >= target).await;
    }
}

fn write_loop(shared: &Shared) {
    loop {
        let seq = {
            let mut p = shared.pending.lock();
            loop {
                if let Some(next) = p.next.take() {
                    break next;
                }
                if p.shutdown {
                    return;
                }
                shared.wake.wait(&mut p);
            }
        };
        let json = (shared.snapshot)();
        if let Err(e) = checkpoint::write_json(&shared.path, &json) {
            (shared.on_error)(e.to_string());
        }
        shared.written.send_modify(|w| *w = (*w).max(seq));
    }
}

impl Drop for CheckpointWriter {
    fn drop(&mut self) {
        self.shared.pending.lock().shutdown = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            // Finishes the last pending write, then exits.
            let _ = t.join();
        }
    }
}
