//! The agent's log lines, kept in memory so a failing scenario can show the last few.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

const KEPT_LINES: usize = 400;

#[derive(Clone, Default)]
struct Ring(Arc<Mutex<VecDeque<String>>>);

impl Write for Ring {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let mut lines = self.0.lock();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if lines.len() == KEPT_LINES {
                lines.pop_front();
            }
            lines.push_back(line.to_owned());
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

static RING: OnceLock<Ring> = OnceLock::new();

/// Installs the process-wide log capture once (agent logs at info and above; `RUST_LOG` overrides).
pub fn install() {
    RING.get_or_init(|| {
        let ring = Ring::default();
        let writer = ring.clone();
        let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("info,fuser=error,h2=warn,tower=warn,hyper=warn")
        });
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_target(true)
            .with_writer(move || writer.clone())
            .try_init();
        ring
    });
}

/// The last `n` captured lines (empty when capture is not installed).
pub fn last(n: usize) -> Vec<String> {
    RING.get()
        .map(|r| {
            let lines = r.0.lock();
            lines
                .iter()
                .skip(lines.len().saturating_sub(n))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}
