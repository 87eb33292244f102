//! The stored types, with their version numbers. Plain serde types encoded
//! with postcard; no I/O and no cryptography happen here.
//!
//! Object kinds and names: `config`, `keys/<id>` ([`envelope`]),
//! `snapshots/<id>` ([`manifest`]), `index/<id>` ([`index`]),
//! `packs/<xx>/<id>` ([`pack`]), `locks/<id>`. Every `<id>` is the SHA-256 of
//! the stored bytes.

pub mod config;
pub mod envelope;
pub mod index;
pub mod keyfile;
pub mod lock;
pub mod manifest;
pub mod pack;
pub mod tree;

use std::fmt;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// The repository format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 2;

/// A 256-bit identifier: a blob id (keyed HMAC of the plaintext), or an
/// object name (SHA-256 of the stored bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct Id(pub [u8; 32]);

impl Id {
    pub fn of_bytes(stored: &[u8]) -> Id {
        Id(crate::crypto::sha256(stored))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    pub fn from_hex(s: &str) -> Option<Id> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Id(out))
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", &self.to_hex()[..16])
    }
}

/// A backup run's identifier: names its key envelope's contents.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct RunId(pub [u8; 16]);

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RunId({self})")
    }
}

/// The kind of a blob: file content, or a directory listing.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum BlobKind {
    Data,
    Tree,
}

impl BlobKind {
    pub fn tag(self) -> u8 {
        match self {
            BlobKind::Data => 0,
            BlobKind::Tree => 1,
        }
    }
}

/// A point in time with nanoseconds, as `struct timespec`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize)]
pub struct Timestamp {
    pub sec: i64,
    pub nsec: u32,
}

impl Timestamp {
    pub fn now() -> Timestamp {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp {
            sec: d.as_secs() as i64,
            nsec: d.subsec_nanos(),
        }
    }

    pub fn as_nanos(&self) -> i128 {
        self.sec as i128 * 1_000_000_000 + self.nsec as i128
    }
}

/// Encodes a stored type.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("encoding to memory cannot fail")
}

/// Decodes a stored type, naming what it was on failure. Only the canonical
/// encoding is accepted: the value must encode back to exactly these bytes
/// (no trailing bytes, no overlong integers), so one value has one form.
pub fn decode<T: DeserializeOwned + Serialize>(bytes: &[u8], what: &str) -> Result<T> {
    let value: T = postcard::from_bytes(bytes).with_context(|| format!("{what} is malformed"))?;
    // Wiped: the value may be a key file's secrets.
    if *zeroize::Zeroizing::new(encode(&value)) != bytes {
        anyhow::bail!("{what} is malformed: it is not in canonical form");
    }
    Ok(value)
}

/// Decodes a value this client wrote and authenticated itself (a cache
/// entry), where maps need not come back in the same order.
pub fn decode_lenient<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    postcard::from_bytes(bytes).with_context(|| format!("{what} is malformed"))
}

/// A body with its signature; the signature covers the type name and `body`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Signed {
    pub body: Vec<u8>,
    pub signature: Vec<u8>,
}

/// Associated data binding a sealed object to its kind, repository and
/// format version (never its location, so objects can move unchanged).
pub fn aad(kind: &str, repo_id: &Id, extra: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(kind.len() + 40 + extra.len());
    a.extend_from_slice(b"strongroom/v1/");
    a.extend_from_slice(kind.as_bytes());
    a.push(0);
    a.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    a.extend_from_slice(&repo_id.0);
    a.extend_from_slice(extra);
    a
}
