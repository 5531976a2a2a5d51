//! PCI addresses and hex ids as host files spell them.

use std::fmt;

/// A PCI function address: domain, bus, device (0-31), function (0-7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddress {
    pub domain: u16,
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

impl PciAddress {
    pub const fn new(domain: u16, bus: u8, device: u8, function: u8) -> PciAddress {
        PciAddress {
            domain,
            bus,
            device,
            function,
        }
    }

    /// Parses `0000:05:00.0` (any case) or `05:00.0` (domain 0).
    pub fn parse(s: &str) -> Option<PciAddress> {
        let s = s.trim();
        let parts: Vec<&str> = s.split(':').collect();
        let (domain, bus, rest) = match parts.as_slice() {
            [d, b, r] if d.len() == 4 => (u16::from_str_radix(d, 16).ok()?, *b, *r),
            [b, r] => (0, *b, *r),
            _ => return None,
        };
        let (dev, func) = rest.split_once('.')?;
        if bus.len() != 2 || dev.len() != 2 || func.len() != 1 {
            return None;
        }
        let bus = u8::from_str_radix(bus, 16).ok()?;
        let device = u8::from_str_radix(dev, 16).ok()?;
        let function = u8::from_str_radix(func, 16).ok()?;
        if device > 31 || function > 7 {
            return None;
        }
        Some(PciAddress::new(domain, bus, device, function))
    }

    /// The 16-bit routing id (bus, devfn).
    pub fn routing_id(self) -> u16 {
        (u16::from(self.bus) << 8) | (u16::from(self.device) << 3) | u16::from(self.function)
    }

    pub fn from_routing_id(domain: u16, rid: u16) -> PciAddress {
        PciAddress::new(
            domain,
            (rid >> 8) as u8,
            ((rid >> 3) & 0x1f) as u8,
            (rid & 7) as u8,
        )
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

/// Parses `10de:1eb8` (any case) into (vendor, device).
pub fn parse_hex_id(s: &str) -> Option<(u16, u16)> {
    let (v, d) = s.trim().split_once(':')?;
    Some((parse_hex16(v)?, parse_hex16(d)?))
}

/// One to four hex digits, optionally `0x`-prefixed.
pub fn parse_hex16(s: &str) -> Option<u16> {
    let s = s.trim();
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u16::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_print_canonically() {
        let a = PciAddress::parse("0000:65:1F.7").unwrap();
        assert_eq!(a.to_string(), "0000:65:1f.7");
        assert_eq!(
            PciAddress::parse("05:00.0").unwrap().to_string(),
            "0000:05:00.0"
        );
        for bad in [
            "",
            "0000:05:00",
            "0000:05:20.0",
            "0000:05:00.8",
            "zz:00.0",
            "00:05:00.0",
        ] {
            assert_eq!(PciAddress::parse(bad), None, "{bad}");
        }
        assert_eq!(PciAddress::from_routing_id(0, a.routing_id()), a);
    }

    #[test]
    fn hex_ids_parse_in_any_case() {
        assert_eq!(parse_hex_id("10DE:1eb8"), Some((0x10de, 0x1eb8)));
        assert_eq!(parse_hex_id("10de"), None);
        assert_eq!(parse_hex_id("10de:1eb8x"), None);
        assert_eq!(parse_hex_id("10de1:1eb8"), None);
    }
}
