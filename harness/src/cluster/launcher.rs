//! virt-launcher's conversion of device-plugin env vars into libvirt `<hostdev>` elements.
//!
//! Modelled on KubeVirt's `pkg/virt-launcher/virtwrap/device/hostdevice`:
//! - `hostDevices[]` ("generic") and `gpus[]` each get their own address pools, one per prefix
//!   (`PCI_RESOURCE_`, `MDEV_PCI_RESOURCE_`, and for generic devices `USB_RESOURCE_`), loaded
//!   from the env for the resources that list names. A pool splits an env value on `,` and
//!   every VMI entry pops ONE address (removed from every resource of that pool); an entry
//!   whose resource has no env var or no address left gets nothing from that pool.
//! - Generic devices are built PCI entries first, then mdev, then USB; GPUs PCI, then mdev.
//!   The domain lists the generic devices, then the GPUs.
//! - The only check is a count: as many hostdevs as entries. So a USB bundle, one kubelet
//!   device whose env value lists every member, reaches the VM as its first member only.

use std::collections::BTreeMap;

use crate::scenario::{DeviceRequest, HostdevType, VmiManifest};

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

const PCI_PREFIX: &str = "PCI_RESOURCE";
const MDEV_PREFIX: &str = "MDEV_PCI_RESOURCE";
const USB_PREFIX: &str = "USB_RESOURCE";

/// KubeVirt's `AddressPool`: addresses per resource, read from `<PREFIX>_<NAME>`.
struct AddressPool {
    by_resource: BTreeMap<String, Vec<String>>,
}

impl AddressPool {
    fn load(prefix: &str, entries: &[DeviceRequest], env: &BTreeMap<String, String>) -> Self {
        let mut by_resource = BTreeMap::new();
        for d in entries {
            let key = format!("{prefix}_{}", env_resource_name(&d.device_name));
            let Some(value) = env.get(&key) else { continue };
            let value = value.strip_suffix(',').unwrap_or(value);
            let addresses = if value.is_empty() {
                Vec::new()
            } else {
                value.split(',').map(str::to_owned).collect()
            };
            by_resource.insert(d.device_name.clone(), addresses);
        }
        AddressPool { by_resource }
    }

    /// The next address of `resource`, taken out of every resource that lists it (the
    /// best-effort pool: a missing resource or an empty list is `None`, not an error).
    fn pop(&mut self, resource: &str) -> Option<String> {
        let address = self.by_resource.get(resource)?.first()?.clone();
        for list in self.by_resource.values_mut() {
            list.retain(|a| a != &address);
        }
        Some(address)
    }
}

/// Builds the domain's hostdevs for a VMI from the env the kubelet's allocation produced:
/// the generic host devices, then the GPUs; `Err` is virt-launcher's message.
pub fn hostdevs(vmi: &VmiManifest, env: &BTreeMap<String, String>) -> Result<Vec<Hostdev>, String> {
    let devices = &vmi.spec.domain.devices;
    let mut out = generic_hostdevs(&devices.host_devices, env)?;
    out.extend(gpu_hostdevs(&devices.gpus, env)?);
    Ok(out)
}

fn generic_hostdevs(
    entries: &[DeviceRequest],
    env: &BTreeMap<String, String>,
) -> Result<Vec<Hostdev>, String> {
    let fail = |e: String| format!("failed to create generic host-devices: {e}");
    let alias = |d: &DeviceRequest| format!("ua-hostdevice-{}", d.name);
    let mut out = Vec::new();
    let mut pci = AddressPool::load(PCI_PREFIX, entries, env);
    for d in entries {
        if let Some(addr) = pci.pop(&d.device_name) {
            out.push(pci_hostdev(addr, alias(d)).map_err(|e| fail(format!("{}: {e}", d.name)))?);
        }
    }
    let mut mdev = AddressPool::load(MDEV_PREFIX, entries, env);
    for d in entries {
        if let Some(uuid) = mdev.pop(&d.device_name) {
            out.push(mdev_hostdev(uuid, alias(d), ""));
        }
    }
    let mut usb = AddressPool::load(USB_PREFIX, entries, env);
    for d in entries {
        if let Some(bus_dev) = usb.pop(&d.device_name) {
            // KubeVirt returns this one without its generic prefix.
            out.push(
                usb_hostdev(bus_dev, d)
                    .map_err(|e| format!("failed to create hostdevice for {}: {e}", d.name))?,
            );
        }
    }
    if out.len() != entries.len() {
        return Err(fail(format!(
            "the number of generic host-devices do not match the number of devices: {} \
             requested ({}), {} created ({})",
            entries.len(),
            names(entries),
            out.len(),
            sources(&out)
        )));
    }
    Ok(out)
}

fn gpu_hostdevs(
    entries: &[DeviceRequest],
    env: &BTreeMap<String, String>,
) -> Result<Vec<Hostdev>, String> {
    let fail = |e: String| format!("failed to create GPU host-devices: {e}");
    let alias = |d: &DeviceRequest| format!("ua-gpu-{}", d.name);
    let mut out = Vec::new();
    let mut pci = AddressPool::load(PCI_PREFIX, entries, env);
    for d in entries {
        if let Some(addr) = pci.pop(&d.device_name) {
            out.push(pci_hostdev(addr, alias(d)).map_err(|e| fail(format!("{}: {e}", d.name)))?);
        }
    }
    let mut mdev = AddressPool::load(MDEV_PREFIX, entries, env);
    for d in entries {
        if let Some(uuid) = mdev.pop(&d.device_name) {
            out.push(mdev_hostdev(uuid, alias(d), gpu_display(d)));
        }
    }
    if out.len() != entries.len() {
        return Err(fail(format!(
            "the number of device plugin GPU/s do not match the number of devices: {} \
             requested ({}), {} created ({})",
            entries.len(),
            names(entries),
            out.len(),
            sources(&out)
        )));
    }
    Ok(out)
}

/// The display attributes of a GPU's mdev: on with ramfb when the GPU has no
/// `virtualGPUOptions` (every GPU mdev, not only the first); with options, only what
/// `display` asks for (an absent `enabled` means on), and nothing without `display`.
fn gpu_display(d: &DeviceRequest) -> &'static str {
    let Some(options) = &d.virtual_gpu_options else {
        return " display='on' ramfb='on'";
    };
    match &options.display {
        None => "",
        Some(display) if display.enabled == Some(false) => "",
        // KubeVirt dereferences `ramFB.enabled` unchecked; an absent one reads as off here.
        Some(display) => match &display.ram_fb {
            None => " display='on' ramfb='on'",
            Some(r) if r.enabled == Some(true) => " display='on' ramfb='on'",
            Some(_) => " display='on'",
        },
    }
}

fn names(entries: &[DeviceRequest]) -> String {
    entries
        .iter()
        .map(|d| format!("{} {}", d.name, d.device_name))
        .collect::<Vec<_>>()
        .join(", ")
}

fn sources(hostdevs: &[Hostdev]) -> String {
    hostdevs
        .iter()
        .map(|h| h.source.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn pci_hostdev(addr: String, alias: String) -> Result<Hostdev, String> {
    let parse = || -> Option<(&str, &str, &str, &str)> {
        let (domain, rest) = addr.split_once(':')?;
        let (bus, rest) = rest.split_once(':')?;
        let (slot, func) = rest.split_once('.')?;
        Some((domain, bus, slot, func))
    };
    let (domain, bus, slot, func) =
        parse().ok_or_else(|| format!("{addr:?} is not a PCI address"))?;
    // No mode attribute: KubeVirt sets only type and managed on a PCI hostdev.
    let xml = format!(
        "<hostdev type='pci' managed='no'><source><address type='pci' domain='0x{domain}' bus='0x{bus}' slot='0x{slot}' function='0x{func}'/></source><alias name='{alias}'/></hostdev>"
    );
    Ok(Hostdev {
        kind: HostdevType::Pci,
        source: addr,
        alias,
        xml,
    })
}

fn mdev_hostdev(uuid: String, alias: String, display: &str) -> Hostdev {
    let xml = format!(
        "<hostdev mode='subsystem' type='mdev' model='vfio-pci'{display}><source><address uuid='{uuid}'/></source><alias name='{alias}'/></hostdev>"
    );
    Hostdev {
        kind: HostdevType::Mdev,
        source: uuid,
        alias,
        xml,
    }
}

fn usb_hostdev(bus_dev: String, d: &DeviceRequest) -> Result<Hostdev, String> {
    let (bus, dev) = bus_dev
        .split_once(':')
        .filter(|(_, dev)| !dev.contains(':'))
        .ok_or_else(|| format!("Bad value: {bus_dev}"))?;
    let alias = format!("ua-usb-host-{}", d.name);
    let xml = format!(
        "<hostdev mode='subsystem' type='usb'><source><address bus='{bus}' device='{dev}'/></source><alias name='{alias}'/></hostdev>"
    );
    Ok(Hostdev {
        kind: HostdevType::Usb,
        source: bus_dev,
        alias,
        xml,
    })
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

    fn summary(h: &[Hostdev]) -> Vec<(HostdevType, &str, &str)> {
        h.iter()
            .map(|d| (d.kind, d.source.as_str(), d.alias.as_str()))
            .collect()
    }

    const UUID1: &str = "6f0c3f2e-0000-4000-8000-000000000001";
    const UUID2: &str = "6f0c3f2e-0000-4000-8000-000000000002";

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
    fn pci_mdev_and_usb_elements() {
        let v = vmi(
            "      gpus: [{name: g1, deviceName: nvidia.com/GRID_T4-1Q}]\n      hostDevices: [{name: n1, deviceName: devices.kubevirt.io/nvme}, {name: u1, deviceName: kubevirt.io/storage}]\n",
        );
        let e = env(&[
            ("MDEV_PCI_RESOURCE_NVIDIA_COM_GRID_T4-1Q", UUID1),
            ("PCI_RESOURCE_DEVICES_KUBEVIRT_IO_NVME", "0000:05:00.0"),
            ("USB_RESOURCE_KUBEVIRT_IO_STORAGE", "1:2"),
        ]);
        let h = hostdevs(&v, &e).unwrap();
        assert_eq!(
            summary(&h),
            [
                (HostdevType::Pci, "0000:05:00.0", "ua-hostdevice-n1"),
                (HostdevType::Usb, "1:2", "ua-usb-host-u1"),
                (HostdevType::Mdev, UUID1, "ua-gpu-g1"),
            ]
        );
        assert_eq!(
            h[0].xml,
            "<hostdev type='pci' managed='no'><source><address type='pci' domain='0x0000' bus='0x05' slot='0x00' function='0x0'/></source><alias name='ua-hostdevice-n1'/></hostdev>"
        );
        assert!(
            h[1].xml
                .starts_with("<hostdev mode='subsystem' type='usb'>")
                && h[1].xml.contains("<address bus='1' device='2'/>"),
            "{}",
            h[1].xml
        );
        assert!(
            h[2].xml.starts_with(
                "<hostdev mode='subsystem' type='mdev' model='vfio-pci' display='on' ramfb='on'>"
            ),
            "{}",
            h[2].xml
        );
    }

    #[test]
    fn generic_devices_come_first_each_kind_in_its_turn() {
        let v = vmi(concat!(
            "      gpus: [{name: gm, deviceName: n.com/vgpu}, {name: gp, deviceName: n.com/t4}]\n",
            "      hostDevices: [{name: m, deviceName: x.io/m}, {name: u, deviceName: x.io/u}, {name: p, deviceName: x.io/p}]\n",
        ));
        let e = env(&[
            ("MDEV_PCI_RESOURCE_N_COM_VGPU", UUID1),
            ("PCI_RESOURCE_N_COM_T4", "0000:65:00.0"),
            ("MDEV_PCI_RESOURCE_X_IO_M", UUID2),
            ("USB_RESOURCE_X_IO_U", "2:5"),
            ("PCI_RESOURCE_X_IO_P", "0000:05:00.0"),
        ]);
        assert_eq!(
            summary(&hostdevs(&v, &e).unwrap()),
            [
                (HostdevType::Pci, "0000:05:00.0", "ua-hostdevice-p"),
                (HostdevType::Mdev, UUID2, "ua-hostdevice-m"),
                (HostdevType::Usb, "2:5", "ua-usb-host-u"),
                (HostdevType::Pci, "0000:65:00.0", "ua-gpu-gp"),
                (HostdevType::Mdev, UUID1, "ua-gpu-gm"),
            ]
        );
    }

    #[test]
    fn each_entry_pops_one_address_and_a_shortfall_is_an_error() {
        let v = vmi(
            "      hostDevices: [{name: a, deviceName: x.io/n}, {name: b, deviceName: x.io/n}]\n",
        );
        let h = hostdevs(
            &v,
            &env(&[("PCI_RESOURCE_X_IO_N", "0000:05:00.0,0000:06:00.0,")]),
        )
        .unwrap();
        assert_eq!(
            summary(&h),
            [
                (HostdevType::Pci, "0000:05:00.0", "ua-hostdevice-a"),
                (HostdevType::Pci, "0000:06:00.0", "ua-hostdevice-b"),
            ]
        );
        let err = hostdevs(&v, &env(&[("PCI_RESOURCE_X_IO_N", "0000:05:00.0")])).unwrap_err();
        assert!(
            err.starts_with("failed to create generic host-devices: the number of generic host-devices do not match"),
            "{err}"
        );
        let gpus = vmi("      gpus: [{name: g, deviceName: x.io/g}]\n");
        let err = hostdevs(&gpus, &env(&[])).unwrap_err();
        assert!(
            err.starts_with("failed to create GPU host-devices: the number of device plugin GPU/s"),
            "{err}"
        );
    }

    #[test]
    fn a_usb_bundle_reaches_the_vm_as_its_first_member() {
        let bundle = env(&[("USB_RESOURCE_KUBEVIRT_IO_PERIPHERALS", "1:2,1:3,2:1")]);
        let one = vmi("      hostDevices: [{name: p, deviceName: kubevirt.io/peripherals}]\n");
        assert_eq!(
            summary(&hostdevs(&one, &bundle).unwrap()),
            [(HostdevType::Usb, "1:2", "ua-usb-host-p")]
        );
        // Entries pop members, not bundles: a second entry takes the second member.
        let two = vmi(
            "      hostDevices: [{name: p, deviceName: kubevirt.io/peripherals}, {name: q, deviceName: kubevirt.io/peripherals}]\n",
        );
        assert_eq!(
            summary(&hostdevs(&two, &bundle).unwrap()),
            [
                (HostdevType::Usb, "1:2", "ua-usb-host-p"),
                (HostdevType::Usb, "1:3", "ua-usb-host-q"),
            ]
        );
        let err = hostdevs(
            &one,
            &env(&[("USB_RESOURCE_KUBEVIRT_IO_PERIPHERALS", "1:2:3")]),
        )
        .unwrap_err();
        assert_eq!(err, "failed to create hostdevice for p: Bad value: 1:2:3");
    }

    #[test]
    fn an_address_popped_for_one_resource_leaves_the_others() {
        let v = vmi(
            "      hostDevices: [{name: a, deviceName: x.io/a}, {name: b, deviceName: x.io/b}]\n",
        );
        let e = env(&[
            ("PCI_RESOURCE_X_IO_A", "0000:05:00.0"),
            ("PCI_RESOURCE_X_IO_B", "0000:05:00.0,0000:06:00.0"),
        ]);
        assert_eq!(
            summary(&hostdevs(&v, &e).unwrap())
                .iter()
                .map(|s| s.1)
                .collect::<Vec<_>>(),
            ["0000:05:00.0", "0000:06:00.0"]
        );
    }

    #[test]
    fn gpus_and_host_devices_draw_from_separate_pools() {
        // virt-launcher loads both from the same env var: each takes the first address.
        let v = vmi(
            "      gpus: [{name: g, deviceName: x.io/n}]\n      hostDevices: [{name: h, deviceName: x.io/n}]\n",
        );
        let e = env(&[("PCI_RESOURCE_X_IO_N", "0000:05:00.0,0000:06:00.0")]);
        assert_eq!(
            summary(&hostdevs(&v, &e).unwrap()),
            [
                (HostdevType::Pci, "0000:05:00.0", "ua-hostdevice-h"),
                (HostdevType::Pci, "0000:05:00.0", "ua-gpu-g"),
            ]
        );
    }

    #[test]
    fn virtual_gpu_options_decide_display_and_ramfb() {
        let gpu = |options: &str| {
            let v = vmi(&format!(
                "      gpus: [{{name: g, deviceName: n.com/v{options}}}]\n"
            ));
            let h = hostdevs(&v, &env(&[("MDEV_PCI_RESOURCE_N_COM_V", UUID1)])).unwrap();
            let xml = &h[0].xml;
            (xml.contains("display='on'"), xml.contains("ramfb='on'"))
        };
        assert_eq!(gpu(""), (true, true));
        assert_eq!(gpu(", virtualGPUOptions: {}"), (false, false));
        assert_eq!(gpu(", virtualGPUOptions: {display: {}}"), (true, true));
        assert_eq!(
            gpu(", virtualGPUOptions: {display: {enabled: false}}"),
            (false, false)
        );
        assert_eq!(
            gpu(", virtualGPUOptions: {display: {ramFB: {enabled: false}}}"),
            (true, false)
        );
        assert_eq!(
            gpu(", virtualGPUOptions: {display: {enabled: true, ramFB: {enabled: true}}}"),
            (true, true)
        );
        // Every GPU mdev without options gets the display, not only the first; a host
        // device's mdev never does.
        let v = vmi(
            "      gpus: [{name: a, deviceName: n.com/v}, {name: b, deviceName: n.com/v}]\n      hostDevices: [{name: h, deviceName: n.com/w}]\n",
        );
        let e = env(&[
            (
                "MDEV_PCI_RESOURCE_N_COM_V",
                format!("{UUID1},{UUID2}").as_str(),
            ),
            (
                "MDEV_PCI_RESOURCE_N_COM_W",
                "6f0c3f2e-0000-4000-8000-000000000003",
            ),
        ]);
        let h = hostdevs(&v, &e).unwrap();
        let display: Vec<bool> = h.iter().map(|d| d.xml.contains("display='on'")).collect();
        assert_eq!(display, [false, true, true]);
    }
}
