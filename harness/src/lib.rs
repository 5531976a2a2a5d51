//! hostdev harness: YAML scenarios run through a simulated KubeVirt cluster.
//!
//! - [`scenario`]: the scenario file format: parsing, validation, errors with line and column.
//! - [`cluster`]: the control plane's pure parts (admission, scheduling, virt-launcher).
//! - [`sim`]: the simulated cluster (FUSE hosts, fake kubelets, real agents) and the runner.
//! - [`suite`]: many scenarios at once: parallel runs, progress, JUnit, timings.

pub mod cluster;
pub mod compat;
pub mod scenario;
pub mod sim;
pub mod suite;

/// The JSON Schema of scenario files (`hostdev schema` prints it; editors use it to complete and check).
pub const SCENARIO_SCHEMA: &str = include_str!("../schema/scenario.schema.json");
