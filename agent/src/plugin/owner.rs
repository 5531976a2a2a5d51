//! Handing a USB device node to qemu: KubeVirt's USB Allocate chowns `/dev/bus/usb/BBB/DDD` to
//! qemu's uid/gid (107) so a non-root qemu can open it, never following a symlink
//! (`safepath.ChownAtNoFollow`). Here every component below the dev root is opened with
//! `O_NOFOLLOW`, and the node itself is changed with `fchownat(AT_SYMLINK_NOFOLLOW)`: a link
//! planted anywhere on the path makes the chown fail instead of reaching another file.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

/// The uid and gid of qemu in virt-launcher (KubeVirt's `util.NonRootUID`).
pub const QEMU_ID: u32 = 107;

/// Who USB device nodes are given to on Allocate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceOwner {
    pub uid: u32,
    pub gid: u32,
}

impl Default for DeviceOwner {
    fn default() -> Self {
        DeviceOwner {
            uid: QEMU_ID,
            gid: QEMU_ID,
        }
    }
}

fn open_dir(at: libc::c_int, name: &CString) -> std::io::Result<OwnedFd> {
    let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: `name` is a valid NUL-terminated string; the returned fd is checked and owned.
    let fd = unsafe { libc::openat(at, name.as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn cstring(part: &std::ffi::OsStr) -> std::io::Result<CString> {
    CString::new(part.as_bytes()).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))
}

/// Changes the owner of `root/relative` without following a symlink at any component below
/// `root`. `relative` must be plain components only (the caller checks it).
pub fn chown_beneath(root: &Path, relative: &str, owner: DeviceOwner) -> std::io::Result<()> {
    let parts: Vec<&std::ffi::OsStr> = (Path::new(relative).components())
        .map(|c| match c {
            Component::Normal(p) => Ok(p),
            _ => Err(std::io::Error::from_raw_os_error(libc::EINVAL)),
        })
        .collect::<Result<_, _>>()?;
    let Some((last, dirs)) = parts.split_last() else {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    };
    let mut dir = open_dir(libc::AT_FDCWD, &cstring(root.as_os_str())?)?;
    for part in dirs {
        dir = open_dir(dir.as_raw_fd(), &cstring(part)?)?;
    }
    let name = cstring(last)?;
    // SAFETY: valid fd and NUL-terminated name.
    let rc = unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            name.as_ptr(),
            owner.uid,
            owner.gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
