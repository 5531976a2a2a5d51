//! Device nodes under the dev root: `vfio/<group>` (a group bound to vfio-pci) and
//! `bus/usb/BBB/DDD` (a plugged USB device). Directories that appear later (`vfio/` when the
//! first group is bound, a new USB bus) are watched as they appear.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
use tokio_util::sync::CancellationToken;

use super::{INOTIFY_BUFFER, WatchError, WatchEvent, WatchSender};

fn mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MOVED_TO
        | WatchMask::MOVED_FROM
        | WatchMask::ATTRIB
}

/// The directories worth watching that exist now.
fn interesting_dirs(dev_root: &Path) -> Vec<PathBuf> {
    let usb = dev_root.join("bus/usb");
    let mut dirs = vec![
        dev_root.to_path_buf(),
        dev_root.join("vfio"),
        dev_root.join("bus"),
        usb.clone(),
    ];
    if let Ok(entries) = std::fs::read_dir(&usb) {
        for entry in entries.flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                dirs.push(entry.path());
            }
        }
    }
    dirs.retain(|d| d.is_dir());
    dirs
}

/// Adds watches for every interesting directory not watched yet.
fn ensure_watches(
    watches: &mut Watches,
    watched: &mut HashMap<WatchDescriptor, PathBuf>,
    dev_root: &Path,
) -> std::io::Result<()> {
    for dir in interesting_dirs(dev_root) {
        if watched.values().any(|d| d == &dir) {
            continue;
        }
        match watches.add(&dir, mask()) {
            Ok(wd) => {
                watched.insert(wd, dir);
            }
            // It went away between listing and watching: nothing to watch.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Whether an event in `dir` about `name` concerns device nodes the agent serves.
fn relevant(dev_root: &Path, dir: &Path, name: &str) -> bool {
    if dir == dev_root {
        name == "vfio" || name == "bus"
    } else if dir == dev_root.join("bus") {
        name == "usb"
    } else {
        true
    }
}

/// Watches the dev root from now on, reporting [`WatchEvent::DevRootChanged`] until `stop`.
pub fn spawn(
    dev_root: &Path,
    events: WatchSender,
    stop: CancellationToken,
) -> Result<(), WatchError> {
    let error = |action, source| WatchError {
        watcher: "dev-root",
        action,
        path: dev_root.to_path_buf(),
        source,
    };
    let inotify = Inotify::init().map_err(|e| error("initialising inotify for", e))?;
    let mut watched = HashMap::new();
    let mut watches = inotify.watches();
    ensure_watches(&mut watches, &mut watched, dev_root).map_err(|e| error("watching", e))?;
    let mut stream = inotify
        .into_event_stream(vec![0u8; INOTIFY_BUFFER])
        .map_err(|e| error("streaming events of", e))?;
    let dev_root = dev_root.to_path_buf();
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => return,
                event = stream.next() => event,
            };
            let event = match event {
                Some(Ok(event)) => event,
                Some(Err(e)) => {
                    let _ = events.send(WatchEvent::WatcherFailed {
                        watcher: "dev-root",
                        error: e.to_string(),
                    });
                    return;
                }
                None => return,
            };
            if event.mask.contains(EventMask::IGNORED) {
                watched.remove(&event.wd);
                continue;
            }
            let Some(dir) = watched.get(&event.wd).cloned() else {
                continue;
            };
            let name = event
                .name
                .as_ref()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !relevant(&dev_root, &dir, &name) {
                continue;
            }
            let appeared = event
                .mask
                .intersects(EventMask::CREATE | EventMask::MOVED_TO);
            if (event.mask.contains(EventMask::ISDIR) || appeared)
                && let Err(e) = ensure_watches(&mut watches, &mut watched, &dev_root)
            {
                let _ = events.send(WatchEvent::WatcherFailed {
                    watcher: "dev-root",
                    error: e.to_string(),
                });
            }
            let _ = events.send(WatchEvent::DevRootChanged);
        }
    });
    Ok(())
}
