//! A fake kubelet device manager: serves `v1beta1.Registration` on `<dir>/kubelet.sock` over real
//! unix-socket gRPC and talks to device plugins exactly as the kubelet does, so any plugin can
//! be tested against it.
//!
//! - [`FakeKubelet`] ([`kubelet`]): start, stop, kill, restart, allocate, free, observe.
//! - [`Config`] ([`config`]): directory, seed, grace period and every RPC timeout.
//! - [`registration`]: Register, dial-back, GetDevicePluginOptions, ListAndWatch, grace period.
//! - [`selection`]: which devices a container gets (NUMA, preferred, seeded random choice).
//! - [`allocation`]: GetPreferredAllocation, Allocate, PreStartContainer round trips.
//! - [`state`]: what the device manager knows; read it in [`FakeKubelet::wait_for`].
//! - [`checkpoint`]: `kubelet_internal_checkpoint` in the kubelet's JSON shape, written in the
//!   background after every change (`persist`); [`FakeKubelet::flush_checkpoint`] waits for it.
//! - [`events`]: [`KubeletEvent`] stream and the bounded log.
//! - [`resource_name`]: the extended-resource-name rule.
//! - [`error`]: every error, with the kubelet's texts.
//! - [`control`]: the `fake-kubelet` program: console, control socket and `ctl` client.

pub mod allocation;
pub mod checkpoint;
pub mod config;
pub mod control;
mod core;
pub mod error;
pub mod events;
pub mod kubelet;
mod persist;
pub mod registration;
pub mod resource_name;
pub mod selection;
pub mod state;

pub use allocation::ContainerRequest;
pub use config::Config;
pub use error::{AllocateError, KubeletError, RegisterError, RpcError, WaitTimeout};
pub use events::{KubeletEvent, wait_for_event};
pub use kubelet::FakeKubelet;
pub use selection::AllocationRequest;
pub use state::{
    ContainerAllocation, DeviceStatus, EndpointStatus, NodeStatus, ResourceStatus, State,
};
