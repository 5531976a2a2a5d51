//! The output of `hostdev-agent discover`: what would be advertised per resource (ids, members,
//! health, NUMA) and, for every device that would not, why. Text for people, JSON for tools.

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::config::{AgentConfig, FieldError};
use crate::inventory::{DeviceKind, Inventory, Member, PluginDevice};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    #[default]
    Text,
    Json,
}

/// Renders the inventory in the chosen format (JSON pretty-printed, newline-terminated).
pub fn render(inv: &Inventory, cfg: &AgentConfig, format: OutputFormat) -> String {
    match format {
        OutputFormat::Text => render_text(inv, cfg),
        OutputFormat::Json => {
            let mut s = serde_json::to_string_pretty(&render_json(inv, cfg)).unwrap_or_default();
            s.push('\n');
            s
        }
    }
}

fn kind_name(kind: DeviceKind) -> &'static str {
    match kind {
        DeviceKind::Pci => "pci",
        DeviceKind::Mdev => "mdev",
        DeviceKind::Usb => "usb",
    }
}

fn member_text(m: &Member) -> String {
    match m {
        Member::Pci { address, .. } => address.clone(),
        Member::Mdev {
            uuid,
            parent,
            type_id,
            type_name,
            ..
        } => format!("{uuid} ({type_id} {type_name:?} on {parent})"),
        Member::Usb {
            path,
            bus,
            devnum,
            vendor,
            product,
            devname,
        } => {
            format!("{path} [{vendor:04x}:{product:04x}] bus {bus} device {devnum} ({devname})")
        }
    }
}

fn numa_text(d: &PluginDevice) -> String {
    if d.numa_nodes.is_empty() {
        "-".into()
    } else {
        d.numa_nodes
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

pub fn render_text(inv: &Inventory, cfg: &AgentConfig) -> String {
    let mut out = String::new();
    let origin = if cfg.origin.is_empty() {
        "no configuration"
    } else {
        cfg.origin.as_str()
    };
    let _ = writeln!(
        out,
        "Configuration: {origin} (--serve {})",
        cfg.serve.as_str()
    );
    if inv.resources.is_empty() {
        let _ = writeln!(
            out,
            "\nNo resource is served: the configuration permits none for this serve mode."
        );
    }
    for r in inv.resources.values() {
        let healthy = r.devices.iter().filter(|d| d.healthy).count();
        let _ = writeln!(
            out,
            "\n{} ({}): {} device(s), {} healthy",
            r.name,
            kind_name(r.kind),
            r.devices.len(),
            healthy
        );
        for d in &r.devices {
            let health = if d.healthy {
                "healthy"
            } else {
                "UNHEALTHY (no device node)"
            };
            let members: Vec<String> = d.members.iter().map(member_text).collect();
            let _ = writeln!(out, "  id {}  {health}  numa {}", d.id, numa_text(d));
            for m in members {
                let _ = writeln!(out, "      {m}");
            }
        }
        for n in &r.notes {
            let _ = writeln!(out, "  note: {n}");
        }
    }
    if !inv.skipped.is_empty() {
        let _ = writeln!(out, "\nNot advertised ({}):", inv.skipped.len());
        let width = inv
            .skipped
            .iter()
            .map(|s| s.device.len())
            .max()
            .unwrap_or(0);
        for s in &inv.skipped {
            let _ = writeln!(out, "  {:width$}  {}", s.device, s.reason);
        }
    }
    if !cfg.rejected.is_empty() {
        let _ = writeln!(
            out,
            "\nConfiguration entries not served ({}):",
            cfg.rejected.len()
        );
        for e in &cfg.rejected {
            let _ = writeln!(out, "  {e}");
        }
    }
    out
}

fn member_json(m: &Member) -> Value {
    match m {
        Member::Pci {
            address,
            iommu_group,
            numa_node,
        } => {
            json!({"kind": "pci", "address": address, "iommuGroup": iommu_group, "numaNode": numa_node})
        }
        Member::Mdev {
            uuid,
            parent,
            type_id,
            type_name,
            iommu_group,
        } => json!({
            "kind": "mdev", "uuid": uuid, "parent": parent, "typeId": type_id, "typeName": type_name,
            "iommuGroup": iommu_group,
        }),
        Member::Usb {
            path,
            bus,
            devnum,
            vendor,
            product,
            devname,
        } => json!({
            "kind": "usb", "path": path, "bus": bus, "devnum": devnum,
            "vendor": format!("{vendor:04x}"), "product": format!("{product:04x}"), "devname": devname,
        }),
    }
}

fn field_error_json(e: &FieldError) -> Value {
    json!({"field": e.field, "message": e.message, "line": e.line, "column": e.column})
}

pub fn render_json(inv: &Inventory, cfg: &AgentConfig) -> Value {
    let resources: Vec<Value> = inv
        .resources
        .values()
        .map(|r| {
            json!({
                "name": r.name,
                "kind": kind_name(r.kind),
                "devices": r.devices.iter().map(|d| json!({
                    "id": d.id,
                    "healthy": d.healthy,
                    "numaNodes": d.numa_nodes,
                    "members": d.members.iter().map(member_json).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "notes": r.notes,
            })
        })
        .collect();
    json!({
        "configuration": cfg.origin,
        "serve": cfg.serve.as_str(),
        "resources": resources,
        "skipped": inv.skipped.iter().map(|s| json!({"device": s.device, "reason": s.reason})).collect::<Vec<_>>(),
        "rejectedEntries": cfg.rejected.iter().map(field_error_json).collect::<Vec<_>>(),
    })
}
