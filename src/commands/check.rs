//! `strongroom check [--read-data]`: verifies everything that can be
//! verified with the key at hand, and names every damaged object.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use anyhow::{Result, bail};
use rayon::prelude::*;

use crate::backend::Kind;
use crate::cli::CheckArgs;
use crate::format::tree::{Extent, NodeKind};
use crate::format::{Id, RunId};
use crate::keys::Key;
use crate::repository::index::{self, Index, Location};
use crate::repository::reader::Reader;
use crate::repository::{packs, runkeys};

use super::Ctx;

struct Report {
    errors: Mutex<Vec<String>>,
}

impl Report {
    fn error(&self, msg: String) {
        eprintln!("error: {}", crate::escape::text(&msg));
        self.errors.lock().unwrap_or_else(|e| e.into_inner()).push(msg);
    }
}

pub fn run(ctx: &Ctx, a: CheckArgs) -> Result<()> {
    let key = ctx.load_key()?;
    let repo = ctx.open(&key)?;
    let shared = key.shared();
    let cache = ctx.cache();
    let _lock = crate::repository::lock::acquire(&repo, &shared.subkeys, &cache, false, "check")?;
    let report = Report {
        errors: Mutex::new(Vec::new()),
    };
    let say = |m: &str| {
        if !ctx.global.quiet {
            eprintln!("{m}");
        }
    };

    say("checking snapshots");
    let listing = ctx.verify_snapshots(&repo, shared, &cache)?;
    for (name, err) in &listing.refused {
        report.error(format!("snapshot {name} is refused: {err:#}"));
    }
    for s in &listing.snapshots {
        if s.future {
            report.error(format!(
                "snapshot {} is dated more than a day in the future",
                s.id.short()
            ));
        }
    }

    say("checking key envelopes");
    let mut envelopes: HashMap<RunId, Vec<Id>> = HashMap::new();
    for l in repo.backend.list(Kind::Keys)? {
        match runkeys::read_envelope(&repo, &shared.root_public, &l.name) {
            Ok((id, env)) => envelopes.entry(env.run_id).or_default().push(id),
            Err(e) => report.error(naming("key envelope", &l.name, &e)),
        }
    }
    for (run, ids) in &envelopes {
        if ids.len() > 1 {
            let names: Vec<String> = ids.iter().map(Id::to_hex).collect();
            report.error(format!(
                "run {run} has {} key envelopes ({}); none is used",
                ids.len(),
                names.join(", ")
            ));
        }
    }
    let runs: HashSet<RunId> = envelopes
        .iter()
        .filter(|(_, ids)| ids.len() == 1)
        .map(|(run, _)| *run)
        .collect();

    // Every index file is read and verified here, whatever the cached
    // table says: an unreadable one is an error for check only.
    say("checking the index and packs");
    let mut index_names: Vec<String> = repo
        .backend
        .list(Kind::Index)?
        .into_iter()
        .map(|l| l.name)
        .collect();
    index_names.sort();
    let files = index::read_index_files(
        repo.backend.as_ref(),
        &shared.subkeys,
        &repo.id(),
        &index_names.iter().collect::<Vec<_>>(),
    );
    for (name, e) in &files.unreadable {
        report.error(naming("index file", name, e));
    }
    let index = Index::from_packs(&files.packs);
    let mut listed: HashMap<Id, u64> = HashMap::new();
    for l in repo.backend.list(Kind::Packs)? {
        match Id::from_hex(&l.name) {
            Some(id) => {
                listed.insert(id, l.size);
            }
            None => report.error(format!(
                "pack {} is not a valid pack: its name is not a content hash",
                l.name
            )),
        }
    }
    let mut by_pack: HashMap<Id, Vec<Location>> = HashMap::new();
    for loc in index.blobs() {
        by_pack.entry(loc.pack).or_default().push(loc);
        if !runs.contains(&loc.entry.run) {
            report.error(format!(
                "blob {} of pack {} names run {}, which has no valid key envelope",
                loc.entry.id, loc.pack, loc.entry.run
            ));
        }
    }
    for pack in index.packs() {
        let recorded = index.pack_size(pack).unwrap_or_default();
        match listed.get(pack) {
            None => report.error(format!(
                "pack {pack} is named by the index but missing from the repository"
            )),
            Some(size) if *size != recorded => report.error(format!(
                "pack {pack} is {size} bytes but the index records {recorded} (truncated or replaced)"
            )),
            Some(_) => {}
        }
    }
    // A pack no index file names is an interrupted backup's (valid: the next
    // backup indexes it) or garbage (named here, never indexed).
    let unindexed: Vec<&Id> = listed.keys().filter(|p| !index.has_pack(p)).collect();
    let valid_unindexed = unindexed
        .par_iter()
        .filter(
            |p| match packs::read_verified(repo.backend.as_ref(), &shared.subkeys, &repo.id(), p) {
                Ok(_) => true,
                Err(e) => {
                    report.error(format!("pack {p} is not a valid pack: {e:#}"));
                    false
                }
            },
        )
        .count();
    if valid_unindexed > 0 {
        say(&format!(
            "{valid_unindexed} pack(s) are not indexed yet (left by an interrupted backup); the next backup indexes and reuses them"
        ));
    }
    let live = |id: &Id| {
        index
            .find_location(id, |l| {
                listed
                    .get(&l.pack)
                    .is_some_and(|s| index.pack_size(&l.pack) == Some(*s))
            })
            .is_some()
    };

    let full = match &key {
        Key::Full(k) => Some(k),
        Key::Writer(_) => None,
    };
    let reader = match full {
        Some(k) => Some(Reader::open(&repo, k, &cache)?),
        None => None,
    };

    say("checking snapshot trees");
    for s in &listing.snapshots {
        if !live(&s.catalog.tree) {
            report.error(format!(
                "snapshot {}: its root tree {} is in no pack that exists intact",
                s.id.short(),
                s.catalog.tree
            ));
        }
    }
    if let Some(reader) = &reader {
        let mut seen = HashSet::new();
        for s in &listing.snapshots {
            let mut stack = vec![(s.catalog.tree, std::path::PathBuf::from("/"), 0usize)];
            while let Some((tree_id, path, depth)) = stack.pop() {
                if depth > crate::format::tree::MAX_DEPTH {
                    report.error(format!(
                        "snapshot {} {}: directories nested deeper than {} levels are damage",
                        s.id.short(),
                        path.display(),
                        crate::format::tree::MAX_DEPTH
                    ));
                    continue;
                }
                if !seen.insert(tree_id) {
                    continue;
                }
                let tree = match reader.read_tree(&tree_id) {
                    Ok(t) => t,
                    Err(e) => {
                        report.error(format!("snapshot {} {}: {e:#}", s.id.short(), path.display()));
                        continue;
                    }
                };
                for n in tree.nodes {
                    let p = path.join(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(
                        &n.name,
                    ));
                    if n.kind == NodeKind::Dir {
                        if let Some(t) = n.subtree {
                            stack.push((t, p, depth + 1));
                        }
                        continue;
                    }
                    for e in &n.content {
                        if let Extent::Data { id, .. } = e
                            && !index.contains(id)
                        {
                            report.error(format!(
                                "snapshot {} {}: blob {id} is not in the index",
                                s.id.short(),
                                p.display()
                            ));
                        }
                    }
                }
            }
        }
    } else {
        say("(a writer key cannot read trees: their contents were not checked)");
    }

    if a.read_data {
        say(&format!("reading all data in {} pack(s)", by_pack.len()));
        let done = std::sync::atomic::AtomicUsize::new(0);
        let show = crate::progress::wanted(ctx.global.json, ctx.global.quiet);
        let line = || format!("{} of {} packs read", done.load(Ordering::Relaxed), by_pack.len());
        // Two packs per core in flight: one read while the other is hashed.
        let pool = crate::fs::io_pool(2)?;
        crate::progress::run(show, line, || {
            pool.install(|| {
                by_pack.par_iter().for_each(|(pack, locs)| {
                    if listed.contains_key(pack)
                        && let Err(e) = check_pack(&repo, shared, reader.as_ref(), pack, locs)
                    {
                        report.error(format!("{e:#}"));
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                })
            })
        });
    }

    let errors = report.errors.into_inner().unwrap_or_else(|e| e.into_inner());
    if ctx.global.json {
        super::print_json(&serde_json::json!({
            "message_type": "summary",
            "errors": errors,
            "snapshots": listing.snapshots.len(),
            "refused_snapshots": listing.refused.len(),
            "packs": index.packs().count(),
            "unindexed_packs": unindexed,
            "blobs": index.len(),
            "trees_checked": reader.is_some(),
            "data_read": a.read_data,
        }))?;
    }
    if !errors.is_empty() {
        bail!("check found {} error(s) (named above)", errors.len());
    }
    if !ctx.global.quiet && !ctx.global.json {
        println!(
            "no errors: {} snapshot(s), {} pack(s), {} blob(s)",
            listing.snapshots.len(),
            index.packs().count(),
            index.len()
        );
    }
    Ok(())
}

/// An error message that names the object once.
fn naming(what: &str, name: &str, e: &anyhow::Error) -> String {
    let msg = format!("{e:#}");
    if msg.contains(name) {
        msg
    } else {
        format!("{what} {name}: {msg}")
    }
}

fn check_pack(
    repo: &crate::repository::Repository,
    shared: &crate::keys::Shared,
    reader: Option<&Reader>,
    pack: &Id,
    locs: &[Location],
) -> Result<()> {
    // Each blob is opened as soon as all of it has been read, while its
    // bytes are still in the processor's caches; what that found counts
    // once the pack has proved to be what its name says.
    let mut order: Vec<&Location> = locs.iter().collect();
    order.sort_by_key(|l| l.entry.offset as u64 + l.entry.length as u64);
    let (mut next, mut failed) = (0, None);
    let mut open_arrived = |so_far: &[u8]| {
        let Some(reader) = reader else { return };
        while let Some(l) = order.get(next) {
            let (start, end) = (
                l.entry.offset as u64,
                l.entry.offset as u64 + l.entry.length as u64,
            );
            if end > so_far.len() as u64 {
                break;
            }
            next += 1;
            if failed.is_none()
                && let Err(e) = reader.verify_blob(l, &so_far[start as usize..end as usize])
            {
                failed = Some(e);
            }
        }
    };
    let (_, entries) = packs::read_verified_with(
        repo.backend.as_ref(),
        &shared.subkeys,
        &repo.id(),
        pack,
        &mut open_arrived,
    )?;
    let in_header: HashSet<_> = entries.blobs.iter().map(|e| (e.id, e.offset, e.length)).collect();
    for l in locs {
        if !in_header.contains(&(l.entry.id, l.entry.offset, l.entry.length)) {
            bail!(
                "pack {pack}: the index places blob {} where the pack header does not",
                l.entry.id
            );
        }
    }
    if reader.is_some() {
        if let Some(l) = order.get(next) {
            bail!("pack {pack}: blob {} lies outside it", l.entry.id);
        }
        if let Some(e) = failed {
            return Err(e);
        }
    }
    Ok(())
}
