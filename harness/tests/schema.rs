//! The JSON Schema stays in step with the scenario types.

use hostdev_harness::SCENARIO_SCHEMA;

#[test]
fn schema_is_json_and_names_every_step_kind() {
    let schema: serde_json::Value =
        serde_json::from_str(SCENARIO_SCHEMA).expect("schema is valid JSON");
    let steps = schema["properties"]["steps"]["items"]["oneOf"]
        .as_array()
        .expect("steps are a oneOf");
    let mut kinds: Vec<String> = steps
        .iter()
        .flat_map(|s| s["required"].as_array().cloned().unwrap_or_default())
        .map(|k| k.as_str().unwrap_or_default().to_owned())
        .collect();
    kinds.sort();
    let mut expected = [
        "vfioBind",
        "write",
        "modprobe",
        "plug",
        "unplug",
        "configure",
        "restart",
        "fault",
        "apply",
        "delete",
        "expect",
    ]
    .map(String::from)
    .to_vec();
    expected.sort();
    assert_eq!(kinds, expected);
    // Every kind the schema lists parses as a step, and nothing else does.
    for kind in &expected {
        let yaml = format!("name: s\nnodes: [{{name: n}}]\nsteps:\n  - {kind}: {{}}\n");
        let err = hostdev_harness::scenario::parse(&yaml, "s.yaml")
            .err()
            .map(|e| e.message)
            .unwrap_or_default();
        assert!(!err.contains("unknown variant"), "{kind}: {err}");
    }
}
