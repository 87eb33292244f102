//! A repository in a local directory: the embedded default.
//!
//! Writes are atomic and durable: a temporary file in `tmp/`, fsync, rename
//! into place, fsync of the directory. Temporary files are named
//! `.write-<host>-<pid>-<random>`, so that the next run on the same host can
//! remove those of a process that was killed.

use std::fs::{self, File};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use lru::LruCache;

use anyhow::{Context, Result, bail};

use super::{Backend, Kind, Listed, NotFound, Pieces};

pub struct Local {
    root: PathBuf,
    /// Packs recently read from, open: a restore reads thousands of small
    /// blobs from each, and opened and closed the pack by path for every
    /// one (a sixth of its system calls on the Linux tree). Packs never
    /// change under their name; one deleted here is closed.
    open_packs: Mutex<LruCache<String, Arc<File>>>,
}

/// Packs kept open at once.
const OPEN_PACKS: usize = 64;

impl Local {
    pub fn new(root: impl AsRef<Path>) -> Self {
        Local {
            root: root.as_ref().to_path_buf(),
            open_packs: Mutex::new(LruCache::new(
                std::num::NonZeroUsize::new(OPEN_PACKS).expect("not zero"),
            )),
        }
    }

    /// An open descriptor of an object: kept open if it is a pack.
    fn open_object(&self, kind: Kind, name: &str) -> Result<Arc<File>> {
        let open = || File::open(self.path(kind, name)).map_err(|e| self.not_found(kind, name, e));
        if kind != Kind::Packs {
            return open().map(Arc::new);
        }
        let cached = self
            .open_packs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned();
        if let Some(f) = cached {
            return Ok(f);
        }
        let f = Arc::new(open()?);
        self.open_packs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .put(name.to_string(), f.clone());
        Ok(f)
    }

    fn path(&self, kind: Kind, name: &str) -> PathBuf {
        self.root.join(kind.path(name))
    }

    fn not_found(&self, kind: Kind, name: &str, e: std::io::Error) -> anyhow::Error {
        let p = self.path(kind, name);
        if e.kind() == ErrorKind::NotFound {
            NotFound(p.display().to_string()).into()
        } else {
            anyhow::Error::new(e).context(format!("reading {}", p.display()))
        }
    }
}

/// A host name as it may appear in a file name.
fn host_for_file_name(host: &str) -> String {
    host.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The prefix of the temporary files of processes of `host`.
fn temporary_prefix(host: &str) -> String {
    format!(".write-{}-", host_for_file_name(host))
}

/// The prefix of this process's temporary files.
fn own_temporary_prefix() -> &'static str {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PREFIX.get_or_init(|| format!("{}{}-", temporary_prefix(&crate::hostname()), std::process::id()))
}

impl Local {
    /// Removes `tmp/` files of `host` whose pid `done` says is finished.
    fn remove_temporaries(&self, host: &str, done: impl Fn(u32) -> bool) {
        let prefix = temporary_prefix(host);
        let Ok(rd) = fs::read_dir(self.root.join("tmp")) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix(&prefix))
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<u32>().ok())
            else {
                continue;
            };
            if done(pid) && e.file_type().is_ok_and(|t| t.is_file()) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

impl Local {
    /// `data` in a temporary file of `tmp/`, synced, ready to move to `dest`.
    fn staged(&self, dest: &Path, data: &[u8]) -> Result<tempfile::NamedTempFile> {
        let tmp_dir = self.root.join("tmp");
        let tmp = {
            let _gate = crate::interrupt::creating_temporary();
            tempfile::Builder::new()
                .prefix(own_temporary_prefix())
                .tempfile_in(&tmp_dir)
                .with_context(|| format!("creating a temporary file in {}", tmp_dir.display()))?
        };
        crate::aligned::write_all_direct(tmp.as_file(), data)
            .and_then(|_| tmp.as_file().sync_all())
            .with_context(|| format!("writing {}", dest.display()))?;
        Ok(tmp)
    }
}

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))
}

impl Backend for Local {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn is_local(&self) -> bool {
        true
    }

    fn create(&self) -> Result<()> {
        if self.root.join("config").exists() {
            bail!("a repository already exists at {}", self.root.display());
        }
        if self.root.exists() && fs::read_dir(&self.root)?.next().is_some() {
            bail!("{} exists and is not empty", self.root.display());
        }
        let mkdir = |p: PathBuf| {
            fs::create_dir_all(&p).with_context(|| format!("creating directory {}", p.display()))
        };
        for kind in Kind::ALL {
            if kind != Kind::Config {
                mkdir(self.root.join(kind.dir()))?;
            }
        }
        for b in 0..=255u8 {
            mkdir(self.root.join("packs").join(format!("{b:02x}")))?;
        }
        mkdir(self.root.join("tmp"))?;
        fsync_dir(&self.root)
    }

    fn read(&self, kind: Kind, name: &str) -> Result<Vec<u8>> {
        fs::read(self.path(kind, name)).map_err(|e| self.not_found(kind, name, e))
    }

    fn read_range(&self, kind: Kind, name: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        let f = self.open_object(kind, name)?;
        let mut buf = Vec::new();
        pread_into(&f, offset, length, &mut buf).map_err(|e| self.not_found(kind, name, e))?;
        Ok(buf)
    }

    fn open_pieces(&self, kind: Kind, name: &str) -> Result<Option<Box<dyn Pieces>>> {
        // Opened afresh, not from the packs kept open: what is read is
        // what the path holds now, and its size is this file's.
        let path = self.path(kind, name);
        let file = File::open(&path).map_err(|e| self.not_found(kind, name, e))?;
        let size = file
            .metadata()
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        Ok(Some(Box::new(LocalPieces { file, size, path })))
    }

    fn write(&self, kind: Kind, name: &str, data: &[u8]) -> Result<()> {
        let dest = self.path(kind, name);
        self.staged(&dest, data)?
            .persist(&dest)
            .map_err(|e| e.error)
            .with_context(|| format!("moving a new object into place at {}", dest.display()))?;
        fsync_dir(dest.parent().unwrap_or(&self.root))
    }

    fn write_new(&self, kind: Kind, name: &str, data: &[u8]) -> Result<bool> {
        let dest = self.path(kind, name);
        let tmp = self.staged(&dest, data)?;
        // A hard link never replaces: of two at once, one finds the other's.
        match fs::hard_link(tmp.path(), &dest) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("moving a new object into place at {}", dest.display()));
            }
        }
        drop(tmp);
        fsync_dir(dest.parent().unwrap_or(&self.root))?;
        Ok(true)
    }

    fn list(&self, kind: Kind) -> Result<Vec<Listed>> {
        let mut out = Vec::new();
        let mut visit = |dir: &Path| -> Result<()> {
            let rd = match fs::read_dir(dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
            };
            for entry in rd {
                let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
                let meta = match entry.metadata() {
                    Ok(m) => m,
                    // Removed since the directory was read (a lock another
                    // process let go of): not there, so not listed.
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => {
                        return Err(e).with_context(|| format!("listing {}", entry.path().display()));
                    }
                };
                if meta.is_file()
                    && let Ok(name) = entry.file_name().into_string()
                {
                    out.push(Listed {
                        name,
                        size: meta.len(),
                    });
                }
            }
            Ok(())
        };
        match kind {
            Kind::Config => {
                if let Ok(m) = fs::metadata(self.root.join("config")) {
                    out.push(Listed {
                        name: "config".into(),
                        size: m.len(),
                    });
                }
            }
            Kind::Packs => {
                for b in 0..=255u8 {
                    visit(&self.root.join("packs").join(format!("{b:02x}")))?;
                }
            }
            _ => visit(&self.root.join(kind.dir()))?,
        }
        Ok(out)
    }

    fn delete(&self, kind: Kind, name: &str) -> Result<()> {
        if kind == Kind::Packs {
            self.open_packs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop(name);
        }
        let p = self.path(kind, name);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("deleting {}", p.display())),
        }
    }

    fn stat(&self, kind: Kind, name: &str) -> Result<u64> {
        fs::metadata(self.path(kind, name))
            .map(|m| m.len())
            .map_err(|e| self.not_found(kind, name, e))
    }

    fn remove_stale_temporaries(&self, host: &str) {
        let me = std::process::id();
        self.remove_temporaries(host, |pid| pid != me && crate::process_is_gone(pid));
    }

    fn remove_own_temporaries(&self) {
        let me = std::process::id();
        self.remove_temporaries(&crate::hostname(), |pid| pid == me);
    }
}

/// A local object opened for [`Backend::open_pieces`].
struct LocalPieces {
    file: File,
    size: u64,
    path: PathBuf,
}

impl Pieces for LocalPieces {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_into(&self, offset: u64, length: u64, buf: &mut Vec<u8>) -> Result<()> {
        pread_into(&self.file, offset, length, buf)
            .with_context(|| format!("reading {}", self.path.display()))
    }
}

/// Appends up to `length` bytes of `f` from `offset` on to `buf` (fewer
/// where the file ends first), read into the buffer's spare room: zeroing
/// it first would be a pass over every byte for nothing.
fn pread_into(f: &File, offset: u64, length: u64, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let (start, length) = (buf.len(), length as usize);
    buf.reserve(length);
    while buf.len() - start < length {
        let at = offset + (buf.len() - start) as u64;
        let room = length - (buf.len() - start);
        let spare = &mut buf.spare_capacity_mut()[..room];
        match rustix::io::pread(f, spare, at) {
            Ok(([], _)) => break,
            Ok((filled, _)) => {
                let n = filled.len();
                // SAFETY: pread initialised these n bytes of the spare
                // room, which start right after the vector's length.
                unsafe { buf.set_len(buf.len() + n) };
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
