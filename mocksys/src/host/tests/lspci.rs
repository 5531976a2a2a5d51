//! pciutils parses what we render: the tree written to a directory, read by the real lspci.

use std::path::Path;
use std::process::Command;

use super::*;

fn write_tree(tree: &Tree, root: &Path) {
    let mut paths: Vec<(&str, &crate::tree::Node)> = tree.iter().collect();
    paths.sort_by_key(|(p, _)| *p);
    for (p, node) in paths {
        let at = root.join(p);
        match &node.kind {
            NodeKind::Dir => std::fs::create_dir_all(&at).unwrap(),
            NodeKind::File { content, .. } => std::fs::write(&at, content).unwrap(),
            NodeKind::Symlink { target } => std::os::unix::fs::symlink(target, &at).unwrap(),
        }
    }
}

#[test]
fn lspci_reads_identity_driver_and_capabilities() {
    if Command::new("lspci").arg("--version").output().is_err() {
        crate::testing::cannot_run("lspci is not installed (apt-get install -y pciutils)");
        return;
    }
    let h = example();
    let dir = tempfile::tempdir().unwrap();
    write_tree(&h.tree(), dir.path());
    let out = Command::new("lspci")
        .args(["-nnk", "-vv", "-A", "linux-sysfs", "-O"])
        .arg(format!("sysfs.path={}/bus/pci", dir.path().display()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if std::env::var_os("SHOW_LSPCI").is_some() {
        eprintln!("{text}");
    }
    assert!(
        text.contains("05:00.0 Non-Volatile memory controller [0108]"),
        "{text}"
    );
    assert!(text.contains("[8086:5845]"), "{text}");
    assert!(text.contains("[10de:1eb8] (rev a1)"), "{text}");
    assert!(text.contains("Kernel driver in use: nvme"), "{text}");
    assert!(text.contains("Kernel driver in use: vfio-pci"), "{text}");
    assert!(text.contains("Capabilities: [70] Express"), "{text}");
    assert!(text.contains("Capabilities: [50] MSI"), "{text}");
    assert!(
        text.contains("Subsystem: ") && text.contains("[10de:12a2]"),
        "{text}"
    );
}
