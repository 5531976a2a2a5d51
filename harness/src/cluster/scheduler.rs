//! The scheduler's filter step for extended resources and node selectors, with its messages.

use std::collections::BTreeMap;

/// One node as the scheduler sees it.
#[derive(Clone, Debug)]
pub struct NodeView {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Allocatable per extended resource (from the kubelet's node status).
    pub allocatable: BTreeMap<String, u64>,
    /// Already requested by pods bound to this node.
    pub requested: BTreeMap<String, u64>,
}

/// Picks a node for a pod, or explains as the Kubernetes scheduler does why none fits:
/// `0/2 nodes are available: 2 Insufficient nvidia.com/GRID_T4-1Q.`
///
/// Among fitting nodes the first by name wins (deterministic; the real scheduler scores them).
pub fn schedule(
    nodes: &[NodeView],
    node_selector: &BTreeMap<String, String>,
    requests: &BTreeMap<String, u32>,
) -> Result<String, String> {
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut sorted: Vec<&NodeView> = nodes.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut chosen = None;
    for node in sorted {
        if !node_selector
            .iter()
            .all(|(k, v)| node.labels.get(k) == Some(v))
        {
            *reasons
                .entry("node(s) didn't match Pod's node affinity/selector".into())
                .or_default() += 1;
            continue;
        }
        let mut fits = true;
        for (res, want) in requests {
            let alloc = node.allocatable.get(res).copied().unwrap_or(0);
            let used = node.requested.get(res).copied().unwrap_or(0);
            if alloc.saturating_sub(used) < u64::from(*want) {
                *reasons.entry(format!("Insufficient {res}")).or_default() += 1;
                fits = false;
            }
        }
        if fits && chosen.is_none() {
            chosen = Some(node.name.clone());
        }
    }
    if let Some(name) = chosen {
        return Ok(name);
    }
    let detail: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
    Err(format!(
        "0/{} nodes are available: {}.",
        nodes.len(),
        detail.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, labels: &[(&str, &str)], alloc: &[(&str, u64)]) -> NodeView {
        NodeView {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            allocatable: alloc.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            requested: BTreeMap::new(),
        }
    }

    fn req(r: &[(&str, u32)]) -> BTreeMap<String, u32> {
        r.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn insufficient_resources_message_matches_the_scheduler() {
        let nodes = [node("a", &[], &[]), node("b", &[], &[("x.io/gpu", 0)])];
        let err = schedule(
            &nodes,
            &BTreeMap::new(),
            &req(&[("nvidia.com/GRID_T4-1Q", 1)]),
        )
        .unwrap_err();
        assert_eq!(
            err,
            "0/2 nodes are available: 2 Insufficient nvidia.com/GRID_T4-1Q."
        );
    }

    #[test]
    fn selector_and_resources_combine_reasons() {
        let nodes = [
            node("a", &[("disktype", "nvme")], &[("d.io/nvme", 1)]),
            node("b", &[], &[("d.io/nvme", 2)]),
            node("c", &[("disktype", "nvme")], &[]),
        ];
        let sel: BTreeMap<String, String> = [("disktype".to_string(), "nvme".to_string())].into();
        assert_eq!(
            schedule(&nodes, &sel, &req(&[("d.io/nvme", 1)])),
            Ok("a".into())
        );
        let err = schedule(&nodes, &sel, &req(&[("d.io/nvme", 2)])).unwrap_err();
        assert_eq!(
            err,
            "0/3 nodes are available: 2 Insufficient d.io/nvme, 1 node(s) didn't match Pod's node affinity/selector."
        );
    }

    #[test]
    fn requested_devices_are_not_free() {
        let mut n = node("a", &[], &[("d.io/nvme", 1)]);
        n.requested.insert("d.io/nvme".into(), 1);
        assert!(schedule(&[n], &BTreeMap::new(), &req(&[("d.io/nvme", 1)])).is_err());
    }
}
