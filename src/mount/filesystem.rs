//! The `fuser` handlers: each asks a helper of [`MountFs`] and only
//! replies. Everything that would change the filesystem is EROFS.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use fuser::{
    BsdFileFlags, Errno, FileHandle, Filesystem, Generation, INodeNo, InitFlags, KernelConfig, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use super::MountFs;
use super::attr::XattrReply;
use super::statfs::BLOCK;

/// Snapshots never change: the kernel may keep what it learns.
const TTL: Duration = Duration::from_secs(365 * 24 * 3600);
const GEN: Generation = Generation(0);
/// Directory entries numbered per step of a listing: a reply holds a few
/// dozen to a few hundred (a readdirplus reply, with attributes, a few
/// dozen).
const PIECE: usize = 128;
const PIECE_PLUS: usize = 32;

fn reply_xattr(r: Result<XattrReply, Errno>, reply: ReplyXattr) {
    match r {
        Ok(XattrReply::Size(n)) => reply.size(n),
        Ok(XattrReply::Data(d)) => reply.data(&d),
        Err(e) => reply.error(e),
    }
}

/// What the mount asks of the kernel at init (also asked by
/// `examples/nulltree.rs`, the ceiling it is measured against).
pub fn ask_kernel(config: &mut KernelConfig) {
    // The largest read-ahead the kernel allows.
    if let Err(max) = config.set_max_readahead(u32::MAX) {
        let _ = config.set_max_readahead(max);
    }
    // Always readdirplus (not the kernel's adaptive choice): a listing
    // hands over every entry's attributes, so `ls -l` and `find` need no
    // lookup per entry. Symlink targets are kept by the kernel too: a path
    // through `snapshots/latest` is otherwise resolved by a READLINK every
    // time.
    let wanted =
        InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_PARALLEL_DIROPS | InitFlags::FUSE_CACHE_SYMLINKS;
    let _ = config.add_capabilities(wanted & config.capabilities());
}

impl Filesystem for MountFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        ask_kernel(config);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.lookup(parent.0, name.as_bytes()) {
            Ok((_, attr)) => reply.entry(&TTL, &attr, GEN),
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.table.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.getattr(ino.0) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        reply.error(self.open(ino.0, flags))
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.read(ino.0, offset, size) {
            Ok(d) => reply.data(d.bytes()),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != fuser::OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        // ENOSYS: directories need no open request either; the kernel
        // then also caches their listings (FOPEN_CACHE_DIR).
        match self.table.get(ino.0) {
            Some(_) => reply.error(Errno::ENOSYS),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let mut at = offset as usize;
        loop {
            let piece = match self.children(ino.0, at, PIECE) {
                Ok(p) => p,
                Err(e) => return reply.error(e),
            };
            for (name, child, attr, _) in &piece {
                at += 1;
                if reply.add(INodeNo(*child), at as u64, attr.kind, OsStr::from_bytes(name)) {
                    return reply.ok();
                }
            }
            if piece.len() < PIECE {
                return reply.ok();
            }
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let mut at = offset as usize;
        loop {
            let piece = match self.children(ino.0, at, PIECE_PLUS) {
                Ok(p) => p,
                Err(e) => return reply.error(e),
            };
            for (name, child, attr, entry) in &piece {
                at += 1;
                let plain = OsStr::from_bytes(name);
                if reply.add(INodeNo(*child), at as u64, plain, &TTL, attr, GEN) {
                    return reply.ok();
                }
                // The kernel takes this entry as a lookup (but not `.` and
                // `..`): counted only now that it fits in the reply.
                if name != b"." && name != b".." {
                    self.table.count(*child, entry);
                }
            }
            if piece.len() < PIECE_PLUS {
                return reply.ok();
            }
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        reply_xattr(self.getxattr(ino.0, name.as_bytes(), size), reply)
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        reply_xattr(self.listxattr(ino.0, size), reply)
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        match self.lseek(ino.0, offset, whence) {
            Ok(at) => reply.offset(at),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: fuser::ReplyStatfs) {
        let f = self.statfs();
        let name_max = crate::format::tree::MAX_NAME as u32;
        reply.statfs(f.blocks, 0, 0, f.files, 0, BLOCK, name_max, BLOCK);
    }

    // Everything below would change a snapshot: refused.

    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(Errno::EROFS)
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS)
    }

    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS)
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS)
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS)
    }

    fn symlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, _target: &Path, reply: ReplyEntry) {
        reply.error(Errno::EROFS)
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS)
    }

    fn link(&self, _req: &Request, _ino: INodeNo, _newparent: INodeNo, _newname: &OsStr, reply: ReplyEntry) {
        reply.error(Errno::EROFS)
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS)
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS)
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS)
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        reply.error(Errno::EROFS)
    }
}
