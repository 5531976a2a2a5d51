//! Errno values as the kernel returns them, independent of any front end.

use std::fmt;

/// An errno the model returns; front ends pass it through unchanged.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

impl Errno {
    pub const EPERM: Errno = Errno(libc::EPERM);
    pub const ENOENT: Errno = Errno(libc::ENOENT);
    pub const EIO: Errno = Errno(libc::EIO);
    pub const EACCES: Errno = Errno(libc::EACCES);
    pub const EBUSY: Errno = Errno(libc::EBUSY);
    pub const EEXIST: Errno = Errno(libc::EEXIST);
    pub const ENODEV: Errno = Errno(libc::ENODEV);
    pub const ENOTDIR: Errno = Errno(libc::ENOTDIR);
    pub const EISDIR: Errno = Errno(libc::EISDIR);
    pub const EINVAL: Errno = Errno(libc::EINVAL);
    pub const ENOSPC: Errno = Errno(libc::ENOSPC);
    pub const ERANGE: Errno = Errno(libc::ERANGE);
    pub const ENOSYS: Errno = Errno(libc::ENOSYS);
    pub const EUSERS: Errno = Errno(libc::EUSERS);
    pub const ETIMEDOUT: Errno = Errno(libc::ETIMEDOUT);
    pub const EAGAIN: Errno = Errno(libc::EAGAIN);
    pub const ENXIO: Errno = Errno(libc::ENXIO);
    pub const ENOMEM: Errno = Errno(libc::ENOMEM);

    /// The symbolic name (`EBUSY`), as scenarios and messages spell it.
    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(_, e)| *e == self)
            .map(|(n, _)| *n)
            .unwrap_or("E?")
    }

    /// Parses `EBUSY` (any case) or a number.
    pub fn from_name(s: &str) -> Option<Errno> {
        let up = s.trim().to_ascii_uppercase();
        if let Some((_, e)) = NAMES.iter().find(|(n, _)| *n == up) {
            return Some(*e);
        }
        up.parse::<i32>().ok().filter(|n| *n > 0).map(Errno)
    }
}

const NAMES: &[(&str, Errno)] = &[
    ("EPERM", Errno::EPERM),
    ("ENOENT", Errno::ENOENT),
    ("EIO", Errno::EIO),
    ("EACCES", Errno::EACCES),
    ("EBUSY", Errno::EBUSY),
    ("EEXIST", Errno::EEXIST),
    ("ENODEV", Errno::ENODEV),
    ("ENOTDIR", Errno::ENOTDIR),
    ("EISDIR", Errno::EISDIR),
    ("EINVAL", Errno::EINVAL),
    ("ENOSPC", Errno::ENOSPC),
    ("ERANGE", Errno::ERANGE),
    ("ENOSYS", Errno::ENOSYS),
    ("EUSERS", Errno::EUSERS),
    ("ETIMEDOUT", Errno::ETIMEDOUT),
    ("EAGAIN", Errno::EAGAIN),
    ("ENXIO", Errno::ENXIO),
    ("ENOMEM", Errno::ENOMEM),
];

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({})",
            self.name(),
            std::io::Error::from_raw_os_error(self.0)
        )
    }
}

impl std::error::Error for Errno {}

impl From<Errno> for std::io::Error {
    fn from(e: Errno) -> Self {
        std::io::Error::from_raw_os_error(e.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn names_round_trip() {
        for (n, e) in NAMES {
            assert_eq!(Errno::from_name(n), Some(*e));
            assert_eq!(e.name(), *n);
        }
        assert_eq!(Errno::from_name("ebusy"), Some(Errno::EBUSY));
        assert_eq!(Errno::from_name("5"), Some(Errno::EIO));
        assert_eq!(Errno::from_name("EWHAT"), None);
    }
}
