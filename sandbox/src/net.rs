//! The network side of a node: a private network namespace for the calling thread, with its
//! loopback interface up (a fresh namespace starts with `lo` down, so even 127.0.0.1 is
//! unreachable, which no real node has).

use std::io;

/// Moves the calling thread (and the threads and children it starts afterwards) into a new
/// network namespace and brings its loopback up. Needs root.
pub fn enter_private_network() -> io::Result<()> {
    // SAFETY: unshare only changes the calling thread's namespaces.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    loopback_up()
}

/// Sets `lo` up in the calling thread's network namespace (no-op when it already is).
pub fn loopback_up() -> io::Result<()> {
    // SAFETY: a plain datagram socket, used only for the interface ioctls, then closed.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a zeroed ifreq with a NUL-terminated name is valid for SIOCGIFFLAGS/SIOCSIFFLAGS.
    let result = unsafe {
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) != 0 {
            Err(io::Error::last_os_error())
        } else {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) != 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        }
    };
    // SAFETY: fd is ours and open.
    unsafe { libc::close(fd) };
    result
}
