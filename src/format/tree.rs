//! Tree blobs: one directory's entries, sorted by name, with everything
//! needed to restore them exactly.

use serde::{Deserialize, Serialize};

use super::{Id, Timestamp};

pub const TREE_VERSION: u16 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
    Fifo,
    CharDevice,
    BlockDevice,
    Socket,
}

/// A piece of a file's content: a blob, or a hole that reads as zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Extent {
    Data { id: Id, len: u32 },
    Hole { len: u64 },
}

impl Extent {
    pub fn byte_len(&self) -> u64 {
        match self {
            Extent::Data { len, .. } => *len as u64,
            Extent::Hole { len } => *len,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The name, as bytes: names need not be UTF-8.
    pub name: Vec<u8>,
    pub kind: NodeKind,
    /// The full `st_mode`: type bits, setuid/setgid/sticky, permissions.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub user: Option<String>,
    pub group: Option<String>,
    pub size: u64,
    /// `st_blocks` of the source, in 512-byte units.
    pub blocks: u64,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub dev: u64,
    pub inode: u64,
    pub nlink: u64,
    pub rdev: u64,
    /// A symlink's target bytes.
    pub target: Vec<u8>,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub content: Vec<Extent>,
    pub subtree: Option<Id>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Tree {
    pub version: u16,
    pub nodes: Vec<Node>,
}
