//! Metadata the standard library does not reach: xattrs and owner names.

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Mutex;

use crate::format::tree::{Node, NodeKind};

use super::place::Stat;

pub fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// Extended attributes: (name, value), sorted by name.
pub type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// The extended attributes of a path (not following a symlink), sorted.
pub fn read_xattrs(path: &Path) -> io::Result<Xattrs> {
    let c = cpath(path)?;
    read_xattrs_with(
        // SAFETY: a NUL-terminated path, and a buffer pointer and length
        // that describe one buffer.
        |buf| unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) },
        |name, buf| unsafe { libc::lgetxattr(c.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) },
    )
}

/// The extended attributes of what `path` leads to, following symlinks:
/// for `/proc/self/fd/N`, the object descriptor N was opened on.
pub fn read_xattrs_following(path: &Path) -> io::Result<Xattrs> {
    let c = cpath(path)?;
    read_xattrs_with(
        // SAFETY: as in `read_xattrs`.
        |buf| unsafe { libc::listxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) },
        |name, buf| unsafe { libc::getxattr(c.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) },
    )
}

/// The extended attributes of an open file or directory, sorted.
pub fn read_xattrs_fd(fd: BorrowedFd) -> io::Result<Xattrs> {
    let fd = fd.as_raw_fd();
    read_xattrs_with(
        // SAFETY: a descriptor the caller holds open, and a buffer pointer
        // and length that describe one buffer.
        |buf| unsafe { libc::flistxattr(fd, buf.as_mut_ptr().cast(), buf.len()) },
        |name, buf| unsafe { libc::fgetxattr(fd, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) },
    )
}

/// Lists names with `list`, then reads each value with `get` (both return
/// a length or -1 with errno, like the xattr system calls).
fn read_xattrs_with(
    list: impl Fn(&mut [u8]) -> isize,
    get: impl Fn(&CStr, &mut [u8]) -> isize,
) -> io::Result<Xattrs> {
    let mut names = vec![0u8; 1024];
    let len = loop {
        let n = list(&mut names);
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) => names.resize(names.len() * 4, 0),
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            _ => return Err(e),
        }
    };
    let mut out = Vec::new();
    for name in names[..len].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).expect("split on NUL");
        let mut val = vec![0u8; 256];
        loop {
            let n = get(&cname, &mut val);
            if n >= 0 {
                val.truncate(n as usize);
                out.push((name.to_vec(), val));
                break;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ERANGE) => val.resize(val.len() * 4, 0),
                // Removed between list and get.
                Some(libc::ENODATA) => break,
                _ => return Err(e),
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Maps uid/gid to names, remembering answers.
#[derive(Default)]
pub struct Names {
    users: Mutex<HashMap<u32, Option<String>>>,
    groups: Mutex<HashMap<u32, Option<String>>>,
}

impl Names {
    pub fn user(&self, uid: u32) -> Option<String> {
        let mut m = self.users.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(uid).or_insert_with(|| lookup_user(uid)).clone()
    }

    pub fn group(&self, gid: u32) -> Option<String> {
        let mut m = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(gid).or_insert_with(|| lookup_group(gid)).clone()
    }
}

fn lookup_user(uid: u32) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: getpwuid_r with a zeroed passwd and a buffer we own.
    unsafe {
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut out = std::ptr::null_mut();
        if libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) != 0 || out.is_null() {
            return None;
        }
        Some(
            std::ffi::CStr::from_ptr(pw.pw_name)
                .to_string_lossy()
                .into_owned(),
        )
    }
}

fn lookup_group(gid: u32) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: getgrgid_r with a zeroed group and a buffer we own.
    unsafe {
        let mut gr: libc::group = std::mem::zeroed();
        let mut out = std::ptr::null_mut();
        if libc::getgrgid_r(gid, &mut gr, buf.as_mut_ptr(), buf.len(), &mut out) != 0 || out.is_null() {
            return None;
        }
        Some(
            std::ffi::CStr::from_ptr(gr.gr_name)
                .to_string_lossy()
                .into_owned(),
        )
    }
}

pub fn kind_of(mode: u32) -> NodeKind {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => NodeKind::Dir,
        libc::S_IFLNK => NodeKind::Symlink,
        libc::S_IFIFO => NodeKind::Fifo,
        libc::S_IFCHR => NodeKind::CharDevice,
        libc::S_IFBLK => NodeKind::BlockDevice,
        libc::S_IFSOCK => NodeKind::Socket,
        _ => NodeKind::File,
    }
}

/// A node carrying everything `lstat` says; content, target, xattrs and
/// subtree are filled in by the caller.
pub fn node_from_stat(name: &OsStr, m: &Stat, names: &Names) -> Node {
    Node {
        name: name.as_bytes().to_vec(),
        kind: kind_of(m.mode),
        mode: m.mode,
        uid: m.uid,
        gid: m.gid,
        user: names.user(m.uid),
        group: names.group(m.gid),
        size: m.size,
        blocks: m.blocks,
        atime: m.atime,
        mtime: m.mtime,
        ctime: m.ctime,
        dev: m.dev,
        inode: m.ino,
        nlink: m.nlink,
        rdev: m.rdev,
        target: Vec::new(),
        xattrs: Vec::new(),
        content: Vec::new(),
        subtree: None,
    }
}
