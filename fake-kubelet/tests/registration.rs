//! Registration against the fake kubelet with a real plugin on a unix socket.

mod support;

use std::time::Duration;

use fake_kubelet::{KubeletEvent, wait_for_event};
use hostdev_api::v1beta1::DevicePluginOptions;
use support::{Behaviour, Call, TestPlugin, WAIT, device, healthy, kubelet, registered};

const GPU: &str = "hostdev.io/gpu";
const LONG_GRACE: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_dials_back_keeps_plugin_options_and_streams_devices() {
    let (_dir, kubelet) = kubelet(LONG_GRACE).await;
    let mut events = kubelet.subscribe();
    let options = DevicePluginOptions {
        pre_start_required: true,
        get_preferred_allocation_available: true,
    };
    let plugin = TestPlugin::serve(
        kubelet.dir(),
        "gpu.sock",
        GPU,
        vec![
            device("a", true, Some(0)),
            device("b", false, Some(1)),
            device("c", true, None),
        ],
        Behaviour {
            options,
            ..Default::default()
        },
    )
    .await;
    // The request claims no options; the kubelet keeps what GetDevicePluginOptions says.
    plugin
        .register_with(
            &kubelet.socket_path(),
            "v1beta1",
            GPU,
            DevicePluginOptions::default(),
        )
        .await
        .expect("registered");
    let registered = wait_for_event(&mut events, WAIT, |e| {
        matches!(e, KubeletEvent::Registered { .. })
    })
    .await
    .expect("Registered event");
    assert_eq!(
        registered,
        KubeletEvent::Registered {
            resource: GPU.into(),
            endpoint: plugin.socket.clone(),
            options
        }
    );
    kubelet
        .wait_for(
            |s| s.resource_status(GPU).is_some_and(|r| r.capacity == 3),
            WAIT,
        )
        .await
        .expect("devices arrive");
    assert_eq!(kubelet.options(GPU), Some(options));
    let status = kubelet.node_status();
    assert_eq!((status.capacity(GPU), status.allocatable(GPU)), (3, 2));
    let devices = kubelet.devices(GPU).expect("known resource");
    let summary: Vec<(String, bool, Vec<i64>)> = devices
        .iter()
        .map(|d| (d.id.clone(), d.is_healthy(), d.numa_nodes.clone()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("a".into(), true, vec![0]),
            ("b".into(), false, vec![1]),
            ("c".into(), true, vec![])
        ]
    );
    // Options were asked before the stream was opened.
    assert_eq!(&plugin.calls()[..2], &[Call::Options, Call::ListAndWatch]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsupported_version_is_refused_with_the_kubelet_text() {
    let (_dir, kubelet) = kubelet(LONG_GRACE).await;
    let plugin = TestPlugin::serve(
        kubelet.dir(),
        "p.sock",
        GPU,
        healthy(&["a"]),
        Behaviour::default(),
    )
    .await;
    let err = plugin
        .register_with(
            &kubelet.socket_path(),
            "v1alpha",
            GPU,
            DevicePluginOptions::default(),
        )
        .await
        .expect_err("refused");
    assert_eq!(err.code(), tonic::Code::Unknown);
    assert_eq!(
        err.message(),
        r#"requested API version "v1alpha" is not supported by kubelet. Supported version is ["v1beta1"]"#
    );
    assert!(
        plugin.calls().is_empty(),
        "no dial-back before validation: {:?}",
        plugin.calls()
    );
    assert!(kubelet.node_status().resources.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_resource_names_are_refused_with_the_kubelet_text() {
    let (_dir, kubelet) = kubelet(LONG_GRACE).await;
    let plugin = TestPlugin::serve(
        kubelet.dir(),
        "p.sock",
        GPU,
        healthy(&["a"]),
        Behaviour::default(),
    )
    .await;
    for bad in [
        "gpu",
        "kubernetes.io/gpu",
        "requests.hostdev.io/gpu",
        "hostdev.io/-gpu",
        "Hostdev.io/gpu",
    ] {
        let err = plugin
            .register_with(
                &kubelet.socket_path(),
                "v1beta1",
                bad,
                DevicePluginOptions::default(),
            )
            .await
            .expect_err(bad);
        assert_eq!(
            err.message(),
            format!("the ResourceName \"{bad}\" is invalid")
        );
    }
    assert!(plugin.calls().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_is_not_serving_fails_the_dial_back() {
    let (_dir, kubelet) = kubelet(LONG_GRACE).await;
    let mut plugin = TestPlugin::serve(
        kubelet.dir(),
        "gone.sock",
        GPU,
        healthy(&["a"]),
        Behaviour::default(),
    )
    .await;
    plugin.stop().await;
    let err = plugin
        .register(&kubelet.socket_path())
        .await
        .expect_err("nobody to dial");
    assert!(
        err.message().starts_with("failed to dial device plugin: "),
        "{}",
        err.message()
    );
    assert!(
        err.message().contains("gone.sock"),
        "names the socket: {}",
        err.message()
    );
    assert!(!kubelet.with_state(|s| s.is_registered(GPU)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_get_device_plugin_options_fails_registration() {
    let (_dir, kubelet) = kubelet(LONG_GRACE).await;
    let b = Behaviour {
        options_fail: Some("no options today".into()),
        ..Default::default()
    };
    let plugin = TestPlugin::serve(kubelet.dir(), "p.sock", GPU, healthy(&["a"]), b).await;
    let err = plugin
        .register(&kubelet.socket_path())
        .await
        .expect_err("refused");
    assert!(
        err.message().starts_with("failed to get device plugin options: rpc error: code = Internal desc = no options today"),
        "{}",
        err.message()
    );
    assert_eq!(
        plugin.calls(),
        vec![Call::Options],
        "no ListAndWatch after a failed registration"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_plugin_times_out_without_blocking_other_registrations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = fake_kubelet::Config::new(dir.path())
        .with_seed(support::seed())
        .with_rpc_timeouts(Duration::from_millis(300));
    let kubelet = fake_kubelet::FakeKubelet::start(config)
        .await
        .expect("starts");
    let hung = TestPlugin::serve(
        kubelet.dir(),
        "hung.sock",
        "hostdev.io/hung",
        healthy(&["h"]),
        Behaviour {
            options_hang: true,
            ..Default::default()
        },
    )
    .await;
    let kubelet_socket = kubelet.socket_path();
    let hung_register = hung.register(&kubelet_socket);
    let healthy_plugin = async {
        hung.wait_calls(|c| c.contains(&Call::Options)).await;
        // While the hung registration is in flight, another plugin registers and streams.
        registered(
            &kubelet,
            "ok.sock",
            GPU,
            healthy(&["a", "b"]),
            Behaviour::default(),
        )
        .await
    };
    let (hung_result, ok_plugin) = tokio::join!(hung_register, healthy_plugin);
    let err = hung_result.expect_err("times out");
    assert!(
        err.message()
            .starts_with("failed to get device plugin options: rpc error: code = DeadlineExceeded"),
        "{}",
        err.message()
    );
    assert!(err.message().contains("hung.sock"), "{}", err.message());
    assert_eq!(kubelet.node_status().allocatable(GPU), 2);
    drop(ok_plugin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_updates_and_health_flips_change_capacity_and_allocatable() {
    let (_dir, kubelet) = kubelet(LONG_GRACE).await;
    let plugin = registered(
        &kubelet,
        "p.sock",
        GPU,
        healthy(&["a", "b"]),
        Behaviour::default(),
    )
    .await;
    plugin.set_devices(vec![
        device("a", true, None),
        device("b", false, None),
        device("c", true, None),
    ]);
    kubelet
        .wait_for(
            |s| s.resource_status(GPU).is_some_and(|r| r.capacity == 3),
            WAIT,
        )
        .await
        .expect("update arrives");
    assert_eq!(kubelet.node_status().allocatable(GPU), 2);
    // Any health string other than "Healthy" is unhealthy.
    let mut odd = device("a", true, None);
    odd.health = "healthy".into();
    plugin.set_devices(vec![odd, device("b", true, None)]);
    kubelet
        .wait_for(
            |s| s.resource_status(GPU).is_some_and(|r| r.capacity == 2),
            WAIT,
        )
        .await
        .expect("flip arrives");
    assert_eq!(kubelet.node_status().allocatable(GPU), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_end_marks_devices_unhealthy_and_the_grace_period_removes_the_resource() {
    let (_dir, kubelet) = kubelet(Duration::from_millis(200)).await;
    let plugin = registered(
        &kubelet,
        "p.sock",
        GPU,
        healthy(&["a", "b"]),
        Behaviour::default(),
    )
    .await;
    let mut events = kubelet.subscribe();
    plugin.end_streams();
    let stopped = wait_for_event(&mut events, WAIT, |e| {
        matches!(e, KubeletEvent::EndpointStopped { .. })
    })
    .await
    .expect("stopped");
    assert_eq!(
        stopped,
        KubeletEvent::EndpointStopped {
            resource: GPU.into(),
            endpoint: plugin.socket.clone()
        }
    );
    let after_stop = kubelet.node_status();
    // Either still in grace (capacity kept, nothing allocatable) or already removed.
    assert_eq!(after_stop.allocatable(GPU), 0);
    wait_for_event(
        &mut events,
        WAIT,
        |e| matches!(e, KubeletEvent::ResourceRemoved { resource } if resource == GPU),
    )
    .await
    .expect("removed after grace");
    assert!(kubelet.devices(GPU).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_end_keeps_capacity_while_the_grace_period_runs() {
    let (_dir, kubelet) = kubelet(LONG_GRACE).await;
    let plugin = registered(
        &kubelet,
        "p.sock",
        GPU,
        healthy(&["a", "b"]),
        Behaviour::default(),
    )
    .await;
    plugin.end_streams();
    kubelet
        .wait_for(|s| s.endpoint(GPU).is_some_and(|e| e.stopped), WAIT)
        .await
        .expect("stopped");
    let status = kubelet.node_status();
    assert_eq!((status.capacity(GPU), status.allocatable(GPU)), (2, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_registration_within_grace_cancels_the_removal() {
    let grace = Duration::from_millis(400);
    let (_dir, kubelet) = kubelet(grace).await;
    let plugin = registered(
        &kubelet,
        "p.sock",
        GPU,
        healthy(&["a", "b"]),
        Behaviour::default(),
    )
    .await;
    let mut events = kubelet.subscribe();
    plugin.end_streams();
    kubelet
        .wait_for(|s| s.endpoint(GPU).is_some_and(|e| e.stopped), WAIT)
        .await
        .expect("stopped");
    plugin
        .register(&kubelet.socket_path())
        .await
        .expect("re-registered");
    kubelet
        .wait_for(|s| s.node_status().allocatable(GPU) == 2, WAIT)
        .await
        .expect("healthy again");
    // A removal would come within one grace period; give it three.
    let removed = wait_for_event(&mut events, grace * 3, |e| {
        matches!(e, KubeletEvent::ResourceRemoved { .. })
    })
    .await;
    assert!(
        removed.is_err(),
        "resource removed despite re-registration: {removed:?}"
    );
    assert_eq!(kubelet.node_status().allocatable(GPU), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_socket_replaces_the_old_endpoint_and_its_stream_is_ignored() {
    let (_dir, kubelet) = kubelet(LONG_GRACE).await;
    let old = registered(
        &kubelet,
        "old.sock",
        GPU,
        healthy(&["a", "b"]),
        Behaviour::default(),
    )
    .await;
    let new = registered(
        &kubelet,
        "new.sock",
        GPU,
        healthy(&["x", "y", "z"]),
        Behaviour::default(),
    )
    .await;
    assert_eq!(
        kubelet.with_state(|s| s.endpoint(GPU).and_then(|e| e.socket)),
        Some(new.socket.clone())
    );
    // The old plugin's updates and stream end no longer matter.
    old.set_devices(healthy(&["a"]));
    old.end_streams();
    new.set_devices(healthy(&["x", "y", "z", "w"]));
    kubelet
        .wait_for(|s| s.node_status().capacity(GPU) == 4, WAIT)
        .await
        .expect("new plugin's update");
    assert!(kubelet.with_state(|s| s.is_registered(GPU)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_plugins_racing_for_one_resource_leave_exactly_one_endpoint() {
    let (_dir, kubelet) = kubelet(LONG_GRACE).await;
    let one = TestPlugin::serve(
        kubelet.dir(),
        "one.sock",
        GPU,
        healthy(&["1a", "1b"]),
        Behaviour::default(),
    )
    .await;
    let two = TestPlugin::serve(
        kubelet.dir(),
        "two.sock",
        GPU,
        healthy(&["2a", "2b", "2c"]),
        Behaviour::default(),
    )
    .await;
    let socket = kubelet.socket_path();
    let (r1, r2) = tokio::join!(one.register(&socket), two.register(&socket));
    r1.expect("one registered");
    r2.expect("two registered");
    let winner = kubelet
        .with_state(|s| s.endpoint(GPU).and_then(|e| e.socket))
        .expect("an endpoint");
    let (winner_plugin, expected): (&TestPlugin, Vec<&str>) = if winner == one.socket {
        (&one, vec!["1a", "1b"])
    } else {
        (&two, vec!["2a", "2b", "2c"])
    };
    kubelet
        .wait_for(
            |s| {
                s.devices(GPU)
                    .is_some_and(|d| d.iter().map(|d| d.id.as_str()).eq(expected.iter().copied()))
            },
            WAIT,
        )
        .await
        .expect("the winner's devices, only");
    // Both plugins change their devices; only the winner's change shows.
    one.set_devices(healthy(&["1a"]));
    two.set_devices(healthy(&["2a"]));
    let winner_ids: Vec<String> = winner_plugin.ctl_devices();
    kubelet
        .wait_for(
            |s| {
                s.devices(GPU)
                    .is_some_and(|d| d.len() == 1 && d[0].id == winner_ids[0])
            },
            WAIT,
        )
        .await
        .expect("winner's update");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_plugins_serve_several_resources_at_once() {
    let (_dir, kubelet) = kubelet(LONG_GRACE).await;
    let _gpu = registered(
        &kubelet,
        "gpu.sock",
        GPU,
        healthy(&["g0", "g1"]),
        Behaviour::default(),
    )
    .await;
    let _nic = registered(
        &kubelet,
        "nic.sock",
        "hostdev.io/nic",
        healthy(&["n0"]),
        Behaviour::default(),
    )
    .await;
    let status = kubelet.node_status();
    assert_eq!(status.allocatable(GPU), 2);
    assert_eq!(status.allocatable("hostdev.io/nic"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_accepts_but_never_speaks_grpc_times_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = fake_kubelet::Config::new(dir.path())
        .with_seed(support::seed())
        .with_rpc_timeouts(Duration::from_millis(300));
    let kubelet = fake_kubelet::FakeKubelet::start(config)
        .await
        .expect("starts");
    let mute =
        tokio::net::UnixListener::bind(dir.path().join("mute.sock")).expect("bind mute socket");
    // Accept connections and hold them open without ever answering.
    let holder = tokio::spawn(async move {
        let mut held = vec![];
        while let Ok((conn, _)) = mute.accept().await {
            held.push(conn);
        }
    });
    let channel = hostdev_api::unix::connect(kubelet.socket_path())
        .await
        .expect("dial kubelet");
    let err = hostdev_api::v1beta1::registration_client::RegistrationClient::new(channel)
        .register(hostdev_api::v1beta1::RegisterRequest {
            version: "v1beta1".into(),
            endpoint: "mute.sock".into(),
            resource_name: GPU.into(),
            options: None,
        })
        .await
        .expect_err("nothing answers");
    let msg = err.message();
    assert!(
        msg.starts_with("failed to dial device plugin: ")
            || msg.starts_with("failed to get device plugin options: "),
        "{msg}"
    );
    assert!(msg.contains("mute.sock"), "{msg}");
    assert!(kubelet.node_status().resources.is_empty());
    holder.abort();
}
