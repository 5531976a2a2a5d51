//! USB devices: root hubs per bus, port paths, device numbers, uevents.

use std::collections::BTreeSet;

use super::{Kernel, KernelError, USB_MAJOR};
use crate::backend::DevNode;
use crate::spec::UsbSpec;
use crate::spec::validate::XHCI_ADDRESS;

/// One plugged USB device.
#[derive(Debug, Clone, PartialEq)]
pub struct UsbDevice {
    pub spec: UsbSpec,
    /// Allocated at plug: a re-plugged device gets a new one.
    pub devnum: u8,
}

impl UsbDevice {
    /// `1-1.4`.
    pub fn name(&self) -> String {
        self.spec.name()
    }
}

/// The `/dev/bus/usb/BBB/DDD` node of a device.
pub fn dev_node(bus: u8, devnum: u8) -> DevNode {
    DevNode {
        path: format!("bus/usb/{bus:03}/{devnum:03}"),
        major: USB_MAJOR,
        minor: (u32::from(bus) - 1) * 128 + u32::from(devnum) - 1,
    }
}

/// The uevent environment of a USB device (root hubs: `devnum` 1, ids of the Linux root hub).
pub fn usb_device_env(bus: u8, devnum: u8, product: String, class: u8) -> Vec<(String, String)> {
    let node = dev_node(bus, devnum);
    vec![
        ("MAJOR".to_owned(), node.major.to_string()),
        ("MINOR".to_owned(), node.minor.to_string()),
        ("DEVNAME".to_owned(), node.path),
        ("DEVTYPE".to_owned(), "usb_device".to_owned()),
        ("DRIVER".to_owned(), "usb".to_owned()),
        ("PRODUCT".to_owned(), product),
        ("TYPE".to_owned(), format!("{class}/0/0")),
        ("BUSNUM".to_owned(), format!("{bus:03}")),
        ("DEVNUM".to_owned(), format!("{devnum:03}")),
    ]
}

impl Kernel {
    /// Buses with a root hub: every bus some device sits on.
    pub fn usb_buses(&self) -> BTreeSet<u8> {
        self.usb.values().map(|d| d.spec.bus).collect()
    }

    /// A root hub's directory.
    pub fn usb_root_path(&self, bus: u8) -> String {
        format!("{}/usb{bus}", self.pci_path(XHCI_ADDRESS))
    }

    /// A device's directory: nested under its hub (`usb1/1-1/1-1.4`).
    pub fn usb_path(&self, name: &str) -> String {
        let Some((bus, port)) = name.split_once('-') else {
            return name.to_owned();
        };
        let bus: u8 = bus.parse().unwrap_or(0);
        let mut path = self.usb_root_path(bus);
        let mut prefix = String::new();
        for part in port.split('.') {
            if !prefix.is_empty() {
                prefix.push('.');
            }
            prefix.push_str(part);
            path.push_str(&format!("/{bus}-{prefix}"));
        }
        path
    }

    pub fn usb_env(&self, d: &UsbDevice) -> Vec<(String, String)> {
        let s = &d.spec;
        usb_device_env(
            s.bus,
            d.devnum,
            format!("{:x}/{:x}/{:x}", s.vendor, s.product_id, s.bcd_device),
            s.class,
        )
    }

    fn alloc_devnum(&mut self, bus: u8) -> Option<u8> {
        let used: BTreeSet<u8> = self
            .usb
            .values()
            .filter(|d| d.spec.bus == bus)
            .map(|d| d.devnum)
            .collect();
        // Like the kernel: round-robin after the last number given, skipping taken ones.
        let last = self.last_devnum.get(&bus).copied().unwrap_or(1);
        let n = (1..=126i32)
            .map(|i| ((i32::from(last) - 2 + i).rem_euclid(126) + 2) as u8)
            .find(|n| !used.contains(n))?;
        self.last_devnum.insert(bus, n);
        Some(n)
    }

    /// Plugs a USB device: root hub (and xHCI controller) appear as needed; add and bind uevents.
    pub fn plug_usb(&mut self, spec: UsbSpec) -> Result<(), KernelError> {
        let name = spec.name();
        if self.usb.contains_key(&name) {
            return Err(KernelError::UsbExists(name));
        }
        if let Some((hub, _)) = spec.port.rsplit_once('.') {
            let hub = format!("{}-{hub}", spec.bus);
            if !self.usb.contains_key(&hub) {
                return Err(KernelError::NoHub { port: name, hub });
            }
        }
        let devnum = match spec.devnum {
            Some(n) => {
                if self
                    .usb
                    .values()
                    .any(|d| d.spec.bus == spec.bus && d.devnum == n)
                {
                    return Err(KernelError::DevnumTaken {
                        port: name,
                        bus: spec.bus,
                        devnum: n,
                    });
                }
                n
            }
            None => self
                .alloc_devnum(spec.bus)
                .ok_or(KernelError::NoDevnum(spec.bus))?,
        };
        self.ensure_xhci(true);
        let bus = spec.bus;
        let new_bus = !self.usb_buses().contains(&bus);
        if new_bus {
            let env = usb_device_env(
                bus,
                1,
                format!("1d6b/{:x}/{:x}", root_hub_product(bus), 0x0610),
                9,
            );
            let devpath = format!("/{}", self.usb_root_path(bus));
            self.emit("add", devpath, "usb", env);
        }
        let device = UsbDevice { spec, devnum };
        let env = self.usb_env(&device);
        self.usb.insert(name.clone(), device);
        let devpath = format!("/{}", self.usb_path(&name));
        self.emit("add", devpath.clone(), "usb", env.clone());
        let iface = self.usb_interface_env(&name);
        self.emit("add", format!("{devpath}/{name}:1.0"), "usb", iface);
        self.emit("bind", devpath, "usb", env);
        Ok(())
    }

    pub(crate) fn usb_interface_env(&self, name: &str) -> Vec<(String, String)> {
        let Some(d) = self.usb.get(name) else {
            return Vec::new();
        };
        let s = &d.spec;
        vec![
            ("DEVTYPE".to_owned(), "usb_interface".to_owned()),
            (
                "PRODUCT".to_owned(),
                format!("{:x}/{:x}/{:x}", s.vendor, s.product_id, s.bcd_device),
            ),
            ("TYPE".to_owned(), format!("{}/0/0", s.class)),
            ("INTERFACE".to_owned(), format!("{}/0/0", s.interface_class)),
            ("MODALIAS".to_owned(), usb_modalias(s)),
        ]
    }

    /// Unplugs a device and everything behind it (a hub's children first).
    pub fn unplug_usb(&mut self, name: &str) -> Result<(), KernelError> {
        if !self.usb.contains_key(name) {
            return Err(KernelError::NoSuchUsb(name.to_owned()));
        }
        let below: Vec<String> = self
            .usb
            .keys()
            .filter(|k| k.starts_with(&format!("{name}.")))
            .cloned()
            .collect();
        for k in below.into_iter().rev() {
            self.remove_usb(&k);
        }
        self.remove_usb(name);
        Ok(())
    }

    fn remove_usb(&mut self, name: &str) {
        let Some(d) = self.usb.get(name) else {
            return;
        };
        let bus = d.spec.bus;
        let env = self.usb_env(d);
        let iface = self.usb_interface_env(name);
        let devpath = format!("/{}", self.usb_path(name));
        self.emit("remove", format!("{devpath}/{name}:1.0"), "usb", iface);
        self.emit("unbind", devpath.clone(), "usb", env.clone());
        self.emit("remove", devpath, "usb", env);
        self.usb.remove(name);
        if !self.usb_buses().contains(&bus) {
            let env = usb_device_env(
                bus,
                1,
                format!("1d6b/{:x}/{:x}", root_hub_product(bus), 0x0610),
                9,
            );
            let devpath = format!("/{}", self.usb_root_path(bus));
            self.emit("remove", devpath, "usb", env);
        }
    }
}

/// The Linux root hub's product id: xHCI registers a USB 2 bus (odd number, 1d6b:0002) and
/// a SuperSpeed bus (even number, 1d6b:0003).
pub fn root_hub_product(bus: u8) -> u16 {
    if bus.is_multiple_of(2) {
        0x0003
    } else {
        0x0002
    }
}

pub fn usb_modalias(s: &UsbSpec) -> String {
    format!(
        "usb:v{:04X}p{:04X}d{:04X}dc{:02X}dsc00dp00ic{:02X}isc00ip00in00",
        s.vendor, s.product_id, s.bcd_device, s.class, s.interface_class
    )
}
