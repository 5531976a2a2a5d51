//! `hostdev`: run, validate and explain host-device scenarios.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hostdev_harness::scenario;
use hostdev_harness::sim::{RunOptions, run_scenario};
use hostdev_harness::suite::{self, FileResult};

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
    /// Run scenarios; exits 0 only if every one passes.
    Run {
        /// Scenario files or folders (searched for *.yaml / *.yml).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Seed for every random choice, overriding the files' `seed:`.
        #[arg(long)]
        seed: Option<u64>,
        /// Scenarios run at once (default: the number of CPUs).
        #[arg(long, short)]
        jobs: Option<usize>,
        /// Write a JUnit XML report here.
        #[arg(long)]
        junit: Option<PathBuf>,
        /// Print each scenario's wall time, the median and the total.
        #[arg(long)]
        timings: bool,
        #[command(flatten)]
        choice: Choice,
    },
    /// Check scenario files without running them; errors name the file, line and column.
    Validate {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Run one scenario and print the cluster state after each step.
    Explain {
        file: PathBuf,
        #[arg(long)]
        seed: Option<u64>,
        #[command(flatten)]
        choice: Choice,
    },
    /// Run the library over {hostdev-agent, KubeVirt's plugins} x {fake, upstream kubelet} and
    /// print (or write) the compatibility table; exits 1 if any cell is unexpected.
    Compat {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Write the Markdown table here (e.g. docs/compatibility.md) instead of printing it.
        #[arg(long)]
        write: Option<PathBuf>,
        /// Scenarios run at once (default: the number of CPUs).
        #[arg(long, short)]
        jobs: Option<usize>,
    },
    /// Print the JSON Schema of scenario files (for editors).
    Schema,
    /// Print the random scenario of a seed (the one the seeded simulation test runs); save it
    /// and replay it with `hostdev run`.
    Generate {
        #[arg(long)]
        seed: u64,
    },
}

/// Which agent and kubelet every node gets, over what the scenarios say.
#[derive(clap::Args)]
struct Choice {
    /// `hostdev` (in process), `kubevirt` (KubeVirt's plugins from upstream/bin), or a command
    /// line run in each node's namespaces, e.g. 'hostdev-agent --config {config} --node-name {node}'
    /// (placeholders: {config}, {node}, {labels}).
    #[arg(long, value_parser = scenario::AgentChoice::parse_flag)]
    agent: Option<scenario::AgentChoice>,
    /// `fake` (the project's kubelet) or `upstream` (the kubelet's own device manager).
    #[arg(long, value_parser = scenario::KubeletChoice::parse_flag)]
    kubelet: Option<scenario::KubeletChoice>,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hostdev: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run {
            paths,
            seed,
            jobs,
            junit,
            timings,
            choice,
        } => {
            let files = scenario::collect_files(&paths)?;
            let jobs = jobs.unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2)
            });
            let clock = suite::Stopwatch::start();
            let results = suite::run_files(
                &files,
                RunOptions {
                    seed,
                    explain: false,
                    agent: choice.agent,
                    kubelet: choice.kubelet,
                },
                jobs,
            );
            let wall = clock.elapsed();
            let mut failed = 0;
            for (file, r) in &results {
                match r {
                    FileResult::Invalid(e) => {
                        failed += 1;
                        println!("INVALID {}\n{e}\n", file.display());
                    }
                    FileResult::Ran(o) if o.passed() => {
                        if timings {
                            println!(
                                "PASS {:>8.1} ms  {}",
                                o.duration.as_secs_f64() * 1e3,
                                o.name
                            );
                        }
                    }
                    FileResult::Ran(o) => {
                        failed += 1;
                        println!(
                            "FAIL {}\n{}\n",
                            o.name,
                            o.failure.as_deref().unwrap_or_default()
                        );
                    }
                }
            }
            if let Some(path) = junit {
                std::fs::write(&path, suite::junit(&results, wall))
                    .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
            }
            let durations: Vec<_> = results
                .iter()
                .filter_map(|(_, r)| {
                    if let FileResult::Ran(o) = r {
                        Some(o.duration)
                    } else {
                        None
                    }
                })
                .collect();
            if timings {
                println!(
                    "median scenario {:.1} ms, whole run {:.1} ms ({} scenarios, {jobs} at once)",
                    suite::median(durations).as_secs_f64() * 1e3,
                    wall.as_secs_f64() * 1e3,
                    results.len()
                );
            }
            println!("{} passed, {} failed", results.len() - failed, failed);
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Compat { paths, write, jobs } => {
            let files = hostdev_harness::compat::agent_neutral(&scenario::collect_files(&paths)?);
            let jobs = jobs.unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2)
            });
            let table =
                hostdev_harness::compat::run(&files, hostdev_harness::compat::matrix(), jobs);
            let root = paths
                .first()
                .filter(|p| p.is_dir())
                .cloned()
                .unwrap_or_default();
            let upstream = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../upstream");
            let text = hostdev_harness::compat::markdown(
                &table,
                &root,
                &hostdev_harness::compat::upstream_versions(&upstream),
            );
            match write {
                Some(path) => std::fs::write(&path, &text)
                    .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?,
                None => print!("{text}"),
            }
            let unexpected = table.unexpected();
            println!(
                "{} scenarios x {} combinations in {:.1} s; {unexpected} unexpected",
                table.rows.len(),
                table.columns.len(),
                table.wall.as_secs_f64()
            );
            Ok(if unexpected == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Validate { paths } => {
            let files = scenario::collect_files(&paths)?;
            let mut bad = 0;
            let mut problems = 0;
            for r in suite::load_all(&files) {
                if let Err(e) = r {
                    eprintln!("{e}\n");
                    bad += 1;
                    problems += e.count();
                }
            }
            println!(
                "{} scenario(s) checked, {} valid, {} invalid ({problems} problem(s))",
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
        Command::Explain { file, seed, choice } => {
            let sc = scenario::load(&file)?;
            let out = run_scenario(
                &sc,
                RunOptions {
                    seed,
                    explain: true,
                    agent: choice.agent,
                    kubelet: choice.kubelet,
                },
            );
            for s in &out.explain {
                println!("{s}");
            }
            match out.failure {
                None => {
                    println!(
                        "passed (seed {}, {:.1} ms)",
                        out.seed,
                        out.duration.as_secs_f64() * 1e3
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Some(f) => {
                    println!("{f}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Schema => {
            print!("{}", hostdev_harness::SCENARIO_SCHEMA);
            Ok(ExitCode::SUCCESS)
        }
        Command::Generate { seed } => {
            print!("{}", hostdev_harness::sim::random::generate(seed));
            Ok(ExitCode::SUCCESS)
        }
    }
}
