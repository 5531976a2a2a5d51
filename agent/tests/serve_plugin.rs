//! One plugin ([`PluginHandle`]) against the fake kubelet and a direct gRPC client, over real
//! unix sockets: ListAndWatch, Allocate per kind, refusals, preferred allocation, PreStart,
//! socket permissions and stopping.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{DEADLINE, Node, wait_watch};
use fake_kubelet::{AllocationRequest, Config, FakeKubelet};
use hostdev_agent::inventory::{DeviceKind, Member, PluginDevice, Resource};
use hostdev_agent::metrics::Metrics;
use hostdev_agent::plugin::{DevRoot, PinnedAddresses, PluginHandle, PluginSettings};
use hostdev_api::v1beta1::device_plugin_client::DevicePluginClient;
use hostdev_api::v1beta1::{
    AllocateRequest, ContainerAllocateRequest, ContainerPreferredAllocationRequest, Empty,
    PreStartContainerRequest, PreferredAllocationRequest,
};
use tonic::transport::Channel;

const GPU: &str = "nvidia.com/TU104GL_Tesla_T4";

fn pci_device(group: u32, addresses: &[&str], numa: i64, healthy: bool) -> PluginDevice {
    PluginDevice {
        id: group.to_string(),
        healthy,
        numa_nodes: vec![numa],
        members: addresses
            .iter()
            .map(|a| Member::Pci {
                address: a.to_string(),
                iommu_group: group,
                numa_node: Some(numa),
            })
            .collect(),
    }
}

fn gpus(devices: Vec<PluginDevice>) -> Resource {
    Resource {
        name: GPU.into(),
        kind: DeviceKind::Pci,
        devices,
        notes: vec![],
    }
}

fn settings(node: &Node) -> PluginSettings {
    PluginSettings {
        plugin_dir: node.plugins(),
        dev_root: DevRoot::new(node.dev()),
        metrics: Metrics::new(),
    }
}

async fn kubelet(node: &Node) -> FakeKubelet {
    FakeKubelet::start(Config::new(node.plugins()))
        .await
        .expect("fake kubelet starts")
}

async fn registered_plugin(node: &Node, resource: Resource) -> PluginHandle {
    let plugin = PluginHandle::start(resource, PinnedAddresses::default(), settings(node));
    let mut registrations = plugin.registrations_watch();
    wait_watch(&mut registrations, "the first registration", |n| *n >= 1).await;
    plugin
}

async fn client(plugin: &PluginHandle) -> DevicePluginClient<Channel> {
    let socket = plugin
        .socket_path()
        .expect("a registered plugin has a socket");
    DevicePluginClient::new(
        hostdev_api::unix::connect(&socket)
            .await
            .expect("dial the plugin"),
    )
}

fn allocate_request(ids: &[&str]) -> AllocateRequest {
    AllocateRequest {
        container_requests: vec![ContainerAllocateRequest {
            devices_ids: ids.iter().map(|s| s.to_string()).collect(),
        }],
    }
}

#[tokio::test]
async fn list_and_watch_sends_the_full_list_then_every_change() {
    let node = Node::new();
    let kubelet = kubelet(&node).await;
    let plugin = registered_plugin(
        &node,
        gpus(vec![pci_device(12, &["0000:65:00.0"], 0, true)]),
    )
    .await;
    kubelet
        .wait_for(
            |s| {
                s.resource_status(GPU)
                    .is_some_and(|r| r.capacity == 1 && r.allocatable == 1)
            },
            DEADLINE,
        )
        .await
        .expect("initial list reaches the kubelet");

    // Direct stream: the first message is the whole list, the next one the change.
    let mut stream = client(&plugin)
        .await
        .list_and_watch(Empty {})
        .await
        .expect("ListAndWatch")
        .into_inner();
    let first = stream
        .message()
        .await
        .expect("first message")
        .expect("stream open");
    assert_eq!(first.devices.len(), 1);
    assert_eq!(first.devices[0].id, "12");
    assert_eq!(first.devices[0].health, "Healthy");
    assert_eq!(
        first.devices[0].topology.as_ref().map(|t| t.nodes[0].id),
        Some(0)
    );

    assert!(plugin.update(gpus(vec![
        pci_device(12, &["0000:65:00.0"], 0, false),
        pci_device(13, &["0000:66:00.0"], 1, true),
    ])));
    let second = stream
        .message()
        .await
        .expect("second message")
        .expect("stream open");
    let health: Vec<(&str, &str)> = second
        .devices
        .iter()
        .map(|d| (d.id.as_str(), d.health.as_str()))
        .collect();
    assert_eq!(health, vec![("12", "Unhealthy"), ("13", "Healthy")]);
    kubelet
        .wait_for(
            |s| {
                s.resource_status(GPU)
                    .is_some_and(|r| r.capacity == 2 && r.allocatable == 1)
            },
            DEADLINE,
        )
        .await
        .expect("the change reaches the kubelet");

    // An identical update sends nothing new.
    assert!(!plugin.update(plugin.resource().as_ref().clone()));

    // Stopping: an empty list, then the end of the stream, and the socket is gone.
    let socket = plugin.socket_path().expect("socket");
    plugin.stop().await;
    let last = stream
        .message()
        .await
        .expect("last message")
        .expect("an empty list before the end");
    assert!(last.devices.is_empty());
    assert!(
        stream.message().await.map(|m| m.is_none()).unwrap_or(true),
        "stream ends after the empty list"
    );
    assert!(!socket.exists(), "{} removed on stop", socket.display());
    kubelet.stop().await;
}

#[tokio::test]
async fn allocate_pci_hands_over_vfio_nodes_and_the_address_env() {
    let node = Node::new();
    std::fs::write(node.dev().join("vfio/12"), "").expect("group node");
    let kubelet = kubelet(&node).await;
    let _plugin = registered_plugin(
        &node,
        gpus(vec![pci_device(
            12,
            &["0000:65:00.0", "0000:65:00.1"],
            0,
            true,
        )]),
    )
    .await;
    kubelet
        .wait_for(
            |s| s.resource_status(GPU).is_some_and(|r| r.allocatable == 1),
            DEADLINE,
        )
        .await
        .expect("devices");
    let allocation = kubelet
        .allocate(AllocationRequest::new("pod-1", "compute", GPU, 1))
        .await
        .expect("allocates");
    let response = &allocation.response;
    assert_eq!(
        response
            .envs
            .get("PCI_RESOURCE_NVIDIA_COM_TU104GL_TESLA_T4")
            .map(String::as_str),
        Some("0000:65:00.0,0000:65:00.1")
    );
    let specs: Vec<(&str, String, &str)> = response
        .devices
        .iter()
        .map(|d| {
            (
                d.container_path.as_str(),
                d.host_path.clone(),
                d.permissions.as_str(),
            )
        })
        .collect();
    let dev = node.dev();
    assert_eq!(
        specs,
        vec![
            (
                "/dev/vfio/vfio",
                dev.join("vfio/vfio").to_string_lossy().into_owned(),
                "mrw"
            ),
            (
                "/dev/vfio/12",
                dev.join("vfio/12").to_string_lossy().into_owned(),
                "mrw"
            ),
        ],
        "container paths are /dev/..., host paths under the dev root; one node per group"
    );
    kubelet.stop().await;
}

#[tokio::test]
async fn allocate_mdev_and_usb_follow_kubevirt() {
    let node = Node::new();
    let mdevs = Resource {
        name: "nvidia.com/GRID_T4-1Q".into(),
        kind: DeviceKind::Mdev,
        devices: vec![PluginDevice {
            id: "40".into(),
            healthy: true,
            numa_nodes: vec![],
            members: vec![Member::Mdev {
                uuid: "6f0c5bb8-2c35-4d7e-9f43-6a4f8e0a9e2b".into(),
                parent: "0000:65:00.0".into(),
                type_id: "nvidia-230".into(),
                type_name: "GRID T4-1Q".into(),
                iommu_group: 40,
            }],
        }],
        notes: vec![],
    };
    let usb = Resource {
        name: "kubevirt.io/storage".into(),
        kind: DeviceKind::Usb,
        devices: vec![PluginDevice {
            id: "1-1".into(),
            healthy: true,
            numa_nodes: vec![],
            members: vec![
                Member::Usb {
                    path: "1-1".into(),
                    bus: 1,
                    devnum: 2,
                    vendor: 0x46f4,
                    product: 1,
                    devname: "bus/usb/001/002".into(),
                },
                Member::Usb {
                    path: "1-2".into(),
                    bus: 1,
                    devnum: 13,
                    vendor: 0x46f4,
                    product: 2,
                    devname: "bus/usb/001/013".into(),
                },
            ],
        }],
        notes: vec![],
    };
    let mdev_plugin = PluginHandle::start(mdevs, PinnedAddresses::default(), settings(&node));
    let usb_plugin = PluginHandle::start(usb, PinnedAddresses::default(), settings(&node));
    for plugin in [&mdev_plugin, &usb_plugin] {
        let mut registrations = plugin.registrations_watch();
        // No kubelet yet: the plugins serve anyway and can be asked directly.
        let _ = registrations.borrow_and_update();
        common::wait_until("the plugin socket", || plugin.socket_path().is_some()).await;
    }

    let mdev_response = client(&mdev_plugin)
        .await
        .allocate(allocate_request(&["40"]))
        .await
        .expect("mdev Allocate")
        .into_inner();
    let container = &mdev_response.container_responses[0];
    assert_eq!(
        container
            .envs
            .get("MDEV_PCI_RESOURCE_NVIDIA_COM_GRID_T4-1Q")
            .map(String::as_str),
        Some("6f0c5bb8-2c35-4d7e-9f43-6a4f8e0a9e2b")
    );
    let paths: Vec<&str> = container
        .devices
        .iter()
        .map(|d| d.container_path.as_str())
        .collect();
    assert_eq!(paths, vec!["/dev/vfio/vfio", "/dev/vfio/40"]);

    let usb_response = client(&usb_plugin)
        .await
        .allocate(allocate_request(&["1-1"]))
        .await
        .expect("USB Allocate")
        .into_inner();
    let container = &usb_response.container_responses[0];
    assert_eq!(
        container
            .envs
            .get("USB_RESOURCE_KUBEVIRT_IO_STORAGE")
            .map(String::as_str),
        Some("1:2,1:13")
    );
    let specs: Vec<(&str, String)> = container
        .devices
        .iter()
        .map(|d| (d.container_path.as_str(), d.host_path.clone()))
        .collect();
    assert_eq!(
        specs,
        vec![
            (
                "/dev/bus/usb/001/002",
                node.dev()
                    .join("bus/usb/001/002")
                    .to_string_lossy()
                    .into_owned()
            ),
            (
                "/dev/bus/usb/001/013",
                node.dev()
                    .join("bus/usb/001/013")
                    .to_string_lossy()
                    .into_owned()
            ),
        ]
    );
    mdev_plugin.stop().await;
    usb_plugin.stop().await;
}

#[tokio::test]
async fn allocate_refuses_unknown_vanished_and_unhealthy_ids_by_name() {
    let node = Node::new();
    let plugin = PluginHandle::start(
        gpus(vec![
            pci_device(12, &["0000:65:00.0"], 0, true),
            pci_device(13, &["0000:66:00.0"], 0, false),
        ]),
        PinnedAddresses::default(),
        settings(&node),
    );
    common::wait_until("the plugin socket", || plugin.socket_path().is_some()).await;
    let mut client = client(&plugin).await;

    let unknown = client
        .allocate(allocate_request(&["99"]))
        .await
        .expect_err("unknown id refused");
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    assert!(
        unknown.message().contains("99") && unknown.message().contains(GPU),
        "{}",
        unknown.message()
    );

    let unhealthy = client
        .allocate(allocate_request(&["13"]))
        .await
        .expect_err("unhealthy id refused");
    assert_eq!(unhealthy.code(), tonic::Code::FailedPrecondition);
    assert!(
        unhealthy.message().contains("13"),
        "{}",
        unhealthy.message()
    );

    // A mix: one good id does not make the request succeed partially.
    let mixed = client
        .allocate(allocate_request(&["12", "99"]))
        .await
        .expect_err("mixed request refused");
    assert!(mixed.message().contains("99"), "{}", mixed.message());

    // Vanished: advertised a moment ago, gone now.
    plugin.update(gpus(vec![pci_device(13, &["0000:66:00.0"], 0, true)]));
    let vanished = client
        .allocate(allocate_request(&["12"]))
        .await
        .expect_err("vanished id refused");
    assert_eq!(vanished.code(), tonic::Code::NotFound);
    assert!(vanished.message().contains("12"), "{}", vanished.message());
    plugin.stop().await;
}

#[tokio::test]
async fn preferred_allocation_keeps_one_numa_node_and_honours_pins() {
    let node = Node::new();
    let devices = vec![
        pci_device(2, &["0000:02:00.0"], 0, true),
        pci_device(3, &["0000:03:00.0"], 1, true),
        pci_device(4, &["0000:04:00.0"], 1, true),
        pci_device(5, &["0000:05:00.0"], 0, true),
    ];
    let plugin = PluginHandle::start(gpus(devices), PinnedAddresses::default(), settings(&node));
    common::wait_until("the plugin socket", || plugin.socket_path().is_some()).await;
    let mut client = client(&plugin).await;
    let ask = |must: &[&str], size| PreferredAllocationRequest {
        container_requests: vec![ContainerPreferredAllocationRequest {
            available_device_i_ds: ["2", "3", "4", "5"].iter().map(|s| s.to_string()).collect(),
            must_include_device_i_ds: must.iter().map(|s| s.to_string()).collect(),
            allocation_size: size,
        }],
    };
    let answer = client
        .get_preferred_allocation(ask(&["3"], 2))
        .await
        .expect("preferred")
        .into_inner();
    assert_eq!(
        answer.container_responses[0].device_i_ds,
        vec!["3", "4"],
        "must_include first, same NUMA node"
    );

    plugin.set_pins(PinnedAddresses(vec!["0000:05:00.0".into()]));
    let answer = client
        .get_preferred_allocation(ask(&[], 1))
        .await
        .expect("preferred")
        .into_inner();
    assert_eq!(
        answer.container_responses[0].device_i_ds,
        vec!["5"],
        "the pinned address wins"
    );

    let negative = client
        .get_preferred_allocation(ask(&[], -1))
        .await
        .expect_err("negative size refused");
    assert_eq!(negative.code(), tonic::Code::InvalidArgument);

    let options = client
        .get_device_plugin_options(Empty {})
        .await
        .expect("options")
        .into_inner();
    assert!(options.get_preferred_allocation_available);
    plugin.stop().await;
}

#[tokio::test]
async fn pre_start_container_checks_the_device_nodes_exist() {
    let node = Node::new();
    node.add_pci("0000:65:00.0", 0x10de, 0x1eb8, 12, 0, Some("vfio-pci"));
    let plugin = PluginHandle::start(
        gpus(vec![pci_device(12, &["0000:65:00.0"], 0, true)]),
        PinnedAddresses::default(),
        settings(&node),
    );
    common::wait_until("the plugin socket", || plugin.socket_path().is_some()).await;
    let mut client = client(&plugin).await;
    let request = || PreStartContainerRequest {
        devices_ids: vec!["12".into()],
    };
    client
        .pre_start_container(request())
        .await
        .expect("present device passes");
    std::fs::remove_file(node.dev().join("vfio/12")).expect("remove group node");
    let missing = client
        .pre_start_container(request())
        .await
        .expect_err("missing node refused");
    assert_eq!(missing.code(), tonic::Code::FailedPrecondition);
    assert!(
        missing.message().contains("vfio/12"),
        "{}",
        missing.message()
    );
    plugin.stop().await;
}

#[tokio::test]
async fn a_dev_root_mounted_elsewhere_hands_out_the_nodes_paths() {
    // The agent sees the node's /dev at <tmp>/dev; the kubelet must get /dev/... host paths,
    // while PreStartContainer checks the nodes where the agent sees them.
    let node = Node::new();
    std::fs::write(node.dev().join("vfio/12"), "").expect("group node");
    let mut settings = settings(&node);
    settings.dev_root = DevRoot::mapped(node.dev(), "/dev");
    let plugin = PluginHandle::start(
        gpus(vec![pci_device(12, &["0000:65:00.0"], 0, true)]),
        PinnedAddresses::default(),
        settings,
    );
    common::wait_until("the plugin socket", || plugin.socket_path().is_some()).await;
    let mut client = client(&plugin).await;
    let response = client
        .allocate(allocate_request(&["12"]))
        .await
        .expect("Allocate")
        .into_inner();
    let specs: Vec<(&str, &str)> = response.container_responses[0]
        .devices
        .iter()
        .map(|d| (d.container_path.as_str(), d.host_path.as_str()))
        .collect();
    assert_eq!(
        specs,
        vec![
            ("/dev/vfio/vfio", "/dev/vfio/vfio"),
            ("/dev/vfio/12", "/dev/vfio/12")
        ]
    );
    client
        .pre_start_container(PreStartContainerRequest {
            devices_ids: vec!["12".into()],
        })
        .await
        .expect("the node is found under the local dev root");
    plugin.stop().await;
}

#[tokio::test]
async fn plugin_sockets_are_private_and_unique() {
    let node = Node::new();
    let kubelet = kubelet(&node).await;
    let plugin = registered_plugin(
        &node,
        gpus(vec![pci_device(12, &["0000:65:00.0"], 0, true)]),
    )
    .await;
    let socket = plugin.socket_path().expect("socket");
    let mode = std::fs::metadata(&socket)
        .expect("socket metadata")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "{} has mode {mode:o}", socket.display());
    let name = socket
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name")
        .to_string();
    assert!(
        name.starts_with("kubevirt-nvidia.com-TU104GL_Tesla_T4-"),
        "{name}"
    );

    // A restart signal moves the plugin to a new socket and registers it again.
    let mut registrations = plugin.registrations_watch();
    plugin.kubelet_restarted();
    wait_watch(&mut registrations, "the second registration", |n| *n >= 2).await;
    let second = plugin.socket_path().expect("new socket");
    assert_ne!(second, socket);
    assert!(!socket.exists(), "the old socket is removed");
    kubelet
        .wait_for(
            |s| {
                s.endpoint(GPU)
                    .is_some_and(|e| e.socket.as_deref() == Some(second.as_path()))
            },
            DEADLINE,
        )
        .await
        .expect("the kubelet follows the new socket");
    plugin.stop().await;
    kubelet.stop().await;
}
