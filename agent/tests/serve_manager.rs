//! The manager loop on its own, with a gated device source: bursts of wake-ups are coalesced
//! into one discovery, and a failing discovery keeps the plugins' devices.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use common::wait_watch;
use hostdev_agent::inventory::{DeviceKind, Inventory, Member, PluginDevice, Resource};
use hostdev_agent::manager::{CancellationToken, DeviceSource, Manager, SourceError};
use hostdev_agent::metrics::Metrics;
use hostdev_agent::plugin::{DevRoot, PinnedAddresses, PluginSettings};
use hostdev_agent::watch::WatchEvent;

const RESOURCE: &str = "example.com/nvme";

/// Discovery that waits for a permit per run, and fails when told to.
struct GatedSource {
    permits: Mutex<mpsc::Receiver<()>>,
    runs: Arc<AtomicUsize>,
    fail: Arc<Mutex<bool>>,
}

impl DeviceSource for GatedSource {
    fn reload_config(&mut self) -> Result<bool, SourceError> {
        Ok(false)
    }

    fn discover(&mut self) -> Result<Inventory, SourceError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let permits = self
            .permits
            .lock()
            .map_err(|_| SourceError::Discovery("poisoned".into()))?;
        permits
            .recv()
            .map_err(|_| SourceError::Discovery("the test is gone".into()))?;
        if *self
            .fail
            .lock()
            .map_err(|_| SourceError::Discovery("poisoned".into()))?
        {
            return Err(SourceError::Discovery("/sys/bus/pci/devices: EIO".into()));
        }
        let device = PluginDevice {
            id: "5".into(),
            healthy: true,
            numa_nodes: vec![0],
            members: vec![Member::Pci {
                address: "0000:05:00.0".into(),
                iommu_group: 5,
                numa_node: Some(0),
            }],
        };
        let resource = Resource {
            name: RESOURCE.into(),
            kind: DeviceKind::Pci,
            devices: vec![device],
            notes: vec![],
        };
        Ok(Inventory {
            resources: BTreeMap::from([(RESOURCE.to_string(), resource)]),
            skipped: vec![],
        })
    }

    fn pins(&self) -> BTreeMap<String, PinnedAddresses> {
        BTreeMap::new()
    }
}

#[tokio::test]
async fn a_burst_of_wake_ups_costs_one_discovery_and_failures_keep_devices() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (permit, permits) = mpsc::channel();
    let runs = Arc::new(AtomicUsize::new(0));
    let fail = Arc::new(Mutex::new(false));
    let source = GatedSource {
        permits: Mutex::new(permits),
        runs: runs.clone(),
        fail: fail.clone(),
    };
    let settings = PluginSettings {
        plugin_dir: dir.path().to_path_buf(),
        dev_root: DevRoot::new(dir.path().to_path_buf()),
        metrics: Metrics::new(),
    };
    let (events, events_rx) = tokio::sync::mpsc::unbounded_channel();
    let (manager, mut status) = Manager::new(
        Box::new(source),
        settings,
        events_rx,
        Duration::from_secs(600),
    );
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(manager.run(shutdown.clone()));

    // The first pass is held in discovery while a burst arrives.
    for _ in 0..100 {
        events
            .send(WatchEvent::DevRootChanged)
            .expect("manager listening");
        events.send(WatchEvent::Uevent).expect("manager listening");
    }
    permit.send(()).expect("permit");
    wait_watch(&mut status, "the first pass", |s| s.passes >= 1).await;
    permit.send(()).expect("permit");
    wait_watch(&mut status, "the coalesced pass", |s| s.passes >= 2).await;

    // One more wake-up, with discovery failing this time.
    *fail.lock().expect("flag") = true;
    events
        .send(WatchEvent::DevRootChanged)
        .expect("manager listening");
    permit.send(()).expect("permit");
    let failed = wait_watch(&mut status, "the failing pass", |s| s.passes >= 3).await;
    assert!(
        failed
            .last_discovery_error
            .as_deref()
            .is_some_and(|e| e.contains("EIO")),
        "{failed:?}"
    );
    assert_eq!(
        failed.resources[RESOURCE].devices.len(),
        1,
        "a failed discovery keeps the devices"
    );

    // Nothing is left queued: the manager stops without needing another permit. (Had the
    // burst queued passes, one would now be blocked in discovery and this would time out.)
    shutdown.cancel();
    tokio::time::timeout(common::DEADLINE, task)
        .await
        .expect("the manager stops at once: no discovery was pending")
        .expect("manager task");
    assert_eq!(
        runs.load(Ordering::SeqCst),
        3,
        "200 wake-ups during one discovery cost one more"
    );
    drop(permit);
}
