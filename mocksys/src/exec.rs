//! `mocksys exec HOST_FILE -- CMD ARGS...`: one command in a node's view of a synthetic host.
//!
//! Everything is torn down on every exit path without relying on this process to do it: the FUSE
//! mount and the /dev tmpfs live in a private mount namespace of this process (gone when it
//! exits, even by SIGKILL), uevents go to a private network namespace, and the command dies
//! with the thread that started it (`PR_SET_PDEATHSIG`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use hostdev_sandbox::{Command, NodeView};
use mocksys::fuse::FuseOptions;
use mocksys::mount::{Mount, MountOptions};
use mocksys::{Host, SysBackend};
use nix::sys::signal::{SigSet, Signal};

/// Our own failure (not the command's), as `docker run` reports one.
pub const SETUP_FAILED: u8 = 125;

/// Signals passed on to the command.
const FORWARDED: [Signal; 4] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

pub fn run(
    host_file: &Path,
    plugin_dir: Option<PathBuf>,
    host_network: bool,
    strict_open: bool,
    command: &[OsString],
) -> Result<ExitCode> {
    let Some((program, args)) = command.split_first() else {
        bail!("no command given after --");
    };
    // Before any thread exists: the mask is inherited by every thread, so this one alone takes
    // the signals in `wait` (the command's own mask is cleared before it starts).
    let mut signals = SigSet::empty();
    for s in FORWARDED {
        signals.add(s);
    }
    // The waiter thread raises SIGUSR1 once the command's status is known (SIGCHLD would also
    // come from any helper process, and before that status is recorded).
    signals.add(Signal::SIGUSR1);
    signals.add(Signal::SIGCHLD);
    signals.thread_block().context("blocking signals")?;
    private_mounts()?;
    let uevents = !host_network;
    if uevents {
        hostdev_sandbox::net::enter_private_network()
            .context("creating a private network namespace for the host's uevents (needs root; --host-network to skip)")?;
    }

    let host = Host::load(host_file)?;
    let backend: Arc<dyn SysBackend> = Arc::new(host);
    let scratch = tempfile::Builder::new()
        .prefix("mocksys-exec-")
        .tempdir()
        .context("creating a temporary directory")?;
    let plugins = match plugin_dir {
        Some(d) => d,
        None => {
            let d = scratch.path().join("device-plugins");
            std::fs::create_dir(&d).with_context(|| format!("creating {}", d.display()))?;
            d
        }
    };
    let options = MountOptions {
        fuse: FuseOptions {
            strict_open,
            ..FuseOptions::default()
        },
        plain: false,
        netlink: uevents,
    };
    let mount = Mount::new(backend, &scratch.path().join("host"), options)
        .with_context(|| format!("serving {}", host_file.display()))?;
    let view_scratch = scratch.path().join("view");
    std::fs::create_dir(&view_scratch).context("creating the view's scratch directory")?;
    // sysfs's statfs magic: libudev, udevadm and libusb refuse a /sys that says FUSE.
    let view = NodeView::new(mount.sys_path(), mount.dev_path(), view_scratch)
        .with_plugin_dir(&plugins)
        .with_sysfs_magic(true);

    let child = Command::new(program)
        .args(args)
        // SAFETY (of the call inside): kill and getpid are async-signal-safe and need no state.
        .on_exit(|_| unsafe {
            libc::kill(libc::getpid(), libc::SIGUSR1);
        })
        .spawn(&view)
        .with_context(|| format!("starting {}", program.to_string_lossy()))?;
    let status = loop {
        let signal = signals.wait().context("waiting for the command")?;
        match signal {
            Signal::SIGUSR1 => break child.wait(),
            Signal::SIGCHLD => continue,
            _ => {}
        }
        // A signal for us is the command's to handle; it decides whether to exit.
        let _ = child.signal(signal as libc::c_int);
    };
    drop(mount);
    drop(scratch);
    use std::os::unix::process::ExitStatusExt;
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => ExitCode::from(code.clamp(0, 255) as u8),
        (None, Some(sig)) => ExitCode::from((128 + sig).clamp(0, 255) as u8),
        _ => ExitCode::from(SETUP_FAILED),
    })
}

/// A private mount namespace for this process: the host's mounts vanish with it.
fn private_mounts() -> Result<()> {
    use nix::mount::{MsFlags, mount};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .context("creating a private mount namespace (needs root)")?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("making / private in the new mount namespace")?;
    Ok(())
}
