//! `hostdev-agent`: main -> run -> exit code, decided in one place.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use hostdev_agent::cli::{Cli, Command, LogFormat};
use hostdev_agent::explain::OutputFormat;
use hostdev_agent::manager::AgentOptions;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    // First of all: as PID 1 of a container (a DaemonSet pod), a SIGTERM that arrives before a
    // handler exists is discarded, and the kubelet then waits out the whole grace period. A
    // blocked signal stays pending instead; `serve` unblocks once its handlers are installed.
    // Every runtime thread inherits the mask, so the main thread (in `block_on`) takes them.
    let _ = stop_signals().thread_block();
    match run() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("hostdev-agent: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    init_logging(cli.flags.log_format);
    match cli.command {
        Some(Command::Discover { output }) => {
            let _ = stop_signals().thread_unblock();
            discover(&cli.flags.to_discover_options()?, output)
        }
        None => {
            let options = cli.flags.to_options()?;
            let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
            runtime.block_on(serve(options))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn serve(options: AgentOptions) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let shutdown = CancellationToken::new();
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    // The handlers exist: a signal that came early (pending while blocked) is delivered now.
    stop_signals()
        .thread_unblock()
        .context("unblocking SIGTERM/SIGINT")?;
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM: stopping"),
            _ = interrupt.recv() => tracing::info!("SIGINT: stopping"),
        }
        on_signal.cancel();
    });
    hostdev_agent::manager::run_agent(options, shutdown)
        .await
        .context("running the agent")
}

fn stop_signals() -> nix::sys::signal::SigSet {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set
}

/// `hostdev-agent discover`: one read-only discovery pass, explained for an operator.
fn discover(options: &AgentOptions, output: OutputFormat) -> anyhow::Result<ExitCode> {
    let config = hostdev_agent::config::load(&options.config_file)?.with_serve(options.serve);
    let inventory = hostdev_agent::discovery::discover(&options.host, &config);
    print!(
        "{}",
        hostdev_agent::explain::render(&inventory, &config, output)
    );
    Ok(ExitCode::SUCCESS)
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
