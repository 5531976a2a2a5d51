//! Registering a plugin with the kubelet, and retrying while the kubelet is away.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hostdev_api::v1beta1::registration_client::RegistrationClient;
use hostdev_api::v1beta1::{DevicePluginOptions, RegisterRequest};
use tokio_util::sync::CancellationToken;

/// The options every hostdev plugin offers; the kubelet reads them back through
/// GetDevicePluginOptions, so both places use this one value.
pub const PLUGIN_OPTIONS: DevicePluginOptions = DevicePluginOptions {
    pre_start_required: true,
    get_preferred_allocation_available: true,
};

/// How long one dial of kubelet.sock may take (the kubelet itself dials plugins with 10 s).
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("registering {resource} (endpoint {endpoint}): {source}")]
    Dial {
        resource: String,
        endpoint: String,
        #[source]
        source: hostdev_api::unix::ConnectError,
    },
    #[error(
        "registering {resource} (endpoint {endpoint}) with {kubelet}: kubelet refused: {status}"
    )]
    Refused {
        resource: String,
        endpoint: String,
        kubelet: PathBuf,
        status: Box<tonic::Status>,
    },
    #[error("registering {resource}: stopped before the kubelet answered")]
    Stopped { resource: String },
}

/// One Register call. `endpoint` is the plugin's socket file name inside the plugin directory.
pub async fn register(
    kubelet_socket: &Path,
    endpoint: &str,
    resource: &str,
) -> Result<(), RegistrationError> {
    let channel = hostdev_api::unix::connect_timeout(kubelet_socket, DIAL_TIMEOUT)
        .await
        .map_err(|source| RegistrationError::Dial {
            resource: resource.to_string(),
            endpoint: endpoint.to_string(),
            source,
        })?;
    RegistrationClient::new(channel)
        .register(RegisterRequest {
            version: hostdev_api::VERSION.to_string(),
            endpoint: endpoint.to_string(),
            resource_name: resource.to_string(),
            options: Some(PLUGIN_OPTIONS),
        })
        .await
        .map_err(|status| RegistrationError::Refused {
            resource: resource.to_string(),
            endpoint: endpoint.to_string(),
            kubelet: kubelet_socket.to_path_buf(),
            status: Box::new(status),
        })?;
    Ok(())
}

/// Registers, retrying with exponential backoff (100 ms up to 5 s) until it succeeds or `stop`
/// fires. A kubelet that comes back is normally noticed sooner through the plugin directory
/// watch, which restarts the whole attempt; the backoff is the safety net.
pub async fn register_with_backoff(
    kubelet_socket: &Path,
    endpoint: &str,
    resource: &str,
    stop: &CancellationToken,
    mut on_failure: impl FnMut(&RegistrationError),
) -> Result<(), RegistrationError> {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let attempt = tokio::select! {
            _ = stop.cancelled() => return Err(RegistrationError::Stopped { resource: resource.to_string() }),
            attempt = register(kubelet_socket, endpoint, resource) => attempt,
        };
        match attempt {
            Ok(()) => return Ok(()),
            Err(error) => on_failure(&error),
        }
        tokio::select! {
            _ = stop.cancelled() => return Err(RegistrationError::Stopped { resource: resource.to_string() }),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
