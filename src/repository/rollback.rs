//! Rollback detection: the client remembers, in its cache directory, the
//! highest config version and the newest snapshot per host it has seen, and
//! warns when the repository shows it something older.
//!
//! The record is authenticated under the cache subkey: one that fails its
//! MAC (altered by someone else, or torn) is reported once and replaced,
//! never silently taken as "nothing seen yet".

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::cache::{Cache, Record};
use crate::crypto::SecretKey;
use crate::format::{Id, Timestamp, decode, encode};

use super::Repository;
use super::snapshots::Listing;

const NAME: &str = "seen";

#[derive(Default, Serialize, Deserialize)]
struct Seen {
    config_version: u64,
    newest: BTreeMap<String, (Timestamp, Id)>,
}

fn load(cache: &Cache, key: &SecretKey, repo: &Repository) -> Seen {
    let found = match cache.get_authenticated(&repo.id(), NAME, key) {
        Record::Missing => return Seen::default(),
        Record::Found(b) => decode_record(&b).ok(),
        Record::Damaged => None,
    };
    found.unwrap_or_else(|| {
        crate::warn(&format!(
            "the record of what this client saw of repository {} is damaged; rollback detection starts over",
            repo.id().short()
        ));
        Seen::default()
    })
}

fn decode_record(bytes: &[u8]) -> anyhow::Result<Seen> {
    decode(bytes, "the rollback record")
}

/// Whether bytes decode as a rollback record (for the fuzz target: the
/// record is read only after its MAC verifies).
pub fn is_valid_record(bytes: &[u8]) -> bool {
    decode_record(bytes).is_ok()
}

fn save(cache: &Cache, key: &SecretKey, repo: &Repository, seen: &Seen) {
    cache.put_authenticated(&repo.id(), NAME, key, &encode(seen));
}

/// Records a snapshot this client has just written as seen, so that its
/// disappearance is noticed like any other's.
pub fn record_own(cache: &Cache, key: &SecretKey, repo: &Repository, host: &str, time: Timestamp, id: Id) {
    let mut seen = load(cache, key, repo);
    let e = seen.newest.entry(host.to_string()).or_insert((time, id));
    if time >= e.0 {
        *e = (time, id);
    }
    save(cache, key, repo, &seen);
}

/// Refuses to build a new config on one older than this client has seen:
/// the storage could otherwise serve an old config (without a later
/// revocation or recipient) and have it signed again at a higher version.
pub fn refuse_older_config(cache: &Cache, key: &SecretKey, repo: &Repository) -> anyhow::Result<()> {
    let seen = load(cache, key, repo).config_version;
    if repo.config.version < seen {
        anyhow::bail!(
            "the repository's config is at version {}, but version {seen} was seen before: it may have been rolled \
             back, and a change made on it would undo later ones; nothing was changed",
            repo.config.version
        );
    }
    Ok(())
}

/// Forgets what was seen of snapshots this client has just removed (by
/// `forget`), so that their absence is not taken for a rollback.
pub fn record_removed(cache: &Cache, key: &SecretKey, repo: &Repository, removed: &[Id]) {
    let mut seen = load(cache, key, repo);
    seen.newest.retain(|_, (_, id)| !removed.contains(id));
    save(cache, key, repo, &seen);
}

/// Compares what the repository shows with what was seen before, warns on
/// any step back, and records the newest state.
pub fn check(cache: &Cache, key: &SecretKey, repo: &Repository, listing: Option<&Listing>) {
    let mut seen = load(cache, key, repo);
    if repo.config.version < seen.config_version {
        crate::warn(&format!(
            "the repository's config is at version {}, but version {} was seen before: it may have been rolled back",
            repo.config.version, seen.config_version
        ));
    }
    seen.config_version = seen.config_version.max(repo.config.version);
    if let Some(listing) = listing {
        let mut now: BTreeMap<String, (Timestamp, Id)> = BTreeMap::new();
        for s in &listing.snapshots {
            let e = now
                .entry(s.catalog.host.clone())
                .or_insert((s.catalog.time, s.id));
            if s.catalog.time >= e.0 {
                *e = (s.catalog.time, s.id);
            }
        }
        // A snapshot seen before and refused now for its revoked writer is
        // there, and no longer counts: no rollback, and forgotten.
        seen.newest.retain(|_, (_, id)| {
            !listing
                .refused
                .iter()
                .any(|(name, e)| *name == id.to_hex() && e.is::<super::snapshots::Revoked>())
        });
        for (host, (time, id)) in &seen.newest {
            let present = listing.snapshots.iter().any(|s| s.id == *id);
            let newer = now.get(host).is_some_and(|(t, _)| t >= time);
            if !present && !newer {
                crate::warn(&format!(
                    "snapshot {} of host {host}, the newest seen before, is gone and nothing newer replaced it: \
                     the repository may have been rolled back",
                    id.short()
                ));
            }
        }
        for (host, v) in now {
            let e = seen.newest.entry(host).or_insert(v);
            if v.0 >= e.0 {
                *e = v;
            }
        }
    }
    save(cache, key, repo, &seen);
}
