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

/// Runs every file with up to `jobs` at once; results come back in file order.
pub fn run_files(
    files: &[PathBuf],
    options: RunOptions,
    jobs: usize,
) -> Vec<(PathBuf, FileResult)> {
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
                    let result = match scenario::load(&files[i]) {
                        Err(e) => FileResult::Invalid(e),
                        Ok(sc) => FileResult::Ran(run_scenario(&sc, options.clone())),
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

fn missing() -> ScenarioError {
    ScenarioError {
        file: PathBuf::new(),
        span: None,
        message: "not run".into(),
        snippet: String::new(),
    }
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
        let (name, secs, failure) = match r {
            FileResult::Invalid(e) => (file.display().to_string(), 0.0, Some(e.to_string())),
            FileResult::Ran(o) => (o.name.clone(), o.duration.as_secs_f64(), o.failure.clone()),
        };
        out.push_str(&format!(
            "  <testcase classname=\"{}\" name=\"{}\" time=\"{secs:.3}\"",
            xml_escape(&file.display().to_string()),
            xml_escape(&name)
        ));
        match failure {
            None => out.push_str("/>\n"),
            Some(f) => {
                let first = f.lines().next().unwrap_or_default();
                out.push_str(&format!(
                    ">\n    <failure message=\"{}\">{}</failure>\n  </testcase>\n",
                    xml_escape(first),
                    xml_escape(&f)
                ));
            }
        }
    }
    out.push_str("</testsuite>\n</testsuites>\n");
    out
}

fn xml_escape(s: &str) -> String {
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
}
