//! The `v1beta1.Registration` service and each registered endpoint's life: dial-back,
//! GetDevicePluginOptions, ListAndWatch, the stop that marks devices unhealthy, and the grace
//! period after which the resource is removed.

use std::path::PathBuf;
use std::sync::Arc;

use hostdev_api::v1beta1::device_plugin_client::DevicePluginClient;
use hostdev_api::v1beta1::registration_server::Registration;
use hostdev_api::v1beta1::{Device, Empty, RegisterRequest};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::core::{Core, Persist};
use crate::error::RegisterError;
use crate::events::KubeletEvent;
use crate::resource_name::is_extended_resource_name;
use crate::state::{Endpoint, Resource};

/// Serves Register for one run of the kubelet; `run` is cancelled when the kubelet stops.
pub(crate) struct RegistrationService {
    pub(crate) core: Arc<Core>,
    pub(crate) run: CancellationToken,
}

#[tonic::async_trait]
impl Registration for RegistrationService {
    async fn register(&self, request: Request<RegisterRequest>) -> Result<Response<Empty>, Status> {
        let r = request.into_inner();
        let resource = r.resource_name.clone();
        self.core.log(format!(
            "got registration request from device plugin with resource {resource} (endpoint {:?}, version {:?})",
            r.endpoint, r.version
        ));
        let result = tokio::select! {
            _ = self.run.cancelled() => Err(RegisterError::ShuttingDown(resource.clone())),
            res = register(&self.core, &self.run, r) => res,
        };
        match result {
            Ok(()) => Ok(Response::new(Empty {})),
            Err(e) => {
                self.core.log(format!(
                    "bad registration request from device plugin {resource}: {e}"
                ));
                self.core.emit(KubeletEvent::RegistrationFailed {
                    resource,
                    error: e.to_string(),
                });
                // Go's gRPC turns a plain error into code Unknown carrying its text.
                Err(Status::unknown(e.to_string()))
            }
        }
    }
}

async fn register(
    core: &Arc<Core>,
    run: &CancellationToken,
    r: RegisterRequest,
) -> Result<(), RegisterError> {
    let cfg = &core.config;
    if r.version != hostdev_api::VERSION {
        return Err(RegisterError::UnsupportedVersion(r.version));
    }
    if !is_extended_resource_name(&r.resource_name) {
        return Err(RegisterError::InvalidResourceName(r.resource_name));
    }
    // Like Go's filepath.Join: the endpoint is always inside the plugin directory.
    let socket = cfg.dir.join(r.endpoint.trim_start_matches('/'));
    let channel = hostdev_api::unix::connect_timeout(&socket, cfg.dial_timeout)
        .await
        .map_err(|e| RegisterError::Dial(e.to_string()))?;
    let mut client = DevicePluginClient::new(channel);
    let options = match tokio::time::timeout(
        cfg.options_timeout,
        client.get_device_plugin_options(Empty {}),
    )
    .await
    {
        Ok(Ok(o)) => o.into_inner(),
        Ok(Err(status)) => {
            return Err(RegisterError::Options(format!(
                "rpc error: code = {:?} desc = {} (endpoint {})",
                status.code(),
                status.message(),
                socket.display()
            )));
        }
        Err(_) => {
            return Err(RegisterError::Options(format!(
                "rpc error: code = DeadlineExceeded desc = context deadline exceeded after {:?} (endpoint {})",
                cfg.options_timeout,
                socket.display()
            )));
        }
    };

    let resource = r.resource_name;
    let generation = core.next_generation();
    let token = run.child_token();
    let mut state = core.state.lock();
    if !state.running {
        return Err(RegisterError::ShuttingDown(resource));
    }
    let endpoint = Endpoint {
        generation,
        socket: Some(socket.clone()),
        options,
        client: Some(client.clone()),
        stopped_at: None,
        cancel: token.clone(),
    };
    let replaced = match state.resources.get_mut(&resource) {
        Some(existing) => {
            // The old endpoint's stream (and its grace timer) end here; its late messages are ignored.
            existing.endpoint.cancel.cancel();
            existing.endpoint = endpoint;
            true
        }
        None => {
            state.resources.insert(
                resource.clone(),
                Resource {
                    devices: Default::default(),
                    endpoint,
                },
            );
            false
        }
    };
    core.commit(
        state,
        Persist::No,
        vec![KubeletEvent::Registered {
            resource: resource.clone(),
            endpoint: socket.clone(),
            options,
        }],
    );
    core.log(format!(
        "registered device plugin for {resource} at {}{} (pre_start_required={}, get_preferred_allocation_available={})",
        socket.display(),
        if replaced { ", replacing the previous endpoint" } else { "" },
        options.pre_start_required,
        options.get_preferred_allocation_available
    ));
    // Register returns first; the stream is opened by its own task, like the kubelet's goroutine.
    tokio::spawn(watch_devices(
        Arc::clone(core),
        resource,
        generation,
        client,
        token,
        socket,
    ));
    Ok(())
}

/// Runs ListAndWatch for one endpoint until the plugin ends it or the endpoint is replaced.
async fn watch_devices(
    core: Arc<Core>,
    resource: String,
    generation: u64,
    mut client: DevicePluginClient<tonic::transport::Channel>,
    token: CancellationToken,
    socket: PathBuf,
) {
    let timeout = core.config.list_and_watch_timeout;
    let opened = tokio::select! {
        _ = token.cancelled() => return,
        r = tokio::time::timeout(timeout, client.list_and_watch(Empty {})) => r,
    };
    let failure = match opened {
        Ok(Ok(response)) => {
            let mut stream = response.into_inner();
            loop {
                let next = tokio::select! {
                    _ = token.cancelled() => return,
                    m = stream.message() => m,
                };
                match next {
                    Ok(Some(msg)) => devices_update(&core, &resource, generation, msg.devices),
                    Ok(None) => break None,
                    Err(status) => {
                        break Some(format!(
                            "ListAndWatch of {resource} at {} failed: {status}",
                            socket.display()
                        ));
                    }
                }
            }
        }
        Ok(Err(status)) => Some(format!(
            "opening ListAndWatch of {resource} at {}: {status}",
            socket.display()
        )),
        Err(_) => Some(format!(
            "opening ListAndWatch of {resource} at {} timed out after {timeout:?}",
            socket.display()
        )),
    };
    if let Some(message) = failure {
        core.log(format!("error: {message}"));
        core.emit(KubeletEvent::Error {
            context: format!("ListAndWatch {resource}"),
            message,
        });
    }
    endpoint_stopped(&core, &resource, generation, token);
}

fn devices_update(core: &Core, resource: &str, generation: u64, devices: Vec<Device>) {
    let mut state = core.state.lock();
    let Some((healthy, unhealthy)) = state.apply_devices(resource, generation, devices) else {
        return;
    };
    core.commit(
        state,
        Persist::Yes,
        vec![KubeletEvent::DevicesChanged {
            resource: resource.to_owned(),
            healthy,
            unhealthy,
        }],
    );
    core.log(format!(
        "devices of {resource} updated: {healthy} healthy, {unhealthy} unhealthy"
    ));
}

/// The stream ended: all devices unhealthy, then the grace period.
fn endpoint_stopped(core: &Arc<Core>, resource: &str, generation: u64, token: CancellationToken) {
    let mut state = core.state.lock();
    let Some((count, socket)) = state.mark_stopped(resource, generation) else {
        return;
    };
    let endpoint = socket.unwrap_or_default();
    core.commit(
        state,
        Persist::Yes,
        vec![
            KubeletEvent::EndpointStopped {
                resource: resource.to_owned(),
                endpoint: endpoint.clone(),
            },
            KubeletEvent::DevicesChanged {
                resource: resource.to_owned(),
                healthy: 0,
                unhealthy: count,
            },
        ],
    );
    core.log(format!(
        "endpoint {} of {resource} stopped: {count} devices unhealthy, removal after {:?}",
        endpoint.display(),
        core.config.grace_period
    ));
    spawn_grace_timer(Arc::clone(core), resource.to_owned(), generation, token);
}

/// Removes `resource` after the grace period unless `token` is cancelled first (re-registration
/// replaces the endpoint and cancels it; so does stopping the kubelet).
pub(crate) fn spawn_grace_timer(
    core: Arc<Core>,
    resource: String,
    generation: u64,
    token: CancellationToken,
) {
    let grace = core.config.grace_period;
    tokio::spawn(async move {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(grace) => {}
        }
        let mut state = core.state.lock();
        if !state.remove_expired(&resource, generation) {
            return;
        }
        core.commit(
            state,
            Persist::Yes,
            vec![KubeletEvent::ResourceRemoved {
                resource: resource.clone(),
            }],
        );
        core.log(format!(
            "grace period of {resource} expired after {grace:?}: resource removed"
        ));
    });
}
