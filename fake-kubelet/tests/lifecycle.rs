//! Start, checkpoint, restart, stop and kill, as a plugin sees them.

mod support;

use std::os::unix::fs::FileTypeExt as _;
use std::time::Duration;

use base64::Engine as _;
use fake_kubelet::{AllocationRequest, KubeletEvent, wait_for_event};
use hostdev_api::v1beta1::ContainerAllocateResponse;
use prost::Message as _;
use support::{Behaviour, WAIT, healthy, kubelet, kubelet_in, registered};

const GPU: &str = "hostdev.io/gpu";
const LONG_GRACE: Duration = Duration::from_secs(300);

fn is_socket(p: &std::path::Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_removes_stale_sockets_but_keeps_the_checkpoint_and_other_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stale = dir.path().join("stale.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&stale).expect("stale socket");
    std::fs::write(dir.path().join("notes.txt"), "keep me").expect("file");
    let kubelet = kubelet_in(dir.path(), LONG_GRACE).await;
    assert!(!stale.exists(), "stale socket removed");
    assert!(dir.path().join("notes.txt").exists(), "regular files stay");
    assert!(is_socket(&kubelet.socket_path()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkpoint_after_each_change_round_trips_through_a_restart() {
    let (_dir, kubelet) = kubelet(LONG_GRACE).await;
    let mut plugin = registered(
        &kubelet,
        "p.sock",
        GPU,
        healthy(&["a", "b", "c"]),
        Behaviour::default(),
    )
    .await;
    let got = kubelet
        .allocate(AllocationRequest::new("pod-1", "main", GPU, 2))
        .await
        .expect("allocated");

    kubelet.flush_checkpoint().await;
    let text = std::fs::read_to_string(kubelet.checkpoint_path()).expect("checkpoint written");
    let json: serde_json::Value = serde_json::from_str(&text).expect("json");
    let entry = &json["Data"]["PodDeviceEntries"][0];
    assert_eq!(entry["PodUID"], "pod-1");
    assert_eq!(entry["ContainerName"], "main");
    assert_eq!(entry["ResourceName"], GPU);
    assert_eq!(entry["DeviceIDs"]["-1"], serde_json::json!(got.device_ids));
    let resp_bytes = base64::engine::general_purpose::STANDARD
        .decode(entry["AllocResp"].as_str().expect("string"))
        .expect("base64");
    let resp = ContainerAllocateResponse::decode(resp_bytes.as_slice()).expect("protobuf");
    assert_eq!(resp, got.response);
    assert_eq!(
        json["Data"]["RegisteredDevices"][GPU],
        serde_json::json!(["a", "b", "c"])
    );
    assert!(json["Checksum"].is_u64());

    let mut events = kubelet.subscribe();
    kubelet.restart().await.expect("restarted");
    wait_for_event(&mut events, WAIT, |e| {
        matches!(e, KubeletEvent::Started { .. })
    })
    .await
    .expect("started again");
    assert!(
        !plugin.socket.exists(),
        "plugin sockets are deleted on restart"
    );
    assert!(
        is_socket(&kubelet.socket_path()),
        "kubelet.sock served again"
    );
    // Allocations kept, the resource known with capacity 0 until its plugin re-registers.
    assert_eq!(kubelet.pod_allocations("pod-1"), vec![got.clone()]);
    let status = kubelet.node_status();
    assert_eq!(status.resources[GPU].capacity, 0);
    assert_eq!(status.resources[GPU].allocated, 2);
    assert!(!kubelet.with_state(|s| s.is_registered(GPU)));
    let err = kubelet
        .allocate(AllocationRequest::new("pod-2", "main", GPU, 1))
        .await
        .expect_err("nothing healthy before re-registration");
    assert_eq!(
        err.to_string(),
        "no healthy devices present; cannot allocate unhealthy devices hostdev.io/gpu"
    );

    plugin.reserve().await;
    plugin
        .register(&kubelet.socket_path())
        .await
        .expect("re-registered");
    kubelet
        .wait_for(|s| s.node_status().allocatable(GPU) == 3, WAIT)
        .await
        .expect("capacity back");
    // The restored allocation still holds its devices.
    let rest = kubelet
        .allocate(AllocationRequest::new("pod-2", "main", GPU, 1))
        .await
        .expect("allocated");
    assert!(
        !got.device_ids.contains(&rest.device_ids[0]),
        "{rest:?} vs {got:?}"
    );
    let err = kubelet
        .allocate(AllocationRequest::new("pod-3", "main", GPU, 1))
        .await
        .expect_err("all used");
    assert!(
        err.to_string().contains("Requested: 1, Available: 0"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_resource_without_its_plugin_is_removed_after_the_grace_period() {
    let (_dir, kubelet) = kubelet(Duration::from_millis(200)).await;
    let _plugin = registered(
        &kubelet,
        "p.sock",
        GPU,
        healthy(&["a"]),
        Behaviour::default(),
    )
    .await;
    let mut events = kubelet.subscribe();
    kubelet.restart().await.expect("restarted");
    wait_for_event(
        &mut events,
        WAIT,
        |e| matches!(e, KubeletEvent::ResourceRemoved { resource } if resource == GPU),
    )
    .await
    .expect("removed");
    kubelet.flush_checkpoint().await;
    let cp = fake_kubelet::checkpoint::read(&kubelet.checkpoint_path())
        .expect("valid")
        .expect("present");
    assert!(cp.registered_devices.is_empty(), "{cp:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_checkpoint_is_reported_and_the_kubelet_starts_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("kubelet_internal_checkpoint"),
        r#"{"Data":{},"Checksum":1}"#,
    )
    .expect("write");
    let kubelet = kubelet_in(dir.path(), LONG_GRACE).await;
    assert!(kubelet.node_status().resources.is_empty());
    let log = kubelet.recent_log().join("\n");
    assert!(
        log.contains("kubelet_internal_checkpoint is corrupted"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_ends_plugin_streams_and_removes_the_socket_while_kill_leaves_it() {
    let (_dir, kubelet) = kubelet(LONG_GRACE).await;
    let plugin = registered(
        &kubelet,
        "p.sock",
        GPU,
        healthy(&["a"]),
        Behaviour::default(),
    )
    .await;
    kubelet.stop().await;
    assert!(!kubelet.socket_path().exists());
    assert!(!kubelet.with_state(|s| s.is_running()));
    let err = kubelet
        .allocate(AllocationRequest::new("p", "c", GPU, 1))
        .await
        .expect_err("stopped");
    assert_eq!(
        err.to_string(),
        "kubelet is not running; cannot allocate hostdev.io/gpu"
    );

    kubelet.resume().expect("started again");
    plugin
        .register(&kubelet.socket_path())
        .await
        .expect_err("its socket was deleted");
    kubelet.kill().await;
    assert!(is_socket(&kubelet.socket_path()), "kill cleans nothing");
    let connect = hostdev_api::unix::connect(kubelet.socket_path()).await;
    assert!(connect.is_err(), "nobody serves a killed kubelet's socket");
    kubelet.resume().expect("resumed after kill");
    assert!(
        hostdev_api::unix::connect(kubelet.socket_path())
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_kubelet_resumes_with_every_acknowledged_allocation() {
    let (_dir, kubelet) = kubelet(LONG_GRACE).await;
    let _plugin = registered(
        &kubelet,
        "p.sock",
        GPU,
        healthy(&["a", "b"]),
        Behaviour::default(),
    )
    .await;
    let got = kubelet
        .allocate(AllocationRequest::new("pod-1", "main", GPU, 1))
        .await
        .expect("allocated");
    kubelet.kill().await;
    kubelet.resume().expect("resumed");
    assert_eq!(kubelet.pod_allocations("pod-1"), vec![got]);
    assert_eq!(kubelet.node_status().resources[GPU].capacity, 0);
}
