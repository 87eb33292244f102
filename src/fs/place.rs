//! Where the archiver finds an entry: its full path (for messages, excludes
//! and the files cache) and, below a directory it holds open, that
//! directory's descriptor. Calls relative to the descriptor walk one
//! component instead of the whole path, and a directory renamed above the
//! one being read cannot redirect them. The last component is never
//! followed, and a file or directory is read only if the object opened is
//! the one `lstat` saw.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, CWD, Mode, OFlags};

use crate::format::Timestamp;

use super::meta::{Xattrs, read_xattrs, read_xattrs_following};

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
    /// What `fstat` says of an open file.
    pub fn of_fd(fd: impl AsFd) -> io::Result<Stat> {
        Ok(Stat::from_raw(&rustix::fs::fstat(fd)?))
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
    /// and therefore the next run's trees, as they were. Without blocking,
    /// so a FIFO put in a file's place cannot hang the run; and only if it
    /// is still the object `seen` describes (same device, inode and type).
    fn open(&self, flags: OFlags, seen: &Stat) -> io::Result<OwnedFd> {
        let (dir, name) = self.at();
        let flags = flags | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
        let fd = match rustix::fs::openat(dir, name, flags | OFlags::NOATIME, Mode::empty()) {
            Err(rustix::io::Errno::PERM) => rustix::fs::openat(dir, name, flags, Mode::empty())?,
            r => r?,
        };
        let now = Stat::of_fd(&fd)?;
        if (now.dev, now.ino, now.mode & libc::S_IFMT) != (seen.dev, seen.ino, seen.mode & libc::S_IFMT) {
            return Err(io::Error::other("it was replaced while it was backed up"));
        }
        Ok(fd)
    }

    /// Opens the regular file `seen` describes, for reading.
    pub fn open_file(&self, seen: &Stat) -> io::Result<File> {
        self.open(OFlags::empty(), seen).map(File::from)
    }

    /// Opens the directory `seen` describes, for listing.
    pub fn open_dir(&self, seen: &Stat) -> io::Result<OwnedFd> {
        self.open(OFlags::DIRECTORY, seen)
    }

    /// The xattrs of an entry that is neither a regular file nor a
    /// directory (a symlink, a device, a FIFO, a socket), through a
    /// descriptor that only names it, so no directory on its path can be
    /// swapped for a symlink meanwhile. Without `/proc`, by its path.
    pub fn xattrs_of_other(&self) -> io::Result<Xattrs> {
        let Some(dir) = self.dir else {
            return read_xattrs(self.path);
        };
        let (_, name) = self.at();
        let fd = rustix::fs::openat(
            dir,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let proc = Path::new("/proc/self/fd").join(fd.as_raw_fd().to_string());
        match read_xattrs_following(&proc) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => read_xattrs(self.path),
            r => r,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_replaced_after_lstat_is_not_opened_and_a_fifo_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("file"), "data").unwrap();
        let fd = Place::top(dir.path()).lstat().unwrap();
        let fd = Place::top(dir.path()).open_dir(&fd).unwrap();
        let path = dir.path().join("file");
        let place = Place::within(fd.as_fd(), &path);
        let seen = place.lstat().unwrap();
        assert!(place.open_file(&seen).is_ok());

        // The file is swapped for a FIFO nobody writes: opening it neither
        // blocks nor succeeds.
        std::fs::remove_file(&path).unwrap();
        rustix::fs::mknodat(
            fd.as_fd(),
            "file",
            rustix::fs::FileType::Fifo,
            Mode::RUSR | Mode::WUSR,
            0,
        )
        .unwrap();
        let e = place.open_file(&seen).unwrap_err();
        assert!(e.to_string().contains("replaced"), "{e}");

        // Nor is a directory swapped for a symlink followed.
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let sub = dir.path().join("sub");
        let place = Place::within(fd.as_fd(), &sub);
        let seen = place.lstat().unwrap();
        std::fs::remove_dir(&sub).unwrap();
        std::os::unix::fs::symlink("/", &sub).unwrap();
        assert!(place.open_dir(&seen).is_err());
    }
}
