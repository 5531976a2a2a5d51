//! A private network namespace for the calling thread, so hosts may multicast real uevents.
//!
//! Namespaces belong to threads: a runner thread unshares before it builds its runtime, and
//! every thread it then spawns (tokio workers, FUSE servers) inherits the private namespace.
//! Uevents never reach the machine's own namespace.
//!
//! The same goes for mounts: [`enter_private_mounts`] gives the thread a mount namespace of its
//! own, so a scenario's FUSE mounts are invisible to the machine and are torn down with the
//! process even when it is killed (a test that times out cannot leak a mount).

/// Moves the calling thread into a new network namespace with its loopback up (external agents
/// may serve metrics or gRPC on 127.0.0.1, as on a node); false when not permitted (not root).
pub fn enter_private() -> bool {
    hostdev_sandbox::net::enter_private_network().is_ok() && is_private()
}

/// True when this thread's network namespace is not the machine's: compared with pid 1's, or
/// with the parent process's where pid 1's is hidden (as in some sandboxes, even from root).
pub fn is_private() -> bool {
    matches!(
        mocksys::netlink::shares_reference_namespace(),
        Ok((_, false))
    )
}

/// Moves the calling thread into a mount namespace of its own in which nothing propagates back
/// to the machine's; false when not permitted (not root), and the thread then mounts as usual.
pub fn enter_private_mounts() -> bool {
    use nix::mount::{MsFlags, mount};
    if nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).is_err() {
        return false;
    }
    // `/` is usually a shared mount: without this, mounts made here would appear outside too.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .is_ok()
}
