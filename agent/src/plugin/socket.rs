//! Plugin socket names: unique per plugin and per generation, recognisable as ours, so stale
//! ones from a killed agent can be removed and KubeVirt's own are never touched.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Plugin sockets are for root on the node only.
pub const SOCKET_MODE: u32 = 0o600;

/// `kubevirt-nvidia.com-T4-1764450000123456789.sock`: KubeVirt's prefix, the resource name
/// with `/` (and anything else unsafe in a file name) as `-`, and a strictly increasing
/// timestamp so that every generation of every plugin has its own socket.
pub fn unique_socket_name(resource: &str) -> String {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let stamp = LAST
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
            Some(now.max(last + 1))
        })
        .map(|last| now.max(last + 1))
        .unwrap_or(now);
    let mut name: String = resource
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    // Unix socket paths are limited to 107 bytes; keep the name well inside that.
    name.truncate(48);
    format!("kubevirt-{name}-{stamp}.sock")
}

/// Whether `name` is a socket name [`unique_socket_name`] makes: `kubevirt-...-<stamp>.sock` with
/// a nanosecond stamp. KubeVirt's own sockets (`kubevirt-<name>.sock`) never match.
pub fn is_generated_socket_name(name: &str) -> bool {
    let Some(stem) = name
        .strip_prefix("kubevirt-")
        .and_then(|n| n.strip_suffix(".sock"))
    else {
        return false;
    };
    stem.rsplit_once('-')
        .is_some_and(|(_, stamp)| stamp.len() >= 16 && stamp.bytes().all(|b| b.is_ascii_digit()))
}

/// Removes sockets an earlier agent left behind (killed before it could clean up): names this
/// agent generates, on which nobody listens any more. Returns the removed paths.
pub fn remove_stale_sockets(plugin_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(plugin_dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !is_generated_socket_name(name) {
            continue;
        }
        let path = entry.path();
        let refused = matches!(
            std::os::unix::net::UnixStream::connect(&path),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
        );
        if refused && std::fs::remove_file(&path).is_ok() {
            tracing::info!(socket = %path.display(), "removed a stale socket of an earlier run");
            removed.push(path);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_socket_names_are_recognised() {
        assert!(is_generated_socket_name(&unique_socket_name(
            "nvidia.com/T4"
        )));
        assert!(
            !is_generated_socket_name("kubevirt-nvidia.com-T4.sock"),
            "KubeVirt's own"
        );
        assert!(!is_generated_socket_name("kubelet.sock"));
        assert!(!is_generated_socket_name("kubevirt-usb-1.sock"));
    }

    #[test]
    fn socket_names_are_unique_and_safe() {
        let a = unique_socket_name("nvidia.com/GRID T4-1Q");
        let b = unique_socket_name("nvidia.com/GRID T4-1Q");
        assert_ne!(a, b);
        assert!(a.starts_with("kubevirt-nvidia.com-GRID-T4-1Q-"), "{a}");
        assert!(a.ends_with(".sock"));
        assert!(!a.contains('/'));
    }
}
