//! What `stat` and the xattr calls show: stored nodes exactly as stored
//! (devices, fifos and sockets have nothing more than this), virtual
//! directories and links owned by the mounting user and dated by the
//! newest snapshot.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{Errno, FileAttr, FileType, INodeNo};

use super::{Entry, MountFs};
use crate::format::Timestamp;
use crate::format::tree::{Node, NodeKind};

pub fn system_time(t: &Timestamp) -> SystemTime {
    let nsec = Duration::new(0, t.nsec.min(999_999_999));
    if t.sec >= 0 {
        UNIX_EPOCH + Duration::from_secs(t.sec as u64) + nsec
    } else {
        UNIX_EPOCH - Duration::from_secs(t.sec.unsigned_abs()) + nsec
    }
}

pub fn file_type(kind: NodeKind) -> FileType {
    match kind {
        NodeKind::File => FileType::RegularFile,
        NodeKind::Dir => FileType::Directory,
        NodeKind::Symlink => FileType::Symlink,
        NodeKind::Fifo => FileType::NamedPipe,
        NodeKind::CharDevice => FileType::CharDevice,
        NodeKind::BlockDevice => FileType::BlockDevice,
        NodeKind::Socket => FileType::Socket,
    }
}

/// The kernel's 32-bit device encoding (`new_encode_dev`), which the FUSE
/// protocol carries, of a stored `dev_t`.
fn fuse_rdev(rdev: u64) -> u32 {
    let major = libc::major(rdev as libc::dev_t);
    let minor = libc::minor(rdev as libc::dev_t);
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

pub fn stored_attr(ino: u64, n: &Node) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: n.size,
        blocks: n.blocks,
        atime: system_time(&n.atime),
        mtime: system_time(&n.mtime),
        ctime: system_time(&n.ctime),
        crtime: system_time(&n.ctime),
        kind: file_type(n.kind),
        perm: (n.mode & 0o7777) as u16,
        nlink: n.nlink.min(u32::MAX as u64) as u32,
        uid: n.uid,
        gid: n.gid,
        rdev: fuse_rdev(n.rdev),
        blksize: 4096,
        flags: 0,
    }
}

impl MountFs {
    pub fn attr(&self, ino: u64, e: &Entry) -> Result<FileAttr, Errno> {
        Ok(match e {
            Entry::Stored(s) => stored_attr(ino, &*self.node_of(s)?),
            Entry::Dir(d) => self.virtual_attr(ino, FileType::Directory, 0, 2 + d.children.len() as u32),
            Entry::Link { target, .. } => self.virtual_attr(ino, FileType::Symlink, target.len() as u64, 1),
        })
    }

    /// What `.` and `..` of a listing carry: only their type counts (the
    /// kernel takes no attributes from them), so no tree is looked at.
    pub fn dot_attr(&self, ino: u64) -> FileAttr {
        self.virtual_attr(ino, FileType::Directory, 0, 2)
    }

    fn virtual_attr(&self, ino: u64, kind: FileType, size: u64, nlink: u32) -> FileAttr {
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: 0,
            atime: self.newest,
            mtime: self.newest,
            ctime: self.newest,
            crtime: self.newest,
            kind,
            perm: if kind == FileType::Directory { 0o555 } else { 0o777 },
            nlink,
            uid: self.owner.0,
            gid: self.owner.1,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    pub fn getattr(&self, ino: u64) -> Result<FileAttr, Errno> {
        let e = self.table.get(ino).ok_or(Errno::ENOENT)?;
        self.attr(ino, &e)
    }
}

/// What getxattr and listxattr answer: the bytes, or the size asked for
/// with a size of 0.
pub enum XattrReply {
    Size(u32),
    Data(Vec<u8>),
}

fn sized(bytes: Vec<u8>, size: u32) -> Result<XattrReply, Errno> {
    if size == 0 {
        Ok(XattrReply::Size(bytes.len() as u32))
    } else if (size as usize) < bytes.len() {
        Err(Errno::ERANGE)
    } else {
        Ok(XattrReply::Data(bytes))
    }
}

impl MountFs {
    pub fn getxattr(&self, ino: u64, name: &[u8], size: u32) -> Result<XattrReply, Errno> {
        let e = self.table.get(ino).ok_or(Errno::ENOENT)?;
        let Entry::Stored(s) = &*e else {
            return Err(Errno::NO_XATTR);
        };
        let value = self
            .node_of(s)?
            .xattrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .ok_or(Errno::NO_XATTR)?;
        sized(value, size)
    }

    pub fn listxattr(&self, ino: u64, size: u32) -> Result<XattrReply, Errno> {
        let e = self.table.get(ino).ok_or(Errno::ENOENT)?;
        let mut names = Vec::new();
        if let Entry::Stored(s) = &*e {
            for (n, _) in &self.node_of(s)?.xattrs {
                names.extend_from_slice(n);
                names.push(0);
            }
        }
        sized(names, size)
    }
}
