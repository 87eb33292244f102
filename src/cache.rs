//! The local cache directory: unwrapped run keys (sealed), the files cache
//! (sealed), the index table, the rollback record and when locks were first
//! seen (authenticated). Everything in it is an accelerator or a record of
//! this client's own: a missing or damaged entry costs work, never
//! correctness, and an unusable directory falls back to no cache with one
//! warning.
//!
//! Another local user must not be able to turn the directory against its
//! owner: it is created 0700, refused if someone else owns it or may write
//! to it, kept open as a descriptor, and everything inside it is reached
//! from that descriptor without following symlinks, so nothing outside it is
//! read, written or deleted.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, Mode, OFlags};

use crate::crypto::SecretKey;
use crate::crypto::subkeys::{hmac_parts, verify_parts};
use crate::format::Id;

pub struct Cache {
    dir: Option<OwnedFd>,
}

/// An authenticated entry, as found.
pub enum Record {
    Missing,
    /// Present but not made by a holder of this repository's key (or torn).
    Damaged,
    Found(Vec<u8>),
}

const MAC_LEN: usize = 32;
const OPEN_DIR: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

fn refuse(dir: &Path, why: &str) -> Cache {
    crate::warn(&format!(
        "cache directory {} {why}: working without a cache",
        dir.display()
    ));
    Cache { dir: None }
}

/// Whether a directory is ours alone to write: owned by this user, not
/// writable by group or others.
fn owned_privately(fd: impl AsFd) -> Result<(), String> {
    let st = rustix::fs::fstat(fd).map_err(|e| format!("cannot be examined ({e})"))?;
    let me = rustix::process::geteuid().as_raw();
    if st.st_uid != me {
        return Err(format!("is owned by another user (uid {})", st.st_uid));
    }
    if st.st_mode & 0o022 != 0 {
        return Err(format!(
            "is writable by group or others (mode {:o})",
            st.st_mode & 0o7777
        ));
    }
    Ok(())
}

/// A name inside the cache: plain components, no `.`, `..` or empty ones.
fn components(name: &str) -> Option<Vec<&str>> {
    let parts: Vec<&str> = name.split('/').collect();
    parts
        .iter()
        .all(|c| !c.is_empty() && *c != "." && *c != ".." && !c.contains('\0'))
        .then_some(parts)
}

/// A fresh name for a file being written, renamed into place when whole.
pub(crate) fn temporary_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let salt = u64::from_le_bytes(crate::crypto::random_array().unwrap_or([0; 8]));
    format!(".tmp-{}-{n}-{salt:016x}", std::process::id())
}

impl Cache {
    /// Resolves the cache directory: `--cache-dir` / `STRONGROOM_CACHE_DIR`,
    /// else `$XDG_CACHE_HOME/strongroom`, else `$HOME/.cache/strongroom`.
    pub fn open(explicit: Option<&Path>) -> Cache {
        let dir = explicit.map(Path::to_path_buf).or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .filter(|v| !v.is_empty())
                .map(|x| PathBuf::from(x).join("strongroom"))
                .or_else(|| {
                    std::env::var_os("HOME")
                        .filter(|v| !v.is_empty())
                        .map(|h| PathBuf::from(h).join(".cache/strongroom"))
                })
        });
        let Some(dir) = dir else {
            crate::warn(
                "no cache directory (no --cache-dir, XDG_CACHE_HOME or HOME): working without a cache",
            );
            return Cache { dir: None };
        };
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(parent);
        }
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(_) => return refuse(&dir, "is not writable"),
        }
        // The directory itself is the user's choice and may be reached
        // through a symlink; what it holds is not followed.
        let Ok(fd) = rustix::fs::open(
            &dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        ) else {
            return refuse(&dir, "is not writable");
        };
        if let Err(why) = owned_privately(&fd) {
            return refuse(&dir, &why);
        }
        let probe = temporary_name();
        let writable = rustix::fs::openat(
            &fd,
            probe.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::RUSR | Mode::WUSR,
        )
        .is_ok();
        if !writable {
            return refuse(&dir, "is not writable");
        }
        let _ = rustix::fs::unlinkat(&fd, probe.as_str(), AtFlags::empty());
        Cache { dir: Some(fd) }
    }

    /// Where the cache directory is, if there is one.
    pub fn path(&self) -> Option<PathBuf> {
        let fd = self.dir.as_ref()?;
        std::fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(fd))).ok()
    }

    pub fn is_usable(&self) -> bool {
        self.dir.is_some()
    }

    /// Opens (and with `create`, makes) the directory `<repo>/<dirs…>`,
    /// following no symlink and entering no directory another user owns.
    fn subdir(&self, repo: &Id, dirs: &[&str], create: bool) -> Option<OwnedFd> {
        let mut fd = rustix::fs::openat(self.dir.as_ref()?, ".", OPEN_DIR, Mode::empty()).ok()?;
        let hex = repo.to_hex();
        for c in std::iter::once(hex.as_str()).chain(dirs.iter().copied()) {
            if create {
                match rustix::fs::mkdirat(&fd, c, Mode::RWXU) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(_) => return None,
                }
            }
            let next = match rustix::fs::openat(&fd, c, OPEN_DIR, Mode::empty()) {
                // A symlink or file where a directory of ours belongs: the
                // entry itself is removed (never what it points to) and
                // the directory made again.
                Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) if create => {
                    rustix::fs::unlinkat(&fd, c, AtFlags::empty()).ok()?;
                    rustix::fs::mkdirat(&fd, c, Mode::RWXU).ok()?;
                    rustix::fs::openat(&fd, c, OPEN_DIR, Mode::empty()).ok()?
                }
                r => r.ok()?,
            };
            owned_privately(&next).ok()?;
            fd = next;
        }
        Some(fd)
    }

    /// Opens (making it if need be) the directory `<repo>/<name>`, for a
    /// cache that manages its own entries relative to it.
    pub fn directory(&self, repo: &Id, name: &str) -> Option<OwnedFd> {
        self.subdir(repo, &components(name)?, true)
    }

    /// The directory holding `name`, and its last component.
    fn parent_of<'n>(&self, repo: &Id, name: &'n str, create: bool) -> Option<(OwnedFd, &'n str)> {
        let parts = components(name)?;
        let (last, dirs) = parts.split_last()?;
        Some((self.subdir(repo, dirs, create)?, last))
    }

    /// Opens a regular file entry for reading, not through a symlink (and
    /// without blocking on a fifo put in its place).
    pub fn open_file(&self, repo: &Id, name: &str) -> Option<File> {
        let (dir, last) = self.parent_of(repo, name, false)?;
        let fd = rustix::fs::openat(
            &dir,
            last,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        let f = File::from(fd);
        f.metadata().ok()?.is_file().then_some(f)
    }

    pub fn get(&self, repo: &Id, name: &str) -> Option<Vec<u8>> {
        let mut f = self.open_file(repo, name)?;
        let mut out = Vec::new();
        f.read_to_end(&mut out).ok()?;
        Some(out)
    }

    /// Stores an entry atomically; failures are ignored (it is only a cache).
    pub fn put(&self, repo: &Id, name: &str, data: &[u8]) {
        let Some((dir, last)) = self.parent_of(repo, name, true) else {
            return;
        };
        let tmp = temporary_name();
        let Ok(fd) = rustix::fs::openat(
            &dir,
            tmp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::RUSR | Mode::WUSR,
        ) else {
            return;
        };
        let mut f = File::from(fd);
        let moved = f.write_all(data).is_ok() && rustix::fs::renameat(&dir, tmp.as_str(), &dir, last).is_ok();
        if !moved {
            let _ = rustix::fs::unlinkat(&dir, tmp.as_str(), AtFlags::empty());
        }
    }

    /// The names of the entries of a cache subdirectory.
    pub fn list(&self, repo: &Id, subdir: &str) -> Vec<String> {
        let Some(dir) = components(subdir).and_then(|c| self.subdir(repo, &c, false)) else {
            return Vec::new();
        };
        let Ok(entries) = rustix::fs::Dir::read_from(&dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().ok().map(str::to_string))
            .filter(|n| n != "." && n != "..")
            .collect()
    }

    /// Removes the entries of a cache subdirectory not named `keep` or
    /// `keep.<extension>`.
    pub fn remove_others(&self, repo: &Id, subdir: &str, keep: &str) {
        self.retain(repo, subdir, |name| {
            name == keep || name.starts_with(&format!("{keep}."))
        });
    }

    /// Removes the entries of a cache subdirectory that `keep` refuses.
    /// Only entries of that directory are unlinked (a symlink among them is
    /// removed itself, never followed).
    pub fn retain(&self, repo: &Id, subdir: &str, keep: impl Fn(&str) -> bool) {
        let Some(dir) = components(subdir).and_then(|c| self.subdir(repo, &c, false)) else {
            return;
        };
        let Ok(entries) = rustix::fs::Dir::read_from(&dir) else {
            return;
        };
        for e in entries.flatten() {
            let Ok(name) = e.file_name().to_str() else {
                continue;
            };
            if name != "." && name != ".." && !keep(name) {
                let _ = rustix::fs::unlinkat(&dir, name, AtFlags::empty());
            }
        }
    }

    /// Reads an entry written by [`Cache::put_authenticated`] under the same
    /// key, repository and name.
    pub fn get_authenticated(&self, repo: &Id, name: &str, key: &SecretKey) -> Record {
        let Some(bytes) = self.get(repo, name) else {
            return Record::Missing;
        };
        if bytes.len() < MAC_LEN {
            return Record::Damaged;
        }
        let (data, tag) = bytes.split_at(bytes.len() - MAC_LEN);
        if verify_parts(key, &record_parts(repo, name, data), tag) {
            Record::Found(data.to_vec())
        } else {
            Record::Damaged
        }
    }

    /// Stores `data` followed by its MAC over the repository, name and data.
    pub fn put_authenticated(&self, repo: &Id, name: &str, key: &SecretKey, data: &[u8]) {
        let mut out = data.to_vec();
        out.extend_from_slice(&hmac_parts(key, &record_parts(repo, name, data)));
        self.put(repo, name, &out);
    }
}

fn record_parts<'a>(repo: &'a Id, name: &'a str, data: &'a [u8]) -> [&'a [u8]; 4] {
    [b"strongroom cache record", &repo.0, name.as_bytes(), data]
}
