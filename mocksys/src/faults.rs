//! Fault injection: an errno and/or latency on reads or writes of chosen paths.
//!
//! A rule's `path` is a sysfs path (`/sys/bus/pci/devices/0000:05:00.0/uevent`, `bus/pci/...`
//! or `devices/...`; a leading `/` and `/sys/` are ignored). It matches a read or write of that
//! path, whether the caller names it through symlinks or by its real directory: the host
//! compares both the path as asked and its resolution, and resolves the rule's path too. A path
//! ending in `*` is a prefix: `bus/pci/drivers/vfio-pci/*` matches every attribute there.
//!
//! Rules fire deterministically: every matching rule fires on every matching call until its
//! count runs out (`Once`, `Times(n)`) or forever (`Always`); their latencies add up and the
//! first one's errno (in insertion order) is returned. Rules can be added and cleared while
//! the host runs.

use std::time::Duration;

use parking_lot::Mutex;

use crate::errno::Errno;

/// Which calls a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOp {
    Read,
    Write,
    Both,
}

impl FaultOp {
    fn covers(self, op: FaultOp) -> bool {
        self == FaultOp::Both || self == op
    }
}

/// How many times a rule fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Times {
    Once,
    Times(u32),
    Always,
}

/// One fault rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRule {
    pub path: String,
    pub op: FaultOp,
    /// `None`: latency only.
    pub errno: Option<Errno>,
    pub times: Times,
    pub latency: Duration,
}

impl FaultRule {
    /// An errno on reads and writes of `path`, `times` times.
    pub fn errno(path: &str, errno: Errno, times: Times) -> FaultRule {
        FaultRule {
            path: path.to_owned(),
            op: FaultOp::Both,
            errno: Some(errno),
            times,
            latency: Duration::ZERO,
        }
    }
}

/// Handle of an added rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FaultId(pub u64);

/// A rule with its remaining count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveFault {
    pub id: FaultId,
    pub rule: FaultRule,
    /// `None` for `Always`.
    pub remaining: Option<u32>,
}

/// What a call must suffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outcome {
    pub latency: Duration,
    pub errno: Option<Errno>,
}

/// The fault table of one host.
#[derive(Debug, Default)]
pub struct Faults {
    inner: Mutex<(u64, Vec<ActiveFault>)>,
}

/// `/sys/bus/x` -> `bus/x`; `bus/x` unchanged.
pub fn normalize(path: &str) -> &str {
    let p = path.trim_start_matches('/');
    match p.strip_prefix("sys") {
        Some("") => "",
        Some(rest) if rest.starts_with('/') => rest.trim_start_matches('/'),
        _ => p,
    }
}

impl Faults {
    pub fn add(&self, rule: FaultRule) -> FaultId {
        let mut g = self.inner.lock();
        g.0 += 1;
        let id = FaultId(g.0);
        let remaining = match rule.times {
            Times::Once => Some(1),
            Times::Times(n) => Some(n),
            Times::Always => None,
        };
        g.1.push(ActiveFault {
            id,
            rule,
            remaining,
        });
        id
    }

    /// Removes one rule; false when it was not there (or already used up).
    pub fn remove(&self, id: FaultId) -> bool {
        let mut g = self.inner.lock();
        let before = g.1.len();
        g.1.retain(|f| f.id != id);
        g.1.len() != before
    }

    pub fn clear(&self) {
        self.inner.lock().1.clear();
    }

    /// The rules still active.
    pub fn list(&self) -> Vec<ActiveFault> {
        self.inner.lock().1.clone()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.lock().1.is_empty()
    }

    /// Fires the rules matching a call: `asked` is the path as given, `real` its resolution
    /// (when it exists), `resolve` resolves a rule's path in the current tree.
    pub fn check(
        &self,
        op: FaultOp,
        asked: &str,
        real: Option<&str>,
        resolve: impl Fn(&str) -> Option<String>,
    ) -> Outcome {
        let mut g = self.inner.lock();
        if g.1.is_empty() {
            return Outcome::default();
        }
        let asked = normalize(asked);
        let mut out = Outcome::default();
        for f in g.1.iter_mut() {
            if !f.rule.op.covers(op) || f.remaining == Some(0) {
                continue;
            }
            let pattern = normalize(&f.rule.path);
            let hit = match pattern.strip_suffix('*') {
                Some(prefix) => {
                    asked.starts_with(prefix)
                        || real.is_some_and(|r| r.starts_with(prefix))
                        || (prefix.ends_with('/')
                            && resolve(prefix.trim_end_matches('/')).is_some_and(|p| {
                                real.is_some_and(|r| r.starts_with(&format!("{p}/")))
                            }))
                }
                None => {
                    pattern == asked
                        || real.is_some_and(|r| r == pattern)
                        || real.is_some_and(|r| resolve(pattern).is_some_and(|p| p == r))
                }
            };
            if !hit {
                continue;
            }
            if let Some(n) = f.remaining.as_mut() {
                *n -= 1;
            }
            out.latency += f.rule.latency;
            if out.errno.is_none() {
                out.errno = f.rule.errno;
            }
        }
        g.1.retain(|f| f.remaining != Some(0));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_resolve(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn once_fires_exactly_once() {
        let f = Faults::default();
        f.add(FaultRule::errno(
            "/sys/bus/pci/rescan",
            Errno::EIO,
            Times::Once,
        ));
        assert_eq!(
            f.check(FaultOp::Write, "bus/pci/rescan", None, no_resolve)
                .errno,
            Some(Errno::EIO)
        );
        assert_eq!(
            f.check(FaultOp::Write, "bus/pci/rescan", None, no_resolve)
                .errno,
            None
        );
        assert!(f.is_empty());
    }

    #[test]
    fn n_times_fires_n_times_then_stops() {
        let f = Faults::default();
        f.add(FaultRule::errno("a/b", Errno::EAGAIN, Times::Times(3)));
        let hits = (0..5)
            .filter(|_| {
                f.check(FaultOp::Read, "/a/b", None, no_resolve)
                    .errno
                    .is_some()
            })
            .count();
        assert_eq!(hits, 3);
    }

    #[test]
    fn always_fires_until_cleared() {
        let f = Faults::default();
        f.add(FaultRule::errno("a", Errno::EIO, Times::Always));
        for _ in 0..10 {
            assert_eq!(
                f.check(FaultOp::Read, "a", None, no_resolve).errno,
                Some(Errno::EIO)
            );
        }
        f.clear();
        assert_eq!(f.check(FaultOp::Read, "a", None, no_resolve).errno, None);
    }

    #[test]
    fn op_restricts_read_or_write() {
        let f = Faults::default();
        let mut r = FaultRule::errno("a", Errno::EIO, Times::Always);
        r.op = FaultOp::Write;
        f.add(r);
        assert_eq!(f.check(FaultOp::Read, "a", None, no_resolve).errno, None);
        assert_eq!(
            f.check(FaultOp::Write, "a", None, no_resolve).errno,
            Some(Errno::EIO)
        );
    }

    #[test]
    fn prefix_rules_match_below_and_resolved_paths_match_links() {
        let f = Faults::default();
        f.add(FaultRule::errno(
            "bus/pci/drivers/vfio-pci/*",
            Errno::EPERM,
            Times::Always,
        ));
        assert_eq!(
            f.check(
                FaultOp::Write,
                "bus/pci/drivers/vfio-pci/bind",
                None,
                no_resolve
            )
            .errno,
            Some(Errno::EPERM)
        );
        assert_eq!(
            f.check(
                FaultOp::Write,
                "bus/pci/drivers/nvme/bind",
                None,
                no_resolve
            )
            .errno,
            None
        );
        f.clear();
        f.add(FaultRule::errno(
            "/sys/bus/pci/devices/X/uevent",
            Errno::EIO,
            Times::Always,
        ));
        let resolve = |p: &str| {
            (p == "bus/pci/devices/X/uevent").then(|| "devices/pci0000:00/X/uevent".to_owned())
        };
        let out = f.check(
            FaultOp::Read,
            "devices/pci0000:00/X/uevent",
            Some("devices/pci0000:00/X/uevent"),
            resolve,
        );
        assert_eq!(out.errno, Some(Errno::EIO));
    }

    #[test]
    fn latency_adds_up_and_removal_by_id_works() {
        let f = Faults::default();
        let mut r = FaultRule::errno("a", Errno::EIO, Times::Always);
        r.errno = None;
        r.latency = Duration::from_millis(3);
        let id = f.add(r.clone());
        f.add(r);
        let out = f.check(FaultOp::Read, "a", None, no_resolve);
        assert_eq!((out.latency, out.errno), (Duration::from_millis(6), None));
        assert!(f.remove(id));
        assert!(!f.remove(id));
        assert_eq!(f.list().len(), 1);
    }
}
