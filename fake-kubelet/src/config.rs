//! Settings of one fake kubelet. Defaults are the kubelet's; tests shorten the timeouts.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// How a fake kubelet behaves. Build with [`Config::new`] and adjust fields.
#[derive(Debug, Clone)]
pub struct Config {
    /// The device-plugin directory (holds `kubelet.sock`, plugin sockets and the checkpoint).
    pub dir: PathBuf,
    /// Seed of every random choice (which of several equal devices is allocated); see
    /// [`crate::allocation`] for how per-request generators derive from it.
    pub seed: u64,
    /// How long a resource whose plugin went away stays (all unhealthy) before removal. 5 min.
    pub grace_period: Duration,
    /// Dialing a plugin's socket during Register. 10 s like the kubelet.
    pub dial_timeout: Duration,
    /// GetDevicePluginOptions during Register. 10 s.
    pub options_timeout: Duration,
    /// Opening the ListAndWatch stream (not its lifetime). 10 s.
    pub list_and_watch_timeout: Duration,
    /// GetPreferredAllocation. The kubelet has none; 30 s here so a hung plugin cannot stall us.
    pub preferred_allocation_timeout: Duration,
    /// Allocate. The kubelet has none; 30 s here.
    pub allocate_timeout: Duration,
    /// PreStartContainer. 30 s like the kubelet.
    pub prestart_timeout: Duration,
    /// How many recent log lines are kept in memory for failure reports.
    pub log_capacity: usize,
}

impl Config {
    /// Kubelet defaults for a plugin directory at `dir`, seed 0.
    pub fn new(dir: impl AsRef<Path>) -> Self {
        Self {
            dir: dir.as_ref().to_path_buf(),
            seed: 0,
            grace_period: Duration::from_secs(5 * 60),
            dial_timeout: Duration::from_secs(10),
            options_timeout: Duration::from_secs(10),
            list_and_watch_timeout: Duration::from_secs(10),
            preferred_allocation_timeout: Duration::from_secs(30),
            allocate_timeout: Duration::from_secs(30),
            prestart_timeout: hostdev_api::PRE_START_CONTAINER_TIMEOUT,
            log_capacity: 500,
        }
    }

    /// Every plugin RPC timeout set to `t` (tests use short ones to see timeouts fire).
    pub fn with_rpc_timeouts(mut self, t: Duration) -> Self {
        self.dial_timeout = t;
        self.options_timeout = t;
        self.list_and_watch_timeout = t;
        self.preferred_allocation_timeout = t;
        self.allocate_timeout = t;
        self.prestart_timeout = t;
        self
    }

    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    pub fn with_grace_period(mut self, grace: Duration) -> Self {
        self.grace_period = grace;
        self
    }

    pub fn socket_path(&self) -> PathBuf {
        self.dir.join(hostdev_api::KUBELET_SOCKET)
    }

    pub fn checkpoint_path(&self) -> PathBuf {
        self.dir.join(hostdev_api::CHECKPOINT_FILE)
    }
}
