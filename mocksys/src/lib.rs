//! mocksys: a synthetic Linux host that unmodified programs see as real.
//!
//! The host is a pure kernel model ([`kernel`]) of PCI functions, drivers, IOMMU and VFIO groups,
//! mediated devices and USB devices, loaded from the `host:` YAML of a scenario ([`spec`]). Every
//! change renders a [`tree::Tree`] of sysfs; front ends present that tree:
//!
//! - [`fuse`]: a real FUSE mount of a `/sys`-shaped root, with kernel write semantics;
//! - [`devdir`]: a real `/dev` directory kept in step (`vfio/N`, `bus/usb/BBB/DDD`);
//! - [`plaindir`]: the same tree written into an ordinary directory (reads only);
//! - [`netlink`]: uevents multicast on NETLINK_KOBJECT_UEVENT inside a private network namespace.
//!
//! [`faults`] injects errnos and latency per path; [`backend`] is the contract between the model
//! and the front ends.
//! [`host::Host`] holds the model, renders it with [`render`] after every change and implements
//! [`backend::SysBackend`]; [`presets`] names common devices (`tesla-t4`, `qemu-nvme`, ...).

pub mod backend;
pub mod errno;
pub mod tree;

pub mod faults;
pub mod host;
pub mod kernel;
pub mod presets;
pub mod render;
pub mod spec;

pub mod devdir;
pub mod fuse;
pub mod mount;
pub mod netlink;
pub mod plaindir;
pub mod testing;

pub use backend::{Change, DevNode, SysBackend, Uevent};
pub use errno::Errno;
pub use host::Host;
pub use spec::HostSpec;
