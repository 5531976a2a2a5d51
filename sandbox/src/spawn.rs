//! [`Command`] and [`Child`]: a process cloned straight into new mount and PID namespaces.
//!
//! The clone is made by a thread of its own (the *waiter*) that lives exactly as long as the child:
//! `PR_SET_PDEATHSIG` fires when the creating thread ends, so a child made by a short-lived thread
//! would be killed early, and one made by a thread of a killed process dies with it. The waiter
//! reaps the child and records its status under the lock that [`Child::signal`] takes, so a signal
//! never reaches a recycled PID.
//!
//! The child is a clone of a multi-threaded process: until `execve` it calls only raw system
//! calls on data prepared before the clone (no allocation, no locks). A step that fails reports
//! its index and errno through a close-on-exec pipe, which stays silent when `execve` succeeds.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

use crate::seccomp;
use crate::view::{NodeView, Op, cstring, plan};

/// Stack for the child until `execve` (it runs only the short plan).
const CHILD_STACK: usize = 256 * 1024;
/// The step index reported when `execve` itself fails.
const EXEC_STEP: u32 = u32::MAX;
/// The step index reported when installing the statfs filter fails.
const SECCOMP_STEP: u32 = u32::MAX - 1;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{path}: {reason}")]
    Path { path: PathBuf, reason: &'static str },
    #[error("preparing {path}: {source}")]
    Prepare { path: PathBuf, source: io::Error },
    #[error("{program}: not found (searched PATH={path})")]
    NotFound { program: String, path: String },
    #[error("cannot create the mount and PID namespaces (needs root): {0}")]
    Clone(io::Error),
    #[error("setting up the node's view failed while {step}: {source}")]
    Setup { step: String, source: io::Error },
    #[error("cannot execute {program}: {source}")]
    Exec { program: String, source: io::Error },
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: io::Error,
    },
}

/// Where one of the child's standard streams goes.
#[derive(Debug)]
pub enum Stdio {
    Inherit,
    Null,
    /// A pipe; the parent's end is on [`Child`].
    Pipe,
    File(File),
}

type OnExit = Box<dyn FnOnce(ExitStatus) + Send>;

/// A command to run in a node's view, built like `std::process::Command`.
pub struct Command {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    env_clear: bool,
    cwd: Option<PathBuf>,
    stdio: [Stdio; 3],
    on_exit: Option<OnExit>,
}

impl Command {
    /// `program` is looked up on the child's `PATH` unless it contains a `/`.
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Command {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            env_clear: false,
            cwd: None,
            stdio: [Stdio::Inherit, Stdio::Inherit, Stdio::Inherit],
            on_exit: None,
        }
    }

    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(&mut self, args: I) -> &mut Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Start from an empty environment instead of the caller's.
    pub fn env_clear(&mut self) -> &mut Self {
        self.env_clear = true;
        self
    }

    pub fn current_dir(&mut self, dir: impl Into<PathBuf>) -> &mut Self {
        self.cwd = Some(dir.into());
        self
    }

    pub fn stdin(&mut self, s: Stdio) -> &mut Self {
        self.stdio[0] = s;
        self
    }

    pub fn stdout(&mut self, s: Stdio) -> &mut Self {
        self.stdio[1] = s;
        self
    }

    pub fn stderr(&mut self, s: Stdio) -> &mut Self {
        self.stdio[2] = s;
        self
    }

    /// Called once, on the waiter thread, with the status when the child has exited.
    pub fn on_exit(&mut self, f: impl FnOnce(ExitStatus) + Send + 'static) -> &mut Self {
        self.on_exit = Some(Box::new(f));
        self
    }

    /// The argv the child gets (`argv[0]` as given).
    pub fn argv(&self) -> Vec<OsString> {
        std::iter::once(self.program.clone())
            .chain(self.args.iter().cloned())
            .collect()
    }

    /// Starts the command in `view`. Returns once the child has exec'd, or with the step of the
    /// plan (or the exec) that failed.
    pub fn spawn(&mut self, view: &NodeView) -> Result<Child, SandboxError> {
        let ops = plan(view)?;
        // Kept here because the ops move into the child's context: a failure names its step.
        let steps: Vec<String> = ops.iter().map(Op::describe).collect();
        let env = self.child_env();
        let program = resolve(&self.program, &env, self.cwd.as_deref())?;
        let program_name = self.program.to_string_lossy().into_owned();

        let mut parent_ends: [Option<File>; 3] = [None, None, None];
        let mut child_ends: Vec<OwnedFd> = Vec::new();
        let mut stdio_fds: [RawFd; 3] = [-1; 3];
        for (i, s) in std::mem::replace(
            &mut self.stdio,
            [Stdio::Inherit, Stdio::Inherit, Stdio::Inherit],
        )
        .into_iter()
        .enumerate()
        {
            let fd: Option<OwnedFd> = match s {
                Stdio::Inherit => None,
                Stdio::Null => Some(
                    File::options()
                        .read(i == 0)
                        .write(i != 0)
                        .open("/dev/null")
                        .map_err(|source| SandboxError::Io {
                            what: "opening /dev/null",
                            source,
                        })?
                        .into(),
                ),
                Stdio::File(f) => Some(f.into()),
                Stdio::Pipe => {
                    let (read, write) = pipe()?;
                    let (mine, theirs) = if i == 0 { (write, read) } else { (read, write) };
                    parent_ends[i] = Some(File::from(mine));
                    Some(theirs)
                }
            };
            if let Some(fd) = fd {
                stdio_fds[i] = fd.as_raw_fd();
                child_ends.push(fd);
            }
        }

        let (err_read, err_write) = pipe()?;
        let ctx = ChildCtx::new(ops, &program, &self.argv(), &env, self.cwd.as_deref()).map(
            |mut c| {
                c.stdio = stdio_fds;
                c.err_fd = err_write.as_raw_fd();
                c
            },
        )?;
        let mut ctx = ctx;
        if view.sysfs_magic {
            let (install, pending) = seccomp::prepare(&view.sys)?;
            ctx.seccomp = Some(install);
            ctx.seccomp_pending = Some(pending);
        }
        let shared = Arc::new(Shared::default());
        let (tx, rx) = mpsc::channel();
        let waiter_shared = shared.clone();
        let on_exit = self.on_exit.take();
        let spawned = std::thread::Builder::new()
            .name("sandbox-waiter".into())
            .spawn(move || {
                waiter(
                    ctx,
                    err_read,
                    err_write,
                    child_ends,
                    tx,
                    waiter_shared,
                    on_exit,
                )
            });
        if let Err(source) = spawned {
            return Err(SandboxError::Io {
                what: "starting the waiter thread",
                source,
            });
        }
        let started = rx.recv().unwrap_or(Err(Started::Clone(io::Error::other(
            "the waiter thread ended without a word",
        ))));
        match started {
            Ok(pid) => Ok(Child {
                pid,
                shared,
                stdin: parent_ends[0].take(),
                stdout: parent_ends[1].take(),
                stderr: parent_ends[2].take(),
            }),
            Err(Started::Clone(e)) => Err(SandboxError::Clone(e)),
            Err(Started::Failed { step, errno }) => {
                let source = io::Error::from_raw_os_error(errno);
                Err(if step == EXEC_STEP {
                    SandboxError::Exec {
                        program: program_name,
                        source,
                    }
                } else {
                    SandboxError::Setup {
                        step: step_text(&steps, step),
                        source,
                    }
                })
            }
        }
    }

    fn child_env(&self) -> Vec<(OsString, OsString)> {
        let mut env: Vec<(OsString, OsString)> = if self.env_clear {
            Vec::new()
        } else {
            std::env::vars_os().collect()
        };
        for (k, v) in &self.env {
            env.retain(|(ek, _)| ek != k);
            env.push((k.clone(), v.clone()));
        }
        env
    }
}

/// What the failed step of the plan was doing.
fn step_text(steps: &[String], step: u32) -> String {
    if step == SECCOMP_STEP {
        return "installing the statfs filter (seccomp user notification)".into();
    }
    steps
        .get(step as usize)
        .cloned()
        .unwrap_or_else(|| format!("step {step}"))
}

/// `program` as an executable path: as given when it holds a `/`, else the first hit on `PATH`.
fn resolve(
    program: &OsStr,
    env: &[(OsString, OsString)],
    cwd: Option<&Path>,
) -> Result<PathBuf, SandboxError> {
    if program.as_bytes().contains(&b'/') {
        let p = PathBuf::from(program);
        return Ok(match cwd {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p,
        });
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(program);
        if let Ok(m) = std::fs::metadata(&candidate)
            && m.is_file()
            && m.permissions().mode() & 0o111 != 0
        {
            return Ok(candidate);
        }
    }
    Err(SandboxError::NotFound {
        program: program.to_string_lossy().into_owned(),
        path: path.to_string_lossy().into_owned(),
    })
}

fn pipe() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(SandboxError::Io {
            what: "creating a pipe",
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and ours.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Everything the child needs, prepared before the clone.
struct ChildCtx {
    ops: Vec<Op>,
    program: CString,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
    cwd: Option<CString>,
    /// The descriptor each of 0, 1, 2 becomes, or -1 to inherit.
    stdio: [RawFd; 3],
    err_fd: RawFd,
    /// Installed right before `execve` when the view wants sysfs's statfs magic.
    seccomp: Option<seccomp::Install>,
    /// The parent's half of that; taken by the waiter before the clone.
    seccomp_pending: Option<seccomp::Pending>,
}

// SAFETY: the raw pointers point into the CStrings owned by the same struct, which moves whole.
unsafe impl Send for ChildCtx {}

impl ChildCtx {
    fn new(
        ops: Vec<Op>,
        program: &Path,
        argv: &[OsString],
        env: &[(OsString, OsString)],
        cwd: Option<&Path>,
    ) -> Result<ChildCtx, SandboxError> {
        let nul = |what: &OsStr| SandboxError::Path {
            path: PathBuf::from(what),
            reason: "an argument or environment entry contains a NUL byte",
        };
        let argv: Vec<CString> = argv
            .iter()
            .map(|a| CString::new(a.as_bytes()).map_err(|_| nul(a)))
            .collect::<Result<_, _>>()?;
        let envp: Vec<CString> = env
            .iter()
            .map(|(k, v)| {
                let mut kv = k.as_bytes().to_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                CString::new(kv).map_err(|_| nul(k))
            })
            .collect::<Result<_, _>>()?;
        let ptrs = |v: &[CString]| {
            v.iter()
                .map(|c| c.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect::<Vec<_>>()
        };
        Ok(ChildCtx {
            ops,
            program: cstring(program)?,
            argv_ptrs: ptrs(&argv),
            envp_ptrs: ptrs(&envp),
            _argv: argv,
            _envp: envp,
            cwd: cwd.map(cstring).transpose()?,
            stdio: [-1; 3],
            err_fd: -1,
            seccomp: None,
            seccomp_pending: None,
        })
    }
}

enum Started {
    Clone(io::Error),
    Failed { step: u32, errno: i32 },
}

#[derive(Default)]
struct Shared {
    status: Mutex<Option<ExitStatus>>,
    exited: Condvar,
}

fn waiter(
    mut ctx: ChildCtx,
    mut err_read: OwnedFd,
    err_write: OwnedFd,
    child_ends: Vec<OwnedFd>,
    tx: mpsc::Sender<Result<i32, Started>>,
    shared: Arc<Shared>,
    on_exit: Option<OnExit>,
) {
    let pending = ctx.seccomp_pending.take();
    let mut stack = vec![0u8; CHILD_STACK];
    // SAFETY: the stack top is inside the allocation and 16-byte aligned as the ABI wants; without
    // CLONE_VM the child runs on its own copy of this memory and of `ctx`.
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(CHILD_STACK) as usize & !15;
        libc::clone(
            child_main,
            top as *mut libc::c_void,
            libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::SIGCHLD,
            &ctx as *const ChildCtx as *mut libc::c_void,
        )
    };
    drop(err_write);
    drop(child_ends);
    drop(stack);
    if pid < 0 {
        let _ = tx.send(Err(Started::Clone(io::Error::last_os_error())));
        return;
    }
    // Before the exec report: the child's program may call statfs as soon as it runs. A failure
    // here leaves the listener closed, and the filtered calls fail with ENOSYS.
    if let Some(pending) = pending {
        let _ = seccomp::start(pending);
    }
    let mut report = [0u8; 8];
    let outcome = match read_full(&mut err_read, &mut report) {
        Ok(8) => Err(Started::Failed {
            step: u32::from_le_bytes(report[..4].try_into().expect("4 bytes")),
            errno: i32::from_le_bytes(report[4..].try_into().expect("4 bytes")),
        }),
        _ => Ok(pid),
    };
    let _ = tx.send(outcome);
    drop(ctx);

    // Wait without reaping, then reap under the lock that signal() holds: the PID stays ours
    // (a zombie at worst) for as long as the status says it is running.
    loop {
        // SAFETY: a zeroed siginfo_t is a valid out-parameter for waitid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if r == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            break;
        }
    }
    let status = {
        let mut guard = shared.status.lock().unwrap_or_else(|e| e.into_inner());
        let mut raw = 0;
        loop {
            // SAFETY: raw is a valid out-parameter; pid is our child.
            let r = unsafe { libc::waitpid(pid, &mut raw, 0) };
            if r == pid || io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                break;
            }
        }
        let status = ExitStatus::from_raw(raw);
        *guard = Some(status);
        shared.exited.notify_all();
        status
    };
    if let Some(f) = on_exit {
        f(status);
    }
}

fn read_full(fd: &mut OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    let mut file = File::from(fd.try_clone()?);
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The cloned child: PID 1 of its namespace. Raw system calls only, on prepared data.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the ChildCtx the waiter passed, alive in this copy of its memory.
    let ctx = unsafe { &*(arg as *const ChildCtx) };
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        // Rust ignores SIGPIPE in its own processes; an exec'd program expects the default.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        for (i, op) in ctx.ops.iter().enumerate() {
            if !run_op(op) {
                fail(ctx, i as u32);
            }
        }
        if let Some(dir) = &ctx.cwd
            && libc::chdir(dir.as_ptr()) != 0
        {
            fail(ctx, EXEC_STEP);
        }
        for (target, &fd) in ctx.stdio.iter().enumerate() {
            if fd < 0 {
                continue;
            }
            if libc::dup2(fd, target as libc::c_int) < 0 {
                fail(ctx, EXEC_STEP);
            }
        }
        if let Some(install) = &ctx.seccomp
            && !seccomp::install(install)
        {
            fail(ctx, SECCOMP_STEP);
        }
        libc::execve(
            ctx.program.as_ptr(),
            ctx.argv_ptrs.as_ptr(),
            ctx.envp_ptrs.as_ptr(),
        );
        fail(ctx, EXEC_STEP)
    }
}

/// Reports step `step` with the current errno and exits.
unsafe fn fail(ctx: &ChildCtx, step: u32) -> ! {
    unsafe {
        let errno = *libc::__errno_location();
        let mut report = [0u8; 8];
        report[..4].copy_from_slice(&step.to_le_bytes());
        report[4..].copy_from_slice(&errno.to_le_bytes());
        libc::write(ctx.err_fd, report.as_ptr() as *const libc::c_void, 8);
        libc::_exit(127)
    }
}

unsafe fn run_op(op: &Op) -> bool {
    let null = std::ptr::null::<libc::c_char>();
    unsafe {
        match op {
            Op::MakePrivate => {
                libc::mount(
                    null,
                    c"/".as_ptr(),
                    null,
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) == 0
            }
            Op::Bind {
                src,
                dst,
                recursive,
            } => {
                let flags = libc::MS_BIND | if *recursive { libc::MS_REC } else { 0 };
                libc::mount(src.as_ptr(), dst.as_ptr(), null, flags, std::ptr::null()) == 0
            }
            Op::Tmpfs { dst, data } => {
                libc::mount(
                    c"tmpfs".as_ptr(),
                    dst.as_ptr(),
                    c"tmpfs".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV,
                    data.as_ptr() as *const libc::c_void,
                ) == 0
            }
            Op::Overlay {
                dst,
                data,
                writable,
            } => {
                libc::mount(
                    c"overlay".as_ptr(),
                    dst.as_ptr(),
                    c"overlay".as_ptr(),
                    if *writable { 0 } else { libc::MS_RDONLY },
                    data.as_ptr() as *const libc::c_void,
                ) == 0
            }
            Op::Proc { dst } => {
                libc::mount(
                    c"proc".as_ptr(),
                    dst.as_ptr(),
                    c"proc".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    std::ptr::null(),
                ) == 0
            }
            Op::Mkdir { path } => {
                libc::mkdir(path.as_ptr(), 0o755) == 0 || *libc::__errno_location() == libc::EEXIST
            }
            Op::Touch { path } => {
                let fd = libc::open(
                    path.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                    0o644,
                );
                fd >= 0 && libc::close(fd) == 0
            }
            Op::Symlink { target, path } => libc::symlink(target.as_ptr(), path.as_ptr()) == 0,
        }
    }
}

/// A process running in a node's view. Dropping a running one kills it (SIGKILL) and reaps it.
pub struct Child {
    pid: i32,
    shared: Arc<Shared>,
    pub stdin: Option<File>,
    pub stdout: Option<File>,
    pub stderr: Option<File>,
}

impl Child {
    /// The PID in the caller's namespace (the child itself sees 1).
    pub fn id(&self) -> u32 {
        self.pid as u32
    }

    /// Sends `signal` unless the child has exited (its PID is never one that was recycled).
    pub fn signal(&self, signal: libc::c_int) -> io::Result<()> {
        let guard = self.shared.status.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_some() {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        // SAFETY: kill with our own child's PID, held unreaped while the lock is held.
        if unsafe { libc::kill(self.pid, signal) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Whether the process has a handler for `signal` now (false once it has exited).
    pub fn catches(&self, signal: libc::c_int) -> bool {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", self.pid)) else {
            return false;
        };
        status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .is_some_and(|mask| mask & (1u64 << (signal - 1)) != 0)
    }

    pub fn try_wait(&self) -> Option<ExitStatus> {
        *self.shared.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn wait(&self) -> ExitStatus {
        let mut guard = self.shared.status.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(s) = *guard {
                return s;
            }
            guard = self
                .shared
                .exited
                .wait(guard)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    pub fn wait_timeout(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let mut guard = self.shared.status.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(s) = *guard {
                return Some(s);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            guard = self
                .shared
                .exited
                .wait_timeout(guard, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// As the kubelet stops a container: SIGTERM, up to `grace` to exit, then SIGKILL.
    ///
    /// PID 1 discards a signal it has no handler for, and a lab stops agents moments after
    /// starting them, far more often than a node does; so SIGTERM is sent once the process
    /// catches it (`SigCgt` in /proc/PID/status), or at once if it never does within `grace`
    /// (then, as on a node, only SIGKILL ends it).
    pub fn stop(&self, grace: Duration) -> ExitStatus {
        let deadline = Instant::now() + grace;
        while !self.catches(libc::SIGTERM) && Instant::now() < deadline {
            if let Some(s) = self.wait_timeout(Duration::from_millis(5)) {
                return s;
            }
        }
        let _ = self.signal(libc::SIGTERM);
        let left = deadline.saturating_duration_since(Instant::now());
        if let Some(s) = self.wait_timeout(left.max(Duration::from_millis(100))) {
            return s;
        }
        let _ = self.signal(libc::SIGKILL);
        self.wait()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.try_wait().is_none() {
            let _ = self.signal(libc::SIGKILL);
            self.wait();
        }
    }
}
