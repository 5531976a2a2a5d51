//! `mocksys`: serve a synthetic host from a host file, or check one.
//!
//! `main` -> `main_exit` -> the exit code is decided in one place (`exec` passes its command's on).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use mocksys::fuse::FuseOptions;
use mocksys::mount::{Mount, MountOptions};
use mocksys::plaindir::PLAIN_NOTE;
use mocksys::spec::HostSpec;
use mocksys::{Host, SysBackend};
use nix::sys::signal::{SigSet, Signal};

mod exec;

#[derive(Parser)]
#[command(
    name = "mocksys",
    about = "A synthetic Linux host: sysfs over FUSE plus a /dev tree"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve HOST.yaml at DIR/sys and DIR/dev until SIGINT or SIGTERM.
    Mount {
        host: PathBuf,
        dir: PathBuf,
        /// Write a plain directory instead of mounting FUSE (reads only, no write semantics).
        #[arg(long)]
        plain: bool,
        /// Multicast uevents on NETLINK_KOBJECT_UEVENT (refused outside a private netns).
        #[arg(long)]
        netlink: bool,
        /// Answer open() like kernfs (EACCES at open, direct I/O) instead of the fast mode.
        #[arg(long)]
        strict_open: bool,
    },
    /// Validate HOST.yaml; errors are printed as file:line:column: field: message.
    Check { host: PathBuf },
    /// Run CMD with HOST.yaml as its /sys and /dev, in private mount and PID namespaces (and a
    /// private network namespace that carries the host's uevents), then clean everything up.
    /// Exits with CMD's exit code (128 + N when killed by signal N).
    Exec {
        host: PathBuf,
        /// Served as /var/lib/kubelet/device-plugins (default: an empty temporary directory).
        #[arg(long)]
        plugin_dir: Option<PathBuf>,
        /// Keep the machine's network namespace (the command then gets no uevents).
        #[arg(long)]
        host_network: bool,
        /// Answer open() like kernfs (EACCES at open, direct I/O) instead of the fast mode.
        #[arg(long)]
        strict_open: bool,
        /// The command and its arguments (after `--`).
        #[arg(required = true, last = true)]
        command: Vec<std::ffi::OsString>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "mocksys=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    main_exit(Cli::parse())
}

/// Runs the command; an error's exit code is 1, or for `exec` 125 (like `docker run`: the
/// failure was ours, not the command's).
fn main_exit(cli: Cli) -> ExitCode {
    let is_exec = matches!(cli.command, Command::Exec { .. });
    match run(cli.command) {
        Ok(code) => code,
        Err(e) if is_exec => {
            eprintln!("mocksys exec: {e:#}");
            ExitCode::from(exec::SETUP_FAILED)
        }
        Err(e) => {
            eprintln!("mocksys: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Exec {
            host,
            plugin_dir,
            host_network,
            strict_open,
            command,
        } => exec::run(&host, plugin_dir, host_network, strict_open, &command),
        Command::Check { host } => check(&host).map(|()| ExitCode::SUCCESS),
        Command::Mount {
            host,
            dir,
            plain,
            netlink,
            strict_open,
        } => serve(
            &host,
            &dir,
            MountOptions {
                fuse: FuseOptions {
                    strict_open,
                    ..FuseOptions::default()
                },
                plain,
                netlink,
            },
        )
        .map(|()| ExitCode::SUCCESS),
    }
}

fn check(path: &std::path::Path) -> Result<()> {
    let spec = HostSpec::load(path)?;
    Host::from_spec(&spec)?;
    println!("{}: ok", path.display());
    Ok(())
}

fn serve(path: &std::path::Path, dir: &std::path::Path, options: MountOptions) -> Result<()> {
    // Block the stop signals before any thread starts, so every thread inherits the mask and
    // the main thread alone receives them in `wait`.
    let mut stop = SigSet::empty();
    stop.add(Signal::SIGINT);
    stop.add(Signal::SIGTERM);
    stop.thread_block().context("blocking SIGINT/SIGTERM")?;

    let host = Host::load(path)?;
    let backend: Arc<dyn SysBackend> = Arc::new(host);
    let plain = options.plain;
    let mount = Mount::new(backend, dir, options)
        .with_context(|| format!("serving {} at {}", path.display(), dir.display()))?;
    if plain {
        println!("{PLAIN_NOTE}");
    }
    println!(
        "serving {} at {} and {} (stop with Ctrl-C or SIGTERM)",
        path.display(),
        mount.sys_path().display(),
        mount.dev_path().display()
    );
    let signal = stop.wait().context("waiting for SIGINT/SIGTERM")?;
    let report = mount.unmount();
    println!("{signal}: unmounted ({report:?})");
    Ok(())
}
