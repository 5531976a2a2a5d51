//! [`Host`]: the kernel model behind the front-end contract.
//!
//! A host holds the [`Kernel`], its current rendered tree and the writable-attribute table
//! under one lock. Every mutation re-renders, diffs against the previous tree and hands
//! subscribers a [`Change`]; a second lock (taken first, released last) keeps changes and
//! their notifications in one order without holding the model lock while subscribers run.
//! Subscribers must not mutate the host they are told about, nor subscribe to it (they would wait
//! for themselves).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::backend::{Change, DevNode, SysBackend, Uevent};
use crate::errno::Errno;
use crate::faults::{FaultId, FaultOp, FaultRule, Faults, normalize};
use crate::kernel::{Attr, Kernel, KernelError};
use crate::render::render;
use crate::spec::{HostSpec, PciSpec, SpecError, UsbSpec};
use crate::tree::{InodeTable, NodeKind, Tree, join, split};

type Subscriber = Box<dyn Fn(&Change) + Send + Sync>;

/// A synthetic host; cheap to clone (all clones are the same host).
#[derive(Clone)]
pub struct Host(Arc<Inner>);

struct Inner {
    state: Mutex<State>,
    /// Held across apply + notify so subscribers see changes in the order they happened.
    order: Mutex<()>,
    subscribers: RwLock<Vec<Subscriber>>,
    faults: Faults,
}

struct State {
    kernel: Kernel,
    inodes: InodeTable,
    tree: Arc<Tree>,
    attrs: Arc<HashMap<String, Attr>>,
    dev_nodes: Vec<DevNode>,
}

/// A write made on behalf of a library call (e.g. [`Host::vfio_bind`]) that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("writing {value:?} to /sys/{path}: {errno}")]
pub struct WriteError {
    pub path: String,
    pub value: String,
    pub errno: Errno,
}

impl Host {
    /// The host as booted from a validated spec.
    pub fn from_spec(spec: &HostSpec) -> Result<Host, SpecError> {
        let kernel = Kernel::from_spec(spec).map_err(SpecError::Build)?;
        Ok(Host::from_kernel(kernel))
    }

    /// Reads, validates and boots a host file.
    pub fn load(path: impl AsRef<Path>) -> Result<Host, SpecError> {
        Host::from_spec(&HostSpec::load(path)?)
    }

    /// A host around an already-built model.
    pub fn from_kernel(kernel: Kernel) -> Host {
        let mut inodes = InodeTable::default();
        let rendered = render(&kernel, &mut inodes);
        let dev_nodes = kernel.dev_nodes();
        Host(Arc::new(Inner {
            state: Mutex::new(State {
                kernel,
                inodes,
                tree: Arc::new(rendered.tree),
                attrs: Arc::new(rendered.attrs),
                dev_nodes,
            }),
            order: Mutex::new(()),
            subscribers: RwLock::new(Vec::new()),
            faults: Faults::default(),
        }))
    }

    /// The fault table. Every rule added or removed through it is announced to front ends (see
    /// [`HostFaults`]), so it fires even where they cache content.
    pub fn faults(&self) -> HostFaults<'_> {
        HostFaults { host: self }
    }

    /// Arms a fault so that it fires even where a front end caches content: the files the rule
    /// covers are announced as changed, so the FUSE page cache drops them and the next read
    /// reaches the host (and this rule).
    pub fn inject_fault(&self, rule: FaultRule) -> FaultId {
        self.change_faults(|faults| (faults.add(rule.clone()), vec![rule]))
    }

    /// Changes the fault table under the ordering lock, then announces every file the rules
    /// `f` returns cover, before any later change or fault is announced.
    fn change_faults<T>(&self, f: impl FnOnce(&Faults) -> (T, Vec<FaultRule>)) -> T {
        let _order = self.0.order.lock();
        let (result, rules) = f(&self.0.faults);
        let change = {
            let st = self.0.state.lock();
            let mut changed: Vec<String> = rules
                .iter()
                .flat_map(|r| fault_table::covered_files(&st.tree, &r.path))
                .collect();
            changed.sort();
            changed.dedup();
            if changed.is_empty() {
                return result;
            }
            Change {
                tree: st.tree.clone(),
                diff: crate::tree::TreeDiff {
                    changed,
                    ..Default::default()
                },
                dev_nodes: st.dev_nodes.clone(),
                uevents: Vec::new(),
            }
        };
        self.notify(&change);
        result
    }

    /// Runs `f` on the model as it is now (read-only). `f` runs under the model lock: it must
    /// not call back into this host.
    pub fn inspect<T>(&self, f: impl FnOnce(&Kernel) -> T) -> T {
        f(&self.0.state.lock().kernel)
    }

    /// Every uevent from now on, in order, on a channel.
    pub fn subscribe_uevents(&self) -> crossbeam_channel::Receiver<Uevent> {
        let (tx, rx) = crossbeam_channel::unbounded();
        self.subscribe(Box::new(move |c: &Change| {
            for ev in &c.uevents {
                // A dropped receiver just stops listening.
                let _ = tx.send(ev.clone());
            }
        }));
        rx
    }

    /// Applies `f` to the model; re-renders and notifies when it changed something (it
    /// returned Ok, or raised uevents).
    fn mutate<T, E>(&self, f: impl FnOnce(&mut State) -> Result<T, E>) -> Result<T, E> {
        let _order = self.0.order.lock();
        let (result, change) = {
            let mut st = self.0.state.lock();
            let result = f(&mut st);
            let uevents = st.kernel.take_events();
            if result.is_err() && uevents.is_empty() {
                return result;
            }
            let st = &mut *st;
            let rendered = render(&st.kernel, &mut st.inodes);
            let diff = Tree::diff(&st.tree, &rendered.tree);
            st.tree = Arc::new(rendered.tree);
            st.attrs = Arc::new(rendered.attrs);
            st.dev_nodes = st.kernel.dev_nodes();
            if diff.is_empty() && uevents.is_empty() {
                return result;
            }
            let change = Change {
                tree: st.tree.clone(),
                diff,
                dev_nodes: st.dev_nodes.clone(),
                uevents,
            };
            (result, change)
        };
        self.notify(&change);
        result
    }

    /// Tells every subscriber of `change`, in subscription order. Callers hold the ordering
    /// lock and no model lock.
    fn notify(&self, change: &Change) {
        for s in self.0.subscribers.read().iter() {
            s(change);
        }
    }

    /// `modprobe NAME`.
    pub fn modprobe(&self, module: &str) -> Result<(), Errno> {
        self.mutate(|st| st.kernel.modprobe(module))
    }

    pub fn plug_pci(&self, spec: PciSpec) -> Result<(), KernelError> {
        self.mutate(|st| st.kernel.plug_pci(spec))
    }

    /// `address` as `0000:05:00.0`.
    pub fn unplug_pci(&self, address: &str) -> Result<(), KernelError> {
        self.mutate(|st| st.kernel.unplug_pci(address))
    }

    pub fn plug_usb(&self, spec: UsbSpec) -> Result<(), KernelError> {
        self.mutate(|st| st.kernel.plug_usb(spec))
    }

    /// `name` as `1-1` or `1-1.4`.
    pub fn unplug_usb(&self, name: &str) -> Result<(), KernelError> {
        self.mutate(|st| st.kernel.unplug_usb(name))
    }

    /// The documented move to vfio-pci, as three real writes: unbind from the current driver
    /// (when bound), `driver_override` = vfio-pci, bind to vfio-pci.
    pub fn vfio_bind(&self, address: &str) -> Result<(), WriteError> {
        let step = |path: String, value: &str| {
            self.write(&path, format!("{value}\n").as_bytes())
                .map_err(|errno| WriteError {
                    path,
                    value: value.to_owned(),
                    errno,
                })
        };
        let bound = self.inspect(|k| {
            k.find_pci(address)
                .and_then(|a| k.pci.get(&a))
                .and_then(|f| f.driver.clone())
        });
        if let Some(d) = bound {
            step(format!("bus/pci/drivers/{d}/unbind"), address)?;
        }
        step(
            format!("bus/pci/devices/{address}/driver_override"),
            "vfio-pci",
        )?;
        step("bus/pci/drivers/vfio-pci/bind".to_owned(), address)
    }

    /// Resolves `path` (relative to the sysfs root; `/sys/` and `/` prefixes are accepted)
    /// through symlinks to the path of a real node.
    pub fn resolve(&self, path: &str) -> Result<String, Errno> {
        resolve(&self.tree(), normalize(path))
    }

    fn fault(
        &self,
        op: FaultOp,
        asked: &str,
        real: Option<&str>,
        tree: &Tree,
    ) -> Result<(), Errno> {
        if self.0.faults.is_empty() {
            return Ok(());
        }
        let out = self
            .0
            .faults
            .check(op, asked, real, |p| resolve(tree, p).ok());
        if !out.latency.is_zero() {
            // Injected latency: the caller asked for a slow attribute.
            std::thread::sleep(out.latency);
        }
        out.errno.map_or(Ok(()), Err)
    }
}

impl SysBackend for Host {
    fn tree(&self) -> Arc<Tree> {
        self.0.state.lock().tree.clone()
    }

    fn read(&self, path: &str) -> Result<Arc<[u8]>, Errno> {
        let tree = self.tree();
        let asked = normalize(path);
        let real = resolve(&tree, asked);
        self.fault(FaultOp::Read, asked, real.as_deref().ok(), &tree)?;
        let real = real?;
        let node = tree.get(&real).ok_or(Errno::ENOENT)?;
        match &node.kind {
            NodeKind::Dir => Err(Errno::EISDIR),
            NodeKind::Symlink { .. } => Err(Errno::EINVAL),
            NodeKind::File { content, .. } => {
                if !node.readable() {
                    return Err(Errno::EACCES);
                }
                Ok(content.clone())
            }
        }
    }

    fn write(&self, path: &str, data: &[u8]) -> Result<(), Errno> {
        let asked = normalize(path);
        {
            let tree = self.tree();
            let real = resolve(&tree, asked);
            self.fault(FaultOp::Write, asked, real.as_deref().ok(), &tree)?;
        }
        self.mutate(|st| {
            let real = resolve(&st.tree, asked)?;
            let node = st.tree.get(&real).ok_or(Errno::ENOENT)?;
            match node.kind {
                NodeKind::Dir => return Err(Errno::EISDIR),
                NodeKind::Symlink { .. } => return Err(Errno::EINVAL),
                NodeKind::File { .. } => {}
            }
            if !node.writable() {
                return Err(Errno::EACCES);
            }
            let attr = st.attrs.get(&real).cloned().ok_or(Errno::EACCES)?;
            st.kernel.store(&attr, data)
        })
    }

    fn subscribe(&self, f: Box<dyn Fn(&Change) + Send + Sync>) {
        // Taking the order lock means a subscriber never misses half of a change.
        let _order = self.0.order.lock();
        self.0.subscribers.write().push(f);
    }

    fn dev_nodes(&self) -> Vec<DevNode> {
        self.0.state.lock().dev_nodes.clone()
    }
}

/// Follows symlinks (relative, as sysfs makes them) to the real path of `path`.
pub fn resolve(tree: &Tree, path: &str) -> Result<String, Errno> {
    let mut hops = 0;
    let mut pending: Vec<String> = path
        .split('/')
        .filter(|c| !c.is_empty())
        .rev()
        .map(str::to_owned)
        .collect();
    let mut cur = String::new();
    while let Some(comp) = pending.pop() {
        match comp.as_str() {
            "." => continue,
            ".." => {
                cur = split(&cur).0.to_owned();
                continue;
            }
            _ => {}
        }
        let next = join(&cur, &comp);
        let node = tree.get(&next).ok_or(Errno::ENOENT)?;
        match &node.kind {
            NodeKind::Symlink { target } => {
                hops += 1;
                if hops > 40 {
                    return Err(Errno(libc::ELOOP));
                }
                for c in target.split('/').filter(|c| !c.is_empty()).rev() {
                    pending.push(c.to_owned());
                }
            }
            NodeKind::File { .. } if !pending.is_empty() => return Err(Errno::ENOTDIR),
            _ => cur = next,
        }
    }
    Ok(cur)
}

mod fault_table;
pub use fault_table::HostFaults;

#[cfg(test)]
mod tests;
