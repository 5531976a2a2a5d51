//! Scenario files: parsing, validation, and errors that name the file, line and column.
//!
//! `parse` turns text into a [`Scenario`] or a [`ScenarioError`]; nothing runs until a scenario
//! has passed every check here, so a run never fails half-way on a typo.

mod agent;
mod duration;
mod error;
mod expected;
pub mod kubevirt_schema;
pub mod located;
mod manifest;
mod raw;
mod validate;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use agent::{AgentChoice, AgentCommand, KubeletChoice, PLACEHOLDERS, StopSignal};
pub use duration::{HumanDuration, parse_duration};
pub use error::{ScenarioError, Span};
pub use expected::Expected;
pub use manifest::{DeviceRequest, VmiManifest};
pub use raw::*;

/// A scenario that passed validation, with the text it came from (for error snippets later).
#[derive(Debug)]
pub struct Scenario {
    pub file: PathBuf,
    pub source: Arc<str>,
    pub raw: RawScenario,
    /// The validated host of each node, in `raw.nodes` order.
    pub hosts: Vec<mocksys::HostSpec>,
}

impl Scenario {
    pub fn name(&self) -> &str {
        &self.raw.name.value
    }
    /// True when the scenario names an agent for some node (its own plugin), so a run-wide
    /// `--agent` or a column of the compatibility table would replace what it is about.
    pub fn chooses_agent(&self) -> bool {
        self.raw.agent.is_some() || self.raw.nodes.iter().any(|n| n.value.agent.is_some())
    }

    /// The seed a run uses: `--seed` wins over the file's `seed:`, which wins over 0.
    pub fn seed(&self, override_seed: Option<u64>) -> u64 {
        override_seed.or(self.raw.seed).unwrap_or(0)
    }
}

/// Parses and validates scenario text; `file` is only used in messages. The error reports
/// every problem found in one pass (see [`ScenarioError::more`]).
pub fn parse(text: &str, file: impl Into<PathBuf>) -> Result<Scenario, ScenarioError> {
    let file = file.into();
    let source: Arc<str> = Arc::from(text);
    // KubeVirt's schema is checked on the located tree whether or not the typed parse works,
    // so a typo in a manifest is reported alongside a typo elsewhere.
    let mut problems = located::parse(text)
        .map(|root| kubevirt_problems(&root))
        .unwrap_or_default();
    let raw: RawScenario = match serde_saphyr::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let typed = ScenarioError::from_yaml(&file, &source, &e);
            let Some(span) = typed.span else {
                return Err(typed);
            };
            // The same key can be both unknown to serde and to KubeVirt's schema: say it once.
            problems.retain(|(s, _)| *s != span);
            problems.push((span, typed.message));
            return Err(
                ScenarioError::many(&file, &source, problems).expect("at least the typed error")
            );
        }
    };
    let hosts = match validate::check(&raw, &file.display().to_string()) {
        Ok(hosts) => hosts,
        Err(p) => {
            problems.extend(p);
            Vec::new()
        }
    };
    if let Some(e) = ScenarioError::many(&file, &source, problems) {
        return Err(e);
    }
    Ok(Scenario {
        file,
        source,
        raw,
        hosts,
    })
}

/// The `kubevirt:` block, every `configure.kubevirt` and every `apply` manifest against
/// KubeVirt's own CRD schemas.
fn kubevirt_problems(root: &located::Node) -> Vec<(Span, String)> {
    let mut out = Vec::new();
    if let Some(kv) = root.get("kubevirt") {
        out.extend(kubevirt_schema::check_kubevirt(kv, "kubevirt"));
    }
    if let Some(located::Value::Seq(steps)) = root.get("steps").map(|s| &s.value) {
        for (i, step) in steps.iter().enumerate() {
            if let Some(vmi) = step.get("apply") {
                out.extend(kubevirt_schema::check_vmi(
                    vmi,
                    &format!("steps[{i}].apply"),
                ));
            }
            // `unchecked: true`: the CR reaches the nodes as written (a ConfigMap copy has no
            // API server in front of it), so a deliberately broken one is the point.
            let unchecked = step
                .get("configure")
                .and_then(|c| c.get("unchecked"))
                .is_some_and(|u| matches!(u.value, located::Value::Bool(true)));
            if let Some(kv) = step.get("configure").and_then(|c| c.get("kubevirt"))
                && !unchecked
            {
                out.extend(kubevirt_schema::check_kubevirt(
                    kv,
                    &format!("steps[{i}].configure.kubevirt"),
                ));
            }
        }
    }
    out
}

/// Two files of one run with the same `name:`: an error for each, naming the other.
pub fn duplicate_names<'a>(
    scenarios: impl IntoIterator<Item = &'a Scenario>,
) -> Vec<ScenarioError> {
    let mut by_name: std::collections::BTreeMap<&str, Vec<&Scenario>> = Default::default();
    for sc in scenarios {
        by_name.entry(sc.name()).or_default().push(sc);
    }
    let mut out = Vec::new();
    for (name, group) in by_name.into_iter().filter(|(_, g)| g.len() > 1) {
        for sc in &group {
            let others: Vec<String> = group
                .iter()
                .filter(|o| o.file != sc.file)
                .map(|o| o.file.display().to_string())
                .collect();
            let span = Span {
                line: sc.raw.name.referenced.line() as u32,
                column: sc.raw.name.referenced.column() as u32,
            };
            out.push(ScenarioError::at(
                &sc.file,
                &sc.source,
                span,
                format!(
                    "scenario name {name:?} is also the name of {} (names must be unique in a run: \
                     they name the test cases and reports)",
                    others.join(", ")
                ),
            ));
        }
    }
    out
}

/// Reads and parses one scenario file.
pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
    let text = std::fs::read_to_string(path).map_err(|e| ScenarioError::io(path, &e))?;
    parse(&text, path)
}

/// Every `*.yaml` / `*.yml` file under the given files and folders, sorted, each once.
pub fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ScenarioError> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| ScenarioError::io(p, &e))?;
        if meta.is_dir() {
            walk(p, &mut out).map_err(|e| ScenarioError::io(p, &e))?;
        } else {
            out.push(p.clone());
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
    Ok(())
}
