//! The contract between the kernel model and the front ends that present it.
//!
//! A front end (the FUSE mount, the plain-directory writer, the /dev keeper, the netlink
//! emitter) sees a host only through [`SysBackend`]: the current [`Tree`], reads and writes by
//! path with the kernel's errnos, and a stream of [`Change`]s, each carrying the exact
//! [`TreeDiff`] a front end must invalidate, the /dev nodes that exist after it, and the uevents
//! it raised.

use std::sync::Arc;

use crate::errno::Errno;
use crate::tree::{Tree, TreeDiff};

/// A host as front ends see it. Paths are relative to the sysfs root (`bus/pci/drivers_probe`).
pub trait SysBackend: Send + Sync + 'static {
    /// The tree as it is now.
    fn tree(&self) -> Arc<Tree>;
    /// Content of an attribute, after fault injection (errno, latency) for this path.
    fn read(&self, path: &str) -> Result<Arc<[u8]>, Errno>;
    /// One `write(2)` to an attribute: the kernel's effect and errno, after fault injection.
    /// Returns once the change is applied and every subscriber has been told of it.
    fn write(&self, path: &str, data: &[u8]) -> Result<(), Errno>;
    /// Calls `f` after every change, in order, synchronously from the changing thread (with no
    /// model lock held), before the call that made the change returns.
    fn subscribe(&self, f: Box<dyn Fn(&Change) + Send + Sync>);
    /// The device nodes that exist now (for the /dev tree).
    fn dev_nodes(&self) -> Vec<DevNode>;
}

/// One applied change of a host.
#[derive(Clone, Debug)]
pub struct Change {
    /// The tree after the change.
    pub tree: Arc<Tree>,
    /// What differs from the tree before it.
    pub diff: TreeDiff,
    /// The device nodes after the change.
    pub dev_nodes: Vec<DevNode>,
    /// The uevents the change raised, in order.
    pub uevents: Vec<Uevent>,
}

/// A character device node under /dev.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DevNode {
    /// Relative to the /dev root: `vfio/vfio`, `vfio/12`, `bus/usb/001/002`.
    pub path: String,
    pub major: u32,
    pub minor: u32,
}

/// A kernel uevent, as the kernel multicasts it on NETLINK_KOBJECT_UEVENT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uevent {
    /// `add`, `remove`, `bind`, `unbind`, `change`.
    pub action: String,
    /// `/devices/pci0000:00/0000:00:01.0` (starts with `/`, no `/sys`).
    pub devpath: String,
    pub subsystem: String,
    pub seqnum: u64,
    /// Further `KEY=value` pairs in order (DRIVER, PCI_ID, DEVNAME, MAJOR, ...).
    pub env: Vec<(String, String)>,
}

impl Uevent {
    /// The kernel's wire format: `action@devpath\0ACTION=..\0DEVPATH=..\0SUBSYSTEM=..\0[env..\0]SEQNUM=..\0`.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        let mut push = |s: &str| {
            out.extend_from_slice(s.as_bytes());
            out.push(0);
        };
        push(&format!("{}@{}", self.action, self.devpath));
        push(&format!("ACTION={}", self.action));
        push(&format!("DEVPATH={}", self.devpath));
        push(&format!("SUBSYSTEM={}", self.subsystem));
        for (k, v) in &self.env {
            push(&format!("{k}={v}"));
        }
        push(&format!("SEQNUM={}", self.seqnum));
        out
    }

    /// Parses the kernel's wire format (the inverse of [`Uevent::to_wire`]).
    pub fn from_wire(buf: &[u8]) -> Option<Uevent> {
        let mut parts = buf
            .split(|b| *b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| String::from_utf8_lossy(p).into_owned());
        let header = parts.next()?;
        let (action, devpath) = header.split_once('@')?;
        let mut ev = Uevent {
            action: action.into(),
            devpath: devpath.into(),
            subsystem: String::new(),
            seqnum: 0,
            env: Vec::new(),
        };
        for p in parts {
            let (k, v) = p.split_once('=')?;
            match k {
                "ACTION" | "DEVPATH" => {}
                "SUBSYSTEM" => ev.subsystem = v.into(),
                "SEQNUM" => ev.seqnum = v.parse().ok()?,
                _ => ev.env.push((k.into(), v.into())),
            }
        }
        Some(ev)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn uevent_wire_round_trip() {
        let ev = Uevent {
            action: "bind".into(),
            devpath: "/devices/pci0000:00/0000:00:05.0".into(),
            subsystem: "pci".into(),
            seqnum: 42,
            env: vec![
                ("DRIVER".into(), "vfio-pci".into()),
                ("PCI_ID".into(), "8086:5845".into()),
            ],
        };
        let wire = ev.to_wire();
        assert!(wire.starts_with(b"bind@/devices/pci0000:00/0000:00:05.0\0ACTION=bind\0"));
        assert!(wire.ends_with(b"SEQNUM=42\0"));
        assert_eq!(Uevent::from_wire(&wire), Some(ev));
    }
}
