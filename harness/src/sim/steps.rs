//! Carrying out one step against the cluster.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use mocksys::Errno;
use mocksys::faults::{FaultOp as MFaultOp, FaultRule, Times as MTimes};

use super::cluster::Cluster;
use crate::scenario::{Component, FaultOp, Scenario, Step, Times, TimesWord};

/// Runs one step; `expect` steps are handled by the caller.
pub async fn run_step(cluster: &mut Cluster, sc: &Scenario, step: &Step) -> Result<()> {
    let file = sc.file.display().to_string();
    match step {
        Step::VfioBind(s) => {
            // Not `Host::vfio_bind`: that writes through the model directly, and this step is
            // meant to go through the FUSE mount as the seed's `echo` commands would.
            let node = cluster.node(&s.node.value)?;
            let addr = s.device.value.to_lowercase();
            let dev = node.local_path(&format!("/sys/bus/pci/devices/{addr}"));
            let drivers = node.local_path("/sys/bus/pci/drivers");
            blocking(move || {
                let current = std::fs::read_link(dev.join("driver"))
                    .ok()
                    .and_then(|l| l.file_name().map(|n| n.to_string_lossy().into_owned()));
                if current.as_deref() == Some("vfio-pci") {
                    return Ok(());
                }
                if let Some(driver) = current {
                    write_attr(&drivers.join(&driver).join("unbind"), &addr)?;
                }
                write_attr(&dev.join("driver_override"), "vfio-pci")?;
                write_attr(&drivers.join("vfio-pci").join("bind"), &addr)
            })
            .await
        }
        Step::Write(s) => {
            let path = cluster.node(&s.node.value)?.local_path(&s.path.value);
            let value = s.value.clone();
            let result = blocking(move || write_attr(&path, &value)).await;
            match (&s.expect_error, result) {
                (None, r) => r,
                (Some(want), Ok(())) => bail!(
                    "the write succeeded, expected it to fail with {}",
                    want.value
                ),
                (Some(want), Err(e)) => {
                    let want = Errno::from_name(&want.value)
                        .ok_or_else(|| anyhow!("bad errno {}", want.value))?;
                    let got = e
                        .downcast_ref::<std::io::Error>()
                        .and_then(|io| io.raw_os_error())
                        .map(Errno);
                    if got == Some(want) {
                        Ok(())
                    } else {
                        bail!("expected {}, got: {e:#}", want.name())
                    }
                }
            }
        }
        Step::Modprobe(s) => {
            let node = cluster.node(&s.node.value)?;
            node.host
                .modprobe(&s.module)
                .map_err(|e| anyhow!("modprobe {} on {}: {e}", s.module, node.name))
        }
        Step::Plug(s) => {
            let node = cluster.node(&s.node.value)?;
            if let Some(pci) = &s.pci {
                let spec = pci
                    .value
                    .validate(&file, "plug.pci", None)
                    .map_err(|e| anyhow!("{e}"))?;
                node.host
                    .plug_pci(spec)
                    .map_err(|e| anyhow!("plugging into {}: {e}", node.name))
            } else if let Some(usb) = &s.usb {
                let spec = usb
                    .value
                    .validate(&file, "plug.usb")
                    .map_err(|e| anyhow!("{e}"))?;
                node.host
                    .plug_usb(spec)
                    .map_err(|e| anyhow!("plugging into {}: {e}", node.name))
            } else {
                bail!("plug needs pci or usb")
            }
        }
        Step::Unplug(s) => {
            let node = cluster.node(&s.node.value)?;
            if let Some(pci) = &s.pci {
                node.host
                    .unplug_pci(&pci.value.to_lowercase())
                    .map_err(|e| anyhow!("unplugging from {}: {e}", node.name))
            } else if let Some(usb) = &s.usb {
                node.host
                    .unplug_usb(&usb.value)
                    .map_err(|e| anyhow!("unplugging from {}: {e}", node.name))
            } else {
                bail!("unplug needs pci or usb")
            }
        }
        Step::Configure(s) => cluster.configure(&s.kubevirt.value),
        Step::Restart(s) => match s.component {
            Component::Kubelet => {
                let node = cluster.node_mut(&s.node.value)?;
                let name = node.name.clone();
                node.kubelet
                    .restart()
                    .await
                    .with_context(|| format!("restarting the kubelet of {name}"))
            }
            Component::Agent => {
                let signal = s.signal.as_ref().map(|x| x.value).unwrap_or_default();
                cluster.restart_agent(&s.node.value, signal).await
            }
        },
        Step::Fault(s) => {
            let node = cluster.node(&s.node.value)?;
            let errno = match &s.errno {
                Some(e) => Some(
                    Errno::from_name(&e.value).ok_or_else(|| anyhow!("bad errno {}", e.value))?,
                ),
                None => None,
            };
            let times = match s.times {
                None | Some(Times::Word(TimesWord::Once)) => MTimes::Once,
                Some(Times::Word(TimesWord::Always)) => MTimes::Always,
                Some(Times::Count(n)) => MTimes::Times(n),
            };
            let op = match s.on.unwrap_or(FaultOp::Read) {
                FaultOp::Read => MFaultOp::Read,
                FaultOp::Write => MFaultOp::Write,
                FaultOp::Both => MFaultOp::Both,
            };
            let latency = s.latency.map(|l| l.0).unwrap_or_default();
            node.host.faults().add(FaultRule {
                path: s.path.value.clone(),
                op,
                errno,
                times,
                latency,
            });
            Ok(())
        }
        Step::Apply(m) => {
            cluster.apply(m.value.clone()).await;
            Ok(())
        }
        Step::Delete(d) => cluster.delete(&d.vmi.value).await,
        Step::Expect(_) => Ok(()),
    }
}

/// One `write(2)` of `value` to a sysfs attribute, as `echo -n value > path` does.
fn write_attr(path: &PathBuf, value: &str) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    f.write_all(value.as_bytes())
        .with_context(|| format!("writing {value:?} to {}", path.display()))
}

/// File I/O against the FUSE mount blocks; keep it off the async workers.
async fn blocking(f: impl FnOnce() -> Result<()> + Send + 'static) -> Result<()> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| anyhow!("step task failed: {e}"))?
}
