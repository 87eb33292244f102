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
