//! Real Python grpcio clients against a real tonic server over a real unix socket, for each
//! `:authority` grpcio can send. Needs `python3 -m pip install grpcio grpcio-tools`; without them
//! every test here fails, saying so.

mod authority_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use authority_support::{LIST_AND_WATCH_MESSAGES, serve};

const INSTALL: &str = "python3 -m pip install grpcio grpcio-tools";

/// The client: Register, then `allocations` Allocate calls on the same channel (the HPACK
/// dynamic table of grpcio's encoder fills and gets reused), then a whole ListAndWatch. Prints
/// one JSON line: what happened, or the gRPC error code and details.
const CLIENT: &str = r#"
import json, sys
cfg = json.loads(sys.argv[1])
sys.path.insert(0, cfg["stubs"])
import grpc
import deviceplugin_pb2 as pb
import deviceplugin_pb2_grpc as rpc

options = []
if "authority" in cfg:
    options.append(("grpc.default_authority", cfg["authority"]))
channel = grpc.insecure_channel("unix://" + cfg["socket"], options=options)
out = {"ok": True, "allocations": [], "list_and_watch": []}
try:
    rpc.RegistrationStub(channel).Register(
        pb.RegisterRequest(version="v1beta1", endpoint="widget.sock",
                           resource_name="example.com/widget"), timeout=10)
    plugin = rpc.DevicePluginStub(channel)
    for i in range(cfg.get("allocations", 0)):
        r = plugin.Allocate(
            pb.AllocateRequest(container_requests=[
                pb.ContainerAllocateRequest(devices_ids=["dev-%d" % i, "dev-x"])]),
            metadata=[("x-call", str(i)), ("x-padding", "p" * (i % 7) * 50)], timeout=10)
        c = r.container_responses[0]
        out["allocations"].append([c.envs["DEVICES"], c.envs["CALL"], [d.host_path for d in c.devices]])
    for m in plugin.ListAndWatch(pb.Empty(), timeout=10):
        out["list_and_watch"].append(len(m.devices))
except grpc.RpcError as e:
    out = {"ok": False, "code": e.code().name, "details": e.details()}
print(json.dumps(out))
"#;

/// Python stubs generated once per test process from the crate's proto, with grpc_tools.
fn stubs() -> &'static Path {
    static STUBS: OnceLock<PathBuf> = OnceLock::new();
    STUBS.get_or_init(|| {
        let check = Command::new("python3")
            .args(["-c", "import grpc, grpc_tools; print(grpc.__version__)"])
            .output();
        match check {
            Err(e) => panic!(
                "python3 is needed for the grpcio tests ({e}); install Python 3, then {INSTALL}"
            ),
            Ok(o) if !o.status.success() => panic!(
                "grpcio is missing for the grpcio tests: {}; install it with: {INSTALL}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Ok(_) => {}
        }
        let dir = tempfile::Builder::new()
            .prefix("grpcio-stubs")
            .tempdir()
            .expect("tempdir")
            .keep();
        let proto = Path::new(env!("CARGO_MANIFEST_DIR")).join("proto");
        let out = Command::new("python3")
            .args(["-m", "grpc_tools.protoc", "-I"])
            .arg(&proto)
            .arg(format!("--python_out={}", dir.display()))
            .arg(format!("--grpc_python_out={}", dir.display()))
            .arg(proto.join("deviceplugin.proto"))
            .output()
            .expect("running grpc_tools.protoc");
        assert!(
            out.status.success(),
            "grpc_tools.protoc failed on {}: {}",
            proto.join("deviceplugin.proto").display(),
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

/// Runs the client in its own thread so the tokio runtime keeps serving.
async fn run_client(
    socket: &Path,
    authority: Option<&str>,
    allocations: usize,
) -> serde_json::Value {
    let mut cfg = serde_json::json!({
        "stubs": stubs(),
        "socket": socket,
        "allocations": allocations,
    });
    if let Some(a) = authority {
        cfg["authority"] = a.into();
    }
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args(["-c", CLIENT, &cfg.to_string()])
            .output()
            .expect("running python3")
    })
    .await
    .expect("client thread");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "grpcio client failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("client said {stdout:?}: {e}"))
}

fn assert_served(got: &serde_json::Value, allocations: usize) {
    assert_eq!(got["ok"], true, "grpcio call failed: {got}");
    let allocs = got["allocations"].as_array().expect("allocations");
    assert_eq!(allocs.len(), allocations);
    for (i, a) in allocs.iter().enumerate() {
        assert_eq!(
            a,
            &serde_json::json!([
                format!("dev-{i},dev-x"),
                i.to_string(),
                [format!("/dev/dev-{i}"), "/dev/dev-x"]
            ]),
            "allocation {i} answered with another call's data"
        );
    }
    let expected: Vec<usize> = (1..=LIST_AND_WATCH_MESSAGES).collect();
    assert_eq!(got["list_and_watch"], serde_json::json!(expected));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_layer_grpcio_is_reset_with_protocol_error() {
    let server = serve(false).await;
    let got = run_client(&server.socket, None, 0).await;
    assert_eq!(
        got["ok"], false,
        "plain tonic accepted grpcio's authority: {got}"
    );
    assert_eq!(got["code"], "INTERNAL", "{got}");
    let details = got["details"].as_str().unwrap_or_default();
    assert!(
        details.contains("RST_STREAM") && details.contains("error code 1"),
        "expected RST_STREAM with error code 1 (PROTOCOL_ERROR), got {got}"
    );
    assert!(
        server.record.seen().is_empty(),
        "no request reached a service"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_percent_encoded_path_is_served_as_localhost() {
    let server = serve(true).await;
    let got = run_client(&server.socket, None, 20).await;
    assert_served(&got, 20);
    let authorities = server.record.authorities();
    assert_eq!(
        authorities.len(),
        22,
        "register + 20 allocate + list-and-watch"
    );
    assert!(
        authorities
            .iter()
            .all(|a| a.as_deref() == Some("localhost")),
        "{authorities:?}"
    );
    let registered = server.record.registered.lock().unwrap().clone();
    assert_eq!(registered.len(), 1);
    assert_eq!(registered[0].resource_name, "example.com/widget");
    assert_eq!(registered[0].endpoint, "widget.sock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_socket_path_as_default_authority_is_served_as_localhost() {
    let server = serve(true).await;
    let raw = server.socket.display().to_string();
    let got = run_client(&server.socket, Some(&raw), 3).await;
    assert_served(&got, 3);
    assert!(
        server
            .record
            .authorities()
            .iter()
            .all(|a| a.as_deref() == Some("localhost")),
        "{:?}",
        server.record.authorities()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn localhost_is_kept() {
    let server = serve(true).await;
    let got = run_client(&server.socket, Some("localhost"), 3).await;
    assert_served(&got, 3);
    assert!(
        server
            .record
            .authorities()
            .iter()
            .all(|a| a.as_deref() == Some("localhost")),
        "{:?}",
        server.record.authorities()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_valid_authority_is_kept_as_sent() {
    let server = serve(true).await;
    let got = run_client(&server.socket, Some("widget.example:8443"), 3).await;
    assert_served(&got, 3);
    assert!(
        server
            .record
            .authorities()
            .iter()
            .all(|a| a.as_deref() == Some("widget.example:8443")),
        "{:?}",
        server.record.authorities()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_authority_is_served() {
    let server = serve(true).await;
    let got = run_client(&server.socket, Some(""), 3).await;
    assert_served(&got, 3);
    // Whether grpcio sends "" or falls back to its default, h2 would reject either; the raw
    // client's test sends an empty :authority itself.
    assert!(
        server
            .record
            .authorities()
            .iter()
            .all(|a| a.as_deref() == Some("localhost")),
        "{:?}",
        server.record.authorities()
    );
}
