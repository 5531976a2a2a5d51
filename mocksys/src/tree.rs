//! The rendered view of a host: every sysfs path with its kind, mode and content.
//!
//! The kernel model renders a [`Tree`] after every change; front ends (the FUSE mount, the plain
//! directory writer) only ever look at trees. Because a tree is a pure function of the model's
//! state, [`Tree::diff`] between the tree before and after a change names exactly what the
//! change touched, and that is all a front end needs to invalidate: nothing is ever served stale.
//!
//! Paths are relative to the sysfs root, `/`-separated, with no leading slash; `""` is the root.

use std::collections::{BTreeMap, HashMap};
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
#[derive(Debug)]
pub struct InodeTable {
    by_path: HashMap<String, u64>,
    next: u64,
}

/// The root directory's inode number (FUSE's `FUSE_ROOT_ID`).
pub const ROOT_INO: u64 = 1;

impl Default for InodeTable {
    fn default() -> Self {
        let mut by_path = HashMap::new();
        by_path.insert(String::new(), ROOT_INO);
        InodeTable {
            by_path,
            next: ROOT_INO + 1,
        }
    }
}

impl InodeTable {
    pub fn ino(&mut self, path: &str) -> u64 {
        if let Some(&ino) = self.by_path.get(path) {
            return ino;
        }
        let ino = self.next;
        self.next += 1;
        self.by_path.insert(path.to_owned(), ino);
        ino
    }
}

/// A whole rendered sysfs.
#[derive(Clone, Debug, Default)]
pub struct Tree {
    nodes: HashMap<String, Node>,
    paths: HashMap<u64, String>,
}

impl Tree {
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }
    pub fn by_ino(&self, ino: u64) -> Option<(&str, &Node)> {
        let path = self.paths.get(&ino)?;
        Some((path.as_str(), &self.nodes[path]))
    }
    pub fn path_of(&self, ino: u64) -> Option<&str> {
        self.paths.get(&ino).map(String::as_str)
    }
    /// The child `name` of the directory `dir`.
    pub fn child(&self, dir: &str, name: &str) -> Option<(String, &Node)> {
        let path = join(dir, name);
        let node = self.nodes.get(&path)?;
        Some((path, node))
    }
    pub fn len(&self) -> usize {
        self.nodes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
    /// Every path, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.nodes.iter().map(|(p, n)| (p.as_str(), n))
    }

    /// What changed from `old` to `self`.
    pub fn diff(old: &Tree, new: &Tree) -> TreeDiff {
        let mut d = TreeDiff::default();
        for (path, n) in &new.nodes {
            match old.nodes.get(path) {
                None => d.added.push(path.clone()),
                Some(o) if o.kind != n.kind || o.perm != n.perm => d.changed.push(path.clone()),
                Some(o) if o.children != n.children => d.children_changed.push(path.clone()),
                Some(_) => {}
            }
        }
        for path in old.nodes.keys() {
            if !new.nodes.contains_key(path) {
                d.removed.push((path.clone(), old.nodes[path].ino));
            }
        }
        // A directory whose own kind is unchanged but whose children changed is reported once,
        // in `children_changed`; a node whose kind changed may also have new children.
        for path in &d.changed {
            let (o, n) = (&old.nodes[path], &new.nodes[path]);
            if o.children != n.children && !d.children_changed.contains(path) {
                d.children_changed.push(path.clone());
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
        self.nodes
            .entry(path.to_owned())
            .or_insert((0o755, NodeKind::Dir));
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

    fn ensure_parents(&mut self, path: &str) {
        let mut end = 0;
        while let Some(i) = path[end..].find('/') {
            let parent = &path[..end + i];
            if !self.nodes.contains_key(parent) {
                self.nodes.insert(parent.to_owned(), (0o755, NodeKind::Dir));
            }
            end += i + 1;
        }
    }

    pub fn build(self) -> Tree {
        let mut children: HashMap<String, Vec<String>> = HashMap::new();
        for path in self.nodes.keys() {
            if path.is_empty() {
                continue;
            }
            let (parent, name) = split(path);
            children
                .entry(parent.to_owned())
                .or_default()
                .push(name.to_owned());
        }
        let mut tree = Tree {
            nodes: HashMap::with_capacity(self.nodes.len()),
            paths: HashMap::with_capacity(self.nodes.len()),
        };
        for (path, (perm, kind)) in self.nodes {
            let ino = self.inodes.ino(&path);
            // BTreeMap order makes every child list sorted already.
            let kids = if matches!(kind, NodeKind::Dir) {
                children.remove(&path).unwrap_or_default()
            } else {
                Vec::new()
            };
            tree.paths.insert(ino, path.clone());
            tree.nodes.insert(
                path,
                Node {
                    ino,
                    perm,
                    kind,
                    children: kids,
                },
            );
        }
        tree
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
