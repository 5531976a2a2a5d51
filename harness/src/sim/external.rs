//! An agent the harness did not build: any executable, run unmodified in the node's namespaces
//! (its synthetic `/sys` and `/dev`, its plugin directory, a `/proc` of its own, the scenario's
//! network namespace). Its stdout and stderr are kept as the node's agent log.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use hostdev_sandbox::{Child, Command, NodeView, Stdio};
use parking_lot::Mutex;

use crate::scenario::{AgentCommand, StopSignal};

/// Lines of agent output kept for reports and `configError`.
const KEPT_LINES: usize = 400;
/// How long a stopped agent may take to exit before SIGKILL (the kubelet's default is 30 s; an
/// agent that needs more than this in the lab is worth a look anyway).
const STOP_GRACE: Duration = Duration::from_secs(10);

/// What the placeholders of an agent command stand for on one node.
pub struct Placeholders {
    pub config: PathBuf,
    pub node: String,
    pub labels: PathBuf,
}

impl Placeholders {
    pub fn expand(&self, text: &str) -> String {
        text.replace("{config}", &self.config.to_string_lossy())
            .replace("{node}", &self.node)
            .replace("{labels}", &self.labels.to_string_lossy())
    }
}

/// Wakes whoever waits on the cluster (a line logged, the agent exited).
pub type Notify = Arc<dyn Fn() + Send + Sync>;

pub struct ExternalAgent {
    child: Child,
    argv: Vec<String>,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl ExternalAgent {
    /// Starts `spec` in `view`; returns once it has exec'd (a missing program is an error here).
    pub fn start(
        spec: &AgentCommand,
        extra_path: &[PathBuf],
        values: &Placeholders,
        view: &NodeView,
        notify: Notify,
    ) -> Result<ExternalAgent> {
        let argv: Vec<String> = spec.command.iter().map(|a| values.expand(a)).collect();
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(Stdio::Null)
            .stdout(Stdio::Pipe)
            .stderr(Stdio::Pipe);
        if !extra_path.is_empty() {
            let path = std::env::var_os("PATH").unwrap_or_default();
            let joined = std::env::join_paths(
                extra_path
                    .iter()
                    .cloned()
                    .chain(std::env::split_paths(&path)),
            )
            .context("joining PATH")?;
            cmd.env("PATH", joined);
        }
        cmd.env("NODE_NAME", &values.node);
        for (k, v) in &spec.env {
            cmd.env(k, values.expand(v));
        }
        let exit_notify = notify.clone();
        cmd.on_exit(move |_| exit_notify());
        let mut child = cmd
            .spawn(view)
            .with_context(|| format!("starting agent `{}`", argv.join(" ")))?;
        let log = Arc::new(Mutex::new(VecDeque::new()));
        for stream in [child.stdout.take(), child.stderr.take()]
            .into_iter()
            .flatten()
        {
            let log = log.clone();
            let notify = notify.clone();
            // Plain threads: the pipes are blocking, and they end when the agent closes them.
            std::thread::Builder::new()
                .name("agent-log".into())
                .spawn(move || {
                    for line in BufReader::new(stream).lines() {
                        let Ok(line) = line else { break };
                        push_bounded(&log, line, KEPT_LINES);
                        notify();
                    }
                })
                .context("starting a log reader")?;
        }
        Ok(ExternalAgent { child, argv, log })
    }

    pub fn command_line(&self) -> String {
        self.argv.join(" ")
    }

    /// The last `n` lines the agent wrote (stdout and stderr, as they arrived).
    pub fn last_lines(&self, n: usize) -> Vec<String> {
        let l = self.log.lock();
        l.iter().skip(l.len().saturating_sub(n)).cloned().collect()
    }

    /// Whether any line since the start contains `text`.
    pub fn logged(&self, text: &str) -> bool {
        self.log.lock().iter().any(|l| l.contains(text))
    }

    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.child.try_wait()
    }

    /// Stops the agent: SIGTERM with a grace period, or SIGKILL at once.
    pub async fn stop(self, signal: StopSignal) -> ExitStatus {
        let child = self.child;
        tokio::task::spawn_blocking(move || match signal {
            StopSignal::Term => child.stop(STOP_GRACE),
            StopSignal::Kill => {
                let _ = child.signal(libc::SIGKILL);
                child.wait()
            }
        })
        .await
        .unwrap_or_else(|_| std::os::unix::process::ExitStatusExt::from_raw(0))
    }
}

/// Appends `line`, dropping the oldest once `cap` lines are kept (agent and kubelet logs alike).
pub(crate) fn push_bounded(log: &Mutex<VecDeque<String>>, line: String, cap: usize) {
    let mut l = log.lock();
    if l.len() == cap {
        l.pop_front();
    }
    l.push_back(line);
}

/// An exit status as the scenario format writes it: the code (`"1"`) or the signal (`"SIGKILL"`).
pub fn exit_word(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code.to_string(),
        (None, Some(sig)) => signal_name(sig),
        _ => status.to_string(),
    }
}

fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        _ => return format!("signal {sig}"),
    };
    name.into()
}

/// Where `kubevirt` (KubeVirt's own plugins) and other upstream programs are built:
/// `upstream/bin` of this checkout (see the README), or `HOSTDEV_UPSTREAM_BIN`.
pub fn upstream_bin() -> PathBuf {
    std::env::var_os("HOSTDEV_UPSTREAM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../upstream/bin"))
}

/// KubeVirt's device plugins as an agent command (built by `upstream/build.sh`).
pub fn kubevirt_command() -> AgentCommand {
    AgentCommand {
        command: [
            "kubevirt-device-plugins",
            "--config",
            "{config}",
            "--node-name",
            "{node}",
            "--node-labels-file",
            "{labels}",
        ]
        .map(String::from)
        .to_vec(),
        env: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    #[test]
    fn exit_words_are_codes_or_signal_names() {
        assert_eq!(exit_word(&ExitStatus::from_raw(3 << 8)), "3");
        assert_eq!(exit_word(&ExitStatus::from_raw(libc::SIGKILL)), "SIGKILL");
        assert_eq!(exit_word(&ExitStatus::from_raw(libc::SIGSEGV)), "SIGSEGV");
        assert_eq!(exit_word(&ExitStatus::from_raw(40)), "signal 40");
    }

    #[test]
    fn placeholders_expand_everywhere_in_a_word() {
        let p = Placeholders {
            config: "/n/kubevirt/kubevirt.json".into(),
            node: "node01".into(),
            labels: "/n/podinfo/labels".into(),
        };
        assert_eq!(
            p.expand("--config={config} {node}:{labels}"),
            "--config=/n/kubevirt/kubevirt.json node01:/n/podinfo/labels"
        );
    }
}
