//! The rendered view of a host: every sysfs path with its kind, mode and content.
//!
//! The kernel model renders a [`Tree`] after every change; front ends (the FUSE mount, the plain
//! directory writer) only ever look at trees. Because a tree is a pure function of the model's
//! state, [`Tree::diff`] between the tree before and after a change names exactly what the
//! change touched, and that is all a front end needs to invalidate: nothing is ever served stale.
//!
//! Paths are relative to the sysfs root, `/`-separated, with no leading slash; `""` is the root.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;
use std::sync::Arc;

/// What a node is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeKind {
    Dir,
    /// An attribute file. `size` is what `stat` reports: 4096 for text attributes, the real
    /// length for binary ones (`config`, `descriptors`).
    File {
        content: Arc<[u8]>,
        size: u64,
    },
    /// A symlink; the target is relative to the directory holding the link, as the kernel makes them.
    Symlink {
        target: String,
    },
}

/// One node of the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Stable for the life of the host: the same path always has the same inode number.
    pub ino: u64,
    /// Permission bits only (0o755 dirs, 0o777 links, 0o444 / 0o644 / 0o200 attributes).
    pub perm: u16,
    pub kind: NodeKind,
    /// Names of the children, sorted; empty unless a directory.
    pub children: Vec<String>,
}

impl Node {
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, NodeKind::Dir)
    }
    /// True when the owner may read (sysfs: the attribute has a show side).
    pub fn readable(&self) -> bool {
        self.perm & 0o400 != 0
    }
    /// True when the owner may write (sysfs: the attribute has a store side).
    pub fn writable(&self) -> bool {
        self.perm & 0o200 != 0
    }
}

/// Inode numbers by path, kept across renders so a path keeps its number.
///
/// The path strings are shared with every tree rendered from this table, so a render allocates
/// a path only the first time it appears.
#[derive(Debug)]
pub struct InodeTable {
    by_path: FxHashMap<Arc<str>, u64>,
    next: u64,
}

/// The root directory's inode number (FUSE's `FUSE_ROOT_ID`).
pub const ROOT_INO: u64 = 1;

impl Default for InodeTable {
    fn default() -> Self {
        let mut by_path = FxHashMap::default();
        by_path.insert(Arc::from(""), ROOT_INO);
        InodeTable {
            by_path,
            next: ROOT_INO + 1,
        }
    }
}

impl InodeTable {
    pub fn ino(&mut self, path: &str) -> u64 {
        self.entry(path).0
    }

    /// The inode number of `path` and the shared copy of the path itself.
    fn entry(&mut self, path: &str) -> (u64, Arc<str>) {
        if let Some((p, &ino)) = self.by_path.get_key_value(path) {
            return (ino, p.clone());
        }
        let ino = self.next;
        self.next += 1;
        let p: Arc<str> = Arc::from(path);
        self.by_path.insert(p.clone(), ino);
        (ino, p)
    }
}

/// A whole rendered sysfs.
///
/// Nodes are stored by inode number. Because an [`InodeTable`] gives a path the same number in
/// every render, comparing two trees is a walk over both vectors side by side ([`Tree::diff`]).
#[derive(Clone, Debug, Default)]
pub struct Tree {
    by_ino: Vec<Option<(Arc<str>, Node)>>,
    index: FxHashMap<Arc<str>, u64>,
}

impl Tree {
    pub fn get(&self, path: &str) -> Option<&Node> {
        let ino = *self.index.get(path)?;
        self.by_ino(ino).map(|(_, n)| n)
    }
    pub fn by_ino(&self, ino: u64) -> Option<(&str, &Node)> {
        let (path, node) = self.by_ino.get(usize::try_from(ino).ok()?)?.as_ref()?;
        Some((path, node))
    }
    pub fn path_of(&self, ino: u64) -> Option<&str> {
        self.by_ino(ino).map(|(p, _)| p)
    }
    /// The child `name` of the directory `dir`.
    pub fn child(&self, dir: &str, name: &str) -> Option<(String, &Node)> {
        let path = join(dir, name);
        let node = self.get(&path)?;
        Some((path, node))
    }
    pub fn len(&self) -> usize {
        self.index.len()
    }
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
    /// Every path, in inode order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.by_ino.iter().flatten().map(|(p, n)| (&**p, n))
    }

    /// What changed from `old` to `new`. Both must come from the same [`InodeTable`].
    pub fn diff(old: &Tree, new: &Tree) -> TreeDiff {
        let mut d = TreeDiff::default();
        let len = old.by_ino.len().max(new.by_ino.len());
        for i in 0..len {
            let o = old.by_ino.get(i).and_then(Option::as_ref);
            let n = new.by_ino.get(i).and_then(Option::as_ref);
            match (o, n) {
                (None, None) => {}
                (None, Some((path, _))) => d.added.push(path.to_string()),
                (Some((path, node)), None) => d.removed.push((path.to_string(), node.ino)),
                (Some((_, o)), Some((path, n))) => {
                    if o.kind != n.kind || o.perm != n.perm {
                        d.changed.push(path.to_string());
                    }
                    // A directory whose children changed is reported here whether or not its
                    // own kind changed too.
                    if o.children != n.children {
                        d.children_changed.push(path.to_string());
                    }
                }
            }
        }
        d.added.sort();
        d.changed.sort();
        d.children_changed.sort();
        d.removed.sort();
        d
    }
}

/// The difference between two trees: what a front end must invalidate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TreeDiff {
    /// Paths that exist only in the new tree.
    pub added: Vec<String>,
    /// Paths in both whose content, target, size or mode changed.
    pub changed: Vec<String>,
    /// Directories in both whose list of children changed.
    pub children_changed: Vec<String>,
    /// Paths that exist only in the old tree, with the inode they had.
    pub removed: Vec<(String, u64)>,
}

impl TreeDiff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.changed.is_empty()
            && self.children_changed.is_empty()
            && self.removed.is_empty()
    }
}

/// Builds a [`Tree`]; parents are created on demand, so a renderer can add leaves in any order.
pub struct TreeBuilder<'a> {
    inodes: &'a mut InodeTable,
    nodes: BTreeMap<String, (u16, NodeKind)>,
}

impl<'a> TreeBuilder<'a> {
    pub fn new(inodes: &'a mut InodeTable) -> Self {
        let mut nodes = BTreeMap::new();
        nodes.insert(String::new(), (0o755, NodeKind::Dir));
        TreeBuilder { inodes, nodes }
    }

    pub fn dir(&mut self, path: &str) -> &mut Self {
        self.ensure_parents(path);
        if !self.nodes.contains_key(path) {
            self.nodes.insert(path.to_owned(), (0o755, NodeKind::Dir));
        }
        self
    }

    /// A text attribute: reported size 4096, like every sysfs attribute.
    pub fn attr(&mut self, path: &str, perm: u16, content: impl Into<Vec<u8>>) -> &mut Self {
        self.put(
            path,
            perm,
            NodeKind::File {
                content: content.into().into(),
                size: 4096,
            },
        )
    }

    /// A binary attribute reported at its real size.
    pub fn binary(&mut self, path: &str, perm: u16, content: impl Into<Vec<u8>>) -> &mut Self {
        let content: Arc<[u8]> = content.into().into();
        let size = content.len() as u64;
        self.put(path, perm, NodeKind::File { content, size })
    }

    pub fn symlink(&mut self, path: &str, target: impl Into<String>) -> &mut Self {
        self.put(
            path,
            0o777,
            NodeKind::Symlink {
                target: target.into(),
            },
        )
    }

    pub fn put(&mut self, path: &str, perm: u16, kind: NodeKind) -> &mut Self {
        self.ensure_parents(path);
        self.nodes.insert(path.to_owned(), (perm, kind));
        self
    }

    /// Creates the missing ancestors of `path`, looking from the nearest one up and stopping at
    /// the first that exists (siblings are usually added together, so that is the parent).
    fn ensure_parents(&mut self, path: &str) {
        let mut missing = Vec::new();
        let mut p = path;
        while let Some(i) = p.rfind('/') {
            p = &p[..i];
            if self.nodes.contains_key(p) {
                break;
            }
            missing.push(p);
        }
        for m in missing {
            self.nodes.insert(m.to_owned(), (0o755, NodeKind::Dir));
        }
    }

    pub fn build(self) -> Tree {
        let mut by_ino: Vec<Option<(Arc<str>, Node)>> = Vec::new();
        by_ino.resize_with(self.inodes.next as usize, || None);
        let mut index = FxHashMap::with_capacity_and_hasher(self.nodes.len(), Default::default());
        // BTreeMap order visits a directory before its descendants and children in name order,
        // so appending each name to its parent's list leaves every list sorted.
        for (path, (perm, kind)) in self.nodes {
            let (ino, shared) = self.inodes.entry(&path);
            if ino as usize >= by_ino.len() {
                by_ino.resize_with(ino as usize + 1, || None);
            }
            if !path.is_empty() {
                let (parent, name) = split(&path);
                if let Some(&pino) = index.get(parent)
                    && let Some((_, pnode)) = by_ino[pino as usize].as_mut()
                {
                    let pnode: &mut Node = pnode;
                    pnode.children.push(name.to_owned());
                }
            }
            index.insert(shared.clone(), ino);
            by_ino[ino as usize] = Some((
                shared,
                Node {
                    ino,
                    perm,
                    kind,
                    children: Vec::new(),
                },
            ));
        }
        Tree { by_ino, index }
    }
}

/// `dir` + `/` + `name`, for relative paths where `""` is the root.
pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// Splits `a/b/c` into (`a/b`, `c`); a top-level name has parent `""`.
pub fn split(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(f: impl FnOnce(&mut TreeBuilder), inodes: &mut InodeTable) -> Tree {
        let mut b = TreeBuilder::new(inodes);
        f(&mut b);
        b.build()
    }

    #[test]
    fn parents_are_created_and_children_sorted() {
        let mut inodes = InodeTable::default();
        let t = build(
            |b| {
                b.attr("bus/pci/devices/z/vendor", 0o444, "0x10de\n");
                b.symlink("bus/pci/devices/a", "../../../devices/pci0000:00/a");
            },
            &mut inodes,
        );
        assert!(t.get("bus").unwrap().is_dir());
        assert_eq!(t.get("bus/pci/devices").unwrap().children, vec!["a", "z"]);
        assert_eq!(t.get("").unwrap().ino, ROOT_INO);
        assert_eq!(t.get("").unwrap().children, vec!["bus"]);
    }

    #[test]
    fn inodes_are_stable_across_renders_and_diff_is_exact() {
        let mut inodes = InodeTable::default();
        let a = build(
            |b| {
                b.attr("d/x", 0o444, "1\n");
                b.attr("d/y", 0o444, "1\n");
            },
            &mut inodes,
        );
        let b = build(
            |b| {
                b.attr("d/x", 0o444, "2\n");
                b.attr("d/z", 0o444, "1\n");
            },
            &mut inodes,
        );
        assert_eq!(a.get("d/x").unwrap().ino, b.get("d/x").unwrap().ino);
        let d = Tree::diff(&a, &b);
        assert_eq!(d.added, vec!["d/z"]);
        assert_eq!(d.changed, vec!["d/x"]);
        assert_eq!(d.children_changed, vec!["d"]);
        assert_eq!(
            d.removed,
            vec![("d/y".to_owned(), a.get("d/y").unwrap().ino)]
        );
        assert!(Tree::diff(&b, &b).is_empty());
    }
}
