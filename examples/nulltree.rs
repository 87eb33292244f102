//! A null FUSE filesystem of a whole tree: the names, attributes and
//! symlink targets of a local directory, read into memory before mounting,
//! served read-only with each file's bytes computed from their offset. No
//! storage, no decryption, no cache to fill: what `find`, `ls -lR` and
//! `cp -a` take on it is the ceiling of any FUSE filesystem serving that
//! tree on this machine, which `benches/mount.sh` measures strongroom's
//! mount (and restic's) against.
//!
//! It asks the kernel for what strongroom's mount asks for and mounts the
//! same way, through the mount's own functions (`ask_kernel`,
//! `fuse_config`); it keeps entries and attributes as long, answers `open`
//! and `opendir` with ENOSYS (the kernel then sends none), `getxattr` with
//! ENODATA and `listxattr` with an empty list.
//!
//!   cargo run --release --example nulltree -- DIR MOUNTPOINT

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, Generation, INodeNo, KernelConfig, LockOwner,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEntry, ReplyOpen, ReplyXattr,
    Request,
};

const TTL: Duration = Duration::from_secs(3600);

struct Node {
    attr: FileAttr,
    parent: u64,
    name: OsString,
    /// Of a directory, its entries' inode numbers sorted by name.
    children: Vec<u64>,
    /// Of a symlink, its target.
    target: Vec<u8>,
}

struct Tree {
    /// Inode `n` is `nodes[n - 1]`; the root is 1.
    nodes: Vec<Node>,
}

fn kind_of(t: std::fs::FileType) -> FileType {
    if t.is_dir() {
        FileType::Directory
    } else if t.is_symlink() {
        FileType::Symlink
    } else if t.is_block_device() {
        FileType::BlockDevice
    } else if t.is_char_device() {
        FileType::CharDevice
    } else if t.is_fifo() {
        FileType::NamedPipe
    } else if t.is_socket() {
        FileType::Socket
    } else {
        FileType::RegularFile
    }
}

fn time(secs: i64, nsecs: i64) -> std::time::SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsecs as u32)
    } else {
        UNIX_EPOCH
    }
}

impl Tree {
    /// Reads `root` and everything below it (metadata and symlink targets
    /// only), without following symlinks.
    fn read(root: &Path) -> std::io::Result<Tree> {
        let mut tree = Tree { nodes: Vec::new() };
        tree.add(root, 1, OsString::new())?;
        let mut stack = vec![(root.to_path_buf(), 1u64)];
        while let Some((dir, ino)) = stack.pop() {
            let mut names: Vec<OsString> = std::fs::read_dir(&dir)?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<_, _>>()?;
            names.sort();
            let mut children = Vec::with_capacity(names.len());
            for name in names {
                let path = dir.join(&name);
                let child = tree.add(&path, ino, name)?;
                if tree.nodes[child as usize - 1].attr.kind == FileType::Directory {
                    stack.push((path, child));
                }
                children.push(child);
            }
            tree.nodes[ino as usize - 1].children = children;
        }
        Ok(tree)
    }

    fn add(&mut self, path: &Path, parent: u64, name: OsString) -> std::io::Result<u64> {
        let m = std::fs::symlink_metadata(path)?;
        let ino = self.nodes.len() as u64 + 1;
        let kind = kind_of(m.file_type());
        let target = if kind == FileType::Symlink {
            std::fs::read_link(path)?.as_os_str().as_bytes().to_vec()
        } else {
            Vec::new()
        };
        let attr = FileAttr {
            ino: INodeNo(ino),
            size: m.size(),
            blocks: m.blocks(),
            atime: time(m.atime(), m.atime_nsec()),
            mtime: time(m.mtime(), m.mtime_nsec()),
            ctime: time(m.ctime(), m.ctime_nsec()),
            crtime: UNIX_EPOCH,
            kind,
            perm: (m.mode() & 0o7777) as u16,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid: m.uid(),
            gid: m.gid(),
            rdev: m.rdev() as u32,
            flags: 0,
            blksize: 4096,
        };
        self.nodes.push(Node {
            attr,
            parent,
            name,
            children: Vec::new(),
            target,
        });
        Ok(ino)
    }

    fn node(&self, ino: INodeNo) -> Option<&Node> {
        self.nodes.get((ino.0 as usize).checked_sub(1)?)
    }

    /// A directory's entries from position `offset`: `.`, `..`, then its
    /// children by name.
    fn entries(&self, ino: INodeNo, offset: u64) -> Result<Vec<(u64, &OsStr)>, Errno> {
        let n = self.node(ino).ok_or(Errno::ENOENT)?;
        if n.attr.kind != FileType::Directory {
            return Err(Errno::ENOTDIR);
        }
        let dots = [(ino.0, OsStr::new(".")), (n.parent, OsStr::new(".."))];
        let children = n
            .children
            .iter()
            .map(|&c| (c, self.nodes[c as usize - 1].name.as_os_str()));
        Ok(dots.into_iter().chain(children).skip(offset as usize).collect())
    }
}

/// The byte at `offset`: cheap to compute, not all one value.
fn byte_at(offset: u64) -> u8 {
    (offset ^ (offset >> 12)) as u8
}

impl Filesystem for Tree {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        strongroom::mount::filesystem::ask_kernel(config);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(p) = self.node(parent) else {
            return reply.error(Errno::ENOENT);
        };
        match p
            .children
            .binary_search_by(|&c| self.nodes[c as usize - 1].name.as_os_str().cmp(name))
        {
            Ok(i) => reply.entry(&TTL, &self.nodes[p.children[i] as usize - 1].attr, Generation(0)),
            Err(_) => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.node(ino) {
            Some(n) => reply.attr(&TTL, &n.attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.node(ino) {
            Some(n) if n.attr.kind == FileType::Symlink => reply.data(&n.target),
            _ => reply.error(Errno::EINVAL),
        }
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.error(Errno::ENOSYS);
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.error(Errno::ENOSYS);
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
        let Some(n) = self.node(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let end = (offset + size as u64).min(n.attr.size);
        let buf: Vec<u8> = (offset.min(end)..end).map(byte_at).collect();
        reply.data(&buf);
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        match self.entries(ino, offset) {
            Ok(entries) => {
                for (i, (child, name)) in entries.into_iter().enumerate() {
                    let kind = self.nodes[child as usize - 1].attr.kind;
                    if reply.add(INodeNo(child), offset + i as u64 + 1, kind, name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
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
        match self.entries(ino, offset) {
            Ok(entries) => {
                for (i, (child, name)) in entries.into_iter().enumerate() {
                    let attr = &self.nodes[child as usize - 1].attr;
                    if reply.add(
                        INodeNo(child),
                        offset + i as u64 + 1,
                        name,
                        &TTL,
                        attr,
                        Generation(0),
                    ) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn getxattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENODATA);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        if size == 0 {
            reply.size(0);
        } else {
            reply.data(&[]);
        }
    }
}

fn main() -> std::io::Result<()> {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let [dir, mountpoint] = &args[..] else {
        eprintln!("usage: nulltree DIR MOUNTPOINT");
        std::process::exit(2);
    };
    let tree = Tree::read(Path::new(dir))?;
    let config = strongroom::mount::daemon::fuse_config(false, "nulltree");
    fuser::mount(tree, mountpoint, &config)
}
