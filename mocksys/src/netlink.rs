//! Uevents multicast on NETLINK_KOBJECT_UEVENT, inside the caller's own network namespace, and only when that namespace is private: in the machine's
//! namespace real udev and every real listener would receive invented hardware events.
//!
//! A socket belongs to the network namespace of the thread that creates it, so the check reads
//! `/proc/thread-self/ns/net` and compares it with `/proc/1/ns/net`. Where pid 1's namespace
//! cannot be inspected (a sandbox hiding it), the parent process's namespace is the reference:
//! `unshare -n mocksys ...` is private against the shell that started it.
//!
//! Each event goes out twice, as on a real node: on the kernel group (1) in the kernel's format,
//! then on the udev group (2) in libudev's framing, as udevd re-broadcasts it once processed.
//! libudev (so `udevadm monitor`, and every libudev or sd-device program) drops kernel-group
//! messages from any sender but the kernel (netlink port id 0, which no socket of ours can
//! have), so the udev-group copy is the one such programs see.

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
/// The group udevd re-broadcasts processed events on (libudev's `MONITOR_GROUP_UDEV`).
pub const UDEV_GROUP: u32 = 2;

/// libudev's `UDEV_MONITOR_MAGIC`, stored big-endian in the header.
const UDEV_MONITOR_MAGIC: u32 = 0xfeed_cafe;
/// `struct monitor_netlink_header`: "libudev\0", then eight 32-bit fields.
const UDEV_HEADER_LEN: usize = 40;

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

    /// Multicasts one uevent to the kernel group, then to the udev group.
    pub fn send(&self, ev: &Uevent) -> Result<(), NetlinkError> {
        for (group, wire) in [(UEVENT_GROUP, ev.to_wire()), (UDEV_GROUP, udev_wire(ev))] {
            sendto(
                self.fd.as_raw_fd(),
                &wire,
                &NetlinkAddr::new(0, 1 << (group - 1)),
                MsgFlags::empty(),
            )?;
        }
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

/// `ev` as udevd sends it on the udev group: libudev's header (the subsystem and devtype hashes
/// let subscribers' socket filters match), then the properties as NUL-terminated `KEY=VALUE`s,
/// including `USEC_INITIALIZED` as a processed event carries it.
pub fn udev_wire(ev: &Uevent) -> Vec<u8> {
    let mut props = Vec::with_capacity(256);
    let mut push = |s: &str| {
        props.extend_from_slice(s.as_bytes());
        props.push(0);
    };
    push(&format!("ACTION={}", ev.action));
    push(&format!("DEVPATH={}", ev.devpath));
    push(&format!("SUBSYSTEM={}", ev.subsystem));
    for (k, v) in &ev.env {
        push(&format!("{k}={v}"));
    }
    push(&format!("SEQNUM={}", ev.seqnum));
    push(&format!("USEC_INITIALIZED={}", monotonic_usec()));
    let devtype = ev.env.iter().find(|(k, _)| k == "DEVTYPE").map(|(_, v)| v);
    let mut out = Vec::with_capacity(UDEV_HEADER_LEN + props.len());
    out.extend_from_slice(b"libudev\0");
    out.extend_from_slice(&UDEV_MONITOR_MAGIC.to_be_bytes());
    // header_size, properties_off, properties_len: host order, as libudev writes them.
    out.extend_from_slice(&(UDEV_HEADER_LEN as u32).to_ne_bytes());
    out.extend_from_slice(&(UDEV_HEADER_LEN as u32).to_ne_bytes());
    out.extend_from_slice(&(props.len() as u32).to_ne_bytes());
    out.extend_from_slice(&murmur2(ev.subsystem.as_bytes()).to_be_bytes());
    out.extend_from_slice(&devtype.map_or(0, |d| murmur2(d.as_bytes())).to_be_bytes());
    // The tag bloom filter (hi, lo): no tags.
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&props);
    out
}

fn monotonic_usec() -> u64 {
    // SAFETY: a zeroed timespec is a valid out-parameter for clock_gettime.
    let mut t: libc::timespec = unsafe { std::mem::zeroed() };
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) } != 0 {
        return 1;
    }
    t.tv_sec as u64 * 1_000_000 + t.tv_nsec as u64 / 1_000
}

/// MurmurHash2 (32-bit, seed 0) as libudev hashes filter strings (`string_hash32`); words are
/// read little-endian, as on the x86_64 and aarch64 hosts this runs on.
fn murmur2(key: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let mut h = key.len() as u32;
    let mut chunks = key.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        for (i, b) in tail.iter().enumerate() {
            h ^= u32::from(*b) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ (h >> 15)
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
                crate::testing::cannot_run(&format!("cannot make a private network namespace: {e}"))
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn udev_framing_is_libudevs() {
        let mut ev = event();
        ev.env.push(("DEVTYPE".into(), "usb_device".into()));
        let wire = udev_wire(&ev);
        let word = |i: usize| u32::from_ne_bytes(wire[i..i + 4].try_into().unwrap());
        let be = |i: usize| u32::from_be_bytes(wire[i..i + 4].try_into().unwrap());
        assert_eq!(&wire[..8], b"libudev\0");
        assert_eq!(be(8), 0xfeed_cafe);
        assert_eq!(word(12), 40, "header_size");
        assert_eq!(word(16), 40, "properties_off");
        assert_eq!(word(20) as usize, wire.len() - 40, "properties_len");
        assert_eq!(be(24), murmur2(b"pci"));
        assert_eq!(be(28), murmur2(b"usb_device"));
        assert_eq!(&wire[32..40], &[0; 8], "no tags");
        let props: Vec<&[u8]> = wire[40..]
            .split(|b| *b == 0)
            .filter(|p| !p.is_empty())
            .collect();
        assert_eq!(props[0], b"ACTION=bind");
        assert_eq!(props[1], b"DEVPATH=/devices/pci0000:00/0000:00:05.0");
        assert_eq!(props[2], b"SUBSYSTEM=pci");
        assert!(props.contains(&&b"SEQNUM=7"[..]));
        assert!(props.iter().any(|p| p.starts_with(b"USEC_INITIALIZED=")));
        assert_eq!(*wire.last().unwrap(), 0);
        // The hash's empty-string value (seed 0, length 0) and distinct values otherwise.
        assert_eq!(murmur2(b""), 0);
        assert_ne!(murmur2(b"pci"), murmur2(b"usb"));
    }

    #[test]
    fn refuses_the_machine_namespace() {
        let (reference, shared) = shares_reference_namespace().unwrap();
        if shared {
            let err = UeventSender::new().err().expect("refused");
            assert!(matches!(err, NetlinkError::SharedNamespace { .. }));
            assert!(err.to_string().contains(&reference), "{err}");
        } else {
            crate::testing::cannot_run("this test already runs in a private network namespace");
        }
    }
}
