//! `fake-kubelet --dir DIR [--seed N] [--grace-period 5m]`: serves the kubelet's registration
//! socket so any device plugin can be tried by hand. Registrations and device changes are logged
//! on stderr; commands are read from stdin, one per line, and answered on stdout:
//!
//! ```text
//! allocate POD CONTAINER RESOURCE COUNT [NUMA,NUMA..]   -> ok DEVICE,DEVICE envs={..}  | error TEXT
//! free POD                                             -> ok freed N
//! status                                               -> RESOURCE capacity=.. allocatable=.. allocated=.. registered=..; then ok
//! devices RESOURCE                                     -> ID HEALTH numa=..; then ok
//! restart                                              -> ok
//! quit                                                 -> ok, then exit
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use fake_kubelet::{AllocationRequest, Config, FakeKubelet};
use tokio::io::{AsyncBufReadExt as _, BufReader};

#[derive(Parser, Debug)]
#[command(about = "A fake kubelet device manager serving <dir>/kubelet.sock")]
struct Args {
    /// Device-plugin directory (created if missing).
    #[arg(long)]
    dir: PathBuf,
    /// Seed for the choice among equal devices.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Grace period after a plugin's stream ends, e.g. 5m, 30s, 500ms.
    #[arg(long, default_value = "5m")]
    grace_period: String,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fake-kubelet: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let grace = parse_duration(&args.grace_period).context("--grace-period")?;
    let config = Config::new(&args.dir)
        .with_seed(args.seed)
        .with_grace_period(grace);
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let kubelet = FakeKubelet::start(config).await?;
    eprintln!(
        "fake-kubelet: serving {} (seed {}); type `help` for commands",
        kubelet.socket_path().display(),
        kubelet.config().seed
    );
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await.context("reading stdin")? {
        let words: Vec<&str> = line.split_whitespace().collect();
        match execute(&kubelet, &words).await {
            Ok(Reply::Quit) => break,
            Ok(Reply::Lines(out)) => {
                for l in out {
                    println!("{l}");
                }
                println!("ok");
            }
            Err(e) => println!("error {e:#}"),
        }
    }
    kubelet.stop().await;
    Ok(())
}

enum Reply {
    Lines(Vec<String>),
    Quit,
}

async fn execute(kubelet: &FakeKubelet, words: &[&str]) -> anyhow::Result<Reply> {
    let lines = match words {
        [] => vec![],
        ["allocate", pod, container, resource, count, rest @ ..] => {
            let count: usize = count.parse().with_context(|| format!("COUNT {count:?}"))?;
            let mut req = AllocationRequest::new(*pod, *container, *resource, count);
            if let [numa] = rest {
                let nodes = numa
                    .split(',')
                    .map(|n| n.parse::<i64>().with_context(|| format!("NUMA node {n:?}")))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                req = req.with_numa_affinity(nodes);
            }
            let a = kubelet.allocate(req).await?;
            let envs: std::collections::BTreeMap<_, _> = a.response.envs.iter().collect();
            vec![format!("{} envs={envs:?}", a.device_ids.join(","))]
        }
        ["free", pod] => vec![format!("freed {}", kubelet.free_pod(pod))],
        ["status"] => kubelet.with_state(|s| {
            s.node_status()
                .resources
                .iter()
                .map(|(name, r)| {
                    format!(
                        "{name} capacity={} allocatable={} allocated={} registered={}",
                        r.capacity,
                        r.allocatable,
                        r.allocated,
                        s.is_registered(name)
                    )
                })
                .collect()
        }),
        ["devices", resource] => kubelet
            .devices(resource)
            .with_context(|| format!("unknown resource {resource}"))?
            .into_iter()
            .map(|d| format!("{} {} numa={:?}", d.id, d.health, d.numa_nodes))
            .collect(),
        ["restart"] => {
            kubelet.restart().await?;
            vec![]
        }
        ["quit"] | ["exit"] => return Ok(Reply::Quit),
        ["help"] => vec![
            "allocate POD CONTAINER RESOURCE COUNT [NUMA,..]".into(),
            "free POD".into(),
            "status".into(),
            "devices RESOURCE".into(),
            "restart".into(),
            "quit".into(),
        ],
        other => bail!("unknown command {:?}; try `help`", other.join(" ")),
    };
    Ok(Reply::Lines(lines))
}

/// `500ms`, `30s`, `5m`, `1h`, or a bare number of seconds.
fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits
        .parse()
        .with_context(|| format!("duration {s:?} has no number"))?;
    Ok(match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => bail!("duration {s:?}: unit must be ms, s, m or h"),
    })
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("5m").expect("5m"), Duration::from_secs(300));
        assert_eq!(
            parse_duration("250ms").expect("ms"),
            Duration::from_millis(250)
        );
        assert_eq!(parse_duration("7").expect("bare"), Duration::from_secs(7));
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("m").is_err());
    }
}
