//! Who may sign what: the root key, or a writer key the root certified,
//! whose signatures count only for its own host.

use anyhow::{Result, bail};

use crate::crypto::pk::{PrivateKey, PublicKey};
use crate::format::envelope::{CERT_SIGNED_TYPE, Signer, WriterCertificate};
use crate::format::{Signed, decode};
use crate::keys::Key;

/// The signature of a verified object: the root's, or a writer's for a host.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SignedBy {
    Root,
    /// A writer key of `host`, with the SHA-256 of its public key and when
    /// the root certified it.
    Writer {
        host: String,
        fingerprint: [u8; 32],
        certified: i64,
    },
}

/// Verifies `signature` over `type_name ‖ body` under the root key, or under
/// a writer key whose certificate verifies under the root key.
pub fn verify(
    root: &PublicKey,
    signer: &Signer,
    type_name: &str,
    body: &[u8],
    signature: &[u8],
) -> Result<SignedBy> {
    match signer {
        Signer::Root => {
            if !root.verify(type_name, body, signature) {
                bail!("its signature does not verify under the root key");
            }
            Ok(SignedBy::Root)
        }
        Signer::Writer(cert) => {
            if !root.verify(CERT_SIGNED_TYPE, &cert.body, &cert.signature) {
                bail!("its writer certificate is not signed by the root key");
            }
            let c: WriterCertificate = decode(&cert.body, "a writer certificate")?;
            let writer = PublicKey::from_der(&c.public_key)?;
            if !writer.verify(type_name, body, signature) {
                bail!(
                    "its signature does not verify under the writer key of host {}",
                    c.host
                );
            }
            Ok(SignedBy::Writer {
                host: c.host,
                fingerprint: writer.fingerprint(),
                certified: c.created,
            })
        }
    }
}

/// The SHA-256 fingerprint of the key that signs for `signer`: the root
/// key's, or the certified writer key's (the certificate is not verified
/// here; [`verify`] does that).
pub fn signer_key(root: &PublicKey, signer: &Signer) -> Result<[u8; 32]> {
    Ok(match signer {
        Signer::Root => root.fingerprint(),
        Signer::Writer(cert) => {
            let c: WriterCertificate = decode(&cert.body, "a writer certificate")?;
            crate::crypto::sha256(&c.public_key)
        }
    })
}

/// Verifies a signed object as [`verify`] does, and that the run it names
/// is bound to its signer (see `format::envelope::bound_run_id`).
pub fn verify_run(
    root: &PublicKey,
    signer: &Signer,
    type_name: &str,
    signed: &Signed,
    run: &crate::format::RunId,
    salt: &[u8; 16],
) -> Result<SignedBy> {
    let by = verify(root, signer, type_name, &signed.body, &signed.signature)?;
    if crate::format::envelope::bound_run_id(&signer_key(root, signer)?, salt) != *run {
        bail!("it names run {run}, which belongs to another signer");
    }
    Ok(by)
}

/// The key a run signs with, and how readers will know it.
pub struct RunSigner<'a> {
    pub key: &'a PrivateKey,
    pub signer: Signer,
    /// A writer key signs only for its own host.
    pub host: Option<String>,
}

impl<'a> RunSigner<'a> {
    pub fn of(key: &'a Key) -> Result<RunSigner<'a>> {
        Ok(match key {
            Key::Full(k) => RunSigner {
                key: k.root()?,
                signer: Signer::Root,
                host: None,
            },
            Key::Writer(k) => RunSigner {
                key: &k.signing,
                signer: Signer::Writer(Signed {
                    body: k.certificate.body.clone(),
                    signature: k.certificate.signature.clone(),
                }),
                host: Some(k.host.clone()),
            },
        })
    }

    /// The fingerprint run ids are bound to.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.key.public().fingerprint()
    }

    pub fn sign(&self, type_name: &str, body: &[u8]) -> Result<Vec<u8>> {
        self.key.sign(type_name, body)
    }
}
