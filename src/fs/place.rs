//! Where the archiver finds an entry: its full path (for messages, excludes
//! and the files cache) and, below a directory it holds open, that
//! directory's descriptor. Calls relative to the descriptor walk one
//! component instead of the whole path, and a directory renamed above the
//! one being read cannot redirect them. The last component is never
//! followed: the entry is what `lstat` saw, or the call fails.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rustix::fs::{AtFlags, CWD, Mode, OFlags};

use crate::format::Timestamp;

/// What `lstat` says of an entry.
#[derive(Clone, Copy, Debug)]
pub struct Stat {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub blocks: u64,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
    pub rdev: u64,
}

impl Stat {
    pub fn of(m: &std::fs::Metadata) -> Stat {
        let t = |sec: i64, nsec: i64| Timestamp {
            sec,
            nsec: nsec as u32,
        };
        Stat {
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            size: m.size(),
            blocks: m.blocks(),
            atime: t(m.atime(), m.atime_nsec()),
            mtime: t(m.mtime(), m.mtime_nsec()),
            ctime: t(m.ctime(), m.ctime_nsec()),
            dev: m.dev(),
            ino: m.ino(),
            nlink: m.nlink(),
            rdev: m.rdev(),
        }
    }

    // The fields' types differ between architectures.
    #[allow(clippy::unnecessary_cast)]
    fn from_raw(s: &rustix::fs::Stat) -> Stat {
        let t = |sec: i64, nsec: i64| Timestamp {
            sec,
            nsec: nsec as u32,
        };
        Stat {
            mode: s.st_mode as u32,
            uid: s.st_uid as u32,
            gid: s.st_gid as u32,
            size: s.st_size as u64,
            blocks: s.st_blocks as u64,
            atime: t(s.st_atime as i64, s.st_atime_nsec as i64),
            mtime: t(s.st_mtime as i64, s.st_mtime_nsec as i64),
            ctime: t(s.st_ctime as i64, s.st_ctime_nsec as i64),
            dev: s.st_dev as u64,
            ino: s.st_ino as u64,
            nlink: s.st_nlink as u64,
            rdev: s.st_rdev as u64,
        }
    }
}

#[derive(Clone, Copy)]
pub struct Place<'a> {
    pub path: &'a Path,
    dir: Option<BorrowedFd<'a>>,
}

impl<'a> Place<'a> {
    /// An entry reached by its whole path.
    pub fn top(path: &'a Path) -> Place<'a> {
        Place { path, dir: None }
    }

    /// The entry named by `path`'s last component in the open directory
    /// `dir` (which `path` without its last component names).
    pub fn within(dir: BorrowedFd<'a>, path: &'a Path) -> Place<'a> {
        Place { path, dir: Some(dir) }
    }

    /// The directory to resolve against, and the name to resolve there.
    fn at(&self) -> (BorrowedFd<'a>, &'a OsStr) {
        match self.dir {
            Some(d) => (d, self.path.file_name().unwrap_or(self.path.as_os_str())),
            None => (CWD, self.path.as_os_str()),
        }
    }

    pub fn lstat(&self) -> io::Result<Stat> {
        let (dir, name) = self.at();
        Ok(Stat::from_raw(&rustix::fs::statat(
            dir,
            name,
            AtFlags::SYMLINK_NOFOLLOW,
        )?))
    }

    /// Opens without updating the access time where the kernel allows
    /// (`O_NOATIME` needs ownership or root), so a backup leaves atimes,
    /// and therefore the next run's trees, as they were.
    fn open(&self, flags: OFlags) -> io::Result<OwnedFd> {
        let (dir, name) = self.at();
        let flags = flags | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match rustix::fs::openat(dir, name, flags | OFlags::NOATIME, Mode::empty()) {
            Err(rustix::io::Errno::PERM) => Ok(rustix::fs::openat(dir, name, flags, Mode::empty())?),
            r => Ok(r?),
        }
    }

    pub fn open_file(&self) -> io::Result<File> {
        self.open(OFlags::empty()).map(File::from)
    }

    pub fn open_dir(&self) -> io::Result<OwnedFd> {
        self.open(OFlags::DIRECTORY)
    }

    /// A symlink's target.
    pub fn read_link(&self) -> io::Result<Vec<u8>> {
        let (dir, name) = self.at();
        Ok(rustix::fs::readlinkat(dir, name, Vec::new())?.into_bytes())
    }
}

/// The names in an open directory, read through a duplicate of its
/// descriptor (which shares its `O_NOATIME`); `dir` stays usable.
pub fn read_dir_names(dir: &OwnedFd) -> io::Result<Vec<std::ffi::OsString>> {
    let mut d = rustix::fs::Dir::new(dir.try_clone()?)?;
    let mut names = Vec::new();
    while let Some(e) = d.read() {
        let e = e?;
        let name = e.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    Ok(names)
}
