//! `index/<id>`: which pack holds which blob, sealed under the index subkey.

use serde::{Deserialize, Serialize};

use super::{BlobKind, Id, RunId};

/// One blob's place in a pack. Pack headers carry the same entries.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct BlobEntry {
    pub id: Id,
    pub kind: BlobKind,
    /// The run whose keys sealed this blob.
    pub run: RunId,
    pub offset: u32,
    /// Length of the stored (sealed) blob.
    pub length: u32,
    /// Length of the plaintext.
    pub raw_length: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PackEntries {
    pub pack: Id,
    /// The pack's size in bytes: a pack of another size is truncated or
    /// replaced, and its blobs are not used.
    pub size: u64,
    pub blobs: Vec<BlobEntry>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct IndexFile {
    pub format: u16,
    pub packs: Vec<PackEntries>,
}

pub const SEAL_KIND: &str = "index";
