//! Per-run keys: made fresh for each backup, wrapped for every recipient in
//! a signed envelope; unwrapped by readers once per run and kept, sealed, in
//! the cache directory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{Context, Result, anyhow, bail};
use rayon::prelude::*;

use crate::backend::Kind;
use crate::cache::Cache;
use crate::crypto::aead::{self, AuthError, NonceBudget};
use crate::crypto::subkeys::derive_from;
use crate::crypto::{SecretKey, random_array};
use crate::format::envelope::{self, Envelope, Wrapped, run_keys_label};
use crate::format::{BlobKind, FORMAT_VERSION, Id, RunId, Signed, Timestamp, aad, decode, encode};
use crate::keys::FullKey;

use super::Repository;
use super::trust::{self, RunSigner};

/// One run's data and metadata keys.
pub struct RunKeys {
    pub run: RunId,
    data: SecretKey,
    meta: SecretKey,
    budget: NonceBudget,
}

fn blob_aad(kind: BlobKind, id: &Id, repo_id: &Id) -> Vec<u8> {
    let mut extra = vec![kind.tag()];
    extra.extend_from_slice(&id.0);
    aad("blob", repo_id, &extra)
}

impl RunKeys {
    pub fn new() -> Result<RunKeys> {
        Ok(RunKeys {
            run: RunId(random_array()?),
            data: SecretKey::random()?,
            meta: SecretKey::random()?,
            budget: NonceBudget::default(),
        })
    }

    fn key(&self, kind: BlobKind) -> &SecretKey {
        match kind {
            BlobKind::Data => &self.data,
            BlobKind::Tree => &self.meta,
        }
    }

    pub fn seal_blob(&self, kind: BlobKind, id: &Id, repo_id: &Id, plaintext: &[u8]) -> Result<Vec<u8>> {
        self.budget.take()?;
        aead::seal(self.key(kind), &blob_aad(kind, id, repo_id), plaintext)
    }

    pub fn open_blob(
        &self,
        kind: BlobKind,
        id: &Id,
        repo_id: &Id,
        sealed: &[u8],
    ) -> Result<Vec<u8>, AuthError> {
        aead::open(self.key(kind), &blob_aad(kind, id, repo_id), sealed)
    }

    fn secret_bytes(&self) -> zeroize::Zeroizing<Vec<u8>> {
        let mut v = zeroize::Zeroizing::new(self.data.0.to_vec());
        v.extend_from_slice(&self.meta.0);
        v
    }

    fn from_secret_bytes(run: RunId, b: &[u8]) -> Option<RunKeys> {
        if b.len() != 64 {
            return None;
        }
        Some(RunKeys {
            run,
            data: SecretKey::from_slice(&b[..32])?,
            meta: SecretKey::from_slice(&b[32..])?,
            budget: NonceBudget::default(),
        })
    }

    /// Wraps these keys for every recipient and writes the signed envelope.
    pub fn write_envelope(&self, repo: &Repository, signer: &RunSigner) -> Result<Id> {
        let label = run_keys_label(&repo.id(), &self.run);
        let secret = self.secret_bytes();
        let wrapped = repo
            .recipients
            .iter()
            .map(|r| {
                Ok(Wrapped {
                    recipient: r.fingerprint(),
                    ciphertext: r.wrap(&label, &secret)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let env = Envelope {
            format: FORMAT_VERSION,
            repo_id: repo.id(),
            run_id: self.run,
            created: Timestamp::now().sec,
            signer: signer.signer.clone(),
            wrapped,
        };
        let body = encode(&env);
        let signature = signer.sign(envelope::SIGNED_TYPE, &body)?;
        let bytes = encode(&Signed { body, signature });
        let id = Id::of_bytes(&bytes);
        repo.backend
            .write(Kind::Keys, &id.to_hex(), &bytes)
            .with_context(|| format!("writing the key envelope {id} of run {}", self.run))?;
        Ok(id)
    }
}

type Envelopes = HashMap<RunId, (Id, Envelope)>;

/// A reader's run keys: unwrapped on first use, then kept in memory and,
/// sealed under a key derived from the full key, in the cache directory.
pub struct Keyring<'a> {
    repo: &'a Repository,
    key: &'a FullKey,
    cache: &'a Cache,
    cache_key: SecretKey,
    envelopes: OnceLock<Result<Envelopes, String>>,
    keys: Mutex<HashMap<RunId, Arc<RunKeys>>>,
}

impl<'a> Keyring<'a> {
    pub fn new(repo: &'a Repository, key: &'a FullKey, cache: &'a Cache) -> Result<Self> {
        let der = key.encryption.to_der()?;
        Ok(Keyring {
            repo,
            key,
            cache,
            cache_key: derive_from(&der, "run-keys-cache"),
            envelopes: OnceLock::new(),
            keys: Mutex::new(HashMap::new()),
        })
    }

    /// Every verified envelope, by run. Unverifiable ones are left out: the
    /// runs they name cannot be read, and `check` reports them.
    fn envelopes(&self) -> Result<&Envelopes> {
        let r = self.envelopes.get_or_init(|| {
            let names = self.repo.backend.list(Kind::Keys).map_err(|e| format!("{e:#}"))?;
            let found: Vec<(Id, Envelope)> = names
                .par_iter()
                .filter_map(|l| read_envelope(self.repo, &self.key.shared.root_public, &l.name).ok())
                .collect();
            Ok(found.into_iter().map(|(id, e)| (e.run_id, (id, e))).collect())
        });
        r.as_ref()
            .map_err(|e| anyhow!("listing the key envelopes failed: {e}"))
    }

    /// Unwraps, in parallel, the keys of every run not yet in memory.
    /// Failures are left for the reads that need those runs to report.
    pub fn preload(&self, runs: &[RunId]) {
        runs.par_iter().for_each(|r| {
            let _ = self.get(r);
        });
    }

    pub fn get(&self, run: &RunId) -> Result<Arc<RunKeys>> {
        if let Some(k) = self.keys.lock().unwrap_or_else(|e| e.into_inner()).get(run) {
            return Ok(k.clone());
        }
        let keys = Arc::new(self.load(run)?);
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(*run, keys.clone());
        Ok(keys)
    }

    fn cache_aad(&self, run: &RunId) -> Vec<u8> {
        aad("run-keys-cache", &self.repo.id(), &run.0)
    }

    fn load(&self, run: &RunId) -> Result<RunKeys> {
        let cache_name = format!("runkeys/{run}");
        if let Some(sealed) = self.cache.get(&self.repo.id(), &cache_name)
            && let Ok(plain) =
                aead::open(&self.cache_key, &self.cache_aad(run), &sealed).map(zeroize::Zeroizing::new)
            && let Some(k) = RunKeys::from_secret_bytes(*run, &plain)
        {
            return Ok(k);
        }
        let (env_id, env) = self
            .envelopes()?
            .get(run)
            .ok_or_else(|| anyhow!("no verified key envelope exists for run {run}"))?;
        let me = self.key.encryption.public().fingerprint();
        let wrapped = env
            .wrapped
            .iter()
            .find(|w| w.recipient == me)
            .ok_or_else(|| anyhow!("key envelope {env_id} of run {run} is not wrapped for this key"))?;
        let label = run_keys_label(&self.repo.id(), run);
        let plain = self
            .key
            .encryption
            .unwrap(&label, &wrapped.ciphertext)
            .with_context(|| format!("key envelope {env_id} of run {run}"))?;
        let keys = RunKeys::from_secret_bytes(*run, &plain)
            .ok_or_else(|| anyhow!("key envelope {env_id} of run {run} holds malformed keys"))?;
        if let Ok(sealed) = aead::seal(&self.cache_key, &self.cache_aad(run), &plain) {
            self.cache.put(&self.repo.id(), &cache_name, &sealed);
        }
        Ok(keys)
    }
}

/// Reads an envelope and verifies its signature (before anything in it is
/// decrypted) and that it belongs to this repository.
pub fn read_envelope(
    repo: &Repository,
    root: &crate::crypto::pk::PublicKey,
    name: &str,
) -> Result<(Id, Envelope)> {
    let bytes = repo.backend.read(Kind::Keys, name)?;
    let id = Id::of_bytes(&bytes);
    if id.to_hex() != name {
        bail!("key envelope {name} is damaged: its content does not match its name");
    }
    let signed: Signed = decode(&bytes, &format!("key envelope {name}"))?;
    let env: Envelope = decode(&signed.body, &format!("key envelope {name}"))?;
    trust::verify(
        root,
        &env.signer,
        envelope::SIGNED_TYPE,
        &signed.body,
        &signed.signature,
    )
    .with_context(|| format!("key envelope {name} is refused"))?;
    if env.repo_id != repo.id() {
        bail!("key envelope {name} belongs to another repository");
    }
    Ok((id, env))
}
