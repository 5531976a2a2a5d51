//! The stdin console: one command per line, answered on stdout with the result's lines and then
//! `ok`, or with one `error TEXT` line.
//!
//! ```text
//! allocate POD CONTAINER RESOURCE COUNT [NUMA,NUMA..]   (or --numa NUMA,..)
//! free POD | status | devices RESOURCE | restart | help
//! quit | exit | stop                                    stop serving and exit
//! ```
//!
//! The end of stdin only ends the console: the kubelet keeps serving until a signal or `stop`.

use std::io::{BufRead as _, Write as _};

use tokio::sync::mpsc;

use super::Command;

/// What one console line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleLine {
    Empty,
    Help,
    Run(Command),
}

pub const HELP: &[&str] = &[
    "allocate POD CONTAINER RESOURCE COUNT [NUMA,..]",
    "free POD",
    "status",
    "devices RESOURCE",
    "restart",
    "stop (or quit, exit)",
];

/// Parses one console line. The error is the text shown after `error `.
pub fn parse(line: &str) -> Result<ConsoleLine, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let command = match words.as_slice() {
        [] => return Ok(ConsoleLine::Empty),
        ["help"] => return Ok(ConsoleLine::Help),
        ["allocate", pod, container, resource, count, rest @ ..] => {
            let count = count
                .parse()
                .map_err(|_| format!("COUNT {count:?} is not a number"))?;
            let numa = match rest {
                [] => None,
                [nodes] | ["--numa", nodes] => Some(parse_numa(nodes)?),
                _ => return Err(format!("unexpected {:?} after COUNT", rest.join(" "))),
            };
            Command::Allocate {
                pod: (*pod).into(),
                container: (*container).into(),
                resource: (*resource).into(),
                count,
                numa,
            }
        }
        ["free", pod] => Command::Free { pod: (*pod).into() },
        ["status"] => Command::Status,
        ["devices", resource] => Command::Devices {
            resource: (*resource).into(),
        },
        ["restart"] => Command::Restart,
        ["stop"] | ["quit"] | ["exit"] => Command::Stop,
        other => return Err(format!("unknown command {:?}; try `help`", other.join(" "))),
    };
    Ok(ConsoleLine::Run(command))
}

fn parse_numa(nodes: &str) -> Result<Vec<i64>, String> {
    nodes
        .split(',')
        .map(|n| {
            n.parse()
                .map_err(|_| format!("NUMA node {n:?} is not a number"))
        })
        .collect()
}

/// Writes one answer to stdout. Errors are ignored: a closed stdout must not stop the kubelet.
pub fn print(lines: &[String]) {
    let mut out = std::io::stdout().lock();
    for l in lines {
        let _ = writeln!(out, "{l}");
    }
    let _ = out.flush();
}

/// Reads stdin on a plain thread and forwards lines; the channel closes at end of input or on a
/// read error. Not `tokio::io::stdin`: its read cannot be cancelled and would hold up runtime
/// shutdown on a terminal until Enter. The thread is left blocked in `read` when we exit.
/// A closed fd 0 needs no care here: Rust's runtime reopens closed standard fds on /dev/null
/// before `main`, so it reads as an empty input (and no socket can take fd 0).
pub fn spawn_stdin_reader() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(16);
    let spawned = std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.blocking_send(line).is_err() {
                    break;
                }
            }
        });
    if let Err(e) = spawned {
        // The sender went with the closure, so the console just sees an empty input.
        tracing::warn!("cannot start the stdin reader thread: {e}");
    }
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_lines_parse_into_commands() {
        assert_eq!(parse("  "), Ok(ConsoleLine::Empty));
        assert_eq!(parse("help"), Ok(ConsoleLine::Help));
        let alloc = |numa| {
            Ok(ConsoleLine::Run(Command::Allocate {
                pod: "p".into(),
                container: "c".into(),
                resource: "r".into(),
                count: 2,
                numa,
            }))
        };
        assert_eq!(parse("allocate p c r 2"), alloc(None));
        assert_eq!(parse("allocate p c r 2 0,1"), alloc(Some(vec![0, 1])));
        assert_eq!(parse("allocate p c r 2 --numa 1"), alloc(Some(vec![1])));
        assert_eq!(parse("quit"), Ok(ConsoleLine::Run(Command::Stop)));
        assert_eq!(
            parse("devices r"),
            Ok(ConsoleLine::Run(Command::Devices {
                resource: "r".into()
            }))
        );
    }

    #[test]
    fn bad_console_lines_say_what_is_wrong() {
        assert_eq!(
            parse("allocate p c r two"),
            Err("COUNT \"two\" is not a number".into())
        );
        assert_eq!(
            parse("allocate p c r 1 0,x"),
            Err("NUMA node \"x\" is not a number".into())
        );
        assert_eq!(
            parse("frobnicate now"),
            Err("unknown command \"frobnicate now\"; try `help`".into())
        );
    }
}
