//! Every file under `scenarios/` is two test cases: `cargo nextest run` runs them in parallel
//! (one process each, so each has its own mounts and network namespace) and CI can shard them
//! with `--partition`.
//!
//! - `<dir>/<name>`: with the agent in process (the default `agent: hostdev`).
//! - `external-agent/<dir>/<name>`: with the `hostdev-agent` binary run unmodified in each node's
//!   namespaces with its default paths, as a DaemonSet runs it: proof that the lab's view is a
//!   node's view. Only for scenarios that do not choose an agent of their own. The binary is `HOSTDEV_AGENT_BIN` (CI sets the release build) or the one cargo
//!   built next to this test; without either the cases fail and say how to build it.

use std::path::{Path, PathBuf};

use hostdev_harness::scenario::{self, AgentChoice, AgentCommand};
use hostdev_harness::sim::{RunOptions, run_scenario};
use libtest_mimic::{Arguments, Failed, Trial};

fn main() {
    let args = Arguments::from_args();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let files = match scenario::collect_files(std::slice::from_ref(&root)) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let mut trials = Vec::new();
    for file in files {
        let name = file
            .strip_prefix(&root)
            .unwrap_or(&file)
            .with_extension("")
            .display()
            .to_string();
        let own_agent = scenario::load(&file).is_ok_and(|sc| sc.chooses_agent());
        let f = file.clone();
        trials.push(Trial::test(name.clone(), move || run(&f, None)));
        if !own_agent {
            trials.push(Trial::test(format!("external-agent/{name}"), move || {
                run(&file, Some(external_agent()?))
            }));
        }
    }
    libtest_mimic::run(&args, trials).exit();
}

/// `hostdev-agent --config {config} --node-name {node}`, labels from the node's labels file.
fn external_agent() -> Result<AgentChoice, Failed> {
    let bin = match std::env::var_os("HOSTDEV_AGENT_BIN") {
        Some(b) => PathBuf::from(b),
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.parent()?.join("hostdev-agent")))
            .ok_or("cannot locate the test binary's directory")?,
    };
    if !bin.is_file() {
        return Err(format!(
            "no hostdev-agent binary at {}: build it (`cargo build -p hostdev-agent`) or set HOSTDEV_AGENT_BIN",
            bin.display()
        )
        .into());
    }
    Ok(AgentChoice::Command(AgentCommand {
        command: vec![
            bin.display().to_string(),
            "--config".into(),
            "{config}".into(),
            "--node-name".into(),
            "{node}".into(),
        ],
        env: [("HOSTDEV_NODE_LABELS_FILE".to_owned(), "{labels}".to_owned())].into(),
    }))
}

fn run(file: &Path, agent: Option<AgentChoice>) -> Result<(), Failed> {
    let sc = scenario::load(file).map_err(|e| Failed::from(e.to_string()))?;
    let seed = std::env::var("HOSTDEV_SEED")
        .ok()
        .and_then(|s| s.parse().ok());
    let outcome = run_scenario(
        &sc,
        RunOptions {
            seed,
            agent,
            ..RunOptions::default()
        },
    );
    match outcome.failure {
        None => Ok(()),
        Some(report) => Err(Failed::from(report)),
    }
}
