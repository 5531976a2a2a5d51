//! The command line: raw flags (with environment fallbacks) parsed by clap, then validated into
//! [`AgentOptions`] before any work starts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{LabelsError, NodeLabels, ServeMode};
use crate::explain::OutputFormat;
use crate::manager::AgentOptions;
use crate::plugin::DeviceOwner;
use crate::sysfs::HostPaths;

#[derive(Debug, Parser)]
#[command(
    name = "hostdev-agent",
    version,
    about = "Serves PCI (vfio-pci), mediated and USB host devices to the kubelet, KubeVirt-compatible."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub flags: Flags,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print what would be advertised per resource and, for every other device, why not.
    Discover {
        #[arg(long, value_enum, default_value = "text")]
        output: OutputFormat,
    },
}

/// Every flag, accepted before or after the subcommand.
#[derive(Debug, Clone, Args)]
pub struct Flags {
    /// The KubeVirt CR (or its spec.configuration), YAML or JSON.
    #[arg(long, global = true, env = "HOSTDEV_CONFIG")]
    pub config: Option<PathBuf>,
    /// This node's name (KubeVirt's virt-handler reads NODE_NAME too).
    #[arg(long, global = true, env = "NODE_NAME")]
    pub node_name: Option<String>,
    #[arg(
        long,
        global = true,
        env = "HOSTDEV_SYSFS_ROOT",
        default_value = "/sys"
    )]
    pub sysfs_root: PathBuf,
    #[arg(long, global = true, env = "HOSTDEV_DEV_ROOT", default_value = "/dev")]
    pub dev_root: PathBuf,
    /// Where the dev root is on the node itself, when the agent sees it elsewhere (with the
    /// node's /dev mounted at /host/dev: `--dev-root /host/dev --node-dev-root /dev`).
    #[arg(long, global = true, env = "HOSTDEV_NODE_DEV_ROOT")]
    pub node_dev_root: Option<PathBuf>,
    #[arg(long, global = true, env = "HOSTDEV_DEVICE_PLUGIN_DIR", default_value = hostdev_api::DEVICE_PLUGIN_DIR)]
    pub device_plugin_dir: PathBuf,
    /// Which permitted entries to serve: KubeVirt's own, the externalResourceProvider ones, or all.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "HOSTDEV_SERVE",
        default_value = "kubevirt"
    )]
    pub serve: ServeMode,
    /// Node labels for nodeMediatedDeviceTypes selectors: `k=v,k2=v2`.
    #[arg(long, global = true, env = "HOSTDEV_NODE_LABELS")]
    pub node_labels: Option<String>,
    /// A file of `k=v` lines with the node's labels (e.g. from the downward API).
    #[arg(long, global = true, env = "HOSTDEV_NODE_LABELS_FILE")]
    pub node_labels_file: Option<PathBuf>,
    /// Where to serve Prometheus metrics; `off` disables the endpoint.
    #[arg(
        long,
        global = true,
        env = "HOSTDEV_METRICS_ADDR",
        default_value = "127.0.0.1:9100"
    )]
    pub metrics_addr: String,
    /// Interval of the safety-net rediscovery: `30s`, `500ms`, `2m`.
    #[arg(long, global = true, env = "HOSTDEV_RESYNC", default_value = "30s", value_parser = parse_duration)]
    pub resync: Duration,
    /// The uid USB device nodes are given to on Allocate (qemu's in virt-launcher, as KubeVirt).
    #[arg(long, global = true, env = "HOSTDEV_QEMU_UID", default_value_t = crate::plugin::owner::QEMU_ID)]
    pub qemu_uid: u32,
    /// The gid USB device nodes are given to on Allocate.
    #[arg(long, global = true, env = "HOSTDEV_QEMU_GID", default_value_t = crate::plugin::owner::QEMU_ID)]
    pub qemu_gid: u32,
    #[arg(
        long,
        global = true,
        value_enum,
        env = "HOSTDEV_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// A flag that parsed but does not make sense.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("--config (or HOSTDEV_CONFIG) is required")]
    NoConfig,
    #[error("--node-name (or NODE_NAME) is required")]
    NoNodeName,
    #[error("--metrics-addr {value:?}: {message}")]
    MetricsAddr { value: String, message: String },
    #[error("--resync must be longer than zero")]
    ZeroResync,
    #[error(transparent)]
    Labels(#[from] LabelsError),
}

/// `30s`, `250ms`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 30s or 500ms"))?;
    let duration = match unit {
        "" | "s" => Duration::from_secs(value),
        "ms" => Duration::from_millis(value),
        "m" => Duration::from_secs(value * 60),
        "h" => Duration::from_secs(value * 3600),
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (use ms, s, m or h)"
            ));
        }
    };
    Ok(duration)
}

impl Flags {
    /// Validates the flags into the agent's options.
    pub fn to_options(&self) -> Result<AgentOptions, CliError> {
        self.options(self.node_name.clone())
    }

    /// Like [`Self::to_options`], for `discover`: the node name only matters to
    /// `nodeMediatedDeviceTypes` selectors, so it falls back to this machine's host name.
    pub fn to_discover_options(&self) -> Result<AgentOptions, CliError> {
        let hostname = || {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        };
        self.options(
            self.node_name
                .clone()
                .filter(|n| !n.is_empty())
                .or_else(hostname),
        )
    }

    fn options(&self, node_name: Option<String>) -> Result<AgentOptions, CliError> {
        let config = self.config.clone().ok_or(CliError::NoConfig)?;
        let node_name = node_name
            .filter(|n| !n.is_empty())
            .ok_or(CliError::NoNodeName)?;
        let mut labels = NodeLabels::for_node(&node_name);
        if let Some(file) = &self.node_labels_file {
            labels.add_file(file)?;
        }
        if let Some(flag) = &self.node_labels {
            labels.add_flag(flag)?;
        }
        let metrics_addr = match self.metrics_addr.trim() {
            "" | "off" | "none" => None,
            value => Some(
                value
                    .parse::<SocketAddr>()
                    .map_err(|e| CliError::MetricsAddr {
                        value: value.to_string(),
                        message: e.to_string(),
                    })?,
            ),
        };
        if self.resync.is_zero() {
            return Err(CliError::ZeroResync);
        }
        let mut options = AgentOptions::new(config, node_name);
        options.host = HostPaths::new(&self.sysfs_root, &self.dev_root);
        options.node_dev_root = self.node_dev_root.clone();
        options.plugin_dir = self.device_plugin_dir.clone();
        options.serve = self.serve;
        options.node_labels = labels;
        options.metrics_addr = metrics_addr;
        options.resync = self.resync;
        options.usb_owner = Some(DeviceOwner {
            uid: self.qemu_uid,
            gid: self.qemu_gid,
        });
        Ok(options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3d").is_err());
    }

    #[test]
    fn flags_after_the_subcommand_and_validation() {
        let cli = Cli::try_parse_from([
            "hostdev-agent",
            "discover",
            "--config",
            "/etc/hostdev/kubevirt.yaml",
            "--node-name",
            "node-1",
            "--node-labels",
            "gpu=t4",
            "--metrics-addr",
            "off",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Discover {
                output: OutputFormat::Text
            })
        ));
        let options = cli.flags.to_options().unwrap();
        assert_eq!(options.node_name, "node-1");
        assert_eq!(options.metrics_addr, None);
        assert_eq!(
            options.node_labels.0.get("gpu").map(String::as_str),
            Some("t4")
        );
        assert_eq!(
            options.plugin_dir,
            PathBuf::from(hostdev_api::DEVICE_PLUGIN_DIR)
        );
    }

    #[test]
    fn bad_metrics_address_is_named() {
        let cli = Cli::try_parse_from([
            "hostdev-agent",
            "--config",
            "c",
            "--node-name",
            "n",
            "--metrics-addr",
            "nowhere",
        ])
        .unwrap();
        let error = cli.flags.to_options().unwrap_err().to_string();
        assert!(error.contains("--metrics-addr \"nowhere\""), "{error}");
    }
}
