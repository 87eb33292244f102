//! `snapshots/<id>`: a signed manifest whose catalog fields are sealed under
//! the catalog subkey, so listing snapshots needs no RSA decryption.

use serde::{Deserialize, Serialize};

use super::envelope::Signer;
use super::{Id, RunId, Timestamp};

pub const SIGNED_TYPE: &str = "strongroom/v1/snapshot";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u16,
    pub repo_id: Id,
    /// Binds `run_id` to the signer, as in the run's key envelope.
    pub run_salt: [u8; 16],
    pub run_id: RunId,
    pub signer: Signer,
    /// A sealed [`Catalog`].
    pub catalog: Vec<u8>,
}

/// What a backup run produced, as counted while it ran.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Summary {
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unchanged: u64,
    pub dirs: u64,
    pub bytes_read: u64,
    pub bytes_total: u64,
    pub bytes_added: u64,
    pub blobs_added: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Catalog {
    /// The snapshot's time (`--time`, else when the run started).
    pub time: Timestamp,
    /// When the run started reading, whatever `--time` says: what change
    /// detection against this snapshot compares timestamps with.
    pub started: Timestamp,
    pub host: String,
    /// Backed-up paths, absolute, as bytes (they need not be UTF-8).
    pub paths: Vec<Vec<u8>>,
    pub tags: Vec<String>,
    pub parent: Option<Id>,
    pub tree: Id,
    pub summary: Summary,
}
