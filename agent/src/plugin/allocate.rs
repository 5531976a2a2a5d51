//! Allocate and PreStartContainer: what a container receives for a set of device ids.
//!
//! The env var names and device specs are KubeVirt's, byte for byte, so virt-launcher turns
//! them into libvirt host devices unchanged:
//! - PCI: `/dev/vfio/vfio` + `/dev/vfio/<group>` (+ `/dev/vfio/devices/vfioN` with the `IOMMUFD`
//!   gate, see [`super::iommufd`]), `PCI_RESOURCE_<NAME>=<addr>,<addr>`;
//! - mdev: the same device specs, `MDEV_PCI_RESOURCE_<NAME>=<uuid>,<uuid>`;
//! - USB: `/dev/bus/usb/BBB/DDD`, `USB_RESOURCE_<NAME>=<bus>:<devnum>,...`, the node chowned
//!   to qemu (107:107 by default, never through a symlink) so a non-root qemu can open it.

use std::collections::BTreeSet;
use std::path::{Component, Path};

use hostdev_api::v1beta1::{ContainerAllocateResponse, DeviceSpec};

use super::DevRoot;
use super::owner::chown_beneath;
use crate::inventory::{DeviceKind, Member, PluginDevice, Resource};

/// Device-node permissions KubeVirt grants: mknod, read, write.
const DEVICE_PERMISSIONS: &str = "mrw";
/// The VFIO container device every VFIO user needs, relative to the dev root.
const VFIO_CONTAINER: &str = "vfio/vfio";

/// Why a request for devices cannot be served. Every variant names the resource and device id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AllocateError {
    #[error("resource {resource}: no device ids in the request")]
    NoDevices { resource: String },
    #[error("resource {resource}: device {id} is not advertised (unknown or vanished)")]
    UnknownDevice { resource: String, id: String },
    #[error("resource {resource}: device {id} is unhealthy")]
    Unhealthy { resource: String, id: String },
    #[error("resource {resource}: device {id} requested twice")]
    Duplicate { resource: String, id: String },
    #[error("resource {resource}: device {id} holds a {member:?} member in a {kind:?} resource")]
    KindMismatch {
        resource: String,
        id: String,
        kind: DeviceKind,
        member: DeviceKind,
    },
    #[error("resource {resource}: device {id}: device node {devname:?} escapes the dev root")]
    UnsafeDevname {
        resource: String,
        id: String,
        devname: String,
    },
    #[error("resource {resource}: device {id}: giving device node {path} to {uid}:{gid}: {error}")]
    Chown {
        resource: String,
        id: String,
        path: String,
        uid: u32,
        gid: u32,
        error: String,
    },
    #[error("resource {resource}: device {id}: device node {path} is missing")]
    NodeMissing {
        resource: String,
        id: String,
        path: String,
    },
}

/// `PCI_RESOURCE_NVIDIA_COM_TU104GL`: the kind's prefix, then the resource name upper-cased with
/// `/` and `.` replaced by `_` (hyphens kept, as KubeVirt does).
pub fn env_var_name(kind: DeviceKind, resource_name: &str) -> String {
    let prefix = match kind {
        DeviceKind::Pci => "PCI_RESOURCE_",
        DeviceKind::Mdev => "MDEV_PCI_RESOURCE_",
        DeviceKind::Usb => "USB_RESOURCE_",
    };
    let name: String = resource_name
        .chars()
        .map(|c| match c {
            '/' | '.' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect();
    format!("{prefix}{name}")
}

fn member_kind(member: &Member) -> DeviceKind {
    match member {
        Member::Pci { .. } => DeviceKind::Pci,
        Member::Mdev { .. } => DeviceKind::Mdev,
        Member::Usb { .. } => DeviceKind::Usb,
    }
}

/// Looks up every id, in request order, refusing unknown, unhealthy and repeated ones.
pub fn resolve<'a>(
    resource: &'a Resource,
    ids: &[String],
) -> Result<Vec<&'a PluginDevice>, AllocateError> {
    if ids.is_empty() {
        return Err(AllocateError::NoDevices {
            resource: resource.name.clone(),
        });
    }
    let mut seen = BTreeSet::new();
    let mut devices = Vec::with_capacity(ids.len());
    for id in ids {
        if !seen.insert(id.as_str()) {
            return Err(AllocateError::Duplicate {
                resource: resource.name.clone(),
                id: id.clone(),
            });
        }
        let device = resource
            .devices
            .binary_search_by(|d| d.id.as_str().cmp(id))
            .ok()
            .map(|i| &resource.devices[i])
            // Sorted by id is the contract; a linear scan keeps an unsorted list correct anyway.
            .or_else(|| resource.devices.iter().find(|d| &d.id == id))
            .ok_or_else(|| AllocateError::UnknownDevice {
                resource: resource.name.clone(),
                id: id.clone(),
            })?;
        if !device.healthy {
            return Err(AllocateError::Unhealthy {
                resource: resource.name.clone(),
                id: id.clone(),
            });
        }
        devices.push(device);
    }
    Ok(devices)
}

/// The relative device-node paths (under the dev root) a device needs, in a stable order,
/// plus its env var value parts.
fn device_nodes_and_values(
    resource: &Resource,
    device: &PluginDevice,
    dev_root: &DevRoot,
) -> Result<(Vec<String>, Vec<String>), AllocateError> {
    let mut nodes = Vec::new();
    let mut values = Vec::new();
    for member in &device.members {
        let kind = member_kind(member);
        if kind != resource.kind {
            return Err(AllocateError::KindMismatch {
                resource: resource.name.clone(),
                id: device.id.clone(),
                kind: resource.kind,
                member: kind,
            });
        }
        match member {
            Member::Pci {
                address,
                iommu_group,
                ..
            } => {
                nodes.push(format!("vfio/{iommu_group}"));
                if let Some(cdev) = dev_root.iommufd.as_ref().and_then(|i| i.cdev(address)) {
                    nodes.push(cdev);
                }
                values.push(address.clone());
            }
            Member::Mdev {
                uuid, iommu_group, ..
            } => {
                nodes.push(format!("vfio/{iommu_group}"));
                values.push(uuid.clone());
            }
            Member::Usb {
                bus,
                devnum,
                devname,
                ..
            } => {
                if !is_contained_relative(devname) {
                    return Err(AllocateError::UnsafeDevname {
                        resource: resource.name.clone(),
                        id: device.id.clone(),
                        devname: devname.clone(),
                    });
                }
                nodes.push(devname.clone());
                values.push(format!("{bus}:{devnum}"));
            }
        }
    }
    Ok((nodes, values))
}

/// A relative path of plain components only: it cannot leave the directory it is joined to.
fn is_contained_relative(path: &str) -> bool {
    !path.is_empty()
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

/// The response for one container asking for `ids` of `resource`.
pub fn allocate_container(
    resource: &Resource,
    ids: &[String],
    dev_root: &DevRoot,
) -> Result<ContainerAllocateResponse, AllocateError> {
    let devices = resolve(resource, ids)?;
    let mut nodes: Vec<String> = Vec::new();
    let mut values = Vec::new();
    if matches!(resource.kind, DeviceKind::Pci | DeviceKind::Mdev) {
        nodes.push(VFIO_CONTAINER.to_string());
    }
    for device in devices {
        let (device_nodes, device_values) = device_nodes_and_values(resource, device, dev_root)?;
        if resource.kind == DeviceKind::Usb
            && let Some(owner) = dev_root.usb_owner
        {
            for node in &device_nodes {
                chown_beneath(&dev_root.local, node, owner).map_err(|e| AllocateError::Chown {
                    resource: resource.name.clone(),
                    id: device.id.clone(),
                    path: dev_root.local_path(node).to_string_lossy().into_owned(),
                    uid: owner.uid,
                    gid: owner.gid,
                    error: e.to_string(),
                })?;
            }
        }
        for node in device_nodes {
            // Functions of one IOMMU group share one group node; hand it over once.
            if !nodes.contains(&node) {
                nodes.push(node);
            }
        }
        values.extend(device_values);
    }
    let mut response = ContainerAllocateResponse::default();
    response.envs.insert(
        env_var_name(resource.kind, &resource.name),
        values.join(","),
    );
    response.devices = nodes
        .iter()
        .map(|relative| DeviceSpec {
            container_path: DevRoot::container_path(relative),
            host_path: dev_root.host_path(relative).to_string_lossy().into_owned(),
            permissions: DEVICE_PERMISSIONS.to_string(),
        })
        .collect();
    Ok(response)
}

/// PreStartContainer's check: every device is still advertised, healthy, and its device nodes
/// exist on the host right now.
pub fn verify_present(
    resource: &Resource,
    ids: &[String],
    dev_root: &DevRoot,
) -> Result<(), AllocateError> {
    for device in resolve(resource, ids)? {
        let (nodes, _) = device_nodes_and_values(resource, device, dev_root)?;
        for node in nodes {
            let path = dev_root.local_path(&node);
            if std::fs::symlink_metadata(&path).is_err() {
                return Err(AllocateError::NodeMissing {
                    resource: resource.name.clone(),
                    id: device.id.clone(),
                    path: path.to_string_lossy().into_owned(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_var_name_follows_kubevirt() {
        assert_eq!(
            env_var_name(DeviceKind::Mdev, "nvidia.com/GRID_T4-1Q"),
            "MDEV_PCI_RESOURCE_NVIDIA_COM_GRID_T4-1Q"
        );
        assert_eq!(
            env_var_name(DeviceKind::Pci, "nvidia.com/TU104GL"),
            "PCI_RESOURCE_NVIDIA_COM_TU104GL"
        );
        assert_eq!(
            env_var_name(DeviceKind::Usb, "kubevirt.io/storage"),
            "USB_RESOURCE_KUBEVIRT_IO_STORAGE"
        );
    }

    #[test]
    fn contained_relative_paths_only() {
        assert!(is_contained_relative("bus/usb/001/002"));
        assert!(!is_contained_relative("../../etc/shadow"));
        assert!(!is_contained_relative("/etc/shadow"));
        assert!(!is_contained_relative("bus/usb/../../../etc"));
        assert!(!is_contained_relative(""));
    }

    fn usb_resource(devname: &str) -> Resource {
        Resource {
            name: "kubevirt.io/storage".into(),
            kind: DeviceKind::Usb,
            devices: vec![PluginDevice {
                id: "usb-1".into(),
                healthy: true,
                numa_nodes: vec![],
                members: vec![Member::Usb {
                    path: "1-1".into(),
                    bus: 1,
                    devnum: 2,
                    vendor: 0x46f4,
                    product: 1,
                    devname: devname.into(),
                }],
            }],
            notes: vec![],
        }
    }

    #[test]
    fn usb_devname_escaping_the_dev_root_is_refused() {
        let root = DevRoot::new("/dev");
        let err = allocate_container(&usb_resource("../../etc/shadow"), &["usb-1".into()], &root)
            .unwrap_err();
        assert!(matches!(err, AllocateError::UnsafeDevname { .. }), "{err}");
        let ok =
            allocate_container(&usb_resource("bus/usb/001/002"), &["usb-1".into()], &root).unwrap();
        assert_eq!(ok.devices[0].host_path, "/dev/bus/usb/001/002");
        assert_eq!(ok.envs["USB_RESOURCE_KUBEVIRT_IO_STORAGE"], "1:2");
    }
}
