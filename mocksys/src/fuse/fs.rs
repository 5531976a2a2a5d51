//! The fuser [`Filesystem`]: translates kernel requests into [`SysBackend`] calls and nothing
//! more. Each handler calls a helper returning `Result<_, Errno>` and only turns that into a
//! reply, so no handler can panic on a missing node.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};

use super::FuseOptions;
use super::inval::CacheState;
use crate::backend::SysBackend;
use crate::errno::Errno;
use crate::tree::{Node, NodeKind, Tree};

pub(crate) struct SysFs {
    pub(crate) backend: Arc<dyn SysBackend>,
    pub(crate) cache: Arc<CacheState>,
    pub(crate) options: FuseOptions,
}

fn fuse_errno(e: Errno) -> fuser::Errno {
    fuser::Errno::from_i32(e.0)
}

impl SysFs {
    fn node<'t>(&self, tree: &'t Tree, ino: INodeNo) -> Result<(&'t str, &'t Node), Errno> {
        tree.by_ino(ino.0).ok_or(Errno::ENOENT)
    }

    fn attr(&self, tree: &Tree, path: &str, node: &Node) -> FileAttr {
        let (kind, size, nlink) = match &node.kind {
            NodeKind::Dir => {
                let subdirs = node
                    .children
                    .iter()
                    .filter(|c| tree.child(path, c).is_some_and(|(_, n)| n.is_dir()))
                    .count();
                (FileType::Directory, 0, 2 + subdirs as u32)
            }
            // Fast mode: the kernel's page cache serves `i_size` bytes and drops the page
            // whenever a GETATTR answers another size (one follows every READ, for atime), so
            // the size must be the content length there; strict mode reports sysfs's 4096.
            NodeKind::File { size, content } => {
                // A write-only attribute keeps 4096, so a read reaches us and gets EACCES.
                let size = if self.options.strict_open || !node.readable() {
                    *size
                } else {
                    content.len() as u64
                };
                (FileType::RegularFile, size, 1)
            }
            NodeKind::Symlink { .. } => (FileType::Symlink, 0, 1),
        };
        let mtime = self.cache.mtime(node.ino);
        FileAttr {
            ino: INodeNo(node.ino),
            size,
            blocks: 0,
            atime: mtime,
            mtime,
            ctime: mtime,
            crtime: mtime,
            kind,
            perm: node.perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    /// A negative entry: the kernel caches the absence for the TTL, and the change that adds
    /// the name invalidates it.
    fn negative_attr() -> FileAttr {
        FileAttr {
            ino: INodeNo(0),
            size: 0,
            blocks: 0,
            atime: SystemTime::UNIX_EPOCH,
            mtime: SystemTime::UNIX_EPOCH,
            ctime: SystemTime::UNIX_EPOCH,
            crtime: SystemTime::UNIX_EPOCH,
            kind: FileType::RegularFile,
            perm: 0,
            nlink: 0,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    fn lookup_attr(&self, parent: INodeNo, name: &OsStr) -> Result<Option<FileAttr>, Errno> {
        let tree = self.backend.tree();
        let (dir, node) = self.node(&tree, parent)?;
        if !node.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        let name = std::str::from_utf8(name.as_bytes()).map_err(|_| Errno::ENOENT)?;
        Ok(tree.child(dir, name).map(|(p, n)| self.attr(&tree, &p, n)))
    }

    fn getattr_of(&self, ino: INodeNo) -> Result<FileAttr, Errno> {
        let tree = self.backend.tree();
        let (path, node) = self.node(&tree, ino)?;
        Ok(self.attr(&tree, path, node))
    }

    /// A file the caller may use in `direction`; EACCES otherwise, as kernfs answers at open.
    fn file_for(&self, ino: INodeNo, read: bool, write: bool) -> Result<String, Errno> {
        let tree = self.backend.tree();
        let (path, node) = self.node(&tree, ino)?;
        match node.kind {
            NodeKind::File { .. } => {}
            NodeKind::Dir => return Err(Errno::EISDIR),
            NodeKind::Symlink { .. } => return Err(Errno::EINVAL),
        }
        if (read && !node.readable()) || (write && !node.writable()) {
            return Err(Errno::EACCES);
        }
        Ok(path.to_owned())
    }

    fn read_at(&self, ino: INodeNo, offset: u64, size: u32, pid: u32) -> Result<Vec<u8>, Errno> {
        let path = self.file_for(ino, true, false)?;
        let key = (ino.0, offset, pid);
        if !self.options.strict_open
            && let Some(errno) = self.cache.repeat_error(key)
        {
            return Err(errno);
        }
        let content = match self.backend.read(&path) {
            Ok(c) => c,
            Err(errno) => {
                if !self.options.strict_open {
                    self.cache.remember_failed_read(key, errno);
                }
                return Err(errno);
            }
        };
        let start = (offset as usize).min(content.len());
        let end = start.saturating_add(size as usize).min(content.len());
        Ok(content[start..end].to_vec())
    }

    fn write_all(&self, ino: INodeNo, data: &[u8]) -> Result<u32, Errno> {
        let path = self.file_for(ino, false, true)?;
        let result = self.backend.write(&path, data);
        // The written bytes may sit in the writer's page cache whatever the model did with
        // them (even when the content is unchanged), so the written inode is always marked
        // changed, inline and before the reply (an attribute-only invalidation; see `inval`).
        self.cache.touch(ino.0);
        result.map(|()| data.len() as u32)
    }

    fn truncate(&self, ino: INodeNo) -> Result<FileAttr, Errno> {
        // sysfs ignores truncation; refusing it on a read-only attribute is what makes
        // `echo x > ro_attr` fail at open in the fast mode, as on the kernel.
        self.file_for(ino, false, true)?;
        self.getattr_of(ino)
    }

    fn readlink_of(&self, ino: INodeNo) -> Result<Vec<u8>, Errno> {
        let tree = self.backend.tree();
        match &self.node(&tree, ino)?.1.kind {
            NodeKind::Symlink { target } => Ok(target.as_bytes().to_vec()),
            _ => Err(Errno::EINVAL),
        }
    }

    /// Directory entries: `(ino, kind, name, attributes)`, `.` and `..` first.
    fn entries(&self, ino: INodeNo) -> Result<Vec<(u64, FileType, String, FileAttr)>, Errno> {
        let tree = self.backend.tree();
        let (path, node) = self.node(&tree, ino)?;
        if !node.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        let parent_path = crate::tree::split(path).0;
        let (parent_path, parent) = match tree.get(parent_path) {
            Some(p) if !path.is_empty() => (parent_path, p),
            _ => (path, node),
        };
        let mut out = vec![
            (
                node.ino,
                FileType::Directory,
                ".".to_owned(),
                self.attr(&tree, path, node),
            ),
            (
                parent.ino,
                FileType::Directory,
                "..".to_owned(),
                self.attr(&tree, parent_path, parent),
            ),
        ];
        for name in &node.children {
            if let Some((child_path, child)) = tree.child(path, name) {
                let kind = match child.kind {
                    NodeKind::Dir => FileType::Directory,
                    NodeKind::File { .. } => FileType::RegularFile,
                    NodeKind::Symlink { .. } => FileType::Symlink,
                };
                let attr = self.attr(&tree, &child_path, child);
                out.push((child.ino, kind, name.clone(), attr));
            }
        }
        Ok(out)
    }
}

impl Filesystem for SysFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // Required: revalidating attributes drops the page cache when the mtime moved.
        if let Err(missing) = config.add_capabilities(InitFlags::FUSE_AUTO_INVAL_DATA) {
            return Err(io::Error::other(format!(
                "the kernel lacks FUSE capability {missing:?}; cached content could go stale"
            )));
        }
        // Optional: concurrent lookups in one directory; listings that carry attributes.
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        let _ = config
            .add_capabilities(InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.lookup_attr(parent, name) {
            Ok(Some(attr)) => reply.entry(&self.options.ttl, &attr, Generation(0)),
            Ok(None) => reply.entry(&self.options.ttl, &Self::negative_attr(), Generation(0)),
            Err(e) => reply.error(fuse_errno(e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.getattr_of(ino) {
            Ok(attr) => reply.attr(&self.options.ttl, &attr),
            Err(e) => reply.error(fuse_errno(e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let result = if mode.is_some() || uid.is_some() || gid.is_some() {
            Err(Errno::EPERM)
        } else if size.is_some() {
            self.truncate(ino)
        } else {
            self.getattr_of(ino)
        };
        match result {
            Ok(attr) => reply.attr(&self.options.ttl, &attr),
            Err(e) => reply.error(fuse_errno(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.readlink_of(ino) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(fuse_errno(e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if !self.options.strict_open {
            // The kernel stops sending OPEN (and RELEASE) and keeps the page cache.
            reply.error(fuser::Errno::ENOSYS);
            return;
        }
        let (read, write) = match flags.acc_mode() {
            OpenAccMode::O_RDONLY => (true, false),
            OpenAccMode::O_WRONLY => (false, true),
            OpenAccMode::O_RDWR => (true, true),
        };
        match self.file_for(ino, read, write) {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(fuse_errno(e)),
        }
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // No OPENDIR round trips; the kernel then caches listings (FOPEN_CACHE_DIR).
        reply.error(fuser::Errno::ENOSYS);
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.read_at(ino, offset, size, req.pid()) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(fuse_errno(e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.write_all(ino, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(fuse_errno(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.entries(ino) {
            Ok(entries) => {
                for (i, (child, kind, name, _)) in entries.iter().enumerate().skip(offset as usize)
                {
                    if reply.add(INodeNo(*child), i as u64 + 1, *kind, name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(fuse_errno(e)),
        }
    }

    /// Listing with attributes: `ls -l` and tools scanning a bus cost no LOOKUP per entry.
    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        match self.entries(ino) {
            Ok(entries) => {
                for (i, (child, _, name, attr)) in entries.iter().enumerate().skip(offset as usize)
                {
                    let ttl = &self.options.ttl;
                    if reply.add(
                        INodeNo(*child),
                        i as u64 + 1,
                        name,
                        ttl,
                        attr,
                        Generation(0),
                    ) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(fuse_errno(e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(0, 0, 0, 0, 0, 4096, 255, 4096);
    }
}

/// How long the kernel may trust entries and attributes without asking: practically forever,
/// since every change invalidates exactly what it touched.
pub(crate) const LONG_TTL: Duration = Duration::from_secs(24 * 3600);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{MemBackend, MemNode};

    fn fs(strict_open: bool) -> (SysFs, Arc<MemBackend>) {
        let backend = Arc::new(MemBackend::new());
        backend.set([
            (
                "d/ro".to_owned(),
                MemNode::Attr {
                    perm: 0o444,
                    content: b"0x8086\n".to_vec(),
                },
            ),
            (
                "d/wo".to_owned(),
                MemNode::Attr {
                    perm: 0o200,
                    content: Vec::new(),
                },
            ),
        ]);
        let fs = SysFs {
            backend: backend.clone(),
            cache: CacheState::new(backend.tree(), Duration::from_secs(1)),
            options: FuseOptions {
                strict_open,
                ..FuseOptions::default()
            },
        };
        (fs, backend)
    }

    fn ino(b: &MemBackend, path: &str) -> INodeNo {
        INodeNo(b.tree().get(path).expect(path).ino)
    }

    #[test]
    fn wrong_direction_and_kind_errors() {
        let (fs, b) = fs(true);
        assert_eq!(
            fs.file_for(ino(&b, "d/wo"), true, false),
            Err(Errno::EACCES)
        );
        assert_eq!(
            fs.file_for(ino(&b, "d/ro"), false, true),
            Err(Errno::EACCES)
        );
        assert_eq!(fs.file_for(ino(&b, "d"), true, false), Err(Errno::EISDIR));
        assert_eq!(fs.truncate(ino(&b, "d/ro")).unwrap_err(), Errno::EACCES);
        assert!(
            fs.truncate(ino(&b, "d/wo")).is_ok(),
            "O_TRUNC on a store is a no-op"
        );
        assert_eq!(fs.file_for(INodeNo(9999), true, false), Err(Errno::ENOENT));
    }

    #[test]
    fn lookups_are_negative_or_enotdir() {
        let (fs, b) = fs(false);
        assert!(
            fs.lookup_attr(ino(&b, "d"), OsStr::new("nope"))
                .unwrap()
                .is_none()
        );
        assert_eq!(
            fs.lookup_attr(ino(&b, "d/ro"), OsStr::new("x"))
                .unwrap_err(),
            Errno::ENOTDIR
        );
    }

    #[test]
    fn sizes_follow_the_open_mode() {
        let (strict, b) = fs(true);
        assert_eq!(strict.getattr_of(ino(&b, "d/ro")).unwrap().size, 4096);
        let (fast, b) = fs(false);
        assert_eq!(fast.getattr_of(ino(&b, "d/ro")).unwrap().size, 7);
        assert_eq!(fast.getattr_of(ino(&b, "d/wo")).unwrap().size, 4096);
    }

    #[test]
    fn reads_slice_by_offset_and_retries_repeat_a_failure_once() {
        let (fs, b) = fs(false);
        let ro = ino(&b, "d/ro");
        assert_eq!(fs.read_at(ro, 2, 100, 1).unwrap(), b"8086\n");
        assert_eq!(fs.read_at(ro, 50, 100, 1).unwrap(), b"");
        b.fail_next_read("d/ro", Errno::EIO);
        assert_eq!(fs.read_at(ro, 0, 4096, 7), Err(Errno::EIO));
        assert_eq!(
            fs.read_at(ro, 0, 4096, 8).unwrap(),
            b"0x8086\n",
            "another process"
        );
        assert_eq!(
            fs.read_at(ro, 0, 4096, 7),
            Err(Errno::EIO),
            "the kernel's retry"
        );
        assert_eq!(fs.read_at(ro, 0, 4096, 7).unwrap(), b"0x8086\n");
    }
}
