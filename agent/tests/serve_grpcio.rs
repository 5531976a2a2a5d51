//! A kubelet written with another gRPC stack talks to the agent's plugin socket: real Python
//! grpcio clients with each `:authority` form real clients send (grpc C-core's percent-encoded
//! socket path, the raw path of grpc-java and of kubelets before 1.26, `localhost`) call
//! GetDevicePluginOptions, ListAndWatch and Allocate. Needs `python3 -m pip install grpcio
//! grpcio-tools`; without them the test fails, saying so.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Node, wait_watch};
use hostdev_agent::inventory::{DeviceKind, Member, PluginDevice, Resource};
use hostdev_agent::metrics::Metrics;
use hostdev_agent::plugin::{DevRoot, PinnedAddresses, PluginHandle, PluginSettings};

const INSTALL: &str = "python3 -m pip install grpcio grpcio-tools";

const CLIENT: &str = r#"
import json, sys
socket, stubs, authority = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, stubs)
import grpc
import deviceplugin_pb2 as pb
import deviceplugin_pb2_grpc as rpc
options = [] if authority == "default" else [("grpc.default_authority", authority)]
channel = grpc.insecure_channel("unix://" + socket, options=options)
plugin = rpc.DevicePluginStub(channel)
try:
    opts = plugin.GetDevicePluginOptions(pb.Empty(), timeout=10)
    first = next(iter(plugin.ListAndWatch(pb.Empty(), timeout=10)))
    r = plugin.Allocate(pb.AllocateRequest(container_requests=[
        pb.ContainerAllocateRequest(devices_ids=[first.devices[0].ID])]), timeout=10)
    c = r.container_responses[0]
    print(json.dumps({"ok": True, "preferred": opts.get_preferred_allocation_available,
                      "devices": [d.ID for d in first.devices], "envs": dict(c.envs),
                      "paths": [d.container_path for d in c.devices]}))
except grpc.RpcError as e:
    print(json.dumps({"ok": False, "code": e.code().name, "details": e.details()}))
"#;

fn stubs(dir: &Path) -> PathBuf {
    let check = Command::new("python3")
        .args(["-c", "import grpc, grpc_tools"])
        .output()
        .unwrap_or_else(|e| panic!("python3 is needed ({e}); then {INSTALL}"));
    assert!(
        check.status.success(),
        "grpcio is missing: {}; install it with: {INSTALL}",
        String::from_utf8_lossy(&check.stderr).trim()
    );
    let proto = Path::new(env!("CARGO_MANIFEST_DIR")).join("../api/proto");
    let out = Command::new("python3")
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(&proto)
        .arg(format!("--python_out={}", dir.display()))
        .arg(format!("--grpc_python_out={}", dir.display()))
        .arg(proto.join("deviceplugin.proto"))
        .output()
        .expect("running grpc_tools.protoc");
    assert!(out.status.success(), "protoc: {out:?}");
    dir.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_kubelets_with_every_authority_form_are_served() {
    let node = Node::new();
    std::fs::write(node.dev().join("vfio/12"), "").expect("group node");
    let fake = fake_kubelet::FakeKubelet::start(fake_kubelet::Config::new(node.plugins()))
        .await
        .expect("a kubelet to register with");
    let resource = Resource {
        name: "devices.kubevirt.io/nvme".into(),
        kind: DeviceKind::Pci,
        devices: vec![PluginDevice {
            id: "12".into(),
            healthy: true,
            numa_nodes: vec![0],
            members: vec![Member::Pci {
                address: "0000:05:00.0".into(),
                iommu_group: 12,
                numa_node: Some(0),
            }],
        }],
        notes: vec![],
    };
    let plugin = PluginHandle::start(
        resource,
        PinnedAddresses::default(),
        PluginSettings {
            plugin_dir: node.plugins(),
            dev_root: DevRoot::new(node.dev()),
            metrics: Metrics::new(),
        },
    );
    let mut registrations = plugin.registrations_watch();
    wait_watch(&mut registrations, "the first registration", |n| *n >= 1).await;
    let socket = plugin.socket_path().expect("a socket");
    let stub_dir = tempfile::tempdir().expect("temp dir");
    let stubs = stubs(stub_dir.path());
    let raw = socket.display().to_string();
    for authority in ["default", raw.as_str(), "localhost"] {
        let (socket, stubs, form) = (socket.clone(), stubs.clone(), authority.to_owned());
        let out = tokio::task::spawn_blocking(move || {
            Command::new("python3")
                .args(["-c", CLIENT])
                .arg(&socket)
                .arg(&stubs)
                .arg(&form)
                .output()
                .expect("run the grpcio client")
        })
        .await
        .expect("client thread");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let reply: serde_json::Value = serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("{e}: {stdout} {}", String::from_utf8_lossy(&out.stderr)));
        assert_eq!(reply["ok"], true, "authority {authority}: {reply}");
        assert_eq!(reply["devices"], serde_json::json!(["12"]), "{reply}");
        assert_eq!(
            reply["envs"]["PCI_RESOURCE_DEVICES_KUBEVIRT_IO_NVME"], "0000:05:00.0",
            "{reply}"
        );
        assert_eq!(
            reply["paths"],
            serde_json::json!(["/dev/vfio/vfio", "/dev/vfio/12"]),
            "{reply}"
        );
    }
    drop(plugin);
    fake.stop().await;
}
