//! Binary attributes: PCI configuration space and USB descriptors.

use crate::kernel::PciFunction;
use crate::spec::UsbSpeed;

/// Where the capability list starts, and its entries.
const CAP_PM: usize = 0x40;
const CAP_MSI: usize = 0x50;
const CAP_EXP: usize = 0x70;

/// 256 bytes of type 0 (endpoint) or type 1 (bridge) configuration space with a capability
/// list (power management, MSI, PCI Express), as pciutils parses it.
pub fn pci_config_space(f: &PciFunction, secondary_bus: u8) -> [u8; 256] {
    let s = &f.spec;
    let mut c = [0u8; 256];
    put16(&mut c, 0x00, s.vendor);
    put16(&mut c, 0x02, s.device);
    put16(
        &mut c,
        0x04,
        if f.driver.is_some() { 0x0406 } else { 0x0000 },
    );
    put16(&mut c, 0x06, 0x0010); // status: capability list present
    c[0x08] = s.revision;
    c[0x09] = (s.class & 0xff) as u8;
    c[0x0a] = ((s.class >> 8) & 0xff) as u8;
    c[0x0b] = ((s.class >> 16) & 0xff) as u8;
    c[0x0e] = if s.bridge { 0x01 } else { 0x00 };
    if s.bridge {
        c[0x18] = s.address.bus;
        c[0x19] = secondary_bus;
        c[0x1a] = secondary_bus;
    } else {
        put16(&mut c, 0x2c, s.subsystem_vendor);
        put16(&mut c, 0x2e, s.subsystem_device);
    }
    c[0x34] = CAP_PM as u8;
    c[0x3c] = (f.irq & 0xff) as u8;
    c[0x3d] = 0x01; // INTA
    // Power management v3, next MSI.
    c[CAP_PM] = 0x01;
    c[CAP_PM + 1] = CAP_MSI as u8;
    put16(&mut c, CAP_PM + 2, 0x0003);
    put16(&mut c, CAP_PM + 4, 0x0008);
    // MSI, 64-bit capable, next PCI Express.
    c[CAP_MSI] = 0x05;
    c[CAP_MSI + 1] = CAP_EXP as u8;
    put16(&mut c, CAP_MSI + 2, 0x0080);
    // PCI Express v2: endpoint, or root port for bridges; last in the list.
    c[CAP_EXP] = 0x10;
    c[CAP_EXP + 1] = 0x00;
    let port_type: u16 = if s.bridge { 0x4 } else { 0x0 };
    put16(&mut c, CAP_EXP + 2, 0x0002 | (port_type << 4));
    put32(&mut c, CAP_EXP + 0x0c, 0x0000_4843); // link caps: x4, 8 GT/s
    put16(&mut c, CAP_EXP + 0x12, 0x1043); // link status: x4, 8 GT/s
    c
}

fn put16(c: &mut [u8], at: usize, v: u16) {
    c[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put32(c: &mut [u8], at: usize, v: u32) {
    c[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// What the device descriptor and its one configuration need.
pub struct UsbDescriptorInput {
    pub speed: UsbSpeed,
    pub class: u8,
    pub interface_class: u8,
    pub vendor: u16,
    pub product_id: u16,
    pub bcd_device: u16,
    pub has_manufacturer: bool,
    pub has_product: bool,
    pub has_serial: bool,
}

/// The 18-byte device descriptor followed by one configuration (config, interface, two
/// bulk endpoints), as libusb reads `descriptors`.
pub fn usb_descriptors(d: &UsbDescriptorInput) -> Vec<u8> {
    let mut out = Vec::with_capacity(18 + 32);
    out.extend_from_slice(&[18, 0x01]);
    out.extend_from_slice(&d.speed.bcd_usb().to_le_bytes());
    out.extend_from_slice(&[d.class, 0, 0]);
    out.push(
        if matches!(d.speed, UsbSpeed::Low | UsbSpeed::Full | UsbSpeed::High) {
            64
        } else {
            9
        },
    );
    out.extend_from_slice(&d.vendor.to_le_bytes());
    out.extend_from_slice(&d.product_id.to_le_bytes());
    out.extend_from_slice(&d.bcd_device.to_le_bytes());
    out.push(u8::from(d.has_manufacturer));
    out.push(if d.has_product { 2 } else { 0 });
    out.push(if d.has_serial { 3 } else { 0 });
    out.push(1);
    let total: u16 = 9 + 9 + 7 + 7;
    out.extend_from_slice(&[9, 0x02]);
    out.extend_from_slice(&total.to_le_bytes());
    out.extend_from_slice(&[1, 1, 0, 0x80, 50]);
    out.extend_from_slice(&[9, 0x04, 0, 0, 2, d.interface_class, 0, 0, 0]);
    let max_packet: u16 = if matches!(d.speed, UsbSpeed::Low | UsbSpeed::Full) {
        64
    } else {
        512
    };
    for ep in [0x81u8, 0x02] {
        out.extend_from_slice(&[7, 0x05, ep, 0x02]);
        out.extend_from_slice(&max_packet.to_le_bytes());
        out.push(0);
    }
    out
}
