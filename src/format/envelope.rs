//! `keys/<id>`: a backup run's data and metadata keys, wrapped for every
//! recipient and signed by the run's signing key.

use serde::{Deserialize, Serialize};

use super::{Id, RunId};

pub const SIGNED_TYPE: &str = "strongroom/v1/run-keys";
pub const CERT_SIGNED_TYPE: &str = "strongroom/v1/writer-certificate";
pub const RUN_KEYS_LABEL: &[u8] = b"strongroom/v1/run";

/// Who signed a run's objects: the root key, or a root-certified writer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Signer {
    Root,
    Writer(super::Signed),
}

/// The body of a writer certificate, signed by the root key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WriterCertificate {
    pub format: u16,
    pub host: String,
    /// PKCS#1 DER of the writer's RSA signing public key.
    pub public_key: Vec<u8>,
    pub created: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Wrapped {
    /// SHA-256 of the recipient's public key DER.
    pub recipient: [u8; 32],
    pub ciphertext: Vec<u8>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Envelope {
    pub format: u16,
    pub repo_id: Id,
    /// With the signer's key, determines `run_id` (see [`bound_run_id`]).
    pub run_salt: [u8; 16],
    pub run_id: RunId,
    pub created: i64,
    pub signer: Signer,
    /// RSA-OAEP of `data key ‖ metadata key`, label
    /// `RUN_KEYS_LABEL ‖ repo id ‖ run id`.
    pub wrapped: Vec<Wrapped>,
}

/// The OAEP label binding wrapped run keys to their repository and run.
pub fn run_keys_label(repo_id: &Id, run_id: &RunId) -> Vec<u8> {
    let mut l = RUN_KEYS_LABEL.to_vec();
    l.extend_from_slice(&repo_id.0);
    l.extend_from_slice(&run_id.0);
    l
}

/// A run id bound to the key that signs the run's objects: the first 16
/// bytes of SHA-256(type name ‖ the signing key's fingerprint ‖ salt). No
/// other signer can make an envelope or manifest that names this run.
pub fn bound_run_id(signer_key: &[u8; 32], salt: &[u8; 16]) -> RunId {
    let mut m = b"strongroom/v1/run-id\0".to_vec();
    m.extend_from_slice(signer_key);
    m.extend_from_slice(salt);
    let h = crate::crypto::sha256(&m);
    RunId(h[..16].try_into().expect("16 of 32 bytes"))
}
