//! Shared core of one fake kubelet: the state lock, change notification, events, the log and
//! checkpoint persistence. Everything that mutates state goes through [`Core::commit`], which
//! queues the new checkpoint (see [`crate::persist`]), then wakes `wait_for` callers, then
//! publishes events.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, MutexGuard};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{self, CheckpointData};
use crate::config::Config;
use crate::events::{KubeletEvent, LogRing};
use crate::persist::CheckpointWriter;
use crate::state::State;

pub(crate) struct Core {
    pub(crate) config: Config,
    pub(crate) state: Arc<Mutex<State>>,
    changed: watch::Sender<u64>,
    events: broadcast::Sender<KubeletEvent>,
    log: Arc<Mutex<LogRing>>,
    writer: CheckpointWriter,
    checkpoint_seq: AtomicU64,
    generation: AtomicU64,
    pub(crate) run: Mutex<Option<Run>>,
}

/// One serving period between start and stop.
pub(crate) struct Run {
    pub(crate) token: CancellationToken,
    pub(crate) server: JoinHandle<()>,
}

/// Whether a commit rewrites the checkpoint.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Persist {
    Yes,
    No,
}

impl Core {
    pub(crate) fn new(config: Config) -> Self {
        let log = Arc::new(Mutex::new(LogRing::new(config.log_capacity)));
        let events = broadcast::channel(4096).0;
        let on_error = {
            let log = Arc::clone(&log);
            let events: broadcast::Sender<KubeletEvent> = events.clone();
            Box::new(move |message: String| {
                tracing::warn!(target: "fake_kubelet", "error: {message}");
                log.lock().push(format!("error: {message}"));
                let _ = events.send(KubeletEvent::Error {
                    context: "writing checkpoint".into(),
                    message,
                });
            })
        };
        let state = Arc::new(Mutex::new(State::default()));
        let snapshot = {
            // Holds the state, never the core: the writer thread must not own what joins it.
            let state = Arc::clone(&state);
            Box::new(move || {
                let data = checkpoint_data(&state.lock());
                serde_json::to_vec(&data.into_checkpoint()).unwrap_or_default()
            })
        };
        Self {
            writer: CheckpointWriter::new(config.checkpoint_path(), snapshot, on_error),
            config,
            state,
            changed: watch::channel(0).0,
            events,
            log,
            checkpoint_seq: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            run: Mutex::new(None),
        }
    }

    pub(crate) fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn log(&self, line: impl Into<String>) {
        let line = line.into();
        tracing::info!(target: "fake_kubelet", "{line}");
        self.log.lock().push(line);
    }

    pub(crate) fn recent_log(&self) -> Vec<String> {
        self.log.lock().recent()
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<KubeletEvent> {
        self.events.subscribe()
    }

    pub(crate) fn watch_changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Ends a state change: persists (when asked and while running), wakes waiters, publishes.
    pub(crate) fn commit(
        &self,
        state: MutexGuard<'_, State>,
        persist: Persist,
        events: Vec<KubeletEvent>,
    ) {
        let pending = (persist == Persist::Yes && state.running)
            .then(|| self.checkpoint_seq.fetch_add(1, Ordering::Relaxed) + 1);
        drop(state);
        if let Some(seq) = pending {
            self.writer.request(seq);
        }
        self.changed.send_modify(|v| *v += 1);
        for e in events {
            // No subscribers is fine: events are for whoever listens.
            let _ = self.events.send(e);
        }
    }

    /// Publishes an event that changed no state.
    pub(crate) fn emit(&self, event: KubeletEvent) {
        let _ = self.events.send(event);
    }

    /// Waits until every checkpoint change made so far is on disk.
    pub(crate) async fn flush_checkpoint(&self) {
        self.writer.flush().await;
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.config.dir
    }
}

/// The checkpoint of `state`: every pod entry, and the healthy devices of every resource
/// (the kubelet records only healthy ones as registered).
pub(crate) fn checkpoint_data(state: &State) -> CheckpointData {
    CheckpointData {
        pod_device_entries: state.pods.values().map(checkpoint::entry_from).collect(),
        registered_devices: state
            .resources
            .iter()
            .map(|(name, r)| {
                let ids = r
                    .devices
                    .values()
                    .filter(|d| crate::state::is_healthy(d))
                    .map(|d| d.id.clone())
                    .collect();
                (name.clone(), ids)
            })
            .collect(),
    }
}
