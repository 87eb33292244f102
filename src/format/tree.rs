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

impl Node {
    /// An entry with this name, kind and mode (type bits included), owned
    /// by root, one link, dated the epoch, and nothing else set.
    pub fn new(name: &[u8], kind: NodeKind, mode: u32) -> Node {
        Node {
            name: name.to_vec(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            user: None,
            group: None,
            size: 0,
            blocks: 0,
            atime: Timestamp::default(),
            mtime: Timestamp::default(),
            ctime: Timestamp::default(),
            dev: 0,
            inode: 0,
            nlink: 1,
            rdev: 0,
            target: Vec::new(),
            xattrs: Vec::new(),
            content: Vec::new(),
            subtree: None,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Tree {
    pub version: u16,
    pub nodes: Vec<Node>,
}

/// The longest name an entry may have (`NAME_MAX`).
pub const MAX_NAME: usize = 255;
/// The longest symlink target (`PATH_MAX` less its NUL).
pub const MAX_TARGET: usize = 4095;
/// The deepest nesting of directories read: deeper is refused as damage,
/// before it can exhaust a stack or make paths no kernel call takes.
pub const MAX_DEPTH: usize = 1024;
/// Linux's limits on one extended attribute.
pub const MAX_XATTR_NAME: usize = 255;
pub const MAX_XATTR_VALUE: usize = 64 * 1024;

fn shown(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

/// Whether `name` may name an entry: not empty, `.` or `..`, no `/` or
/// NUL, at most [`MAX_NAME`] bytes.
pub fn check_name(name: &[u8]) -> Result<(), String> {
    if name.is_empty() {
        return Err("an entry has an empty name".into());
    }
    if name == b"." || name == b".." {
        return Err(format!("an entry is named {:?}", shown(name)));
    }
    if name.contains(&b'/') || name.contains(&0) {
        return Err(format!("the name \"{}\" holds a / or NUL byte", shown(name)));
    }
    if name.len() > MAX_NAME {
        return Err(format!(
            "a name of {} bytes is longer than {MAX_NAME}",
            name.len()
        ));
    }
    Ok(())
}

impl Tree {
    /// Decodes a tree blob, accepting only the canonical form: the canonical
    /// encoding, names sorted and unique and each a valid name, every entry
    /// consistent with its kind. Anything else is damage, refused the same
    /// way by `check`, `ls`, `restore` and the mount.
    pub fn decode(bytes: &[u8], what: &str) -> anyhow::Result<Tree> {
        let tree: Tree = super::decode(bytes, what)?;
        tree.validate()
            .map_err(|e| anyhow::anyhow!("{what} is damaged: {e}"))?;
        Ok(tree)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.version != TREE_VERSION {
            return Err(format!(
                "it has version {}, expected {TREE_VERSION}",
                self.version
            ));
        }
        let mut previous: Option<&[u8]> = None;
        for n in &self.nodes {
            check_name(&n.name)?;
            if previous.is_some_and(|p| p >= n.name.as_slice()) {
                return Err(format!(
                    "its names are not sorted and unique (at \"{}\")",
                    shown(&n.name)
                ));
            }
            previous = Some(&n.name);
            n.validate()
                .map_err(|e| format!("entry \"{}\": {e}", shown(&n.name)))?;
        }
        Ok(())
    }
}

impl Node {
    fn validate(&self) -> Result<(), String> {
        let type_bits = match self.kind {
            NodeKind::File => libc::S_IFREG,
            NodeKind::Dir => libc::S_IFDIR,
            NodeKind::Symlink => libc::S_IFLNK,
            NodeKind::Fifo => libc::S_IFIFO,
            NodeKind::CharDevice => libc::S_IFCHR,
            NodeKind::BlockDevice => libc::S_IFBLK,
            NodeKind::Socket => libc::S_IFSOCK,
        };
        if self.mode & libc::S_IFMT != type_bits || self.mode & !(libc::S_IFMT | 0o7777) != 0 {
            return Err(format!(
                "its mode {:o} does not match its kind {:?}",
                self.mode, self.kind
            ));
        }
        if (self.kind == NodeKind::Dir) != self.subtree.is_some() {
            return Err("only a directory, and every directory, has a subtree".into());
        }
        if self.kind != NodeKind::File && !self.content.is_empty() {
            return Err("only a regular file has content".into());
        }
        if self.kind == NodeKind::Symlink {
            if self.target.is_empty() || self.target.len() > MAX_TARGET || self.target.contains(&0) {
                return Err("its symlink target is empty, too long or holds a NUL byte".into());
            }
        } else if !self.target.is_empty() {
            return Err("only a symlink has a target".into());
        }
        let mut total: u64 = 0;
        for e in &self.content {
            let len = e.byte_len();
            if len == 0 {
                return Err("its content has an empty extent".into());
            }
            total = total
                .checked_add(len)
                .ok_or("its content is longer than any file")?;
        }
        if total > self.size {
            return Err(format!(
                "its content holds {total} bytes, more than its size {}",
                self.size
            ));
        }
        let mut previous: Option<&[u8]> = None;
        for (name, value) in &self.xattrs {
            if name.is_empty() || name.len() > MAX_XATTR_NAME || name.contains(&0) {
                return Err("an extended attribute's name is empty, too long or holds a NUL byte".into());
            }
            if value.len() > MAX_XATTR_VALUE {
                return Err(format!("extended attribute \"{}\" is too long", shown(name)));
            }
            if previous.is_some_and(|p| p >= name.as_slice()) {
                return Err("its extended attributes are not sorted and unique".into());
            }
            previous = Some(name);
        }
        Ok(())
    }
}
