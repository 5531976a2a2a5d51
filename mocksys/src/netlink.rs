//! Uevents multicast on NETLINK_KOBJECT_UEVENT (group 1), as the kernel sends them, inside the
//! caller's own network namespace, and only when that namespace is private: in the machine's
//! namespace real udev and every real listener would receive invented hardware events.
//!
//! A socket belongs to the network namespace of the thread that creates it, so the check reads
//! `/proc/thread-self/ns/net` and compares it with `/proc/1/ns/net`. Where pid 1's namespace
//! cannot be inspected (a sandbox hiding it), the parent process's namespace is the reference:
//! `unshare -n mocksys ...` is private against the shell that started it.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, sendto, socket,
};

use crate::backend::{SysBackend, Uevent};

/// The kernel's uevent multicast group.
pub const UEVENT_GROUP: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error(
        "refusing to send uevents in a shared network namespace (/proc/thread-self/ns/net is \
         {reference}): run inside a private one (e.g. `unshare -n`)"
    )]
    SharedNamespace { reference: String },
    #[error("cannot inspect network namespaces ({path}): {source}")]
    Namespace { path: String, source: io::Error },
    #[error("NETLINK_KOBJECT_UEVENT socket: {0}")]
    Socket(#[from] nix::Error),
}

/// A sender of uevents into the current (private) network namespace.
pub struct UeventSender {
    fd: OwnedFd,
}

/// The namespace the calling thread's is compared with: pid 1's, or the parent process's
/// where pid 1's is hidden. Returns its path and whether the thread shares it.
pub fn shares_reference_namespace() -> Result<(String, bool), NetlinkError> {
    let stat = |path: &str| {
        std::fs::metadata(path).map_err(|source| NetlinkError::Namespace {
            path: path.to_owned(),
            source,
        })
    };
    let mine = stat("/proc/thread-self/ns/net")?;
    let parent = format!("/proc/{}/ns/net", nix::unistd::getppid());
    let (reference, meta) = match stat("/proc/1/ns/net") {
        Ok(m) => ("/proc/1/ns/net".to_owned(), m),
        Err(_) => {
            let m = stat(&parent)?;
            (parent, m)
        }
    };
    let shared = mine.dev() == meta.dev() && mine.ino() == meta.ino();
    Ok((reference, shared))
}

impl UeventSender {
    /// Opens the socket; fails with [`NetlinkError::SharedNamespace`] outside a private netns.
    pub fn new() -> Result<UeventSender, NetlinkError> {
        let (reference, shared) = shares_reference_namespace()?;
        if shared {
            return Err(NetlinkError::SharedNamespace { reference });
        }
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkKObjectUEvent,
        )?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        Ok(UeventSender { fd })
    }

    /// Multicasts one uevent to group 1.
    pub fn send(&self, ev: &Uevent) -> Result<(), NetlinkError> {
        let wire = ev.to_wire();
        sendto(
            self.fd.as_raw_fd(),
            &wire,
            &NetlinkAddr::new(0, 1 << (UEVENT_GROUP - 1)),
            MsgFlags::empty(),
        )?;
        Ok(())
    }

    /// Sends every uevent of every change of `backend` from now on, until the returned
    /// handle is dropped.
    pub fn follow(self, backend: &dyn SysBackend) -> UeventFollower {
        let open = Arc::new(AtomicBool::new(true));
        let flag = open.clone();
        backend.subscribe(Box::new(move |change| {
            if !flag.load(Ordering::SeqCst) {
                return;
            }
            for ev in &change.uevents {
                if let Err(e) = self.send(ev) {
                    tracing::warn!(action = %ev.action, devpath = %ev.devpath, "uevent not sent: {e}");
                }
            }
        }));
        UeventFollower { open }
    }
}

/// Stops forwarding uevents when dropped.
pub struct UeventFollower {
    open: Arc<AtomicBool>,
}

impl Drop for UeventFollower {
    fn drop(&mut self) {
        self.open.store(false, Ordering::SeqCst);
    }
}

/// A listener bound to group 1 (what udev and the agent open), for tests and tools.
pub fn listen() -> Result<OwnedFd, NetlinkError> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkKObjectUEvent,
    )?;
    bind(
        fd.as_raw_fd(),
        &NetlinkAddr::new(0, 1 << (UEVENT_GROUP - 1)),
    )?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Uevent {
        Uevent {
            action: "bind".into(),
            devpath: "/devices/pci0000:00/0000:00:05.0".into(),
            subsystem: "pci".into(),
            seqnum: 7,
            env: vec![("DRIVER".into(), "vfio-pci".into())],
        }
    }

    #[test]
    fn uevents_reach_a_listener_in_a_private_namespace() {
        // Only this thread moves to a new network namespace.
        let got = std::thread::spawn(|| -> Result<Vec<u8>, String> {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("unshare(CLONE_NEWNET): {e}"))?;
            let listener = listen().map_err(|e| e.to_string())?;
            let sender = UeventSender::new().map_err(|e| e.to_string())?;
            sender.send(&event()).map_err(|e| e.to_string())?;
            let mut buf = vec![0u8; 8192];
            let n = nix::sys::socket::recv(listener.as_raw_fd(), &mut buf, MsgFlags::empty())
                .map_err(|e| e.to_string())?;
            buf.truncate(n);
            Ok(buf)
        })
        .join()
        .expect("thread");
        match got {
            Ok(bytes) => {
                assert_eq!(bytes, event().to_wire());
                assert_eq!(Uevent::from_wire(&bytes), Some(event()));
            }
            Err(e) if e.starts_with("unshare") => {
                eprintln!("SKIPPED: cannot make a private network namespace: {e}")
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn refuses_the_machine_namespace() {
        let (reference, shared) = shares_reference_namespace().unwrap();
        if shared {
            let err = UeventSender::new().err().expect("refused");
            assert!(matches!(err, NetlinkError::SharedNamespace { .. }));
            assert!(err.to_string().contains(&reference), "{err}");
        } else {
            eprintln!("SKIPPED: this test already runs in a private network namespace");
        }
    }
}
