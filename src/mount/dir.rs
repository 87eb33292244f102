//! Directories: a virtual one lists its fixed children; a stored one loads
//! its tree when first visited (kept in a bounded cache) and numbers each
//! entry from its identity.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};

use fuser::Errno;

use super::inode::Identity;
use super::{Entry, MountFs, Stored};
use crate::format::tree::{Node, NodeKind, Tree};

/// One entry of a directory listing: name, inode number, entry.
pub type Child = (Vec<u8>, u64, Arc<Entry>);

/// The rough memory a decoded tree holds.
pub fn tree_weight(t: &Tree) -> usize {
    t.nodes
        .iter()
        .map(|n| 160 + n.name.len() + n.target.len() + n.content.len() * 48 + n.xattrs.len() * 64)
        .sum::<usize>()
        + 64
}

impl MountFs {
    pub fn tree_of(&self, ino: u64, s: &Stored) -> Result<Arc<Tree>, Errno> {
        let id = match (s.node.kind, s.node.subtree) {
            (NodeKind::Dir, Some(id)) => id,
            _ => return Err(Errno::ENOTDIR),
        };
        self.trees
            .get_or_load(&id, tree_weight, || self.reader.read_tree(&id))
            .map_err(|e| {
                crate::warn(&format!(
                    "reading directory {} of the mount failed: {e:#}",
                    self.path_of(ino)
                ));
                Errno::EIO
            })
    }

    /// The identity of an entry of the stored directory `parent`.
    pub fn identity_of(&self, parent: &Stored, node: &Node) -> Identity {
        let snap = &self.snapshots[parent.snapshot].id;
        if node.nlink > 1 && node.kind != NodeKind::Dir {
            Identity::linked(snap, node.dev, node.inode)
        } else {
            Identity::named(snap, parent.key, &node.name)
        }
    }

    /// The inode of one entry of a stored directory, entered in the table;
    /// `counted` when it goes to the kernel as a lookup.
    fn stored_child(
        &self,
        parent_ino: u64,
        parent: &Stored,
        node: &Node,
        counted: bool,
    ) -> (u64, Arc<Entry>) {
        let identity = self.identity_of(parent, node);
        self.table.hashed(identity, counted, |ino| {
            Entry::Stored(Stored {
                snapshot: parent.snapshot,
                name: node.name.clone(),
                parent: parent_ino,
                key: ino,
                identity: Some(identity),
                node: Arc::new(node.clone()),
                starts: OnceLock::new(),
                reads: Default::default(),
                by_inode: OnceLock::new(),
                lookups: AtomicU64::new(0),
            })
        })
    }

    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<(u64, Arc<Entry>), Errno> {
        let e = self.table.get(parent).ok_or(Errno::ENOENT)?;
        match &*e {
            Entry::Dir(d) => {
                let ino = d
                    .children
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, i)| *i)
                    .ok_or(Errno::ENOENT)?;
                Ok((ino, self.table.get(ino).ok_or(Errno::ENOENT)?))
            }
            Entry::Link { .. } => Err(Errno::ENOTDIR),
            Entry::Stored(s) => {
                let tree = self.tree_of(parent, s)?;
                let i = tree
                    .nodes
                    .binary_search_by(|n| n.name.as_slice().cmp(name))
                    .map_err(|_| Errno::ENOENT)?;
                Ok(self.stored_child(parent, s, &tree.nodes[i], true))
            }
        }
    }

    /// Up to `count` entries of a directory from position `from`, where
    /// `.` and `..` come first: a large directory is listed in pieces, each
    /// numbering only the entries it returns. `counted` for readdirplus,
    /// whose entries the kernel counts as lookups.
    pub fn children(&self, ino: u64, from: usize, count: usize, counted: bool) -> Result<Vec<Child>, Errno> {
        let e = self.table.get(ino).ok_or(Errno::ENOENT)?;
        let parent = match &*e {
            Entry::Dir(d) => d.parent,
            Entry::Stored(s) => s.parent,
            Entry::Link { .. } => return Err(Errno::ENOTDIR),
        };
        let mut out = Vec::new();
        if from == 0 {
            out.push((b".".to_vec(), ino, e.clone()));
        }
        if from <= 1
            && let Some(p) = self.table.get(parent)
        {
            out.push((b"..".to_vec(), parent, p));
        }
        let skip = from.saturating_sub(2);
        let want = count.saturating_sub(out.len());
        match &*e {
            Entry::Dir(d) => {
                for (name, child) in d.children.iter().skip(skip).take(want) {
                    if let Some(c) = self.table.get(*child) {
                        out.push((name.clone(), *child, c));
                    }
                }
            }
            Entry::Stored(s) => {
                let tree = self.tree_of(ino, s)?;
                if from == 0 {
                    // Listed: its subdirectories are likely visited next.
                    self.prefetch.subtrees(&tree);
                }
                for n in tree.nodes.iter().skip(skip).take(want) {
                    let (child, c) = self.stored_child(ino, s, n, counted);
                    out.push((n.name.clone(), child, c));
                }
            }
            Entry::Link { .. } => {}
        }
        Ok(out)
    }
}
