//! `packs/<xx>/<id>`: sealed blobs one after another, then the sealed header,
//! its length (u32 little-endian) and a magic number.
//!
//! The header lists the same entries as the index, so a lost index can be
//! rebuilt and an interrupted backup's packs reused.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use super::index::BlobEntry;

pub const MAGIC: &[u8; 4] = b"SRP1";
pub const TRAILER_LEN: usize = 8;
pub const SEAL_KIND: &str = "pack-header";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PackHeader {
    pub format: u16,
    /// SHA-256 of the pack body (every byte before the sealed header): a
    /// header copied onto other bytes does not describe them.
    pub body_sha256: [u8; 32],
    pub blobs: Vec<BlobEntry>,
}

/// The trailer: `header length ‖ MAGIC`.
pub fn trailer(header_len: usize) -> [u8; TRAILER_LEN] {
    let mut t = [0u8; TRAILER_LEN];
    t[..4].copy_from_slice(&(header_len as u32).to_le_bytes());
    t[4..].copy_from_slice(MAGIC);
    t
}

/// Reads a trailer; returns the sealed header's length.
pub fn parse_trailer(t: &[u8]) -> Result<usize> {
    if t.len() != TRAILER_LEN || &t[4..] != MAGIC {
        bail!("the pack trailer is missing or damaged");
    }
    Ok(u32::from_le_bytes(t[..4].try_into().expect("4 bytes")) as usize)
}
