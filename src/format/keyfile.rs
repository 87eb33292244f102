//! Key files: the full key and the writer key, optionally sealed under a
//! passphrase.

use serde::{Deserialize, Serialize};

use crate::crypto::passphrase::KdfParams;

pub const KEYFILE_VERSION: u16 = 1;
pub const MAGIC: &str = "strongroom key file";

/// What is on disk. `secret` is postcard of [`Secrets`], sealed with the
/// Argon2id-derived key when `kdf` is set, plain (mode 0600) otherwise.
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

pub const SEAL_AAD: &[u8] = b"strongroom/v1/key-file";
