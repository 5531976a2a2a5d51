//! The node's labels, for `nodeMediatedDeviceTypes[].nodeSelector`.
//!
//! They come from `--node-labels k=v,...` and/or a file of `k=v` lines (`#` comments; values may
//! be double-quoted, as the downward API writes them). `kubernetes.io/hostname` is always the
//! node name, whatever the sources say.

use std::collections::BTreeMap;
use std::path::Path;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeLabels(pub BTreeMap<String, String>);

#[derive(Debug, thiserror::Error)]
pub enum LabelsError {
    #[error("reading node labels {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{origin}: {entry:?} is not key=value")]
    Malformed { origin: String, entry: String },
}

impl NodeLabels {
    /// Labels of node `node_name`, holding only `kubernetes.io/hostname`.
    pub fn for_node(node_name: &str) -> Self {
        let mut labels = NodeLabels::default();
        labels
            .0
            .insert("kubernetes.io/hostname".into(), node_name.into());
        labels
    }

    /// Adds `k=v,k2=v2` (the `--node-labels` flag).
    pub fn add_flag(&mut self, flag: &str) -> Result<(), LabelsError> {
        for entry in flag.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            self.add_entry(entry, "--node-labels")?;
        }
        Ok(())
    }

    /// Adds the `k=v` lines of a file.
    pub fn add_file(&mut self, path: &Path) -> Result<(), LabelsError> {
        let text = std::fs::read_to_string(path).map_err(|source| LabelsError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let origin = path.display().to_string();
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            self.add_entry(line, &origin)?;
        }
        Ok(())
    }

    fn add_entry(&mut self, entry: &str, origin: &str) -> Result<(), LabelsError> {
        let malformed = || LabelsError::Malformed {
            origin: origin.into(),
            entry: entry.into(),
        };
        let (key, value) = entry.split_once('=').ok_or_else(malformed)?;
        let key = key.trim();
        if key.is_empty() {
            return Err(malformed());
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        if key == "kubernetes.io/hostname" && self.0.contains_key(key) {
            return Ok(()); // the node name given on the command line wins
        }
        self.0.insert(key.to_string(), value.to_string());
        Ok(())
    }

    /// True when every selector label is present with the same value (an empty selector
    /// matches every node, as in Kubernetes).
    pub fn matches(&self, selector: &BTreeMap<String, String>) -> bool {
        selector.iter().all(|(k, v)| self.0.get(k) == Some(v))
    }
}
