//! Shared core of one fake kubelet: the state lock, change notification, events, the log and
//! checkpoint persistence. Everything that mutates state goes through [`Core::commit`], which
//! writes the checkpoint, then wakes `wait_for` callers, then publishes events, in that order,
//! so an observer that saw a change also finds it on disk.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, MutexGuard};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{self, CheckpointData};
use crate::config::Config;
use crate::events::{KubeletEvent, LogRing};
use crate::state::State;

pub(crate) struct Core {
    pub(crate) config: Config,
    pub(crate) state: Mutex<State>,
    changed: watch::Sender<u64>,
    events: broadcast::Sender<KubeletEvent>,
    log: Mutex<LogRing>,
    /// Sequence of the last checkpoint written; a slower writer never overwrites a newer one.
    written: Mutex<u64>,
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
        let log = LogRing::new(config.log_capacity);
        Self {
            config,
            state: Mutex::new(State::default()),
            changed: watch::channel(0).0,
            events: broadcast::channel(4096).0,
            log: Mutex::new(log),
            written: Mutex::new(0),
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
        let pending = (persist == Persist::Yes && state.running).then(|| {
            let seq = self.checkpoint_seq.fetch_add(1, Ordering::Relaxed) + 1;
            (seq, checkpoint_json(&state))
        });
        drop(state);
        if let Some((seq, json)) = pending {
            self.write_checkpoint(seq, &json);
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

    fn write_checkpoint(&self, seq: u64, json: &[u8]) {
        let mut written = self.written.lock();
        if seq <= *written {
            return;
        }
        *written = seq;
        if let Err(e) = checkpoint::write_json(&self.config.checkpoint_path(), json) {
            self.log(format!("error: {e}"));
            self.emit(KubeletEvent::Error {
                context: "writing checkpoint".into(),
                message: e.to_string(),
            });
        }
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

fn checkpoint_json(state: &State) -> Vec<u8> {
    serde_json::to_vec(&checkpoint_data(state).into_checkpoint()).unwrap_or_default()
}
