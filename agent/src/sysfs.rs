//! The host's sysfs and /dev, rooted where the command line says, and safe ways to read them.
//!
//! Every path the agent touches is derived from a [`HostPaths`] value, so production (`/sys`,
//! `/dev`) and tests (a `TempDir` or a FUSE mount) share one set of path names.
//!
//! Safety rule: nothing here ever follows a link out of the sysfs root. Opens go through
//! `openat2(RESOLVE_BENEATH)`, so the kernel refuses any path (or link inside it) that leaves
//! the root; link texts the agent interprets (driver, iommu_group, mdev_type) are resolved
//! lexically with [`lexical_join`] and refused when they climb above the root or are absolute.
//! Where openat2 is unavailable (kernel < 5.6, or a seccomp filter), the same rule is applied
//! in user space: each component is checked and links expanded lexically (with a small race
//! window the kernel path does not have).

use std::ffi::OsStr;
use std::fmt;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// An open directory under a root; `rel` is its path from that root.
#[derive(Debug)]
pub struct SysDir {
    fd: OwnedFd,
    shared: Arc<Shared>,
    rel: RelPath,
}

/// What every directory opened under one root shares.
#[derive(Debug)]
struct Shared {
    root: OwnedFd,
    root_path: PathBuf,
    /// openat2 is missing (kernel < 5.6) or filtered (seccomp): resolve in user space instead.
    user_space_resolution: bool,
}

/// How a path is resolved below a directory.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Links {
    /// Follow links (each must stay under the root).
    Follow,
    /// Follow links on the way, not a final one.
    NotFinal,
    /// Refuse any link (ELOOP).
    None,
}

/// Most links one path may go through (the kernel's own limit).
const MAX_LINK_HOPS: usize = 40;

fn io_err(op: &'static str, path: impl fmt::Display, errno: Errno) -> SysfsError {
    SysfsError::Io {
        op,
        path: path.to_string(),
        errno,
    }
}

fn io_errno(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

impl SysDir {
    fn open_root(root: &Path) -> Result<SysDir, SysfsError> {
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let open = || {
            nix::fcntl::open(root, flags, nix::sys::stat::Mode::empty())
                .map_err(|e| io_err("open", root.display(), e))
        };
        let fd = open()?;
        // Probe once per root: ENOSYS (old kernel) or EPERM (seccomp) mean no openat2.
        let probe = OpenHow::new()
            .flags(flags)
            .resolve(ResolveFlag::RESOLVE_BENEATH);
        let user_space_resolution = matches!(
            openat2(fd.as_fd(), ".", probe),
            Err(Errno::ENOSYS | Errno::EPERM)
        );
        Self::with_root(open()?, fd, root, user_space_resolution)
    }

    /// Opens a root that resolves paths in user space, as on kernels without openat2 (tests).
    #[doc(hidden)]
    pub fn open_root_without_openat2(root: &Path) -> Result<SysDir, SysfsError> {
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let open = || {
            nix::fcntl::open(root, flags, nix::sys::stat::Mode::empty())
                .map_err(|e| io_err("open", root.display(), e))
        };
        Self::with_root(open()?, open()?, root, true)
    }

    fn with_root(
        fd: OwnedFd,
        root_fd: OwnedFd,
        root: &Path,
        user_space_resolution: bool,
    ) -> Result<SysDir, SysfsError> {
        Ok(SysDir {
            fd,
            shared: Arc::new(Shared {
                root: root_fd,
                root_path: root.to_path_buf(),
                user_space_resolution,
            }),
            rel: RelPath::default(),
        })
    }

    /// The one place paths are opened: below `base` (this dir, or the root when `from_root`),
    /// never leaving the root.
    fn open_beneath(
        &self,
        from_root: bool,
        path: &str,
        flags: OFlag,
        links: Links,
    ) -> Result<(OwnedFd, Option<RelPath>), Errno> {
        let (base_fd, base_rel) = if from_root {
            (self.shared.root.as_fd(), RelPath::default())
        } else {
            (self.fd.as_fd(), self.rel.clone())
        };
        if !self.shared.user_space_resolution {
            let mut resolve = ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS;
            let mut flags = flags | OFlag::O_CLOEXEC;
            match links {
                Links::Follow => {}
                Links::NotFinal => flags |= OFlag::O_NOFOLLOW,
                Links::None => resolve |= ResolveFlag::RESOLVE_NO_SYMLINKS,
            }
            let how = OpenHow::new().flags(flags).resolve(resolve);
            let path = if path.is_empty() { "." } else { path };
            return openat2(base_fd, path, how).map(|fd| (fd, None));
        }
        let real = self.resolve_in_user_space(&base_rel, path, links)?;
        let at = if real.as_str().is_empty() {
            "."
        } else {
            real.as_str()
        };
        let fd = nix::fcntl::openat(
            self.shared.root.as_fd(),
            at,
            flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
            nix::sys::stat::Mode::empty(),
        )?;
        Ok((fd, Some(real)))
    }

    /// Walks `path` below `base` one component at a time from the root, expanding links
    /// lexically; EXDEV when anything leaves the root (as RESOLVE_BENEATH answers).
    fn resolve_in_user_space(
        &self,
        base: &RelPath,
        path: &str,
        links: Links,
    ) -> Result<RelPath, Errno> {
        let root = self.shared.root.as_fd();
        let mut done: Vec<String> = if base.as_str().is_empty() {
            Vec::new()
        } else {
            base.as_str().split('/').map(str::to_string).collect()
        };
        if path.starts_with('/') {
            return Err(Errno::EXDEV);
        }
        let mut todo: std::collections::VecDeque<String> =
            path.split('/').map(str::to_string).collect();
        let mut hops = 0;
        while let Some(part) = todo.pop_front() {
            match part.as_str() {
                "" | "." => continue,
                ".." => {
                    done.pop().ok_or(Errno::EXDEV)?;
                    continue;
                }
                _ => {}
            }
            let candidate = if done.is_empty() {
                part.clone()
            } else {
                format!("{}/{part}", done.join("/"))
            };
            let last = todo.iter().all(|p| p.is_empty() || p == ".");
            let stat = nix::sys::stat::fstatat(
                root,
                candidate.as_str(),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            );
            let is_link = matches!(stat, Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFLNK);
            if !is_link || (last && links == Links::NotFinal) {
                done.push(part);
                continue;
            }
            if links == Links::None {
                return Err(Errno::ELOOP);
            }
            hops += 1;
            if hops > MAX_LINK_HOPS {
                return Err(Errno::ELOOP);
            }
            let target = readlinkat(root, candidate.as_str())?;
            let target = String::from_utf8_lossy(OsStr::new(&target).as_bytes()).into_owned();
            if target.starts_with('/') {
                return Err(Errno::EXDEV);
            }
            for t in target.split('/').rev() {
                todo.push_front(t.to_string());
            }
        }
        Ok(RelPath(done.join("/")))
    }

    fn child(&self, fd: OwnedFd, rel: RelPath) -> SysDir {
        SysDir {
            fd,
            shared: self.shared.clone(),
            rel,
        }
    }

    /// This directory's path from the root.
    pub fn rel(&self) -> &RelPath {
        &self.rel
    }

    /// The absolute host path of `rel` (for messages and for handing to others).
    pub fn host_path(&self, rel: &RelPath) -> PathBuf {
        self.shared.root_path.join(rel.as_str())
    }

    /// Opens a directory by its path from the ROOT (links on the way may be followed, but
    /// none that leaves the root).
    pub fn open_from_root(&self, rel: &RelPath) -> Result<SysDir, SysfsError> {
        let (fd, real) = self
            .open_beneath(
                true,
                rel.as_str(),
                OFlag::O_PATH | OFlag::O_DIRECTORY,
                Links::Follow,
            )
            .map_err(|e| io_err("open", rel, e))?;
        Ok(self.child(fd, real.unwrap_or_else(|| rel.clone())))
    }

    /// Opens a plain (non-link) subdirectory.
    pub fn subdir(&self, name: &str) -> Result<SysDir, SysfsError> {
        let rel = self.rel.join(name);
        let (fd, _) = self
            .open_beneath(false, name, OFlag::O_PATH | OFlag::O_DIRECTORY, Links::None)
            .map_err(|e| io_err("open", &rel, e))?;
        Ok(self.child(fd, rel))
    }

    /// Names in this directory (or in a subdirectory of it), sorted, without `.`/`..`.
    pub fn list(&self, sub: Option<&str>) -> Result<Vec<String>, SysfsError> {
        let (path, rel) = match sub {
            Some(s) => (s, self.rel.join(s)),
            None => ("", self.rel.clone()),
        };
        let (fd, _) = self
            .open_beneath(
                false,
                path,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY,
                Links::Follow,
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
        let (fd, _) = self
            .open_beneath(false, name, OFlag::O_RDONLY, Links::Follow)
            .map_err(|e| io_err("open", &rel, e))?;
        // Attributes are at most a page: read page-sized chunks until a short read, and spare
        // the statx/lseek that read_to_end spends on sizing (sysfs reports 4096 anyway).
        let mut page = [0u8; 4096];
        let mut buf = Vec::new();
        loop {
            match nix::unistd::read(&fd, &mut page) {
                Ok(n) => {
                    buf.extend_from_slice(&page[..n]);
                    if n < page.len() {
                        break;
                    }
                }
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(io_err("read", &rel, e)),
            }
        }
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
        let (fd, _) = self
            .open_beneath(
                false,
                name,
                OFlag::O_WRONLY | OFlag::O_APPEND,
                Links::Follow,
            )
            .map_err(|e| io_err("open", &rel, e))?;
        let mut file = std::fs::File::from(fd);
        file.write(value.as_bytes())
            .map(|_| ())
            .map_err(|e| io_err("write", &rel, io_errno(&e)))
    }

    /// True when `name` exists here (without following a final link).
    pub fn exists(&self, name: &str) -> bool {
        self.open_beneath(false, name, OFlag::O_PATH, Links::NotFinal)
            .is_ok()
    }

    /// The raw text of the link `name` in this directory.
    pub fn read_link(&self, name: &str) -> Result<String, SysfsError> {
        let rel = self.rel.join(name);
        if name.contains('/') {
            // Only a name in this directory: a longer path could pass through links unchecked.
            return Err(io_err("readlink", &rel, Errno::EINVAL));
        }
        let target = readlinkat(self.fd.as_fd(), name).map_err(|e| io_err("readlink", &rel, e))?;
        Ok(String::from_utf8_lossy(OsStr::new(&target).as_bytes()).into_owned())
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

    /// Opens a bus entry: the link the kernel makes (followed as [`SysDir::follow`] does), or a
    /// plain directory where a synthetic tree has one.
    pub fn entry(&self, name: &str) -> Result<SysDir, SysfsError> {
        match self.follow(name) {
            Err(e) if e.errno() == Some(Errno::EINVAL) => self.subdir(name),
            other => other,
        }
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
