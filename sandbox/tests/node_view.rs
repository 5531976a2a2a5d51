//! A process in a node's view sees the node's /sys, /dev and plugin dir, is PID 1 of its own
//! namespace, and changes nothing of the machine's mounts. Needs root (namespaces): without it
//! these tests fail, they do not skip.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use hostdev_sandbox::{Command, NodeView, SandboxError, Stdio};

struct Node {
    dir: tempfile::TempDir,
}

impl Node {
    fn new() -> Node {
        let dir = tempfile::tempdir().expect("temp dir");
        for d in ["sys/bus/pci/devices", "dev/vfio", "plugins", "scratch"] {
            std::fs::create_dir_all(dir.path().join(d)).expect("mkdir");
        }
        std::fs::write(dir.path().join("sys/marker"), "synthetic sysfs\n").expect("write");
        std::fs::write(dir.path().join("dev/vfio/7"), "").expect("write");
        Node { dir }
    }

    fn view(&self) -> NodeView {
        let p = self.dir.path();
        NodeView::new(p.join("sys"), p.join("dev"), p.join("scratch"))
            .with_plugin_dir(p.join("plugins"))
    }

    /// Runs `sh -c script` in the view; returns (exit code, stdout, stderr).
    fn sh(&self, script: &str) -> (Option<i32>, String, String) {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script])
            .stdin(Stdio::Null)
            .stdout(Stdio::Pipe)
            .stderr(Stdio::Pipe);
        let mut child = cmd.spawn(&self.view()).expect("spawn in the node's view");
        let mut out = String::new();
        let mut err = String::new();
        child
            .stdout
            .take()
            .expect("stdout pipe")
            .read_to_string(&mut out)
            .expect("read");
        child
            .stderr
            .take()
            .expect("stderr pipe")
            .read_to_string(&mut err)
            .expect("read");
        (child.wait().code(), out, err)
    }
}

fn mountinfo() -> Vec<String> {
    let mut lines: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .map(|l| {
            l.split_whitespace()
                .skip(3)
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    lines.sort();
    lines
}

#[test]
fn sys_dev_and_plugin_dir_are_the_nodes() {
    let node = Node::new();
    let (code, out, err) = node.sh(
        "cat /sys/marker; ls /dev/vfio; echo x > /dev/null && echo null-ok; \
         head -c 4 /dev/urandom | wc -c; touch /var/lib/kubelet/device-plugins/plugin.sock && echo touched",
    );
    assert_eq!(code, Some(0), "stderr: {err}");
    assert_eq!(out, "synthetic sysfs\n7\nnull-ok\n4\ntouched\n");
    assert!(
        node.dir.path().join("plugins/plugin.sock").exists(),
        "the plugin dir is the node's"
    );
    assert!(
        !Path::new("/var/lib/kubelet/device-plugins/plugin.sock").exists(),
        "nothing reached the machine's /var/lib/kubelet"
    );
}

#[test]
fn the_process_is_pid_1_with_a_proc_of_its_own() {
    let node = Node::new();
    let (code, out, err) = node.sh(
        "echo $$; ls /proc | grep -c '^[0-9][0-9]*$'; ls /proc/1/root/dev/vfio; ls -A /proc/bus | wc -l",
    );
    assert_eq!(code, Some(0), "stderr: {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1", "PID 1 of its namespace");
    let pids: usize = lines[1].parse().expect("a count");
    assert!(
        pids <= 4,
        "only the namespace's processes are in /proc, saw {pids}"
    );
    assert_eq!(lines[2], "7", "/proc/1/root/dev is the node's /dev");
    assert_eq!(
        lines[3], "0",
        "/proc/bus (the machine's PCI list) is covered"
    );
}

#[test]
fn the_rest_of_the_machine_stays_visible() {
    let node = Node::new();
    // /var/lib is re-offered entry by entry when the machine has no /var/lib/kubelet.
    let probe = std::fs::read_dir("/var/lib")
        .expect("/var/lib")
        .flatten()
        .find(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .expect("a directory in /var/lib");
    let (code, out, err) = node.sh(&format!(
        "test -d /var/lib/{probe} && echo seen; test -x /bin/sh && echo sh"
    ));
    assert_eq!(code, Some(0), "stderr: {err}");
    assert_eq!(out, "seen\nsh\n");
}

#[test]
fn nothing_is_left_mounted_on_the_machine() {
    let before = mountinfo();
    let node = Node::new();
    let (code, _, err) = node.sh("mount -t tmpfs none /mnt 2>/dev/null; true");
    assert_eq!(code, Some(0), "stderr: {err}");
    assert_eq!(
        mountinfo(),
        before,
        "the child's mounts stayed in its namespace"
    );
}

#[test]
fn exit_codes_and_signals_are_reported() {
    let node = Node::new();
    assert_eq!(node.sh("exit 3").0, Some(3));

    // PID 1 gets SIGTERM only if it handles it: this one does.
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "trap 'exit 7' TERM; echo ready; while :; do sleep 0.05; done",
    ])
    .stdout(Stdio::Pipe);
    let mut child = cmd.spawn(&node.view()).expect("spawn");
    let mut ready = [0u8; 6];
    child
        .stdout
        .take()
        .expect("pipe")
        .read_exact(&mut ready)
        .expect("ready line");
    let status = child.stop(Duration::from_secs(30));
    assert_eq!(status.code(), Some(7), "{status}");

    // `sleep` as PID 1 has no handler, so SIGTERM is ignored and the grace period ends in SIGKILL.
    let child = Command::new("sleep")
        .arg("1000")
        .spawn(&node.view())
        .expect("spawn");
    let status = child.stop(Duration::from_millis(100));
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    assert!(
        child.signal(libc::SIGTERM).is_err(),
        "no signal reaches an exited child"
    );
}

#[test]
fn on_exit_is_called_with_the_status() {
    let node = Node::new();
    let (tx, rx) = std::sync::mpsc::channel();
    let child = Command::new("sh")
        .args(["-c", "exit 5"])
        .on_exit(move |s| tx.send(s.code()).expect("send"))
        .spawn(&node.view())
        .expect("spawn");
    assert_eq!(rx.recv().expect("called"), Some(5));
    assert_eq!(child.wait().code(), Some(5));
}

#[test]
fn errors_name_what_went_wrong() {
    let node = Node::new();
    match Command::new("no-such-agent-binary").spawn(&node.view()) {
        Err(SandboxError::NotFound { program, .. }) => assert_eq!(program, "no-such-agent-binary"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("spawned a missing program"),
    }
    let mut view = node.view();
    view.sys = node.dir.path().join("missing");
    let e = Command::new("true")
        .spawn(&view)
        .err()
        .expect("a missing sysfs is refused");
    assert!(
        e.to_string().contains("missing") && e.to_string().contains("sysfs"),
        "{e}"
    );

    std::fs::write(node.dir.path().join("not-exec"), "#!/bin/sh\n").expect("write");
    let e = Command::new(node.dir.path().join("not-exec"))
        .spawn(&node.view())
        .err()
        .expect("a non-executable file is refused");
    assert!(
        e.to_string().contains("not-exec") && e.to_string().contains("denied"),
        "{e}"
    );
}

#[test]
fn a_layer_puts_files_where_an_agent_hard_codes_them() {
    let node = Node::new();
    let layer = node.dir.path().join("layer");
    std::fs::create_dir(&layer).expect("mkdir");
    std::fs::write(
        layer.join("hostdev-sandbox-test-helper"),
        "#!/bin/sh\necho helper ran\n",
    )
    .expect("write");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        layer.join("hostdev-sandbox-test-helper"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "/usr/bin/hostdev-sandbox-test-helper && test -x /usr/bin/sh && echo sh-still-there",
    ])
    .stdout(Stdio::Pipe);
    let mut child = cmd
        .spawn(&node.view().with_layer(&layer, "/usr/bin"))
        .expect("spawn");
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("pipe")
        .read_to_string(&mut out)
        .expect("read");
    assert_eq!(child.wait().code(), Some(0), "{out}");
    assert_eq!(out, "helper ran\nsh-still-there\n");
    assert!(
        !Path::new("/usr/bin/hostdev-sandbox-test-helper").exists(),
        "the machine's /usr/bin is untouched"
    );
}
