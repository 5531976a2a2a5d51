//! USB: the xHCI controller's root hubs, devices nested by port, and their interfaces.

use super::Renderer;
use super::binary::{UsbDescriptorInput, usb_descriptors};
use crate::kernel::{Kernel, UsbDevice};
use crate::kernel::{root_hub_product, usb_device_env, usb_modalias};
use crate::spec::validate::XHCI_ADDRESS;
use crate::spec::{UsbSpec, UsbSpeed};

/// Attributes shared by root hubs and devices.
struct UsbAttrs<'a> {
    spec: &'a UsbSpec,
    devnum: u8,
    devpath: &'a str,
    maxchild: u8,
    env: Vec<(String, String)>,
}

pub(super) fn render_usb(r: &mut Renderer, k: &Kernel) {
    let buses = k.usb_buses();
    if buses.is_empty() {
        return;
    }
    for name in ["hub", "usb-storage", "usbhid"] {
        r.dir(&format!("bus/usb/drivers/{name}"));
    }
    for bus in buses {
        let speed = if root_hub_product(bus) == 3 {
            UsbSpeed::Super
        } else {
            UsbSpeed::High
        };
        let spec = UsbSpec {
            bus,
            port: String::new(),
            vendor: 0x1d6b,
            product_id: root_hub_product(bus),
            bcd_device: 0x0610,
            manufacturer: Some("Linux 6.10.0 xhci-hcd".to_owned()),
            product: Some("xHCI Host Controller".to_owned()),
            serial: Some(XHCI_ADDRESS.to_string()),
            speed,
            class: 0x09,
            interface_class: 0x09,
            devnum: Some(1),
        };
        let dir = k.usb_root_path(bus);
        let env = usb_device_env(bus, 1, format!("1d6b/{:x}/610", spec.product_id), 9);
        let children = k
            .usb
            .values()
            .filter(|d| d.spec.bus == bus && !d.spec.port.contains('.'))
            .count();
        device(
            r,
            &dir,
            &format!("usb{bus}"),
            &format!("{bus}-0:1.0"),
            &UsbAttrs {
                spec: &spec,
                devnum: 1,
                devpath: "0",
                maxchild: children.max(4) as u8,
                env,
            },
        );
    }
    for d in k.usb.values() {
        let name = d.name();
        let dir = k.usb_path(&name);
        user_device(r, k, d, &dir, &name);
    }
}

fn user_device(r: &mut Renderer, k: &Kernel, d: &UsbDevice, dir: &str, name: &str) {
    let hub_children = k
        .usb
        .keys()
        .filter(|c| c.starts_with(&format!("{name}.")) && !c[name.len() + 1..].contains('.'))
        .count();
    device(
        r,
        dir,
        name,
        &format!("{name}:1.0"),
        &UsbAttrs {
            spec: &d.spec,
            devnum: d.devnum,
            devpath: &d.spec.port,
            maxchild: if d.spec.class == 0x09 {
                hub_children.max(4) as u8
            } else {
                0
            },
            env: k.usb_env(d),
        },
    );
}

fn device(r: &mut Renderer, dir: &str, name: &str, iface_name: &str, a: &UsbAttrs) {
    let s = a.spec;
    r.ro(format!("{dir}/idVendor"), format!("{:04x}\n", s.vendor));
    r.ro(
        format!("{dir}/idProduct"),
        format!("{:04x}\n", s.product_id),
    );
    r.ro(
        format!("{dir}/bcdDevice"),
        format!("{:04x}\n", s.bcd_device),
    );
    r.ro(format!("{dir}/busnum"), format!("{}\n", s.bus));
    r.ro(format!("{dir}/devnum"), format!("{}\n", a.devnum));
    r.ro(format!("{dir}/devpath"), format!("{}\n", a.devpath));
    r.ro(format!("{dir}/speed"), format!("{}\n", s.speed.sysfs()));
    let bcd = s.speed.bcd_usb();
    r.ro(
        format!("{dir}/version"),
        format!("{:2x}.{:02x}\n", bcd >> 8, bcd & 0xff),
    );
    r.ro(format!("{dir}/bDeviceClass"), format!("{:02x}\n", s.class));
    r.ro(format!("{dir}/bDeviceSubClass"), "00\n");
    r.ro(format!("{dir}/bDeviceProtocol"), "00\n");
    r.ro(format!("{dir}/bNumConfigurations"), "1\n");
    r.ro(format!("{dir}/bConfigurationValue"), "1\n");
    r.ro(format!("{dir}/bNumInterfaces"), " 1\n");
    r.ro(format!("{dir}/bmAttributes"), "80\n");
    r.ro(format!("{dir}/bMaxPower"), "100mA\n");
    r.ro(format!("{dir}/bMaxPacketSize0"), "64\n");
    // Read by `lsusb -t`: the active configuration's string (none here) and the lane counts.
    r.ro(format!("{dir}/configuration"), "\n");
    r.ro(format!("{dir}/rx_lanes"), "1\n");
    r.ro(format!("{dir}/tx_lanes"), "1\n");
    r.ro(format!("{dir}/maxchild"), format!("{}\n", a.maxchild));
    r.ro(format!("{dir}/authorized"), "1\n");
    r.ro(format!("{dir}/removable"), "unknown\n");
    for (file, v) in [
        ("manufacturer", &s.manufacturer),
        ("product", &s.product),
        ("serial", &s.serial),
    ] {
        if let Some(v) = v {
            r.ro(format!("{dir}/{file}"), format!("{v}\n"));
        }
    }
    let mut ev = String::new();
    for (k, v) in &a.env {
        ev.push_str(&format!("{k}={v}\n"));
    }
    r.ro(format!("{dir}/uevent"), ev);
    r.b.binary(
        &format!("{dir}/descriptors"),
        0o444,
        usb_descriptors(&UsbDescriptorInput {
            speed: s.speed,
            class: s.class,
            interface_class: s.interface_class,
            vendor: s.vendor,
            product_id: s.product_id,
            bcd_device: s.bcd_device,
            has_manufacturer: s.manufacturer.is_some(),
            has_product: s.product.is_some(),
            has_serial: s.serial.is_some(),
        }),
    );
    r.link(format!("{dir}/subsystem"), "bus/usb");
    r.link(format!("{dir}/driver"), "bus/usb/drivers/usb");
    r.link(format!("bus/usb/devices/{name}"), dir);

    let idir = format!("{dir}/{iface_name}");
    r.ro(format!("{idir}/bInterfaceNumber"), "00\n");
    r.ro(format!("{idir}/bAlternateSetting"), " 0\n");
    r.ro(format!("{idir}/bNumEndpoints"), "02\n");
    r.ro(
        format!("{idir}/bInterfaceClass"),
        format!("{:02x}\n", s.interface_class),
    );
    r.ro(format!("{idir}/bInterfaceSubClass"), "00\n");
    r.ro(format!("{idir}/bInterfaceProtocol"), "00\n");
    r.ro(format!("{idir}/modalias"), format!("{}\n", usb_modalias(s)));
    r.ro(
        format!("{idir}/uevent"),
        format!(
            "DEVTYPE=usb_interface\nPRODUCT={:x}/{:x}/{:x}\nTYPE={}/0/0\nINTERFACE={}/0/0\nMODALIAS={}\n",
            s.vendor, s.product_id, s.bcd_device, s.class, s.interface_class, usb_modalias(s)
        ),
    );
    r.link(format!("{idir}/subsystem"), "bus/usb");
    let idriver = match s.interface_class {
        0x03 => Some("usbhid"),
        0x08 => Some("usb-storage"),
        0x09 => Some("hub"),
        _ => None,
    };
    if let Some(drv) = idriver {
        r.link(format!("{idir}/driver"), &format!("bus/usb/drivers/{drv}"));
        r.link(format!("bus/usb/drivers/{drv}/{iface_name}"), &idir);
    }
    r.link(format!("bus/usb/devices/{iface_name}"), &idir);
    r.link(format!("bus/usb/drivers/usb/{name}"), dir);
}
