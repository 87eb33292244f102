//! A null FUSE filesystem: one read-only file, `/data`, whose bytes are
//! computed from their offset. No storage, no decryption, no cache: what
//! `cp` gets from it is the ceiling of any FUSE read path on this machine,
//! which `benches/mount.sh` measures strongroom's mount against. It mounts
//! read-only with one thread per core and 1 MiB of read-ahead, answers
//! `open` with `FOPEN_KEEP_CACHE` (strongroom's mount needs no open request
//! at all, which the kernel then treats the same way), computes each read's
//! bytes afresh, and runs until unmounted.
//!
//!   cargo run --release --example nullfs -- MOUNTPOINT [SIZE_MIB]   # default 1024

use std::ffi::OsStr;
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, KernelConfig,
    LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen, Request,
};

const TTL: Duration = Duration::from_secs(3600);
const DATA: INodeNo = INodeNo(2);

struct Null {
    size: u64,
}

impl Null {
    fn attr(&self, ino: INodeNo) -> FileAttr {
        let file = ino == DATA;
        FileAttr {
            ino,
            size: if file { self.size } else { 0 },
            blocks: if file { self.size.div_ceil(512) } else { 0 },
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind: if file {
                FileType::RegularFile
            } else {
                FileType::Directory
            },
            perm: if file { 0o444 } else { 0o555 },
            nlink: if file { 1 } else { 2 },
            uid: 0,
            gid: 0,
            rdev: 0,
            flags: 0,
            blksize: 4096,
        }
    }
}

/// The byte at `offset`: cheap to compute, not all one value.
fn byte_at(offset: u64) -> u8 {
    (offset ^ (offset >> 12)) as u8
}

impl Filesystem for Null {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_readahead(1 << 20);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent == INodeNo::ROOT && name == "data" {
            reply.entry(&TTL, &self.attr(DATA), Generation(0));
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match ino {
            INodeNo::ROOT | DATA => reply.attr(&TTL, &self.attr(ino)),
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE);
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
        if ino != DATA {
            return reply.error(Errno::EISDIR);
        }
        let end = (offset + size as u64).min(self.size);
        let buf: Vec<u8> = (offset.min(end)..end).map(byte_at).collect();
        reply.data(&buf);
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        if ino != INodeNo::ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        let entries = [
            (INodeNo::ROOT, FileType::Directory, "."),
            (INodeNo::ROOT, FileType::Directory, ".."),
            (DATA, FileType::RegularFile, "data"),
        ];
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(*ino, i as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let Some(mountpoint) = args.next() else {
        eprintln!("usage: nullfs MOUNTPOINT [SIZE_MIB]");
        std::process::exit(2);
    };
    let mib: u64 = args.next().and_then(|a| a.to_str()?.parse().ok()).unwrap_or(1024);
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::NoSuid,
        MountOption::NoDev,
        MountOption::FSName("nullfs".into()),
    ];
    config.n_threads = Some(std::thread::available_parallelism().map_or(2, |n| n.get()));
    config.clone_fd = true;
    fuser::mount(Null { size: mib << 20 }, mountpoint, &config)
}
