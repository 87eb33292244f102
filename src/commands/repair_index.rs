//! `strongroom repair index`: rebuilds the index from what the packs
//! really hold, and names everything it drops.
//!
//! Entries of packs present with the recorded size are kept as they are;
//! other packs present (unindexed, or of another size) are read whole and
//! indexed only if they verify; entries of missing packs are dropped. The
//! new index files are written before the old ones are deleted, under an
//! exclusive lock, so an interruption loses nothing.

use std::collections::{HashMap, HashSet};

use anyhow::{Context, Result};
use rayon::prelude::*;

use crate::backend::Kind;
use crate::format::Id;
use crate::format::index::PackEntries;
use crate::repository::index;
use crate::repository::packs;
use crate::repository::writer::PACKS_PER_INDEX_FILE;

use super::Ctx;

pub fn run(ctx: &Ctx) -> Result<()> {
    let key = ctx.load_key()?;
    let repo = ctx.open(&key)?;
    let shared = key.shared();
    let cache = ctx.cache();
    let _lock = crate::repository::lock::acquire(&repo, &shared.subkeys, &cache, true, "repair index")?;
    let backend = repo.backend.as_ref();
    // Names and errors come from the repository: escaped for the terminal.
    let report = |m: String| {
        if !ctx.global.quiet {
            println!("{}", crate::escape::text(&m));
        }
    };

    let mut old_names: Vec<String> = backend
        .list(Kind::Index)
        .context("listing the index")?
        .into_iter()
        .map(|l| l.name)
        .collect();
    old_names.sort();
    let files = index::read_index_files(
        backend,
        &shared.subkeys,
        &repo.id(),
        &old_names.iter().collect::<Vec<_>>(),
    );
    let mut changed = false;
    for (name, e) in &files.unreadable {
        report(format!("index file {name} is unreadable and is replaced: {e:#}"));
        changed = true;
    }
    let listed: HashMap<Id, u64> = crate::repository::packs::listed(backend)?;

    let mut kept: HashMap<Id, PackEntries> = HashMap::new();
    let mut seen: HashSet<Id> = HashSet::new();
    let mut dropped_packs = 0usize;
    // A pack that index files name more than once is read again from its
    // header: which of the entries is honest is not for them to say.
    let mut named: HashMap<Id, usize> = HashMap::new();
    for p in &files.packs {
        *named.entry(p.pack).or_default() += 1;
    }
    for p in files.packs {
        if !seen.insert(p.pack) {
            continue;
        }
        let times = named[&p.pack];
        if times > 1 && listed.contains_key(&p.pack) {
            report(format!(
                "pack {} is named by {times} index entries: reading its header again",
                p.pack
            ));
            changed = true;
            continue;
        }
        match listed.get(&p.pack) {
            Some(size) if *size == p.size => {
                kept.insert(p.pack, p);
            }
            Some(size) => {
                report(format!(
                    "pack {} is {size} bytes but the index recorded {}: reading it again",
                    p.pack, p.size
                ));
                changed = true;
            }
            None => {
                report(format!(
                    "pack {} is missing: its {} blob(s) are dropped from the index",
                    p.pack,
                    p.blobs.len()
                ));
                dropped_packs += 1;
                changed = true;
            }
        }
    }
    let to_read: Vec<&Id> = listed.keys().filter(|p| !kept.contains_key(p)).collect();
    let read: Vec<(Id, Result<PackEntries>)> = to_read
        .par_iter()
        .map(|p| {
            (
                **p,
                packs::read_verified(backend, &shared.subkeys, &repo.id(), p).map(|(_, e)| e),
            )
        })
        .collect();
    for (pack, r) in read {
        match r {
            Ok(entries) => {
                report(format!(
                    "pack {pack}: indexed from its header ({} blob(s))",
                    entries.blobs.len()
                ));
                kept.insert(pack, entries);
                changed = true;
            }
            Err(e) => {
                if seen.contains(&pack) {
                    dropped_packs += 1;
                    changed = true;
                }
                report(format!(
                    "pack {pack} is not a valid pack and is left out of the index: {e:#}"
                ));
            }
        }
    }
    if !changed {
        report(format!(
            "the index is complete: {} pack(s), nothing to repair",
            kept.len()
        ));
        return Ok(());
    }

    let mut packs: Vec<PackEntries> = kept.into_values().collect();
    packs.sort_by_key(|p| p.pack);
    let total = packs.len();
    let mut written = HashSet::new();
    for chunk in packs.chunks(PACKS_PER_INDEX_FILE) {
        let id = index::write_index_file(backend, &shared.subkeys, &repo.id(), chunk.to_vec())?;
        written.insert(id.to_hex());
    }
    for name in old_names.iter().filter(|n| !written.contains(*n)) {
        backend
            .delete(Kind::Index, name)
            .with_context(|| format!("deleting the old index file {name}"))?;
    }
    report(format!(
        "index rebuilt: {total} pack(s) in {} new index file(s), {dropped_packs} pack(s) dropped, {} old index file(s) deleted",
        written.len(),
        old_names.len()
    ));
    Ok(())
}
