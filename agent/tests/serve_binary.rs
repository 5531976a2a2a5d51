//! The built `hostdev-agent` binary: serving a fixture node to the fake kubelet, stopping
//! cleanly on SIGTERM, `discover` output, and exit codes for bad command lines.

mod common;

use std::process::{Command, Stdio};

use common::{DEADLINE, Node, config_yaml, path_str};
use fake_kubelet::{Config, FakeKubelet, State};

const BINARY: &str = env!("CARGO_BIN_EXE_hostdev-agent");
const GPU: &str = "nvidia.com/TU104GL_Tesla_T4";

fn command(node: &Node) -> Command {
    let mut command = Command::new(BINARY);
    command
        .arg("--config")
        .arg(node.config_file())
        .arg("--sysfs-root")
        .arg(node.sys())
        .arg("--dev-root")
        .arg(node.dev())
        .arg("--device-plugin-dir")
        .arg(node.plugins())
        .arg("--metrics-addr")
        .arg("off")
        .env_remove("NODE_NAME")
        .env_remove("HOSTDEV_CONFIG");
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_and_stops_cleanly_on_sigterm() {
    let node = Node::new();
    node.add_pci("0000:65:00.0", 0x10de, 0x1eb8, 12, 0, Some("vfio-pci"));
    node.write_config(&config_yaml(&[("10DE:1EB8", GPU)], &[]));
    let kubelet = FakeKubelet::start(Config::new(node.plugins()))
        .await
        .expect("fake kubelet");
    let mut child = command(&node)
        .env("NODE_NAME", "node-1")
        .args(["--log-format", "json"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the agent");
    let registered = kubelet
        .wait_for(
            |s: &State| {
                s.devices(GPU)
                    .is_some_and(|d| d.len() == 1 && d[0].is_healthy())
            },
            DEADLINE,
        )
        .await;
    if registered.is_err() {
        let _ = child.kill();
        let output = child.wait_with_output().expect("agent output");
        panic!(
            "never served; agent log:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("wait");
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {:?}; log:\n{log}",
        output.status
    );
    assert!(
        log.lines().all(|l| l.starts_with('{')),
        "JSON log lines only:\n{log}"
    );
    assert!(log.contains("starting plugin"), "{log}");
    assert!(
        node.plugin_sockets().is_empty(),
        "sockets removed: {:?}",
        node.plugin_sockets()
    );
    kubelet
        .wait_for(|s: &State| s.node_status().allocatable(GPU) == 0, DEADLINE)
        .await
        .expect("the kubelet stops offering the devices");
    kubelet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_comes_back_with_capacity_and_no_stale_socket() {
    // KubeVirt #16602: capacity dropped to 0 after a plugin crash.
    let node = Node::new();
    node.add_pci("0000:65:00.0", 0x10de, 0x1eb8, 12, 0, Some("vfio-pci"));
    node.write_config(&config_yaml(&[("10DE:1EB8", GPU)], &[]));
    let kubelet = FakeKubelet::start(Config::new(node.plugins()))
        .await
        .expect("fake kubelet");
    let healthy = |s: &State| s.resource_status(GPU).map(|r| (r.capacity, r.allocatable));
    let mut first = command(&node)
        .env("NODE_NAME", "node-1")
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    kubelet
        .wait_for(|s: &State| healthy(s) == Some((1, 1)), DEADLINE)
        .await
        .expect("served");
    let killed_socket = node.plugin_sockets();
    assert_eq!(killed_socket.len(), 1);

    first.kill().expect("SIGKILL");
    let _ = first.wait();
    kubelet
        .wait_for(|s: &State| healthy(s) == Some((1, 0)), DEADLINE)
        .await
        .expect("capacity stays, nothing allocatable while the agent is down");
    assert!(killed_socket[0].exists(), "a killed agent cannot clean up");

    let mut second = command(&node)
        .env("NODE_NAME", "node-1")
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    kubelet
        .wait_for(|s: &State| healthy(s) == Some((1, 1)), DEADLINE)
        .await
        .expect("served again");
    assert!(
        !killed_socket[0].exists(),
        "the dead agent's socket is removed"
    );
    assert_eq!(
        node.plugin_sockets().len(),
        1,
        "{:?}",
        node.plugin_sockets()
    );
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(second.id() as i32, libc::SIGTERM) };
    let status = tokio::task::spawn_blocking(move || second.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(status.success(), "{status:?}");
    kubelet.stop().await;
}

#[test]
fn discover_explains_what_is_advertised_and_what_is_not() {
    let node = Node::new();
    node.add_pci("0000:65:00.0", 0x10de, 0x1eb8, 12, 0, Some("vfio-pci"));
    node.add_pci("0000:66:00.0", 0x10de, 0x1eb8, 13, 0, Some("nvidia"));
    node.write_config(&config_yaml(&[("10DE:1EB8", GPU)], &[]));
    let output = command(&node)
        .arg("discover")
        .output()
        .expect("run discover");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains(GPU), "{text}");
    assert!(text.contains("0000:65:00.0"), "{text}");
    assert!(
        text.contains("0000:66:00.0") && text.contains("nvidia"),
        "the skip and its reason: {text}"
    );
    assert!(node.plugin_sockets().is_empty(), "discover serves nothing");

    let json = command(&node)
        .args(["discover", "--output", "json"])
        .output()
        .expect("run discover");
    assert!(json.status.success());
    let parsed: serde_json::Value = serde_json::from_slice(&json.stdout).expect("valid JSON");
    assert!(parsed.to_string().contains("0000:66:00.0"), "{parsed}");
}

#[test]
fn bad_command_lines_fail_with_a_message_naming_the_problem() {
    let node = Node::new();
    node.write_config(&config_yaml(&[("10DE:1EB8", GPU)], &[]));
    let no_node = command(&node).output().expect("run");
    assert_eq!(no_node.status.code(), Some(1));
    let message = String::from_utf8_lossy(&no_node.stderr);
    assert!(message.contains("--node-name"), "{message}");

    let bad_resync = command(&node)
        .args(["--node-name", "n", "--resync", "soon"])
        .output()
        .expect("run");
    assert_eq!(bad_resync.status.code(), Some(2), "clap's usage error");
    assert!(String::from_utf8_lossy(&bad_resync.stderr).contains("soon"));

    let missing = Command::new(BINARY)
        .args([
            "discover",
            "--config",
            &path_str(&node.dir.path().join("absent.yaml")),
        ])
        .output()
        .expect("run");
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("absent.yaml"));
}
