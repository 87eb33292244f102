//! `strongroom mount`: every snapshot as a read-only FUSE directory,
//! decrypted on demand.
//!
//! One file per kind of node: [`layout`] (the root and the virtual
//! directories), [`dir`], [`file`], [`symlink`] and [`attr`] (what every
//! stored node shows, devices, fifos and sockets included); [`inode`] is
//! the numbering, [`lru`] the bounded caches, [`prefetch`] the read-ahead
//! (of sequentially read files, of a directory's files and subtrees),
//! [`statfs`] the figures `df` shows,
//! [`filesystem`] the `fuser` handlers (they only reply) and [`daemon`]
//! mounting and unmounting.

pub mod attr;
pub mod daemon;
pub mod dir;
pub mod file;
pub mod filesystem;
pub mod inode;
pub mod layout;
pub mod lru;
pub mod prefetch;
pub mod statfs;
pub mod symlink;

use std::sync::atomic::AtomicU32;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use crate::format::Id;
use crate::format::tree::{Node, Tree};
use crate::repository::reader::Reader;
use crate::repository::snapshots::Snapshot;

use inode::Table;

/// A directory or symlink of the layout, not stored in any snapshot.
pub struct VirtualDir {
    pub name: Vec<u8>,
    pub parent: u64,
    pub children: Vec<(Vec<u8>, u64)>,
}

/// A stored directory, as its entries know it: its tree and its number.
/// One per directory, shared by the entries of its children.
pub struct DirRef {
    pub tree: Id,
    pub ino: u64,
}

/// Where a stored entry's node is. An entry of a tree keeps no copy of its
/// node, only its place in its directory's tree (which the tree cache
/// holds, or loads again): the table stays small however many inodes the
/// kernel holds.
pub enum Place {
    /// A snapshot's root directory, made from its manifest.
    Root(Box<Root>),
    /// Entry `index` of the directory `dir`.
    In { dir: Arc<DirRef>, index: u32 },
}

/// A snapshot's root directory seen under one view (`snapshots/`, `ids/`).
pub struct Root {
    pub node: Arc<Node>,
    pub name: Vec<u8>,
    pub parent: u64,
    /// The number its children are hashed under.
    pub key: u64,
}

/// A stored node at hand: a snapshot root's own, or one of a tree.
pub enum NodeRef {
    Own(Arc<Node>),
    InTree(Arc<Tree>, usize),
}

impl std::ops::Deref for NodeRef {
    type Target = Node;
    fn deref(&self) -> &Node {
        match self {
            NodeRef::Own(n) => n,
            NodeRef::InTree(t, i) => &t.nodes[*i],
        }
    }
}

/// What a file being read or a directory being listed needs beyond its
/// place; made when first needed.
#[derive(Default)]
pub struct State {
    /// Where each extent of a file starts.
    pub starts: OnceLock<Vec<u64>>,
    /// How far a file has been read (of a directory: whether its files
    /// were loaded ahead), for read-ahead.
    pub reads: prefetch::Sequence,
    /// A directory's entries (their positions) in the order of their inode
    /// numbers, the order `cp -a` reads a directory in.
    pub by_inode: OnceLock<prefetch::InodeOrder>,
    /// A directory, as its children know it.
    pub dir: OnceLock<Arc<DirRef>>,
}

/// An entry of a snapshot's tree (or a snapshot's root directory): kept
/// small, one per inode the kernel holds (a million after a `find` over a
/// million files).
pub struct Stored {
    /// Index into [`MountFs::snapshots`].
    pub snapshot: u32,
    /// How many times the kernel was handed this inode and has not yet
    /// forgotten it; at 0 the entry leaves the table.
    pub lookups: AtomicU32,
    /// Half of its identity's digest ([`Identity::tag`]), which tells it
    /// from another identity given the same number; zero for a snapshot
    /// root, which has a fixed number.
    pub tag: [u8; 16],
    pub place: Place,
    pub state: OnceLock<Box<State>>,
}

impl Stored {
    /// The number this directory's children are hashed under (`ino` is
    /// its own).
    pub fn key(&self, ino: u64) -> u64 {
        match &self.place {
            Place::Root(r) => r.key,
            Place::In { .. } => ino,
        }
    }

    pub fn state(&self) -> &State {
        self.state.get_or_init(Box::default)
    }

    pub fn parent(&self) -> u64 {
        match &self.place {
            Place::Root(r) => r.parent,
            Place::In { dir, .. } => dir.ino,
        }
    }
}

pub enum Entry {
    Dir(VirtualDir),
    Link {
        name: Vec<u8>,
        parent: u64,
        target: Vec<u8>,
    },
    Stored(Stored),
}

impl Entry {
    /// The tag of a stored entry's identity; None for the layout's and
    /// for snapshot roots.
    pub fn tag(&self) -> Option<[u8; 16]> {
        match self {
            Entry::Stored(s) if s.tag != [0; 16] => Some(s.tag),
            _ => None,
        }
    }

    fn name_and_parent(&self, fs: &MountFs) -> (Vec<u8>, u64) {
        match self {
            Entry::Dir(d) => (d.name.clone(), d.parent),
            Entry::Link { name, parent, .. } => (name.clone(), *parent),
            Entry::Stored(s) => match &s.place {
                Place::Root(r) => (r.name.clone(), r.parent),
                Place::In { dir, .. } => (
                    fs.node_of(s)
                        .map(|n| n.name.clone())
                        .unwrap_or_else(|_| b"?".to_vec()),
                    dir.ino,
                ),
            },
        }
    }
}

/// What `strongroom mount` was asked for.
pub struct Options {
    /// Bytes of sealed blobs kept in the cache directory (with the disk
    /// cache in use); decrypted blobs in memory are kept to the smaller of
    /// this and [`MEMORY`].
    pub cache_size: u64,
    pub allow_other: bool,
}

/// The most bytes of decrypted blobs kept in memory: what the read-ahead
/// of sequential readers needs.
pub const MEMORY: u64 = prefetch::WINDOW_MEMORY;

/// The mounted filesystem: the reader, the verified snapshots and the
/// inodes handed out so far.
pub struct MountFs {
    pub reader: Arc<Reader<'static>>,
    pub snapshots: Vec<Snapshot>,
    pub table: Table,
    pub trees: Arc<lru::Lru<Tree>>,
    pub blobs: Arc<lru::Lru<Vec<u8>>>,
    pub prefetch: prefetch::Prefetcher,
    /// The time shown on virtual directories: the newest snapshot's.
    pub newest: SystemTime,
    pub owner: (u32, u32),
}

/// The bytes of trees kept decoded in memory, in few shards: a reader's
/// node is looked up in its directory's tree on every request, so a
/// directory of tens of thousands of entries must stay cached.
const TREE_CACHE: usize = 32 << 20;
const TREE_SHARDS: usize = 2;

impl MountFs {
    pub fn new(reader: Reader<'static>, snapshots: Vec<Snapshot>, options: &Options) -> MountFs {
        let newest = snapshots
            .iter()
            .map(|s| attr::system_time(&s.catalog.time))
            .max()
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let reader = Arc::new(reader);
        let memory = options.cache_size.min(MEMORY);
        let blobs = Arc::new(lru::Lru::new(memory as usize));
        let trees = Arc::new(lru::Lru::with_shards(TREE_CACHE, TREE_SHARDS));
        MountFs {
            prefetch: prefetch::Prefetcher::new(reader.clone(), blobs.clone(), trees.clone(), memory),
            reader,
            blobs,
            snapshots,
            table: Table::default(),
            trees,
            newest,
            owner: (
                rustix::process::geteuid().as_raw(),
                rustix::process::getegid().as_raw(),
            ),
        }
    }

    /// The path of an inode inside the mount, for messages.
    pub fn path_of(&self, mut ino: u64) -> String {
        let mut parts: Vec<Vec<u8>> = Vec::new();
        while ino != inode::ROOT && parts.len() <= crate::format::tree::MAX_DEPTH + 4 {
            let Some(e) = self.table.get(ino) else { break };
            let (name, parent) = e.name_and_parent(self);
            parts.push(name);
            ino = parent;
        }
        let mut out = Vec::new();
        for p in parts.iter().rev() {
            out.push(b'/');
            out.extend_from_slice(p);
        }
        if out.is_empty() {
            out.push(b'/');
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}
