//! Kernel uevents as the agent's wake-up: in a private network namespace, a mocksys FUSE host
//! multicasts uevents as the kernel does. Unbinding a driver changes sysfs only (no /dev node
//! appears or leaves), so only the uevent can wake the agent before its (long) resync.
//! Skipped visibly where /dev/fuse or a private network namespace is unavailable.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{DEADLINE, wait_watch};
use hostdev_agent::manager::{AgentOptions, CancellationToken, configured_source, start_agent};
use hostdev_agent::sysfs::HostPaths;
use mocksys::mount::{Mount, MountOptions};
use mocksys::spec::HostSpec;
use mocksys::{Host, SysBackend};

const HOST: &str = r#"
pci:
  - {address: "0000:05:00.0", preset: qemu-nvme, driver: vfio-pci, iommuGroup: 5, numaNode: 0}
  - {address: "0000:06:00.0", preset: qemu-nvme, driver: nvme, iommuGroup: 6, numaNode: 0}
"#;
const CONFIG: &str = "permittedHostDevices:
  pciHostDevices:
  - {pciVendorSelector: '8086:5845', resourceName: devices.kubevirt.io/nvme}
";

fn skip_reason(status: &hostdev_agent::manager::AgentStatus) -> Option<String> {
    status
        .skipped
        .iter()
        .find(|s| s.device.contains("0000:06:00.0"))
        .map(|s| s.reason.clone())
}

async fn scenario(dir: &Path) {
    let spec = HostSpec::from_yaml_str(HOST, "uevent-host.yaml").expect("host spec");
    let backend: Arc<dyn SysBackend> = Arc::new(Host::from_spec(&spec).expect("host"));
    let options = MountOptions {
        netlink: true,
        ..MountOptions::default()
    };
    let mount = Mount::new(backend, &dir.join("host"), options).expect("mount with netlink");
    std::fs::write(dir.join("kubevirt.yaml"), CONFIG).expect("config");

    let mut agent_options = AgentOptions::new(dir.join("kubevirt.yaml"), "node01");
    agent_options.host = HostPaths::new(mount.sys_path(), mount.dev_path());
    agent_options.plugin_dir = dir.join("plugins");
    // Far beyond the test's deadline: the resync cannot be what notices the change.
    agent_options.resync = Duration::from_secs(600);
    let shutdown = CancellationToken::new();
    let agent = start_agent(
        agent_options.clone(),
        Box::new(configured_source(&agent_options)),
        shutdown.clone(),
    )
    .await
    .expect("agent starts");
    let mut status = agent.status.clone();
    let before = wait_watch(&mut status, "the first pass", |s| s.passes >= 1).await;
    let reason = skip_reason(&before).expect("0000:06:00.0 is explained");
    assert!(reason.contains("nvme"), "{reason}");

    std::fs::write(
        mount.sys_path().join("bus/pci/drivers/nvme/unbind"),
        "0000:06:00.0\n",
    )
    .expect("unbind");
    let after = wait_watch(&mut status, "the unbind to be noticed", |s| {
        skip_reason(s).is_some_and(|r| !r.contains("bound to nvme"))
    })
    .await;
    assert!(after.passes > before.passes);
    shutdown.cancel();
    agent.wait().await;
    mount.unmount();
}

#[test]
fn an_unbind_seen_only_as_a_uevent_wakes_the_agent() {
    if !Path::new("/dev/fuse").exists() {
        mocksys::testing::cannot_run("/dev/fuse is missing on this machine");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().to_path_buf();
    // A socket belongs to the network namespace of the thread creating it: the whole scenario
    // (mocksys's sender and the agent's listener) runs on one thread in a private namespace.
    let outcome = std::thread::spawn(move || -> Result<(), String> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("unshare: {e}"))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime
            .block_on(async { tokio::time::timeout(DEADLINE * 2, scenario(&root)).await })
            .map_err(|_| "scenario timed out".to_string())
    })
    .join();
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) if e.starts_with("unshare") => {
            mocksys::testing::cannot_run(&format!("no private network namespace: {e}"))
        }
        Ok(Err(e)) => panic!("{e}"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
