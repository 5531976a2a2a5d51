//! What the fake kubelet tells observers: a broadcast stream of [`KubeletEvent`]s and a bounded log
//! of recent lines (shown as "last kubelet log lines" when a test or the harness fails).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Instant;

use hostdev_api::v1beta1::DevicePluginOptions;

/// One observable change. Sent after the change is applied and the checkpoint written.
#[derive(Debug, Clone, PartialEq)]
pub enum KubeletEvent {
    /// The registration socket is served (at start and after each restart).
    Started {
        socket: PathBuf,
    },
    /// A plugin registered (or replaced an earlier endpoint) for `resource`.
    Registered {
        resource: String,
        endpoint: PathBuf,
        options: DevicePluginOptions,
    },
    /// A registration was refused with `error` (the text the plugin got).
    RegistrationFailed {
        resource: String,
        error: String,
    },
    /// A ListAndWatch message replaced the device set, or the endpoint stopping marked it unhealthy.
    DevicesChanged {
        resource: String,
        healthy: usize,
        unhealthy: usize,
    },
    /// The ListAndWatch stream of the current endpoint ended; the grace period runs.
    EndpointStopped {
        resource: String,
        endpoint: PathBuf,
    },
    /// The grace period expired; the resource is gone from the node.
    ResourceRemoved {
        resource: String,
    },
    Allocated {
        pod_uid: String,
        container: String,
        resource: String,
        device_ids: Vec<String>,
    },
    Freed {
        pod_uid: String,
    },
    /// Something went wrong that no caller is waiting on (a stream error, a bad checkpoint).
    Error {
        context: String,
        message: String,
    },
    Stopped,
}

/// Bounded ring of recent log lines, each prefixed with the time since the kubelet was created.
pub(crate) struct LogRing {
    origin: Instant,
    capacity: usize,
    lines: VecDeque<String>,
}

impl LogRing {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            origin: Instant::now(),
            capacity: capacity.max(1),
            lines: VecDeque::new(),
        }
    }

    pub(crate) fn push(&mut self, line: String) {
        let t = self.origin.elapsed();
        if self.lines.len() == self.capacity {
            self.lines.pop_front();
        }
        self.lines.push_back(format!(
            "[{:>4}.{:03}] {line}",
            t.as_secs(),
            t.subsec_millis()
        ));
    }

    pub(crate) fn recent(&self) -> Vec<String> {
        self.lines.iter().cloned().collect()
    }
}

/// Waits for the next event on `rx` matching `pred`; the error carries the events seen instead.
pub async fn wait_for_event(
    rx: &mut tokio::sync::broadcast::Receiver<KubeletEvent>,
    timeout: std::time::Duration,
    mut pred: impl FnMut(&KubeletEvent) -> bool,
) -> Result<KubeletEvent, crate::error::WaitTimeout> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut seen = vec![];
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(e)) if pred(&e) => return Ok(e),
            Ok(Ok(e)) => seen.push(format!("{e:?}")),
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(n))) => {
                seen.push(format!("({n} events lost)"))
            }
            Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) | Err(_) => {
                return Err(crate::error::WaitTimeout {
                    what: "matching event".into(),
                    timeout,
                    last_log: seen,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LogRing;

    #[test]
    fn log_ring_keeps_only_the_newest_lines() {
        let mut ring = LogRing::new(2);
        for i in 0..5 {
            ring.push(format!("line {i}"));
        }
        let recent = ring.recent();
        assert_eq!(recent.len(), 2);
        assert!(
            recent[0].ends_with("line 3") && recent[1].ends_with("line 4"),
            "{recent:?}"
        );
    }
}
