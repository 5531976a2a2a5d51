//! USB devices and bundles.
//!
//! Bundles as KubeVirt forms them: for each `usb` entry in config order, repeatedly fill every
//! selector with the first unused matching device; a round with an unfilled selector is dropped
//! (all devices must be present) and its devices are reported; a device joins at most one
//! bundle; earlier entries win. One kubelet device per complete bundle, id = its sorted port
//! paths joined by `+` (stable while the devices stay plugged in the same ports).

use std::collections::HashMap;

use crate::config::{
    ResourceConfig, ResourceSource, UsbBundle, is_usb_port, normalize_pci_address,
};
use crate::inventory::{Inventory, Member, PluginDevice, Skipped};
use crate::sysfs::{RelPath, SysDir, check_dev_relative};

use super::{Ctx, natural_key, read_numa};

/// One USB device as sysfs shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsbDevice {
    pub path: String,
    pub vendor: u16,
    pub product: u16,
    pub bus: u32,
    pub devnum: u32,
    /// Checked to be relative and inside the dev root.
    pub devname: String,
    pub numa: Option<i64>,
}

/// Reads one device; `Err` is the reason it cannot be served.
pub fn read_device(dir: &SysDir, path: &str) -> Result<UsbDevice, String> {
    let uevent = dir
        .read("uevent")
        .map_err(|e| format!("cannot read uevent: {e}"))?;
    let field = |key: &str| {
        uevent
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::trim)
    };
    let hex_file = |name: &str| {
        dir.read_trimmed(name)
            .ok()
            .and_then(|t| u16::from_str_radix(&t, 16).ok())
    };
    let product_field: Vec<u16> = field("PRODUCT")
        .map(|p| {
            p.split('/')
                .take(2)
                .filter_map(|x| u16::from_str_radix(x, 16).ok())
                .collect()
        })
        .unwrap_or_default();
    let vendor = hex_file("idVendor")
        .or(product_field.first().copied())
        .ok_or_else(|| "has no idVendor".to_string())?;
    let product = hex_file("idProduct")
        .or(product_field.get(1).copied())
        .ok_or_else(|| "has no idProduct".to_string())?;
    let number = |key: &str, file: &str| -> Result<u32, String> {
        field(key)
            .map(str::to_string)
            .or_else(|| dir.read_trimmed(file).ok())
            .and_then(|n| n.parse::<u32>().ok())
            .ok_or_else(|| format!("has no readable {key}"))
    };
    let bus = number("BUSNUM", "busnum")?;
    let devnum = number("DEVNUM", "devnum")?;
    // The kernel names every USB device node bus/usb/BBB/DDD. Anything else (a path out of the
    // dev root, or another node inside it such as `mem` or `sda`) is never handed to a container.
    let node = format!("bus/usb/{bus:03}/{devnum:03}");
    let unsafe_node =
        |why: String| format!("[{vendor:04x}:{product:04x}] unsafe device node: {why}; not served");
    let devname = match field("DEVNAME") {
        Some(d) => {
            let d = check_dev_relative(d).map_err(unsafe_node)?;
            if d != node {
                return Err(unsafe_node(format!(
                    "DEVNAME {d:?} is not the node of bus {bus} device {devnum} ({node})"
                )));
            }
            d
        }
        None => node,
    };
    Ok(UsbDevice {
        path: path.to_string(),
        vendor,
        product,
        bus,
        devnum,
        devname,
        numa: None,
    })
}

/// The host controller's PCI function: the last PCI-address component of the device's path.
fn controller(rel: &RelPath) -> Option<RelPath> {
    let parts: Vec<&str> = rel.as_str().split('/').collect();
    let i = parts
        .iter()
        .rposition(|p| p.len() == 12 && normalize_pci_address(p).is_some())?;
    RelPath::new(&parts[..=i].join("/"))
}

fn bundles(cfg: &crate::config::AgentConfig) -> Vec<(&ResourceConfig, &UsbBundle)> {
    let mut all: Vec<(&ResourceConfig, &UsbBundle)> = cfg
        .served()
        .filter_map(|r| match &r.source {
            ResourceSource::Usb(b) => Some(b.iter().map(move |b| (r, b))),
            _ => None,
        })
        .flatten()
        .collect();
    all.sort_by_key(|(_, b)| b.order);
    all
}

pub fn discover(ctx: &Ctx, inv: &mut Inventory) {
    let Some((bus, mut names)) = super::open_bus(ctx, inv, "usb") else {
        return;
    };
    // Root hubs (usbN) and interfaces (with ':') are not devices to hand out.
    names.retain(|n| !n.starts_with("usb") && !n.contains(':'));
    names.sort_by_key(|n| natural_key(n));
    let mut numa_cache: HashMap<RelPath, Option<i64>> = HashMap::new();
    let mut devices = Vec::new();
    for name in names {
        let label = format!("usb {name}");
        if !is_usb_port(&name) {
            inv.skipped.push(Skipped {
                device: label,
                reason: format!("{name:?} is not a USB port path (bus-port[.port...])"),
            });
            continue;
        }
        let read = bus
            .entry(&name)
            .map_err(|e| format!("cannot open: {e}"))
            .and_then(|dir| {
                let mut d = read_device(&dir, &name)?;
                d.numa = controller(dir.rel()).and_then(|c| {
                    *numa_cache.entry(c.clone()).or_insert_with(|| {
                        ctx.root.open_from_root(&c).ok().and_then(|p| read_numa(&p))
                    })
                });
                Ok(d)
            });
        match read {
            Ok(d) => devices.push(d),
            Err(reason) => inv.skipped.push(Skipped {
                device: label,
                reason,
            }),
        }
    }
    form_bundles(ctx, devices, inv);
}

fn form_bundles(ctx: &Ctx, devices: Vec<UsbDevice>, inv: &mut Inventory) {
    let mut used = vec![false; devices.len()];
    let mut incomplete: HashMap<usize, String> = HashMap::new();
    for (resource, bundle) in bundles(ctx.cfg) {
        loop {
            let mut picked: Vec<usize> = Vec::new();
            let mut missing: Vec<String> = Vec::new();
            for sel in &bundle.selectors {
                let free = (0..devices.len()).find(|&i| {
                    !used[i]
                        && !picked.contains(&i)
                        && sel.matches(devices[i].vendor, devices[i].product, &devices[i].path)
                });
                match free {
                    Some(i) => picked.push(i),
                    None => missing.push(format!(
                        "{} ({:04x}:{:04x}{})",
                        sel.field,
                        sel.vendor,
                        sel.product,
                        sel.port
                            .as_deref()
                            .map(|p| format!(" at port {p}"))
                            .unwrap_or_default()
                    )),
                }
            }
            if !missing.is_empty() {
                for i in picked {
                    incomplete.entry(i).or_insert_with(|| {
                        format!(
                            "is in an incomplete bundle of {} ({}): no free device for {}",
                            resource.name,
                            bundle.field,
                            missing.join(", ")
                        )
                    });
                }
                break;
            }
            for &i in &picked {
                used[i] = true;
            }
            let mut members: Vec<&UsbDevice> = picked.iter().map(|&i| &devices[i]).collect();
            members.sort_by_key(|d| natural_key(&d.path));
            let mut numa: Vec<i64> = members.iter().filter_map(|d| d.numa).collect();
            numa.sort_unstable();
            numa.dedup();
            let device = PluginDevice {
                id: members
                    .iter()
                    .map(|d| d.path.as_str())
                    .collect::<Vec<_>>()
                    .join("+"),
                healthy: members.iter().all(|d| ctx.node_exists(&d.devname)),
                numa_nodes: numa,
                members: members
                    .iter()
                    .map(|d| Member::Usb {
                        path: d.path.clone(),
                        bus: d.bus,
                        devnum: d.devnum,
                        vendor: d.vendor,
                        product: d.product,
                        devname: d.devname.clone(),
                    })
                    .collect(),
            };
            if let Some(r) = inv.resources.get_mut(&resource.name) {
                r.devices.push(device);
            }
        }
    }
    for (i, d) in devices.iter().enumerate().filter(|(i, _)| !used[*i]) {
        let what = format!("[{:04x}:{:04x}]", d.vendor, d.product);
        let reason = match incomplete.remove(&i) {
            Some(r) => format!("{what} {r}"),
            None => ctx.unserved_reason(&what, |r| match &r.source {
                ResourceSource::Usb(bundles) => bundles
                    .iter()
                    .flat_map(|b| &b.selectors)
                    .find(|s| s.matches(d.vendor, d.product, &d.path))
                    .map(|s| s.field.clone()),
                _ => None,
            }),
        };
        inv.skipped.push(Skipped {
            device: format!("usb {}", d.path),
            reason,
        });
    }
}
