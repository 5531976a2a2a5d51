//! Every file under `scenarios/` is one test case: `cargo nextest run` runs them in parallel
//! (one process each, so each has its own mounts and network namespace) and CI can shard them
//! with `--partition`.

use std::path::Path;

use hostdev_harness::scenario;
use hostdev_harness::sim::{RunOptions, run_scenario};
use libtest_mimic::{Arguments, Failed, Trial};

fn main() {
    let args = Arguments::from_args();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let files = match scenario::collect_files(std::slice::from_ref(&root)) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let trials = files
        .into_iter()
        .map(|file| {
            let name = file
                .strip_prefix(&root)
                .unwrap_or(&file)
                .with_extension("")
                .display()
                .to_string();
            Trial::test(name, move || run(&file))
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}

fn run(file: &Path) -> Result<(), Failed> {
    let sc = scenario::load(file).map_err(|e| Failed::from(e.to_string()))?;
    let seed = std::env::var("HOSTDEV_SEED")
        .ok()
        .and_then(|s| s.parse().ok());
    let outcome = run_scenario(
        &sc,
        RunOptions {
            seed,
            explain: false,
        },
    );
    match outcome.failure {
        None => Ok(()),
        Some(report) => Err(Failed::from(report)),
    }
}
