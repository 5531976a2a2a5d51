//! The real agent (`start_agent` with the production configuration source and discovery) on a
//! sysfs + /dev fixture tree, against the fake kubelet: hotplug, USB unplug (#11979), config
//! reload updating a running plugin (#7084), a bad config, kubelet restarts, socket removal,
//! agent restarts and metrics.

mod common;

use common::{DEADLINE, Node, config_yaml, wait_watch};
use fake_kubelet::{AllocationRequest, Config, FakeKubelet, KubeletEvent, State};
use hostdev_agent::manager::{AgentOptions, RunningAgent, configured_source, start_agent};
use hostdev_agent::sysfs::HostPaths;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const GPU: &str = "nvidia.com/TU104GL_Tesla_T4";
const T4: (u16, u16) = (0x10de, 0x1eb8);
const STORAGE: &str = "kubevirt.io/storage";

fn options(node: &Node) -> AgentOptions {
    let mut options = AgentOptions::new(node.config_file(), "node-1");
    options.host = HostPaths::new(node.sys(), node.dev());
    options.plugin_dir = node.plugins();
    options.metrics_addr = Some("127.0.0.1:0".parse().expect("address"));
    options
}

async fn agent(node: &Node, shutdown: &CancellationToken) -> RunningAgent {
    let options = options(node);
    start_agent(
        options.clone(),
        Box::new(configured_source(&options)),
        shutdown.clone(),
    )
    .await
    .expect("the agent starts")
}

async fn kubelet(node: &Node) -> FakeKubelet {
    FakeKubelet::start(Config::new(node.plugins()))
        .await
        .expect("fake kubelet starts")
}

/// Waits for the kubelet to see `resource` with exactly these healthy device ids.
async fn wait_devices(kubelet: &FakeKubelet, resource: &str, ids: &[&str]) {
    let want: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    let result = kubelet
        .wait_for(
            |s: &State| {
                s.devices(resource).is_some_and(|devices| {
                    let healthy: Vec<String> = devices
                        .iter()
                        .filter(|d| d.is_healthy())
                        .map(|d| d.id.clone())
                        .collect();
                    healthy == want && devices.len() == want.len()
                })
            },
            DEADLINE,
        )
        .await;
    if result.is_err() {
        panic!(
            "kubelet never saw {resource} = {want:?}; it has {:?}\nlast kubelet log lines:\n{}",
            kubelet.devices(resource),
            kubelet.recent_log().join("\n")
        );
    }
}

fn endpoint(kubelet: &FakeKubelet, resource: &str) -> Option<std::path::PathBuf> {
    kubelet.with_state(|s| s.endpoint(resource).and_then(|e| e.socket))
}

#[tokio::test]
async fn pci_hotplug_reaches_list_and_watch() {
    let node = Node::new();
    node.add_pci("0000:65:00.0", T4.0, T4.1, 12, 0, Some("vfio-pci"));
    node.write_config(&config_yaml(&[("10DE:1EB8", GPU)], &[]));
    let kubelet = kubelet(&node).await;
    let shutdown = CancellationToken::new();
    let agent = agent(&node, &shutdown).await;
    wait_devices(&kubelet, GPU, &["12"]).await;

    node.add_pci("0000:66:00.0", T4.0, T4.1, 13, 1, Some("vfio-pci"));
    wait_devices(&kubelet, GPU, &["12", "13"]).await;
    let topology = kubelet.devices(GPU).expect("devices");
    assert_eq!(
        topology
            .iter()
            .find(|d| d.id == "13")
            .map(|d| d.numa_nodes.clone()),
        Some(vec![1])
    );

    node.remove_pci("0000:65:00.0", 12);
    wait_devices(&kubelet, GPU, &["13"]).await;

    // A function bound to another driver is not advertised, and the agent says why.
    node.add_pci("0000:67:00.0", T4.0, T4.1, 14, 0, Some("nvidia"));
    std::fs::write(node.dev().join("vfio/.poke"), "").expect("wake the dev-root watch");
    let mut status = agent.status.clone();
    let status = wait_watch(&mut status, "the skip of 0000:67:00.0", |s| {
        s.skipped.iter().any(|k| k.device.contains("0000:67:00.0"))
    })
    .await;
    let skip = status
        .skipped
        .iter()
        .find(|k| k.device.contains("0000:67:00.0"))
        .expect("skip");
    assert!(skip.reason.contains("nvidia"), "{}", skip.reason);

    shutdown.cancel();
    agent.wait().await;
    assert!(
        node.plugin_sockets().is_empty(),
        "sockets removed on shutdown: {:?}",
        node.plugin_sockets()
    );
    kubelet.stop().await;
}

#[tokio::test]
async fn usb_unplug_and_replug_never_block_the_plugin() {
    // KubeVirt #11979: the first USB unplug blocked the plugin forever.
    let node = Node::new();
    node.add_usb("1-1", 1, 2, 0x46f4, 0x0001);
    node.write_config(&config_yaml(&[], &[(STORAGE, "46f4", "0001")]));
    let kubelet = kubelet(&node).await;
    let shutdown = CancellationToken::new();
    let agent = agent(&node, &shutdown).await;
    wait_devices(&kubelet, STORAGE, &["1-1"]).await;

    for round in 0..3u32 {
        node.remove_usb("1-1", 1, 2 + round);
        wait_devices(&kubelet, STORAGE, &[]).await;
        // Re-plugged devices get a new devnum.
        node.add_usb("1-1", 1, 3 + round, 0x46f4, 0x0001);
        wait_devices(&kubelet, STORAGE, &["1-1"]).await;
    }
    let allocation = kubelet
        .allocate(AllocationRequest::new("pod-usb", "compute", STORAGE, 1))
        .await
        .expect("allocates");
    assert_eq!(
        allocation
            .response
            .envs
            .get("USB_RESOURCE_KUBEVIRT_IO_STORAGE")
            .map(String::as_str),
        Some("1:5"),
        "the env names the device as plugged now"
    );
    assert_eq!(
        allocation.response.devices[0].container_path,
        "/dev/bus/usb/001/005"
    );
    shutdown.cancel();
    agent.wait().await;
    kubelet.stop().await;
}

#[tokio::test]
async fn a_device_whose_node_vanishes_turns_unhealthy_and_recovers() {
    let node = Node::new();
    node.add_pci("0000:65:00.0", T4.0, T4.1, 12, 0, Some("vfio-pci"));
    node.add_pci("0000:66:00.0", T4.0, T4.1, 13, 0, Some("vfio-pci"));
    node.write_config(&config_yaml(&[("10DE:1EB8", GPU)], &[]));
    let kubelet = kubelet(&node).await;
    let shutdown = CancellationToken::new();
    let agent = agent(&node, &shutdown).await;
    wait_devices(&kubelet, GPU, &["12", "13"]).await;

    let group_node = node.dev().join("vfio/13");
    std::fs::remove_file(&group_node).expect("remove the group node");
    let health = |s: &State| -> Vec<(String, bool)> {
        s.devices(GPU)
            .unwrap_or_default()
            .into_iter()
            .map(|d| (d.id.clone(), d.is_healthy()))
            .collect()
    };
    let want = vec![("12".to_string(), true), ("13".to_string(), false)];
    kubelet
        .wait_for(|s: &State| health(s) == want, DEADLINE)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "13 never turned unhealthy: {:?}",
                kubelet.with_state(health)
            )
        });
    let status = kubelet
        .with_state(|s| s.resource_status(GPU))
        .expect("resource");
    assert_eq!(
        (status.capacity, status.allocatable),
        (2, 1),
        "unhealthy counts in capacity only"
    );

    std::fs::write(&group_node, "").expect("the group node is back");
    wait_devices(&kubelet, GPU, &["12", "13"]).await;
    shutdown.cancel();
    agent.wait().await;
    kubelet.stop().await;
}

#[tokio::test]
async fn usb_devices_on_a_bus_that_appears_later_are_seen() {
    let node = Node::new();
    node.write_config(&config_yaml(&[], &[(STORAGE, "46f4", "0001")]));
    let kubelet = kubelet(&node).await;
    let shutdown = CancellationToken::new();
    let agent = agent(&node, &shutdown).await;
    wait_devices(&kubelet, STORAGE, &[]).await;
    // Neither dev/bus/usb nor dev/bus/usb/002 exists yet: both directories appear now.
    node.add_usb("2-1", 2, 3, 0x46f4, 0x0001);
    wait_devices(&kubelet, STORAGE, &["2-1"]).await;
    node.add_usb("2-2", 2, 4, 0x46f4, 0x0001);
    wait_devices(&kubelet, STORAGE, &["2-1", "2-2"]).await;
    node.remove_usb("2-1", 2, 3);
    wait_devices(&kubelet, STORAGE, &["2-2"]).await;
    shutdown.cancel();
    agent.wait().await;
    kubelet.stop().await;
}

#[tokio::test]
async fn config_change_updates_the_running_plugins_device_set() {
    // KubeVirt #7084: a changed permittedHostDevices left running plugins on the old set.
    let node = Node::new();
    node.add_pci("0000:65:00.0", T4.0, T4.1, 12, 0, Some("vfio-pci"));
    node.add_pci("0000:66:00.0", 0x10de, 0x1db4, 13, 0, Some("vfio-pci"));
    node.write_config(&config_yaml(&[("10DE:1EB8", GPU)], &[]));
    let kubelet = kubelet(&node).await;
    let shutdown = CancellationToken::new();
    let agent = agent(&node, &shutdown).await;
    wait_devices(&kubelet, GPU, &["12"]).await;
    let socket = endpoint(&kubelet, GPU).expect("registered");

    node.write_config(&config_yaml(&[("10DE:1EB8", GPU), ("10DE:1DB4", GPU)], &[]));
    wait_devices(&kubelet, GPU, &["12", "13"]).await;
    node.write_config(&config_yaml(&[("10DE:1DB4", GPU)], &[]));
    wait_devices(&kubelet, GPU, &["13"]).await;
    assert_eq!(
        endpoint(&kubelet, GPU),
        Some(socket),
        "the same plugin serves the new set"
    );

    // A resource that leaves the configuration loses its plugin and its socket.
    node.write_config(&config_yaml(&[("10DE:1DB4", "nvidia.com/V100")], &[]));
    wait_devices(&kubelet, "nvidia.com/V100", &["13"]).await;
    let mut status = agent.status.clone();
    wait_watch(&mut status, "the old resource to go", |s| {
        !s.resources.contains_key(GPU)
    })
    .await;
    assert_eq!(
        node.plugin_sockets().len(),
        1,
        "{:?}",
        node.plugin_sockets()
    );
    shutdown.cancel();
    agent.wait().await;
    kubelet.stop().await;
}

#[tokio::test]
async fn a_bad_config_file_keeps_the_last_good_one_serving() {
    let node = Node::new();
    node.add_pci("0000:65:00.0", T4.0, T4.1, 12, 0, Some("vfio-pci"));
    node.write_config(&config_yaml(&[("10DE:1EB8", GPU)], &[]));
    let kubelet = kubelet(&node).await;
    let shutdown = CancellationToken::new();
    let agent = agent(&node, &shutdown).await;
    wait_devices(&kubelet, GPU, &["12"]).await;

    // What KubeVirt's CRD rejects: a required field missing.
    node.write_config("permittedHostDevices:\n  pciHostDevices:\n  - resourceName: nvidia.com/x\n");
    let mut status = agent.status.clone();
    let failed = wait_watch(&mut status, "the rejection", |s| s.config_failures >= 1).await;
    let error = failed.last_config_error.expect("the error is kept");
    assert!(
        error.contains("kubevirt.yaml"),
        "the error names the file: {error}"
    );
    assert!(
        error.contains("pciVendorSelector"),
        "the error names the field: {error}"
    );
    assert!(
        failed.resources.contains_key(GPU),
        "the last good config still serves"
    );
    let text = scrape(agent.metrics_addr.expect("metrics")).await;
    assert!(
        text.contains("hostdev_config_reload_failures_total 1"),
        "{text}"
    );

    // Hotplug still works under the last good configuration.
    node.add_pci("0000:66:00.0", T4.0, T4.1, 13, 0, Some("vfio-pci"));
    wait_devices(&kubelet, GPU, &["12", "13"]).await;

    node.write_config(&config_yaml(&[("10DE:1EB8", "nvidia.com/T4")], &[]));
    wait_devices(&kubelet, "nvidia.com/T4", &["12", "13"]).await;
    shutdown.cancel();
    agent.wait().await;
    kubelet.stop().await;
}

#[tokio::test]
async fn kubelet_restarts_re_register_every_time_without_losing_devices() {
    let node = Node::new();
    node.add_pci("0000:65:00.0", T4.0, T4.1, 12, 0, Some("vfio-pci"));
    node.add_pci("0000:66:00.0", T4.0, T4.1, 13, 1, Some("vfio-pci"));
    node.add_usb("1-1", 1, 2, 0x46f4, 0x0001);
    node.write_config(&config_yaml(
        &[("10DE:1EB8", GPU)],
        &[(STORAGE, "46f4", "0001")],
    ));
    let kubelet = kubelet(&node).await;
    let shutdown = CancellationToken::new();
    let agent = agent(&node, &shutdown).await;
    wait_devices(&kubelet, GPU, &["12", "13"]).await;
    wait_devices(&kubelet, STORAGE, &["1-1"]).await;
    kubelet
        .allocate(AllocationRequest::new("pod-a", "compute", GPU, 1))
        .await
        .expect("allocates before restarts");

    let mut sockets = vec![endpoint(&kubelet, GPU).expect("registered")];
    for round in 1..=5 {
        kubelet.restart().await.expect("kubelet restarts");
        let previous = sockets.last().cloned();
        let moved = kubelet
            .wait_for(
                |s: &State| {
                    let gpu = s.endpoint(GPU).and_then(|e| e.socket);
                    let healthy = |r: &str| {
                        s.devices(r)
                            .map(|d| d.iter().filter(|d| d.is_healthy()).count())
                    };
                    gpu.is_some()
                        && gpu != previous
                        && healthy(GPU) == Some(2)
                        && healthy(STORAGE) == Some(1)
                },
                DEADLINE,
            )
            .await;
        if moved.is_err() {
            panic!(
                "round {round}: not re-registered\nlast kubelet log lines:\n{}",
                kubelet.recent_log().join("\n")
            );
        }
        sockets.push(endpoint(&kubelet, GPU).expect("registered"));
        assert_eq!(
            kubelet
                .with_state(|s| s.resource_status(GPU))
                .map(|r| r.allocated),
            Some(1),
            "round {round}: the checkpointed allocation stays allocated"
        );
    }
    // Only the current sockets remain.
    assert_eq!(
        node.plugin_sockets().len(),
        2,
        "{:?}",
        node.plugin_sockets()
    );

    // Our own socket removed (not by a kubelet restart): re-served and re-registered too.
    let current = endpoint(&kubelet, GPU).expect("registered");
    let mut events = kubelet.subscribe();
    std::fs::remove_file(&current).expect("remove the plugin socket");
    kubelet
        .wait_for(
            |s: &State| {
                s.endpoint(GPU)
                    .and_then(|e| e.socket)
                    .is_some_and(|p| p != current && p.exists())
            },
            DEADLINE,
        )
        .await
        .expect("re-registered on a new socket");
    wait_devices(&kubelet, GPU, &["12", "13"]).await;
    // Moving sockets never withdraws the devices (no empty list), unlike stopping.
    while let Ok(event) = events.try_recv() {
        if let KubeletEvent::DevicesChanged {
            resource,
            healthy: 0,
            unhealthy: 0,
        } = &event
        {
            assert_ne!(
                resource, GPU,
                "the device set was emptied while re-serving: {event:?}"
            );
        }
    }
    let registrations = agent.metrics.registrations(GPU);
    assert!(
        registrations >= 7,
        "one registration per start, restart and removal: {registrations}"
    );
    shutdown.cancel();
    agent.wait().await;
    kubelet.stop().await;
}

#[tokio::test]
async fn an_agent_restart_picks_up_where_it_left_off() {
    let node = Node::new();
    node.add_pci("0000:65:00.0", T4.0, T4.1, 12, 0, Some("vfio-pci"));
    node.add_pci("0000:66:00.0", T4.0, T4.1, 13, 0, Some("vfio-pci"));
    node.write_config(&config_yaml(&[("10DE:1EB8", GPU)], &[]));
    let kubelet = kubelet(&node).await;
    let first = CancellationToken::new();
    let agent_one = agent(&node, &first).await;
    wait_devices(&kubelet, GPU, &["12", "13"]).await;
    let held = kubelet
        .allocate(AllocationRequest::new("pod-a", "compute", GPU, 1))
        .await
        .expect("allocates");

    first.cancel();
    agent_one.wait().await;
    // Stopping sends an empty list: the kubelet stops offering the devices at once.
    kubelet
        .wait_for(|s: &State| s.node_status().allocatable(GPU) == 0, DEADLINE)
        .await
        .expect("no devices offered while the agent is down");

    let second = CancellationToken::new();
    let agent_two = agent(&node, &second).await;
    wait_devices(&kubelet, GPU, &["12", "13"]).await;
    let other = kubelet
        .allocate(AllocationRequest::new("pod-b", "compute", GPU, 1))
        .await
        .expect("allocates again");
    assert_ne!(
        held.device_ids, other.device_ids,
        "the first pod keeps its device"
    );

    let text = scrape(agent_two.metrics_addr.expect("metrics")).await;
    assert!(
        text.contains(&format!(
            "hostdev_devices{{resource=\"{GPU}\",health=\"Healthy\"}} 2"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "hostdev_allocations_total{{resource=\"{GPU}\"}} 1"
        )),
        "{text}"
    );
    second.cancel();
    agent_two.wait().await;
    kubelet.stop().await;
}

#[tokio::test]
async fn mediated_devices_are_served_with_kubevirts_env() {
    const Q1: &str = "nvidia.com/GRID_T4-1Q";
    const FIRST: &str = "6f0c5bb8-2c35-4d7e-9f43-6a4f8e0a9e2b";
    const SECOND: &str = "0b1f0d4e-8a44-4c55-9c61-3b2a1d0e9f77";
    let node = Node::new();
    node.add_pci("0000:65:00.0", T4.0, T4.1, 12, 1, Some("nvidia"));
    node.add_mdev(FIRST, "0000:65:00.0", "nvidia-230", "GRID T4-1Q", 40);
    node.write_config(&format!(
        "permittedHostDevices:\n  mediatedDevices:\n  - mdevNameSelector: \"GRID T4-1Q\"\n    resourceName: {Q1}\n"
    ));
    let kubelet = kubelet(&node).await;
    let shutdown = CancellationToken::new();
    let agent = agent(&node, &shutdown).await;
    wait_devices(&kubelet, Q1, &["40"]).await;
    assert_eq!(
        kubelet.devices(Q1).expect("devices")[0].numa_nodes,
        vec![1],
        "NUMA from the parent"
    );

    node.add_mdev(SECOND, "0000:65:00.0", "nvidia-230", "GRID T4-1Q", 41);
    wait_devices(&kubelet, Q1, &["40", "41"]).await;
    let allocation = kubelet
        .allocate(AllocationRequest::new("pod-vgpu", "compute", Q1, 2))
        .await
        .expect("allocates");
    let mut uuids: Vec<String> =
        allocation.response.envs["MDEV_PCI_RESOURCE_NVIDIA_COM_GRID_T4-1Q"]
            .split(',')
            .map(str::to_string)
            .collect();
    uuids.sort();
    assert_eq!(uuids, vec![SECOND.to_string(), FIRST.to_string()]);
    let paths: Vec<&str> = allocation
        .response
        .devices
        .iter()
        .map(|d| d.container_path.as_str())
        .collect();
    assert_eq!(paths[0], "/dev/vfio/vfio");
    assert_eq!(paths.len(), 3, "{paths:?}");
    shutdown.cancel();
    agent.wait().await;
    kubelet.stop().await;
}

#[tokio::test]
async fn pinned_addresses_are_handed_out_first() {
    // KubeVirt #11815: no way to pick a specific device among equal vendor:device ones.
    let node = Node::new();
    node.add_pci("0000:65:00.0", T4.0, T4.1, 12, 0, Some("vfio-pci"));
    node.add_pci("0000:66:00.0", T4.0, T4.1, 13, 0, Some("vfio-pci"));
    node.add_pci("0000:67:00.0", T4.0, T4.1, 14, 0, Some("vfio-pci"));
    node.write_config(&format!(
        "permittedHostDevices:\n  pciHostDevices:\n  - pciVendorSelector: \"10DE:1EB8\"\n    resourceName: {GPU}\n    pciAddresses: [\"0000:67:00.0\", \"0000:65:00.0\"]\n"
    ));
    let kubelet = kubelet(&node).await;
    let shutdown = CancellationToken::new();
    let agent = agent(&node, &shutdown).await;
    wait_devices(&kubelet, GPU, &["12", "14"]).await;
    let first = kubelet
        .allocate(AllocationRequest::new("pod-a", "compute", GPU, 1))
        .await
        .expect("allocates");
    assert_eq!(
        first.device_ids,
        vec!["14"],
        "the first pinned address (0000:67:00.0) goes first"
    );
    let second = kubelet
        .allocate(AllocationRequest::new("pod-b", "compute", GPU, 1))
        .await
        .expect("allocates");
    assert_eq!(second.device_ids, vec!["12"]);
    shutdown.cancel();
    agent.wait().await;
    kubelet.stop().await;
}

#[tokio::test]
async fn sockets_left_by_a_killed_agent_are_cleaned_up_and_others_kept() {
    let node = Node::new();
    node.write_config(&config_yaml(&[("10DE:1EB8", GPU)], &[]));
    let plugins = node.plugins();
    // A killed agent's socket: the file stays, nobody listens.
    let stale = plugins.join("kubevirt-nvidia.com-TU104GL_Tesla_T4-1795982797432012170.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).expect("stale socket"));
    // A live socket with a generated-looking name (another agent) and KubeVirt's own name.
    let live = plugins.join("kubevirt-example.com-other-1795982797432012171.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&live).expect("live socket");
    let kubevirt = plugins.join("kubevirt-nvidia.com-TU104GL_Tesla_T4.sock");
    drop(std::os::unix::net::UnixListener::bind(&kubevirt).expect("kubevirt socket"));

    let shutdown = CancellationToken::new();
    let agent = agent(&node, &shutdown).await;
    assert!(!stale.exists(), "the stale socket is removed");
    assert!(live.exists(), "a socket someone listens on stays");
    assert!(
        kubevirt.exists(),
        "KubeVirt's own socket names are never touched"
    );
    shutdown.cancel();
    agent.wait().await;
}

#[tokio::test]
async fn a_configmap_update_is_applied_and_a_bad_first_config_waits_for_a_good_one() {
    let node = Node::new();
    node.add_pci("0000:65:00.0", T4.0, T4.1, 12, 0, Some("vfio-pci"));
    // The kubelet's ConfigMap layout: kubevirt.yaml -> ..data/kubevirt.yaml, ..data -> ..<stamp>/
    let config_dir = node.dir.path().join("config");
    let publish = |stamp: &str, text: &str| {
        let versioned = config_dir.join(format!("..{stamp}"));
        std::fs::create_dir_all(&versioned).expect("versioned dir");
        std::fs::write(versioned.join("kubevirt.yaml"), text).expect("versioned file");
        let tmp = config_dir.join("..data_tmp");
        std::os::unix::fs::symlink(format!("..{stamp}"), &tmp).expect("data_tmp link");
        std::fs::rename(&tmp, config_dir.join("..data")).expect("atomic swap");
    };
    publish("v1", "permittedHostDevices: [this is not a map]\n");
    std::os::unix::fs::symlink("..data/kubevirt.yaml", node.config_file()).expect("file link");

    let kubelet = kubelet(&node).await;
    let shutdown = CancellationToken::new();
    let agent = agent(&node, &shutdown).await;
    let mut status = agent.status.clone();
    let first = wait_watch(&mut status, "the first pass", |s| s.passes >= 1).await;
    assert_eq!(first.config_failures, 1, "the bad first file is reported");
    assert!(
        first.resources.is_empty(),
        "nothing to serve without a good configuration"
    );

    publish("v2", &config_yaml(&[("10DE:1EB8", GPU)], &[]));
    wait_devices(&kubelet, GPU, &["12"]).await;
    publish("v3", &config_yaml(&[("10DE:1EB8", "nvidia.com/T4")], &[]));
    wait_devices(&kubelet, "nvidia.com/T4", &["12"]).await;
    shutdown.cancel();
    agent.wait().await;
    kubelet.stop().await;
}

#[tokio::test]
async fn a_taken_metrics_port_does_not_stop_serving() {
    let node = Node::new();
    node.add_pci("0000:65:00.0", T4.0, T4.1, 12, 0, Some("vfio-pci"));
    node.write_config(&config_yaml(&[("10DE:1EB8", GPU)], &[]));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let mut options = options(&node);
    options.metrics_addr = Some(taken.local_addr().expect("address"));
    let kubelet = kubelet(&node).await;
    let shutdown = CancellationToken::new();
    let agent = start_agent(
        options.clone(),
        Box::new(configured_source(&options)),
        shutdown.clone(),
    )
    .await
    .expect("the agent starts anyway");
    assert_eq!(agent.metrics_addr, None);
    wait_devices(&kubelet, GPU, &["12"]).await;
    assert!(
        agent
            .metrics
            .render()
            .contains("hostdev_errors_total{kind=\"metrics\"} 1")
    );
    shutdown.cancel();
    agent.wait().await;
    kubelet.stop().await;
}

#[tokio::test]
async fn a_removed_and_recreated_plugin_directory_is_watched_again() {
    let node = Node::new();
    node.add_pci("0000:65:00.0", T4.0, T4.1, 12, 0, Some("vfio-pci"));
    node.write_config(&config_yaml(&[("10DE:1EB8", GPU)], &[]));
    let mut options = options(&node);
    // Far beyond the deadline: only the directory watch can notice what follows.
    options.resync = std::time::Duration::from_secs(600);
    let first = kubelet(&node).await;
    let shutdown = CancellationToken::new();
    let agent = start_agent(
        options.clone(),
        Box::new(configured_source(&options)),
        shutdown.clone(),
    )
    .await
    .expect("agent starts");
    wait_devices(&first, GPU, &["12"]).await;

    // A node reset: the kubelet goes, its directory is wiped, a new kubelet recreates it.
    first.stop().await;
    std::fs::remove_dir_all(node.plugins()).expect("wipe the plugin directory");
    let second = kubelet(&node).await;
    wait_devices(&second, GPU, &["12"]).await;

    // The watch is back: a later kubelet restart is noticed as before.
    let before = endpoint(&second, GPU);
    second.restart().await.expect("kubelet restarts");
    second
        .wait_for(
            |s: &State| {
                s.endpoint(GPU)
                    .and_then(|e| e.socket)
                    .is_some_and(|p| Some(&p) != before.as_ref())
            },
            DEADLINE,
        )
        .await
        .expect("re-registered after the restart");
    wait_devices(&second, GPU, &["12"]).await;
    shutdown.cancel();
    agent.wait().await;
    second.stop().await;
}

/// GET /metrics over a plain TCP connection.
async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("metrics endpoint");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("response");
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    response
}
