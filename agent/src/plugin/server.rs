//! The plugin logic ([`PluginCore`]) and the thin tonic adapter over it: every request is a
//! plain function of the current device state; the adapter only converts errors to statuses.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use hostdev_api::v1beta1::device_plugin_server::{DevicePlugin, DevicePluginServer};
use hostdev_api::v1beta1::{
    AllocateRequest, AllocateResponse, ContainerPreferredAllocationResponse, Device,
    DevicePluginOptions, Empty, ListAndWatchResponse, NumaNode, PreStartContainerRequest,
    PreStartContainerResponse, PreferredAllocationRequest, PreferredAllocationResponse,
    TopologyInfo,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::allocate::{AllocateError, allocate_container, verify_present};
use super::preferred::{PinnedAddresses, preferred_devices};
use super::{DevRoot, SharedResource};
use crate::inventory::Resource;
use crate::metrics::Metrics;
use crate::registration::PLUGIN_OPTIONS;

/// Why a plugin request was refused.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error(transparent)]
    Devices(#[from] AllocateError),
    #[error("resource {resource}: allocation size {size} is negative")]
    NegativeSize { resource: String, size: i32 },
    #[error("resource {resource}: serving on {socket}: {source}")]
    Bind {
        resource: String,
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<PluginError> for Status {
    fn from(error: PluginError) -> Self {
        let message = error.to_string();
        match error {
            PluginError::Devices(AllocateError::UnknownDevice { .. }) => Status::not_found(message),
            PluginError::Devices(AllocateError::Unhealthy { .. })
            | PluginError::Devices(AllocateError::NodeMissing { .. }) => {
                Status::failed_precondition(message)
            }
            PluginError::Devices(AllocateError::UnsafeDevname { .. })
            | PluginError::Devices(AllocateError::KindMismatch { .. })
            | PluginError::Bind { .. } => Status::internal(message),
            PluginError::Devices(_) | PluginError::NegativeSize { .. } => {
                Status::invalid_argument(message)
            }
        }
    }
}

/// The logic of one plugin, free of gRPC plumbing: every method is a plain function of the
/// current device state.
#[derive(Clone, Debug)]
pub struct PluginCore {
    state: watch::Receiver<SharedResource>,
    pins: watch::Receiver<PinnedAddresses>,
    dev_root: DevRoot,
    metrics: Arc<Metrics>,
}

impl PluginCore {
    pub fn new(
        state: watch::Receiver<SharedResource>,
        pins: watch::Receiver<PinnedAddresses>,
        dev_root: DevRoot,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            state,
            pins,
            dev_root,
            metrics,
        }
    }

    fn current(&self) -> SharedResource {
        self.state.borrow().clone()
    }

    /// The full device list first, again on every change. When the plugin `stop`s: an empty
    /// list (the resource is withdrawn at once) and the end of the stream. When only its socket
    /// generation is `retired` (a kubelet restart): the end of the stream, no empty list, so the
    /// devices merely turn unhealthy until the new registration replaces this endpoint.
    pub fn list_and_watch(
        &self,
        stop: CancellationToken,
        retired: CancellationToken,
    ) -> impl Stream<Item = ListAndWatchResponse> + Send + 'static {
        let mut state = self.state.clone();
        state.mark_changed();
        futures::stream::unfold(Some((state, stop, retired)), |step| async move {
            let (mut state, stop, retired) = step?;
            tokio::select! {
                biased;
                _ = stop.cancelled() => Some((ListAndWatchResponse::default(), None)),
                _ = retired.cancelled() => None,
                changed = state.changed() => match changed {
                    Ok(()) => {
                        let response = to_list_response(&state.borrow_and_update());
                        Some((response, Some((state, stop, retired))))
                    }
                    // The manager dropped the state: the plugin is gone.
                    Err(_) => Some((ListAndWatchResponse::default(), None)),
                },
            }
        })
    }

    pub fn allocate(&self, request: AllocateRequest) -> Result<AllocateResponse, PluginError> {
        let resource = self.current();
        let result = request
            .container_requests
            .iter()
            .map(|container| allocate_container(&resource, &container.devices_ids, &self.dev_root))
            .collect::<Result<Vec<_>, _>>();
        match result {
            Ok(container_responses) => {
                self.metrics.allocation(&resource.name);
                Ok(AllocateResponse {
                    container_responses,
                })
            }
            Err(error) => {
                self.metrics.allocation_error(&resource.name);
                Err(error.into())
            }
        }
    }

    pub fn preferred_allocation(
        &self,
        request: PreferredAllocationRequest,
    ) -> Result<PreferredAllocationResponse, PluginError> {
        let resource = self.current();
        let pins = self.pins.borrow().clone();
        let mut container_responses = Vec::with_capacity(request.container_requests.len());
        for container in request.container_requests {
            let size = usize::try_from(container.allocation_size).map_err(|_| {
                PluginError::NegativeSize {
                    resource: resource.name.clone(),
                    size: container.allocation_size,
                }
            })?;
            let device_i_ds = preferred_devices(
                &resource,
                &container.available_device_i_ds,
                &container.must_include_device_i_ds,
                size,
                &pins,
            );
            container_responses.push(ContainerPreferredAllocationResponse { device_i_ds });
        }
        Ok(PreferredAllocationResponse {
            container_responses,
        })
    }

    pub fn pre_start_container(
        &self,
        request: PreStartContainerRequest,
    ) -> Result<(), PluginError> {
        let resource = self.current();
        verify_present(&resource, &request.devices_ids, &self.dev_root).map_err(|error| {
            self.metrics.allocation_error(&resource.name);
            error.into()
        })
    }
}

/// The kubelet's view of a resource's devices.
pub fn to_list_response(resource: &Resource) -> ListAndWatchResponse {
    let devices = resource
        .devices
        .iter()
        .map(|device| Device {
            id: device.id.clone(),
            health: if device.healthy {
                hostdev_api::HEALTHY
            } else {
                hostdev_api::UNHEALTHY
            }
            .to_string(),
            topology: (!device.numa_nodes.is_empty()).then(|| TopologyInfo {
                nodes: device
                    .numa_nodes
                    .iter()
                    .map(|&id| NumaNode { id })
                    .collect(),
            }),
        })
        .collect();
    ListAndWatchResponse { devices }
}

/// The gRPC service for one socket generation. Its ListAndWatch streams end when the plugin
/// `stop`s (after an empty list) or when the generation is `retired` (quietly).
pub fn service(
    core: PluginCore,
    stop: CancellationToken,
    retired: CancellationToken,
) -> DevicePluginServer<impl DevicePlugin> {
    DevicePluginServer::new(DevicePluginService {
        core,
        stop,
        retired,
    })
}

/// The tonic adapter: turns requests into [`PluginCore`] calls and errors into statuses.
struct DevicePluginService {
    core: PluginCore,
    /// The plugin stops: streams send an empty list and end.
    stop: CancellationToken,
    /// This socket generation is replaced: streams end.
    retired: CancellationToken,
}

type ListStream = Pin<Box<dyn Stream<Item = Result<ListAndWatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl DevicePlugin for DevicePluginService {
    async fn get_device_plugin_options(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<DevicePluginOptions>, Status> {
        Ok(Response::new(PLUGIN_OPTIONS))
    }

    type ListAndWatchStream = ListStream;

    async fn list_and_watch(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListAndWatchStream>, Status> {
        use futures::StreamExt;
        let stream = self
            .core
            .list_and_watch(self.stop.clone(), self.retired.clone())
            .map(Ok);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_preferred_allocation(
        &self,
        request: Request<PreferredAllocationRequest>,
    ) -> Result<Response<PreferredAllocationResponse>, Status> {
        Ok(Response::new(
            self.core.preferred_allocation(request.into_inner())?,
        ))
    }

    async fn allocate(
        &self,
        request: Request<AllocateRequest>,
    ) -> Result<Response<AllocateResponse>, Status> {
        let resource = self.core.current().name.clone();
        match self.core.allocate(request.into_inner()) {
            Ok(response) => Ok(Response::new(response)),
            Err(error) => {
                tracing::warn!(%resource, %error, "Allocate refused");
                Err(error.into())
            }
        }
    }

    async fn pre_start_container(
        &self,
        request: Request<PreStartContainerRequest>,
    ) -> Result<Response<PreStartContainerResponse>, Status> {
        self.core.pre_start_container(request.into_inner())?;
        Ok(Response::new(PreStartContainerResponse {}))
    }
}
