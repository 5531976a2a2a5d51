//! `statfs`/`fstatfs` on the synthetic `/sys` report sysfs's magic, for every program.
//!
//! libusb and systemd's sd-device (lsusb, udevadm, every libudev program) refuse a `/sys` whose
//! `f_type` is not `SYSFS_MAGIC`, and a FUSE mount reports FUSE's. An `LD_PRELOAD` shim would miss
//! static and Go binaries, so the answer is changed at the system call instead: the child installs
//! a seccomp filter (just before `execve`, so it covers the program, its threads and its children)
//! that turns these two calls into user notifications, and sends the listener to the parent over
//! a socket pair made before the clone. A supervisor thread in the parent resolves each call's
//! path or descriptor in the caller's own view (`/proc/TID/root`, `/cwd`, `/fd/N`); when it lands
//! on the synthetic sysfs (its device), the supervisor makes the real call, sets `f_type`, writes
//! the struct into the caller's memory (`process_vm_writev`) and answers 0. Anything else continues
//! to the kernel untouched, so errors (ENOENT, EBADF, EFAULT) stay the kernel's own.
//!
//! x86_64 has no `statfs64`/`fstatfs64` (those are 32-bit ABIs); calls from another ABI (i386,
//! x32) are left alone. The child side uses raw system calls on data built before the clone.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::spawn::SandboxError;

/// `f_type` of sysfs (`SYSFS_MAGIC` in linux/magic.h).
pub const SYSFS_MAGIC: i64 = 0x6265_6572;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7;

/// Linux's PATH_MAX: a longer path is the kernel's to refuse (ENAMETOOLONG).
const PATH_MAX: usize = 4096;

/// The BPF program and the `sock_fprog` that points into it (the Vec's buffer never moves).
pub(crate) struct Filter {
    _insns: Vec<libc::sock_filter>,
    prog: libc::sock_fprog,
}

/// What the child needs to install the filter and hand over its listener.
pub(crate) struct Install {
    filter: Filter,
    sock: RawFd,
}

/// The parent's half, for the waiter: its end of the socket pair, the child's end (closed
/// right after the clone, so a child that fails early is seen as gone), and the sysfs device.
pub(crate) struct Pending {
    parent: OwnedFd,
    child: OwnedFd,
    sys_dev: u64,
}

fn filter() -> Filter {
    use libc::{BPF_ABS, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W};
    let load = (BPF_LD | BPF_W | BPF_ABS) as u16;
    let jeq = (BPF_JMP | BPF_JEQ | BPF_K) as u16;
    let ret = (BPF_RET | BPF_K) as u16;
    // seccomp_data: nr at 0, arch at 4.
    // SAFETY: BPF_STMT/BPF_JUMP only build plain structs.
    let insns = unsafe {
        vec![
            libc::BPF_STMT(load, 4),
            libc::BPF_JUMP(jeq, AUDIT_ARCH, 0, 3),
            libc::BPF_STMT(load, 0),
            libc::BPF_JUMP(jeq, libc::SYS_statfs as u32, 2, 0),
            libc::BPF_JUMP(jeq, libc::SYS_fstatfs as u32, 1, 0),
            libc::BPF_STMT(ret, libc::SECCOMP_RET_ALLOW),
            libc::BPF_STMT(ret, libc::SECCOMP_RET_USER_NOTIF),
        ]
    };
    let prog = libc::sock_fprog {
        len: insns.len() as u16,
        filter: insns.as_ptr() as *mut libc::sock_filter,
    };
    Filter {
        _insns: insns,
        prog,
    }
}

/// Prepares both halves for a view whose sysfs is `sys`. The sysfs must be a filesystem of its
/// own (a FUSE mount is): its device is what marks a path as inside it.
pub(crate) fn prepare(sys: &Path) -> Result<(Install, Pending), SandboxError> {
    let dev = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.dev())
            .map_err(|source| SandboxError::Prepare {
                path: p.to_owned(),
                source,
            })
    };
    let sys_dev = dev(sys)?;
    if let Some(parent) = sys.parent()
        && dev(parent)? == sys_dev
    {
        return Err(SandboxError::Path {
            path: sys.to_owned(),
            reason: "reporting sysfs's statfs magic needs the node's sysfs to be a mount of its own",
        });
    }
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds is a valid array of two ints for socketpair to fill.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    } != 0
    {
        return Err(SandboxError::Io {
            what: "creating the socket pair for the statfs filter's listener",
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: socketpair succeeded; both descriptors are open and ours.
    let (parent, child) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((
        Install {
            filter: filter(),
            sock: child.as_raw_fd(),
        },
        Pending {
            parent,
            child,
            sys_dev,
        },
    ))
}

/// In the child, right before `execve`: installs the filter and sends its listener to the parent.
/// Raw system calls on prepared data only. On failure errno says why.
pub(crate) unsafe fn install(i: &Install) -> bool {
    unsafe {
        let seccomp = || {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
                &i.filter.prog as *const libc::sock_fprog,
            )
        };
        let mut fd = seccomp();
        // Without CAP_SYS_ADMIN a filter needs no_new_privs; with it, setuid programs keep working.
        if fd < 0 && *libc::__errno_location() == libc::EACCES {
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
            fd = seccomp();
        }
        if fd < 0 {
            return false;
        }
        let fd = fd as libc::c_int;
        #[repr(C, align(8))]
        struct Cmsg([u8; 32]);
        let mut control = Cmsg([0; 32]);
        let mut byte = [0u8; 1];
        let mut iov = libc::iovec {
            iov_base: byte.as_mut_ptr() as *mut libc::c_void,
            iov_len: 1,
        };
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.0.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = libc::CMSG_SPACE(4) as usize;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(4) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut libc::c_int, fd);
        let sent = libc::sendmsg(i.sock, &msg, 0) == 1;
        libc::close(fd);
        sent
    }
}

/// In the waiter, right after the clone: waits for the child's listener (none if the child
/// failed before sending it) and starts the supervisor thread that answers it.
pub(crate) fn start(pending: Pending) -> io::Result<()> {
    let Pending {
        parent,
        child,
        sys_dev,
    } = pending;
    drop(child);
    let Some(listener) = receive(&parent)? else {
        return Ok(());
    };
    std::thread::Builder::new()
        .name("sandbox-statfs".into())
        .spawn(move || supervise(&listener, sys_dev))?;
    Ok(())
}

fn receive(sock: &OwnedFd) -> io::Result<Option<OwnedFd>> {
    #[repr(C, align(8))]
    struct Cmsg([u8; 32]);
    let mut control = Cmsg([0; 32]);
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr() as *mut libc::c_void,
        iov_len: 1,
    };
    loop {
        // SAFETY: msg points at live buffers of the sizes given; the kernel fills them.
        unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.0.as_mut_ptr() as *mut libc::c_void;
            msg.msg_controllen = control.0.len();
            let n = libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                return Ok(None);
            }
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            if cmsg.is_null()
                || (*cmsg).cmsg_level != libc::SOL_SOCKET
                || (*cmsg).cmsg_type != libc::SCM_RIGHTS
            {
                return Err(io::Error::other(
                    "the child's message carried no seccomp listener",
                ));
            }
            let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::c_int);
            return Ok(Some(OwnedFd::from_raw_fd(fd)));
        }
    }
}

/// Answers notifications until every process under the filter is gone (POLLHUP).
fn supervise(listener: &OwnedFd, sys_dev: u64) {
    let fd = listener.as_raw_fd();
    loop {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, -1) } < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if pfd.revents & libc::POLLIN == 0 {
            // POLLHUP: the filter has no users left.
            return;
        }
        // SAFETY: the kernel wants a zeroed seccomp_notif to fill.
        let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: req is a seccomp_notif, as SECCOMP_IOCTL_NOTIF_RECV takes.
        if unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_RECV, &mut req) } != 0 {
            match io::Error::last_os_error().raw_os_error() {
                // The caller died or was interrupted before we read it.
                Some(libc::ENOENT) | Some(libc::EINTR) => continue,
                _ => return,
            }
        }
        let mut resp = libc::seccomp_notif_resp {
            id: req.id,
            val: 0,
            error: 0,
            flags: 0,
        };
        match answer(fd, &req, sys_dev) {
            Answer::Continue => resp.flags = libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
            Answer::Done => {}
            Answer::Errno(e) => resp.error = -e,
        }
        // SAFETY: resp is a seccomp_notif_resp for the request just received. ENOENT (the
        // caller is gone) needs nothing more.
        unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_SEND, &resp) };
    }
}

enum Answer {
    /// Not the synthetic sysfs (or not resolvable): the kernel performs the call.
    Continue,
    /// The struct is written; the call returns 0.
    Done,
    Errno(i32),
}

fn id_valid(listener: RawFd, id: u64) -> bool {
    // SAFETY: the ioctl reads one u64.
    unsafe { libc::ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_ID_VALID, &id) == 0 }
}

fn open(path: &CStr, flags: libc::c_int) -> Option<OwnedFd> {
    // SAFETY: path is NUL-terminated; a non-negative result is a descriptor we own.
    let fd = unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) };
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

fn proc_path(tid: u32, rest: &str) -> std::ffi::CString {
    std::ffi::CString::new(format!("/proc/{tid}/{rest}")).expect("no NUL in a /proc path")
}

fn answer(listener: RawFd, req: &libc::seccomp_notif, sys_dev: u64) -> Answer {
    let tid = req.pid;
    let target = if i64::from(req.data.nr) == libc::SYS_statfs {
        let (Some(root), Some(cwd)) = (
            open(&proc_path(tid, "root"), libc::O_PATH | libc::O_DIRECTORY),
            open(&proc_path(tid, "cwd"), libc::O_PATH | libc::O_DIRECTORY),
        ) else {
            return Answer::Continue;
        };
        let Some(path) = read_path(tid, req.data.args[0]) else {
            return Answer::Continue;
        };
        // The descriptors and the path above are the caller's only if its TID was not reused
        // meanwhile, i.e. if the request is still pending.
        if !id_valid(listener, req.id) {
            return Answer::Continue;
        }
        resolve(&root, &cwd, &path)
    } else {
        let Ok(n) = i32::try_from(req.data.args[0]) else {
            return Answer::Continue;
        };
        let fd = open(&proc_path(tid, &format!("fd/{n}")), libc::O_PATH);
        if !id_valid(listener, req.id) {
            return Answer::Continue;
        }
        fd
    };
    let Some(target) = target else {
        return Answer::Continue;
    };
    // SAFETY: zeroed stat/statfs are valid out-parameters; target is an open descriptor.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(target.as_raw_fd(), &mut st) } != 0 || st.st_dev != sys_dev {
        return Answer::Continue;
    }
    let mut sfs: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(target.as_raw_fd(), &mut sfs) } != 0 {
        return Answer::Errno(
            io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
        );
    }
    sfs.f_type = SYSFS_MAGIC as _;
    // SAFETY: libc::statfs is plain data; its bytes are what the caller's struct holds.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            &sfs as *const libc::statfs as *const u8,
            std::mem::size_of::<libc::statfs>(),
        )
    };
    // Written only while the request is still the caller's (it may have been killed and its
    // memory reused by another process with the same TID).
    if !id_valid(listener, req.id) {
        return Answer::Continue;
    }
    match vm_io(
        tid,
        req.data.args[1],
        bytes.as_ptr() as *mut u8,
        bytes.len(),
        true,
    ) {
        Some(n) if n == bytes.len() => Answer::Done,
        _ => Answer::Errno(libc::EFAULT),
    }
}

/// Copies `len` bytes between `buf` here and `addr` in `tid`'s memory; the count copied.
/// Unlike `/proc/TID/mem`, these honour the page protections, so a buffer the caller could
/// not write (or a path it could not read) gets the kernel's EFAULT.
fn vm_io(tid: u32, addr: u64, buf: *mut u8, len: usize, write: bool) -> Option<usize> {
    let local = libc::iovec {
        iov_base: buf as *mut libc::c_void,
        iov_len: len,
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: local covers len bytes of ours; the remote side is checked by the kernel.
    let n = unsafe {
        if write {
            libc::process_vm_writev(tid as libc::pid_t, &local, 1, &remote, 1, 0)
        } else {
            libc::process_vm_readv(tid as libc::pid_t, &local, 1, &remote, 1, 0)
        }
    };
    usize::try_from(n).ok()
}

/// The NUL-terminated path at `addr` in the caller's memory, read a page at most at a time
/// (the string may end just before an unmapped page).
fn read_path(tid: u32, addr: u64) -> Option<std::ffi::CString> {
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() < PATH_MAX {
        let chunk = (4096 - (at % 4096)) as usize;
        let mut buf = vec![0u8; chunk];
        let n = vm_io(tid, at, buf.as_mut_ptr(), chunk, false)?;
        if n == 0 {
            return None;
        }
        if let Some(end) = buf[..n].iter().position(|&b| b == 0) {
            out.extend_from_slice(&buf[..end]);
            return std::ffi::CString::new(out).ok();
        }
        out.extend_from_slice(&buf[..n]);
        at += n as u64;
    }
    None
}

/// Opens `path` (O_PATH, following a final symlink as statfs does) as the caller would: an
/// absolute path inside its root (absolute symlinks too), a relative one from its cwd.
fn resolve(root: &OwnedFd, cwd: &OwnedFd, path: &CStr) -> Option<OwnedFd> {
    let absolute = path.to_bytes().first() == Some(&b'/');
    // SAFETY: open_how is plain data; zero is "no flags" for every field.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
    how.resolve = if absolute { libc::RESOLVE_IN_ROOT } else { 0 };
    let dir = if absolute { root } else { cwd };
    // SAFETY: how is a valid open_how of the size given; path is NUL-terminated.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}
