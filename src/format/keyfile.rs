//! Key files: the full key and the writer key, optionally sealed under a
//! passphrase.

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::crypto::passphrase::KdfParams;

/// Version 2 binds the outer header into the sealed secrets' associated data.
pub const KEYFILE_VERSION: u16 = 2;
pub const MAGIC: &str = "strongroom key file";

/// What is on disk. `secret` is postcard of [`Secrets`], sealed with the
/// Argon2id-derived key when `kdf` is set, plain (mode 0600) otherwise; it
/// is wiped when the value drops.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyFileOnDisk {
    pub magic: String,
    pub version: u16,
    pub kind: KeyKind,
    /// The host a writer key signs for.
    pub host: Option<String>,
    /// PEM of the strongroom CA to trust for `https://` repositories.
    pub ca_pem: Option<String>,
    pub kdf: Option<KdfParams>,
    pub secret: Vec<u8>,
}

impl Drop for KeyFileOnDisk {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

impl KeyFileOnDisk {
    /// The associated data the secrets are sealed under: everything outside
    /// them, so no field of the header can be changed unnoticed.
    pub fn seal_aad(&self) -> Vec<u8> {
        let header = (
            &self.magic,
            self.version,
            self.kind,
            &self.host,
            &self.ca_pem,
            &self.kdf,
        );
        let mut aad = SEAL_AAD.to_vec();
        aad.extend_from_slice(&super::encode(&header));
        aad
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum KeyKind {
    Full,
    Writer,
}

/// The secret part of a key file.
#[derive(Serialize, Deserialize, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
pub struct Secrets {
    pub id_key: [u8; 32],
    pub chunker_seed: u64,
    /// PKCS#1 DER of the root signing public key.
    pub root_public: Vec<u8>,
    /// Full key: the RSA encryption private key.
    pub encryption_private: Option<Vec<u8>>,
    /// Full key: the root signing private key.
    pub root_private: Option<Vec<u8>>,
    /// Writer key: its signing private key and root-signed certificate.
    pub writer_private: Option<Vec<u8>>,
    pub writer_certificate: Option<(Vec<u8>, Vec<u8>)>,
}

impl Secrets {
    /// An upper bound of the encoded size, so encoding never reallocates
    /// (and so never leaves a copy behind).
    pub fn size_hint(&self) -> usize {
        let opt = |v: &Option<Vec<u8>>| v.as_ref().map_or(0, Vec::len);
        let cert = self
            .writer_certificate
            .as_ref()
            .map_or(0, |(a, b)| a.len() + b.len());
        64 + self.root_public.len()
            + opt(&self.encryption_private)
            + opt(&self.root_private)
            + opt(&self.writer_private)
            + cert
    }
}

/// Encodes `value` into a buffer that is wiped on drop, without ever
/// reallocating a buffer that held part of it.
pub fn encode_secret<T: Serialize>(value: &T, size_hint: usize) -> Zeroizing<Vec<u8>> {
    let mut cap = size_hint.max(64);
    loop {
        let mut buf = Zeroizing::new(vec![0u8; cap]);
        match postcard::to_slice(value, &mut buf[..]).map(|s| s.len()) {
            Ok(used) => {
                buf.truncate(used);
                return buf;
            }
            Err(postcard::Error::SerializeBufferFull) => cap *= 2,
            Err(_) => return Zeroizing::new(super::encode(value)),
        }
    }
}

pub const SEAL_AAD: &[u8] = b"strongroom/v2/key-file";
