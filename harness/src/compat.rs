//! The compatibility table: the scenario library over {hostdev-agent, KubeVirt's own device plugins}
//! x {the fake kubelet, the kubelet's own device manager}, written as `docs/compatibility.md`.
//!
//! A scenario with `upstreamDefect:` shows a known KubeVirt defect, so with KubeVirt's plugins it is
//! expected to fail; a KubeVirt failure no scenario expects is either a lab fidelity bug or a new
//! KubeVirt defect, and the table marks it so someone looks.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::scenario::{self, AgentChoice, KubeletChoice};
use crate::sim::RunOptions;
use crate::suite::{self, FileResult};

/// One column of the table.
#[derive(Clone, Debug)]
pub struct Combination {
    pub agent: AgentChoice,
    pub kubelet: KubeletChoice,
}

impl Combination {
    pub fn title(&self) -> String {
        let agent = match &self.agent {
            AgentChoice::Hostdev => "hostdev-agent".to_owned(),
            AgentChoice::Kubevirt => "KubeVirt plugins".to_owned(),
            AgentChoice::Command(c) => c.command.first().cloned().unwrap_or_default(),
        };
        let kubelet = match self.kubelet {
            KubeletChoice::Fake => "fake kubelet",
            KubeletChoice::Upstream => "upstream kubelet",
        };
        format!("{agent} / {kubelet}")
    }
}

/// The four columns, hostdev-agent first.
pub fn matrix() -> Vec<Combination> {
    let mut out = Vec::new();
    for agent in [AgentChoice::Hostdev, AgentChoice::Kubevirt] {
        for kubelet in [KubeletChoice::Fake, KubeletChoice::Upstream] {
            out.push(Combination {
                agent: agent.clone(),
                kubelet,
            });
        }
    }
    out
}

/// How one scenario went in one column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cell {
    Pass,
    /// Failed, as its `upstreamDefect` says KubeVirt's plugins do.
    ExpectedFail {
        defect: String,
        reason: String,
    },
    Fail {
        reason: String,
    },
    /// Passed although it names an upstream defect: the defect may be fixed, or the scenario is wrong.
    UnexpectedPass {
        defect: String,
    },
    Invalid {
        reason: String,
    },
}

impl Cell {
    /// True for the cells a green table has: passes, and KubeVirt's known defects, shown or not
    /// (a defect of chance, such as an arbitrary device choice, can pass a run by luck).
    pub fn is_expected(&self) -> bool {
        matches!(
            self,
            Cell::Pass | Cell::ExpectedFail { .. } | Cell::UnexpectedPass { .. }
        )
    }

    /// Whether the scenario's verdict here is settled by the code, not by chance: a scenario that
    /// names an upstream defect may pass a run with KubeVirt's plugins by luck.
    pub fn is_definite(&self) -> bool {
        matches!(self, Cell::Pass | Cell::Fail { .. } | Cell::Invalid { .. })
    }

    fn markdown(&self) -> String {
        let clean = |s: &str| s.replace('|', "\\|").replace('\n', " ");
        match self {
            Cell::Pass => "pass".into(),
            Cell::ExpectedFail { defect, reason } => {
                format!("fails as expected ({defect}): {}", clean(reason))
            }
            Cell::Fail { reason } => format!("**FAIL**: {}", clean(reason)),
            Cell::UnexpectedPass { defect } => {
                format!("passes this run (the defect, {defect}, did not show)")
            }
            Cell::Invalid { reason } => format!("**invalid**: {}", clean(reason)),
        }
    }
}

pub struct Row {
    pub file: PathBuf,
    pub name: String,
    pub cells: Vec<Cell>,
}

pub struct Table {
    pub columns: Vec<Combination>,
    pub rows: Vec<Row>,
    pub wall: Duration,
}

impl Table {
    pub fn unexpected(&self) -> usize {
        self.rows
            .iter()
            .flat_map(|r| &r.cells)
            .filter(|c| !c.is_expected())
            .count()
    }
}

/// The files whose scenarios leave the agent to the run: the others bring their own plugin
/// (such as the grpcio example), which the agent columns would replace.
pub fn agent_neutral(files: &[PathBuf]) -> Vec<PathBuf> {
    files
        .iter()
        .filter(|f| scenario::load(f).map_or(true, |sc| !sc.chooses_agent()))
        .cloned()
        .collect()
}

/// Runs every file in every column, `jobs` scenarios at once.
pub fn run(files: &[PathBuf], columns: Vec<Combination>, jobs: usize) -> Table {
    let clock = suite::Stopwatch::start();
    let mut rows: Vec<Row> = files
        .iter()
        .map(|f| Row {
            file: f.clone(),
            name: scenario::load(f)
                .map(|s| s.name().to_owned())
                .unwrap_or_else(|_| f.display().to_string()),
            cells: Vec::new(),
        })
        .collect();
    for column in &columns {
        let options = RunOptions {
            agent: Some(column.agent.clone()),
            kubelet: Some(column.kubelet),
            ..RunOptions::default()
        };
        let results = suite::run_files(files, options, jobs);
        for (row, (_, result)) in rows.iter_mut().zip(results) {
            row.cells.push(cell(&row.file, column, &result));
        }
    }
    Table {
        columns,
        rows,
        wall: clock.elapsed(),
    }
}

fn cell(file: &Path, column: &Combination, result: &FileResult) -> Cell {
    let defect = scenario::load(file)
        .ok()
        .and_then(|s| s.raw.upstream_defect.clone())
        .filter(|_| column.agent == AgentChoice::Kubevirt);
    match (result, defect) {
        (FileResult::Invalid(e), _) => Cell::Invalid {
            reason: e.to_string().lines().next().unwrap_or_default().to_owned(),
        },
        (FileResult::Ran(o), None) if o.passed() => Cell::Pass,
        (FileResult::Ran(o), Some(defect)) if o.passed() => Cell::UnexpectedPass { defect },
        (FileResult::Ran(o), Some(defect)) => Cell::ExpectedFail {
            defect,
            reason: o.reason().unwrap_or_default(),
        },
        (FileResult::Ran(o), None) => Cell::Fail {
            reason: o.reason().unwrap_or_default(),
        },
    }
}

/// `docs/compatibility.md`: the versions, the table, and the totals.
pub fn markdown(table: &Table, root: &Path, versions: &[(String, String)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Compatibility\n\nGenerated by `hostdev compat --write docs/compatibility.md scenarios/` (do not edit by hand). \
         Each scenario of the library ran once per column: the agent serving the devices and the kubelet taking them. \
         A scenario with `upstreamDefect:` shows a known defect of KubeVirt's own device plugins and is expected to fail \
         with them.\n"
    );
    for (what, version) in versions {
        let _ = writeln!(out, "- {what}: {version}");
    }
    let _ = writeln!(
        out,
        "- whole table: {:.1} s on this machine\n",
        table.wall.as_secs_f64()
    );
    let _ = write!(out, "| scenario |");
    for c in &table.columns {
        let _ = write!(out, " {} |", c.title());
    }
    let _ = writeln!(out);
    let _ = write!(out, "| --- |");
    for _ in &table.columns {
        let _ = write!(out, " --- |");
    }
    let _ = writeln!(out);
    for row in &table.rows {
        let path = row.file.strip_prefix(root).unwrap_or(&row.file);
        let _ = write!(out, "| `{}` |", path.display());
        for cell in &row.cells {
            let _ = write!(out, " {} |", cell.markdown());
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(out);
    for (i, c) in table.columns.iter().enumerate() {
        let cells: Vec<&Cell> = table.rows.iter().map(|r| &r.cells[i]).collect();
        let pass = cells.iter().filter(|c| **c == &Cell::Pass).count();
        let expected = cells
            .iter()
            .filter(|c| matches!(c, Cell::ExpectedFail { .. }))
            .count();
        let lucky = cells
            .iter()
            .filter(|c| matches!(c, Cell::UnexpectedPass { .. }))
            .count();
        let _ = writeln!(
            out,
            "- {}: {pass} pass, {expected} fail as expected, {lucky} pass despite a defect of chance, {} unexpected",
            c.title(),
            cells.len() - pass - expected - lucky
        );
    }
    out
}

/// The pinned upstream versions, read from the Go modules that build them.
pub fn upstream_versions(upstream: &Path) -> Vec<(String, String)> {
    let find = |module: &str, go_mod: &str| -> String {
        std::fs::read_to_string(upstream.join(go_mod))
            .ok()
            .and_then(|text| {
                text.lines()
                    .map(str::trim)
                    .find(|l| l.starts_with(&format!("{module} v")))
                    .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
            })
            .unwrap_or_else(|| "unknown".into())
    };
    vec![
        (
            "KubeVirt device plugins".into(),
            format!(
                "kubevirt.io/kubevirt {}",
                find("kubevirt.io/kubevirt", "kubevirt/go.mod")
            ),
        ),
        (
            "kubelet device manager".into(),
            format!(
                "k8s.io/kubernetes {}",
                find("k8s.io/kubernetes", "kubelet/go.mod")
            ),
        ),
        (
            "hostdev-agent".into(),
            format!("this tree ({})", env!("CARGO_PKG_VERSION")),
        ),
    ]
}
