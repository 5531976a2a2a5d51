//! virt-launcher's conversion of device-plugin env vars into libvirt `<hostdev>` elements.
//!
//! The env var names and the pool semantics are KubeVirt's: each `gpus[]`/`hostDevices[]` entry
//! takes the next unused address of its resource from `PCI_RESOURCE_<NAME>`,
//! `MDEV_PCI_RESOURCE_<NAME>` or `USB_RESOURCE_<NAME>`; an entry left without one is an error.

use std::collections::BTreeMap;

use crate::scenario::{HostdevType, VmiManifest};

/// One `<hostdev>` of the domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hostdev {
    pub kind: HostdevType,
    /// PCI address, mdev UUID, or `bus:device` for USB.
    pub source: String,
    pub alias: String,
    /// The element as libvirt receives it.
    pub xml: String,
}

/// `nvidia.com/GRID_T4-1Q` -> `NVIDIA_COM_GRID_T4-1Q` (upper case, `/` and `.` to `_`).
pub fn env_resource_name(resource: &str) -> String {
    resource.to_uppercase().replace(['/', '.'], "_")
}

/// Builds the hostdevs for a VMI from the env the kubelet's allocation produced.
pub fn hostdevs(vmi: &VmiManifest, env: &BTreeMap<String, String>) -> Result<Vec<Hostdev>, String> {
    let mut pools: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in env {
        pools.insert(
            k.clone(),
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        );
    }
    let mut out = Vec::new();
    let mut first_gpu_mdev = true;
    let devices = &vmi.spec.domain.devices;
    let entries = devices
        .gpus
        .iter()
        .map(|d| (true, d))
        .chain(devices.host_devices.iter().map(|d| (false, d)));
    for (is_gpu, d) in entries {
        let name = env_resource_name(&d.device_name);
        let alias_prefix = if is_gpu { "ua-gpu-" } else { "ua-hostdevice-" };
        let mut take = |key: String| {
            pools.get_mut(&key).and_then(|p| {
                if p.is_empty() {
                    None
                } else {
                    Some(p.remove(0))
                }
            })
        };
        if let Some(addr) = take(format!("PCI_RESOURCE_{name}")) {
            let alias = format!("{alias_prefix}{}", d.name);
            out.push(Hostdev {
                kind: HostdevType::Pci,
                xml: pci_xml(&addr, &alias)?,
                source: addr,
                alias,
            });
        } else if let Some(uuid) = take(format!("MDEV_PCI_RESOURCE_{name}")) {
            let alias = format!("{alias_prefix}{}", d.name);
            let display = is_gpu && std::mem::take(&mut first_gpu_mdev);
            let extra = if display {
                " display='on' ramfb='on'"
            } else {
                ""
            };
            let xml = format!(
                "<hostdev mode='subsystem' type='mdev' model='vfio-pci'{extra}><source><address uuid='{uuid}'/></source><alias name='{alias}'/></hostdev>"
            );
            out.push(Hostdev {
                kind: HostdevType::Mdev,
                source: uuid,
                alias,
                xml,
            });
        } else if !is_gpu && let Some(bus_dev) = take(format!("USB_RESOURCE_{name}")) {
            let alias = format!("ua-usb-host-{}", d.name);
            let (bus, dev) = bus_dev
                .split_once(':')
                .ok_or_else(|| format!("USB_RESOURCE_{name}: {bus_dev:?} is not bus:device"))?;
            let xml = format!(
                "<hostdev mode='subsystem' type='usb'><source><address bus='{bus}' device='{dev}'/></source><alias name='{alias}'/></hostdev>"
            );
            out.push(Hostdev {
                kind: HostdevType::Usb,
                source: bus_dev,
                alias,
                xml,
            });
        } else {
            return Err(format!(
                "failed to create {} {}: no device of resource {} left in the pod's environment",
                if is_gpu { "GPU" } else { "host device" },
                d.name,
                d.device_name
            ));
        }
    }
    Ok(out)
}

fn pci_xml(addr: &str, alias: &str) -> Result<String, String> {
    let parse = || -> Option<(String, String, String, String)> {
        let (domain, rest) = addr.split_once(':')?;
        let (bus, rest) = rest.split_once(':')?;
        let (slot, func) = rest.split_once('.')?;
        Some((domain.into(), bus.into(), slot.into(), func.into()))
    };
    let (domain, bus, slot, func) =
        parse().ok_or_else(|| format!("{addr:?} is not a PCI address"))?;
    Ok(format!(
        "<hostdev mode='subsystem' type='pci' managed='no'><source><address type='pci' domain='0x{domain}' bus='0x{bus}' slot='0x{slot}' function='0x{func}'/></source><alias name='{alias}'/></hostdev>"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vmi(yaml_devices: &str) -> VmiManifest {
        let yaml = format!(
            "kind: VirtualMachineInstance\nmetadata: {{name: v}}\nspec:\n  domain:\n    devices:\n{yaml_devices}"
        );
        serde_saphyr::from_str(&yaml).unwrap()
    }

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn env_names_follow_kubevirt() {
        assert_eq!(
            env_resource_name("nvidia.com/GRID_T4-1Q"),
            "NVIDIA_COM_GRID_T4-1Q"
        );
        assert_eq!(
            env_resource_name("devices.kubevirt.io/nvme"),
            "DEVICES_KUBEVIRT_IO_NVME"
        );
    }

    #[test]
    fn pci_mdev_and_usb_hostdevs() {
        let v = vmi(
            "      gpus: [{name: g1, deviceName: nvidia.com/GRID_T4-1Q}]\n      hostDevices: [{name: n1, deviceName: devices.kubevirt.io/nvme}, {name: u1, deviceName: kubevirt.io/storage}]\n",
        );
        let e = env(&[
            (
                "MDEV_PCI_RESOURCE_NVIDIA_COM_GRID_T4-1Q",
                "6f0c3f2e-0000-4000-8000-000000000001",
            ),
            ("PCI_RESOURCE_DEVICES_KUBEVIRT_IO_NVME", "0000:05:00.0"),
            ("USB_RESOURCE_KUBEVIRT_IO_STORAGE", "1:2"),
        ]);
        let h = hostdevs(&v, &e).unwrap();
        assert_eq!(h.len(), 3);
        assert_eq!(
            (h[0].kind, h[0].alias.as_str()),
            (HostdevType::Mdev, "ua-gpu-g1")
        );
        assert!(h[0].xml.contains("display='on' ramfb='on'"));
        assert_eq!(
            (h[1].kind, h[1].source.as_str()),
            (HostdevType::Pci, "0000:05:00.0")
        );
        assert!(
            h[1].xml
                .contains("domain='0x0000' bus='0x05' slot='0x00' function='0x0'"),
            "{}",
            h[1].xml
        );
        assert_eq!(h[1].alias, "ua-hostdevice-n1");
        assert_eq!(
            (h[2].kind, h[2].source.as_str(), h[2].alias.as_str()),
            (HostdevType::Usb, "1:2", "ua-usb-host-u1")
        );
        assert!(h[2].xml.contains("<address bus='1' device='2'/>"));
    }

    #[test]
    fn each_entry_takes_the_next_address_and_a_shortfall_is_an_error() {
        let v = vmi(
            "      hostDevices: [{name: a, deviceName: x.io/n}, {name: b, deviceName: x.io/n}]\n",
        );
        let h = hostdevs(
            &v,
            &env(&[("PCI_RESOURCE_X_IO_N", "0000:05:00.0,0000:06:00.0")]),
        )
        .unwrap();
        assert_eq!(
            h.iter().map(|d| d.source.as_str()).collect::<Vec<_>>(),
            ["0000:05:00.0", "0000:06:00.0"]
        );
        let err = hostdevs(&v, &env(&[("PCI_RESOURCE_X_IO_N", "0000:05:00.0")])).unwrap_err();
        assert!(err.contains("host device b"), "{err}");
    }
}
