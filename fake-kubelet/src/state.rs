//! The device manager's state: resources with their devices and endpoint, and the pod devices.
//! Mutations here are pure (no I/O); [`crate::kubelet`] applies them under one lock and then
//! persists, notifies and logs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Instant;

use hostdev_api::v1beta1::device_plugin_client::DevicePluginClient;
use hostdev_api::v1beta1::{ContainerAllocateResponse, Device, DevicePluginOptions};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// NUMA key the kubelet's checkpoint uses for devices without topology.
pub const NO_TOPOLOGY_NODE: i64 = -1;

/// Everything the device manager knows. Read it through the methods (in `wait_for` conditions).
#[derive(Default)]
pub struct State {
    pub(crate) resources: BTreeMap<String, Resource>,
    pub(crate) pods: BTreeMap<PodKey, ContainerAllocation>,
    /// Devices chosen for allocations whose Allocate RPC is in flight.
    pub(crate) reserved: BTreeMap<String, BTreeSet<String>>,
    /// (pod, container) admitted as non-restartable init containers: app containers of the pod
    /// reuse their devices, as the kubelet's `devicesToReuse` does.
    pub(crate) init_containers: BTreeSet<(String, String)>,
    pub(crate) running: bool,
}

pub(crate) type PodKey = (String, String, String);

pub(crate) struct Resource {
    /// Every device of the last ListAndWatch message, by ID.
    pub(crate) devices: BTreeMap<String, Device>,
    pub(crate) endpoint: Endpoint,
}

pub(crate) struct Endpoint {
    /// Unique per registration; stale streams and timers compare against it.
    pub(crate) generation: u64,
    /// None for a resource restored from the checkpoint and not re-registered yet.
    pub(crate) socket: Option<PathBuf>,
    pub(crate) options: DevicePluginOptions,
    pub(crate) client: Option<DevicePluginClient<Channel>>,
    pub(crate) stopped_at: Option<Instant>,
    /// Cancels this endpoint's ListAndWatch stream when it is replaced.
    pub(crate) cancel: CancellationToken,
}

/// Devices given to one container for one resource, as recorded in the checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerAllocation {
    pub pod_uid: String,
    pub container: String,
    pub resource: String,
    /// Sorted device IDs.
    pub device_ids: Vec<String>,
    /// The same devices keyed by NUMA node ([`NO_TOPOLOGY_NODE`] for none), as in the checkpoint.
    pub devices_by_numa: BTreeMap<i64, Vec<String>>,
    /// The plugin's `container_responses[0]`.
    pub response: ContainerAllocateResponse,
}

/// Capacity as the node reports it: capacity = healthy + unhealthy, allocatable = healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResourceStatus {
    pub capacity: usize,
    pub allocatable: usize,
    /// Devices held by pods (not part of node status; handy in tests).
    pub allocated: usize,
}

/// Snapshot of the node's extended resources.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeStatus {
    pub resources: BTreeMap<String, ResourceStatus>,
}

impl NodeStatus {
    pub fn capacity(&self, resource: &str) -> usize {
        self.resources.get(resource).map_or(0, |r| r.capacity)
    }
    pub fn allocatable(&self, resource: &str) -> usize {
        self.resources.get(resource).map_or(0, |r| r.allocatable)
    }
}

/// One device of a resource as the kubelet sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceStatus {
    pub id: String,
    /// The health string the plugin sent; only `Healthy` counts.
    pub health: String,
    pub numa_nodes: Vec<i64>,
}

impl DeviceStatus {
    pub fn is_healthy(&self) -> bool {
        self.health == hostdev_api::HEALTHY
    }
}

/// The endpoint currently serving a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointStatus {
    pub socket: Option<PathBuf>,
    pub options: DevicePluginOptions,
    pub generation: u64,
    pub stopped: bool,
}

pub(crate) fn is_healthy(d: &Device) -> bool {
    d.health == hostdev_api::HEALTHY
}

pub(crate) fn numa_nodes(d: &Device) -> Vec<i64> {
    d.topology
        .as_ref()
        .map(|t| t.nodes.iter().map(|n| n.id).collect())
        .unwrap_or_default()
}

impl State {
    /// Node status over every known resource (including ones restored with capacity 0).
    pub fn node_status(&self) -> NodeStatus {
        let resources = self
            .resources
            .keys()
            .map(|name| (name.clone(), self.resource_status(name).unwrap_or_default()))
            .collect();
        NodeStatus { resources }
    }

    pub fn resource_status(&self, resource: &str) -> Option<ResourceStatus> {
        let r = self.resources.get(resource)?;
        Some(ResourceStatus {
            capacity: r.devices.len(),
            allocatable: r.devices.values().filter(|d| is_healthy(d)).count(),
            allocated: self.allocated_ids(resource).len(),
        })
    }

    /// Devices of `resource` sorted by ID, or None when the resource is unknown.
    pub fn devices(&self, resource: &str) -> Option<Vec<DeviceStatus>> {
        let r = self.resources.get(resource)?;
        Some(
            r.devices
                .values()
                .map(|d| DeviceStatus {
                    id: d.id.clone(),
                    health: d.health.clone(),
                    numa_nodes: numa_nodes(d),
                })
                .collect(),
        )
    }

    pub fn endpoint(&self, resource: &str) -> Option<EndpointStatus> {
        let e = &self.resources.get(resource)?.endpoint;
        Some(EndpointStatus {
            socket: e.socket.clone(),
            options: e.options,
            generation: e.generation,
            stopped: e.stopped_at.is_some(),
        })
    }

    /// True when `resource` has a live (not stopped) endpoint.
    pub fn is_registered(&self, resource: &str) -> bool {
        self.resources
            .get(resource)
            .is_some_and(|r| r.endpoint.stopped_at.is_none() && r.endpoint.client.is_some())
    }

    pub fn resources(&self) -> impl Iterator<Item = &str> {
        self.resources.keys().map(String::as_str)
    }

    /// Every recorded container allocation, ordered by pod, container, resource.
    pub fn allocations(&self) -> impl Iterator<Item = &ContainerAllocation> {
        self.pods.values()
    }

    pub fn pod_allocations(&self, pod_uid: &str) -> Vec<ContainerAllocation> {
        self.pods
            .values()
            .filter(|a| a.pod_uid == pod_uid)
            .cloned()
            .collect()
    }

    /// Whether the kubelet serves its registration socket right now.
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// Device IDs of `resource` held by pods.
    pub fn allocated_ids(&self, resource: &str) -> BTreeSet<String> {
        self.pods
            .values()
            .filter(|a| a.resource == resource)
            .flat_map(|a| a.device_ids.iter().cloned())
            .collect()
    }

    /// Devices of `resource` the pod's init containers hold and none of its app containers has
    /// taken yet (the kubelet's `devicesToReuse`), sorted.
    pub(crate) fn reusable(&self, pod_uid: &str, resource: &str) -> Vec<String> {
        let held = |init: bool| -> BTreeSet<String> {
            self.pods
                .values()
                .filter(|a| a.pod_uid == pod_uid && a.resource == resource)
                .filter(|a| {
                    self.init_containers
                        .contains(&(a.pod_uid.clone(), a.container.clone()))
                        == init
                })
                .flat_map(|a| a.device_ids.iter().cloned())
                .collect()
        };
        held(true).difference(&held(false)).cloned().collect()
    }

    /// Held by pods or reserved by an allocation in flight.
    pub(crate) fn in_use(&self, resource: &str) -> BTreeSet<String> {
        let mut ids = self.allocated_ids(resource);
        if let Some(r) = self.reserved.get(resource) {
            ids.extend(r.iter().cloned());
        }
        ids
    }

    pub(crate) fn healthy_ids(&self, resource: &str) -> Option<BTreeSet<String>> {
        let r = self.resources.get(resource)?;
        Some(
            r.devices
                .values()
                .filter(|d| is_healthy(d))
                .map(|d| d.id.clone())
                .collect(),
        )
    }

    /// Replaces the device set from a ListAndWatch message of endpoint `generation`; returns
    /// (healthy, unhealthy) counts, or None when that endpoint was replaced meanwhile.
    pub(crate) fn apply_devices(
        &mut self,
        resource: &str,
        generation: u64,
        devices: Vec<Device>,
    ) -> Option<(usize, usize)> {
        let r = self.resources.get_mut(resource)?;
        if r.endpoint.generation != generation {
            return None;
        }
        r.devices = devices.into_iter().map(|d| (d.id.clone(), d)).collect();
        let healthy = r.devices.values().filter(|d| is_healthy(d)).count();
        Some((healthy, r.devices.len() - healthy))
    }

    /// The stream of endpoint `generation` ended: every device becomes unhealthy. Returns the
    /// device count and socket, or None when the endpoint is no longer current.
    pub(crate) fn mark_stopped(
        &mut self,
        resource: &str,
        generation: u64,
    ) -> Option<(usize, Option<PathBuf>)> {
        let r = self.resources.get_mut(resource)?;
        if r.endpoint.generation != generation || r.endpoint.stopped_at.is_some() {
            return None;
        }
        r.endpoint.stopped_at = Some(Instant::now());
        r.endpoint.client = None;
        for d in r.devices.values_mut() {
            d.health = hostdev_api::UNHEALTHY.to_owned();
        }
        Some((r.devices.len(), r.endpoint.socket.clone()))
    }

    /// Grace period of endpoint `generation` expired: removes the resource if nothing
    /// re-registered meanwhile.
    pub(crate) fn remove_expired(&mut self, resource: &str, generation: u64) -> bool {
        let expired = self.resources.get(resource).is_some_and(|r| {
            r.endpoint.generation == generation && r.endpoint.stopped_at.is_some()
        });
        if expired {
            self.resources.remove(resource);
        }
        expired
    }

    /// Removes every allocation of `pod_uid`; returns how many container/resource entries went.
    pub(crate) fn free_pod(&mut self, pod_uid: &str) -> usize {
        let before = self.pods.len();
        self.pods.retain(|(pod, _, _), _| pod != pod_uid);
        self.init_containers.retain(|(pod, _)| pod != pod_uid);
        before - self.pods.len()
    }
}
