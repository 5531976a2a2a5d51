//! hostdev harness: YAML scenarios run through a simulated KubeVirt cluster.
//!
//! - [`scenario`]: the scenario file format: parsing, validation, errors with line and column.
//! - [`cluster`]: the simulated control plane (admission, scheduling, virt-launcher).

pub mod cluster;
pub mod scenario;
