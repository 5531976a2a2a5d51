//! Checks serde cannot express: references between parts of a scenario, and values with rules.

use std::collections::BTreeSet;

use serde_saphyr::Spanned;

use super::error::Span;
use super::expected::Expected;
use super::raw::*;

type Check = Result<(), (Span, String)>;

fn at<T>(s: &Spanned<T>) -> Span {
    s.referenced.into()
}

fn fail<T, R>(s: &Spanned<T>, msg: impl Into<String>) -> Result<R, (Span, String)> {
    Err((at(s), msg.into()))
}

/// A mocksys host error, re-anchored as ours (its spans are positions in this same file).
fn host_error(e: mocksys::spec::SpecError) -> (Span, String) {
    use mocksys::spec::SpecError;
    match e {
        SpecError::Invalid {
            line,
            column,
            field,
            message,
            ..
        } => (
            Span {
                line: line as u32,
                column: column as u32,
            },
            format!("{field}: {message}"),
        ),
        SpecError::Yaml {
            line,
            column,
            message,
            ..
        } => (
            Span {
                line: line as u32,
                column: column as u32,
            },
            message,
        ),
        other @ (SpecError::Io { .. } | SpecError::Build(_)) => {
            (Span { line: 1, column: 1 }, other.to_string())
        }
    }
}

/// Validates a parsed scenario; every problem found is returned with where it is (one per
/// step at most: a step's later checks assume its earlier ones held). Gives the validated host
/// of every node, in node order, when there are no problems.
pub fn check(sc: &RawScenario, file: &str) -> Result<Vec<mocksys::HostSpec>, Vec<(Span, String)>> {
    let mut problems = Vec::new();
    let mut note = |r: Check| {
        if let Err(p) = r {
            problems.push(p);
        }
    };
    if sc.name.value.trim().is_empty() {
        note(fail(&sc.name, "name is empty"));
    }
    if sc.nodes.is_empty() {
        note(fail(
            &sc.name,
            "the scenario has no nodes (add at least one under `nodes:`)",
        ));
    }
    let mut nodes = BTreeSet::new();
    let mut hosts = Vec::with_capacity(sc.nodes.len());
    for n in &sc.nodes {
        let name = &n.value.name;
        if name.value.is_empty() {
            note(fail(name, "node name is empty"));
        } else if !nodes.insert(name.value.as_str()) {
            note(fail(
                name,
                format!("node {:?} is defined twice", name.value),
            ));
        }
        match n.value.host.validate(file) {
            Ok(h) => hosts.push(h),
            Err(e) => {
                let (span, msg) = host_error(e);
                note(Err((span, format!("node {}: host.{msg}", name.value))));
            }
        }
    }
    let known = |node: &Spanned<String>| -> Check {
        if nodes.contains(node.value.as_str()) {
            Ok(())
        } else {
            let list: Vec<&str> = nodes.iter().copied().collect();
            let hint = super::kubevirt_schema::did_you_mean(&node.value, &list)
                .map(|n| format!("did you mean {n:?}? "))
                .unwrap_or_default();
            fail(
                node,
                format!(
                    "unknown node {:?} ({hint}nodes: {})",
                    node.value,
                    list.join(", ")
                ),
            )
        }
    };
    let mut applied: BTreeSet<String> = BTreeSet::new();
    for step in &sc.steps {
        note(check_step(step, file, &mut applied, &known));
    }
    if problems.is_empty() {
        Ok(hosts)
    } else {
        Err(problems)
    }
}

fn check_step(
    step: &Spanned<Step>,
    file: &str,
    applied: &mut BTreeSet<String>,
    known: &dyn Fn(&Spanned<String>) -> Check,
) -> Check {
    {
        match &step.value {
            Step::VfioBind(s) => {
                known(&s.node)?;
                pci_address(&s.device)?;
            }
            Step::Write(s) => {
                known(&s.node)?;
                sys_path(&s.path)?;
                if let Some(e) = &s.expect_error {
                    errno(e)?;
                }
            }
            Step::Modprobe(s) => known(&s.node)?,
            Step::Plug(s) => {
                known(&s.node)?;
                match (&s.pci, &s.usb) {
                    (Some(p), None) => p
                        .value
                        .validate(file, "plug.pci", None)
                        .map(drop)
                        .map_err(host_error)?,
                    (None, Some(u)) => u
                        .value
                        .validate(file, "plug.usb")
                        .map(drop)
                        .map_err(host_error)?,
                    _ => return fail(&s.node, "plug needs exactly one of `pci:` or `usb:`"),
                }
            }
            Step::Unplug(s) => {
                known(&s.node)?;
                match (&s.pci, &s.usb) {
                    (Some(p), None) => pci_address(p)?,
                    (None, Some(u)) => usb_port(u)?,
                    _ => return fail(&s.node, "unplug needs exactly one of `pci:` or `usb:`"),
                }
            }
            Step::Configure(_) => {}
            Step::Restart(s) => {
                known(&s.node)?;
                if let Some(sig) = &s.signal
                    && s.component != Component::Agent
                {
                    return fail(sig, "`signal:` applies to `component: agent` only");
                }
            }
            Step::Fault(s) => {
                known(&s.node)?;
                if !s.path.value.starts_with("/sys/") {
                    return fail(
                        &s.path,
                        format!("fault path {:?} must be under /sys/", s.path.value),
                    );
                }
                match &s.errno {
                    Some(e) => errno(e)?,
                    None if s.latency.is_none() => {
                        return fail(&s.path, "a fault needs `errno:`, `latency:` or both");
                    }
                    None => {}
                }
            }
            Step::Apply(m) => {
                if let Err(msg) = m.value.check() {
                    return fail(m, msg);
                }
                let name = &m.value.metadata.name;
                if !applied.insert(name.clone()) {
                    return fail(
                        m,
                        format!("VMI {name:?} is applied twice without a delete in between"),
                    );
                }
            }
            Step::Delete(d) => {
                if !applied.remove(&d.vmi.value) {
                    return fail(
                        &d.vmi,
                        format!("VMI {:?} is not applied by any earlier step", d.vmi.value),
                    );
                }
            }
            Step::Expect(e) => expect(step, e, applied, known)?,
        }
    }
    Ok(())
}

fn expect(
    step: &Spanned<Step>,
    e: &Expect,
    applied: &BTreeSet<String>,
    known: &dyn Fn(&Spanned<String>) -> Check,
) -> Check {
    let about_vmi =
        e.phase.is_some() || e.reason.is_some() || e.env.is_some() || e.hostdevs.is_some();
    let about_node = e.allocatable.is_some()
        || e.capacity.is_some()
        || e.allocated.is_some()
        || e.file.is_some()
        || e.config_error.is_some()
        || e.agent_exit.is_some()
        || e.agent_log.is_some();
    if let Some(node) = &e.node {
        let names: Vec<&String> = match &node.value {
            Expected::Literal(n) => vec![n],
            Expected::OneOf { one_of } => one_of.iter().collect(),
            Expected::Pattern { .. } => vec![],
        };
        for n in names {
            known(&Spanned::new(n.clone(), node.referenced, node.defined))?;
        }
        if about_node && !matches!(node.value, Expected::Literal(_)) {
            return fail(
                node,
                "node checks (allocatable, capacity, allocated, file, configError, agentLog, agentExit) \
                 need one node name, not oneOf/pattern",
            );
        }
    }
    if let Some(vmi) = &e.vmi
        && !applied.contains(&vmi.value)
    {
        return fail(
            vmi,
            format!(
                "VMI {:?} is not applied by any earlier step (or was deleted)",
                vmi.value
            ),
        );
    }
    if about_vmi && e.vmi.is_none() {
        return fail(step, "phase, reason, env and hostdevs need `vmi:`");
    }
    if about_node && e.node.is_none() {
        return fail(
            step,
            "allocatable, capacity, allocated, file, configError, agentLog and agentExit need `node:`",
        );
    }
    if !about_vmi && !about_node && e.vmi.is_none() {
        return fail(
            step,
            "expect names nothing to check (allocatable, capacity, allocated, file, or vmi with phase/env/hostdevs)",
        );
    }
    match (&e.file, e.exists) {
        (Some(f), Some(_)) => {
            if !(f.value.starts_with("/sys/") || f.value.starts_with("/dev/")) {
                return fail(
                    f,
                    format!("file {:?} must be under /sys/ or /dev/", f.value),
                );
            }
        }
        (Some(f), None) => return fail(f, "`file:` needs `exists: true` or `exists: false`"),
        (None, Some(_)) => return fail(step, "`exists:` needs `file:`"),
        (None, None) => {}
    }
    Ok(())
}

fn sys_path(p: &Spanned<String>) -> Check {
    if p.value.starts_with("/sys/") && !p.value.split('/').any(|c| c == "..") {
        Ok(())
    } else {
        fail(
            p,
            format!(
                "path {:?} must be an absolute path under /sys/ without `..`",
                p.value
            ),
        )
    }
}

fn errno(e: &Spanned<String>) -> Check {
    match mocksys::Errno::from_name(&e.value) {
        Some(_) => Ok(()),
        None => fail(
            e,
            format!(
                "{:?} is not an errno name (EBUSY, ENODEV, EINVAL, ...)",
                e.value
            ),
        ),
    }
}

/// `DDDD:BB:DD.F`, hex.
pub fn is_pci_address(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && s.char_indices()
            .all(|(i, c)| matches!(i, 4 | 7 | 10) || c.is_ascii_hexdigit())
        && (b'0'..=b'7').contains(&b[11])
}

fn pci_address(a: &Spanned<String>) -> Check {
    if is_pci_address(&a.value) {
        Ok(())
    } else {
        fail(
            a,
            format!(
                "{:?} is not a PCI address (DDDD:BB:DD.F, e.g. 0000:65:00.0)",
                a.value
            ),
        )
    }
}

fn usb_port(p: &Spanned<String>) -> Check {
    let ok = p.value.split_once('-').is_some_and(|(bus, ports)| {
        bus.parse::<u32>().is_ok_and(|b| b > 0)
            && !ports.is_empty()
            && ports.split('.').all(|x| x.parse::<u32>().is_ok())
    });
    if ok {
        Ok(())
    } else {
        fail(
            p,
            format!("{:?} is not a USB port path (e.g. 1-1 or 1-1.4)", p.value),
        )
    }
}
