//! An in-memory [`SysBackend`] for testing and benchmarking the front ends without the kernel
//! model: a flat table of nodes, writes that store what they are given (or run a per-path
//! hook that returns the kernel's errno), one-shot read faults, and read hooks that let a test
//! stall or crash the serving thread on purpose.
//!
//! It honours the same contract as the real host: every mutation re-renders the tree, diffs it
//! against the previous one and tells every subscriber synchronously before returning.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::backend::{Change, DevNode, SysBackend, Uevent};
use crate::errno::Errno;
use crate::tree::{InodeTable, NodeKind, Tree, TreeBuilder, TreeDiff};

/// One node as the test describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemNode {
    /// A text attribute (reported size 4096) with its permission bits.
    Attr {
        perm: u16,
        content: Vec<u8>,
    },
    /// A binary attribute reported at its real size.
    Binary {
        perm: u16,
        content: Vec<u8>,
    },
    Symlink(String),
    Dir,
}

/// What a write hook may do to the host: edit nodes, device nodes and raise uevents.
#[derive(Default)]
pub struct MemEdit {
    pub set: Vec<(String, MemNode)>,
    pub remove: Vec<String>,
    pub dev_nodes: Option<Vec<DevNode>>,
    pub uevents: Vec<Uevent>,
}

type WriteHook = Box<dyn Fn(&MemView<'_>, &[u8]) -> Result<MemEdit, Errno> + Send + Sync>;
type ReadHook = Arc<dyn Fn(&str) + Send + Sync>;
type Subscriber = Box<dyn Fn(&Change) + Send + Sync>;

/// Read-only access to the nodes, for write hooks.
pub struct MemView<'a> {
    nodes: &'a BTreeMap<String, MemNode>,
}

impl MemView<'_> {
    pub fn get(&self, path: &str) -> Option<&MemNode> {
        self.nodes.get(path)
    }
    /// The content of an attribute, or empty.
    pub fn content(&self, path: &str) -> Vec<u8> {
        match self.nodes.get(path) {
            Some(MemNode::Attr { content, .. } | MemNode::Binary { content, .. }) => {
                content.clone()
            }
            _ => Vec::new(),
        }
    }
}

struct MemState {
    inodes: InodeTable,
    nodes: BTreeMap<String, MemNode>,
    tree: Arc<Tree>,
    dev_nodes: Vec<DevNode>,
    read_faults: HashMap<String, Vec<Errno>>,
}

/// An in-memory host. Cheap to build, safe to share (`Arc<MemBackend>`).
pub struct MemBackend {
    state: Mutex<MemState>,
    write_hooks: RwLock<HashMap<String, WriteHook>>,
    read_hook: RwLock<Option<ReadHook>>,
    subscribers: RwLock<Vec<Subscriber>>,
    /// Serialises mutations so subscribers see changes in order, without holding `state`.
    change_order: Mutex<()>,
}

impl Default for MemBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl MemBackend {
    pub fn new() -> Self {
        let mut inodes = InodeTable::default();
        let tree = Arc::new(TreeBuilder::new(&mut inodes).build());
        MemBackend {
            state: Mutex::new(MemState {
                inodes,
                nodes: BTreeMap::new(),
                tree,
                dev_nodes: Vec::new(),
                read_faults: HashMap::new(),
            }),
            write_hooks: RwLock::new(HashMap::new()),
            read_hook: RwLock::new(None),
            subscribers: RwLock::new(Vec::new()),
            change_order: Mutex::new(()),
        }
    }

    /// Adds or replaces nodes (parents are created on demand), as one change.
    pub fn set(&self, nodes: impl IntoIterator<Item = (String, MemNode)>) {
        self.apply(MemEdit {
            set: nodes.into_iter().collect(),
            ..MemEdit::default()
        });
    }

    /// Sets one text attribute's content, keeping its mode (0o444 when new).
    pub fn set_attr(&self, path: &str, content: impl Into<Vec<u8>>) {
        let perm = match self.state.lock().nodes.get(path) {
            Some(MemNode::Attr { perm, .. }) => *perm,
            _ => 0o444,
        };
        self.set([(
            path.to_owned(),
            MemNode::Attr {
                perm,
                content: content.into(),
            },
        )]);
    }

    /// Removes nodes and everything under them, as one change.
    pub fn remove(&self, paths: impl IntoIterator<Item = String>) {
        self.apply(MemEdit {
            remove: paths.into_iter().collect(),
            ..MemEdit::default()
        });
    }

    pub fn set_dev_nodes(&self, dev_nodes: Vec<DevNode>) {
        self.apply(MemEdit {
            dev_nodes: Some(dev_nodes),
            ..MemEdit::default()
        });
    }

    /// Runs `hook` for every write to `path` instead of storing the data.
    pub fn on_write(
        &self,
        path: &str,
        hook: impl Fn(&MemView<'_>, &[u8]) -> Result<MemEdit, Errno> + Send + Sync + 'static,
    ) {
        self.write_hooks
            .write()
            .insert(path.to_owned(), Box::new(hook));
    }

    /// Runs `hook(path)` at the start of every read (to stall or crash a serving thread).
    pub fn on_read(&self, hook: impl Fn(&str) + Send + Sync + 'static) {
        *self.read_hook.write() = Some(Arc::new(hook));
    }

    /// The next read of `path` fails with `errno` (queued: several calls fail several reads).
    /// Like the real host's fault table, arming a fault is announced as a change of `path`, so
    /// a front end that caches content drops it and the fault is seen.
    pub fn fail_next_read(&self, path: &str, errno: Errno) {
        let _order = self.change_order.lock();
        let change = {
            let mut st = self.state.lock();
            st.read_faults
                .entry(path.to_owned())
                .or_default()
                .push(errno);
            Change {
                tree: st.tree.clone(),
                diff: TreeDiff {
                    changed: vec![path.to_owned()],
                    ..TreeDiff::default()
                },
                dev_nodes: st.dev_nodes.clone(),
                uevents: Vec::new(),
            }
        };
        self.notify(&change);
    }

    fn apply(&self, edit: MemEdit) {
        let _order = self.change_order.lock();
        let change = {
            let mut st = self.state.lock();
            for path in &edit.remove {
                let prefix = format!("{path}/");
                st.nodes.retain(|p, _| p != path && !p.starts_with(&prefix));
            }
            for (path, node) in edit.set {
                st.nodes.insert(path, node);
            }
            if let Some(dev) = edit.dev_nodes {
                st.dev_nodes = dev;
            }
            let tree = Arc::new(render(&mut st));
            let diff = Tree::diff(&st.tree, &tree);
            st.tree = tree.clone();
            Change {
                tree,
                diff,
                dev_nodes: st.dev_nodes.clone(),
                uevents: edit.uevents,
            }
        };
        self.notify(&change);
    }

    fn notify(&self, change: &Change) {
        for f in self.subscribers.read().iter() {
            f(change);
        }
    }
}

fn render(st: &mut MemState) -> Tree {
    let mut b = TreeBuilder::new(&mut st.inodes);
    for (path, node) in &st.nodes {
        match node {
            MemNode::Dir => {
                b.dir(path);
            }
            MemNode::Attr { perm, content } => {
                b.attr(path, *perm, content.clone());
            }
            MemNode::Binary { perm, content } => {
                b.binary(path, *perm, content.clone());
            }
            MemNode::Symlink(target) => {
                b.symlink(path, target.clone());
            }
        }
    }
    b.build()
}

impl SysBackend for MemBackend {
    fn tree(&self) -> Arc<Tree> {
        self.state.lock().tree.clone()
    }

    fn read(&self, path: &str) -> Result<Arc<[u8]>, Errno> {
        let hook = self.read_hook.read().clone();
        if let Some(hook) = hook {
            hook(path);
        }
        let mut st = self.state.lock();
        if let Some(queue) = st.read_faults.get_mut(path)
            && !queue.is_empty()
        {
            return Err(queue.remove(0));
        }
        match st.tree.get(path).map(|n| &n.kind) {
            Some(NodeKind::File { content, .. }) => Ok(content.clone()),
            Some(NodeKind::Dir) => Err(Errno::EISDIR),
            Some(NodeKind::Symlink { .. }) => Err(Errno::EINVAL),
            None => Err(Errno::ENOENT),
        }
    }

    fn write(&self, path: &str, data: &[u8]) -> Result<(), Errno> {
        let edit = {
            let hooks = self.write_hooks.read();
            match hooks.get(path) {
                Some(hook) => {
                    let st = self.state.lock();
                    hook(&MemView { nodes: &st.nodes }, data)?
                }
                None => {
                    let perm = match self.state.lock().nodes.get(path) {
                        Some(MemNode::Attr { perm, .. }) => *perm,
                        Some(_) => return Err(Errno::EINVAL),
                        None => return Err(Errno::ENOENT),
                    };
                    MemEdit {
                        set: vec![(
                            path.to_owned(),
                            MemNode::Attr {
                                perm,
                                content: data.to_vec(),
                            },
                        )],
                        ..MemEdit::default()
                    }
                }
            }
        };
        self.apply(edit);
        Ok(())
    }

    fn subscribe(&self, f: Box<dyn Fn(&Change) + Send + Sync>) {
        self.subscribers.write().push(f);
    }

    fn dev_nodes(&self) -> Vec<DevNode> {
        self.state.lock().dev_nodes.clone()
    }
}

/// The environment variable that lets a run skip tests whose requirement is missing (CI sets
/// nothing, so there every such test fails).
pub const ALLOW_SKIP: &str = "HOSTDEV_ALLOW_SKIP";

/// Called by a test that cannot run on this machine (no FUSE, no lspci, not root): it fails,
/// naming what is missing, because nextest would show an early return as PASS. Only with
/// `HOSTDEV_ALLOW_SKIP=1` does it print `SKIPPED` and return, and the caller returns after it.
pub fn cannot_run(what: &str) {
    if std::env::var(ALLOW_SKIP).is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED ({ALLOW_SKIP}=1): {what}");
    } else {
        panic!(
            "this test cannot run here: {what} (set {ALLOW_SKIP}=1 to skip such tests explicitly)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn writes_store_and_notify_with_exact_diff() {
        let b = MemBackend::new();
        b.set([(
            "d/a".into(),
            MemNode::Attr {
                perm: 0o644,
                content: b"1\n".to_vec(),
            },
        )]);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        b.subscribe(Box::new(move |c| s.lock().push(c.diff.clone())));
        b.write("d/a", b"2\n").unwrap();
        assert_eq!(&*b.read("d/a").unwrap(), b"2\n");
        assert_eq!(seen.lock()[0].changed, vec!["d/a"]);
        assert_eq!(b.write("d/none", b"x"), Err(Errno::ENOENT));
    }

    #[test]
    fn read_faults_fire_once_and_are_announced() {
        let b = MemBackend::new();
        b.set_attr("x", "1\n");
        let n = Arc::new(AtomicUsize::new(0));
        let n2 = n.clone();
        b.subscribe(Box::new(move |c| {
            assert_eq!(c.diff.changed, vec!["x"]);
            n2.fetch_add(1, Ordering::SeqCst);
        }));
        b.fail_next_read("x", Errno::EIO);
        assert_eq!(n.load(Ordering::SeqCst), 1);
        assert_eq!(b.read("x"), Err(Errno::EIO));
        assert_eq!(&*b.read("x").unwrap(), b"1\n");
    }
}
