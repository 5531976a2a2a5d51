//! `mocksys`: serve a synthetic host from a host file, or check one.
//!
//! `main` -> `run` -> the exit code is decided in one place.

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
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "mocksys=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mocksys: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Check { host } => check(&host),
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
        ),
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
