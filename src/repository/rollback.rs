//! Rollback detection: the client remembers, in its cache directory, the
//! highest config version and the newest snapshot per host it has seen, and
//! warns when the repository shows it something older.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::cache::Cache;
use crate::format::{Id, Timestamp, decode, encode};

use super::Repository;
use super::snapshots::Listing;

const NAME: &str = "seen";

#[derive(Default, Serialize, Deserialize)]
struct Seen {
    config_version: u64,
    newest: BTreeMap<String, (Timestamp, Id)>,
}

/// Compares what the repository shows with what was seen before, warns on
/// any step back, and records the newest state.
pub fn check(cache: &Cache, repo: &Repository, listing: Option<&Listing>) {
    let mut seen: Seen = cache
        .get(&repo.id(), NAME)
        .and_then(|b| decode(&b, "the rollback record").ok())
        .unwrap_or_default();
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
    cache.put(&repo.id(), NAME, &encode(&seen));
}
