//! `hostdev`: run, validate and explain host-device scenarios.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hostdev_harness::scenario;

#[derive(Parser)]
#[command(
    name = "hostdev",
    version,
    about = "Host-device assignment scenarios for KubeVirt, run with no hardware"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check scenario files without running them; errors name the file, line and column.
    Validate {
        /// Scenario files or folders (searched for *.yaml / *.yml).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Print the JSON Schema of scenario files (for editors).
    Schema,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hostdev: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate { paths } => {
            let files = scenario::collect_files(&paths)?;
            let mut bad = 0;
            for f in &files {
                if let Err(e) = scenario::load(f) {
                    eprintln!("{e}\n");
                    bad += 1;
                }
            }
            println!(
                "{} scenario(s) checked, {} valid, {} invalid",
                files.len(),
                files.len() - bad,
                bad
            );
            Ok(if bad == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Schema => {
            print!("{}", hostdev_harness::SCENARIO_SCHEMA);
            Ok(ExitCode::SUCCESS)
        }
    }
}
