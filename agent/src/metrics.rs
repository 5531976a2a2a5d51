//! Prometheus metrics: counters kept in memory, rendered as text on `GET /metrics`.
//!
//! The HTTP side is a few lines over a tokio `TcpListener` (HTTP/1.0-style: one request, one
//! response, close), which is all a Prometheus scrape needs and keeps hyper's server out.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Every counter and gauge the agent exports.
#[derive(Debug, Default)]
pub struct Metrics {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// resource -> (healthy, unhealthy)
    devices: BTreeMap<String, (u64, u64)>,
    allocations: BTreeMap<String, u64>,
    allocation_errors: BTreeMap<String, u64>,
    registrations: BTreeMap<String, u64>,
    /// error kind -> count (`discovery`, `registration`, `serve`, `watch`, ...)
    errors: BTreeMap<String, u64>,
    config_reloads: u64,
    config_reload_failures: u64,
    discoveries: u64,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn set_devices(&self, resource: &str, healthy: u64, unhealthy: u64) {
        self.state
            .lock()
            .devices
            .insert(resource.to_string(), (healthy, unhealthy));
    }

    pub fn remove_resource(&self, resource: &str) {
        self.state.lock().devices.remove(resource);
    }

    pub fn allocation(&self, resource: &str) {
        *self
            .state
            .lock()
            .allocations
            .entry(resource.to_string())
            .or_default() += 1;
    }

    pub fn allocation_error(&self, resource: &str) {
        *self
            .state
            .lock()
            .allocation_errors
            .entry(resource.to_string())
            .or_default() += 1;
    }

    pub fn registration(&self, resource: &str) {
        *self
            .state
            .lock()
            .registrations
            .entry(resource.to_string())
            .or_default() += 1;
    }

    pub fn error(&self, kind: &str) {
        *self
            .state
            .lock()
            .errors
            .entry(kind.to_string())
            .or_default() += 1;
    }

    pub fn config_reload(&self, ok: bool) {
        let mut state = self.state.lock();
        if ok {
            state.config_reloads += 1;
        } else {
            state.config_reload_failures += 1;
        }
    }

    pub fn discovery(&self) {
        self.state.lock().discoveries += 1;
    }

    /// Successful registrations of `resource` so far.
    pub fn registrations(&self, resource: &str) -> u64 {
        self.state
            .lock()
            .registrations
            .get(resource)
            .copied()
            .unwrap_or(0)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let state = self.state.lock();
        let mut out = String::new();
        let family = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        family(
            &mut out,
            "hostdev_devices",
            "gauge",
            "Devices advertised per resource and health.",
        );
        for (resource, (healthy, unhealthy)) in &state.devices {
            let r = escape(resource);
            let _ = writeln!(
                out,
                "hostdev_devices{{resource=\"{r}\",health=\"Healthy\"}} {healthy}"
            );
            let _ = writeln!(
                out,
                "hostdev_devices{{resource=\"{r}\",health=\"Unhealthy\"}} {unhealthy}"
            );
        }
        let per_resource = [
            (
                "hostdev_allocations_total",
                "Successful Allocate calls per resource.",
                &state.allocations,
            ),
            (
                "hostdev_allocation_errors_total",
                "Refused Allocate calls per resource.",
                &state.allocation_errors,
            ),
            (
                "hostdev_registrations_total",
                "Successful kubelet registrations per resource.",
                &state.registrations,
            ),
        ];
        for (name, help, values) in per_resource {
            family(&mut out, name, "counter", help);
            for (resource, value) in values {
                let _ = writeln!(out, "{name}{{resource=\"{}\"}} {value}", escape(resource));
            }
        }
        family(
            &mut out,
            "hostdev_errors_total",
            "counter",
            "Errors by kind.",
        );
        for (kind, value) in &state.errors {
            let _ = writeln!(
                out,
                "hostdev_errors_total{{kind=\"{}\"}} {value}",
                escape(kind)
            );
        }
        let scalars = [
            (
                "hostdev_config_reloads_total",
                "Configuration files applied.",
                state.config_reloads,
            ),
            (
                "hostdev_config_reload_failures_total",
                "Configuration files rejected.",
                state.config_reload_failures,
            ),
            (
                "hostdev_discoveries_total",
                "Discovery runs.",
                state.discoveries,
            ),
        ];
        for (name, help, value) in scalars {
            family(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {value}");
        }
        out
    }
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Binds `addr` and answers scrapes until `shutdown`; returns the bound address (port 0 picks one).
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("binding the metrics endpoint {addr}: {e}"),
        )
    })?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, "metrics endpoint: accept failed");
                    continue;
                }
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                if let Err(error) = answer(stream, &metrics).await {
                    tracing::debug!(%error, %peer, "metrics endpoint: request failed");
                }
            });
        }
    });
    Ok(local)
}

async fn answer(mut stream: tokio::net::TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    // Only the request line matters; a scrape's request fits in one read.
    let mut buffer = [0u8; 2048];
    let read = stream.read(&mut buffer).await?;
    let request = String::from_utf8_lossy(&buffer[..read]);
    let target = request.split_whitespace().nth(1).unwrap_or("");
    let (status, content_type, body) = if target == "/metrics" {
        ("200 OK", "text/plain; version=0.0.4", metrics.render())
    } else {
        (
            "404 Not Found",
            "text/plain",
            "only /metrics lives here\n".to_string(),
        )
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_devices_and_counters() {
        let metrics = Metrics::new();
        metrics.set_devices("nvidia.com/T4", 2, 1);
        metrics.allocation("nvidia.com/T4");
        metrics.config_reload(false);
        let text = metrics.render();
        assert!(
            text.contains("hostdev_devices{resource=\"nvidia.com/T4\",health=\"Healthy\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("hostdev_devices{resource=\"nvidia.com/T4\",health=\"Unhealthy\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("hostdev_allocations_total{resource=\"nvidia.com/T4\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("hostdev_config_reload_failures_total 1"),
            "{text}"
        );
    }
}
