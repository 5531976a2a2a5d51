//! The kubelet's device-plugin directory: `kubelet.sock` created means the kubelet (re)started;
//! a socket deleted may be ours being removed by a restarting kubelet.

use std::path::{Path, PathBuf};

use futures::StreamExt;
use inotify::{EventMask, Inotify, WatchMask};
use tokio_util::sync::CancellationToken;

use super::{INOTIFY_BUFFER, WatchError, WatchEvent, WatchSender};

/// Adds the watch on `dir` now, then reports events from a spawned task until `stop`.
pub fn spawn(dir: &Path, events: WatchSender, stop: CancellationToken) -> Result<(), WatchError> {
    let error = |action, source| WatchError {
        watcher: "plugin-dir",
        action,
        path: dir.to_path_buf(),
        source,
    };
    let inotify = Inotify::init().map_err(|e| error("initialising inotify for", e))?;
    let mask = WatchMask::CREATE
        | WatchMask::MOVED_TO
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF;
    inotify
        .watches()
        .add(dir, mask)
        .map_err(|e| error("watching", e))?;
    let mut stream = inotify
        .into_event_stream(vec![0u8; INOTIFY_BUFFER])
        .map_err(|e| error("streaming events of", e))?;
    let dir: PathBuf = dir.to_path_buf();
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => return,
                event = stream.next() => event,
            };
            match event {
                Some(Ok(event)) => {
                    if event
                        .mask
                        .intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF)
                    {
                        let _ = events.send(WatchEvent::WatcherFailed {
                            watcher: "plugin-dir",
                            error: format!("{} was removed; waiting on the resync", dir.display()),
                        });
                        return;
                    }
                    let Some(name) = event.name else { continue };
                    let path = dir.join(&name);
                    let created = event
                        .mask
                        .intersects(EventMask::CREATE | EventMask::MOVED_TO);
                    let removed = event
                        .mask
                        .intersects(EventMask::DELETE | EventMask::MOVED_FROM);
                    if created && name == hostdev_api::KUBELET_SOCKET {
                        let _ = events.send(WatchEvent::KubeletSocketCreated);
                    } else if removed && name != hostdev_api::KUBELET_SOCKET {
                        let _ = events.send(WatchEvent::PluginSocketRemoved(path));
                    }
                }
                Some(Err(e)) => {
                    let _ = events.send(WatchEvent::WatcherFailed {
                        watcher: "plugin-dir",
                        error: e.to_string(),
                    });
                    return;
                }
                None => return,
            }
        }
    });
    Ok(())
}
