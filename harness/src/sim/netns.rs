//! A private network namespace for the calling thread, so hosts may multicast real uevents.
//!
//! Namespaces belong to threads: a runner thread unshares before it builds its runtime, and
//! every thread it then spawns (tokio workers, FUSE servers) inherits the private namespace.
//! Uevents never reach the machine's own namespace.

/// Moves the calling thread into a new network namespace; false when not permitted (not root).
pub fn enter_private() -> bool {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).is_ok() && is_private()
}

/// True when this thread's network namespace is not the init process's.
pub fn is_private() -> bool {
    use std::os::unix::fs::MetadataExt;
    let tid = nix::unistd::gettid();
    let mine = std::fs::metadata(format!("/proc/self/task/{tid}/ns/net")).map(|m| m.ino());
    let init = std::fs::metadata("/proc/1/ns/net").map(|m| m.ino());
    matches!((mine, init), (Ok(a), Ok(b)) if a != b)
}
