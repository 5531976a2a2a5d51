//! The host's sysfs and /dev, rooted where the command line says, and safe ways to read them.
//!
//! Every path the agent touches is derived from a [`HostPaths`] value, so production (`/sys`,
//! `/dev`) and tests (a `TempDir` or a FUSE mount) share one set of path names.
//!
//! Safety rule: nothing here ever follows a link out of the sysfs root. Opens go through
//! `openat2(RESOLVE_BENEATH)`, so the kernel refuses any path (or link inside it) that leaves
//! the root; link texts the agent interprets (driver, iommu_group, mdev_type) are resolved
//! lexically with [`lexical_join`] and refused when they climb above the root or are absolute.

use std::ffi::OsStr;
use std::fmt;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2, readlinkat};

/// Where the host's sysfs and device nodes are (default `/sys` and `/dev`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPaths {
    pub sysfs_root: PathBuf,
    pub dev_root: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        HostPaths::new("/sys", "/dev")
    }
}

impl HostPaths {
    pub fn new(sysfs_root: impl Into<PathBuf>, dev_root: impl Into<PathBuf>) -> Self {
        HostPaths {
            sysfs_root: sysfs_root.into(),
            dev_root: dev_root.into(),
        }
    }

    /// Host path of the VFIO container node (`<dev>/vfio/vfio`).
    pub fn vfio_container(&self) -> PathBuf {
        self.dev_root.join("vfio/vfio")
    }

    /// Host path of an IOMMU group's VFIO node (`<dev>/vfio/<group>`).
    pub fn vfio_group_node(&self, group: u32) -> PathBuf {
        self.dev_root.join(format!("vfio/{group}"))
    }

    /// Host path of a USB device node from its checked, dev-root-relative DEVNAME.
    pub fn usb_node(&self, devname: &str) -> PathBuf {
        self.dev_root.join(devname)
    }

    /// Opens the sysfs root for one discovery pass.
    pub fn open_sysfs(&self) -> Result<SysDir, SysfsError> {
        SysDir::open_root(&self.sysfs_root)
    }

    /// Opens the dev root (for health checks).
    pub fn open_dev(&self) -> Result<SysDir, SysfsError> {
        SysDir::open_root(&self.dev_root)
    }
}

/// An error reading sysfs, naming the path (relative to the root) and the errno.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SysfsError {
    #[error("{op} {path}: {errno}")]
    Io {
        op: &'static str,
        path: String,
        errno: Errno,
    },
    #[error("{path}: link to {target:?} leaves the root")]
    Escape { path: String, target: String },
    #[error("{path}: unexpected content {content:?}")]
    Malformed { path: String, content: String },
}

impl SysfsError {
    pub fn errno(&self) -> Option<Errno> {
        match self {
            SysfsError::Io { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.errno() == Some(Errno::ENOENT)
    }
}

/// A path relative to a root, already free of `.`/`..` and links we know about.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelPath(String);

impl RelPath {
    pub fn new(path: &str) -> Option<RelPath> {
        lexical_join(&RelPath::default(), path)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn join(&self, name: &str) -> RelPath {
        if self.0.is_empty() {
            RelPath(name.to_string())
        } else {
            RelPath(format!("{}/{name}", self.0))
        }
    }

    pub fn parent(&self) -> Option<RelPath> {
        if self.0.is_empty() {
            return None;
        }
        Some(RelPath(
            self.0
                .rsplit_once('/')
                .map(|(p, _)| p.to_string())
                .unwrap_or_default(),
        ))
    }

    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or("")
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Joins a link text to the directory holding the link, without touching the file system.
/// `None` when the text is absolute or climbs above the root: such a link is never followed.
pub fn lexical_join(dir: &RelPath, link: &str) -> Option<RelPath> {
    if link.starts_with('/') || link.is_empty() || link.contains('\0') {
        return None;
    }
    let mut parts: Vec<&str> = if dir.0.is_empty() {
        Vec::new()
    } else {
        dir.0.split('/').collect()
    };
    for part in link.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    Some(RelPath(parts.join("/")))
}

/// An open directory under a root; `rel` is its lexical path from that root.
#[derive(Debug)]
pub struct SysDir {
    fd: OwnedFd,
    root: std::sync::Arc<OwnedFd>,
    rel: RelPath,
    root_path: std::sync::Arc<PathBuf>,
}

fn beneath(flags: OFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS)
}

fn io_err(op: &'static str, path: impl fmt::Display, errno: Errno) -> SysfsError {
    SysfsError::Io {
        op,
        path: path.to_string(),
        errno,
    }
}

impl SysDir {
    fn open_root(root: &Path) -> Result<SysDir, SysfsError> {
        let fd = nix::fcntl::open(
            root,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| io_err("open", root.display(), e))?;
        let dup = fd.try_clone().map_err(|e| {
            io_err(
                "dup",
                root.display(),
                Errno::from_raw(e.raw_os_error().unwrap_or(0)),
            )
        })?;
        Ok(SysDir {
            fd,
            root: std::sync::Arc::new(dup),
            rel: RelPath::default(),
            root_path: std::sync::Arc::new(root.to_path_buf()),
        })
    }

    /// This directory's lexical path from the root.
    pub fn rel(&self) -> &RelPath {
        &self.rel
    }

    /// The absolute host path of `rel` (for messages and for handing to others).
    pub fn host_path(&self, rel: &RelPath) -> PathBuf {
        self.root_path.join(rel.as_str())
    }

    /// Opens a directory by its path from the ROOT (links inside it may be followed, but the
    /// kernel refuses any that leave the root).
    pub fn open_from_root(&self, rel: &RelPath) -> Result<SysDir, SysfsError> {
        let path = if rel.as_str().is_empty() {
            "."
        } else {
            rel.as_str()
        };
        let fd = openat2(
            self.root.as_fd(),
            path,
            beneath(OFlag::O_PATH | OFlag::O_DIRECTORY),
        )
        .map_err(|e| io_err("open", rel, e))?;
        Ok(SysDir {
            fd,
            root: self.root.clone(),
            rel: rel.clone(),
            root_path: self.root_path.clone(),
        })
    }

    /// Opens a plain (non-link) subdirectory.
    pub fn subdir(&self, name: &str) -> Result<SysDir, SysfsError> {
        let rel = self.rel.join(name);
        let how = beneath(OFlag::O_PATH | OFlag::O_DIRECTORY)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
        let fd = openat2(self.fd.as_fd(), name, how).map_err(|e| io_err("open", &rel, e))?;
        Ok(SysDir {
            fd,
            root: self.root.clone(),
            rel,
            root_path: self.root_path.clone(),
        })
    }

    /// Names in this directory (or in a plain subdirectory of it), sorted, without `.`/`..`.
    pub fn list(&self, sub: Option<&str>) -> Result<Vec<String>, SysfsError> {
        let (path, rel) = match sub {
            Some(s) => (s, self.rel.join(s)),
            None => (".", self.rel.clone()),
        };
        let fd = openat2(
            self.fd.as_fd(),
            path,
            beneath(OFlag::O_RDONLY | OFlag::O_DIRECTORY),
        )
        .map_err(|e| io_err("list", &rel, e))?;
        let mut dir = nix::dir::Dir::from_fd(fd).map_err(|e| io_err("list", &rel, e))?;
        let mut names = Vec::new();
        for entry in dir.iter() {
            let entry = entry.map_err(|e| io_err("list", &rel, e))?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            names.push(String::from_utf8_lossy(name).into_owned());
        }
        names.sort();
        Ok(names)
    }

    /// Reads a small attribute file in this directory.
    pub fn read(&self, name: &str) -> Result<String, SysfsError> {
        let rel = self.rel.join(name);
        let fd = openat2(self.fd.as_fd(), name, beneath(OFlag::O_RDONLY))
            .map_err(|e| io_err("open", &rel, e))?;
        let mut file = std::fs::File::from(fd);
        let mut buf = Vec::with_capacity(256);
        file.read_to_end(&mut buf).map_err(|e| {
            io_err(
                "read",
                &rel,
                Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            )
        })?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    /// Reads an attribute and trims surrounding whitespace.
    pub fn read_trimmed(&self, name: &str) -> Result<String, SysfsError> {
        Ok(self.read(name)?.trim().to_string())
    }

    /// Writes one value to an attribute (one write() call, as sysfs expects).
    pub fn write(&self, name: &str, value: &str) -> Result<(), SysfsError> {
        let rel = self.rel.join(name);
        // O_APPEND: sysfs ignores offsets, and on a plain-directory tree successive stores stay readable.
        let fd = openat2(
            self.fd.as_fd(),
            name,
            beneath(OFlag::O_WRONLY | OFlag::O_APPEND),
        )
        .map_err(|e| io_err("open", &rel, e))?;
        let mut file = std::fs::File::from(fd);
        file.write(value.as_bytes()).map(|_| ()).map_err(|e| {
            io_err(
                "write",
                &rel,
                Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            )
        })
    }

    /// True when `name` exists here (without following a final link).
    pub fn exists(&self, name: &str) -> bool {
        let how = beneath(OFlag::O_PATH | OFlag::O_NOFOLLOW);
        openat2(self.fd.as_fd(), name, how).is_ok()
    }

    /// The raw text of the link `name` in this directory.
    pub fn read_link(&self, name: &str) -> Result<String, SysfsError> {
        let target = readlinkat(self.fd.as_fd(), name)
            .map_err(|e| io_err("readlink", self.rel.join(name), e))?;
        Ok(OsStr::new(&target)
            .as_bytes()
            .iter()
            .map(|&b| b as char)
            .collect())
    }

    /// Resolves the link `name` lexically to a path from the root; refuses links that leave it.
    pub fn resolve_link(&self, name: &str) -> Result<RelPath, SysfsError> {
        let target = self.read_link(name)?;
        lexical_join(&self.rel, &target).ok_or_else(|| SysfsError::Escape {
            path: self.rel.join(name).to_string(),
            target,
        })
    }

    /// Opens the directory the link `name` points to, after checking it stays under the root.
    pub fn follow(&self, name: &str) -> Result<SysDir, SysfsError> {
        let rel = self.resolve_link(name)?;
        self.open_from_root(&rel)
    }
}

/// Checks a USB `DEVNAME` (or any dev-root-relative node name) before it is handed to anyone:
/// relative, no `.`/`..`/empty components, no NUL. Returns the normalised name.
pub fn check_dev_relative(devname: &str) -> Result<String, String> {
    if devname.is_empty() {
        return Err("empty DEVNAME".into());
    }
    if devname.starts_with('/') {
        return Err(format!(
            "DEVNAME {devname:?} is absolute; it must be relative to the dev root"
        ));
    }
    if devname.contains('\0') {
        return Err(format!("DEVNAME {devname:?} contains NUL"));
    }
    for part in devname.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(format!(
                "DEVNAME {devname:?} has a {part:?} component; it must stay inside the dev root"
            ));
        }
    }
    Ok(devname.to_string())
}
