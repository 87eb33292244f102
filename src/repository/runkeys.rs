//! Per-run keys: made fresh for each backup, wrapped for every recipient in
//! a signed envelope; unwrapped by readers once per run and kept, sealed, in
//! the cache directory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use zeroize::Zeroizing;

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
    /// Binds `run` to the run's signing key (see `envelope::bound_run_id`).
    pub salt: [u8; 16],
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
    /// Fresh keys for a run signed by the key with this fingerprint.
    pub fn new(signer_key: &[u8; 32]) -> Result<RunKeys> {
        let salt = random_array()?;
        Ok(RunKeys {
            run: envelope::bound_run_id(signer_key, &salt),
            salt,
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
        self.seal_blob_parts(kind, id, repo_id, &[plaintext])
    }

    /// [`Self::seal_blob`] of the concatenation of `parts`.
    pub fn seal_blob_parts(&self, kind: BlobKind, id: &Id, repo_id: &Id, parts: &[&[u8]]) -> Result<Vec<u8>> {
        self.budget.take()?;
        aead::seal_parts(self.key(kind), &blob_aad(kind, id, repo_id), parts)
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

    pub fn secret_bytes(&self) -> zeroize::Zeroizing<Vec<u8>> {
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
            salt: [0; 16],
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
            run_salt: self.salt,
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

/// Every envelope that verifies and is bound to its signer, by run. More
/// than one for a run (which only that run's own signer can make) makes the
/// run unreadable rather than letting either one win.
type Envelopes = HashMap<RunId, Vec<(Id, Envelope)>>;

/// A run's keys as remembered in the cache directory: unwrapped from
/// `envelope`, or the unwrap failed (remembered, so a hostile envelope is
/// not an RSA-decryption oracle that answers on every start).
const CACHED_KEYS: u8 = 1;
const CACHED_FAILURE: u8 = 0;

/// What the cache directory remembers of a run.
pub enum Cached {
    Keys(RunKeys),
    /// Unwrapping failed, from this envelope.
    Failure(Id),
}

/// Parses an opened run-keys cache entry: its kind, the envelope's id, and
/// for keys the 64 key bytes. Anything else is ignored (and unwrapped anew).
pub fn parse_cached(run: RunId, plain: &[u8]) -> Option<Cached> {
    let (&what, rest) = plain.split_first()?;
    let envelope = Id(rest.get(..32)?.try_into().ok()?);
    match what {
        CACHED_KEYS => RunKeys::from_secret_bytes(run, &rest[32..]).map(Cached::Keys),
        CACHED_FAILURE if rest.len() == 32 => Some(Cached::Failure(envelope)),
        _ => None,
    }
}

type Slot = Arc<OnceLock<Result<Arc<RunKeys>, String>>>;

/// A reader's run keys: unwrapped the first time a run is needed (once per
/// run, however many threads ask), then kept in memory and, sealed under a
/// key derived from the full key, in the cache directory.
pub struct Keyring<'a> {
    repo: &'a Repository,
    key: &'a FullKey,
    cache: &'a Cache,
    cache_key: SecretKey,
    envelopes: OnceLock<Result<Envelopes, String>>,
    runs: Mutex<HashMap<RunId, Slot>>,
    /// The keys of runs made before this key was added as a recipient,
    /// from the config (unwrapped once, when first needed).
    past: OnceLock<HashMap<RunId, Zeroizing<Vec<u8>>>>,
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
            runs: Mutex::new(HashMap::new()),
            past: OnceLock::new(),
        })
    }

    /// The keys of the runs in `wanted` with one verified envelope that
    /// this key opens, for wrapping them for a new recipient; a run whose
    /// keys cannot be had is named in a warning and left out.
    pub fn run_keys(
        &self,
        wanted: &std::collections::HashSet<RunId>,
    ) -> Result<Vec<(RunId, Zeroizing<Vec<u8>>)>> {
        let runs: Vec<RunId> = self
            .envelopes()?
            .keys()
            .filter(|r| wanted.contains(r))
            .copied()
            .collect();
        Ok(runs
            .par_iter()
            .filter_map(|r| match self.get(r) {
                Ok(k) => Some((*r, k.secret_bytes())),
                Err(e) => {
                    crate::warn(&format!("the keys of run {r} are left out: {e:#}"));
                    None
                }
            })
            .collect())
    }

    /// The past runs' keys the root-signed config holds for this key.
    fn past(&self) -> &HashMap<RunId, Zeroizing<Vec<u8>>> {
        self.past.get_or_init(|| {
            let me = self.key.encryption.public().fingerprint();
            let repo_id = self.repo.id();
            let mut out = HashMap::new();
            for p in self.repo.config.past_runs.iter().filter(|p| p.recipient == me) {
                let mut label = crate::format::config::PAST_RUNS_LABEL.to_vec();
                label.extend_from_slice(&repo_id.0);
                let key = match self.key.encryption.unwrap(&label, &p.wrapped_key) {
                    Ok(k) => k.and_then(|k| SecretKey::from_slice(&k)),
                    Err(e) => {
                        crate::warn(&format!("the config's keys of past runs for this key: {e:#}"));
                        continue;
                    }
                };
                let Some(key) = key else {
                    crate::warn("the config's keys of past runs for this key do not open");
                    continue;
                };
                let aad = aad(crate::format::config::PAST_RUNS_SEAL_KIND, &repo_id, &me);
                let Some(plain) = aead::open(&key, &aad, &p.sealed).ok().map(Zeroizing::new) else {
                    crate::warn("the config's keys of past runs for this key do not open");
                    continue;
                };
                if let Ok(runs) = decode::<Vec<(RunId, Vec<u8>)>>(&plain, "the keys of past runs") {
                    out.extend(runs.into_iter().map(|(r, k)| (r, Zeroizing::new(k))));
                }
            }
            out
        })
    }

    /// Every verified envelope, by run. Refused ones are left out: the runs
    /// they name cannot be read, and `check` reports them.
    fn envelopes(&self) -> Result<&Envelopes> {
        let r = self.envelopes.get_or_init(|| {
            let names = self.repo.backend.list(Kind::Keys).map_err(|e| format!("{e:#}"))?;
            let found: Vec<(Id, Envelope)> = names
                .par_iter()
                .filter_map(|l| read_envelope(self.repo, &self.key.shared.root_public, &l.name).ok())
                .collect();
            let mut by_run: Envelopes = HashMap::new();
            for (id, e) in found {
                by_run.entry(e.run_id).or_default().push((id, e));
            }
            Ok(by_run)
        });
        r.as_ref()
            .map_err(|e| anyhow!("listing the key envelopes failed: {e}"))
    }

    /// The keys of a run, unwrapping them on first use.
    pub fn get(&self, run: &RunId) -> Result<Arc<RunKeys>> {
        let slot = self
            .runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(*run)
            .or_default()
            .clone();
        slot.get_or_init(|| self.load(run).map(Arc::new).map_err(|e| format!("{e:#}")))
            .clone()
            .map_err(|e| anyhow!(e))
    }

    fn cache_aad(&self, run: &RunId) -> Vec<u8> {
        aad("run-keys-cache", &self.repo.id(), &run.0)
    }

    fn remember(&self, run: &RunId, what: u8, envelope: &Id, keys: &[u8]) {
        let mut plain = Zeroizing::new(vec![what]);
        plain.extend_from_slice(&envelope.0);
        plain.extend_from_slice(keys);
        if let Ok(sealed) = aead::seal(&self.cache_key, &self.cache_aad(run), &plain) {
            self.cache
                .put(&self.repo.id(), &format!("runkeys/{run}"), &sealed);
        }
    }

    fn load(&self, run: &RunId) -> Result<RunKeys> {
        if let Some(sealed) = self.cache.get(&self.repo.id(), &format!("runkeys/{run}"))
            && let Ok(plain) = aead::open(&self.cache_key, &self.cache_aad(run), &sealed)
        {
            match parse_cached(*run, &Zeroizing::new(plain)) {
                Some(Cached::Keys(k)) => return Ok(k),
                Some(Cached::Failure(envelope)) => bail!(
                    "the keys of run {run} could not be unwrapped from key envelope {envelope} \
                     (remembered from an earlier attempt; that envelope is damaged or forged)"
                ),
                None => {}
            }
        }
        let envelopes = self.envelopes()?;
        let (env_id, env) = match envelopes.get(run).map(Vec::as_slice) {
            Some([one]) => one,
            Some(many) => bail!(
                "run {run} has {} key envelopes ({}): none is used",
                many.len(),
                many.iter()
                    .map(|(id, _)| id.to_hex())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => bail!("no verified key envelope exists for run {run}"),
        };
        let me = self.key.encryption.public().fingerprint();
        let Some(wrapped) = env.wrapped.iter().find(|w| w.recipient == me) else {
            // A recipient added after the run: its keys are in the config.
            if let Some(plain) = self.past().get(run)
                && let Some(keys) = RunKeys::from_secret_bytes(*run, plain)
            {
                self.remember(run, CACHED_KEYS, env_id, plain);
                return Ok(keys);
            }
            bail!("key envelope {env_id} of run {run} is not wrapped for this key");
        };
        let label = run_keys_label(&self.repo.id(), run);
        // A decryption that could not run says nothing of the envelope: it
        // is reported, and not remembered as a failure.
        let unwrapped = self
            .key
            .encryption
            .unwrap(&label, &wrapped.ciphertext)
            .with_context(|| format!("the keys of run {run} (key envelope {env_id})"))?
            .and_then(|plain| RunKeys::from_secret_bytes(*run, &plain).map(|k| (k, plain)));
        let Some((keys, plain)) = unwrapped else {
            self.remember(run, CACHED_FAILURE, env_id, &[]);
            bail!(
                "the keys of run {run} could not be unwrapped from key envelope {env_id}: it is damaged or forged"
            );
        };
        self.remember(run, CACHED_KEYS, env_id, &plain);
        Ok(keys)
    }
}

/// Reads an envelope and verifies its signature (before anything in it is
/// decrypted), that its run id is bound to its signer, and that it belongs
/// to this repository.
pub fn read_envelope(
    repo: &Repository,
    root: &crate::crypto::pk::PublicKey,
    name: &str,
) -> Result<(Id, Envelope)> {
    let bytes = crate::backend::read_bounded(repo.backend.as_ref(), Kind::Keys, name)?;
    let id = Id::of_bytes(&bytes);
    if id.to_hex() != name {
        bail!("key envelope {name} is damaged: its content does not match its name");
    }
    let signed: Signed = decode(&bytes, &format!("key envelope {name}"))?;
    let env: Envelope = decode(&signed.body, &format!("key envelope {name}"))?;
    trust::verify_run(
        root,
        &env.signer,
        envelope::SIGNED_TYPE,
        &signed,
        &env.run_id,
        &env.run_salt,
    )
    .with_context(|| format!("key envelope {name} is refused"))?;
    if env.repo_id != repo.id() {
        bail!("key envelope {name} belongs to another repository");
    }
    Ok((id, env))
}
