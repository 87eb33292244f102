//! RSA: OAEP key wrapping and PSS signatures (SHA-256, blinded private
//! operations).
//!
//! Every signed message starts with its type name, so a signature over one
//! kind of object can never be replayed as another. Callers verify a
//! signature before any RSA decryption of what the signed object carries
//! (RUSTSEC-2023-0071: no `rsa` release is free of the Marvin timing leak).

use anyhow::{Context, Result, anyhow, bail};
use rsa::Oaep;
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey, EncodeRsaPrivateKey, EncodeRsaPublicKey};
use rsa::traits::PublicKeyParts;
use rsa::{PrivateKey as RsaPrivateKey, PublicKey as RsaPublicKey};
use sha2::Sha256;
use zeroize::Zeroizing;

pub const MIN_BITS: usize = 3072;
pub const DEFAULT_BITS: usize = 4096;
/// Largest modulus accepted from a file, so a hostile key cannot stall us.
const MAX_BITS: usize = 16384;

/// An RSA private key (encryption or signing), wiped on drop by `rsa`.
pub struct PrivateKey(RsaPrivateKey);

/// An RSA public key, kept with its PKCS#1 DER encoding.
#[derive(Clone)]
pub struct PublicKey {
    key: RsaPublicKey,
    der: Vec<u8>,
}

impl PrivateKey {
    pub fn generate(bits: usize) -> Result<Self> {
        if !(MIN_BITS..=MAX_BITS).contains(&bits) {
            bail!("RSA keys must have between {MIN_BITS} and {MAX_BITS} bits, not {bits}");
        }
        let mut rng = rsa::rand_core::UnwrapErr(getrandom::SysRng);
        let key = RsaPrivateKey::new(&mut rng, bits).context("generating an RSA key failed")?;
        Ok(PrivateKey(key))
    }

    pub fn from_der(der: &[u8]) -> Result<Self> {
        let key = RsaPrivateKey::from_pkcs1_der(der).context("the RSA private key is malformed")?;
        Ok(PrivateKey(key))
    }

    pub fn to_der(&self) -> Result<Zeroizing<Vec<u8>>> {
        let doc = self
            .0
            .to_pkcs1_der()
            .context("encoding an RSA private key failed")?;
        Ok(Zeroizing::new(doc.as_bytes().to_vec()))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey::from_key(self.0.to_public_key())
    }

    /// Signs `type_name ‖ message` with RSA-PSS-SHA256.
    pub fn sign(&self, type_name: &str, message: &[u8]) -> Result<Vec<u8>> {
        self.0
            .pss_sign::<Sha256>(&signed_bytes(type_name, message))
            .context("RSA signing failed")
    }

    /// Unwraps an RSA-OAEP ciphertext (SHA-256, MGF1-SHA-256) bound to `label`:
    /// `None` when it does not open with this key (damaged, forged, or for
    /// another key), an error when the decryption could not run at all (the
    /// system's random number generator, which blinding needs, failed).
    /// Only call this on a ciphertext whose signature has been verified.
    pub fn unwrap(&self, label: &[u8], ciphertext: &[u8]) -> Result<Option<Zeroizing<Vec<u8>>>> {
        let padding = Oaep::<Sha256>::new_with_label(label.to_vec());
        match self.0.decrypt(padding, ciphertext) {
            Ok(plain) => Ok(Some(Zeroizing::new(plain))),
            Err(rsa::Error::Rng) => Err(anyhow!(
                "RSA decryption could not run: the system's random number generator failed"
            )),
            Err(_) => Ok(None),
        }
    }
}

fn signed_bytes(type_name: &str, message: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(type_name.len() + 1 + message.len());
    m.extend_from_slice(type_name.as_bytes());
    m.push(0);
    m.extend_from_slice(message);
    m
}

impl PublicKey {
    fn from_key(key: RsaPublicKey) -> Self {
        let der = key
            .to_pkcs1_der()
            .expect("encoding a valid RSA public key cannot fail")
            .as_bytes()
            .to_vec();
        PublicKey { key, der }
    }

    pub fn from_der(der: &[u8]) -> Result<Self> {
        let key = RsaPublicKey::from_pkcs1_der(der).context("the RSA public key is malformed")?;
        let bits = key.n().bit_width() as usize;
        if !(MIN_BITS..=MAX_BITS).contains(&bits) {
            bail!("an RSA public key of {bits} bits is outside the accepted {MIN_BITS}–{MAX_BITS}");
        }
        Ok(PublicKey {
            key,
            der: der.to_vec(),
        })
    }

    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// SHA-256 of the DER encoding: how envelopes name their recipients.
    pub fn fingerprint(&self) -> [u8; 32] {
        super::sha256(&self.der)
    }

    pub fn verify(&self, type_name: &str, message: &[u8], signature: &[u8]) -> bool {
        self.key
            .pss_verify::<Sha256>(&signed_bytes(type_name, message), signature)
            .is_ok()
    }

    pub fn wrap(&self, label: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let padding = Oaep::<Sha256>::new_with_label(label.to_vec());
        let mut rng = rsa::rand_core::UnwrapErr(getrandom::SysRng);
        self.key
            .encrypt(&mut rng, padding, plaintext)
            .context("RSA-OAEP wrapping failed")
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.der == other.der
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", hex::encode(&self.fingerprint()[..8]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_sign_round_trip() {
        let k = PrivateKey::generate(MIN_BITS).unwrap();
        let p = k.public();
        let p2 = PublicKey::from_der(p.der()).unwrap();
        let ct = p2.wrap(b"label", b"secret").unwrap();
        assert_eq!(&k.unwrap(b"label", &ct).unwrap().unwrap()[..], b"secret");
        assert!(k.unwrap(b"other", &ct).unwrap().is_none());
        let sig = k.sign("t", b"msg").unwrap();
        assert!(p.verify("t", b"msg", &sig));
        assert!(!p.verify("u", b"msg", &sig));
        assert!(!p.verify("t", b"msh", &sig));
        let der = k.to_der().unwrap();
        assert!(PrivateKey::from_der(&der).unwrap().public() == p);
    }
}
