//! `kubelet_internal_checkpoint` in the kubelet's JSON shape:
//! `{"Data":{"PodDeviceEntries":[..],"RegisteredDevices":{..}},"Checksum":N}`.
//!
//! Checksum: the kubelet hashes its Go structs with FNV-32a. Here it is FNV-1a 32-bit over the
//! compact JSON of `Data` exactly as this module serializes it (fields in the order below, maps
//! sorted by key). On read, `Data` is re-serialized and hashed again; a mismatch is an error.
//! Writes go to a temporary file that is renamed over the checkpoint, so readers never see half
//! a file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use hostdev_api::v1beta1::ContainerAllocateResponse;
use prost::Message as _;
use serde::{Deserialize, Serialize};

use crate::state::ContainerAllocation;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    #[serde(rename = "Data")]
    pub data: CheckpointData,
    #[serde(rename = "Checksum")]
    pub checksum: u64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CheckpointData {
    #[serde(
        rename = "PodDeviceEntries",
        default,
        deserialize_with = "null_as_default"
    )]
    pub pod_device_entries: Vec<PodDevicesEntry>,
    #[serde(
        rename = "RegisteredDevices",
        default,
        deserialize_with = "null_as_default"
    )]
    pub registered_devices: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodDevicesEntry {
    #[serde(rename = "PodUID")]
    pub pod_uid: String,
    #[serde(rename = "ContainerName")]
    pub container_name: String,
    #[serde(rename = "ResourceName")]
    pub resource_name: String,
    /// NUMA node (or -1) to device IDs; JSON object keys are the numbers as strings, like Go's.
    #[serde(rename = "DeviceIDs")]
    pub device_ids: BTreeMap<i64, Vec<String>>,
    /// Base64 of the protobuf `ContainerAllocateResponse`.
    #[serde(rename = "AllocResp")]
    pub alloc_resp: String,
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("reading checkpoint {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing checkpoint {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing checkpoint {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("checkpoint {path} is corrupted: checksum {found} in file, {computed} computed")]
    Checksum {
        path: PathBuf,
        found: u64,
        computed: u64,
    },
    #[error(
        "checkpoint {path}: entry for pod {pod_uid} container {container} resource {resource}: bad AllocResp: {reason}"
    )]
    AllocResp {
        path: PathBuf,
        pod_uid: String,
        container: String,
        resource: String,
        reason: String,
    },
}

/// FNV-1a, 32-bit.
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in bytes {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

impl CheckpointData {
    pub fn checksum(&self) -> u64 {
        // Serializing plain strings, vectors and ordered maps cannot fail.
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        u64::from(fnv1a32(&bytes))
    }

    pub fn into_checkpoint(self) -> Checkpoint {
        let checksum = self.checksum();
        Checkpoint {
            data: self,
            checksum,
        }
    }
}

pub(crate) fn entry_from(a: &ContainerAllocation) -> PodDevicesEntry {
    PodDevicesEntry {
        pod_uid: a.pod_uid.clone(),
        container_name: a.container.clone(),
        resource_name: a.resource.clone(),
        device_ids: a.devices_by_numa.clone(),
        alloc_resp: base64::engine::general_purpose::STANDARD.encode(a.response.encode_to_vec()),
    }
}

pub(crate) fn allocation_from(
    path: &Path,
    e: PodDevicesEntry,
) -> Result<ContainerAllocation, CheckpointError> {
    let bad = |reason: String| CheckpointError::AllocResp {
        path: path.to_owned(),
        pod_uid: e.pod_uid.clone(),
        container: e.container_name.clone(),
        resource: e.resource_name.clone(),
        reason,
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&e.alloc_resp)
        .map_err(|err| bad(format!("base64: {err}")))?;
    let response = ContainerAllocateResponse::decode(bytes.as_slice())
        .map_err(|err| bad(format!("protobuf: {err}")))?;
    let mut device_ids: Vec<String> = e.device_ids.values().flatten().cloned().collect();
    device_ids.sort();
    device_ids.dedup();
    Ok(ContainerAllocation {
        pod_uid: e.pod_uid,
        container: e.container_name,
        resource: e.resource_name,
        device_ids,
        devices_by_numa: e.device_ids,
        response,
    })
}

/// Writes `json` to `path` through a temporary file in the same directory.
pub(crate) fn write_json(path: &Path, json: &[u8]) -> Result<(), CheckpointError> {
    let tmp = path.with_extension("tmp");
    let wrap = |source| CheckpointError::Write {
        path: path.to_owned(),
        source,
    };
    std::fs::write(&tmp, json).map_err(wrap)?;
    std::fs::rename(&tmp, path).map_err(wrap)
}

/// Reads and verifies the checkpoint; Ok(None) when there is none.
pub fn read(path: &Path) -> Result<Option<CheckpointData>, CheckpointError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CheckpointError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    let cp: Checkpoint =
        serde_json::from_slice(&text).map_err(|source| CheckpointError::Parse {
            path: path.to_owned(),
            source,
        })?;
    let computed = cp.data.checksum();
    if computed != cp.checksum {
        return Err(CheckpointError::Checksum {
            path: path.to_owned(),
            found: cp.checksum,
            computed,
        });
    }
    Ok(Some(cp.data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a32_matches_published_vectors() {
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a32(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn checkpoint_json_has_the_kubelet_shape_and_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kubelet_internal_checkpoint");
        let mut resp = ContainerAllocateResponse::default();
        resp.envs.insert("DEV".into(), "d1".into());
        let alloc = ContainerAllocation {
            pod_uid: "pod-1".into(),
            container: "c".into(),
            resource: "hostdev.io/gpu".into(),
            device_ids: vec!["d1".into(), "d2".into()],
            devices_by_numa: BTreeMap::from([(-1, vec!["d2".into()]), (0, vec!["d1".into()])]),
            response: resp,
        };
        let data = CheckpointData {
            pod_device_entries: vec![entry_from(&alloc)],
            registered_devices: BTreeMap::from([("hostdev.io/gpu".into(), vec!["d1".into()])]),
        };
        let json = serde_json::to_vec(&data.clone().into_checkpoint()).expect("serialize");
        write_json(&path, &json).expect("write");
        let text = std::fs::read_to_string(&path).expect("read back");
        assert!(text.starts_with(r#"{"Data":{"PodDeviceEntries":[{"PodUID":"pod-1","ContainerName":"c","ResourceName":"hostdev.io/gpu","DeviceIDs":{"-1":["d2"],"0":["d1"]},"AllocResp":""#), "{text}");
        assert!(
            text.contains(r#""RegisteredDevices":{"hostdev.io/gpu":["d1"]}},"Checksum":"#),
            "{text}"
        );
        let back = read(&path).expect("verify").expect("present");
        assert_eq!(back, data);
        let restored = allocation_from(&path, back.pod_device_entries[0].clone()).expect("decode");
        assert_eq!(restored, alloc);
    }

    #[test]
    fn a_tampered_checkpoint_is_rejected_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kubelet_internal_checkpoint");
        let data = CheckpointData {
            pod_device_entries: vec![],
            registered_devices: BTreeMap::from([("a.io/x".into(), vec!["1".into()])]),
        };
        let json = serde_json::to_string(&data.into_checkpoint()).expect("serialize");
        std::fs::write(&path, json.replace("\"1\"", "\"2\"")).expect("write");
        let err = read(&path).expect_err("tampered");
        assert!(
            err.to_string()
                .contains("kubelet_internal_checkpoint is corrupted"),
            "{err}"
        );
    }

    #[test]
    fn go_nulls_read_as_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cp");
        let sum = CheckpointData::default().checksum();
        std::fs::write(
            &path,
            format!(r#"{{"Data":{{"PodDeviceEntries":null,"RegisteredDevices":null}},"Checksum":{sum}}}"#),
        )
        .expect("write");
        assert_eq!(read(&path).expect("read"), Some(CheckpointData::default()));
    }
}
