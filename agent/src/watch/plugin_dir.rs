//! The kubelet's device-plugin directory: `kubelet.sock` created means the kubelet (re)started;
//! a socket deleted may be ours being removed by a restarting kubelet. If the directory itself
//! goes away (a node reset), the watch comes back when the directory does.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use inotify::{EventMask, EventStream, Inotify, WatchMask};
use tokio_util::sync::CancellationToken;

use super::{INOTIFY_BUFFER, WatchError, WatchEvent, WatchSender};

/// How often a vanished plugin directory is looked for (inotify cannot watch what is absent).
const REAPPEAR_POLL: Duration = Duration::from_millis(200);

fn mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::MOVED_TO
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
}

/// Adds the watch on `dir` now, then reports events from a spawned task until `stop`.
pub fn spawn(dir: &Path, events: WatchSender, stop: CancellationToken) -> Result<(), WatchError> {
    let error = |action, source| WatchError {
        watcher: "plugin-dir",
        action,
        path: dir.to_path_buf(),
        source,
    };
    let inotify = Inotify::init().map_err(|e| error("initialising inotify for", e))?;
    inotify
        .watches()
        .add(dir, mask())
        .map_err(|e| error("watching", e))?;
    let stream = inotify
        .into_event_stream(vec![0u8; INOTIFY_BUFFER])
        .map_err(|e| error("streaming events of", e))?;
    tokio::spawn(watch(dir.to_path_buf(), stream, events, stop));
    Ok(())
}

async fn watch(
    dir: PathBuf,
    mut stream: EventStream<Vec<u8>>,
    events: WatchSender,
    stop: CancellationToken,
) {
    let failed = |error: String| WatchEvent::WatcherFailed {
        watcher: "plugin-dir",
        error,
    };
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            event = stream.next() => event,
        };
        let event = match event {
            Some(Ok(event)) => event,
            Some(Err(e)) => {
                let _ = events.send(failed(e.to_string()));
                return;
            }
            None => return,
        };
        if event
            .mask
            .intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF)
        {
            tracing::warn!(dir = %dir.display(), "the device-plugin directory went away; waiting for it");
            // Wait for the directory, watch it again, and have every plugin re-serve there.
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(REAPPEAR_POLL) => {}
                }
                if !dir.is_dir() {
                    continue;
                }
                match stream.watches().add(&dir, mask()) {
                    Ok(_) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => {
                        let _ =
                            events.send(failed(format!("watching {} again: {e}", dir.display())));
                        return;
                    }
                }
            }
            tracing::info!(dir = %dir.display(), "the device-plugin directory is back");
            let _ = events.send(WatchEvent::KubeletSocketCreated);
            continue;
        }
        let Some(name) = event.name else { continue };
        let created = event
            .mask
            .intersects(EventMask::CREATE | EventMask::MOVED_TO);
        let removed = event
            .mask
            .intersects(EventMask::DELETE | EventMask::MOVED_FROM);
        if created && name == hostdev_api::KUBELET_SOCKET {
            let _ = events.send(WatchEvent::KubeletSocketCreated);
        } else if removed && name != hostdev_api::KUBELET_SOCKET {
            let _ = events.send(WatchEvent::PluginSocketRemoved(dir.join(&name)));
        }
    }
}
