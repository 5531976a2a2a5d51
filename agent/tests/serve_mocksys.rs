//! The real agent on a mocksys FUSE host (kernel layout and write semantics: binding a function
//! to vfio-pci creates `/dev/vfio/<group>`, writing a UUID to `create` makes an mdev) against the
//! fake kubelet. Skipped visibly where /dev/fuse is missing.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::DEADLINE;
use fake_kubelet::{AllocationRequest, Config, FakeKubelet, State};
use hostdev_agent::manager::{
    AgentOptions, CancellationToken, RunningAgent, configured_source, start_agent,
};
use hostdev_agent::sysfs::HostPaths;
use mocksys::mount::{Mount, MountOptions};
use mocksys::spec::HostSpec;
use mocksys::{Host, SysBackend};

const HOST: &str = r#"
pci:
  - {address: "0000:05:00.0", preset: qemu-nvme, driver: vfio-pci, iommuGroup: 5, numaNode: 0}
  - {address: "0000:06:00.0", preset: qemu-nvme, driver: nvme, iommuGroup: 6, numaNode: 1}
  - {address: "0000:65:00.0", preset: tesla-t4, driver: nvidia, iommuGroup: 40, numaNode: 1}
"#;

const NVME: &str = "devices.kubevirt.io/nvme";
const PERMITTED: &str = "permittedHostDevices:
  pciHostDevices:
  - {pciVendorSelector: '8086:5845', resourceName: devices.kubevirt.io/nvme}
  mediatedDevices:
  - {mdevNameSelector: GRID T4-2Q, resourceName: nvidia.com/GRID_T4-2Q}
  - {mdevNameSelector: GRID T4-4Q, resourceName: nvidia.com/GRID_T4-4Q}
";

/// The mounted host, the plugin directory and the config file; unmounted on drop.
struct Lab {
    mount: Option<Mount>,
    dir: tempfile::TempDir,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mount) = self.mount.take() {
            mount.unmount();
        }
    }
}

impl Lab {
    fn new() -> Option<Lab> {
        if !Path::new("/dev/fuse").exists() {
            mocksys::testing::cannot_run("/dev/fuse is missing on this machine");
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let spec = HostSpec::from_yaml_str(HOST, "serve-host.yaml").expect("host spec");
        let backend: Arc<dyn SysBackend> = Arc::new(Host::from_spec(&spec).expect("host"));
        let mount =
            Mount::new(backend, &dir.path().join("host"), MountOptions::default()).expect("mount");
        std::fs::create_dir_all(dir.path().join("plugins")).expect("plugin dir");
        std::fs::create_dir_all(dir.path().join("config")).expect("config dir");
        Some(Lab {
            mount: Some(mount),
            dir,
        })
    }

    fn mount(&self) -> &Mount {
        self.mount.as_ref().expect("mounted until drop")
    }

    fn sys(&self) -> std::path::PathBuf {
        self.mount().sys_path()
    }

    fn write_config(&self, text: &str) {
        let tmp = self.dir.path().join("config/.tmp");
        std::fs::write(&tmp, text).expect("config");
        std::fs::rename(&tmp, self.dir.path().join("config/kubevirt.yaml")).expect("config rename");
    }

    /// A sysfs write, as `echo value > path` does it.
    fn echo(&self, relative: &str, value: &str) {
        let path = self.sys().join(relative);
        std::fs::write(&path, format!("{value}\n"))
            .unwrap_or_else(|e| panic!("echo {value} > {}: {e}", path.display()));
    }

    async fn agent(&self, shutdown: &CancellationToken) -> RunningAgent {
        let mut options = AgentOptions::new(self.dir.path().join("config/kubevirt.yaml"), "node01");
        options.host = HostPaths::new(self.sys(), self.mount().dev_path());
        options.plugin_dir = self.dir.path().join("plugins");
        start_agent(
            options.clone(),
            Box::new(configured_source(&options)),
            shutdown.clone(),
        )
        .await
        .expect("the agent starts")
    }

    async fn kubelet(&self) -> FakeKubelet {
        FakeKubelet::start(Config::new(self.dir.path().join("plugins")))
            .await
            .expect("fake kubelet")
    }
}

async fn wait_count(kubelet: &FakeKubelet, resource: &str, healthy: usize) {
    let seen = kubelet
        .wait_for(
            |s: &State| {
                s.devices(resource)
                    .is_some_and(|d| d.len() == healthy && d.iter().all(|d| d.is_healthy()))
            },
            DEADLINE,
        )
        .await;
    if seen.is_err() {
        panic!(
            "kubelet never saw {healthy} healthy {resource}; it has {:?}\nlast kubelet log lines:\n{}",
            kubelet.devices(resource),
            kubelet.recent_log().join("\n")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_and_unbinding_vfio_pci_through_sysfs_is_followed() {
    let Some(lab) = Lab::new() else { return };
    lab.write_config(PERMITTED);
    let kubelet = lab.kubelet().await;
    let shutdown = CancellationToken::new();
    let agent = lab.agent(&shutdown).await;
    wait_count(&kubelet, NVME, 1).await;

    // What an operator does to hand 0000:06:00.0 to VMs; the kernel creates /dev/vfio/6.
    lab.echo("bus/pci/devices/0000:06:00.0/driver_override", "vfio-pci");
    lab.echo("bus/pci/drivers/nvme/unbind", "0000:06:00.0");
    lab.echo("bus/pci/drivers/vfio-pci/bind", "0000:06:00.0");
    wait_count(&kubelet, NVME, 2).await;
    let numa: Vec<(String, Vec<i64>)> = kubelet
        .devices(NVME)
        .expect("devices")
        .into_iter()
        .map(|d| (d.id, d.numa_nodes))
        .collect();
    assert_eq!(
        numa,
        vec![("5".to_string(), vec![0]), ("6".to_string(), vec![1])]
    );

    let allocation = kubelet
        .allocate(AllocationRequest::new("pod-nvme", "compute", NVME, 2))
        .await
        .expect("allocates both");
    let mut addresses: Vec<&str> =
        allocation.response.envs["PCI_RESOURCE_DEVICES_KUBEVIRT_IO_NVME"]
            .split(',')
            .collect();
    addresses.sort();
    assert_eq!(addresses, vec!["0000:05:00.0", "0000:06:00.0"]);
    kubelet.free_pod("pod-nvme");

    // Unbinding removes the group node: the device leaves the list.
    lab.echo("bus/pci/drivers/vfio-pci/unbind", "0000:06:00.0");
    wait_count(&kubelet, NVME, 1).await;

    shutdown.cancel();
    agent.wait().await;
    kubelet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_creates_mdevs_serves_them_and_follows_a_type_change() {
    let Some(lab) = Lab::new() else { return };
    lab.write_config(&format!(
        "{PERMITTED}mediatedDevicesConfiguration:\n  mediatedDeviceTypes: [nvidia-231]\n"
    ));
    let kubelet = lab.kubelet().await;
    let shutdown = CancellationToken::new();
    let agent = lab.agent(&shutdown).await;
    // GRID T4-2Q (nvidia-231): 8 instances on a T4, created by the agent through `create`.
    wait_count(&kubelet, "nvidia.com/GRID_T4-2Q", 8).await;
    let allocation = kubelet
        .allocate(AllocationRequest::new(
            "pod-vgpu",
            "compute",
            "nvidia.com/GRID_T4-2Q",
            1,
        ))
        .await
        .expect("allocates a vGPU");
    let uuid = &allocation.response.envs["MDEV_PCI_RESOURCE_NVIDIA_COM_GRID_T4-2Q"];
    assert!(
        lab.sys().join("bus/mdev/devices").join(uuid).exists(),
        "{uuid} is a real mdev"
    );
    kubelet.free_pod("pod-vgpu");

    // A new type: the 2Q mdevs are removed, 4Q ones created, both running plugins updated.
    lab.write_config(&format!(
        "{PERMITTED}mediatedDevicesConfiguration:\n  mediatedDeviceTypes: [nvidia-232]\n"
    ));
    wait_count(&kubelet, "nvidia.com/GRID_T4-4Q", 4).await;
    wait_count(&kubelet, "nvidia.com/GRID_T4-2Q", 0).await;

    // And back (KubeVirt #8425: a type removed and re-added was never created again).
    lab.write_config(&format!(
        "{PERMITTED}mediatedDevicesConfiguration:\n  mediatedDeviceTypes: [nvidia-231]\n"
    ));
    wait_count(&kubelet, "nvidia.com/GRID_T4-2Q", 8).await;
    wait_count(&kubelet, "nvidia.com/GRID_T4-4Q", 0).await;

    shutdown.cancel();
    agent.wait().await;
    kubelet.stop().await;
}
