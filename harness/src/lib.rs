//! hostdev harness: YAML scenarios run through a simulated KubeVirt cluster.
//!
//! - [`scenario`]: the scenario file format: parsing, validation, errors with line and column.
pub mod scenario;
