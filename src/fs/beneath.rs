//! Creating entries under a restore target relative to directory
//! descriptors, never following a symlink: the names come from a
//! repository, and a hostile tree must not reach outside the target.
//!
//! Directories are reopened by their path below the target with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` (on kernels without it,
//! one `openat(O_NOFOLLOW)` per component); entries are made with
//! `mkdirat`/`openat(O_EXCL | O_NOFOLLOW)`/`symlinkat`/`mknodat`/`linkat`
//! in such a directory, and their metadata set through the open descriptor
//! or with `AT_SYMLINK_NOFOLLOW`.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags, Timestamps};
use rustix::io::Errno;

use crate::format::Timestamp;
use crate::format::tree::{Node, NodeKind};

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

fn io(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

/// Opens the directory `rel` below `base` without following any symlink and
/// without leaving `base` (`rel` empty: `base` itself).
pub fn open_dir(base: BorrowedFd, rel: &Path) -> io::Result<OwnedFd> {
    if rel.as_os_str().is_empty() {
        return rfs::openat(base, ".", DIR_FLAGS, Mode::empty()).map_err(io);
    }
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    match rfs::openat2(base, rel, DIR_FLAGS, Mode::empty(), resolve) {
        Err(Errno::NOSYS | Errno::NAMETOOLONG | Errno::PERM) => {}
        r => return r.map_err(io),
    }
    // One component at a time: each is opened with O_NOFOLLOW, and `rel`
    // holds only names this code built (never `..`).
    let mut fd = rfs::openat(base, ".", DIR_FLAGS, Mode::empty()).map_err(io)?;
    for c in rel.components() {
        let Component::Normal(name) = c else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a plain relative path",
            ));
        };
        fd = rfs::openat(&fd, name, DIR_FLAGS, Mode::empty()).map_err(io)?;
    }
    Ok(fd)
}

/// What was in the way of a new entry and was removed, for the user.
pub enum Replaced {
    Nothing,
    /// A symlink (with its target): it was removed, not followed.
    Symlink(Vec<u8>),
    Other,
}

/// Removes whatever non-directory entry is at `name`; a directory stays
/// and is an error (restore never deletes a user's directory).
fn remove_existing(dir: BorrowedFd, name: &OsStr) -> io::Result<Replaced> {
    let st = match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(Replaced::Nothing),
        Err(e) => return Err(io(e)),
    };
    let replaced = match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a directory is in the way; it was left as it is",
            ));
        }
        FileType::Symlink => {
            let target = rfs::readlinkat(dir, name, Vec::new()).map_err(io)?;
            Replaced::Symlink(target.into_bytes())
        }
        _ => Replaced::Other,
    };
    rfs::unlinkat(dir, name, AtFlags::empty()).map_err(io)?;
    Ok(replaced)
}

/// Runs `make` to create `name`; if something is in the way, removes it
/// (unless it is a directory) and tries once more.
fn create_replacing<T>(
    dir: BorrowedFd,
    name: &OsStr,
    mut make: impl FnMut() -> Result<T, Errno>,
) -> io::Result<(T, Replaced)> {
    match make() {
        Ok(t) => Ok((t, Replaced::Nothing)),
        Err(Errno::EXIST) => {
            let replaced = remove_existing(dir, name)?;
            Ok((make().map_err(io)?, replaced))
        }
        Err(e) => Err(io(e)),
    }
}

/// Makes directory `name` in `dir`, or reuses the directory already there;
/// anything else in the way (a symlink above all) is replaced. Says what
/// was replaced, and whether the directory is a new one.
pub fn make_dir(dir: BorrowedFd, name: &OsStr) -> io::Result<(Replaced, bool)> {
    match rfs::mkdirat(dir, name, Mode::from_raw_mode(0o700)) {
        Ok(()) => Ok((Replaced::Nothing, true)),
        Err(Errno::EXIST) => {
            let st = rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(io)?;
            if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                return Ok((Replaced::Nothing, false));
            }
            let replaced = remove_existing(dir, name)?;
            rfs::mkdirat(dir, name, Mode::from_raw_mode(0o700)).map_err(io)?;
            Ok((replaced, true))
        }
        Err(e) => Err(io(e)),
    }
}

/// Creates a new regular file `name` with permission bits `mode` (0600
/// unless its final bits are known to be safe from the start).
pub fn create_file(dir: BorrowedFd, name: &OsStr, mode: u32) -> io::Result<(OwnedFd, Replaced)> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    create_replacing(dir, name, || {
        rfs::openat(dir, name, flags, Mode::from_raw_mode(mode & 0o777))
    })
}

/// What a file created in directory `dir` starts with, for the restore to
/// skip what it need not set again.
#[derive(Clone, Copy, Default)]
pub struct DirFacts {
    /// Its new files get the creator's group: the directory's group is the
    /// creator's, so neither a setgid directory nor a `grpid` mount gives
    /// them another.
    pub creators_group: bool,
    /// No default ACL: a new file's permission bits are the mode asked
    /// for less the umask.
    pub no_default_acl: bool,
}

impl DirFacts {
    pub fn of(dir: BorrowedFd, egid: u32) -> DirFacts {
        let creators_group = rfs::fstat(dir).is_ok_and(|st| st.st_gid == egid);
        let no_default_acl = matches!(
            rfs::fgetxattr(dir, "system.posix_acl_default", &mut [0u8; 0][..]),
            Err(Errno::NODATA | Errno::NOTSUP)
        );
        DirFacts {
            creators_group,
            no_default_acl,
        }
    }
}

pub fn create_symlink(dir: BorrowedFd, name: &OsStr, target: &[u8]) -> io::Result<Replaced> {
    let target = OsStr::from_bytes(target);
    create_replacing(dir, name, || rfs::symlinkat(target, dir, name)).map(|r| r.1)
}

pub fn create_special(dir: BorrowedFd, name: &OsStr, node: &Node) -> io::Result<Replaced> {
    let kind = match node.kind {
        NodeKind::Fifo => FileType::Fifo,
        NodeKind::CharDevice => FileType::CharacterDevice,
        NodeKind::BlockDevice => FileType::BlockDevice,
        NodeKind::Socket => FileType::Socket,
        _ => return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a special file")),
    };
    let mode = Mode::from_raw_mode(node.mode & 0o7777);
    create_replacing(dir, name, || rfs::mknodat(dir, name, kind, mode, node.rdev)).map(|r| r.1)
}

/// Hard-links `from_name` in `from` as `name` in `dir` (never following).
pub fn link(from: BorrowedFd, from_name: &OsStr, dir: BorrowedFd, name: &OsStr) -> io::Result<Replaced> {
    create_replacing(dir, name, || {
        rfs::linkat(from, from_name, dir, name, AtFlags::empty())
    })
    .map(|r| r.1)
}

fn timestamps(node: &Node) -> Timestamps {
    let ts = |t: Timestamp| rfs::Timespec {
        tv_sec: t.sec,
        tv_nsec: t.nsec as _,
    };
    Timestamps {
        last_access: ts(node.atime),
        last_modification: ts(node.mtime),
    }
}

/// How to reach an entry whose metadata is being set.
pub enum Entry<'a> {
    /// An open regular file or directory.
    Open(BorrowedFd<'a>),
    /// A symlink, by name in its directory (never followed).
    Link(BorrowedFd<'a>, &'a OsStr),
    /// A special file: an `O_PATH` descriptor of the very inode this
    /// restore made (so nothing swapped into its place, a symlink or a hard
    /// link, is ever touched).
    Special(BorrowedFd<'a>),
}

/// The `/proc/self/fd` path of a descriptor, which reaches its inode.
fn proc_path(fd: BorrowedFd, then: &[u8]) -> Vec<u8> {
    let mut p = format!("/proc/self/fd/{}", fd.as_raw_fd()).into_bytes();
    if !then.is_empty() {
        p.push(b'/');
        p.extend_from_slice(then);
    }
    p
}

/// Opens the special file just made at `name` as an `O_PATH` descriptor
/// (without opening a fifo or device), checking it is one of `node`'s kind.
pub fn open_special(dir: BorrowedFd, name: &OsStr, node: &Node) -> io::Result<OwnedFd> {
    let fd = rfs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io)?;
    let st = rfs::fstat(&fd).map_err(io)?;
    if st.st_mode & libc::S_IFMT != node.mode & libc::S_IFMT {
        return Err(io::Error::other("the entry was replaced while it was restored"));
    }
    Ok(fd)
}

/// Sets one extended attribute without following a symlink.
pub fn set_xattr(entry: &Entry, name: &[u8], value: &[u8]) -> io::Result<()> {
    let name = OsStr::from_bytes(name);
    match entry {
        Entry::Open(fd) => rfs::fsetxattr(fd, name, value, rfs::XattrFlags::empty()).map_err(io),
        // No setxattr-at call exists: reach a symlink through its directory's
        // descriptor in /proc, whose last component is not followed...
        Entry::Link(dir, entry) => {
            let p = proc_path(*dir, entry.as_bytes());
            rfs::lsetxattr(OsStr::from_bytes(&p), name, value, rfs::XattrFlags::empty()).map_err(io)
        }
        // ...and a special file through its own descriptor's magic link.
        Entry::Special(fd) => {
            let p = proc_path(*fd, b"");
            rfs::setxattr(OsStr::from_bytes(&p), name, value, rfs::XattrFlags::empty()).map_err(io)
        }
    }
}

pub fn set_owner(entry: &Entry, uid: u32, gid: u32) -> io::Result<()> {
    let (u, g) = (rfs::Uid::from_raw(uid), rfs::Gid::from_raw(gid));
    match entry {
        Entry::Open(fd) => rfs::fchown(fd, Some(u), Some(g)).map_err(io),
        Entry::Link(dir, name) => {
            rfs::chownat(dir, *name, Some(u), Some(g), AtFlags::SYMLINK_NOFOLLOW).map_err(io)
        }
        Entry::Special(fd) => rfs::chownat(fd, "", Some(u), Some(g), AtFlags::EMPTY_PATH).map_err(io),
    }
}

/// Sets the mode (not on symlinks, whose mode Linux ignores).
pub fn set_mode(entry: &Entry, mode: u32) -> io::Result<()> {
    let mode = Mode::from_raw_mode(mode & 0o7777);
    match entry {
        Entry::Open(fd) => rfs::fchmod(fd, mode).map_err(io),
        // Through the magic link of the inode this restore made: no name
        // is resolved, so nothing swapped into its place is followed.
        Entry::Special(fd) => rfs::chmod(OsStr::from_bytes(&proc_path(*fd, b"")), mode).map_err(io),
        Entry::Link(..) => Ok(()),
    }
}

pub fn set_times(entry: &Entry, node: &Node) -> io::Result<()> {
    let ts = timestamps(node);
    match entry {
        Entry::Open(fd) => rfs::futimens(fd, &ts).map_err(io),
        Entry::Link(dir, name) => rfs::utimensat(dir, *name, &ts, AtFlags::SYMLINK_NOFOLLOW).map_err(io),
        Entry::Special(fd) => rfs::utimensat(
            rfs::CWD,
            OsStr::from_bytes(&proc_path(*fd, b"")),
            &ts,
            AtFlags::empty(),
        )
        .map_err(io),
    }
}

/// Whether a directory can take new entries: makes and removes a probe.
pub fn probe_writable(dir: BorrowedFd) -> io::Result<()> {
    let name = format!(".strongroom-probe-{}", std::process::id());
    rfs::mkdirat(dir, name.as_str(), Mode::from_raw_mode(0o700)).map_err(io)?;
    rfs::unlinkat(dir, name.as_str(), AtFlags::REMOVEDIR).map_err(io)
}

/// Borrows an owned descriptor (a shorthand).
pub fn fd(f: &OwnedFd) -> BorrowedFd<'_> {
    f.as_fd()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn special(mode: u32) -> Node {
        Node::new(b"fifo", NodeKind::Fifo, libc::S_IFIFO | mode)
    }

    #[test]
    fn a_symlink_swapped_in_for_a_special_file_is_never_followed() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, "v").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
        let dir = rfs::open(d.path(), DIR_FLAGS, Mode::empty()).unwrap();
        let node = special(0o6777);
        create_special(dir.as_fd(), "fifo".as_ref(), &node).unwrap();
        // What a local attacker's rename would leave in its place.
        std::fs::remove_file(d.path().join("fifo")).unwrap();
        std::os::unix::fs::symlink(&victim, d.path().join("fifo")).unwrap();
        assert!(open_special(dir.as_fd(), "fifo".as_ref(), &node).is_err());
        // Once opened, the descriptor is the inode made, whatever the name
        // points to later.
        std::fs::remove_file(d.path().join("fifo")).unwrap();
        create_special(dir.as_fd(), "fifo".as_ref(), &node).unwrap();
        let fd = open_special(dir.as_fd(), "fifo".as_ref(), &node).unwrap();
        std::fs::remove_file(d.path().join("fifo")).unwrap();
        std::os::unix::fs::symlink(&victim, d.path().join("fifo")).unwrap();
        let entry = Entry::Special(fd.as_fd());
        set_mode(&entry, node.mode).unwrap();
        let m = std::fs::metadata(&victim).unwrap().permissions().mode();
        assert_eq!(m & 0o7777, 0o600);
    }
}
