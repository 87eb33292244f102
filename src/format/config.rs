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
}
