//! Every validation problem names its field path and the file position. Only what KubeVirt's
//! CRD rejects (required fields, wrong types) fails the file; the rest is a warning
//! (`AgentConfig::rejected`) and the entry matches nothing.

use hostdev_agent::config::{ConfigError, FieldError, parse};

/// The warnings of a file that parses (KubeVirt accepts it).
fn warnings(text: &str) -> Vec<FieldError> {
    match parse(text, "cr.yaml") {
        Ok(cfg) => cfg.rejected,
        Err(e) => panic!("KubeVirt accepts this CR, so must we: {e}"),
    }
}

fn one_warning(text: &str) -> FieldError {
    let w = warnings(text);
    assert_eq!(w.len(), 1, "{w:?}");
    w.into_iter().next().unwrap_or_else(|| unreachable!())
}

fn problems(text: &str) -> Vec<FieldError> {
    match parse(text, "cr.yaml") {
        Err(ConfigError::Invalid { origin, problems }) => {
            assert_eq!(origin, "cr.yaml");
            problems
        }
        other => panic!("expected validation problems, got {other:?}"),
    }
}

fn one(text: &str) -> FieldError {
    let p = problems(text);
    assert_eq!(p.len(), 1, "{p:?}");
    p.into_iter().next().unwrap_or_else(|| unreachable!())
}

#[test]
fn bad_usb_vendor_names_the_field_and_position() {
    let e = one_warning(
        "permittedHostDevices:
  usb:
  - resourceName: kubevirt.io/storage
    selectors: [{vendor: '46f4', product: '0001'}]
  - resourceName: kubevirt.io/keyboard
    selectors:
    - vendor: xyz
      product: '0001'
",
    );
    assert_eq!(e.field, "permittedHostDevices.usb[1].selectors[0].vendor");
    assert_eq!(
        e.message,
        "\"xyz\" is not a 4-digit hex id (e.g. \"046d\"); it matches no device, entry not served"
    );
    assert_eq!((e.line, e.column), (Some(7), Some(15)));
    let cfg = parse(
        "permittedHostDevices:\n  usb:\n  - resourceName: a.b/c\n    selectors: [{vendor: '12345', product: '0001'}]\n",
        "cr.yaml",
    )
    .unwrap();
    assert!(
        cfg.resources.is_empty(),
        "the entry matches nothing: {cfg:?}"
    );
    assert_eq!(
        cfg.rejected[0].to_string(),
        "4:26: permittedHostDevices.usb[0].selectors[0].vendor: \"12345\" is not a 4-digit hex id (e.g. \"046d\"); it matches no device, entry not served"
    );
}

#[test]
fn bad_pci_vendor_selector_names_the_field() {
    let e = one_warning(
        "spec:
  configuration:
    permittedHostDevices:
      pciHostDevices:
      - pciVendorSelector: 10de-1eb8
        resourceName: nvidia.com/T4
",
    );
    assert_eq!(
        e.field,
        "permittedHostDevices.pciHostDevices[0].pciVendorSelector"
    );
    assert!(e.message.contains("10de-1eb8"), "{e}");
    assert_eq!((e.line, e.column), (Some(5), Some(28)));
}

#[test]
fn bad_pins_name_their_fields() {
    let p = problems(
        "permittedHostDevices:
  pciHostDevices:
  - pciVendorSelector: 10de:1eb8
    resourceName: nvidia.com/T4
    pciAddresses: ['0000:65:00.0', 'gpu0']
  mediatedDevices:
  - mdevNameSelector: GRID T4-1Q
    resourceName: nvidia.com/q
    parentAddresses: ['65:00.9']
  usb:
  - resourceName: a.b/c
    selectors: [{vendor: '46f4', product: '0001', port: 'usb1'}]
",
    );
    let fields: Vec<&str> = p.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "permittedHostDevices.pciHostDevices[0].pciAddresses[1]",
            "permittedHostDevices.mediatedDevices[0].parentAddresses[0]",
            "permittedHostDevices.usb[0].selectors[0].port",
        ]
    );
    assert!(p.iter().all(|e| e.line.is_some()), "{p:?}");
}

#[test]
fn empty_selectors_are_warnings() {
    let p = warnings(
        "permittedHostDevices:
  mediatedDevices:
  - mdevNameSelector: '  '
    resourceName: nvidia.com/q
  usb:
  - resourceName: a.b/c
    selectors: []
mediatedDevicesConfiguration:
  mediatedDeviceTypes: [nvidia-222, '']
",
    );
    let fields: Vec<&str> = p.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "permittedHostDevices.mediatedDevices[0].mdevNameSelector",
            "permittedHostDevices.usb[0].selectors",
            "mediatedDevicesConfiguration.mediatedDeviceTypes[1]",
        ]
    );
    assert!(p[1].message.contains("matches no device"), "{p:?}");
}

#[test]
fn one_name_on_two_kinds_is_a_warning_naming_both_entries() {
    let e = one_warning(
        "permittedHostDevices:
  pciHostDevices:
  - pciVendorSelector: 10de:1eb8
    resourceName: nvidia.com/T4
  mediatedDevices:
  - mdevNameSelector: GRID T4-1Q
    resourceName: nvidia.com/T4
",
    );
    assert_eq!(
        e.field,
        "permittedHostDevices.mediatedDevices[0].resourceName"
    );
    assert!(
        e.message.contains("permittedHostDevices.pciHostDevices[0]"),
        "{e}"
    );
    assert!(e.message.contains("different kind"), "{e}");
}

#[test]
fn one_name_with_different_external_flags_is_a_warning() {
    let e = one_warning(
        "permittedHostDevices:
  pciHostDevices:
  - pciVendorSelector: 10de:1eb8
    resourceName: nvidia.com/T4
  - pciVendorSelector: 10de:1eb9
    resourceName: nvidia.com/T4
    externalResourceProvider: true
",
    );
    assert_eq!(
        e.field,
        "permittedHostDevices.pciHostDevices[1].resourceName"
    );
    assert!(e.message.contains("externalResourceProvider"), "{e}");
}

#[test]
fn all_warnings_are_reported_at_once() {
    let p = warnings(
        "permittedHostDevices:
  pciHostDevices:
  - pciVendorSelector: nope
    resourceName: a.b/c
  usb:
  - resourceName: a.b/d
    selectors: [{vendor: g, product: h}]
",
    );
    assert_eq!(p.len(), 3, "{p:?}");
}

#[test]
fn wrong_kind_is_an_error() {
    let e = one("apiVersion: v1\nkind: ConfigMap\ndata: {}\n");
    assert_eq!(e.field, "kind");
    assert_eq!((e.line, e.column), (Some(2), Some(7)));
}

#[test]
fn unknown_entry_fields_are_warnings_naming_them() {
    let w = warnings(
        "permittedHostDevices:
  pciHostDevices:
  - {pciVendorSelector: 10de:1eb8, resourceName: a.b/c, pciVendorSelecter: x}
  usb:
  - resourceName: a.b/d
    selectors: [{vendor: '46f4', product: '0001', serial: '42'}]
",
    );
    let fields: Vec<&str> = w.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "permittedHostDevices.pciHostDevices[0].pciVendorSelecter",
            "permittedHostDevices.usb[0].selectors[0].serial",
        ]
    );
    assert!(w[0].message.contains("unknown field"), "{w:?}");
    let cfg = parse(
        "permittedHostDevices:\n  pciHostDevices:\n  - {pciVendorSelector: 10de:1eb8, resourceName: a.b/c, x: 1}\n",
        "cr.yaml",
    )
    .unwrap();
    assert_eq!(cfg.resources.len(), 1, "pruned, as the API server does");
}

#[test]
fn misspelt_required_entry_field_fails_with_its_position() {
    let err = parse(
        "permittedHostDevices:\n  pciHostDevices:\n  - pciVendorSelecter: 10de:1eb8\n    resourceName: a.b/c\n",
        "cr.yaml",
    )
    .unwrap_err();
    let ConfigError::Syntax { line, message, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(*line >= 3, "{err}");
    assert!(message.contains("pciVendorSelector"), "{err}");
}

#[test]
fn missing_resource_name_fails_with_its_position() {
    let err = parse(
        "permittedHostDevices:\n  pciHostDevices:\n  - pciVendorSelector: 10de:1eb8\n",
        "cr.yaml",
    )
    .unwrap_err();
    let ConfigError::Syntax { line, message, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(*line >= 3, "{err}");
    assert!(message.contains("resourceName"), "{err}");
}

#[test]
fn wrong_type_fails_with_its_position() {
    let err = parse(
        "permittedHostDevices:\n  usb:\n  - resourceName: a.b/c\n    selectors: yes-please\n",
        "cr.yaml",
    )
    .unwrap_err();
    let ConfigError::Syntax { line, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*line, 4, "{err}");
}
