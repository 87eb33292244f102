//! AES-256-GCM sealing.
//!
//! Two shapes. Run keys seal with a random 96-bit nonce:
//! `nonce(12) ‖ ciphertext ‖ tag(16)`; the caller counts uses (see
//! [`NonceBudget`]). Long-lived id-key subkeys never seal directly: each object
//! gets its own key, HKDF(subkey, salt), from a random 32-byte salt stored in
//! front of it: `salt(32) ‖ nonce(12) ‖ ciphertext ‖ tag(16)`, so many hosts
//! sealing under one subkey never share a nonce space.

use std::sync::atomic::{AtomicU64, Ordering};

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, AeadInOut, KeyInit, Nonce, Payload};
use anyhow::{Result, bail};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::{SecretKey, random_array};

pub const NONCE_LEN: usize = 12;
pub const TAG_LEN: usize = 16;
pub const SALT_LEN: usize = 32;
/// Bytes a run-key seal adds to its plaintext.
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// The error every failed open reports; callers add which object it was.
#[derive(Debug)]
pub struct AuthError;

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("authentication tag mismatch (damaged, or sealed under another key)")
    }
}

impl std::error::Error for AuthError {}

/// Counts the nonces drawn under one run key and refuses past 2^32, where
/// random 96-bit nonces stop being safe enough.
#[derive(Debug, Default)]
pub struct NonceBudget(AtomicU64);

impl NonceBudget {
    pub fn take(&self) -> Result<()> {
        if self.0.fetch_add(1, Ordering::Relaxed) >= 1 << 32 {
            bail!("this run has sealed 2^32 objects under one key; start a new backup run");
        }
        Ok(())
    }
}

pub fn seal(key: &SecretKey, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    seal_parts(key, aad, &[plaintext])
}

/// [`seal`] of the concatenation of `parts`, copied once into the sealed
/// object's buffer and encrypted there.
pub fn seal_parts(key: &SecretKey, aad: &[u8], parts: &[&[u8]]) -> Result<Vec<u8>> {
    let cipher = Aes256Gcm::new((&key.0).into());
    let nonce_bytes: [u8; NONCE_LEN] = random_array()?;
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(OVERHEAD + len);
    out.extend_from_slice(&nonce_bytes);
    for p in parts {
        out.extend_from_slice(p);
    }
    let tag = cipher
        .encrypt_inout_detached(
            &Nonce::<Aes256Gcm>::from(nonce_bytes),
            aad,
            (&mut out[NONCE_LEN..]).into(),
        )
        .map_err(|_| anyhow::anyhow!("AES-GCM sealing failed"))?;
    out.extend_from_slice(&tag);
    Ok(out)
}

pub fn open(key: &SecretKey, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, AuthError> {
    if sealed.len() < OVERHEAD {
        return Err(AuthError);
    }
    let cipher = Aes256Gcm::new((&key.0).into());
    let nonce_bytes: [u8; NONCE_LEN] = sealed[..NONCE_LEN].try_into().map_err(|_| AuthError)?;
    let nonce = Nonce::<Aes256Gcm>::from(nonce_bytes);
    cipher
        .decrypt(
            &nonce,
            Payload {
                msg: &sealed[NONCE_LEN..],
                aad,
            },
        )
        .map_err(|_| AuthError)
}

fn object_key(subkey: &SecretKey, salt: &[u8]) -> SecretKey {
    let hk = Hkdf::<Sha256>::new(Some(salt), &subkey.0);
    let mut k = Zeroizing::new([0u8; 32]);
    hk.expand(b"strongroom/v1/object-key", &mut k[..])
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    SecretKey(*k)
}

/// Seals under a long-lived subkey with a fresh per-object key.
pub fn seal_salted(subkey: &SecretKey, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    let salt: [u8; SALT_LEN] = random_array()?;
    let key = object_key(subkey, &salt);
    let sealed = seal(&key, aad, plaintext)?;
    let mut out = Vec::with_capacity(SALT_LEN + sealed.len());
    out.extend_from_slice(&salt);
    out.extend_from_slice(&sealed);
    Ok(out)
}

pub fn open_salted(subkey: &SecretKey, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, AuthError> {
    if sealed.len() < SALT_LEN + OVERHEAD {
        return Err(AuthError);
    }
    let key = object_key(subkey, &sealed[..SALT_LEN]);
    open(&key, aad, &sealed[SALT_LEN..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_binds_aad() {
        let k = SecretKey::random().unwrap();
        let s = seal(&k, b"ctx", b"hello").unwrap();
        assert_eq!(open(&k, b"ctx", &s).unwrap(), b"hello");
        assert!(open(&k, b"other", &s).is_err());
        let mut bad = s.clone();
        bad[20] ^= 1;
        assert!(open(&k, b"ctx", &bad).is_err());
    }

    #[test]
    fn salted_objects_use_distinct_keys() {
        let k = SecretKey::random().unwrap();
        let a = seal_salted(&k, b"x", b"same").unwrap();
        let b = seal_salted(&k, b"x", b"same").unwrap();
        assert_ne!(a, b);
        assert_eq!(open_salted(&k, b"x", &a).unwrap(), b"same");
        assert!(open_salted(&k, b"y", &a).is_err());
    }
}
