//! Raw host structs -> validated specs, with an error naming the offending node.

use std::collections::BTreeMap;

use serde_saphyr::Spanned;

use super::address::{PciAddress, parse_hex_id, parse_hex16};
use super::{
    HostSpec, MdevTypeSpec, PciSpec, RawHost, RawPci, RawUsb, SpecError, UsbSpec, UsbSpeed,
};
use crate::kernel::catalog::{driver_of, module_of};
use crate::presets::{PCI_PRESETS, USB_PRESETS, pci_preset, usb_preset};

/// The address the xHCI controller takes when a host has USB devices.
pub const XHCI_ADDRESS: PciAddress = PciAddress::new(0, 0, 0x14, 0);

fn invalid<T>(file: &str, at: &Spanned<T>, field: &str, message: String) -> SpecError {
    SpecError::Invalid {
        file: file.to_owned(),
        line: at.referenced.line(),
        column: at.referenced.column(),
        field: field.to_owned(),
        message,
    }
}

pub(super) fn host(raw: &RawHost, file: &str) -> Result<HostSpec, SpecError> {
    let given_modules: Option<Vec<String>> = raw.modules.as_ref().map(|ms| {
        let mut out: Vec<String> = Vec::new();
        for m in ms {
            let m = module_of(&m.value);
            if !out.contains(&m) {
                out.push(m);
            }
        }
        out
    });

    let mut pci = Vec::with_capacity(raw.pci.len());
    let mut seen: BTreeMap<PciAddress, usize> = BTreeMap::new();
    for (i, item) in raw.pci.iter().enumerate() {
        let field = format!("pci[{i}]");
        let spec = self::pci(&item.value, file, &field, given_modules.as_deref())?;
        if let Some(first) = seen.insert(spec.address, i) {
            return Err(invalid(
                file,
                &item.value.address,
                &format!("{field}.address"),
                format!("duplicate PCI address {} (also pci[{first}])", spec.address),
            ));
        }
        if !raw.usb.is_empty() && spec.address == XHCI_ADDRESS {
            return Err(invalid(
                file,
                &item.value.address,
                &format!("{field}.address"),
                format!("{XHCI_ADDRESS} is the xHCI controller of this host's USB devices"),
            ));
        }
        pci.push(spec);
    }
    let iommu = raw.iommu.unwrap_or(true);
    for (i, (spec, item)) in pci.iter().zip(&raw.pci).enumerate() {
        // vfio-pci's probe would refuse these at boot; say so where the driver is named.
        if let (Some("vfio-pci"), Some(at)) = (spec.driver.as_deref(), &item.value.driver) {
            let why = if !iommu {
                Some("vfio-pci cannot bind without an IOMMU (the host has `iommu: false`)")
            } else if spec.bridge {
                Some("vfio-pci does not bind bridges")
            } else {
                None
            };
            if let Some(why) = why {
                return Err(invalid(
                    file,
                    at,
                    &format!("pci[{i}].driver"),
                    why.to_owned(),
                ));
            }
        }
        if let (Some(parent), Some(at)) = (spec.parent, &item.value.parent) {
            let bridge = pci.iter().find(|p| p.address == parent);
            if !bridge.is_some_and(|b| b.bridge) {
                return Err(invalid(
                    file,
                    at,
                    &format!("pci[{i}].parent"),
                    format!("{parent} is not a bridge of this host"),
                ));
            }
        }
    }

    let mut usb: Vec<UsbSpec> = Vec::with_capacity(raw.usb.len());
    for (i, item) in raw.usb.iter().enumerate() {
        let field = format!("usb[{i}]");
        let spec = self::usb(&item.value, file, &field)?;
        if usb.iter().any(|u| u.name() == spec.name()) {
            return Err(invalid(
                file,
                &item.value.port,
                &format!("{field}.port"),
                format!("duplicate USB port {}", spec.name()),
            ));
        }
        if let (Some(n), Some(at)) = (spec.devnum, &item.value.devnum)
            && usb.iter().any(|u| u.bus == spec.bus && u.devnum == Some(n))
        {
            return Err(invalid(
                file,
                at,
                &format!("{field}.devnum"),
                format!("devnum {n} is taken on bus {}", spec.bus),
            ));
        }
        usb.push(spec);
    }
    for (i, (spec, item)) in usb.iter().zip(&raw.usb).enumerate() {
        if let Some((hub, _)) = spec.port.rsplit_once('.') {
            let hub = format!("{}-{hub}", spec.bus);
            if !usb.iter().any(|u| u.name() == hub) {
                return Err(invalid(
                    file,
                    &item.value.port,
                    &format!("usb[{i}].port"),
                    format!(
                        "port {} sits behind hub {hub}, which is not listed",
                        spec.name()
                    ),
                ));
            }
        }
    }

    let modules = match given_modules {
        Some(m) => m,
        None => {
            let mut m: Vec<String> = Vec::new();
            for d in pci.iter().filter_map(|p| p.driver.as_deref()) {
                let d = module_of(d);
                if !m.contains(&d) {
                    m.push(d);
                }
            }
            if !m.iter().any(|x| x == "vfio_pci") {
                m.push("vfio_pci".to_owned());
            }
            m
        }
    };
    Ok(HostSpec {
        iommu,
        modules,
        pci,
        usb,
    })
}

fn hex_in<T>(
    file: &str,
    at: &Spanned<String>,
    field: &str,
    digits: usize,
    what: &str,
    convert: impl FnOnce(u32) -> T,
) -> Result<T, SpecError> {
    let s = at.value.trim();
    let s = s.strip_prefix("0x").unwrap_or(s);
    if s.is_empty() || s.len() > digits || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid(
            file,
            at,
            field,
            format!("bad {what} `{}` (want up to {digits} hex digits)", at.value),
        ));
    }
    let v = u32::from_str_radix(s, 16).map_err(|e| invalid(file, at, field, e.to_string()))?;
    Ok(convert(v))
}

fn id_pair(file: &str, at: &Spanned<String>, field: &str) -> Result<(u16, u16), SpecError> {
    parse_hex_id(&at.value).ok_or_else(|| {
        invalid(
            file,
            at,
            field,
            format!(
                "bad id `{}` (want vendor:device in hex, e.g. 10de:1eb8)",
                at.value
            ),
        )
    })
}

pub(super) fn pci(
    raw: &RawPci,
    file: &str,
    field: &str,
    modules: Option<&[String]>,
) -> Result<PciSpec, SpecError> {
    let address = PciAddress::parse(&raw.address.value).ok_or_else(|| {
        invalid(
            file,
            &raw.address,
            &format!("{field}.address"),
            format!(
                "bad PCI address `{}` (want DDDD:BB:DD.F, e.g. 0000:05:00.0)",
                raw.address.value
            ),
        )
    })?;
    let preset = match &raw.preset {
        Some(p) => Some(pci_preset(&p.value).ok_or_else(|| {
            let known: Vec<_> = PCI_PRESETS.iter().map(|p| p.name).collect();
            invalid(
                file,
                p,
                &format!("{field}.preset"),
                format!("unknown preset `{}` (known: {})", p.value, known.join(", ")),
            )
        })?),
        None => None,
    };
    let (vendor, device) = match (&raw.id, preset) {
        (Some(id), _) => id_pair(file, id, &format!("{field}.id"))?,
        (None, Some(p)) => (p.vendor, p.device),
        (None, None) => {
            return Err(invalid(
                file,
                &raw.address,
                &format!("{field}.id"),
                "missing: give `id` or a `preset`".to_owned(),
            ));
        }
    };
    let class = match (&raw.class, preset) {
        (Some(c), _) => {
            if c.value.trim().len() != 6 {
                return Err(invalid(
                    file,
                    c,
                    &format!("{field}.class"),
                    format!("bad class `{}` (want 6 hex digits, e.g. 010802)", c.value),
                ));
            }
            hex_in(file, c, &format!("{field}.class"), 6, "class", |v| v)?
        }
        (None, Some(p)) => p.class,
        (None, None) => {
            return Err(invalid(
                file,
                &raw.address,
                &format!("{field}.class"),
                "missing: give `class` or a `preset`".to_owned(),
            ));
        }
    };
    let (subsystem_vendor, subsystem_device) = match (&raw.subsystem, preset) {
        (Some(s), _) => id_pair(file, s, &format!("{field}.subsystem"))?,
        (None, Some(p)) => p.subsystem,
        (None, None) => (vendor, 0),
    };
    let revision = match (&raw.revision, preset) {
        (Some(r), _) => hex_in(file, r, &format!("{field}.revision"), 2, "revision", |v| {
            v as u8
        })?,
        (None, Some(p)) => p.revision,
        (None, None) => 0,
    };
    let loaded = |d: &str| modules.is_none_or(|ms| ms.iter().any(|m| *m == module_of(d)));
    let driver = match (&raw.driver, preset) {
        (Some(d), _) if d.value == "none" || d.value.is_empty() => None,
        (Some(d), _) => {
            if !loaded(&d.value) {
                return Err(invalid(
                    file,
                    d,
                    &format!("{field}.driver"),
                    format!(
                        "driver `{}` is not loaded (module `{}` is not in `modules`)",
                        d.value,
                        module_of(&d.value)
                    ),
                ));
            }
            Some(driver_of(&d.value))
        }
        // A preset's vendor driver binds only where the host loads it, as on a real host.
        (None, Some(p)) => p.driver.filter(|d| loaded(d)).map(driver_of),
        (None, None) => None,
    };
    let mdev_types = match (&raw.mdev_types, preset) {
        (Some(types), _) => {
            let mut out = Vec::with_capacity(types.len());
            for (j, t) in types.iter().enumerate() {
                let t = &t.value;
                if !t.id.value.contains('-') || t.id.value.starts_with('-') {
                    return Err(invalid(
                        file,
                        &t.id,
                        &format!("{field}.mdevTypes[{j}].id"),
                        format!(
                            "bad type id `{}` (want <driver>-<name>, e.g. nvidia-230)",
                            t.id.value
                        ),
                    ));
                }
                out.push(MdevTypeSpec {
                    id: t.id.value.clone(),
                    name: t.name.clone(),
                    max_instances: t.available_instances,
                    description: t.description.clone(),
                    device_api: t
                        .device_api
                        .clone()
                        .unwrap_or_else(|| "vfio-pci".to_owned()),
                });
            }
            out
        }
        (None, Some(p)) => p.mdev_type_specs(),
        (None, None) => Vec::new(),
    };
    let vf_device = match (&raw.vf_device, preset) {
        (Some(v), _) => Some(hex_in(
            file,
            v,
            &format!("{field}.vfDevice"),
            4,
            "device id",
            |v| v as u16,
        )?),
        (None, Some(p)) => p.vf_device,
        (None, None) => None,
    };
    let parent = match &raw.parent {
        Some(p) => Some(PciAddress::parse(&p.value).ok_or_else(|| {
            invalid(
                file,
                p,
                &format!("{field}.parent"),
                format!("bad PCI address `{}`", p.value),
            )
        })?),
        None => None,
    };
    Ok(PciSpec {
        address,
        vendor,
        device,
        class,
        subsystem_vendor,
        subsystem_device,
        revision,
        driver,
        iommu_group: raw.iommu_group.as_ref().map(|g| g.value),
        numa_node: raw.numa_node.unwrap_or(-1),
        irq: raw.irq,
        mdev_types,
        total_vfs: raw.total_vfs.unwrap_or(preset.map_or(0, |p| p.total_vfs)),
        vf_device,
        parent,
        bridge: raw.bridge.unwrap_or(class >> 8 == 0x0604),
    })
}

pub(super) fn usb(raw: &RawUsb, file: &str, field: &str) -> Result<UsbSpec, SpecError> {
    if raw.bus.value == 0 || raw.bus.value > 127 {
        return Err(invalid(
            file,
            &raw.bus,
            &format!("{field}.bus"),
            format!("bad bus {} (want 1-127)", raw.bus.value),
        ));
    }
    let port = raw.port.value.trim().to_owned();
    let port_ok = !port.is_empty()
        && port.split('.').count() <= 5
        && port
            .split('.')
            .all(|p| p.parse::<u8>().is_ok_and(|n| (1..=31).contains(&n)) && !p.starts_with('0'));
    if !port_ok {
        return Err(invalid(
            file,
            &raw.port,
            &format!("{field}.port"),
            format!(
                "bad port path `{}` (want 1-31 per level, dot-separated, e.g. 1.4)",
                raw.port.value
            ),
        ));
    }
    let preset = match &raw.preset {
        Some(p) => Some(usb_preset(&p.value).ok_or_else(|| {
            let known: Vec<_> = USB_PRESETS.iter().map(|p| p.name).collect();
            invalid(
                file,
                p,
                &format!("{field}.preset"),
                format!("unknown preset `{}` (known: {})", p.value, known.join(", ")),
            )
        })?),
        None => None,
    };
    let (vendor, product_id) = match (&raw.id, preset) {
        (Some(id), _) => parse_hex_id(&id.value).ok_or_else(|| {
            invalid(
                file,
                id,
                &format!("{field}.id"),
                format!(
                    "bad USB id `{}` (want vendor:product in hex, e.g. 46f4:0001)",
                    id.value
                ),
            )
        })?,
        (None, Some(p)) => (p.vendor, p.product_id),
        (None, None) => {
            return Err(invalid(
                file,
                &raw.port,
                &format!("{field}.id"),
                "missing: give `id` or a `preset`".to_owned(),
            ));
        }
    };
    let speed = match (&raw.speed, preset) {
        (Some(s), _) => UsbSpeed::parse(&s.value).ok_or_else(|| {
            invalid(
                file,
                s,
                &format!("{field}.speed"),
                format!(
                    "bad speed `{}` (want 1.5, 12, 480, 5000, 10000 or 20000)",
                    s.value
                ),
            )
        })?,
        (None, Some(p)) => p.speed,
        (None, None) => UsbSpeed::High,
    };
    let byte = |v: &Option<Spanned<String>>, name: &str, default: u8| -> Result<u8, SpecError> {
        match v {
            Some(s) => hex_in(file, s, &format!("{field}.{name}"), 2, name, |v| v as u8),
            None => Ok(default),
        }
    };
    let bcd_device = match (&raw.bcd_device, preset) {
        (Some(b), _) => parse_hex16(&b.value).ok_or_else(|| {
            invalid(
                file,
                b,
                &format!("{field}.bcdDevice"),
                format!("bad bcdDevice `{}` (want 4 hex digits)", b.value),
            )
        })?,
        (None, Some(p)) => p.bcd_device,
        (None, None) => 0,
    };
    let pick = |explicit: &Option<String>, from_preset: Option<&str>| {
        explicit.clone().or_else(|| from_preset.map(str::to_owned))
    };
    if let Some(d) = &raw.devnum
        && d.value < 2
    {
        return Err(invalid(
            file,
            d,
            &format!("{field}.devnum"),
            "devnum 1 is the root hub's; want 2-127".to_owned(),
        ));
    }
    Ok(UsbSpec {
        bus: raw.bus.value,
        port,
        vendor,
        product_id,
        bcd_device,
        manufacturer: pick(&raw.manufacturer, preset.and_then(|p| p.manufacturer)),
        product: pick(&raw.product, preset.and_then(|p| p.product)),
        serial: pick(&raw.serial, preset.and_then(|p| p.serial)),
        speed,
        class: byte(&raw.class, "class", preset.map_or(0, |p| p.class))?,
        interface_class: byte(
            &raw.interface_class,
            "interfaceClass",
            preset.map_or(0xff, |p| p.interface_class),
        )?,
        devnum: raw.devnum.as_ref().map(|d| d.value),
    })
}
