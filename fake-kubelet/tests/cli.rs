//! The `fake-kubelet` program as a script would run it: stdin at /dev/null, closed or a pipe
//! that ends, driven by `fake-kubelet ctl` over its control socket, with a real plugin
//! registering to it, and stopped by a signal.

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use support::{Behaviour, TestPlugin, WAIT, healthy};
use tokio::io::AsyncWriteExt as _;
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_fake-kubelet");
const GPU: &str = "hostdev.io/gpu";

enum Stdin {
    DevNull,
    Closed,
    Piped,
}

/// A running `fake-kubelet --dir D`; its stdout and stderr go to files in a second temp dir,
/// shown when a test fails.
struct Served {
    dir: tempfile::TempDir,
    logs: tempfile::TempDir,
    child: Child,
}

impl Served {
    async fn start(stdin: Stdin) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let logs = tempfile::tempdir().expect("log tempdir");
        let file = |name: &str| std::fs::File::create(logs.path().join(name)).expect("log file");
        let mut cmd = Command::new(BIN);
        cmd.args(["--dir", path_str(dir.path()), "--seed", "9"])
            .args(["--grace-period", "1m"])
            .stdout(file("stdout"))
            .stderr(file("stderr"))
            .kill_on_drop(true);
        match stdin {
            Stdin::DevNull => {
                cmd.stdin(Stdio::null());
            }
            Stdin::Piped => {
                cmd.stdin(Stdio::piped());
            }
            Stdin::Closed => {
                cmd.stdin(Stdio::null());
                // SAFETY: close(2) is async-signal-safe; nothing else runs between fork and exec.
                unsafe {
                    cmd.pre_exec(|| nix::unistd::close(0).map_err(std::io::Error::from));
                }
            }
        }
        let child = cmd.spawn().expect("spawn fake-kubelet");
        let served = Self { dir, logs, child };
        served
            .poll("the control socket answers", async || {
                served.ctl(&["status"]).await.status.success().then_some(())
            })
            .await;
        served
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id().expect("child running")).expect("pid fits"))
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.logs.path().join(name)).unwrap_or_default()
    }

    async fn ctl(&self, args: &[&str]) -> Output {
        ctl_in(self.path(), args).await
    }

    /// `ctl --json ARGS`, which must succeed; the parsed result.
    async fn ctl_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.ctl(&all).await;
        assert!(out.status.success(), "ctl {args:?}: {}", describe(&out));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("ctl {args:?} printed no JSON ({e}): {}", describe(&out)))
    }

    async fn status(&self) -> Value {
        self.ctl_json(&["status"]).await
    }

    /// Re-checks `f` every few milliseconds until it yields, failing at the deadline.
    async fn poll<T>(&self, what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(v) = f().await {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not within {WAIT:?}; stderr:\n{}",
                self.log("stderr")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_for_resource(&self, want: Value) {
        self.poll(&format!("status shows {want}"), async || {
            let s = self.status().await;
            (s["resources"][GPU] == want).then_some(())
        })
        .await;
    }

    /// Sends `signal` and waits for the exit; the exit status.
    async fn signal_and_wait(&mut self, signal: Signal) -> std::process::ExitStatus {
        kill(self.pid(), signal).expect("send signal");
        self.wait().await
    }

    async fn wait(&mut self) -> std::process::ExitStatus {
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "still running after {WAIT:?}; stderr:\n{}",
                    self.log("stderr")
                )
            })
            .expect("wait for fake-kubelet");
        assert!(
            status.success(),
            "exit {status:?}; stderr:\n{}",
            self.log("stderr")
        );
        status
    }

    /// The kubelet's sockets are gone (plugins' own sockets are theirs to remove), and no
    /// staging directory of the control socket is left.
    fn assert_no_sockets(&self) {
        let left: Vec<PathBuf> = std::fs::read_dir(self.path())
            .expect("read dir")
            .map(|e| e.expect("dir entry").path())
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                name == "kubelet.sock" || name.contains("fake-kubelet.ctl")
            })
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- fake-kubelet stderr ---\n{}", self.log("stderr"));
        }
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

async fn ctl_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(["ctl", "--dir", path_str(dir)])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run fake-kubelet ctl")
}

fn describe(out: &Output) -> String {
    format!(
        "exit {:?}, stdout {:?}, stderr {:?}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn register(served: &Served, plugin: &TestPlugin) {
    plugin
        .register(&served.path().join("kubelet.sock"))
        .await
        .expect("plugin registers with the binary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_stdin_at_dev_null_it_serves_and_is_driven_by_ctl_until_sigterm() {
    let mut served = Served::start(Stdin::DevNull).await;
    let ctl_socket = served.path().join("fake-kubelet.ctl");
    let mode = std::fs::metadata(&ctl_socket)
        .expect("control socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "control socket mode {mode:o}");

    let mut plugin = TestPlugin::serve(
        served.path(),
        "p.sock",
        GPU,
        healthy(&["a", "b"]),
        Behaviour::default(),
    )
    .await;
    register(&served, &plugin).await;
    let full = json!({"capacity": 2, "allocatable": 2, "allocated": 0, "registered": true});
    served.wait_for_resource(full).await;
    assert_eq!(served.status().await["running"], json!(true));
    let text_status = served.ctl(&["status"]).await;
    assert_eq!(
        text(&text_status),
        "hostdev.io/gpu capacity=2 allocatable=2 allocated=0 registered=true\n"
    );
    assert_eq!(
        served.ctl_json(&["devices", GPU]).await,
        json!({"resource": GPU, "devices": [
            {"id": "a", "health": "Healthy", "numa_nodes": []},
            {"id": "b", "health": "Healthy", "numa_nodes": []},
        ]})
    );

    let a = served
        .ctl_json(&["allocate", "pod-1", "main", GPU, "1"])
        .await;
    let dev = a["devices"][0].as_str().expect("one device ID").to_owned();
    assert_eq!(a["devices"].as_array().map(Vec::len), Some(1), "{a}");
    assert_eq!(a["pod"], json!("pod-1"));
    assert_eq!(a["envs"], json!({"TEST_DEVICES": dev}));
    assert_eq!(
        a["device_specs"],
        json!([{"container_path": format!("/dev/test/{dev}"), "host_path": format!("/dev/test/{dev}"), "permissions": "rw"}])
    );
    assert_eq!(a["devices_by_numa"], json!({"-1": [dev]}));

    // Text output, and the kubelet's own refusal with exit 1.
    let other = if dev == "a" { "b" } else { "a" };
    let b = served.ctl(&["allocate", "pod-2", "main", GPU, "1"]).await;
    assert!(b.status.success(), "{}", describe(&b));
    assert_eq!(
        text(&b),
        format!("{other} envs={{\"TEST_DEVICES\": \"{other}\"}}\n")
    );
    let refused = served.ctl(&["allocate", "pod-3", "main", GPU, "1"]).await;
    assert_eq!(refused.status.code(), Some(1), "{}", describe(&refused));
    assert!(
        stderr(&refused).contains(
            "requested number of devices unavailable for hostdev.io/gpu. Requested: 1, Available: 0"
        ),
        "{}",
        describe(&refused)
    );
    assert!(refused.stdout.is_empty(), "{}", describe(&refused));
    let unknown = served.ctl(&["devices", "hostdev.io/none"]).await;
    assert_eq!(unknown.status.code(), Some(1), "{}", describe(&unknown));
    assert!(
        stderr(&unknown).contains("unknown resource hostdev.io/none"),
        "{}",
        describe(&unknown)
    );

    assert_eq!(
        served.ctl_json(&["free", "pod-1"]).await,
        json!({"pod": "pod-1", "freed": 1})
    );
    let again = served.ctl(&["free", "pod-1"]).await;
    assert_eq!(text(&again), "freed 0\n", "{}", describe(&again));

    // A kubelet restart: the plugin's socket is deleted, the resource stays with capacity 0
    // and pod-2's allocation, the control socket is back, and the plugin re-registers.
    let restarted = served.ctl(&["restart"]).await;
    assert!(restarted.status.success(), "{}", describe(&restarted));
    assert!(
        !plugin.socket.exists(),
        "restart deletes the plugin's socket"
    );
    let restored = json!({"capacity": 0, "allocatable": 0, "allocated": 1, "registered": false});
    assert_eq!(served.status().await["resources"][GPU], restored);
    plugin.reserve().await;
    register(&served, &plugin).await;
    let back = json!({"capacity": 2, "allocatable": 2, "allocated": 1, "registered": true});
    served.wait_for_resource(back).await;

    served.signal_and_wait(Signal::SIGTERM).await;
    served.assert_no_sockets();
    let checkpoint = std::fs::read_to_string(served.path().join("kubelet_internal_checkpoint"))
        .expect("checkpoint written");
    assert!(
        checkpoint.contains("pod-2") && !checkpoint.contains("pod-1"),
        "{checkpoint}"
    );
    assert!(
        served.log("stderr").contains("stopped (SIGTERM)"),
        "{}",
        served.log("stderr")
    );
    let gone = ctl_in(served.path(), &["status"]).await;
    assert_eq!(gone.status.code(), Some(2), "{}", describe(&gone));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_stdin_closed_it_serves_until_ctl_stop() {
    let mut served = Served::start(Stdin::Closed).await;
    // Rust reopens a closed fd 0 on /dev/null, so no socket can land on it.
    let fd0 =
        std::fs::read_link(format!("/proc/{}/fd/0", served.pid())).expect("fd 0 of the child");
    assert_eq!(fd0, Path::new("/dev/null"));
    let plugin = TestPlugin::serve(
        served.path(),
        "p.sock",
        GPU,
        healthy(&["a"]),
        Behaviour::default(),
    )
    .await;
    register(&served, &plugin).await;
    served
        .wait_for_resource(
            json!({"capacity": 1, "allocatable": 1, "allocated": 0, "registered": true}),
        )
        .await;
    let stop = served.ctl(&["stop"]).await;
    assert!(stop.status.success(), "{}", describe(&stop));
    assert!(stop.stdout.is_empty(), "{}", describe(&stop));
    served.wait().await;
    served.assert_no_sockets();
    assert!(served.log("stderr").contains("stopped (stop command)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_piped_stdin_is_the_console_and_its_end_does_not_stop_serving() {
    let mut served = Served::start(Stdin::Piped).await;
    let mut stdin = served.child.stdin.take().expect("piped stdin");
    stdin
        .write_all(b"status\nfrobnicate\nallocate p c hostdev.io/none 1\n")
        .await
        .expect("write console commands");
    drop(stdin);
    let want = "ok\nerror unknown command \"frobnicate\"; try `help`\n\
                error cannot allocate unregistered device hostdev.io/none\n";
    served
        .poll("console answers on stdout", async || {
            (served.log("stdout") == want).then_some(())
        })
        .await;
    served
        .poll("stdin's end is noticed", async || {
            served.log("stderr").contains("stdin ended").then_some(())
        })
        .await;
    let status = served.ctl(&["status"]).await;
    assert!(
        status.status.success(),
        "still serving after stdin ended: {}",
        describe(&status)
    );
    served.signal_and_wait(Signal::SIGINT).await;
    served.assert_no_sockets();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_commands_and_requests_exit_2_with_a_message() {
    let served = Served::start(Stdin::DevNull).await;
    for args in [
        &["frobnicate"][..],
        &["allocate", "pod", "main", GPU, "two"],
        &["allocate", "pod", "main", GPU, "1", "--numa", "x"],
        &["free"],
    ] {
        let out = served.ctl(args).await;
        assert_eq!(
            out.status.code(),
            Some(2),
            "ctl {args:?}: {}",
            describe(&out)
        );
        assert!(
            stderr(&out).contains("error:"),
            "ctl {args:?}: {}",
            describe(&out)
        );
    }
    // A request the server cannot parse (another client, or a newer ctl) is answered as such.
    use std::io::{BufRead as _, Write as _};
    let mut raw = std::os::unix::net::UnixStream::connect(served.path().join("fake-kubelet.ctl"))
        .expect("connect to the control socket");
    raw.write_all(b"{\"command\":\"explode\"}\n{\"command\":\"status\"}\n")
        .expect("send raw requests");
    let mut answers = std::io::BufReader::new(raw).lines();
    let bad: Value = serde_json::from_str(&answers.next().expect("an answer").expect("read"))
        .expect("JSON answer");
    assert_eq!(bad["status"], json!("bad_request"), "{bad}");
    assert!(
        bad["error"].as_str().is_some_and(|e| e.contains("explode")),
        "{bad}"
    );
    let ok: Value = serde_json::from_str(&answers.next().expect("a second answer").expect("read"))
        .expect("JSON answer");
    assert_eq!(
        ok,
        json!({"status": "ok", "result": {"running": true, "resources": {}}, "text": []})
    );
}

#[tokio::test]
async fn ctl_against_a_missing_dir_names_the_socket_path() {
    let parent = tempfile::tempdir().expect("tempdir");
    let missing = parent.path().join("no-such-dir");
    let out = ctl_in(&missing, &["status"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let socket = missing.join("fake-kubelet.ctl");
    assert!(
        stderr(&out).contains(path_str(&socket)) && stderr(&out).contains("no directory"),
        "{}",
        describe(&out)
    );
    // A directory with no kubelet in it: same exit, and the hint to start one.
    let out = ctl_in(parent.path(), &["--json", "status"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        stderr(&out).contains("is `fake-kubelet --dir"),
        "{}",
        describe(&out)
    );
}
