//! The agent's log lines, kept in memory per scenario so a failing scenario shows its own.
//!
//! Scenarios run in parallel in one process and share one tracing subscriber, so every line is
//! filed under the scenario of the thread that logged it. [`ScenarioLogs::start`] files the
//! scenario's own thread, and [`ScenarioLogs::thread_start`] (the runtime's `on_thread_start`)
//! files every worker and blocking thread of the scenario's runtime: that is where the agent
//! (tasks and `spawn_blocking` discovery), the fake kubelet and the steps run. Lines from threads
//! no scenario owns (FUSE serving threads, for instance) go to a shared ring of their own and
//! never into a scenario's report.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

/// Lines kept per scenario (and for the threads of none).
const KEPT_LINES: usize = 400;
/// The tag of threads that belong to no scenario.
const NO_SCENARIO: u64 = 0;

thread_local! {
    static SCENARIO: Cell<u64> = const { Cell::new(NO_SCENARIO) };
}

/// Every live scenario's lines, by tag.
static RINGS: OnceLock<Mutex<HashMap<u64, VecDeque<String>>>> = OnceLock::new();
static NEXT_TAG: AtomicU64 = AtomicU64::new(NO_SCENARIO + 1);

fn rings() -> &'static Mutex<HashMap<u64, VecDeque<String>>> {
    RINGS.get_or_init(|| Mutex::new(HashMap::from([(NO_SCENARIO, VecDeque::new())])))
}

/// Writes one formatted event into the ring of the scenario that logged it.
struct LineWriter {
    tag: u64,
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let mut rings = rings().lock();
        // A scenario that ended (its ring removed) keeps nothing: late lines are dropped.
        if let Some(lines) = rings.get_mut(&self.tag) {
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                if lines.len() == KEPT_LINES {
                    lines.pop_front();
                }
                lines.push_back(line.to_owned());
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

static INSTALLED: OnceLock<()> = OnceLock::new();

/// Installs the process-wide log capture once (agent logs at info and above; `RUST_LOG` overrides).
pub fn install() {
    INSTALLED.get_or_init(|| {
        rings();
        let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("info,fuser=error,h2=warn,tower=warn,hyper=warn")
        });
        // The writer is made on the thread that logs, so it knows which scenario that is.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_target(true)
            .with_writer(|| LineWriter {
                tag: SCENARIO.with(Cell::get),
            })
            .try_init();
    });
}

/// One scenario's capture: lines logged by its threads from now until it is dropped.
pub struct ScenarioLogs {
    tag: u64,
}

impl ScenarioLogs {
    /// Starts a capture for a new scenario and files the calling thread under it.
    pub fn start() -> ScenarioLogs {
        let tag = NEXT_TAG.fetch_add(1, Ordering::Relaxed);
        rings().lock().insert(tag, VecDeque::new());
        SCENARIO.with(|s| s.set(tag));
        ScenarioLogs { tag }
    }

    /// For `tokio::runtime::Builder::on_thread_start`: files each thread of the scenario's
    /// runtime under this scenario.
    pub fn thread_start(&self) -> impl Fn() + Send + Sync + 'static {
        let tag = self.tag;
        move || SCENARIO.with(|s| s.set(tag))
    }
}

impl Drop for ScenarioLogs {
    fn drop(&mut self) {
        rings().lock().remove(&self.tag);
        SCENARIO.with(|s| {
            if s.get() == self.tag {
                s.set(NO_SCENARIO);
            }
        });
    }
}

/// The last `n` lines of the calling thread's scenario (of threads with no scenario, when it
/// has none); empty when capture is not installed.
pub fn last(n: usize) -> Vec<String> {
    let tag = SCENARIO.with(Cell::get);
    rings()
        .lock()
        .get(&tag)
        .map(|lines| {
            lines
                .iter()
                .skip(lines.len().saturating_sub(n))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};

    use super::*;
    use crate::sim::{RunOptions, run_scenario};

    /// Logs `count` lines marked `marker` from the scenario thread, runtime tasks and blocking
    /// threads, one line per source in turn, then returns what `last` holds for the scenario.
    fn log_as_a_scenario(marker: &str, count: usize, start: &Barrier) -> Vec<String> {
        let logs = ScenarioLogs::start();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .on_thread_start(logs.thread_start())
            .enable_all()
            .build()
            .expect("runtime");
        start.wait();
        runtime.block_on(async {
            for i in 0..count {
                match i % 3 {
                    0 => tracing::warn!("{marker} line {i} from the scenario thread"),
                    1 => tokio::spawn({
                        let marker = marker.to_owned();
                        async move { tracing::warn!("{marker} line {i} from a task") }
                    })
                    .await
                    .expect("task"),
                    _ => tokio::task::spawn_blocking({
                        let marker = marker.to_owned();
                        move || tracing::warn!("{marker} line {i} from a blocking thread")
                    })
                    .await
                    .expect("blocking"),
                }
                tokio::task::yield_now().await;
            }
        });
        // A thread the scenario did not tag is no part of its report.
        std::thread::spawn(|| tracing::warn!("untagged line from a plain thread"))
            .join()
            .expect("plain thread");
        last(KEPT_LINES)
    }

    #[test]
    fn concurrent_scenarios_each_keep_only_their_own_lines() {
        install();
        let start = Barrier::new(2);
        let count = 150;
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| log_as_a_scenario("alpha-marker", count, &start));
            let b = s.spawn(|| log_as_a_scenario("bravo-marker", count, &start));
            (a.join().expect("alpha"), b.join().expect("bravo"))
        });
        for (lines, own) in [(&a, "alpha-marker"), (&b, "bravo-marker")] {
            assert_eq!(
                lines.len(),
                count,
                "{own}: every line of its own and nothing else: {lines:#?}"
            );
            assert!(lines.iter().all(|l| l.contains(own)), "{own}: {lines:#?}");
            for source in ["scenario thread", "a task", "a blocking thread"] {
                assert!(lines.iter().any(|l| l.contains(source)), "{own}: {source}");
            }
        }
        assert!(
            last(KEPT_LINES).iter().all(|l| !l.contains("-marker")),
            "a thread with no scenario sees no scenario's lines"
        );
    }

    fn scenario(
        node: &str,
        resource: &str,
        host: &str,
        permitted: &str,
    ) -> crate::scenario::Scenario {
        let text = format!(
            r#"
name: logs-{node}
kubevirt:
  developerConfiguration: {{featureGates: [HostDevices]}}
  permittedHostDevices:
{permitted}
nodes:
  - name: {node}
    host:
{host}
steps:
  - expect: {{node: {node}, allocatable: {{{resource}: 1}}}}
  # Fails on purpose, after long enough that both scenarios are running at once.
  - expect: {{node: {node}, allocatable: {{{resource}: 7}}, timeout: 1500ms}}
"#
        );
        crate::scenario::parse(&text, format!("logs-{node}.yaml")).expect("scenario")
    }

    /// The report's "last agent log lines" section.
    fn agent_lines(report: &str) -> Vec<String> {
        let start = report
            .find("last agent log lines:\n")
            .unwrap_or_else(|| panic!("no agent log section in:\n{report}"));
        report[start..]
            .lines()
            .skip(1)
            .take_while(|l| !l.starts_with("last kubelet log lines"))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn reports_of_scenarios_run_at_once_show_only_their_own_agent_lines() {
        let nvme = scenario(
            "nvmenode",
            "devices.kubevirt.io/nvme",
            r#"      pci:
        - {address: "0000:05:00.0", preset: qemu-nvme, driver: vfio-pci, iommuGroup: 5}"#,
            r#"    pciHostDevices:
      - {pciVendorSelector: "8086:5845", resourceName: devices.kubevirt.io/nvme}"#,
        );
        let usb = scenario(
            "usbnode",
            "kubevirt.io/storage",
            r#"      usb:
        - {bus: 1, port: "1", preset: qemu-usb-storage, devnum: 2}"#,
            r#"    usb:
      - resourceName: kubevirt.io/storage
        selectors: [{vendor: "46f4", product: "0001"}]"#,
        );
        let start = Barrier::new(2);
        let start = Arc::new(start);
        let run = |sc: &crate::scenario::Scenario| {
            start.wait();
            run_scenario(sc, RunOptions::default())
        };
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| run(&nvme));
            let b = s.spawn(|| run(&usb));
            (a.join().expect("nvme"), b.join().expect("usb"))
        });
        for (outcome, own, other) in [
            (&a, ["nvmenode", "nvme"], ["usbnode", "storage"]),
            (&b, ["usbnode", "storage"], ["nvmenode", "nvme"]),
        ] {
            let report = outcome
                .failure
                .as_deref()
                .unwrap_or_else(|| panic!("{} was meant to fail", outcome.name));
            let lines = agent_lines(report);
            assert!(!lines.is_empty(), "no agent lines in:\n{report}");
            assert!(
                lines.iter().any(|l| own.iter().any(|o| l.contains(o))),
                "none of its own lines in:\n{report}"
            );
            assert!(
                lines.iter().all(|l| !other.iter().any(|o| l.contains(o))),
                "another scenario's lines in:\n{report}"
            );
        }
    }
}
