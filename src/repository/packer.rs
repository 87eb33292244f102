//! Gathers sealed blobs into packs of a target size.

use anyhow::Result;

use crate::crypto::aead;
use crate::crypto::subkeys::Subkeys;
use crate::format::index::{BlobEntry, PackEntries};
use crate::format::pack::{self, PackHeader};
use crate::format::{FORMAT_VERSION, Id, aad, encode};

/// A pack being filled.
pub struct Packer {
    target: usize,
    buf: Vec<u8>,
    entries: Vec<BlobEntry>,
}

/// A finished pack: its name, bytes and entries.
pub struct FinishedPack {
    pub id: Id,
    pub bytes: Vec<u8>,
    pub entries: PackEntries,
}

impl Packer {
    pub fn new(target: usize) -> Self {
        Packer {
            target,
            buf: Vec::new(),
            entries: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends a sealed blob; says whether the pack has reached its target.
    pub fn add(&mut self, mut entry: BlobEntry, sealed: &[u8]) -> bool {
        if self.buf.capacity() == 0 {
            self.buf.reserve(self.target + self.target / 8);
        }
        entry.offset = self.buf.len() as u32;
        entry.length = sealed.len() as u32;
        self.buf.extend_from_slice(sealed);
        self.entries.push(entry);
        self.buf.len() >= self.target
    }

    /// Seals the header, appends the trailer and hands the pack over,
    /// leaving this packer empty.
    pub fn finish(&mut self, subkeys: &Subkeys, repo_id: &Id) -> Result<Option<FinishedPack>> {
        if self.entries.is_empty() {
            return Ok(None);
        }
        let entries = std::mem::take(&mut self.entries);
        let mut bytes = std::mem::take(&mut self.buf);
        let header = PackHeader {
            format: FORMAT_VERSION,
            body_sha256: crate::crypto::sha256(&bytes),
            blobs: entries.clone(),
        };
        let sealed = aead::seal_salted(
            &subkeys.index,
            &aad(pack::SEAL_KIND, repo_id, &[]),
            &encode(&header),
        )?;
        bytes.extend_from_slice(&sealed);
        bytes.extend_from_slice(&pack::trailer(sealed.len()));
        let id = Id::of_bytes(&bytes);
        let size = bytes.len() as u64;
        Ok(Some(FinishedPack {
            id,
            bytes,
            entries: PackEntries {
                pack: id,
                size,
                blobs: entries,
            },
        }))
    }
}
