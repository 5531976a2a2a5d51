//! Running one scenario from start to finish, and what a failure shows.

use std::time::{Duration, Instant};

use super::cluster::Cluster;
use super::{expect, logs, netns, steps};
use crate::scenario::{AgentChoice, KubeletChoice, Scenario, Step};

/// How one scenario went.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub name: String,
    pub file: std::path::PathBuf,
    pub seed: u64,
    pub duration: Duration,
    /// `None`: passed. `Some`: the whole failure report.
    pub failure: Option<String>,
    /// With `explain`: the cluster state after each step.
    pub explain: Vec<String>,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }

    /// The failure in one line: the failing step and what it saw (for tables and summaries).
    pub fn reason(&self) -> Option<String> {
        let report = self.failure.as_deref()?;
        let mut lines = report.lines();
        while let Some(l) = lines.next() {
            if let Some(rest) = l.strip_prefix("step ") {
                let step = rest.split(" at ").next().unwrap_or(rest);
                let problem = lines.next().unwrap_or_default().trim();
                return Some(format!("step {step}: {problem}"));
            }
            if l.starts_with("setting up the cluster failed") {
                return Some(l.to_owned());
            }
        }
        report.lines().nth(1).map(str::to_owned)
    }
}

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Overrides the scenario's `seed:`.
    pub seed: Option<u64>,
    /// Record the cluster state after every step.
    pub explain: bool,
    /// Overrides every node's `agent:`.
    pub agent: Option<AgentChoice>,
    /// Overrides the scenario's `kubelet:`.
    pub kubelet: Option<KubeletChoice>,
}

/// Runs `sc` on a thread of its own (its own network namespace when permitted, its own runtime).
pub fn run_scenario(sc: &Scenario, options: RunOptions) -> Outcome {
    logs::install();
    std::thread::scope(|s| {
        s.spawn(|| {
            let logs = logs::ScenarioLogs::start();
            // Mounts first: a scenario's FUSE mounts then live and die with this process.
            netns::enter_private_mounts();
            let netlink = netns::enter_private();
            let started = Instant::now();
            let seed = sc.seed(options.seed);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .on_thread_start(logs.thread_start())
                .enable_all()
                .build();
            let (failure, explain) = match runtime {
                Ok(rt) => rt.block_on(run_steps(sc, seed, netlink, &options)),
                Err(e) => (Some(format!("cannot build a runtime: {e}")), Vec::new()),
            };
            Outcome {
                name: sc.name().to_owned(),
                file: sc.file.clone(),
                seed,
                duration: started.elapsed(),
                failure,
                explain,
            }
        })
        .join()
        .unwrap_or_else(|_| Outcome {
            name: sc.name().to_owned(),
            file: sc.file.clone(),
            seed: sc.seed(options.seed),
            duration: Duration::ZERO,
            failure: Some("the scenario's thread panicked".into()),
            explain: Vec::new(),
        })
    })
}

async fn run_steps(
    sc: &Scenario,
    seed: u64,
    netlink: bool,
    options: &RunOptions,
) -> (Option<String>, Vec<String>) {
    let explain = options.explain;
    let mut states = Vec::new();
    let kubelet = options
        .kubelet
        .or(sc.raw.kubelet.as_ref().map(|k| k.value))
        .unwrap_or_default();
    let mut cluster = match Cluster::start(sc, seed, netlink, options.agent.as_ref(), kubelet).await
    {
        Ok(c) => c,
        Err(e) => {
            return (
                Some(header(sc, seed) + &format!("\nsetting up the cluster failed: {e:#}")),
                states,
            );
        }
    };
    let mut failure = None;
    for (i, step) in sc.raw.steps.iter().enumerate() {
        let expect = match &step.value {
            Step::Expect(e) => Some(&**e),
            _ => None,
        };
        if let Some(problem) = cluster.unexpected_agent_exit(expect) {
            failure = Some(report(sc, seed, i, problem, &cluster));
            break;
        }
        let result = match &step.value {
            Step::Expect(e) => expect::wait_for(&mut cluster, e).await,
            other => match steps::run_step(&mut cluster, sc, other).await {
                Ok(()) => {
                    cluster.reconcile().await;
                    Ok(())
                }
                Err(e) => Err(format!("{e:#}")),
            },
        };
        if explain {
            states.push(format!(
                "after step {} ({}, line {}):\n{}",
                i + 1,
                step.value.kind(),
                step.referenced.line(),
                state(&cluster)
            ));
        }
        if let Err(problem) = result {
            failure = Some(report(sc, seed, i, problem, &cluster));
            break;
        }
    }
    cluster.shutdown().await;
    (failure, states)
}

fn header(sc: &Scenario, seed: u64) -> String {
    format!(
        "scenario {} ({}) failed with seed {seed}; replay: hostdev run --seed {seed} {}",
        sc.name(),
        sc.file.display(),
        sc.file.display()
    )
}

/// The failure report: the step, what was expected and seen, the cluster, and the last logs.
fn report(sc: &Scenario, seed: u64, index: usize, problem: String, cluster: &Cluster) -> String {
    let step = &sc.raw.steps[index];
    let line = step.referenced.line() as usize;
    let source_line = sc
        .source
        .lines()
        .nth(line.saturating_sub(1))
        .unwrap_or("")
        .trim();
    let mut out = header(sc, seed);
    out.push_str(&format!(
        "\n\nstep {} ({}) at {}:{line}: {source_line}\n  {problem}\n",
        index + 1,
        step.value.kind(),
        sc.file.display()
    ));
    out.push_str(&format!("\ncluster:\n{}", state(cluster)));
    if cluster.nodes.iter().any(|n| !n.agent_is_external()) {
        out.push_str("\nlast agent log lines:\n");
        for l in logs::last(12) {
            out.push_str(&format!("  {l}\n"));
        }
    }
    for n in cluster.nodes.iter().filter(|n| n.agent_is_external()) {
        out.push_str(&format!(
            "last agent log lines ({}: {}):\n",
            n.name,
            n.agent_command_line()
                .unwrap_or_else(|| "not running".into())
        ));
        for l in n.agent_log(12) {
            out.push_str(&format!("  {l}\n"));
        }
    }
    for n in &cluster.nodes {
        let lines = n.kubelet.recent_log();
        out.push_str(&format!("last kubelet log lines ({}):\n", n.name));
        for l in lines.iter().skip(lines.len().saturating_sub(6)) {
            out.push_str(&format!("  {l}\n"));
        }
    }
    out
}

/// Per node and resource: allocatable/capacity and allocated (handed to containers); then
/// every VMI.
pub fn state(cluster: &Cluster) -> String {
    let mut out = String::new();
    for n in &cluster.nodes {
        let status = n.kubelet.node_status();
        let res: Vec<String> = status
            .resources
            .iter()
            .map(|(r, s)| {
                format!(
                    "{r}: {}/{} allocatable, {} allocated",
                    s.allocatable, s.capacity, s.allocated
                )
            })
            .collect();
        out.push_str(&format!(
            "  node {}: {}\n",
            n.name,
            if res.is_empty() {
                "no device resources".into()
            } else {
                res.join(", ")
            }
        ));
        if let Some(a) = n.agent_status()
            && let Some(err) = a.last_config_error
        {
            out.push_str(&format!("    agent config error: {err}\n"));
        }
        if let Some(status) = n.agent_exit() {
            out.push_str(&format!(
                "    agent exited: {}\n",
                super::external::exit_word(&status)
            ));
        }
    }
    for (name, v) in &cluster.vmis {
        out.push_str(&format!("  vmi {name}: {}\n", v.describe()));
    }
    out
}
