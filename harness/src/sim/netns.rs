//! A private network namespace for the calling thread, so hosts may multicast real uevents.
//!
//! Namespaces belong to threads: a runner thread unshares before it builds its runtime, and
//! every thread it then spawns (tokio workers, FUSE servers) inherits the private namespace.
//! Uevents never reach the machine's own namespace.

/// Moves the calling thread into a new network namespace; false when not permitted (not root).
pub fn enter_private() -> bool {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).is_ok() && is_private()
}

/// True when this thread's network namespace is not the machine's: compared with pid 1's, or
/// with the parent process's where pid 1's is hidden (as in some sandboxes, even from root).
pub fn is_private() -> bool {
    matches!(
        mocksys::netlink::shares_reference_namespace(),
        Ok((_, false))
    )
}
