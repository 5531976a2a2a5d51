//! `fake-kubelet --dir DIR [--seed N] [--grace-period 5m]` serves the kubelet's registration
//! socket so any device plugin can be tried by hand or from a script, until SIGTERM, SIGINT or
//! `stop`. `fake-kubelet ctl --dir DIR COMMAND` drives a running one through its control socket.
//! Everything but argument parsing lives in [`fake_kubelet::control`].

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use fake_kubelet::Config;
use fake_kubelet::control::{self, Command, parse_duration};

#[derive(Parser, Debug)]
#[command(
    name = "fake-kubelet",
    about = "A fake kubelet device manager serving <dir>/kubelet.sock, driven by stdin or `fake-kubelet ctl`",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Args {
    /// Device-plugin directory (created if missing).
    #[arg(long, required = true)]
    dir: Option<PathBuf>,
    /// Seed for the choice among equal devices.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Grace period after a plugin's stream ends, e.g. 5m, 30s, 500ms.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    grace_period: Duration,
    #[command(subcommand)]
    sub: Option<Sub>,
}

#[derive(Subcommand, Debug)]
enum Sub {
    /// Send one command to the fake kubelet serving DIR (exit 0 ok, 1 refused, 2 usage or connection).
    Ctl {
        /// The running fake kubelet's directory (its control socket is DIR/fake-kubelet.ctl).
        #[arg(long, env = "FAKE_KUBELET_DIR")]
        dir: PathBuf,
        /// Print the result as one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// How long to wait for the answer.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        timeout: Duration,
        #[command(subcommand)]
        command: Command,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    match args.sub {
        Some(Sub::Ctl {
            dir,
            json,
            timeout,
            command,
        }) => ctl(&dir, &command, json, timeout),
        None => serve(
            Config::new(args.dir.expect("clap requires --dir"))
                .with_seed(args.seed)
                .with_grace_period(args.grace_period),
        ),
    }
}

fn ctl(dir: &std::path::Path, command: &Command, json: bool, timeout: Duration) -> ExitCode {
    match control::client::ctl(dir, command, timeout) {
        Ok(answer) if json => {
            println!("{}", answer.result);
            ExitCode::SUCCESS
        }
        Ok(answer) => {
            for line in answer.text {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fake-kubelet ctl: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn serve(config: Config) -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fake-kubelet: starting the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let served = runtime.block_on(control::serve(config));
    // Nothing left to wait for; a task stuck past the drain must not hold up the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fake-kubelet: {e}");
            ExitCode::FAILURE
        }
    }
}
