//! The editor JSON Schema (`harness/schema/scenario.schema.json`) names exactly the fields the
//! tool accepts: for every object, its property list equals the serde struct's field list, and
//! it rejects unknown keys as the tool does.
//!
//! A struct's field list is taken from serde itself: deserialising a mapping with one unknown
//! key fails with "unknown field `...`, expected one of `a`, `b`, ...".

use hostdev_harness::SCENARIO_SCHEMA;
use hostdev_harness::scenario::{
    AgentCommand, Configure, Delete, Expect, ExpectedHostdev, Fault, Modprobe, Plug, RawNode,
    RawScenario, Restart, Unplug, VfioBind, Write,
};
use mocksys::spec::{RawHost, RawMdevType, RawPci, RawUsb};
use serde::de::DeserializeOwned;
use serde_json::Value;

const UNKNOWN: &str = "zz_not_a_field";

/// The fields serde accepts for `T`, sorted.
fn serde_fields<T: DeserializeOwned + std::fmt::Debug>() -> Vec<String> {
    let err = serde_saphyr::from_str::<T>(&format!("{UNKNOWN}: 1\n"))
        .expect_err("an unknown key is rejected")
        .to_string();
    let first = err
        .lines()
        .find(|l| l.contains("unknown field"))
        .unwrap_or_else(|| {
            panic!(
                "{}: not an unknown-field error: {err}",
                std::any::type_name::<T>()
            )
        });
    let expected = first
        .split_once("expected ")
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("no field list in {first:?}"));
    // serde says "expected one of `a`, `b`" (saphyr drops the backticks), "expected `a` or `b`"
    // or "expected `a`".
    let list = expected.trim_start_matches("one of ").replace('`', "");
    let mut fields: Vec<String> = list
        .split(", ")
        .flat_map(|p| p.split(" or "))
        .map(|f| f.trim().to_owned())
        .filter(|f| !f.is_empty())
        .collect();
    fields.sort();
    fields
}

fn schema() -> Value {
    serde_json::from_str(SCENARIO_SCHEMA).expect("schema is JSON")
}

/// Follows `#/...` JSON pointers in `$ref`.
fn resolve<'a>(root: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let target = root
                .pointer(r.trim_start_matches('#'))
                .unwrap_or_else(|| panic!("$ref {r} points nowhere"));
            resolve(root, target)
        }
        None => v,
    }
}

/// The object schema at a path of property names (`[]` steps into `items`; `kind` picks the
/// step whose only property is `kind`).
fn object<'a>(root: &'a Value, path: &[&str]) -> &'a Value {
    let mut at = root;
    for part in path {
        at = resolve(root, at);
        at = match *part {
            "[]" => &at["items"],
            step if step.starts_with("step:") => {
                let kind = &step[5..];
                let s = at["items"]["oneOf"]
                    .as_array()
                    .expect("steps are a oneOf")
                    .iter()
                    .find(|s| s["required"][0] == kind)
                    .unwrap_or_else(|| panic!("no step {kind}"));
                &s["properties"][kind]
            }
            name => &at["properties"][name],
        };
    }
    let at = resolve(root, at);
    assert!(at.is_object(), "nothing at {path:?}");
    at
}

fn schema_fields(root: &Value, path: &[&str]) -> Vec<String> {
    let o = object(root, path);
    assert_eq!(
        o["additionalProperties"],
        Value::Bool(false),
        "{path:?} must reject unknown keys, as the tool does"
    );
    let mut fields: Vec<String> = o["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("{path:?} has no properties"))
        .keys()
        .cloned()
        .collect();
    fields.sort();
    fields
}

macro_rules! same_fields {
    ($root:expr, $ty:ty, $path:expr) => {
        assert_eq!(
            schema_fields($root, &$path),
            serde_fields::<$ty>(),
            "schema at {:?} vs {}",
            $path,
            stringify!($ty)
        );
    };
}

#[test]
fn every_object_lists_exactly_the_fields_the_tool_accepts() {
    let root = schema();
    let r = &root;
    same_fields!(r, RawScenario, [] as [&str; 0]);
    same_fields!(r, RawNode, ["nodes", "[]"]);
    same_fields!(r, RawHost, ["nodes", "[]", "host"]);
    same_fields!(r, RawPci, ["nodes", "[]", "host", "pci", "[]"]);
    same_fields!(r, RawUsb, ["nodes", "[]", "host", "usb", "[]"]);
    same_fields!(
        r,
        RawMdevType,
        ["nodes", "[]", "host", "pci", "[]", "mdevTypes", "[]"]
    );
    same_fields!(r, RawPci, ["steps", "step:plug", "pci"]);
    same_fields!(r, RawUsb, ["steps", "step:plug", "usb"]);
    same_fields!(r, VfioBind, ["steps", "step:vfioBind"]);
    same_fields!(r, Write, ["steps", "step:write"]);
    same_fields!(r, Modprobe, ["steps", "step:modprobe"]);
    same_fields!(r, Plug, ["steps", "step:plug"]);
    same_fields!(r, Unplug, ["steps", "step:unplug"]);
    same_fields!(r, Configure, ["steps", "step:configure"]);
    same_fields!(r, Restart, ["steps", "step:restart"]);
    same_fields!(r, Fault, ["steps", "step:fault"]);
    same_fields!(r, Delete, ["steps", "step:delete"]);
    same_fields!(r, Expect, ["steps", "step:expect"]);
    same_fields!(
        r,
        ExpectedHostdev,
        ["steps", "step:expect", "hostdevs", "[]"]
    );
    let agent = object(r, &["agent"])["oneOf"]
        .as_array()
        .expect("agent is a oneOf")
        .iter()
        .find(|a| a["type"] == "object")
        .expect("agent has a command form")
        .clone();
    let mut fields: Vec<String> = agent["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    fields.sort();
    assert_eq!(fields, serde_fields::<AgentCommand>());
}

#[test]
fn required_fields_match_what_the_tool_requires() {
    // A field is required when a mapping without it fails with "missing field".
    fn required<T: DeserializeOwned + std::fmt::Debug>(_fields: &[String]) -> Vec<String> {
        // serde names the first missing field; give each named field a value of its kind and
        // ask again, until nothing is missing.
        let sample = |f: &str| match f {
            "bus" | "availableInstances" => "1",
            "address" => "\"0000:00:00.0\"",
            _ => "\"x\"",
        };
        let mut out: Vec<String> = Vec::new();
        loop {
            let yaml = format!(
                "{{{}}}",
                out.iter()
                    .map(|g| format!("{g}: {}", sample(g)))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let Err(e) = serde_saphyr::from_str::<T>(&yaml) else {
                break;
            };
            let text = e.to_string();
            let name = text
                .split("missing field `")
                .nth(1)
                .and_then(|r| r.split('`').next())
                .unwrap_or_else(|| panic!("{yaml}: {text}"));
            assert!(!out.iter().any(|o| o == name), "{name} asked twice");
            out.push(name.to_owned());
        }
        out.sort();
        out
    }
    let root = schema();
    for (path, fields, req) in [
        (
            vec!["nodes", "[]", "host", "pci", "[]"],
            serde_fields::<RawPci>(),
            required::<RawPci> as fn(&[String]) -> Vec<String>,
        ),
        (
            vec!["nodes", "[]", "host", "usb", "[]"],
            serde_fields::<RawUsb>(),
            required::<RawUsb>,
        ),
        (
            vec!["nodes", "[]", "host", "pci", "[]", "mdevTypes", "[]"],
            serde_fields::<RawMdevType>(),
            required::<RawMdevType>,
        ),
    ] {
        let o = object(&root, &path);
        let mut have: Vec<String> = o["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        have.sort();
        assert_eq!(have, req(&fields), "required of {path:?}");
    }
}
