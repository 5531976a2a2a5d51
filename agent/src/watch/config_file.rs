//! The configuration file. The directory is watched, not the file: editors and Kubernetes
//! ConfigMaps replace files by renaming (a ConfigMap swaps its `..data` symlink), which a watch
//! on the file itself would lose.

use std::path::Path;

use futures::StreamExt;
use inotify::{Inotify, WatchMask};
use tokio_util::sync::CancellationToken;

use super::{INOTIFY_BUFFER, WatchError, WatchEvent, WatchSender};

/// Watches the directory holding `file` from now on; every change in it is reported as
/// [`WatchEvent::ConfigChanged`] (the manager re-reads and compares).
pub fn spawn(file: &Path, events: WatchSender, stop: CancellationToken) -> Result<(), WatchError> {
    let dir = match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let error = |action, source| WatchError {
        watcher: "config",
        action,
        path: dir.clone(),
        source,
    };
    let inotify = Inotify::init().map_err(|e| error("initialising inotify for", e))?;
    let mask = WatchMask::CLOSE_WRITE
        | WatchMask::CREATE
        | WatchMask::MOVED_TO
        | WatchMask::MOVED_FROM
        | WatchMask::DELETE;
    inotify
        .watches()
        .add(&dir, mask)
        .map_err(|e| error("watching", e))?;
    let mut stream = inotify
        .into_event_stream(vec![0u8; INOTIFY_BUFFER])
        .map_err(|e| error("streaming events of", e))?;
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => return,
                event = stream.next() => event,
            };
            match event {
                Some(Ok(_)) => {
                    let _ = events.send(WatchEvent::ConfigChanged);
                }
                Some(Err(e)) => {
                    let _ = events.send(WatchEvent::WatcherFailed {
                        watcher: "config",
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
