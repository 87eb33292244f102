//! `config`: the repository's root-signed description.

use serde::{Deserialize, Serialize};

use super::Id;

pub const SIGNED_TYPE: &str = "strongroom/v1/config";

/// Content-defined chunking parameters, fixed at `init`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChunkerParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl Default for ChunkerParams {
    fn default() -> Self {
        ChunkerParams {
            min: 512 * 1024,
            avg: 1024 * 1024,
            max: 8 * 1024 * 1024,
        }
    }
}

/// A recipient of every run's keys, and of the repository's id key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Recipient {
    /// PKCS#1 DER of the RSA encryption public key.
    pub public_key: Vec<u8>,
    /// RSA-OAEP of `id key ‖ chunker seed`, label `CONFIG_SECRETS_LABEL ‖ repo id`.
    pub wrapped_secrets: Vec<u8>,
}

pub const SECRETS_LABEL: &[u8] = b"strongroom/v1/config-secrets";
/// OAEP label of a [`PastRuns`] bundle's key: `PAST_RUNS_LABEL ‖ repo id`.
pub const PAST_RUNS_LABEL: &[u8] = b"strongroom/v1/past-runs";
/// AEAD kind of a [`PastRuns`] bundle.
pub const PAST_RUNS_SEAL_KIND: &str = "past-runs";

/// The keys of the runs made before a recipient was added (`key
/// add-recipient`), for it: `(run id, data key ‖ metadata key)` pairs,
/// sealed under a fresh key that is wrapped for the recipient. Later runs
/// wrap their keys for it in their own envelopes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PastRuns {
    /// SHA-256 of the recipient's public key DER.
    pub recipient: [u8; 32],
    pub wrapped_key: Vec<u8>,
    pub sealed: Vec<u8>,
}

/// Writer keys no longer trusted (`key revoke-writer`): every key of
/// `host` certified up to `at`, or only the one whose signing public key
/// has the fingerprint `writer`. Of their snapshots only those in `kept`
/// (the ones there, and verified, when the revocation was made) still
/// count: a snapshot's own time is the writer's word, and a stolen key
/// could date one in the past.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Revocation {
    pub host: String,
    pub writer: Option<[u8; 32]>,
    /// Seconds since the epoch, UTC.
    pub at: i64,
    pub kept: Vec<Id>,
}

impl Revocation {
    /// Whether this revokes the writer key of `host` with `fingerprint`,
    /// certified by the root at `certified` (a key certified after a
    /// host's revocation is a new key, and is trusted).
    pub fn covers(&self, host: &str, fingerprint: &[u8; 32], certified: i64) -> bool {
        self.host == host
            && match self.writer {
                Some(w) => w == *fingerprint,
                None => certified <= self.at,
            }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Config {
    pub format: u16,
    /// Raised on every change, so a client notices a rollback.
    pub version: u64,
    pub repo_id: Id,
    pub created: i64,
    pub chunker: ChunkerParams,
    /// PKCS#1 DER of the root signing public key.
    pub root_public_key: Vec<u8>,
    pub recipients: Vec<Recipient>,
    pub past_runs: Vec<PastRuns>,
    pub revoked: Vec<Revocation>,
}
