//! The simulated cluster a scenario runs in, and the runner.
//!
//! Per node: a mocksys host on a real FUSE mount, a fake kubelet on real unix sockets, and an
//! agent: the production agent in process, or any executable in the node's namespaces
//! ([`external`]). On top: VMIs moved through admission, scheduling, kubelet
//! allocation and virt-launcher's hostdev conversion by [`cluster::Cluster::reconcile`].

pub mod cluster;
pub mod expect;
pub mod external;
pub mod kubelet;
pub mod logs;
pub mod netns;
pub mod node;
pub mod random;
pub mod run;
pub mod steps;
pub mod vmi;
pub mod volume;

pub use run::{Outcome, RunOptions, run_scenario};
