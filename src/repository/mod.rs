//! The object model: opening a repository, its index, packs, run keys and
//! snapshots. Writers and readers are separate types; only a full key makes
//! a [`reader::Reader`].

pub mod blobcache;
pub mod index;
pub mod lock;
pub mod packer;
pub mod packs;
pub mod packstore;
pub mod policy;
pub mod prune;
pub mod reader;
pub mod rollback;
pub mod runkeys;
pub mod snapshots;
pub mod sorted_index;
pub mod trust;
pub mod writer;

use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};

use crate::backend::{Backend, Kind, is_not_found};
use crate::crypto::pk::PublicKey;
use crate::error::Exit;
use crate::format::config::{self, ChunkerParams, Config, Recipient};
use crate::format::{FORMAT_VERSION, Id, RunId, Signed, encode};
use crate::keys::{FullKey, Shared};

/// An opened repository: its backend and its verified config.
pub struct Repository {
    pub backend: Arc<dyn Backend>,
    pub config: Config,
    pub recipients: Vec<PublicKey>,
}

impl Repository {
    /// Creates a repository whose config names the full key's root and
    /// encryption keys, and wraps the id key and chunker seed for them.
    pub fn init(backend: Arc<dyn Backend>, key: &FullKey) -> Result<Repository> {
        let repo_id = Id(crate::crypto::random_array()?);
        let recipient_key = key.encryption.public();
        let wrapped_secrets = wrap_secrets(&key.shared, &repo_id, &recipient_key)?;
        let config = Config {
            format: FORMAT_VERSION,
            version: 1,
            repo_id,
            created: crate::format::Timestamp::now().sec,
            chunker: ChunkerParams::default(),
            root_public_key: key.shared.root_public.der().to_vec(),
            recipients: vec![Recipient {
                public_key: recipient_key.der().to_vec(),
                wrapped_secrets,
            }],
            past_runs: Vec::new(),
            revoked: Vec::new(),
        };
        backend
            .create()
            .with_context(|| format!("creating a repository at {}", backend.location()))?;
        write_config(backend.as_ref(), key, &config)?;
        Ok(Repository {
            backend,
            config,
            recipients: vec![recipient_key],
        })
    }

    /// Opens a repository, verifying its config under the root public key
    /// of the caller's own key file (never one taken from the repository).
    pub fn open(backend: Arc<dyn Backend>, key: &Shared) -> Result<Repository> {
        let bytes = crate::backend::read_bounded(backend.as_ref(), Kind::Config, "config").map_err(|e| {
            if is_not_found(&e) {
                anyhow!("there is no strongroom repository at {}", backend.location())
            } else {
                e.context(format!("reading the config of {}", backend.location()))
            }
        })?;
        let damaged = || anyhow!("the config of {} is damaged", backend.location());
        let signed: Signed = crate::format::decode(&bytes, "the config").map_err(|_| damaged())?;
        if !key
            .root_public
            .verify(config::SIGNED_TYPE, &signed.body, &signed.signature)
        {
            bail!(
                "the config of {} is not signed by this key's root key (a different key, or a tampered repository)",
                backend.location()
            );
        }
        let config: Config = crate::format::decode(&signed.body, "the config").map_err(|_| damaged())?;
        if config.format != FORMAT_VERSION {
            bail!(
                "repository {} has format {}, this strongroom reads format {FORMAT_VERSION}",
                backend.location(),
                config.format
            );
        }
        if config.root_public_key != key.root_public.der() {
            bail!("the config of {} names another root key", backend.location());
        }
        let recipients = config
            .recipients
            .iter()
            .map(|r| PublicKey::from_der(&r.public_key))
            .collect::<Result<Vec<_>>>()
            .context("a recipient key in the config is malformed")?;
        Ok(Repository {
            backend,
            config,
            recipients,
        })
    }

    pub fn id(&self) -> Id {
        self.config.repo_id
    }

    /// Adds a recipient of the keys of every later run, and of `past`:
    /// the keys (`data ‖ metadata`) of the runs made so far.
    pub fn add_recipient(
        &mut self,
        key: &FullKey,
        recipient: PublicKey,
        past: &[(RunId, zeroize::Zeroizing<Vec<u8>>)],
    ) -> Result<()> {
        if self.recipients.contains(&recipient) {
            return Err(Exit::usage("that key is already a recipient of this repository"));
        }
        key.root()?;
        let wrapped_secrets = wrap_secrets(&key.shared, &self.config.repo_id, &recipient)?;
        self.config.recipients.push(Recipient {
            public_key: recipient.der().to_vec(),
            wrapped_secrets,
        });
        if !past.is_empty() {
            let bundle_key = crate::crypto::SecretKey::random()?;
            let mut label = config::PAST_RUNS_LABEL.to_vec();
            label.extend_from_slice(&self.config.repo_id.0);
            let fingerprint = recipient.fingerprint();
            let plain = zeroize::Zeroizing::new(encode(
                &past.iter().map(|(r, k)| (*r, k.to_vec())).collect::<Vec<_>>(),
            ));
            self.config.past_runs.push(config::PastRuns {
                recipient: fingerprint,
                wrapped_key: recipient.wrap(&label, &bundle_key.0)?,
                sealed: crate::crypto::aead::seal(
                    &bundle_key,
                    &crate::format::aad(config::PAST_RUNS_SEAL_KIND, &self.config.repo_id, &fingerprint),
                    &plain,
                )?,
            });
        }
        self.config.version += 1;
        write_config(self.backend.as_ref(), key, &self.config)?;
        self.recipients.push(recipient);
        Ok(())
    }

    /// Records a writer revocation in the config.
    pub fn revoke(&mut self, key: &FullKey, r: config::Revocation) -> Result<()> {
        key.root()?;
        self.config.revoked.push(r);
        self.config.version += 1;
        write_config(self.backend.as_ref(), key, &self.config)
    }
}

fn wrap_secrets(shared: &Shared, repo_id: &Id, to: &PublicKey) -> Result<Vec<u8>> {
    let mut secrets = zeroize::Zeroizing::new(shared.id_key.0.to_vec());
    secrets.extend_from_slice(&shared.chunker_seed.to_le_bytes());
    let mut label = config::SECRETS_LABEL.to_vec();
    label.extend_from_slice(&repo_id.0);
    to.wrap(&label, &secrets)
}

fn write_config(backend: &dyn Backend, key: &FullKey, config: &Config) -> Result<()> {
    let body = encode(config);
    let signature = key.root()?.sign(config::SIGNED_TYPE, &body)?;
    let signed = encode(&Signed { body, signature });
    if signed.len() as u64 > Kind::Config.max_size() {
        bail!(
            "the new config would be {} bytes, more than a config may be ({}): nothing was changed",
            signed.len(),
            Kind::Config.max_size()
        );
    }
    backend
        .write(Kind::Config, "config", &signed)
        .context("writing the repository config")
}
