//! The id key and the subkeys HKDF-SHA256 derives from it, one per purpose.

use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::SecretKey;

/// The subkeys of one repository's id key.
pub struct Subkeys {
    /// HMAC-SHA256 key for blob ids: the storage never learns content hashes.
    pub blob_id: SecretKey,
    /// Seals index files and pack headers.
    pub index: SecretKey,
    /// Seals the snapshot catalog (time, host, paths, tags) in manifests.
    pub catalog: SecretKey,
    /// Seals the files cache and names its files.
    pub files_cache: SecretKey,
    /// Authenticates what the cache directory keeps in the clear (the
    /// index table, the rollback record, when locks were first seen).
    pub cache: SecretKey,
}

fn derive(id_key: &SecretKey, purpose: &str) -> SecretKey {
    let hk = Hkdf::<Sha256>::new(None, &id_key.0);
    let mut k = Zeroizing::new([0u8; 32]);
    hk.expand(format!("strongroom/v1/{purpose}").as_bytes(), &mut k[..])
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    SecretKey(*k)
}

impl Subkeys {
    pub fn derive(id_key: &SecretKey) -> Self {
        Subkeys {
            blob_id: derive(id_key, "blob-id"),
            index: derive(id_key, "index"),
            catalog: derive(id_key, "catalog"),
            files_cache: derive(id_key, "files-cache"),
            cache: derive(id_key, "cache"),
        }
    }
}

/// HMAC-SHA256 of `data` under `key`.
pub fn hmac(key: &SecretKey, data: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key.0).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// HMAC-SHA256 under `key` of the parts, each preceded by its length, so
/// no two different lists of parts give the same input.
pub fn hmac_parts(key: &SecretKey, parts: &[&[u8]]) -> [u8; 32] {
    mac_of_parts(key, parts).finalize().into_bytes().into()
}

/// Whether `tag` is [`hmac_parts`] of the parts (compared in constant time).
pub fn verify_parts(key: &SecretKey, parts: &[&[u8]], tag: &[u8]) -> bool {
    mac_of_parts(key, parts).verify_slice(tag).is_ok()
}

fn mac_of_parts(key: &SecretKey, parts: &[&[u8]]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key.0).expect("HMAC takes keys of any length");
    for p in parts {
        mac.update(&(p.len() as u64).to_le_bytes());
        mac.update(p);
    }
    mac
}

/// Derives a key for a purpose from arbitrary secret material (used for the
/// cache of unwrapped run keys, keyed by the full key's private key).
pub fn derive_from(material: &[u8], purpose: &str) -> SecretKey {
    let hk = Hkdf::<Sha256>::new(None, material);
    let mut k = Zeroizing::new([0u8; 32]);
    hk.expand(format!("strongroom/v1/{purpose}").as_bytes(), &mut k[..])
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    SecretKey(*k)
}
