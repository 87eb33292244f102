//! Storage backends: bytes by (kind, name), nothing more. A backend never
//! sees a key and never interprets what it stores.
//!
//! Every backend implements [`Backend`] and passes the shared suite in
//! `tests` below (the in-memory one included).

pub mod https;
pub mod local;
pub mod mem;
pub mod retry;
pub mod s3;
#[doc(hidden)]
pub mod suite;

use std::fmt;
use std::sync::Arc;

use anyhow::Result;

static INTERACTIVE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes network backends opened after this give up sooner: a request
/// that sees no byte for 10 seconds fails, and retries stop 20 seconds
/// after the first attempt, so that a read through the mount turns into
/// EIO within half a minute instead of blocking the program that reads.
pub fn set_interactive() {
    INTERACTIVE.store(true, std::sync::atomic::Ordering::Relaxed);
}

pub fn is_interactive() -> bool {
    INTERACTIVE.load(std::sync::atomic::Ordering::Relaxed)
}

/// The kinds of object a repository holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Config,
    Keys,
    Snapshots,
    Index,
    Packs,
    Locks,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Config,
        Kind::Keys,
        Kind::Snapshots,
        Kind::Index,
        Kind::Packs,
        Kind::Locks,
    ];

    pub fn dir(self) -> &'static str {
        match self {
            Kind::Config => "",
            Kind::Keys => "keys",
            Kind::Snapshots => "snapshots",
            Kind::Index => "index",
            Kind::Packs => "packs",
            Kind::Locks => "locks",
        }
    }

    /// The path of an object relative to the repository root; packs are
    /// spread over 256 directories by the first byte of their name.
    pub fn path(self, name: &str) -> String {
        match self {
            Kind::Config => "config".to_string(),
            Kind::Packs => format!("packs/{}/{name}", name.get(..2).unwrap_or("00")),
            _ => format!("{}/{name}", self.dir()),
        }
    }
}

/// The error a backend returns for an object that does not exist; callers
/// find it with `err.downcast_ref::<NotFound>()`.
#[derive(Debug)]
pub struct NotFound(pub String);

impl fmt::Display for NotFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} does not exist", self.0)
    }
}

impl std::error::Error for NotFound {}

pub fn is_not_found(err: &anyhow::Error) -> bool {
    err.chain().any(|e| e.downcast_ref::<NotFound>().is_some())
}

/// A failure that may pass if the request is made again: no answer, a
/// broken connection, a timeout, a store that said it is busy or failing.
/// Only these are retried ([`retry::Retry`]).
#[derive(Debug)]
pub struct Transient(pub String);

impl fmt::Display for Transient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Transient {}

/// The storage refused this credential (a wrong password or key, a role
/// that may not do this): never retried.
#[derive(Debug)]
pub struct Refused(pub String);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

pub fn is_transient(err: &anyhow::Error) -> bool {
    err.chain().any(|e| e.downcast_ref::<Transient>().is_some())
}

/// A listed object: its name and size in bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    pub size: u64,
}

/// An object opened once, read a range at a time: see
/// [`Backend::open_pieces`].
pub trait Pieces {
    /// Its size when it was opened.
    fn size(&self) -> u64;
    /// Appends the bytes from `offset` on, `length` of them (fewer where the
    /// object ends first), to `buf`.
    fn read_into(&self, offset: u64, length: u64, buf: &mut Vec<u8>) -> Result<()>;
}

pub trait Backend: Send + Sync {
    /// Where this backend stores, for messages.
    fn location(&self) -> String;

    /// Reads cost no more than reads of the cache directory would (a local
    /// directory, memory): a disk cache of what it holds would only add
    /// I/O.
    fn is_local(&self) -> bool {
        false
    }

    /// The storage lets this credential add objects but neither delete
    /// nor overwrite them (a strongroom server's writer role). A local
    /// path or full S3 credentials can delete history.
    fn append_only(&self) -> bool {
        false
    }

    /// Creates what an empty repository needs; fails if one exists.
    fn create(&self) -> Result<()>;

    /// The whole object, or [`NotFound`].
    fn read(&self, kind: Kind, name: &str) -> Result<Vec<u8>>;

    /// `length` bytes from `offset`; fewer only if the object ends first.
    fn read_range(&self, kind: Kind, name: &str, offset: u64, length: u64) -> Result<Vec<u8>>;

    /// Opens an object to be read in ranges from this one opening, its
    /// size taken from it too; `None` where the storage reads objects whole
    /// (then read it with [`Backend::read`]).
    fn open_pieces(&self, _kind: Kind, _name: &str) -> Result<Option<Box<dyn Pieces>>> {
        Ok(None)
    }

    /// Stores an object atomically: readers see all of it or none of it,
    /// and it is durable when this returns. Replaces an existing object
    /// (only `config` is ever replaced; other names are content hashes).
    fn write(&self, kind: Kind, name: &str, data: &[u8]) -> Result<()>;

    /// Stores an object unless one of that name exists; says whether it
    /// stored it. Backends that can create exclusively (a local directory,
    /// memory, S3 with `If-None-Match`) do so; the default looks, then
    /// writes.
    fn write_new(&self, kind: Kind, name: &str, data: &[u8]) -> Result<bool> {
        match self.stat(kind, name) {
            Ok(_) => Ok(false),
            Err(e) if is_not_found(&e) => self.write(kind, name, data).map(|()| true),
            Err(e) => Err(e),
        }
    }

    /// Every object of a kind, in no particular order.
    fn list(&self, kind: Kind) -> Result<Vec<Listed>>;

    /// Removes an object; removing a missing one is not an error.
    fn delete(&self, kind: Kind, name: &str) -> Result<()>;

    /// The size of an object, or [`NotFound`].
    fn stat(&self, kind: Kind, name: &str) -> Result<u64>;

    /// Removes what writes by processes of `host` that no longer exist left
    /// half done (a killed run's temporary files). Best effort; called when
    /// a lock is taken. Backends whose writes leave nothing behind keep the
    /// default, which does nothing.
    fn remove_stale_temporaries(&self, _host: &str) {}

    /// Removes this process's own unfinished writes, when it is interrupted.
    /// Best effort, like [`Backend::remove_stale_temporaries`].
    fn remove_own_temporaries(&self) {}
}

impl Kind {
    /// The largest object of this kind a client reads whole: far above
    /// what strongroom writes, so a planted giant object is refused by its
    /// size instead of filling memory.
    pub fn max_size(self) -> u64 {
        match self {
            Kind::Config | Kind::Keys | Kind::Snapshots => 16 << 20,
            Kind::Locks => 1 << 20,
            Kind::Index => 1 << 30,
            // A pack holds up to its target size plus one blob, and a tree
            // blob may be as large as `reader::MAX_TREE`.
            Kind::Packs => (1 << 30) + (256 << 20),
        }
    }
}

/// Reads a whole object, refusing one larger than its kind's
/// [`Kind::max_size`] before reading it.
pub fn read_bounded(backend: &dyn Backend, kind: Kind, name: &str) -> Result<Vec<u8>> {
    let max = kind.max_size();
    let size = backend.stat(kind, name)?;
    if size > max {
        anyhow::bail!(
            "{} is {size} bytes, more than any {} strongroom writes ({max}): refused",
            kind.path(name),
            kind.dir()
        );
    }
    let bytes = backend.read(kind, name)?;
    if bytes.len() as u64 > max {
        anyhow::bail!(
            "{} grew past {max} bytes while it was read: refused",
            kind.path(name)
        );
    }
    Ok(bytes)
}

/// What a remote repository needs beyond its URL.
#[derive(Default)]
pub struct Remote<'a> {
    /// `--ca PEM` or `STRONGROOM_CA`.
    pub ca: Option<&'a std::path::Path>,
    /// The CA certificate a key file carries.
    pub key_ca: Option<&'a str>,
    /// `--password-file`.
    pub password_file: Option<&'a std::path::Path>,
}

/// Where a site's package puts its CA certificate.
pub const SITE_CA: &str = "/etc/strongroom/ca.pem";

impl Remote<'_> {
    /// The CA to trust: `--ca`/`STRONGROOM_CA`, else the key file's, else
    /// [`SITE_CA`].
    pub fn trust(&self, url: &str) -> Result<https::Trust> {
        if let Some(path) = self.ca {
            let pem = std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("reading the CA certificate {}: {e}", path.display()))?;
            return Ok(https::Trust {
                pem,
                source: format!("--ca {}", path.display()),
            });
        }
        if let Some(pem) = self.key_ca {
            return Ok(https::Trust {
                pem: pem.as_bytes().to_vec(),
                source: "the key file's CA certificate".into(),
            });
        }
        match std::fs::read(SITE_CA) {
            Ok(pem) => Ok(https::Trust {
                pem,
                source: SITE_CA.into(),
            }),
            Err(_) => Err(crate::error::Exit::usage(format!(
                "repository {url}: no strongroom CA to trust: give --ca PEM (or STRONGROOM_CA), \
                 use a key file made with --ca, or install {SITE_CA}"
            ))),
        }
    }
}

/// Opens the backend a repository URL names.
pub fn open(url: &str, remote: &Remote) -> Result<Arc<dyn Backend>> {
    if let Some(path) = url.strip_prefix("file://") {
        return Ok(Arc::new(local::Local::new(path)));
    }
    if let Some(rest) = url.strip_prefix("s3:") {
        return Ok(Arc::new(retry::Retry::new(s3::S3::new(rest)?)));
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        https::parse_url(url)?;
        let trust = remote.trust(url)?;
        let (_, account, _) = https::parse_url(url)?;
        let password = crate::keys::account_password(
            remote.password_file,
            &format!("Password of account {account}: "),
            false,
        )?;
        return Ok(Arc::new(retry::Retry::new(https::Https::new(
            url, trust, password,
        )?)));
    }
    if url.starts_with("mem:") {
        return Ok(Arc::new(mem::Mem::default()));
    }
    Ok(Arc::new(local::Local::new(url)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_passes_the_suite() {
        suite::run(&mem::Mem::default());
    }

    #[test]
    fn local_passes_the_suite() {
        let dir = tempfile::tempdir().unwrap();
        suite::run(&local::Local::new(dir.path().join("repo")));
    }
}
