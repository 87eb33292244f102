//! Gathers sealed blobs into packs of a target size.

use anyhow::Result;

use crate::aligned::AlignedBuf;
use sha2::{Digest, Sha256};

use crate::crypto::subkeys::Subkeys;
use crate::crypto::{SecretKey, aead};
use crate::format::index::{BlobEntry, PackEntries};
use crate::format::pack::{self, PackHeader};
use crate::format::{FORMAT_VERSION, Id, aad, encode};

/// Room left after a pack's blobs for its header and trailer.
const HEADER_ROOM: usize = 64 * 1024;

/// A pack being filled.
pub struct Packer {
    target: usize,
    buf: AlignedBuf,
    entries: Vec<BlobEntry>,
    /// Whether `buf` came from the pack store's pool, to go back to it.
    pooled: bool,
}

/// A finished pack: its name, bytes and entries.
pub struct FinishedPack {
    pub id: Id,
    /// Aligned, so a local repository writes it around the page cache.
    pub bytes: AlignedBuf,
    pub entries: PackEntries,
}

impl Packer {
    pub fn new(target: usize) -> Self {
        Packer {
            target,
            buf: AlignedBuf::default(),
            entries: Vec::new(),
            pooled: false,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether this packer has a pack buffer of the pack store's pool.
    pub fn has_pooled(&self) -> bool {
        self.pooled
    }

    /// Gives an empty packer a buffer of the pack store's pool to fill; it
    /// goes back to the pool once its pack is stored.
    pub fn give(&mut self, mut buf: AlignedBuf) {
        debug_assert!(self.entries.is_empty() && !self.pooled);
        buf.clear();
        self.buf = buf;
        self.pooled = true;
    }

    /// Appends a sealed blob; says whether the pack has reached its target.
    pub fn add(&mut self, mut entry: BlobEntry, sealed: &[u8]) -> bool {
        if self.buf.capacity() < self.buf.len() + sealed.len() {
            // Room for the target and one more blob of any size, at once:
            // a doubling would copy the pack and leave its old copy behind.
            self.buf
                .reserve_exact((self.target + sealed.len() + HEADER_ROOM).saturating_sub(self.buf.len()));
        }
        entry.offset = self.buf.len() as u32;
        entry.length = sealed.len() as u32;
        self.buf.extend_from_slice(sealed);
        self.entries.push(entry);
        self.buf.len() >= self.target
    }

    /// Hands the blobs gathered so far over, leaving this packer empty;
    /// cheap, so it can be done under a lock and the sealing outside it.
    pub fn take(&mut self) -> Option<PackBody> {
        if self.entries.is_empty() {
            return None;
        }
        Some(PackBody {
            bytes: std::mem::take(&mut self.buf),
            entries: std::mem::take(&mut self.entries),
            pooled: std::mem::take(&mut self.pooled),
        })
    }

    /// Seals the header, appends the trailer and hands the pack over,
    /// leaving this packer empty.
    pub fn finish(&mut self, subkeys: &Subkeys, repo_id: &Id) -> Result<Option<FinishedPack>> {
        self.take().map(|b| b.seal(&subkeys.index, repo_id)).transpose()
    }
}

/// The sealed blobs of a pack, not yet given its header.
pub struct PackBody {
    bytes: AlignedBuf,
    entries: Vec<BlobEntry>,
    pub pooled: bool,
}

impl PackBody {
    /// Its buffer, to be filled again.
    pub fn into_buffer(self) -> AlignedBuf {
        self.bytes
    }

    /// Seals the header and appends it and the trailer. The body is hashed
    /// once: the header's body hash is a copy of the running hash, which
    /// then goes on over the header and trailer to name the pack.
    pub fn seal(self, index_key: &SecretKey, repo_id: &Id) -> Result<FinishedPack> {
        let PackBody {
            mut bytes, entries, ..
        } = self;
        let mut hash = Sha256::new();
        hash.update(&bytes[..]);
        let header = PackHeader {
            format: FORMAT_VERSION,
            body_sha256: hash.clone().finalize().into(),
            blobs: entries,
        };
        let sealed = aead::seal_salted(index_key, &aad(pack::SEAL_KIND, repo_id, &[]), &encode(&header))?;
        let body_len = bytes.len();
        bytes.reserve_exact(sealed.len() + 16);
        bytes.extend_from_slice(&sealed);
        bytes.extend_from_slice(&pack::trailer(sealed.len()));
        hash.update(&bytes[body_len..]);
        let id = Id(hash.finalize().into());
        let size = bytes.len() as u64;
        Ok(FinishedPack {
            id,
            bytes,
            entries: PackEntries {
                pack: id,
                size,
                blobs: header.blobs,
            },
        })
    }
}
