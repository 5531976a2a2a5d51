//! The compatibility table is a measurement: this runs the scenario library over {hostdev-agent,
//! KubeVirt's own device plugins} x {the fake kubelet, the kubelet's own device manager} and checks
//! that every cell is expected (hostdev-agent passes everywhere; KubeVirt's plugins fail exactly
//! the scenarios marked `upstreamDefect:`; the two kubelets agree), and that docs/compatibility.md
//! says the same. Needs root and the upstream programs (`upstream/build.sh`); fails without them.

use std::path::Path;

use hostdev_harness::compat::{self, Cell};
use hostdev_harness::scenario;

#[test]
fn the_library_over_both_agents_and_both_kubelets_matches_docs_compatibility_md() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for program in ["kubevirt-device-plugins", "virt-chroot", "kubelet-dm"] {
        let path = hostdev_harness::sim::external::upstream_bin().join(program);
        assert!(
            path.is_file(),
            "{} is missing: run upstream/build.sh",
            path.display()
        );
    }
    let scenarios = root.join("scenarios");
    let files = compat::agent_neutral(
        &scenario::collect_files(std::slice::from_ref(&scenarios)).expect("scenario files"),
    );
    let table = compat::run(&files, compat::matrix(), 2);

    let mut problems = Vec::new();
    for row in &table.rows {
        for (column, cell) in table.columns.iter().zip(&row.cells) {
            if !cell.is_expected() {
                problems.push(format!("{} with {}: {cell:?}", row.name, column.title()));
            }
        }
        // The fake kubelet must agree with the upstream device manager for each agent (where
        // the verdict is the code's, not chance's: see `Cell::is_definite`).
        for pair in [(0, 1), (2, 3)] {
            let (a, b) = (&row.cells[pair.0], &row.cells[pair.1]);
            let same = !(a.is_definite() && b.is_definite()) || (a == b);
            if !same {
                problems.push(format!(
                    "{}: the kubelets disagree: {:?} vs {:?}",
                    row.name, row.cells[pair.0], row.cells[pair.1]
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "unexpected cells:\n{}",
        problems.join("\n")
    );

    // The committed table shows the same verdicts (reasons and times may differ run to run).
    let doc =
        std::fs::read_to_string(root.join("docs/compatibility.md")).expect("docs/compatibility.md");
    for row in &table.rows {
        let path = row
            .file
            .strip_prefix(&scenarios)
            .unwrap_or(&row.file)
            .display()
            .to_string();
        let line = doc
            .lines()
            .find(|l| l.starts_with(&format!("| `{path}` |")))
            .unwrap_or_else(|| {
                panic!("docs/compatibility.md has no row for {path}: regenerate it")
            });
        let verdicts: Vec<&str> = line.split(" | ").skip(1).collect();
        for (cell, doc_cell) in row.cells.iter().zip(verdicts) {
            if cell.is_definite() {
                assert_eq!(
                    *cell == Cell::Pass,
                    doc_cell.starts_with("pass"),
                    "docs/compatibility.md is out of date for {path}: run `hostdev compat --write docs/compatibility.md scenarios/`"
                );
            }
        }
    }
}
