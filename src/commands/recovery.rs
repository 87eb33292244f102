//! Recipients, recovery keys and writer revocation: `key add-recipient`,
//! `key recover`, `key revoke-writer` and `key list`.
//!
//! A recovery key is an ordinary full key made elsewhere (offline). Its
//! public part, added with `key add-recipient`, becomes a recipient of the
//! repository's id key and of every run's keys: later runs wrap theirs for
//! it in their own envelopes, and the runs made before are wrapped for it
//! in the root-signed config. With the repository's public file it becomes
//! a reading key (`key recover`): the repository's root public key and id
//! key, the recovery key's encryption key, and no signing key.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use rayon::prelude::*;

use crate::backend::Kind;
use crate::crypto::SecretKey;
use crate::crypto::pk::PublicKey;
use crate::crypto::subkeys::Subkeys;
use crate::error::Exit;
use crate::format::config::{self, Config, Revocation};
use crate::format::envelope::{Signer, WriterCertificate};
use crate::format::{Timestamp, decode};
use crate::keys::{self, Key, Shared};
use crate::repository::Repository;
use crate::repository::rollback;
use crate::repository::runkeys::{self, Keyring};
use crate::repository::trust::SignedBy;

use super::key::PUBLIC_MAGIC;
use super::{Ctx, format_time};

/// A public file: the encryption public key, and (from this version on)
/// the root public key of the key that wrote it.
fn read_public_file(path: &Path) -> Result<(PublicKey, Option<PublicKey>)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let bad = || anyhow!("{} is not a strongroom public key file", path.display());
    let mut lines = text.lines();
    if lines.next() != Some(PUBLIC_MAGIC) {
        return Err(bad());
    }
    let der = hex::decode(lines.next().ok_or_else(bad)?.trim()).map_err(|_| bad())?;
    let encryption = PublicKey::from_der(&der).map_err(|_| bad())?;
    let root = match lines.next().and_then(|l| l.strip_prefix("root ")) {
        Some(h) => Some(PublicKey::from_der(&hex::decode(h.trim()).map_err(|_| bad())?).map_err(|_| bad())?),
        None => None,
    };
    Ok((encryption, root))
}

pub fn add_recipient(ctx: &Ctx, public_key_file: &Path) -> Result<()> {
    let loaded = ctx.load_key()?;
    let key = super::prune::full_key(&loaded, "add a recipient")?;
    key.root()?;
    let (recipient, _) = read_public_file(public_key_file)?;
    let fingerprint = recipient.fingerprint();
    let mut repo = ctx.open(&loaded)?;
    let cache = ctx.cache();
    rollback::refuse_older_config(&cache, &key.shared.subkeys.cache, &repo)?;
    // The keys of every run so far that the index or a snapshot names (an
    // envelope alone opens nothing), for the new recipient.
    let listing = ctx.list_snapshots(&repo, &key.shared, &cache)?;
    let mut runs: std::collections::HashSet<crate::format::RunId> =
        listing.snapshots.iter().map(|s| s.run).collect();
    let index = crate::repository::index::Index::load(
        repo.backend.as_ref(),
        &key.shared.subkeys,
        &repo.id(),
        &cache,
    )?;
    runs.extend(index.blobs().map(|l| l.entry.run));
    drop(index);
    let past = Keyring::new(&repo, key, &cache)?.run_keys(&runs)?;
    repo.add_recipient(key, recipient, &past)?;
    if ctx.global.json {
        super::print_json(&serde_json::json!({
            "message_type": "recipient",
            "fingerprint": hex::encode(fingerprint),
            "config_version": repo.config.version,
            "past_runs": past.len(),
        }))?;
    } else if !ctx.global.quiet {
        eprintln!(
            "added a recipient ({}); it reads the {} run(s) made so far and every later one",
            &hex::encode(fingerprint)[..16],
            past.len()
        );
    }
    Ok(())
}

fn clone_shared(s: &Shared) -> Shared {
    Shared {
        id_key: SecretKey(s.id_key.0),
        chunker_seed: s.chunker_seed,
        subkeys: Subkeys::derive(&s.id_key),
        root_public: s.root_public.clone(),
        ca_pem: s.ca_pem.clone(),
    }
}

/// `key recover`: this key (a recovery key added as a recipient) and the
/// repository's public file make a reading key.
pub fn recover(ctx: &Ctx, public: &Path, out: &Path, passphrase: Option<&[u8]>) -> Result<()> {
    let mut recovery = ctx.load_key()?.into_full("recover a repository")?;
    let (_, root) = read_public_file(public)?;
    let root = root.ok_or_else(|| {
        Exit::usage(format!(
            "{} carries no root key: write it again with `strongroom key export-public` and the repository's full key",
            public.display()
        ))
    })?;
    // The config is verified under the root key from the public file
    // before anything in it is unwrapped.
    let probe = Shared {
        root_public: root.clone(),
        ..clone_shared(&recovery.shared)
    };
    let repo = Repository::open(ctx.backend(&recovery.shared)?, &probe)?;
    let mine = recovery.encryption.public();
    let r = repo
        .config
        .recipients
        .iter()
        .find(|r| r.public_key == mine.der())
        .ok_or_else(|| {
            anyhow!(
                "this key ({}) is not a recipient of {}: add its public part with `strongroom key add-recipient` and the full key",
                &hex::encode(mine.fingerprint())[..16],
                repo.backend.location()
            )
        })?;
    let mut label = config::SECRETS_LABEL.to_vec();
    label.extend_from_slice(&repo.id().0);
    let secrets = recovery
        .encryption
        .unwrap(&label, &r.wrapped_secrets)?
        .ok_or_else(|| anyhow!("the repository's secrets do not open with this key"))?;
    if secrets.len() != 40 {
        bail!("the repository's secrets for this key are malformed");
    }
    let id_key = SecretKey::from_slice(&secrets[..32]).ok_or_else(|| anyhow!("malformed id key"))?;
    let chunker_seed = u64::from_le_bytes(secrets[32..].try_into().expect("8 bytes"));
    let location = repo.backend.location();
    let repo_id = repo.id();
    drop(repo);
    recovery.shared = Shared {
        subkeys: Subkeys::derive(&id_key),
        id_key,
        chunker_seed,
        root_public: root,
        ca_pem: recovery.shared.ca_pem.clone(),
    };
    recovery.root = None;
    let reading = recovery;
    keys::save(&Key::Full(reading), out, passphrase)?;
    if ctx.global.json {
        super::print_json(&serde_json::json!({
            "message_type": "key",
            "kind": "reading",
            "path": out.to_string_lossy(),
            "repository": repo_id.to_hex(),
        }))?;
    } else if !ctx.global.quiet {
        eprintln!(
            "wrote a reading key for repository {} at {location} to {}",
            repo_id.short(),
            out.display()
        );
    }
    Ok(())
}

/// A writer key seen in the repository's key envelopes.
struct Seen {
    host: String,
    /// When the root certified it.
    certified: i64,
    runs: usize,
    first: i64,
    last: i64,
}

/// Every writer key that signed a run's envelope, by fingerprint.
fn writers(repo: &Repository, root: &PublicKey) -> Result<BTreeMap<[u8; 32], Seen>> {
    let names = repo.backend.list(Kind::Keys).context("listing key envelopes")?;
    let found: Vec<(String, [u8; 32], i64, i64)> = names
        .par_iter()
        .filter_map(|l| {
            let (_, env) = runkeys::read_envelope(repo, root, &l.name).ok()?;
            let Signer::Writer(cert) = &env.signer else {
                return None;
            };
            let c: WriterCertificate = decode(&cert.body, "a writer certificate").ok()?;
            Some((
                c.host,
                crate::crypto::sha256(&c.public_key),
                c.created,
                env.created,
            ))
        })
        .collect();
    let mut out: BTreeMap<[u8; 32], Seen> = BTreeMap::new();
    for (host, fp, certified, t) in found {
        let s = out.entry(fp).or_insert(Seen {
            host,
            certified,
            runs: 0,
            first: t,
            last: t,
        });
        s.runs += 1;
        s.first = s.first.min(t);
        s.last = s.last.max(t);
    }
    Ok(out)
}

pub fn revoke_writer(ctx: &Ctx, spec: &str) -> Result<()> {
    let key = ctx.load_key()?.into_full("revoke a writer")?;
    key.root()?;
    let mut repo = Repository::open(ctx.backend(&key.shared)?, &key.shared)?;
    let cache = ctx.cache();
    let _lock = crate::repository::lock::acquire(&repo, &key.shared.subkeys, &cache, false, "revoke-writer")?;
    let listing = ctx.verify_snapshots(&repo, &key.shared, &cache)?;
    rollback::refuse_older_config(&cache, &key.shared.subkeys.cache, &repo)?;
    let seen = writers(&repo, &key.shared.root_public)?;
    let spec_lower = spec.to_ascii_lowercase();
    let by_fingerprint: Vec<(&[u8; 32], &Seen)> =
        if spec.len() >= 8 && spec.chars().all(|c| c.is_ascii_hexdigit()) {
            seen.iter()
                .filter(|(fp, _)| hex::encode(fp).starts_with(&spec_lower))
                .collect()
        } else {
            Vec::new()
        };
    let r = match by_fingerprint.as_slice() {
        [(fp, s)] => Revocation {
            host: s.host.clone(),
            writer: Some(**fp),
            at: Timestamp::now().sec,
            kept: Vec::new(),
        },
        [_, _, ..] => {
            return Err(Exit::usage(format!(
                "{spec} is the start of {} writer fingerprints: give more of it",
                by_fingerprint.len()
            )));
        }
        [] => {
            if !seen.values().any(|s| s.host == spec) {
                crate::warn(&format!(
                    "no writer key of host {spec} has backed up here yet; its keys are revoked all the same"
                ));
            }
            Revocation {
                host: spec.to_string(),
                writer: None,
                at: Timestamp::now().sec,
                kept: Vec::new(),
            }
        }
    };
    // Its snapshots there now, each verified, are the ones that still
    // count; whatever it signs later, however dated, does not.
    let mut r = r;
    r.kept = listing
        .snapshots
        .iter()
        .filter(|s| match &s.signed_by {
            SignedBy::Writer {
                host,
                fingerprint,
                certified,
            } => r.covers(host, fingerprint, *certified),
            SignedBy::Root => false,
        })
        .map(|s| s.id)
        .collect();
    r.kept.sort();
    let what = match &r.writer {
        Some(fp) => format!("writer key {} of host {}", &hex::encode(fp)[..16], r.host),
        None => format!("every writer key of host {}", r.host),
    };
    repo.revoke(&key, r.clone())?;
    if ctx.global.json {
        super::print_json(&serde_json::json!({
            "message_type": "revocation",
            "host": r.host,
            "writer": r.writer.map(hex::encode),
            "at": format_time(&Timestamp { sec: r.at, nsec: 0 }, false),
            "kept_snapshots": r.kept.len(),
            "config_version": repo.config.version,
        }))?;
    } else if !ctx.global.quiet {
        eprintln!(
            "revoked {what}: its {} snapshot(s) there now still count, any later one is refused, and its next backup fails",
            r.kept.len()
        );
    }
    Ok(())
}

pub fn list(ctx: &Ctx) -> Result<()> {
    let key = ctx.load_key()?;
    let shared = key.shared();
    let repo = ctx.open(&key)?;
    let seen = writers(&repo, &shared.root_public)?;
    let me = match &key {
        Key::Full(k) => Some(k.encryption.public().fingerprint()),
        Key::Writer(_) => None,
    };
    let Config {
        recipients,
        past_runs,
        revoked,
        ..
    } = &repo.config;
    let time = |t: i64| format_time(&Timestamp { sec: t, nsec: 0 }, false);
    let recipients: Vec<([u8; 32], bool)> = recipients
        .iter()
        .map(|r| {
            let fp = crate::crypto::sha256(&r.public_key);
            (fp, past_runs.iter().any(|p| p.recipient == fp))
        })
        .collect();
    if ctx.global.json {
        return super::print_json(&serde_json::json!({
            "root": hex::encode(shared.root_public.fingerprint()),
            "config_version": repo.config.version,
            "recipients": recipients.iter().map(|(fp, past)| serde_json::json!({
                "fingerprint": hex::encode(fp),
                "this_key": me == Some(*fp),
                "past_runs_wrapped": past,
            })).collect::<Vec<_>>(),
            "writers": seen.iter().map(|(fp, s)| serde_json::json!({
                "fingerprint": hex::encode(fp),
                "host": s.host,
                "runs": s.runs,
                "first": time(s.first),
                "last": time(s.last),
                "revoked": revoked.iter().any(|r| r.covers(&s.host, fp, s.certified)),
            })).collect::<Vec<_>>(),
            "revocations": revoked.iter().map(|r| serde_json::json!({
                "host": r.host,
                "writer": r.writer.map(hex::encode),
                "at": time(r.at),
            })).collect::<Vec<_>>(),
        }));
    }
    println!("root key     {}", hex::encode(shared.root_public.fingerprint()));
    println!("recipients (each reads every run):");
    for (fp, past) in &recipients {
        println!(
            "  {}{}{}",
            hex::encode(fp),
            if me == Some(*fp) { "  this key" } else { "" },
            if *past {
                "  (earlier runs wrapped in the config)"
            } else {
                ""
            }
        );
    }
    println!("writer keys that have backed up:");
    if seen.is_empty() {
        println!("  none");
    }
    for (fp, s) in &seen {
        let rev = revoked.iter().any(|r| r.covers(&s.host, fp, s.certified));
        println!(
            "  {}  host {}  {} run(s), {} to {}{}",
            &hex::encode(fp)[..16],
            crate::escape::text(&s.host),
            s.runs,
            time(s.first),
            time(s.last),
            if rev { "  REVOKED" } else { "" }
        );
    }
    println!("revocations:");
    if revoked.is_empty() {
        println!("  none");
    }
    for r in revoked {
        println!(
            "  {} of host {} from {}",
            r.writer
                .map(|w| format!("writer key {}", &hex::encode(w)[..16]))
                .unwrap_or_else(|| "every writer key".into()),
            crate::escape::text(&r.host),
            time(r.at)
        );
    }
    Ok(())
}
