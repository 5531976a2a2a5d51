//! hostdev harness: YAML scenarios run through a simulated KubeVirt cluster.
//!
//! - [`scenario`]: the scenario file format: parsing, validation, errors with line and column.
//! - [`cluster`]: the simulated control plane (admission, scheduling, virt-launcher).

pub mod cluster;
pub mod scenario;

/// The JSON Schema of scenario files (`hostdev schema` prints it; editors use it to complete and check).
pub const SCENARIO_SCHEMA: &str = include_str!("../schema/scenario.schema.json");
