//! Allocation paths against a real plugin: reuse, preferred allocation, NUMA, seeded choice,
//! PreStartContainer, every error, and a hanging plugin.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use fake_kubelet::{
    AllocateError, AllocationRequest, ContainerRequest, KubeletEvent, wait_for_event,
};
use hostdev_api::v1beta1::DevicePluginOptions;
use support::{AllocateMode, Behaviour, Call, WAIT, device, healthy, kubelet, registered};

const GPU: &str = "hostdev.io/gpu";
const LONG_GRACE: Duration = Duration::from_secs(300);

fn preferred_on() -> Behaviour {
    Behaviour {
        options: DevicePluginOptions {
            pre_start_required: false,
            get_preferred_allocation_available: true,
        },
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocation_records_the_first_container_response_and_reuses_it() {
    let (_dir, kubelet) = kubelet(LONG_GRACE).await;
    let plugin = registered(
        &kubelet,
        "p.sock",
        GPU,
        healthy(&["a", "b", "c"]),
        Behaviour::default(),
    )
    .await;
    let mut events = kubelet.subscribe();
    let got = kubelet
        .allocate(AllocationRequest::new("pod-1", "main", GPU, 2))
        .await
        .expect("allocated");
    assert_eq!(got.device_ids.len(), 2);
    assert_eq!(got.response.envs["TEST_DEVICES"], got.device_ids.join(","));
    assert_eq!(
        got.devices_by_numa,
        BTreeMap::from([(-1, got.device_ids.clone())])
    );
    assert_eq!(
        plugin.calls().last(),
        Some(&Call::Allocate(got.device_ids.clone()))
    );
    let event = wait_for_event(&mut events, WAIT, |e| {
        matches!(e, KubeletEvent::Allocated { .. })
    })
    .await
    .expect("event");
    assert_eq!(
        event,
        KubeletEvent::Allocated {
            pod_uid: "pod-1".into(),
            container: "main".into(),
            resource: GPU.into(),
            device_ids: got.device_ids.clone()
        }
    );
    let status = kubelet.node_status().resources[GPU];
    assert_eq!(
        (status.capacity, status.allocatable, status.allocated),
        (3, 3, 2)
    );

    // The same container asking again (a restart) gets the same devices without an RPC.
    let calls_before = plugin.calls().len();
    let again = kubelet
        .allocate(AllocationRequest::new("pod-1", "main", GPU, 2))
        .await
        .expect("reused");
    assert_eq!(again, got);
    assert_eq!(plugin.calls().len(), calls_before);

    let changed = kubelet
        .allocate(AllocationRequest::new("pod-1", "main", GPU, 1))
        .await
        .expect_err("changed request");
    assert_eq!(
        changed.to_string(),
        r#"pod "pod-1" container "main" changed request for resource "hostdev.io/gpu" from 2 to 1"#
    );

    // Only one device is left for a second pod.
    let err = kubelet
        .allocate(AllocationRequest::new("pod-2", "main", GPU, 2))
        .await
        .expect_err("not enough");
    assert_eq!(
        err.to_string(),
        "requested number of devices unavailable for hostdev.io/gpu. Requested: 2, Available: 1"
    );
    assert_eq!(kubelet.free_pod("pod-1"), 1);
    kubelet
        .allocate(AllocationRequest::new("pod-2", "main", GPU, 3))
        .await
        .expect("freed devices are available again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregistered_and_unhealthy_resources_are_refused() {
    let (_dir, kubelet) = kubelet(LONG_GRACE).await;
    let err = kubelet
        .allocate(AllocationRequest::new("p", "c", "hostdev.io/none", 1))
        .await
        .expect_err("unknown");
    assert_eq!(
        err.to_string(),
        "cannot allocate unregistered device hostdev.io/none"
    );
    let _plugin = registered(
        &kubelet,
        "p.sock",
        GPU,
        vec![device("a", false, None), device("b", false, None)],
        Behaviour::default(),
    )
    .await;
    let err = kubelet
        .allocate(AllocationRequest::new("p", "c", GPU, 1))
        .await
        .expect_err("unhealthy");
    assert_eq!(
        err.to_string(),
        "no healthy devices present; cannot allocate unhealthy devices hostdev.io/gpu"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_preferred_allocation_wins_and_sees_available_must_include_and_size() {
    let (_dir, kubelet) = kubelet(LONG_GRACE).await;
    let mut b = preferred_on();
    b.preferred = Some(vec!["d".into(), "b".into()]);
    let plugin = registered(&kubelet, "p.sock", GPU, healthy(&["a", "b", "c", "d"]), b).await;
    let got = kubelet
        .allocate(AllocationRequest::new("p", "c", GPU, 2))
        .await
        .expect("allocated");
    assert_eq!(got.device_ids, vec!["b", "d"]);
    let preferred: Vec<_> = plugin
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::Preferred(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(preferred.len(), 1);
    assert_eq!(preferred[0].available_device_i_ds, vec!["a", "b", "c", "d"]);
    assert!(preferred[0].must_include_device_i_ds.is_empty());
    assert_eq!(preferred[0].allocation_size, 2);
    // Allocated devices are no longer offered.
    plugin.steer(|b| b.preferred = None);
    kubelet
        .allocate(AllocationRequest::new("p2", "c", GPU, 1))
        .await
        .expect("allocated");
    plugin
        .wait_calls(|c| {
            c.iter()
                .filter(
                    |c| matches!(c, Call::Preferred(r) if r.available_device_i_ds == ["a", "c"]),
                )
                .count()
                == 1
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numa_aligned_devices_come_first_and_the_checkpoint_keys_them_by_node() {
    let (_dir, kubelet) = kubelet(LONG_GRACE).await;
    let devices = vec![
        device("n0-a", true, Some(0)),
        device("n0-b", true, Some(0)),
        device("n1-a", true, Some(1)),
        device("n1-b", true, Some(1)),
        device("none", true, None),
    ];
    let plugin = registered(&kubelet, "p.sock", GPU, devices, preferred_on()).await;
    // Aligned devices suffice: the plugin chooses among node 1 only.
    let one = kubelet
        .allocate(AllocationRequest::new("p1", "c", GPU, 1).with_numa_affinity([1]))
        .await
        .expect("allocated");
    assert_eq!(one.device_ids, vec!["n1-a"], "first offered aligned device");
    assert_eq!(
        one.devices_by_numa,
        BTreeMap::from([(1, vec!["n1-a".to_string()])])
    );
    // Not enough aligned: every aligned device is a must-include, then the rest.
    let three = kubelet
        .allocate(AllocationRequest::new("p2", "c", GPU, 3).with_numa_affinity([0]))
        .await
        .expect("allocated");
    assert!(three.device_ids.contains(&"n0-a".into()) && three.device_ids.contains(&"n0-b".into()));
    let last_pref = plugin
        .calls()
        .into_iter()
        .rev()
        .find_map(|c| match c {
            Call::Preferred(r) => Some(r),
            _ => None,
        })
        .expect("asked");
    assert_eq!(
        last_pref.available_device_i_ds,
        vec!["n0-a", "n0-b", "n1-b", "none"]
    );
    assert_eq!(last_pref.must_include_device_i_ds, vec!["n0-a", "n0-b"]);
    assert_eq!(last_pref.allocation_size, 3);

    kubelet.flush_checkpoint().await;
    let cp = fake_kubelet::checkpoint::read(&kubelet.checkpoint_path())
        .expect("valid")
        .expect("written");
    let entry = cp
        .pod_device_entries
        .iter()
        .find(|e| e.pod_uid == "p1")
        .expect("p1 recorded");
    assert_eq!(
        entry.device_ids,
        BTreeMap::from([(1, vec!["n1-a".to_string()])])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_choice_among_equal_devices_is_random_but_replays_from_the_seed() {
    let ids: Vec<String> = (0..12).map(|i| format!("dev{i:02}")).collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    async fn picks(seed: u64, ids: &[&str]) -> Vec<Vec<String>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = fake_kubelet::Config::new(dir.path()).with_seed(seed);
        let kubelet = fake_kubelet::FakeKubelet::start(config)
            .await
            .expect("starts");
        let _p = registered(&kubelet, "p.sock", GPU, healthy(ids), Behaviour::default()).await;
        let mut out = vec![];
        for pod in 0..4 {
            let a = kubelet
                .allocate(AllocationRequest::new(format!("pod-{pod}"), "c", GPU, 2))
                .await
                .expect("allocated");
            out.push(a.device_ids);
        }
        out
    }
    let seed = support::seed();
    let first = picks(seed, &id_refs).await;
    assert_eq!(
        first,
        picks(seed, &id_refs).await,
        "same seed, same choices (SEED={seed})"
    );
    let mut differs = false;
    for other in [seed + 1, seed + 2, seed + 3] {
        differs |= picks(other, &id_refs).await != first;
    }
    assert!(
        differs,
        "other seeds should change the choices (SEED={seed})"
    );
    let sorted_prefix: Vec<Vec<String>> = vec![
        vec!["dev00".into(), "dev01".into()],
        vec!["dev02".into(), "dev03".into()],
        vec!["dev04".into(), "dev05".into()],
        vec!["dev06".into(), "dev07".into()],
    ];
    assert_ne!(first, sorted_prefix, "choice is not simply in ID order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_start_container_gets_all_the_containers_devices_when_required() {
    let (_dir, kubelet) = kubelet(LONG_GRACE).await;
    let b = Behaviour {
        options: DevicePluginOptions {
            pre_start_required: true,
            get_preferred_allocation_available: false,
        },
        ..Default::default()
    };
    let plugin = registered(&kubelet, "p.sock", GPU, healthy(&["a", "b", "c"]), b).await;
    let got = kubelet
        .allocate(AllocationRequest::new("p", "c", GPU, 2))
        .await
        .expect("allocated");
    let calls = plugin.calls();
    assert_eq!(
        &calls[calls.len() - 2..],
        &[
            Call::Allocate(got.device_ids.clone()),
            Call::PreStart(got.device_ids.clone())
        ]
    );
    assert!(
        !calls.iter().any(|c| matches!(c, Call::Preferred(_))),
        "not offered, not asked"
    );

    plugin.steer(|b| b.prestart_fail = Some("device busy".into()));
    let err = kubelet
        .allocate(AllocationRequest::new("p2", "c", GPU, 1))
        .await
        .expect_err("prestart fails");
    assert!(
        err.to_string()
            .starts_with("device plugin PreStartContainer rpc failed with err: rpc error: code = Internal desc = device busy"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_failures_and_empty_responses_are_reported_and_release_the_devices() {
    let (_dir, kubelet) = kubelet(LONG_GRACE).await;
    let plugin = registered(
        &kubelet,
        "p.sock",
        GPU,
        healthy(&["a"]),
        Behaviour::default(),
    )
    .await;
    plugin.steer(|b| b.allocate = AllocateMode::Empty);
    let err = kubelet
        .allocate(AllocationRequest::new("p", "c", GPU, 1))
        .await
        .expect_err("empty");
    assert_eq!(err, AllocateError::EmptyResponse(GPU.into()));
    assert!(
        err.to_string()
            .starts_with("no containers return in allocation response")
    );
    plugin.steer(|b| b.allocate = AllocateMode::Fail("out of vfs".into()));
    let err = kubelet
        .allocate(AllocationRequest::new("p", "c", GPU, 1))
        .await
        .expect_err("fails");
    assert!(
        err.to_string()
            .starts_with("rpc error: code = Internal desc = out of vfs"),
        "{err}"
    );
    // Nothing stayed reserved: the single device is still allocatable.
    plugin.steer(|b| b.allocate = AllocateMode::Normal);
    kubelet
        .allocate(AllocationRequest::new("p", "c", GPU, 1))
        .await
        .expect("allocated after failures");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_allocate_times_out_while_the_kubelet_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = fake_kubelet::Config::new(dir.path())
        .with_seed(support::seed())
        .with_rpc_timeouts(Duration::from_millis(400));
    let kubelet = fake_kubelet::FakeKubelet::start(config)
        .await
        .expect("starts");
    let hung = registered(
        &kubelet,
        "hung.sock",
        GPU,
        healthy(&["a", "b"]),
        Behaviour {
            allocate: AllocateMode::Hang,
            ..Default::default()
        },
    )
    .await;
    let stuck = kubelet.allocate(AllocationRequest::new("p", "c", GPU, 1));
    let meanwhile = async {
        hung.wait_calls(|c| c.iter().any(|c| matches!(c, Call::Allocate(_))))
            .await;
        // While Allocate hangs: registration, streaming, status and other allocations work.
        let nic = registered(
            &kubelet,
            "nic.sock",
            "hostdev.io/nic",
            healthy(&["n"]),
            Behaviour::default(),
        )
        .await;
        kubelet
            .allocate(AllocationRequest::new("q", "c", "hostdev.io/nic", 1))
            .await
            .expect("other resource allocates");
        hung.set_devices(healthy(&["a", "b", "c"]));
        kubelet
            .wait_for(|s| s.node_status().capacity(GPU) == 3, WAIT)
            .await
            .expect("stream of the hung plugin still flows");
        // The reserved device is not handed out twice.
        let other = kubelet
            .allocate(AllocationRequest::new("r", "c", GPU, 3))
            .await;
        assert!(
            matches!(other, Err(AllocateError::Unavailable { available: 2, .. })),
            "{other:?}"
        );
        nic
    };
    let (result, _nic) = tokio::join!(stuck, meanwhile);
    let err = result.expect_err("timed out");
    assert!(
        err.to_string()
            .starts_with("rpc error: code = DeadlineExceeded desc = context deadline exceeded"),
        "{err}"
    );
    assert!(err.to_string().contains("hung.sock"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_stops_during_preferred_allocation_is_reported_stopped() {
    let (_dir, kubelet) = kubelet(LONG_GRACE).await;
    let gate = Arc::new(tokio::sync::Notify::new());
    let mut b = preferred_on();
    b.preferred_gate = Some(Arc::clone(&gate));
    let plugin = registered(&kubelet, "p.sock", GPU, healthy(&["a", "b", "c"]), b).await;
    let allocation = kubelet.allocate(AllocationRequest::new("p", "c", GPU, 1));
    let interfere = async {
        plugin
            .wait_calls(|c| c.iter().any(|c| matches!(c, Call::Preferred(_))))
            .await;
        plugin.end_streams();
        kubelet
            .wait_for(|s| s.endpoint(GPU).is_some_and(|e| e.stopped), WAIT)
            .await
            .expect("stopped");
        gate.notify_one();
    };
    let (result, ()) = tokio::join!(allocation, interfere);
    let err = result.expect_err("stopped");
    assert_eq!(err.to_string(), "endpoint hostdev.io/gpu has been stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_container_gets_several_resources_in_one_call_and_free_releases_them() {
    let (_dir, kubelet) = kubelet(LONG_GRACE).await;
    let gpu = registered(
        &kubelet,
        "gpu.sock",
        GPU,
        healthy(&["g0", "g1"]),
        Behaviour::default(),
    )
    .await;
    let nic = registered(
        &kubelet,
        "nic.sock",
        "hostdev.io/nic",
        healthy(&["n0", "n1"]),
        Behaviour::default(),
    )
    .await;
    let mut events = kubelet.subscribe();
    let got = kubelet
        .allocate_container(ContainerRequest {
            pod_uid: "vm".into(),
            container: "compute".into(),
            resources: BTreeMap::from([(GPU.to_string(), 2), ("hostdev.io/nic".to_string(), 1)]),
            numa_affinity: None,
        })
        .await
        .expect("allocated");
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].resource, GPU);
    assert_eq!(got[0].device_ids, vec!["g0", "g1"]);
    assert_eq!(got[1].device_ids.len(), 1);
    // One Allocate per resource.
    let allocs = |p: &support::TestPlugin| {
        p.calls()
            .iter()
            .filter(|c| matches!(c, Call::Allocate(_)))
            .count()
    };
    assert_eq!((allocs(&gpu), allocs(&nic)), (1, 1));
    assert_eq!(kubelet.pod_allocations("vm").len(), 2);
    assert_eq!(kubelet.free_pod("vm"), 2);
    wait_for_event(
        &mut events,
        WAIT,
        |e| matches!(e, KubeletEvent::Freed { pod_uid } if pod_uid == "vm"),
    )
    .await
    .expect("freed event");
    assert!(kubelet.pod_allocations("vm").is_empty());
    assert_eq!(kubelet.node_status().resources[GPU].allocated, 0);
}
