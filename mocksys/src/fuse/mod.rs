//! A real FUSE mount of a `/sys`-shaped root that only translates a [`SysBackend`].
//!
//! ## Caching
//! The kernel keeps entries, attributes and content cached for a long TTL and is told exactly
//! what each change touched ([`inval`]), so unchanged attributes are served from the page cache
//! with no round trip and nothing is ever stale.
//!
//! ## Open modes ([`FuseOptions::strict_open`])
//! - **fast** (the default): `open` and `flush` answer ENOSYS, so the kernel stops sending them
//!   and keeps the page cache across opens; repeated reads cost no round trip at all.
//!   Wrong-direction access fails with EACCES at the first `read`/`write` instead of at `open`,
//!   and at the truncating `setattr` that `O_TRUNC` sends, so `echo x > read_only_attr` still
//!   fails when the shell opens the file. `stat` reports a text attribute's real content
//!   length instead of sysfs's 4096: a page-cache read returns `i_size` bytes (the kernel pads
//!   a short page with zeros, then shrinks `i_size` to the short read), and every READ is
//!   followed by a GETATTR (the atime it invalidates); answering 4096 there would make the
//!   kernel drop the page each time, i.e. a READ round trip per read. Measured: repeated reads
//!   went from ~80 us (4096) to plain-directory speed (content length).
//! - **strict**: `open` is answered like kernfs (EACCES for the wrong direction at open, even
//!   for root), files are opened with `FOPEN_DIRECT_IO` (every read asks the backend, so `stat`
//!   stays at 4096), at the price of an OPEN and a RELEASE round trip per open.
//!
//! Fast is the default because the workload that matters (an agent re-reading attributes that
//! did not change) then costs what a plain directory costs, and no program we emulate relies on
//! EACCES arriving at `open` rather than at the first read, or on `st_size` of an attribute.
//!
//! ## Unmounting
//! [`FuseMount`] unmounts on drop and never hangs: a plain unmount first, a lazy detach
//! (`MNT_DETACH`) if the mount is busy, then aborting the connection through `fusectl` if the
//! serving threads have not ended within [`FuseOptions::unmount_wait`] (a handler stuck or a
//! thread that panicked), and finally leaving the thread behind with a warning.

mod fs;
mod inval;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fuser::{BackgroundSession, Config, MountOption, Session, SessionACL};

use crate::backend::SysBackend;
use fs::SysFs;
use inval::CacheState;

/// How the FUSE front serves.
#[derive(Clone, Debug)]
pub struct FuseOptions {
    /// Answer `open` like kernfs (EACCES at open, direct I/O) instead of the fast mode.
    pub strict_open: bool,
    /// Request-serving threads; at least 2 so an entry invalidation never waits on itself.
    pub threads: usize,
    /// Entry and attribute TTL handed to the kernel.
    pub ttl: Duration,
    /// Longest a changing thread waits for entry invalidations.
    pub inval_wait: Duration,
    /// Longest each unmount step waits for the serving threads to end.
    pub unmount_wait: Duration,
}

impl Default for FuseOptions {
    fn default() -> Self {
        FuseOptions {
            strict_open: false,
            threads: 4,
            ttl: fs::LONG_TTL,
            inval_wait: Duration::from_secs(2),
            unmount_wait: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FuseError {
    #[error("cannot mount the FUSE sysfs at {path}: {source}")]
    Mount { path: PathBuf, source: io::Error },
    #[error("FUSE is not available: {0} is missing")]
    NoFuse(PathBuf),
}

/// A mounted FUSE sysfs. Dropping it unmounts.
pub struct FuseMount {
    path: PathBuf,
    session: Option<BackgroundSession>,
    cache: Arc<CacheState>,
    /// The FUSE connection number (the mount's device minor), to abort a stuck connection.
    connection: Option<u32>,
    unmount_wait: Duration,
}

impl FuseMount {
    /// Mounts `backend` at `dir` (an existing directory) and serves it from background threads.
    pub fn mount(
        backend: Arc<dyn SysBackend>,
        dir: &Path,
        options: FuseOptions,
    ) -> Result<FuseMount, FuseError> {
        if !Path::new("/dev/fuse").exists() {
            return Err(FuseError::NoFuse("/dev/fuse".into()));
        }
        let mount_err = |source| FuseError::Mount {
            path: dir.to_owned(),
            source,
        };
        let path = dir.canonicalize().map_err(mount_err)?;
        let cache = CacheState::new(backend.tree(), options.inval_wait);
        let subscriber = cache.clone();
        backend.subscribe(Box::new(move |change| subscriber.on_change(change)));

        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("mocksys".into()),
            MountOption::Subtype("sysfs".into()),
            MountOption::NoSuid,
            MountOption::NoDev,
            MountOption::NoAtime,
        ];
        config.acl = SessionACL::All;
        config.n_threads = Some(options.threads.max(2));
        let unmount_wait = options.unmount_wait;
        let fs = SysFs {
            backend,
            cache: cache.clone(),
            options,
        };
        let session = match Session::new(fs, &path, &config) {
            Ok(s) => s,
            Err(e) => {
                cache.close();
                return Err(mount_err(e));
            }
        };
        cache.set_notifier(session.notifier());
        let session = match session.spawn() {
            Ok(s) => s,
            Err(e) => {
                cache.close();
                return Err(mount_err(e));
            }
        };
        let connection = mounted_fuse_device(&path).map(|(_, minor)| minor);
        Ok(FuseMount {
            path,
            session: Some(session),
            cache,
            connection,
            unmount_wait,
        })
    }

    /// The mount point (canonical).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Unmounts now (what drop does), reporting how it went.
    pub fn unmount(mut self) -> UnmountReport {
        self.shutdown()
    }

    fn shutdown(&mut self) -> UnmountReport {
        let mut report = UnmountReport::default();
        let Some(session) = self.session.take() else {
            return report;
        };
        self.cache.close();
        // Moving the thread handle out drops the rest of the session, which unmounts.
        let guard: JoinHandle<io::Result<()>> = {
            let session = session;
            session.guard
        };
        if mounted_fuse_device(&self.path).is_some() {
            report.detached = true;
            if let Err(e) = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH) {
                tracing::warn!(path = %self.path.display(), "lazy unmount failed: {e}");
            }
        }
        if !wait_finished(&guard, self.unmount_wait)
            && let Some(conn) = self.connection
        {
            report.aborted = true;
            if let Err(e) = abort_connection(conn) {
                tracing::warn!(conn, "cannot abort the FUSE connection: {e}");
            }
            wait_finished(&guard, self.unmount_wait);
        }
        if guard.is_finished() {
            match guard.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => report.serving_error = Some(e.to_string()),
                Err(_) => report.serving_error = Some("a serving thread panicked".into()),
            }
        } else {
            report.abandoned = true;
            tracing::warn!(path = %self.path.display(), "serving threads still busy; left behind");
        }
        report
    }
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What unmounting had to do.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UnmountReport {
    /// The mount was busy and was detached lazily.
    pub detached: bool,
    /// The serving threads did not end in time and the connection was aborted.
    pub aborted: bool,
    /// The serving threads were still running at the end and were left behind.
    pub abandoned: bool,
    /// The serving loop ended with an error (or panicked).
    pub serving_error: Option<String>,
}

fn wait_finished<T>(guard: &JoinHandle<T>, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    while !guard.is_finished() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    true
}

/// True when a FUSE file system is mounted at `path` (read from mountinfo).
pub fn is_mounted(path: &Path) -> bool {
    mounted_fuse_device(path).is_some()
}

/// The `(major, minor)` device of the FUSE mount at `path`, if one is mounted there (read
/// from mountinfo, never by touching the mount itself, which may be stuck). The calling
/// thread's mountinfo: a thread may live in a mount namespace of its own.
pub(crate) fn mounted_fuse_device(path: &Path) -> Option<(u32, u32)> {
    let info = std::fs::read_to_string("/proc/thread-self/mountinfo").ok()?;
    let want = path.to_string_lossy().replace(' ', "\\040");
    info.lines().rev().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fields: Vec<&str> = left.split(' ').collect();
        if fields.get(4) != Some(&want.as_str()) || !right.starts_with("fuse") {
            return None;
        }
        let (major, minor) = fields.get(2)?.split_once(':')?;
        Some((major.parse().ok()?, minor.parse().ok()?))
    })
}

/// Aborts FUSE connection `conn` through fusectl, mounting fusectl privately if needed.
fn abort_connection(conn: u32) -> io::Result<()> {
    let standard = Path::new("/sys/fs/fuse/connections");
    let abort = standard.join(conn.to_string()).join("abort");
    if abort.exists() {
        return std::fs::write(abort, "1");
    }
    let dir = std::env::temp_dir().join(format!("mocksys-fusectl-{}-{conn}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mounted = nix::mount::mount(
        Some("fusectl"),
        &dir,
        Some("fusectl"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    );
    let result = match mounted {
        Ok(()) => {
            let r = std::fs::write(dir.join(conn.to_string()).join("abort"), "1");
            let _ = nix::mount::umount2(&dir, nix::mount::MntFlags::MNT_DETACH);
            r
        }
        Err(e) => Err(e.into()),
    };
    let _ = std::fs::remove_dir(&dir);
    result
}
