//! A host's fault table as callers see it: every rule added or removed is announced.
//!
//! Front ends cache content (the FUSE mount keeps the kernel's page cache), and a cached page is
//! served with no call reaching the host, so a rule only fires once the pages it covers are gone.
//! Announcing the files a rule covers as changed is what drops them; a rule added without that
//! is answered from cache for as long as the page lives, which made scenarios that fault an
//! attribute read earlier pass or fail depending on timing. So the table is reachable only
//! through [`HostFaults`], whose every addition and removal is announced.

use std::collections::BTreeSet;

use super::{Host, resolve};
use crate::faults::{ActiveFault, FaultId, FaultRule, normalize};
use crate::tree::{NodeKind, Tree};

/// The fault table of a [`Host`] (see [`Host::faults`]).
pub struct HostFaults<'h> {
    pub(super) host: &'h Host,
}

impl HostFaults<'_> {
    /// Arms `rule` (what [`Host::inject_fault`] does).
    pub fn add(&self, rule: FaultRule) -> FaultId {
        self.host.inject_fault(rule)
    }

    /// Removes one rule; false when it was not there (or already used up). Its files are
    /// announced too, so a front end forgets any failure it remembered for them.
    pub fn remove(&self, id: FaultId) -> bool {
        self.host.change_faults(|faults| {
            let rule = faults.list().into_iter().find(|f| f.id == id);
            (
                faults.remove(id),
                rule.map(|f| f.rule).into_iter().collect(),
            )
        })
    }

    /// Removes every rule (announced as [`HostFaults::remove`] is).
    pub fn clear(&self) {
        self.host.change_faults(|faults| {
            let rules: Vec<FaultRule> = faults.list().into_iter().map(|f| f.rule).collect();
            faults.clear();
            ((), rules)
        });
    }

    /// The rules still active.
    pub fn list(&self) -> Vec<ActiveFault> {
        self.host.0.faults.list()
    }

    pub fn is_empty(&self) -> bool {
        self.host.0.faults.is_empty()
    }
}

/// Every file a read matching `pattern` (a rule's path) may land on, as tree paths.
///
/// An exact path is covered as named and as resolved (the kernel caches by inode, i.e. by the
/// resolved path, whichever name a program opens). A prefix (`dir/*`) covers the files below it
/// and below its resolution: `bus/pci/devices/X/*` is only links in the tree, and the files it
/// reaches live under `devices/.../X/`. A file reached through a further link below the prefix
/// (`X/driver/bind`) is matched by the rule but not announced; no front end caches those
/// attributes' content in practice (they are written, not read).
pub(super) fn covered_files(tree: &Tree, pattern: &str) -> Vec<String> {
    let pattern = normalize(pattern);
    let is_file =
        |p: &str| matches!(tree.get(p), Some(n) if matches!(n.kind, NodeKind::File { .. }));
    let mut out = BTreeSet::new();
    match pattern.strip_suffix('*') {
        None => out.extend(
            [Some(pattern.to_owned()), resolve(tree, pattern).ok()]
                .into_iter()
                .flatten()
                .filter(|p| is_file(p)),
        ),
        Some(prefix) => {
            let mut roots = vec![prefix.to_owned()];
            if let Some(dir) = prefix.strip_suffix('/')
                && let Ok(real) = resolve(tree, dir)
                && !real.is_empty()
            {
                roots.push(format!("{real}/"));
            }
            out.extend(
                tree.iter()
                    .filter(|(p, n)| {
                        matches!(n.kind, NodeKind::File { .. })
                            && roots.iter().any(|r| p.starts_with(r.as_str()))
                    })
                    .map(|(p, _)| p.to_owned()),
            );
        }
    }
    out.into_iter().collect()
}
