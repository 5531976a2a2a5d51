//! Which devices a container gets: the kubelet's `devicesToAllocate`, as pure functions over
//! [`State`] so each step is testable without sockets.
//!
//! Randomness: where the kubelet iterates a Go map (an unspecified order), this picks with a
//! seeded generator instead. For a request (pod UID, container, resource) the generator is
//! `ChaCha8Rng::seed_from_u64(config.seed)` switched to stream
//! `fnv1a64(pod_uid + "\0" + container + "\0" + resource)`; each candidate set is sorted by
//! device ID, shuffled with it, and taken from the front. The choice therefore depends only on
//! the seed, the request and the free devices, not on the order other requests ran in, so a
//! harness replays it from the seed alone.

use std::collections::{BTreeMap, BTreeSet};

use hostdev_api::v1beta1::ContainerPreferredAllocationRequest;
use rand::SeedableRng as _;
use rand::seq::SliceRandom as _;
use rand_chacha::ChaCha8Rng;

use crate::error::AllocateError;
use crate::state::{ContainerAllocation, NO_TOPOLOGY_NODE, State, numa_nodes};

/// One container's request for `count` devices of one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocationRequest {
    pub pod_uid: String,
    pub container: String,
    pub resource: String,
    pub count: usize,
    /// The topology manager's NUMA hint for the container; None means no alignment (the
    /// kubelet's `none` policy), and then every free device counts as unaligned.
    pub numa_affinity: Option<BTreeSet<i64>>,
}

impl AllocationRequest {
    pub fn new(
        pod_uid: impl Into<String>,
        container: impl Into<String>,
        resource: impl Into<String>,
        count: usize,
    ) -> Self {
        Self {
            pod_uid: pod_uid.into(),
            container: container.into(),
            resource: resource.into(),
            count,
            numa_affinity: None,
        }
    }

    pub fn with_numa_affinity(mut self, nodes: impl IntoIterator<Item = i64>) -> Self {
        self.numa_affinity = Some(nodes.into_iter().collect());
        self
    }
}

/// What phase one of an allocation decided.
pub(crate) enum Plan {
    /// The container already holds this many devices of the resource (a container restart).
    Reuse(Box<ContainerAllocation>),
    /// Zero devices asked: nothing to do, like the kubelet skipping the resource.
    Nothing,
    /// The pod's init containers hold enough devices: the container gets these (sorted) ones.
    FromInit(Vec<String>),
    Choose(Candidates),
}

/// Free healthy devices split by NUMA alignment with the request's hint, each sorted by ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Candidates {
    pub(crate) required: usize,
    pub(crate) aligned: Vec<String>,
    pub(crate) unaligned: Vec<String>,
    pub(crate) no_topology: Vec<String>,
}

impl Candidates {
    fn len(&self) -> usize {
        self.aligned.len() + self.unaligned.len() + self.no_topology.len()
    }

    /// Drops devices taken by other allocations since phase one.
    pub(crate) fn without(
        mut self,
        in_use: &BTreeSet<String>,
        resource: &str,
    ) -> Result<Self, AllocateError> {
        for list in [
            &mut self.aligned,
            &mut self.unaligned,
            &mut self.no_topology,
        ] {
            list.retain(|d| !in_use.contains(d));
        }
        if self.len() < self.required {
            return Err(AllocateError::Unavailable {
                resource: resource.to_owned(),
                requested: self.required,
                available: self.len(),
            });
        }
        Ok(self)
    }

    /// Whether the kubelet would ask the plugin: unless the aligned set is exactly the request.
    pub(crate) fn wants_preferred(&self) -> bool {
        self.required != self.aligned.len()
    }

    /// The GetPreferredAllocation request: only aligned devices when they suffice, otherwise
    /// every free device (aligned first) with the aligned ones as must-include.
    pub(crate) fn preferred_request(&self) -> ContainerPreferredAllocationRequest {
        let size = i32::try_from(self.required).unwrap_or(i32::MAX);
        if self.required < self.aligned.len() {
            ContainerPreferredAllocationRequest {
                available_device_i_ds: self.aligned.clone(),
                must_include_device_i_ds: vec![],
                allocation_size: size,
            }
        } else {
            let available = self
                .aligned
                .iter()
                .chain(&self.unaligned)
                .chain(&self.no_topology)
                .cloned()
                .collect();
            ContainerPreferredAllocationRequest {
                available_device_i_ds: available,
                must_include_device_i_ds: self.aligned.clone(),
                allocation_size: size,
            }
        }
    }
}

pub(crate) fn plan(state: &State, req: &AllocationRequest) -> Result<Plan, AllocateError> {
    let key = (
        req.pod_uid.clone(),
        req.container.clone(),
        req.resource.clone(),
    );
    if let Some(existing) = state.pods.get(&key) {
        if existing.device_ids.len() == req.count {
            // The kubelet re-checks registration and health before it lets a container keep
            // its devices (a re-admission after a restart or reboot fails until they are back).
            let healthy = state
                .healthy_ids(&req.resource)
                .ok_or_else(|| AllocateError::Unregistered(req.resource.clone()))?;
            if healthy.is_empty() {
                return Err(AllocateError::NoHealthyDevices(req.resource.clone()));
            }
            if !existing.device_ids.iter().all(|d| healthy.contains(d)) {
                return Err(AllocateError::PreviouslyAllocatedUnhealthy(
                    req.resource.clone(),
                ));
            }
            return Ok(Plan::Reuse(Box::new(existing.clone())));
        }
        return Err(AllocateError::ChangedRequest {
            pod_uid: req.pod_uid.clone(),
            container: req.container.clone(),
            resource: req.resource.clone(),
            from: existing.device_ids.len(),
            to: req.count,
        });
    }
    if req.count == 0 {
        return Ok(Plan::Nothing);
    }
    let resource = &req.resource;
    let healthy = state
        .healthy_ids(resource)
        .ok_or_else(|| AllocateError::Unregistered(resource.clone()))?;
    if healthy.is_empty() {
        return Err(AllocateError::NoHealthyDevices(resource.clone()));
    }
    let reusable = state.reusable(&req.pod_uid, resource);
    if reusable.len() >= req.count {
        return Ok(Plan::FromInit(reusable[..req.count].to_vec()));
    }
    let in_use = state.in_use(resource);
    let available: Vec<&String> = healthy.iter().filter(|d| !in_use.contains(*d)).collect();
    if available.len() < req.count {
        return Err(AllocateError::Unavailable {
            resource: resource.clone(),
            requested: req.count,
            available: available.len(),
        });
    }
    let devices = &state.resources[resource].devices;
    let mut c = Candidates {
        required: req.count,
        aligned: vec![],
        unaligned: vec![],
        no_topology: vec![],
    };
    let has_topology = devices.values().any(|d| !numa_nodes(d).is_empty());
    match &req.numa_affinity {
        Some(hint) if has_topology => {
            for id in available {
                let nodes = numa_nodes(&devices[id]);
                let list = if nodes.is_empty() {
                    &mut c.no_topology
                } else if nodes.iter().any(|n| hint.contains(n)) {
                    &mut c.aligned
                } else {
                    &mut c.unaligned
                };
                list.push(id.clone());
            }
        }
        _ => c.unaligned = available.into_iter().cloned().collect(),
    }
    Ok(Plan::Choose(c))
}

/// The generator for one request; see the module docs.
pub fn request_rng(seed: u64, pod_uid: &str, container: &str, resource: &str) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(fnv1a64(&[pod_uid, container, resource].join("\0")));
    rng
}

fn fnv1a64(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Phase two: the kubelet's fill order, with `preferred` the plugin's answer (empty when not asked).
pub(crate) fn choose(
    c: &Candidates,
    preferred: &[String],
    rng: &mut ChaCha8Rng,
) -> Result<Vec<String>, AllocateError> {
    let mut picked: Vec<String> = Vec::with_capacity(c.required);
    let in_list = |list: &[String]| -> Vec<String> {
        preferred
            .iter()
            .filter(|d| list.contains(d))
            .cloned()
            .collect()
    };
    let done = if c.required < c.aligned.len() {
        take(&in_list(&c.aligned), c.required, &mut picked)
            || take(&shuffled(&c.aligned, rng), c.required, &mut picked)
    } else {
        let all: Vec<String> = c
            .aligned
            .iter()
            .chain(&c.unaligned)
            .chain(&c.no_topology)
            .cloned()
            .collect();
        take(&c.aligned, c.required, &mut picked)
            || take(&in_list(&all), c.required, &mut picked)
            || take(&shuffled(&c.unaligned, rng), c.required, &mut picked)
            || take(&shuffled(&c.no_topology, rng), c.required, &mut picked)
    };
    if !done {
        return Err(AllocateError::Shortfall {
            requested: c.required,
            got: picked.len(),
        });
    }
    picked.sort();
    Ok(picked)
}

/// Appends devices of `from` not yet picked until `required` are; true when done.
fn take(from: &[String], required: usize, picked: &mut Vec<String>) -> bool {
    for d in from {
        if picked.len() == required {
            break;
        }
        if !picked.contains(d) {
            picked.push(d.clone());
        }
    }
    picked.len() == required
}

fn shuffled(list: &[String], rng: &mut ChaCha8Rng) -> Vec<String> {
    let mut v = list.to_vec();
    v.shuffle(rng);
    v
}

/// Chosen devices keyed by NUMA node, [`NO_TOPOLOGY_NODE`] for devices without topology.
pub(crate) fn by_numa(state: &State, resource: &str, ids: &[String]) -> BTreeMap<i64, Vec<String>> {
    let mut map: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    let devices = state.resources.get(resource).map(|r| &r.devices);
    for id in ids {
        let nodes = devices
            .and_then(|d| d.get(id))
            .map(numa_nodes)
            .unwrap_or_default();
        if nodes.is_empty() {
            map.entry(NO_TOPOLOGY_NODE).or_default().push(id.clone());
        }
        for n in nodes {
            map.entry(n).or_default().push(id.clone());
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cands(required: usize, aligned: &[&str], unaligned: &[&str], none: &[&str]) -> Candidates {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect();
        Candidates {
            required,
            aligned: v(aligned),
            unaligned: v(unaligned),
            no_topology: v(none),
        }
    }

    #[test]
    fn aligned_devices_come_before_unaligned_and_untopologied_ones() {
        let c = cands(3, &["a0", "a1"], &["u0", "u1"], &["n0"]);
        let mut rng = request_rng(7, "p", "c", "r");
        let got = choose(&c, &[], &mut rng).expect("enough");
        assert!(
            got.contains(&"a0".to_string()) && got.contains(&"a1".to_string()),
            "{got:?}"
        );
        assert!(!got.contains(&"n0".to_string()), "{got:?}");
    }

    #[test]
    fn preferred_devices_win_within_the_aligned_set() {
        let c = cands(1, &["a0", "a1", "a2"], &["u0"], &[]);
        let req = c.preferred_request();
        assert_eq!(req.available_device_i_ds, vec!["a0", "a1", "a2"]);
        assert!(req.must_include_device_i_ds.is_empty());
        let mut rng = request_rng(1, "p", "c", "r");
        // A preferred device outside the aligned set is ignored, as the kubelet intersects.
        let got = choose(&c, &["u0".into(), "a2".into()], &mut rng).expect("enough");
        assert_eq!(got, vec!["a2"]);
    }

    #[test]
    fn the_seed_alone_decides_among_equal_devices() {
        let ids: Vec<String> = (0..16).map(|i| format!("d{i:02}")).collect();
        let c = Candidates {
            required: 4,
            aligned: vec![],
            unaligned: ids,
            no_topology: vec![],
        };
        let pick = |seed| choose(&c, &[], &mut request_rng(seed, "pod", "c", "r")).expect("enough");
        assert_eq!(pick(42), pick(42));
        let distinct: BTreeSet<Vec<String>> = (0..20).map(pick).collect();
        assert!(
            distinct.len() > 10,
            "seeds should spread choices: {distinct:?}"
        );
    }
}
