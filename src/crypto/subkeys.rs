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
        }
    }
}

/// HMAC-SHA256 of `data` under `key`.
pub fn hmac(key: &SecretKey, data: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key.0).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
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
