//! The example Python grpcio plugin (examples/grpcio-plugin/plugin.py) against the fake kubelet,
//! in process, over real unix sockets: it registers (grpcio's own `:authority`, the percent-encoded
//! socket path), lists the USB devices of a directory laid out like sysfs, answers Allocate,
//! registers again after a kubelet restart, drops an unplugged device and exits cleanly on SIGTERM.
//! Needs `python3 -m pip install grpcio grpcio-tools`; without them the test fails, saying so.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fake_kubelet::{AllocationRequest, KubeletEvent, wait_for_event};

const RESOURCE: &str = "example.com/widget";
const ENV: &str = "USB_RESOURCE_EXAMPLE_COM_WIDGET";
/// Python starts, imports grpc and rescans at 0.2 s: generous, only reached when broken.
const WAIT: Duration = Duration::from_secs(30);
const INSTALL: &str = "python3 -m pip install grpcio grpcio-tools";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn require_grpcio() {
    let check = Command::new("python3")
        .args(["-c", "import grpc, grpc_tools"])
        .output();
    match check {
        Err(e) => panic!(
            "python3 is needed to run the grpcio example plugin ({e}); install Python 3, then {INSTALL}"
        ),
        Ok(o) if !o.status.success() => panic!(
            "grpcio is missing: {}; install it with: {INSTALL}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Ok(_) => {}
    }
}

fn generate_stubs(out: &Path) {
    let proto = repo().join("api/proto");
    let status = Command::new("python3")
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(&proto)
        .arg(format!("--python_out={}", out.display()))
        .arg(format!("--grpc_python_out={}", out.display()))
        .arg(proto.join("deviceplugin.proto"))
        .status()
        .expect("running grpc_tools.protoc");
    assert!(
        status.success(),
        "grpc_tools.protoc failed on {}",
        proto.display()
    );
}

/// One USB device in the sysfs-like tree, and its node under dev/.
fn plug(root: &Path, name: &str, vendor: &str, product: &str, bus: u32, devnum: u32) {
    let dir = root.join("sys/bus/usb/devices").join(name);
    std::fs::create_dir_all(&dir).expect("device dir");
    for (file, value) in [
        ("idVendor", vendor.to_string()),
        ("idProduct", product.to_string()),
        ("busnum", bus.to_string()),
        ("devnum", devnum.to_string()),
    ] {
        std::fs::write(dir.join(file), format!("{value}\n")).expect("attribute");
    }
    let node = root.join(format!("dev/bus/usb/{bus:03}/{devnum:03}"));
    std::fs::create_dir_all(node.parent().unwrap()).expect("node dir");
    std::fs::write(node, "").expect("node");
}

/// The plugin process; killed if the test ends before it exits by itself.
struct PluginProcess {
    child: Child,
    log: PathBuf,
}

impl PluginProcess {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for PluginProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            eprintln!("plugin log:\n{}", self.log());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_example_plugin_registers_lists_allocates_reregisters_and_follows_unplug() {
    require_grpcio();
    let root = tempfile::tempdir().expect("tempdir");
    let root = root.path();
    let plugins = root.join("device-plugins");
    let stubs = root.join("stubs");
    std::fs::create_dir_all(&stubs).expect("stubs dir");
    generate_stubs(&stubs);
    plug(root, "1-2", "1234", "5678", 1, 2);
    plug(root, "1-3", "1234", "5678", 1, 3);
    plug(root, "2-1", "abcd", "0001", 2, 1); // another product: not served
    std::fs::create_dir_all(root.join("sys/bus/usb/devices/1-2:1.0")).expect("interface");

    let kubelet = support::kubelet_in(&plugins, Duration::from_secs(300)).await;
    let mut events = kubelet.subscribe();
    let log = root.join("plugin.log");
    let child = Command::new("python3")
        .arg(repo().join("examples/grpcio-plugin/plugin.py"))
        .arg("--plugin-dir")
        .arg(&plugins)
        .arg("--sysfs-root")
        .arg(root.join("sys"))
        .arg("--dev-root")
        .arg(root.join("dev"))
        .args([
            "--usb",
            "1234:5678",
            "--resource",
            RESOURCE,
            "--rescan-interval",
            "0.2",
        ])
        .arg("--stubs")
        .arg(&stubs)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("starting python3 plugin.py");
    let mut plugin = PluginProcess { child, log };

    let registered = |e: &KubeletEvent| matches!(e, KubeletEvent::Registered { resource, .. } if resource == RESOURCE);
    if let Err(e) = wait_for_event(&mut events, WAIT, registered).await {
        panic!(
            "plugin never registered: {e}\nplugin log:\n{}",
            plugin.log()
        );
    }
    let listed = |want: &'static [&'static str]| {
        move |s: &fake_kubelet::State| {
            s.devices(RESOURCE).is_some_and(|d| {
                d.iter()
                    .filter(|d| d.is_healthy())
                    .map(|d| d.id.as_str())
                    .collect::<Vec<_>>()
                    == want
            })
        }
    };
    if let Err(e) = kubelet.wait_for(listed(&["1-2", "1-3"]), WAIT).await {
        panic!("devices not listed: {e}\nplugin log:\n{}", plugin.log());
    }

    let got = kubelet
        .allocate(AllocationRequest::new("pod-1", "main", RESOURCE, 1))
        .await
        .unwrap_or_else(|e| panic!("allocate: {e}\nplugin log:\n{}", plugin.log()));
    assert_eq!(got.device_ids.len(), 1);
    let (bus, devnum) = if got.device_ids[0] == "1-2" {
        (1, 2)
    } else {
        (1, 3)
    };
    assert_eq!(got.response.envs[ENV], format!("{bus}:{devnum}"));
    assert_eq!(got.response.devices.len(), 1);
    let spec = &got.response.devices[0];
    assert_eq!(
        spec.container_path,
        format!("/dev/bus/usb/{bus:03}/{devnum:03}")
    );
    assert_eq!(
        Path::new(&spec.host_path),
        root.join(format!("dev/bus/usb/{bus:03}/{devnum:03}"))
    );
    assert_eq!(spec.permissions, "mrw");

    kubelet.restart().await.expect("kubelet restarts");
    if let Err(e) = wait_for_event(&mut events, WAIT, registered).await {
        panic!(
            "plugin did not register again after the restart: {e}\nplugin log:\n{}",
            plugin.log()
        );
    }
    if let Err(e) = kubelet.wait_for(listed(&["1-2", "1-3"]), WAIT).await {
        panic!(
            "devices not listed after the restart: {e}\nplugin log:\n{}",
            plugin.log()
        );
    }

    std::fs::remove_dir_all(root.join("sys/bus/usb/devices/1-3")).expect("unplug 1-3");
    std::fs::remove_file(root.join("dev/bus/usb/001/003")).expect("node of 1-3");
    let gone = |s: &fake_kubelet::State| {
        s.devices(RESOURCE)
            .is_some_and(|d| d.iter().map(|d| d.id.as_str()).collect::<Vec<_>>() == ["1-2"])
    };
    if let Err(e) = kubelet.wait_for(gone, WAIT).await {
        panic!(
            "unplugged device still listed: {e}\nplugin log:\n{}",
            plugin.log()
        );
    }

    let socket = plugins.join("grpcio-widget.sock");
    assert!(socket.exists(), "plugin socket {} served", socket.display());
    let pid = plugin.child.id().to_string();
    let sent = Command::new("sh")
        .args(["-c", &format!("kill -TERM {pid}")])
        .status()
        .expect("kill");
    assert!(sent.success());
    let deadline = std::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = plugin.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "plugin ignored SIGTERM\n{}",
            plugin.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        status.success(),
        "plugin exit status {status}\nplugin log:\n{}",
        plugin.log()
    );
    assert!(!socket.exists(), "plugin removed its socket on exit");
    kubelet.stop().await;
}
