//! Directories: a virtual one lists its fixed children; a stored one loads
//! its tree when first visited (kept in a bounded cache) and numbers each
//! entry from its identity. An entry keeps its place in the tree, not a
//! copy of its node.

use std::sync::Arc;
use std::sync::atomic::AtomicU32;

use fuser::{Errno, FileAttr};

use super::inode::Identity;
use super::{DirRef, Entry, MountFs, NodeRef, Place, Stored};
use crate::format::tree::{Node, NodeKind, Tree};

/// One entry of a directory listing: name, inode number, attributes, and
/// the entry (to count a lookup of, once the kernel takes it).
pub type Child = (Vec<u8>, u64, FileAttr, Arc<Entry>);

/// The heap a buffer of `n` bytes takes from the allocator.
fn alloc(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (n + 8).next_multiple_of(16).max(32)
    }
}

/// The memory a decoded tree holds, allocator overhead included (a node
/// of a short name and one extent takes about 450 bytes).
pub fn tree_weight(t: &Tree) -> usize {
    let opt = |s: &Option<String>| s.as_ref().map_or(0, |s| alloc(s.len()));
    t.nodes
        .iter()
        .map(|n| {
            alloc(n.name.len())
                + alloc(n.target.len())
                + opt(&n.user)
                + opt(&n.group)
                + alloc(n.content.len() * std::mem::size_of::<crate::format::tree::Extent>())
                + alloc(n.xattrs.len() * 48)
                + n.xattrs
                    .iter()
                    .map(|(k, v)| alloc(k.len()) + alloc(v.len()))
                    .sum::<usize>()
        })
        .sum::<usize>()
        + alloc(t.nodes.len() * std::mem::size_of::<Node>())
}

impl MountFs {
    /// A tree from the cache, or read (and kept); a failure is logged with
    /// the path of the directory `ino` and is EIO.
    fn load_tree(&self, ino: u64, id: &crate::format::Id) -> Result<Arc<Tree>, Errno> {
        self.trees
            .get_or_load(id, tree_weight, || self.reader.read_tree(id))
            .map_err(|e| {
                crate::warn(&format!(
                    "reading directory {} of the mount failed: {e:#}",
                    self.path_of(ino)
                ));
                Errno::EIO
            })
    }

    /// The node of a stored entry: a snapshot root's own, or looked up in
    /// its directory's tree.
    pub fn node_of(&self, s: &Stored) -> Result<NodeRef, Errno> {
        match &s.place {
            Place::Root(r) => Ok(NodeRef::Own(r.node.clone())),
            Place::In { dir, index } => {
                let tree = self.load_tree(dir.ino, &dir.tree)?;
                if (*index as usize) < tree.nodes.len() {
                    Ok(NodeRef::InTree(tree, *index as usize))
                } else {
                    Err(Errno::EIO)
                }
            }
        }
    }

    /// The stored directory `ino` as its children know it.
    fn dir_ref(&self, ino: u64, s: &Stored) -> Result<Arc<DirRef>, Errno> {
        if let Some(d) = s.state().dir.get() {
            return Ok(d.clone());
        }
        let node = self.node_of(s)?;
        let tree = match (node.kind, node.subtree) {
            (NodeKind::Dir, Some(id)) => id,
            _ => return Err(Errno::ENOTDIR),
        };
        Ok(s.state()
            .dir
            .get_or_init(|| Arc::new(DirRef { tree, ino }))
            .clone())
    }

    pub fn tree_of(&self, ino: u64, s: &Stored) -> Result<Arc<Tree>, Errno> {
        let dir = self.dir_ref(ino, s)?;
        self.load_tree(ino, &dir.tree)
    }

    /// The identity of an entry of the stored directory `parent`, whose
    /// number is `parent_ino`.
    pub fn identity_of(&self, parent_ino: u64, parent: &Stored, node: &Node) -> Identity {
        let snap = &self.snapshots[parent.snapshot as usize].id;
        if node.nlink > 1 && node.kind != NodeKind::Dir {
            Identity::linked(snap, node.dev, node.inode)
        } else {
            Identity::named(snap, parent.key(parent_ino), &node.name)
        }
    }

    /// The inode of entry `index` of a stored directory, entered in the
    /// table, and its attributes; `counted` when it goes to the kernel as
    /// a lookup.
    fn stored_child(
        &self,
        dir: &Arc<DirRef>,
        parent: &Stored,
        tree: &Tree,
        index: usize,
        counted: bool,
    ) -> (u64, FileAttr, Arc<Entry>) {
        let node = &tree.nodes[index];
        let identity = self.identity_of(dir.ino, parent, node);
        let (ino, entry) = self.table.hashed(identity, counted, |_| {
            Entry::Stored(Stored {
                snapshot: parent.snapshot,
                lookups: AtomicU32::new(0),
                tag: identity.tag(),
                place: Place::In {
                    dir: dir.clone(),
                    index: index as u32,
                },
                state: Default::default(),
            })
        });
        // A hard link met before under another name is that entry, whose
        // content reads are served from: its attributes go with it.
        if let Entry::Stored(s) = &*entry
            && !matches!(&s.place, Place::In { dir: d, index: i } if Arc::ptr_eq(d, dir) && *i as usize == index)
            && let Ok(n) = self.node_of(s)
        {
            return (ino, super::attr::stored_attr(ino, &n), entry);
        }
        (ino, super::attr::stored_attr(ino, node), entry)
    }

    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<(u64, FileAttr), Errno> {
        let e = self.table.get(parent).ok_or(Errno::ENOENT)?;
        match &*e {
            Entry::Dir(d) => {
                let ino = d
                    .children
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, i)| *i)
                    .ok_or(Errno::ENOENT)?;
                let child = self.table.get(ino).ok_or(Errno::ENOENT)?;
                Ok((ino, self.attr(ino, &child)?))
            }
            Entry::Link { .. } => Err(Errno::ENOTDIR),
            Entry::Stored(s) => {
                let dir = self.dir_ref(parent, s)?;
                let tree = self.load_tree(parent, &dir.tree)?;
                let i = tree
                    .nodes
                    .binary_search_by(|n| n.name.as_slice().cmp(name))
                    .map_err(|_| Errno::ENOENT)?;
                let (ino, attr, _) = self.stored_child(&dir, s, &tree, i, true);
                Ok((ino, attr))
            }
        }
    }

    /// Up to `count` entries of a directory from position `from`, where
    /// `.` and `..` come first: a large directory is listed in pieces, each
    /// numbering only the entries it returns. No lookup is counted: of a
    /// readdirplus, only the entries that fit in the reply are
    /// ([`super::inode::Table::count`]).
    pub fn children(&self, ino: u64, from: usize, count: usize) -> Result<Vec<Child>, Errno> {
        let e = self.table.get(ino).ok_or(Errno::ENOENT)?;
        let parent = match &*e {
            Entry::Dir(d) => d.parent,
            Entry::Stored(s) => s.parent(),
            Entry::Link { .. } => return Err(Errno::ENOTDIR),
        };
        let mut out = Vec::new();
        if from == 0 {
            out.push((b".".to_vec(), ino, self.dot_attr(ino), e.clone()));
        }
        if from <= 1
            && let Some(p) = self.table.get(parent)
        {
            out.push((b"..".to_vec(), parent, self.dot_attr(parent), p.clone()));
        }
        let skip = from.saturating_sub(2);
        let want = count.saturating_sub(out.len());
        match &*e {
            Entry::Dir(d) => {
                for (name, child) in d.children.iter().skip(skip).take(want) {
                    if let Some(c) = self.table.get(*child)
                        && let Ok(attr) = self.attr(*child, &c)
                    {
                        out.push((name.clone(), *child, attr, c.clone()));
                    }
                }
            }
            Entry::Stored(s) => {
                let dir = self.dir_ref(ino, s)?;
                let tree = self.load_tree(ino, &dir.tree)?;
                if from == 0 {
                    // Listed: its subdirectories are likely visited next.
                    self.prefetch.subtrees(&tree);
                }
                for index in (skip..tree.nodes.len()).take(want) {
                    let (child, attr, entry) = self.stored_child(&dir, s, &tree, index, false);
                    out.push((tree.nodes[index].name.clone(), child, attr, entry));
                }
            }
            Entry::Link { .. } => {}
        }
        Ok(out)
    }
}
