//! Raw CR -> [`AgentConfig`]: the checks, the merging of shared resource names.

use serde_saphyr::Spanned;

use super::raw;
use super::{
    AgentConfig, ConfigError, FieldError, MdevSelector, MdevTypesConfig, NodeMdevTypes,
    PciSelector, ResourceConfig, ResourceSource, UsbBundle, UsbSelector,
};

pub(super) fn parse(text: &str, origin: &str) -> Result<AgentConfig, ConfigError> {
    let looks_json = text.trim_start().starts_with('{');
    if looks_json {
        // JSON is YAML, but serde_json's own messages and positions are the ones a JSON author expects.
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
            return Err(ConfigError::Syntax {
                origin: origin.into(),
                line: e.line() as u64,
                column: e.column() as u64,
                message: strip_position(&e.to_string()),
            });
        }
    }
    let top: raw::Top = if text.trim().is_empty() {
        raw::Top::default()
    } else {
        serde_saphyr::from_str(text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((0, 0));
            ConfigError::Syntax {
                origin: origin.into(),
                line,
                column,
                message: first_line(&e.to_string()),
            }
        })?
    };
    let mut v = Validator::default();
    if !text.trim().is_empty()
        && let Ok(value) = serde_saphyr::from_str::<serde_json::Value>(text)
    {
        v.rejected.extend(unknown_fields(&value));
    }
    let configuration = v.configuration(top);
    v.build(configuration, origin)
}

/// The fields each host-device entry knows (KubeVirt's and hostdev's extensions).
const ENTRY_FIELDS: [(&str, &[&str]); 3] = [
    (
        "pciHostDevices",
        &[
            "pciVendorSelector",
            "resourceName",
            "externalResourceProvider",
            "pciAddresses",
        ],
    ),
    (
        "mediatedDevices",
        &[
            "mdevNameSelector",
            "resourceName",
            "externalResourceProvider",
            "parentAddresses",
        ],
    ),
    (
        "usb",
        &["resourceName", "selectors", "externalResourceProvider"],
    ),
];
const USB_SELECTOR_FIELDS: &[&str] = &["vendor", "product", "port"];

/// Every field of a host-device entry the CRD does not have: KubeVirt's API server prunes it,
/// so it is ignored here too, with a warning naming it (it is usually a typo).
fn unknown_fields(top: &serde_json::Value) -> Vec<FieldError> {
    let configuration = top
        .pointer("/spec/configuration")
        .or_else(|| top.get("configuration"))
        .unwrap_or(top);
    let mut out = Vec::new();
    let Some(permitted) = configuration.get("permittedHostDevices") else {
        return out;
    };
    let mut warn = |field: String, known: &[&str]| {
        out.push(FieldError {
            field,
            message: format!(
                "unknown field, ignored (KubeVirt prunes it); known fields: {}",
                known.join(", ")
            ),
            line: None,
            column: None,
        })
    };
    for (kind, known) in ENTRY_FIELDS {
        let Some(entries) = permitted.get(kind).and_then(|e| e.as_array()) else {
            continue;
        };
        for (i, entry) in entries.iter().enumerate() {
            let Some(map) = entry.as_object() else {
                continue;
            };
            for key in map.keys().filter(|k| !known.contains(&k.as_str())) {
                warn(format!("permittedHostDevices.{kind}[{i}].{key}"), known);
            }
            let selectors = (kind == "usb")
                .then(|| map.get("selectors").and_then(|s| s.as_array()))
                .flatten();
            for (j, sel) in selectors.into_iter().flatten().enumerate() {
                for key in (sel.as_object().into_iter().flat_map(|m| m.keys()))
                    .filter(|k| !USB_SELECTOR_FIELDS.contains(&k.as_str()))
                {
                    warn(
                        format!("permittedHostDevices.usb[{i}].selectors[{j}].{key}"),
                        USB_SELECTOR_FIELDS,
                    );
                }
            }
        }
    }
    out
}

/// serde-saphyr's first line, without the `error: line L column C: ` we print ourselves.
fn first_line(message: &str) -> String {
    let line = message.lines().next().unwrap_or("").trim();
    let line = line.strip_prefix("error: ").unwrap_or(line);
    if line.starts_with("line ")
        && let Some(i) = line.find(": ")
        && line[..i].contains(" column ")
    {
        return line[i + 2..].to_string();
    }
    line.to_string()
}

/// serde_json appends " at line L column C"; we print the position ourselves.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

#[derive(Default)]
struct Validator {
    problems: Vec<FieldError>,
    rejected: Vec<FieldError>,
}

fn position<T>(at: &Spanned<T>) -> (Option<u64>, Option<u64>) {
    let loc = at.referenced;
    if loc.line() > 0 {
        (Some(loc.line()), Some(loc.column()))
    } else {
        (None, None)
    }
}

fn field_error<T>(field: &str, at: &Spanned<T>, message: String) -> FieldError {
    let loc = at.referenced;
    let known = loc.line() > 0;
    FieldError {
        field: field.to_string(),
        message,
        line: known.then(|| loc.line()),
        column: known.then(|| loc.column()),
    }
}

fn parse_hex16(s: &str) -> Option<u16> {
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

/// `dddd:bb:dd.f` or `bb:dd.f` (domain 0), lower-cased.
pub fn normalize_pci_address(s: &str) -> Option<String> {
    let s = s.trim().to_ascii_lowercase();
    let full = if s.matches(':').count() == 1 {
        format!("0000:{s}")
    } else {
        s
    };
    let (domain, rest) = full.split_once(':')?;
    let (bus, rest) = rest.split_once(':')?;
    let (dev, func) = rest.split_once('.')?;
    let hex = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(domain, 4)
        && hex(bus, 2)
        && hex(dev, 2)
        && func.len() == 1
        && matches!(func.as_bytes()[0], b'0'..=b'7'))
    .then_some(full)
}

/// KubeVirt compares mdev type names with spaces replaced by `_`, trimmed.
pub fn normalize_mdev_name(s: &str) -> String {
    s.trim().replace(' ', "_")
}

/// A USB device's sysfs name: `<bus>-<port>[.<port>...]`, decimal.
pub fn is_usb_port(s: &str) -> bool {
    let Some((bus, ports)) = s.split_once('-') else {
        return false;
    };
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    digits(bus) && ports.split('.').all(digits)
}

/// Why the kubelet would refuse this resource name, if it would.
fn resource_name_problem(name: &str) -> Option<String> {
    let Some((domain, short)) = name.split_once('/') else {
        return Some(format!(
            "{name:?} has no domain prefix (`vendor.com/name`); the kubelet refuses it, entry not served"
        ));
    };
    let domain_ok = !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    let short_ok = !short.is_empty()
        && short.len() <= 63
        && short
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && short.as_bytes()[0].is_ascii_alphanumeric()
        && short.as_bytes()[short.len() - 1].is_ascii_alphanumeric();
    if !domain_ok || !short_ok {
        return Some(format!(
            "{name:?} is not a valid extended resource name (`domain/name`); entry not served"
        ));
    }
    if domain == "kubernetes.io" || domain.ends_with(".kubernetes.io") {
        return Some(format!(
            "{name:?} is in the reserved kubernetes.io domain; entry not served"
        ));
    }
    None
}

/// One entry before merging by resource name.
struct Entry {
    name: String,
    /// Where its resourceName is written (line, column).
    at: (Option<u64>, Option<u64>),
    external: bool,
    field: String,
    source: ResourceSource,
}

impl Validator {
    fn configuration(&mut self, top: raw::Top) -> raw::Configuration {
        if let Some(kind) = &top.kind
            && kind.value != "KubeVirt"
        {
            self.problems.push(field_error(
                "kind",
                kind,
                format!("{:?} is not KubeVirt", kind.value),
            ));
        }
        if let Some(c) = top.spec.and_then(|s| s.configuration) {
            return c;
        }
        if let Some(c) = top.configuration {
            return c;
        }
        raw::Configuration {
            permitted_host_devices: top.permitted_host_devices,
            mediated_devices_configuration: top.mediated_devices_configuration,
            developer_configuration: top.developer_configuration,
        }
    }

    fn resource_name(&mut self, field: &str, name: &Spanned<String>) -> bool {
        match resource_name_problem(&name.value) {
            Some(why) => {
                self.rejected
                    .push(field_error(&format!("{field}.resourceName"), name, why));
                false
            }
            None => true,
        }
    }

    fn pci_address(&mut self, field: &str, s: &Spanned<String>) -> Option<String> {
        let a = normalize_pci_address(&s.value);
        if a.is_none() {
            self.problems.push(field_error(
                field,
                s,
                format!("{:?} is not a PCI address (e.g. \"0000:65:00.0\")", s.value),
            ));
        }
        a
    }

    /// A malformed id is KubeVirt-valid (its CRD checks no format); it can never match, so the
    /// entry is not served and the field is named.
    fn hex16(&mut self, field: &str, s: &Spanned<String>) -> Option<u16> {
        let id = parse_hex16(&s.value);
        if id.is_none() {
            self.rejected.push(field_error(
                field,
                s,
                format!(
                    "{:?} is not a 4-digit hex id (e.g. \"046d\"); it matches no device, entry not served",
                    s.value
                ),
            ));
        }
        id
    }

    fn pci_entry(&mut self, i: usize, e: raw::PciHostDevice) -> Option<Entry> {
        let field = format!("permittedHostDevices.pciHostDevices[{i}]");
        let sel = &e.pci_vendor_selector;
        let ids = sel
            .value
            .split_once(':')
            .and_then(|(v, d)| Some((parse_hex16(v)?, parse_hex16(d)?)));
        if ids.is_none() {
            self.rejected.push(field_error(
                &format!("{field}.pciVendorSelector"),
                sel,
                format!(
                    "{:?} is not vendor:device in hex (e.g. \"10DE:1EB8\"); it matches no device, entry not served",
                    sel.value
                ),
            ));
        }
        let addresses: Vec<String> = (e.pci_addresses.iter().enumerate())
            .filter_map(|(j, a)| self.pci_address(&format!("{field}.pciAddresses[{j}]"), a))
            .collect();
        let (vendor, device) = ids.unwrap_or((0, 0));
        let named = self.resource_name(&field, &e.resource_name) && ids.is_some();
        let selector = PciSelector {
            vendor,
            device,
            addresses,
            order: i,
            field: field.clone(),
        };
        named.then(|| Entry {
            name: e.resource_name.value.clone(),
            at: position(&e.resource_name),
            external: e.external_resource_provider,
            field,
            source: ResourceSource::Pci(vec![selector]),
        })
    }

    fn mdev_entry(&mut self, i: usize, e: raw::MediatedHostDevice) -> Option<Entry> {
        let field = format!("permittedHostDevices.mediatedDevices[{i}]");
        let name = normalize_mdev_name(&e.mdev_name_selector.value);
        if name.is_empty() {
            self.rejected.push(field_error(
                &format!("{field}.mdevNameSelector"),
                &e.mdev_name_selector,
                "is empty; it matches no mdev type, entry not served".into(),
            ));
        }
        let parents: Vec<String> = (e.parent_addresses.iter().enumerate())
            .filter_map(|(j, a)| self.pci_address(&format!("{field}.parentAddresses[{j}]"), a))
            .collect();
        let named = self.resource_name(&field, &e.resource_name) && !name.is_empty();
        let selector = MdevSelector {
            name,
            parents,
            order: i,
            field: field.clone(),
        };
        named.then(|| Entry {
            name: e.resource_name.value.clone(),
            at: position(&e.resource_name),
            external: e.external_resource_provider,
            field,
            source: ResourceSource::Mdev(vec![selector]),
        })
    }

    fn usb_entry(&mut self, i: usize, e: raw::UsbHostDevice) -> Option<Entry> {
        let field = format!("permittedHostDevices.usb[{i}]");
        let mut matchable = !e.selectors.is_empty();
        if e.selectors.is_empty() {
            self.rejected.push(field_error(
                &format!("{field}.selectors"),
                &e.resource_name,
                "is empty; the entry matches no device, not served".into(),
            ));
        }
        let mut selectors = Vec::new();
        for (j, s) in e.selectors.iter().enumerate() {
            let sf = format!("{field}.selectors[{j}]");
            let vendor = self.hex16(&format!("{sf}.vendor"), &s.vendor);
            let product = self.hex16(&format!("{sf}.product"), &s.product);
            let (Some(vendor), Some(product)) = (vendor, product) else {
                matchable = false;
                continue;
            };
            let port = s.port.as_ref().map(|p| {
                if !is_usb_port(p.value.trim()) {
                    self.problems.push(field_error(
                        &format!("{sf}.port"),
                        p,
                        format!("{:?} is not a USB port path (e.g. \"1-1.4\")", p.value),
                    ));
                }
                p.value.trim().to_string()
            });
            selectors.push(UsbSelector {
                vendor,
                product,
                port,
                field: sf,
            });
        }
        let named = self.resource_name(&field, &e.resource_name) && matchable;
        let bundle = UsbBundle {
            selectors,
            order: i,
            field: field.clone(),
        };
        named.then(|| Entry {
            name: e.resource_name.value.clone(),
            at: position(&e.resource_name),
            external: e.external_resource_provider,
            field,
            source: ResourceSource::Usb(vec![bundle]),
        })
    }

    /// `mediatedDeviceTypes`, or the deprecated `mediatedDevicesTypes` only when the former is
    /// empty (KubeVirt reads one list, never both).
    fn type_list(
        &mut self,
        field: &str,
        deprecated: &[Spanned<String>],
        current: &[Spanned<String>],
    ) -> Vec<String> {
        let (list, name) = if current.is_empty() {
            (deprecated, "mediatedDevicesTypes")
        } else {
            (current, "mediatedDeviceTypes")
        };
        let mut out: Vec<String> = Vec::new();
        for (j, t) in list.iter().enumerate() {
            let v = t.value.trim();
            if v.is_empty() {
                self.rejected.push(field_error(
                    &format!("{field}{name}[{j}]"),
                    t,
                    "is empty; it names no mdev type".into(),
                ));
            } else if !out.iter().any(|o| o == v) {
                out.push(v.to_string());
            }
        }
        out
    }

    fn mdev_types(
        &mut self,
        m: Option<raw::MediatedDevicesConfiguration>,
        gates: &[String],
    ) -> MdevTypesConfig {
        let Some(m) = m else {
            return MdevTypesConfig::default();
        };
        let field = "mediatedDevicesConfiguration.";
        // `enabled`, when written, wins over the deprecated DisableMDEVConfiguration gate
        // (KubeVirt PR #16220).
        let gate_disables = gates.iter().any(|g| g == "DisableMDEVConfiguration");
        let mut cfg = MdevTypesConfig {
            managed: m.enabled.unwrap_or(!gate_disables),
            ..Default::default()
        };
        cfg.global = self.type_list(field, &m.mediated_devices_types, &m.mediated_device_types);
        for (i, n) in m.node_mediated_device_types.iter().enumerate() {
            let nf = format!("{field}nodeMediatedDeviceTypes[{i}].");
            let types = self.type_list(&nf, &n.mediated_devices_types, &n.mediated_device_types);
            cfg.per_node.push(NodeMdevTypes {
                node_selector: n.node_selector.clone(),
                types,
            });
        }
        cfg
    }

    /// KubeVirt keys its own (not external) PCI and mdev entries by selector in a map, so of two
    /// entries with the same selector the later one's resourceName wins; the earlier is dropped
    /// with a note naming both.
    fn later_selector_wins(&mut self, entries: Vec<Entry>) -> Vec<Entry> {
        fn key(e: &Entry) -> Option<String> {
            match &e.source {
                _ if e.external => None,
                ResourceSource::Pci(s) => Some(format!(
                    "pci {:04x}:{:04x} {:?}",
                    s[0].vendor, s[0].device, s[0].addresses
                )),
                ResourceSource::Mdev(s) => Some(format!("mdev {} {:?}", s[0].name, s[0].parents)),
                ResourceSource::Usb(_) => None,
            }
        }
        let keys: Vec<Option<String>> = entries.iter().map(key).collect();
        let fields: Vec<String> = entries.iter().map(|e| e.field.clone()).collect();
        let mut kept = Vec::new();
        for (i, e) in entries.into_iter().enumerate() {
            let later = (keys[i].as_ref()).and_then(|k| {
                (i + 1..keys.len())
                    .rev()
                    .find(|&j| keys[j].as_ref() == Some(k))
            });
            match later {
                Some(j) => self.rejected.push(FieldError {
                    field: format!("{}.resourceName", e.field),
                    message: format!(
                        "{:?} is overridden: a later entry with the same selector ({}) wins, as in KubeVirt",
                        e.name, fields[j]
                    ),
                    line: e.at.0,
                    column: e.at.1,
                }),
                None => kept.push(e),
            }
        }
        kept
    }

    /// Merges entries sharing a resource name, or reports why they cannot be merged.
    fn merge(&mut self, entries: Vec<Entry>) -> Vec<ResourceConfig> {
        let mut out: Vec<ResourceConfig> = Vec::new();
        for e in entries {
            let Some(r) = out.iter_mut().find(|r| r.name == e.name) else {
                out.push(ResourceConfig {
                    name: e.name,
                    external: e.external,
                    source: e.source,
                    entries: vec![e.field],
                });
                continue;
            };
            let first = r.entries[0].clone();
            let conflict = |why: &str| FieldError {
                field: format!("{}.resourceName", e.field),
                message: format!("{:?} is also the resourceName of {first}, {why}", e.name),
                line: e.at.0,
                column: e.at.1,
            };
            // KubeVirt would start two plugins under one name (the kubelet keeps the last to
            // register): the later entry is not served instead.
            if r.external != e.external {
                self.rejected.push(conflict(
                    "with a different externalResourceProvider; entry not served",
                ));
                continue;
            }
            match (&mut r.source, e.source) {
                (ResourceSource::Pci(a), ResourceSource::Pci(b)) => a.extend(b),
                (ResourceSource::Mdev(a), ResourceSource::Mdev(b)) => a.extend(b),
                (ResourceSource::Usb(a), ResourceSource::Usb(b)) => a.extend(b),
                _ => {
                    self.rejected.push(conflict("a different kind of device (one resource is one device plugin of one kind); entry not served"));
                    continue;
                }
            }
            r.entries.push(e.field);
        }
        out
    }

    fn build(mut self, c: raw::Configuration, origin: &str) -> Result<AgentConfig, ConfigError> {
        let gates = c
            .developer_configuration
            .map(|d| d.feature_gates)
            .unwrap_or_default();
        let p = c.permitted_host_devices.unwrap_or_default();
        let mut entries = Vec::new();
        for (i, e) in p.pci_host_devices.into_iter().enumerate() {
            entries.extend(self.pci_entry(i, e));
        }
        for (i, e) in p.mediated_devices.into_iter().enumerate() {
            entries.extend(self.mdev_entry(i, e));
        }
        for (i, e) in p.usb.into_iter().enumerate() {
            entries.extend(self.usb_entry(i, e));
        }
        let entries = self.later_selector_wins(entries);
        let resources = self.merge(entries);
        let mdev_types = self.mdev_types(c.mediated_devices_configuration, &gates);
        if !self.problems.is_empty() {
            (self.problems)
                .sort_by_key(|p| (p.line.unwrap_or(u64::MAX), p.column.unwrap_or(u64::MAX)));
            return Err(ConfigError::Invalid {
                origin: origin.into(),
                problems: self.problems,
            });
        }
        Ok(AgentConfig {
            origin: origin.into(),
            serve: Default::default(),
            resources,
            mdev_types,
            feature_gates: gates,
            rejected: self.rejected,
        })
    }
}
