//! Evaluating `expect` steps against the cluster, and waiting until they hold.

use std::time::{Duration, Instant};

use super::cluster::Cluster;
use crate::scenario::{Expect, ExpectedHostdev};

/// Default wait of an `expect` step.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait between two evaluations when nothing signals a change (file existence on a
/// node's /dev is the one thing no subscription covers exactly).
const FALLBACK_RECHECK: Duration = Duration::from_millis(50);

/// Waits until `e` holds or its timeout passes; `Err` is the last mismatch.
pub async fn wait_for(cluster: &mut Cluster, e: &Expect) -> Result<(), String> {
    let timeout = e.timeout.map(|t| t.0).unwrap_or(DEFAULT_TIMEOUT);
    let deadline = Instant::now() + timeout;
    let mut changes = cluster.changes();
    loop {
        changes.borrow_and_update();
        if let Some(problem) = cluster.unexpected_agent_exit(Some(e)) {
            return Err(problem);
        }
        cluster.reconcile().await;
        let result = check(cluster, e);
        let now = Instant::now();
        if result.is_ok() {
            if e.agent_exit.is_some()
                && let Some(crate::scenario::Expected::Literal(node)) =
                    e.node.as_ref().map(|n| &n.value)
                && let Ok(n) = cluster.node_mut(node)
            {
                n.acknowledge_agent_exit();
            }
            return Ok(());
        }
        if now >= deadline {
            return result.map_err(|m| format!("{m} (waited {timeout:?})"));
        }
        let wait = FALLBACK_RECHECK.min(deadline - now);
        let _ = tokio::time::timeout(wait, changes.changed()).await;
    }
}

/// Checks every part of `e` once; `Err` says what differs, with the actual values.
pub fn check(cluster: &Cluster, e: &Expect) -> Result<(), String> {
    let mut problems = Vec::new();
    // Validation allows only a single name for node checks.
    if let Some(crate::scenario::Expected::Literal(node_name)) = e.node.as_ref().map(|n| &n.value)
        && e.vmi.is_none()
    {
        let node = cluster.node(node_name).map_err(|e| e.to_string())?;
        let status = node.kubelet.node_status();
        for (what, map, get) in [
            (
                "allocatable",
                &e.allocatable,
                (|s: &fake_kubelet::ResourceStatus| s.allocatable) as fn(&_) -> usize,
            ),
            (
                "capacity",
                &e.capacity,
                |s: &fake_kubelet::ResourceStatus| s.capacity,
            ),
            (
                "allocated",
                &e.allocated,
                |s: &fake_kubelet::ResourceStatus| s.allocated,
            ),
        ] {
            for (res, want) in map.iter().flatten() {
                let have = status.resources.get(res).map(get).unwrap_or(0) as i64;
                if !want.matches(&have) {
                    problems.push(format!(
                        "{what} {res} on {}: expected {want}, got {have}",
                        node.name
                    ));
                }
            }
        }
        if let Some(want) = &e.agent_exit {
            match node.agent_exit() {
                Some(status) => {
                    let have = super::external::exit_word(&status);
                    if !want.matches_str(&have) {
                        problems.push(format!(
                            "agent exit on {}: expected {want}, got {have}",
                            node.name
                        ));
                    }
                }
                None if node.agent_is_external() => {
                    problems.push(format!("agent exit on {}: it is still running", node.name))
                }
                None => problems.push(format!(
                    "agent exit on {}: the in-process agent cannot exit (use an external agent)",
                    node.name
                )),
            }
        }
        if let Some(want) = &e.agent_log {
            let logged = if node.agent_is_external() {
                node.agent_logged(want)
            } else {
                super::logs::last(usize::MAX)
                    .iter()
                    .any(|l| l.contains(want.as_str()))
            };
            if !logged {
                problems.push(format!(
                    "agent log on {}: expected a line containing {want:?}",
                    node.name
                ));
            }
        }
        if let Some(want) = &e.config_error
            && node.agent_is_external()
        {
            if !node.agent_logged(want) {
                problems.push(format!(
                    "agent config error on {}: expected a log line containing {want:?}; last lines: {:?}",
                    node.name,
                    node.agent_log(3)
                ));
            }
        } else if let Some(want) = &e.config_error {
            let have = node
                .agent_status()
                .and_then(|s| s.last_config_error)
                .unwrap_or_default();
            if !have.contains(want.as_str()) {
                problems.push(format!(
                    "agent config error on {}: expected to contain {want:?}, got {have:?}",
                    node.name
                ));
            }
        }
        if let (Some(file), Some(exists)) = (&e.file, e.exists) {
            let have = node.local_path(&file.value).symlink_metadata().is_ok();
            if have != exists {
                problems.push(format!(
                    "{} on {}: expected {}, but it {}",
                    file.value,
                    node.name,
                    if exists { "to exist" } else { "not to exist" },
                    if have { "exists" } else { "does not exist" }
                ));
            }
        }
    }
    if let Some(vmi_name) = &e.vmi {
        match cluster.vmis.get(&vmi_name.value) {
            None => problems.push(format!("VMI {} does not exist", vmi_name.value)),
            Some(vmi) => {
                if let Some(want) = &e.phase
                    && !want.matches(&vmi.phase)
                {
                    problems.push(format!(
                        "VMI {} phase: expected {want}, got {} ({})",
                        vmi_name.value, vmi.phase, vmi.reason
                    ));
                }
                if let Some(node) = &e.node
                    && !vmi
                        .node
                        .as_deref()
                        .is_some_and(|n| node.value.matches_str(n))
                {
                    problems.push(format!(
                        "VMI {} node: expected {}, got {:?}",
                        vmi_name.value, node.value, vmi.node
                    ));
                }
                if let Some(reason) = &e.reason
                    && !vmi.reason.contains(reason.as_str())
                {
                    problems.push(format!(
                        "VMI {} reason: expected to contain {reason:?}, got {:?}",
                        vmi_name.value, vmi.reason
                    ));
                }
                for (k, want) in e.env.iter().flatten() {
                    match vmi.env.get(k) {
                        Some(v) if want.matches_str(v) => {}
                        Some(v) => problems.push(format!("env {k}: expected {want}, got {v:?}")),
                        None => {
                            problems.push(format!("env {k}: expected {want}, but it is not set"))
                        }
                    }
                }
                if let Some(want) = &e.hostdevs
                    && let Err(m) = match_hostdevs(want, &vmi.hostdevs)
                {
                    problems.push(format!("VMI {} hostdevs: {m}", vmi_name.value));
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Every expected hostdev matches a distinct actual one, and there are no others.
fn match_hostdevs(
    want: &[ExpectedHostdev],
    have: &[crate::cluster::launcher::Hostdev],
) -> Result<(), String> {
    let describe = || {
        have.iter()
            .map(|h| format!("{:?} {} ({})", h.kind, h.source, h.alias))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if want.len() != have.len() {
        return Err(format!(
            "expected {} hostdev(s), got {}: [{}]",
            want.len(),
            have.len(),
            describe()
        ));
    }
    let mut used = vec![false; have.len()];
    for w in want {
        let found = have.iter().enumerate().find(|(i, h)| {
            !used[*i]
                && h.kind == w.kind
                && w.source.matches_str(&h.source)
                && w.alias.as_ref().is_none_or(|a| a.matches_str(&h.alias))
        });
        match found {
            Some((i, _)) => used[i] = true,
            None => {
                return Err(format!(
                    "no hostdev matches {:?} {}, got [{}]",
                    w.kind,
                    w.source,
                    describe()
                ));
            }
        }
    }
    Ok(())
}
