//! Cryptography, and nothing else: keys (wiped on drop), AEAD sealing, key
//! derivation, RSA wrapping and signatures. No I/O happens here.

pub mod aead;
pub mod passphrase;
pub mod pk;
pub mod subkeys;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A 256-bit secret key, wiped from memory when dropped.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct SecretKey(pub [u8; 32]);

impl SecretKey {
    pub fn random() -> Result<Self> {
        let mut k = [0u8; 32];
        fill_random(&mut k)?;
        Ok(SecretKey(k))
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        Some(SecretKey(bytes.try_into().ok()?))
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(…)")
    }
}

/// Fills `buf` from the operating system's random number generator.
pub fn fill_random(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("the operating system's random number generator failed")
}

pub fn random_array<const N: usize>() -> Result<[u8; N]> {
    let mut a = [0u8; N];
    fill_random(&mut a)?;
    Ok(a)
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}
