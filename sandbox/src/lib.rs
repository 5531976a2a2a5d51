//! Runs one process in a node's view of the machine, as a privileged pod with host paths would
//! see that node: its synthetic sysfs at `/sys`, its `/dev` tree at `/dev`, its kubelet plugin
//! directory at `/var/lib/kubelet/device-plugins`, and a `/proc` of its own.
//!
//! The process starts as PID 1 of a new PID namespace inside a new mount namespace (and in the
//! caller's network namespace, so it receives the uevents multicast there). Nothing it does in
//! those mounts reaches the machine's, and nothing of the machine's devices is visible to it:
//! `/sys` and `/dev` are the synthetic ones, `/proc/bus` and the udev database are covered, and only
//! the basic character devices a container runtime gives every container (`/dev/null`, `zero`,
//! `full`, `random`, `urandom`, `tty`) are bound in from the machine.
//!
//! As with a container, signals other than SIGKILL reach the process only if it handles them
//! (PID 1 semantics): [`Child::stop`] sends SIGTERM, waits a grace period, then SIGKILL, as the
//! kubelet does. When the process exits, everything else in its PID namespace is killed; when the
//! thread that started it dies with the caller, the kernel kills it too (`PR_SET_PDEATHSIG`), so a
//! killed test cannot leak one.
//!
//! - [`view`]: [`NodeView`], what goes where, and the mount plan computed from it (in the parent).
//! - [`spawn`]: [`Command`] and [`Child`]: clone into the namespaces, run the plan, exec, reap.
//! - [`seccomp`]: `statfs` on the synthetic `/sys` reports sysfs (opt-in per view).
//! - [`net`]: a private network namespace with its loopback up, for the node the view belongs to.

pub mod net;
pub mod seccomp;
pub mod spawn;
pub mod view;

pub use spawn::{Child, Command, SandboxError, Stdio};
pub use view::{NodeView, PLUGIN_DIR};
