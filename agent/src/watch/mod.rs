//! Wake-ups for the manager. None of these carries device state: sysfs stays the single source
//! of truth, a wake-up only asks for a rediscovery (or, for the plugin directory, a re-register).
//!
//! - [`plugin_dir`]: inotify on the kubelet's device-plugin directory (kubelet restarts).
//! - [`dev_root`]: inotify on `<dev>/vfio` and `<dev>/bus/usb/*` (device nodes come and go).
//! - [`config_file`]: inotify on the configuration file's directory (ConfigMap atomic swaps).
//! - [`uevent`]: the kernel's netlink uevent broadcast (hotplug, bind, unbind, mdev create).
//!
//! Every watcher is set up (its watches added) before its constructor returns, so nothing that
//! happens after the call is missed; the caller checks the current state only afterwards.

pub mod config_file;
pub mod dev_root;
pub mod plugin_dir;
pub mod uevent;

use std::path::PathBuf;

use tokio::sync::mpsc::UnboundedSender;

/// What a watcher reports to the manager.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// The configuration file (or the directory entry it lives behind) changed.
    ConfigChanged,
    /// The kernel announced a device event in a subsystem the agent serves.
    Uevent,
    /// A device node under the dev root appeared or disappeared.
    DevRootChanged,
    /// `kubelet.sock` was (re-)created: the kubelet restarted.
    KubeletSocketCreated,
    /// A socket in the plugin directory was removed (it may be one of ours).
    PluginSocketRemoved(PathBuf),
    /// A watcher failed; the periodic resync still covers what it watched.
    WatcherFailed {
        watcher: &'static str,
        error: String,
    },
}

pub type WatchSender = UnboundedSender<WatchEvent>;

/// The inotify read buffer: room for many events with file names.
const INOTIFY_BUFFER: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("{watcher} watcher: {action} {path}: {source}")]
pub struct WatchError {
    pub watcher: &'static str,
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}
