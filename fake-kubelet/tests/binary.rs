//! The `fake-kubelet` binary driven over stdin/stdout, with a real plugin registering to it.

mod support;

use std::process::Stdio;

use support::{Behaviour, TestPlugin, WAIT, healthy};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::Command;

/// Sends one command and collects answer lines up to and including `ok` or an `error` line.
async fn ask(
    stdin: &mut tokio::process::ChildStdin,
    stdout: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    command: &str,
) -> Vec<String> {
    stdin
        .write_all(format!("{command}\n").as_bytes())
        .await
        .expect("write command");
    let mut out = vec![];
    loop {
        let line = tokio::time::timeout(WAIT, stdout.next_line())
            .await
            .expect("answer in time")
            .expect("read stdout")
            .expect("binary still running");
        let end = line == "ok" || line.starts_with("error ");
        out.push(line);
        if end {
            return out;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_plugins_and_answers_commands_on_stdin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_fake-kubelet"))
        .args([
            "--dir",
            dir.path().to_str().expect("utf-8 path"),
            "--seed",
            "9",
            "--grace-period",
            "1m",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn fake-kubelet");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
    // The banner comes after the socket is bound.
    loop {
        let line = tokio::time::timeout(WAIT, stderr.next_line())
            .await
            .expect("banner in time")
            .expect("read stderr")
            .expect("binary running");
        if line.starts_with("fake-kubelet: serving") {
            break;
        }
    }
    let plugin = TestPlugin::serve(
        dir.path(),
        "p.sock",
        "hostdev.io/gpu",
        healthy(&["a", "b"]),
        Behaviour::default(),
    )
    .await;
    plugin
        .register(&dir.path().join("kubelet.sock"))
        .await
        .expect("registered with the binary");
    // The binary logs each device update on stderr; wait for the first one.
    loop {
        let line = tokio::time::timeout(WAIT, stderr.next_line())
            .await
            .expect("device update logged in time")
            .expect("read stderr")
            .expect("binary running");
        if line.contains("devices of hostdev.io/gpu updated") {
            break;
        }
    }
    let status = ask(&mut stdin, &mut stdout, "status").await;
    assert_eq!(
        status,
        vec![
            "hostdev.io/gpu capacity=2 allocatable=2 allocated=0 registered=true",
            "ok"
        ]
    );
    let alloc = ask(
        &mut stdin,
        &mut stdout,
        "allocate pod-1 main hostdev.io/gpu 1",
    )
    .await;
    assert_eq!(alloc.len(), 2, "{alloc:?}");
    assert!(alloc[0].contains("TEST_DEVICES"), "{alloc:?}");
    let too_many = ask(
        &mut stdin,
        &mut stdout,
        "allocate pod-2 main hostdev.io/gpu 2",
    )
    .await;
    assert_eq!(
        too_many,
        vec![
            "error requested number of devices unavailable for hostdev.io/gpu. Requested: 2, Available: 1"
        ]
    );
    assert_eq!(
        ask(&mut stdin, &mut stdout, "free pod-1").await,
        vec!["freed 1", "ok"]
    );
    stdin.write_all(b"quit\n").await.expect("quit");
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("exits")
        .expect("wait");
    assert!(status.success());
}
