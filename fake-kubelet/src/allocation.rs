//! Allocation round trips with the plugin: phase one plans under the state lock, then
//! GetPreferredAllocation (when offered and useful), phase two picks and reserves, then ONE
//! Allocate per resource whose `container_responses[0]` is recorded, then PreStartContainer
//! when the plugin requires it. The lock is never held across an RPC, so a slow plugin delays
//! only its own allocation.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hostdev_api::v1beta1::device_plugin_client::DevicePluginClient;
use hostdev_api::v1beta1::{
    AllocateRequest, ContainerAllocateRequest, ContainerAllocateResponse, DevicePluginOptions,
    PreStartContainerRequest, PreferredAllocationRequest,
};
use tonic::transport::Channel;

use crate::core::{Core, Persist};
use crate::error::{AllocateError, RpcError};
use crate::events::KubeletEvent;
use crate::selection::{AllocationRequest, Plan, by_numa, choose, plan, request_rng};
use crate::state::ContainerAllocation;

/// Several resources for one container in one call, like a pod spec's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRequest {
    pub pod_uid: String,
    pub container: String,
    /// Resource name to device count; handled in name order, one Allocate per resource.
    pub resources: BTreeMap<String, usize>,
    pub numa_affinity: Option<std::collections::BTreeSet<i64>>,
}

pub(crate) async fn allocate_container(
    core: &Arc<Core>,
    req: ContainerRequest,
) -> Result<Vec<ContainerAllocation>, AllocateError> {
    let mut out = Vec::with_capacity(req.resources.len());
    for (resource, count) in &req.resources {
        let one = AllocationRequest {
            pod_uid: req.pod_uid.clone(),
            container: req.container.clone(),
            resource: resource.clone(),
            count: *count,
            numa_affinity: req.numa_affinity.clone(),
        };
        // Like the kubelet, resources already allocated stay allocated when a later one fails.
        out.push(allocate(core, one).await?);
    }
    Ok(out)
}

pub(crate) async fn allocate(
    core: &Arc<Core>,
    req: AllocationRequest,
) -> Result<ContainerAllocation, AllocateError> {
    let result = allocate_inner(core, &req).await;
    if let Err(e) = &result {
        core.log(format!(
            "allocation for pod {} container {} resource {} failed: {e}",
            req.pod_uid, req.container, req.resource
        ));
        core.emit(KubeletEvent::Error {
            context: format!(
                "allocate {} {} {} {}",
                req.pod_uid, req.container, req.resource, req.count
            ),
            message: e.to_string(),
        });
    }
    result
}

struct EndpointHandle {
    client: Option<DevicePluginClient<Channel>>,
    options: DevicePluginOptions,
    socket: PathBuf,
}

fn endpoint_of(core: &Core, resource: &str) -> Option<EndpointHandle> {
    let state = core.state.lock();
    let e = &state.resources.get(resource)?.endpoint;
    Some(EndpointHandle {
        client: e.client.clone(),
        options: e.options,
        socket: e.socket.clone().unwrap_or_default(),
    })
}

async fn allocate_inner(
    core: &Arc<Core>,
    req: &AllocationRequest,
) -> Result<ContainerAllocation, AllocateError> {
    let resource = req.resource.as_str();
    let planned = {
        let state = core.state.lock();
        if !state.running {
            return Err(AllocateError::NotRunning(resource.to_owned()));
        }
        plan(&state, req)?
    };
    let from_init = match &planned {
        Plan::FromInit(ids) => ids.clone(),
        _ => vec![],
    };
    let candidates = match planned {
        Plan::Reuse(existing) => {
            pre_start(core, &existing).await?;
            return Ok(*existing);
        }
        Plan::Nothing => {
            return Ok(ContainerAllocation {
                pod_uid: req.pod_uid.clone(),
                container: req.container.clone(),
                resource: resource.to_owned(),
                device_ids: vec![],
                devices_by_numa: BTreeMap::new(),
                response: ContainerAllocateResponse::default(),
            });
        }
        Plan::Choose(c) => Some(c),
        Plan::FromInit(_) => None,
    };

    let endpoint = endpoint_of(core, resource)
        .ok_or_else(|| AllocateError::UnknownPlugin(resource.to_owned()))?;
    let preferred = if let Some(candidates) = candidates
        .as_ref()
        .filter(|c| c.wants_preferred() && endpoint.options.get_preferred_allocation_available)
    {
        let mut client = endpoint
            .client
            .clone()
            .ok_or_else(|| AllocateError::PreferredEndpointStopped(resource.to_owned()))?;
        let request = PreferredAllocationRequest {
            container_requests: vec![candidates.preferred_request()],
        };
        let t = core.config.preferred_allocation_timeout;
        let answer = tokio::time::timeout(t, client.get_preferred_allocation(request))
            .await
            .map_err(|_| {
                AllocateError::PreferredAllocationRpc(RpcError::timeout(
                    resource,
                    &endpoint.socket,
                    t,
                ))
            })?
            .map_err(|s| {
                AllocateError::PreferredAllocationRpc(RpcError::from_status(
                    resource,
                    &endpoint.socket,
                    &s,
                ))
            })?;
        answer
            .into_inner()
            .container_responses
            .into_iter()
            .next()
            .map(|r| r.device_i_ds)
            .unwrap_or_default()
    } else {
        vec![]
    };

    // Phase two: pick among devices still free, then reserve them while Allocate runs.
    let (reservation, mut client, socket) = {
        let mut state = core.state.lock();
        let chosen = match candidates {
            Some(candidates) => {
                let candidates = candidates.without(&state.in_use(resource), resource)?;
                let mut rng = request_rng(core.config.seed, &req.pod_uid, &req.container, resource);
                choose(&candidates, &preferred, &mut rng)?
            }
            // Held by the pod's init containers: shared, so never reserved against them.
            None => from_init,
        };
        let r = state
            .resources
            .get(resource)
            .ok_or_else(|| AllocateError::UnknownPlugin(resource.to_owned()))?;
        let client = r
            .endpoint
            .client
            .clone()
            .ok_or_else(|| AllocateError::EndpointStopped(resource.to_owned()))?;
        let socket = r.endpoint.socket.clone().unwrap_or_default();
        state
            .reserved
            .entry(resource.to_owned())
            .or_default()
            .extend(chosen.iter().cloned());
        (Reservation::new(core, resource, chosen), client, socket)
    };

    let t = core.config.allocate_timeout;
    let request = AllocateRequest {
        container_requests: vec![ContainerAllocateRequest {
            devices_ids: reservation.ids.clone(),
        }],
    };
    let response = tokio::time::timeout(t, client.allocate(request))
        .await
        .map_err(|_| AllocateError::AllocateRpc(RpcError::timeout(resource, &socket, t)))?
        .map_err(|s| AllocateError::AllocateRpc(RpcError::from_status(resource, &socket, &s)))?
        .into_inner();
    let Some(first) = response.container_responses.into_iter().next() else {
        return Err(AllocateError::EmptyResponse(resource.to_owned()));
    };

    let allocation = {
        let mut state = core.state.lock();
        let allocation = ContainerAllocation {
            pod_uid: req.pod_uid.clone(),
            container: req.container.clone(),
            resource: resource.to_owned(),
            devices_by_numa: by_numa(&state, resource, &reservation.ids),
            device_ids: reservation.ids.clone(),
            response: first,
        };
        reservation.release(&mut state);
        state.pods.insert(
            (
                req.pod_uid.clone(),
                req.container.clone(),
                resource.to_owned(),
            ),
            allocation.clone(),
        );
        core.commit(
            state,
            Persist::Yes,
            vec![KubeletEvent::Allocated {
                pod_uid: req.pod_uid.clone(),
                container: req.container.clone(),
                resource: resource.to_owned(),
                device_ids: allocation.device_ids.clone(),
            }],
        );
        allocation
    };
    core.log(format!(
        "allocated {} to pod {} container {}: {:?}",
        resource, req.pod_uid, req.container, allocation.device_ids
    ));
    pre_start(core, &allocation).await?;
    Ok(allocation)
}

/// PreStartContainer with all the container's devices of the resource, when required.
async fn pre_start(core: &Core, a: &ContainerAllocation) -> Result<(), AllocateError> {
    let Some(endpoint) = endpoint_of(core, &a.resource) else {
        return Err(AllocateError::UnknownPlugin(a.resource.clone()));
    };
    if !endpoint.options.pre_start_required || a.device_ids.is_empty() {
        return Ok(());
    }
    let mut client = endpoint
        .client
        .ok_or_else(|| AllocateError::EndpointStopped(a.resource.clone()))?;
    let t: Duration = core.config.prestart_timeout;
    let request = PreStartContainerRequest {
        devices_ids: a.device_ids.clone(),
    };
    tokio::time::timeout(t, client.pre_start_container(request))
        .await
        .map_err(|_| {
            AllocateError::PreStartRpc(RpcError::timeout(&a.resource, &endpoint.socket, t))
        })?
        .map_err(|s| {
            AllocateError::PreStartRpc(RpcError::from_status(&a.resource, &endpoint.socket, &s))
        })?;
    core.log(format!(
        "PreStartContainer for pod {} container {} on {}: {:?}",
        a.pod_uid, a.container, a.resource, a.device_ids
    ));
    Ok(())
}

/// Devices held for an allocation in flight; returned to the pool when dropped (failure,
/// timeout or a cancelled caller) unless released into a recorded allocation.
struct Reservation {
    core: Arc<Core>,
    resource: String,
    ids: Vec<String>,
    held: bool,
}

impl Reservation {
    fn new(core: &Arc<Core>, resource: &str, ids: Vec<String>) -> Self {
        Self {
            core: Arc::clone(core),
            resource: resource.to_owned(),
            ids,
            held: true,
        }
    }

    fn release(mut self, state: &mut crate::state::State) {
        unreserve(state, &self.resource, &self.ids);
        self.held = false;
    }
}

fn unreserve(state: &mut crate::state::State, resource: &str, ids: &[String]) {
    if let Some(set) = state.reserved.get_mut(resource) {
        for id in ids {
            set.remove(id);
        }
        if set.is_empty() {
            state.reserved.remove(resource);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.held {
            let mut state = self.core.state.lock();
            unreserve(&mut state, &self.resource, &self.ids);
        }
    }
}
