//! Passphrase protection of key files: Argon2id → AES-256-GCM.

use anyhow::{Result, anyhow};
use argon2::{Algorithm, Argon2, Params, Version};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::SecretKey;

/// Argon2id parameters, stored with each protected key file so they can be
/// raised later without breaking old files.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KdfParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    pub salt: [u8; 32],
}

impl KdfParams {
    pub fn new() -> Result<Self> {
        Ok(KdfParams {
            memory_kib: 64 * 1024,
            iterations: 3,
            parallelism: 1,
            salt: super::random_array()?,
        })
    }

    pub fn derive(&self, passphrase: &[u8]) -> Result<SecretKey> {
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
            .map_err(|e| anyhow!("the key file's Argon2 parameters are invalid: {e}"))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let mut out = Zeroizing::new([0u8; 32]);
        argon
            .hash_password_into(passphrase, &self.salt, &mut out[..])
            .map_err(|e| anyhow!("Argon2 key derivation failed: {e}"))?;
        Ok(SecretKey(*out))
    }
}
