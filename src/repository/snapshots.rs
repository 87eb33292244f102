//! Snapshot manifests: writing them, listing and verifying them, and
//! finding the one a user names.

use anyhow::{Context, Result, anyhow, bail};
use rayon::prelude::*;

use serde::{Deserialize, Serialize};

use crate::backend::Kind;
use crate::cache::{Cache, Record};
use crate::crypto::aead;
use crate::error::Exit;
use crate::format::manifest::{self, Catalog, Manifest};
use crate::format::{FORMAT_VERSION, Id, RunId, Signed, Timestamp, aad, decode, encode};
use crate::keys::Shared;

use super::Repository;
use super::trust::{self, RunSigner, SignedBy};

/// A verified snapshot.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub id: Id,
    pub run: RunId,
    pub catalog: Catalog,
    pub signed_by: SignedBy,
    /// Dated more than a day in the future: shown, but flagged.
    pub future: bool,
}

/// Every manifest in the repository: the verified ones, oldest first, and
/// the refused ones with the reason.
pub struct Listing {
    pub snapshots: Vec<Snapshot>,
    pub refused: Vec<(String, anyhow::Error)>,
}

fn catalog_aad(repo_id: &Id, run: &RunId) -> Vec<u8> {
    aad("catalog", repo_id, &run.0)
}

/// Signs and writes a snapshot manifest; returns its id.
pub fn write(
    repo: &Repository,
    shared: &Shared,
    signer: &RunSigner,
    (run, run_salt): (RunId, [u8; 16]),
    catalog: &Catalog,
) -> Result<Id> {
    let sealed = aead::seal_salted(
        &shared.subkeys.catalog,
        &catalog_aad(&repo.id(), &run),
        &encode(catalog),
    )?;
    let m = Manifest {
        format: FORMAT_VERSION,
        repo_id: repo.id(),
        run_salt,
        run_id: run,
        signer: signer.signer.clone(),
        catalog: sealed,
    };
    let body = encode(&m);
    let signature = signer.sign(manifest::SIGNED_TYPE, &body)?;
    let bytes = encode(&Signed { body, signature });
    let id = Id::of_bytes(&bytes);
    repo.backend
        .write(Kind::Snapshots, &id.to_hex(), &bytes)
        .with_context(|| format!("writing snapshot {id}"))?;
    Ok(id)
}

/// Dated more than a day ahead of this client's clock.
fn is_future(catalog: &Catalog) -> bool {
    catalog.time.sec > Timestamp::now().sec + 86_400
}

/// Reads one manifest: the name must match the content, the signature must
/// verify (root, or a certified writer of the snapshot's own host), and only
/// then is the catalog opened.
pub fn read(repo: &Repository, shared: &Shared, name: &str) -> Result<Snapshot> {
    let bytes = crate::backend::read_bounded(repo.backend.as_ref(), Kind::Snapshots, name)?;
    let id = Id::of_bytes(&bytes);
    if id.to_hex() != name {
        bail!("its content does not match its name (damaged or tampered)");
    }
    let signed: Signed = decode(&bytes, "the manifest")?;
    let m: Manifest = decode(&signed.body, "the manifest")?;
    let signed_by = trust::verify_run(
        &shared.root_public,
        &m.signer,
        manifest::SIGNED_TYPE,
        &signed,
        &m.run_id,
        &m.run_salt,
    )?;
    if m.repo_id != repo.id() {
        bail!("it belongs to another repository");
    }
    let plain = aead::open_salted(
        &shared.subkeys.catalog,
        &catalog_aad(&repo.id(), &m.run_id),
        &m.catalog,
    )
    .map_err(|e| anyhow!("its catalog does not open: {e}"))?;
    let catalog: Catalog = decode(&plain, "the catalog")?;
    if let SignedBy::Writer { host, .. } = &signed_by
        && *host != catalog.host
    {
        bail!(
            "it is signed by the writer key of host {host} but claims host {}",
            catalog.host
        );
    }
    let future = is_future(&catalog);
    Ok(Snapshot {
        id,
        run: m.run_id,
        catalog,
        signed_by,
        future,
    })
}

/// Lists and verifies every manifest, in parallel.
pub fn list(repo: &Repository, shared: &Shared) -> Result<Listing> {
    list_with(repo, |name| read(repo, shared, name))
}

/// What the cache directory remembers of a manifest verified before, under
/// its name (the SHA-256 of its bytes, so the name alone identifies it):
/// authenticated under the cache subkey.
#[derive(Serialize, Deserialize)]
struct Remembered {
    run: RunId,
    catalog: Catalog,
    signed_by: SignedBy,
}

const REMEMBERED: &str = "verified";
/// All of them in one record: a listing of thousands of snapshots reads
/// one cache file, not one per snapshot.
const REMEMBERED_ALL: &str = "verified-snapshots";

/// Lists every manifest, verifying only those this client has not verified
/// before (a remount, or a second command, costs no signature check for
/// them), and remembering the newly verified ones. `check` uses [`list`],
/// which reads and verifies everything.
pub fn list_remembering(repo: &Repository, shared: &Shared, cache: &Cache) -> Result<Listing> {
    let key = &shared.subkeys.cache;
    let repo_id = repo.id();
    let old: std::collections::BTreeMap<String, Remembered> =
        match cache.get_authenticated(&repo_id, REMEMBERED_ALL, key) {
            Record::Found(b) => decode(&b, "the remembered snapshots").unwrap_or_default(),
            Record::Missing | Record::Damaged => Default::default(),
        };
    let listing = list_with(repo, |name| {
        if let Some(r) = old.get(name)
            && let Some(id) = Id::from_hex(name)
        {
            return Ok(Snapshot {
                id,
                run: r.run,
                future: is_future(&r.catalog),
                catalog: r.catalog.clone(),
                signed_by: r.signed_by.clone(),
            });
        }
        read(repo, shared, name)
    })?;
    // Remember what is there now, and only that.
    let now: std::collections::BTreeMap<String, Remembered> = listing
        .snapshots
        .iter()
        .map(|s| {
            (
                s.id.to_hex(),
                Remembered {
                    run: s.run,
                    catalog: s.catalog.clone(),
                    signed_by: s.signed_by.clone(),
                },
            )
        })
        .collect();
    let same = now.len() == old.len() && now.keys().all(|k| old.contains_key(k));
    if !same {
        cache.put_authenticated(&repo_id, REMEMBERED_ALL, key, &encode(&now));
    }
    // The one-file-per-snapshot records of earlier versions.
    cache.retain(&repo_id, REMEMBERED, |_| false);
    Ok(listing)
}

/// The refusal of a snapshot whose writer key was revoked before it came:
/// it is genuine, and no longer counts (prune does not wait for it).
#[derive(Debug)]
pub struct Revoked(pub String);

impl std::fmt::Display for Revoked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Revoked {}

/// Why a snapshot no longer counts: its writer key was revoked, and it was
/// not among that writer's snapshots when the revocation was made.
fn revoked(repo: &Repository, s: &Snapshot) -> Option<anyhow::Error> {
    let SignedBy::Writer {
        host,
        fingerprint,
        certified,
    } = &s.signed_by
    else {
        return None;
    };
    let r = repo
        .config
        .revoked
        .iter()
        .filter(|r| r.covers(host, fingerprint, *certified) && !r.kept.contains(&s.id))
        .min_by_key(|r| r.at)?;
    Some(anyhow::Error::new(Revoked(format!(
        "it is signed by the writer key {} of host {host}, revoked at {}, and was not there then (it claims {})",
        &hex::encode(fingerprint)[..16],
        crate::commands::format_time(&crate::format::Timestamp { sec: r.at, nsec: 0 }, false),
        crate::commands::format_time(&s.catalog.time, false),
    ))))
}

fn list_with(repo: &Repository, read_one: impl Fn(&str) -> Result<Snapshot> + Sync) -> Result<Listing> {
    let names = repo.backend.list(Kind::Snapshots).context("listing snapshots")?;
    let results: Vec<(String, Result<Snapshot>)> = names
        .par_iter()
        .map(|l| (l.name.clone(), read_one(&l.name)))
        .collect();
    let mut snapshots = Vec::new();
    let mut refused = Vec::new();
    for (name, r) in results {
        let r = r.and_then(|s| match revoked(repo, &s) {
            Some(e) => Err(e),
            None => Ok(s),
        });
        match r {
            Ok(s) => snapshots.push(s),
            Err(e) => refused.push((name, e)),
        }
    }
    snapshots.sort_by(|a, b| a.catalog.time.cmp(&b.catalog.time).then(a.id.cmp(&b.id)));
    refused.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Listing { snapshots, refused })
}

impl Listing {
    /// Finds a snapshot by `latest`, a full id or a unique prefix of at
    /// least 8 hex digits; `latest` honours `host`.
    pub fn find(&self, spec: &str, host: Option<&str>) -> Result<&Snapshot> {
        let candidates = self
            .snapshots
            .iter()
            .filter(|s| host.is_none_or(|h| s.catalog.host == h));
        if spec == "latest" {
            let refused = match self.refused.len() {
                0 => String::new(),
                n => format!(" that verifies ({n} refused: `strongroom snapshots` names them)"),
            };
            // A snapshot dated far ahead would stay `latest` for years: it is
            // passed over, and named.
            let (future, now): (Vec<&Snapshot>, Vec<&Snapshot>) = candidates.partition(|s| s.future);
            let ids = || future.iter().map(|s| s.id.short()).collect::<Vec<_>>().join(", ");
            if let Some(s) = now.last() {
                if !future.is_empty() {
                    crate::warn(&format!(
                        "`latest` is {}, passing over snapshot(s) {} dated more than a day in the future",
                        s.id.short(),
                        ids()
                    ));
                }
                return Ok(s);
            }
            if !future.is_empty() {
                return Err(Exit::usage(format!(
                    "no snapshot{} is dated before tomorrow (snapshot(s) {} lie in the future: name one by its id)",
                    host.map(|h| format!(" of host {h}")).unwrap_or_default(),
                    ids()
                )));
            }
            return Err(match host {
                Some(h) => Exit::usage(format!("there is no snapshot of host {h}{refused}")),
                None => Exit::usage(format!("the repository has no snapshot{refused}")),
            });
        }
        let spec_l = spec.to_ascii_lowercase();
        if spec_l.len() < 8 || spec_l.len() > 64 || !spec_l.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(Exit::usage(format!(
                "{spec:?} is not a snapshot: give `latest`, a full id or a prefix of at least 8 hex digits"
            )));
        }
        let matching: Vec<&Snapshot> = candidates
            .filter(|s| s.id.to_hex().starts_with(&spec_l))
            .collect();
        match matching.as_slice() {
            [one] => Ok(one),
            [] => {
                if let Some((name, err)) = self.refused.iter().find(|(n, _)| n.starts_with(&spec_l)) {
                    Err(anyhow!("snapshot {name} is refused: {err:#}"))
                } else {
                    Err(Exit::usage(format!("no snapshot matches {spec}")))
                }
            }
            _ => Err(Exit::usage(format!(
                "{spec} matches {} snapshots; give more digits",
                matching.len()
            ))),
        }
    }
}
