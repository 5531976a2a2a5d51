//! Running many scenarios: in parallel, with progress, JUnit output and timings.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::scenario::{self, ScenarioError};
use crate::sim::{Outcome, RunOptions, run_scenario};

/// One file's result: it did not load, or it ran.
pub enum FileResult {
    Invalid(ScenarioError),
    Ran(Outcome),
}

impl FileResult {
    pub fn passed(&self) -> bool {
        matches!(self, FileResult::Ran(o) if o.passed())
    }
}

/// Loads every file, then runs the valid ones with up to `jobs` at once; results come back in
/// file order. Files that share a scenario name are all invalid: nothing tells their results
/// apart.
pub fn run_files(
    files: &[PathBuf],
    options: RunOptions,
    jobs: usize,
) -> Vec<(PathBuf, FileResult)> {
    let loaded = load_all(files);
    let next = Mutex::new(0usize);
    let results: Mutex<Vec<Option<FileResult>>> =
        Mutex::new((0..files.len()).map(|_| None).collect());
    let progress = Progress::new(files.len());
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1).min(files.len().max(1)) {
            s.spawn(|| {
                loop {
                    let i = {
                        let mut n = next.lock().unwrap_or_else(|e| e.into_inner());
                        if *n >= files.len() {
                            break;
                        }
                        *n += 1;
                        *n - 1
                    };
                    let result = match &loaded[i] {
                        Err(e) => FileResult::Invalid(e.clone()),
                        Ok(sc) => FileResult::Ran(run_scenario(sc, options.clone())),
                    };
                    progress.done(&files[i], &result);
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(result);
                }
            });
        }
    });
    progress.finish();
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    files
        .iter()
        .cloned()
        .zip(
            results
                .into_iter()
                .map(|r| r.unwrap_or_else(|| FileResult::Invalid(missing()))),
        )
        .collect()
}

/// Parses every file (in file order); a scenario whose name another file also uses becomes
/// an error naming that file. What `hostdev validate` and `hostdev run` both check.
pub fn load_all(files: &[PathBuf]) -> Vec<Result<scenario::Scenario, ScenarioError>> {
    let mut loaded: Vec<_> = files.iter().map(|f| scenario::load(f)).collect();
    let dups = scenario::duplicate_names(loaded.iter().filter_map(|r| r.as_ref().ok()));
    for d in dups {
        if let Some(slot) = loaded
            .iter_mut()
            .find(|r| r.as_ref().is_ok_and(|sc| sc.file == d.file))
        {
            *slot = Err(d);
        }
    }
    loaded
}

fn missing() -> ScenarioError {
    ScenarioError::whole_file(Path::new(""), "not run")
}

/// A one-line progress bar on a terminal; nothing otherwise (the summary says it all).
struct Progress {
    total: usize,
    done: Mutex<(usize, usize)>,
    tty: bool,
}

impl Progress {
    fn new(total: usize) -> Self {
        Progress {
            total,
            done: Mutex::new((0, 0)),
            tty: std::io::stderr().is_terminal(),
        }
    }
    fn done(&self, file: &Path, r: &FileResult) {
        let mut d = self.done.lock().unwrap_or_else(|e| e.into_inner());
        d.0 += 1;
        if !r.passed() {
            d.1 += 1;
        }
        if self.tty {
            let width = 30;
            let filled = width * d.0 / self.total.max(1);
            let name = file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            eprint!(
                "\r\x1b[2K[{}{}] {}/{} ({} failed) {name}",
                "#".repeat(filled),
                " ".repeat(width - filled),
                d.0,
                self.total,
                d.1
            );
            let _ = std::io::stderr().flush();
        }
    }
    fn finish(&self) {
        if self.tty {
            eprint!("\r\x1b[2K");
        }
    }
}

/// Median of the durations (zero for none).
pub fn median(mut d: Vec<Duration>) -> Duration {
    if d.is_empty() {
        return Duration::ZERO;
    }
    d.sort();
    let n = d.len();
    if n % 2 == 1 {
        d[n / 2]
    } else {
        (d[n / 2 - 1] + d[n / 2]) / 2
    }
}

/// JUnit XML, one testcase per file, as CI systems read it.
pub fn junit(results: &[(PathBuf, FileResult)], wall: Duration) -> String {
    let failures = results.iter().filter(|(_, r)| !r.passed()).count();
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n<testsuite name=\"hostdev\" tests=\"{}\" failures=\"{failures}\" time=\"{:.3}\">\n",
        results.len(),
        wall.as_secs_f64()
    );
    for (file, r) in results {
        // (message, body): an invalid file's message is its first error with its location.
        let (name, secs, failure) = match r {
            FileResult::Invalid(e) => {
                let first = match e.span {
                    Some(s) => format!(
                        "{}:{}:{}: {}",
                        e.file.display(),
                        s.line,
                        s.column,
                        e.message
                    ),
                    None => format!("{}: {}", e.file.display(), e.message),
                };
                (
                    file.display().to_string(),
                    0.0,
                    Some((first, e.to_string())),
                )
            }
            FileResult::Ran(o) => (
                o.name.clone(),
                o.duration.as_secs_f64(),
                o.failure.as_ref().map(|f| (failure_message(f), f.clone())),
            ),
        };
        out.push_str(&format!(
            "  <testcase classname=\"{}\" name=\"{}\" time=\"{secs:.3}\"",
            xml_escape(&file.display().to_string()),
            xml_escape(&name)
        ));
        match failure {
            None => out.push_str("/>\n"),
            Some((message, body)) => {
                out.push_str(&format!(
                    ">\n    <failure message=\"{}\">{}</failure>\n  </testcase>\n",
                    xml_escape(&message),
                    xml_escape(&body)
                ));
            }
        }
    }
    out.push_str("</testsuite>\n</testsuites>\n");
    out
}

/// The one line a CI system shows for a failure: what went wrong, not the replay header.
/// A run failure's report is the header, a blank line, `step N (...) at FILE:LINE: source`,
/// then the mismatch indented; the message is the step and the mismatch. An invalid file's
/// message is its first error (`file:line:column: message`).
fn failure_message(report: &str) -> String {
    let mut lines = report.lines();
    let header = lines.next().unwrap_or_default();
    let rest: Vec<&str> = lines.skip_while(|l| l.trim().is_empty()).collect();
    match rest.first() {
        Some(step) if step.starts_with("step ") => {
            let mismatch: Vec<&str> = rest[1..]
                .iter()
                .take_while(|l| l.starts_with("  "))
                .map(|l| l.trim())
                .collect();
            if mismatch.is_empty() {
                step.to_string()
            } else {
                format!("{}: {}", mismatch.join(" "), step)
            }
        }
        // A failure before any step (cluster set-up): header, then the reason.
        Some(reason) => format!("{}: {header}", reason.trim()),
        None => header.to_owned(),
    }
}

/// XML attribute and text escaping; control characters other than tab and newline are not
/// allowed in XML 1.0 at all, so they are dropped (agent output can contain them).
fn xml_escape(s: &str) -> String {
    let s: String = s
        .chars()
        .filter(|c| !c.is_control() || matches!(c, '\t' | '\n'))
        .collect();
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Wall time of the whole run, for `--timings`.
pub struct Stopwatch(Instant);

impl Stopwatch {
    pub fn start() -> Self {
        Stopwatch(Instant::now())
    }
    pub fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|m| Duration::from_millis(*m))
                .collect::<Vec<_>>()
        };
        assert_eq!(median(ms(&[30, 10, 20])), Duration::from_millis(20));
        assert_eq!(median(ms(&[10, 20, 30, 40])), Duration::from_millis(25));
        assert_eq!(median(vec![]), Duration::ZERO);
    }

    #[test]
    fn junit_escapes_and_counts() {
        let results = vec![(PathBuf::from("a<b>.yaml"), FileResult::Invalid(missing()))];
        let x = junit(&results, Duration::from_millis(5));
        assert!(x.contains("failures=\"1\""));
        assert!(x.contains("a&lt;b&gt;.yaml"));
    }

    #[test]
    fn junit_failure_message_is_the_mismatch_not_the_header() {
        let report = "scenario s (s.yaml) failed with seed 0; replay: hostdev run --seed 0 s.yaml\n\n\
                      step 3 (expect) at s.yaml:12: - expect: {vmi: a, phase: Running}\n  \
                      VMI a phase: expected Running, got Pending (no node) (waited 5s)\n\ncluster:\n  node n: ...\n";
        let msg = failure_message(report);
        assert_eq!(
            msg,
            "VMI a phase: expected Running, got Pending (no node) (waited 5s): step 3 (expect) at s.yaml:12: - expect: {vmi: a, phase: Running}"
        );
        let o = crate::sim::Outcome {
            name: "s".into(),
            file: "s.yaml".into(),
            seed: 0,
            duration: Duration::ZERO,
            failure: Some(report.into()),
            explain: Vec::new(),
        };
        let x = junit(&[("s.yaml".into(), FileResult::Ran(o))], Duration::ZERO);
        assert!(
            x.contains("<failure message=\"VMI a phase: expected Running, got Pending"),
            "{x}"
        );
        let setup = "scenario s (s.yaml) failed with seed 0; replay: ...\nsetting up the cluster failed: no FUSE";
        assert!(failure_message(setup).starts_with("setting up the cluster failed: no FUSE"));
    }
}
