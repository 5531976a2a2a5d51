//! Scenario files: parsing, validation, and errors that name the file, line and column.
//!
//! `parse` turns text into a [`Scenario`] or a [`ScenarioError`]; nothing runs until a scenario
//! has passed every check here, so a run never fails half-way on a typo.

mod agent;
mod duration;
mod error;
mod expected;
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
    /// The seed a run uses: `--seed` wins over the file's `seed:`, which wins over 0.
    pub fn seed(&self, override_seed: Option<u64>) -> u64 {
        override_seed.or(self.raw.seed).unwrap_or(0)
    }
}

/// Parses and validates scenario text; `file` is only used in messages.
pub fn parse(text: &str, file: impl Into<PathBuf>) -> Result<Scenario, ScenarioError> {
    let file = file.into();
    let source: Arc<str> = Arc::from(text);
    let raw: RawScenario =
        serde_saphyr::from_str(text).map_err(|e| ScenarioError::from_yaml(&file, &source, &e))?;
    let hosts = validate::check(&raw, &file.display().to_string())
        .map_err(|(span, message)| ScenarioError::at(&file, &source, span, message))?;
    Ok(Scenario {
        file,
        source,
        raw,
        hosts,
    })
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
