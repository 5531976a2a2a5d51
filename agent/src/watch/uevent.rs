//! The kernel's uevent broadcast (netlink `NETLINK_KOBJECT_UEVENT`, multicast group 1): a
//! wake-up for devices added, removed, bound or unbound, and mdevs created or removed.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, socket,
};
use tokio::io::unix::AsyncFd;
use tokio_util::sync::CancellationToken;

use super::{WatchEvent, WatchSender};

/// The kernel's own uevents (udev re-broadcasts on group 2; we want the source).
const KERNEL_GROUP: u32 = 1;
/// Subsystems whose events may change what the agent serves.
const SUBSYSTEMS: &[&str] = &["pci", "usb", "mdev", "vfio", "mdev_bus", "iommu"];

#[derive(Debug, thiserror::Error)]
#[error("uevent watcher: {action}: {source}")]
pub struct UeventError {
    action: &'static str,
    #[source]
    source: std::io::Error,
}

/// Whether a raw uevent message (`ACTION@DEVPATH\0KEY=VALUE\0...`) concerns the agent.
pub fn is_relevant(message: &[u8]) -> bool {
    message
        .split(|&b| b == 0)
        .filter_map(|field| field.strip_prefix(b"SUBSYSTEM="))
        .any(|subsystem| SUBSYSTEMS.iter().any(|s| s.as_bytes() == subsystem))
}

fn open() -> Result<OwnedFd, UeventError> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        SockProtocol::NetlinkKObjectUEvent,
    )
    .map_err(|e| UeventError {
        action: "opening the netlink socket",
        source: e.into(),
    })?;
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, KERNEL_GROUP)).map_err(|e| UeventError {
        action: "joining the kernel uevent group",
        source: e.into(),
    })?;
    Ok(fd)
}

/// Listens from now on, reporting [`WatchEvent::Uevent`] for relevant messages until `stop`.
pub fn spawn(events: WatchSender, stop: CancellationToken) -> Result<(), UeventError> {
    // SAFETY: an `OwnedFd` keeps its descriptor open and unchanged until it is dropped.
    let fd = unsafe { AsyncFd::register(open()?) }.map_err(|e| UeventError {
        action: "registering the netlink socket",
        source: e.into(),
    })?;
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let ready = tokio::select! {
                _ = stop.cancelled() => return,
                ready = fd.readable() => ready,
            };
            let mut guard = match ready {
                Ok(guard) => guard,
                Err(e) => {
                    let _ = events.send(WatchEvent::WatcherFailed {
                        watcher: "uevent",
                        error: e.to_string(),
                    });
                    return;
                }
            };
            // Drain everything queued: a burst (a whole card bound at once) is one wake-up.
            let mut relevant = false;
            loop {
                match recv(
                    guard.get_inner().as_raw_fd(),
                    &mut buffer,
                    MsgFlags::empty(),
                ) {
                    Ok(0) => break,
                    Ok(n) => relevant |= is_relevant(&buffer[..n]),
                    Err(nix::errno::Errno::EAGAIN) => {
                        guard.clear_ready();
                        break;
                    }
                    // The kernel dropped messages: we cannot know which, so rediscover.
                    Err(nix::errno::Errno::ENOBUFS) => relevant = true,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => {
                        let _ = events.send(WatchEvent::WatcherFailed {
                            watcher: "uevent",
                            error: e.to_string(),
                        });
                        return;
                    }
                }
            }
            if relevant {
                let _ = events.send(WatchEvent::Uevent);
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_by_subsystem() {
        assert!(is_relevant(
            b"bind@/devices/pci0000:00/0000:00:02.0\0ACTION=bind\0SUBSYSTEM=pci\0DRIVER=vfio-pci\0"
        ));
        assert!(!is_relevant(
            b"change@/devices/virtual/net/lo\0ACTION=change\0SUBSYSTEM=net\0"
        ));
    }
}
