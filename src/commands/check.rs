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
use crate::repository::runkeys;

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
    let _lock = crate::repository::lock::acquire(&repo, &shared.subkeys.index, false, "check")?;
    let report = Report {
        errors: Mutex::new(Vec::new()),
    };
    let say = |m: &str| {
        if !ctx.global.quiet {
            eprintln!("{m}");
        }
    };

    say("checking snapshots");
    let cache = ctx.cache();
    let listing = ctx.list_snapshots(&repo, shared, &cache)?;
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
    let mut runs: HashSet<RunId> = HashSet::new();
    for l in repo.backend.list(Kind::Keys)? {
        match runkeys::read_envelope(&repo, &shared.root_public, &l.name) {
            Ok((_, env)) => {
                runs.insert(env.run_id);
            }
            Err(e) => report.error(format!("{e:#}")),
        }
    }

    say("checking the index and packs");
    let index = Index::load(repo.backend.as_ref(), &shared.subkeys, &repo.id(), &cache)?;
    let listed: HashMap<Id, u64> = repo
        .backend
        .list(Kind::Packs)?
        .into_iter()
        .filter_map(|l| Id::from_hex(&l.name).map(|id| (id, l.size)))
        .collect();
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
        if !listed.contains_key(pack) {
            report.error(format!(
                "pack {pack} is named by the index but missing from the repository"
            ));
        }
    }
    let unindexed = listed.keys().filter(|p| !index.has_pack(p)).count();
    if unindexed > 0 {
        say(&format!(
            "{unindexed} pack(s) are not indexed yet (left by an interrupted backup); the next backup indexes and reuses them"
        ));
    }

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
        if !index.contains(&s.catalog.tree) {
            report.error(format!(
                "snapshot {}: its root tree {} is not in the index",
                s.id.short(),
                s.catalog.tree
            ));
        }
    }
    if let Some(reader) = &reader {
        let mut seen = HashSet::new();
        for s in &listing.snapshots {
            let mut stack = vec![(s.catalog.tree, std::path::PathBuf::from("/"))];
            while let Some((tree_id, path)) = stack.pop() {
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
                            stack.push((t, p));
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
        crate::progress::run(show, line, || {
            by_pack.par_iter().for_each(|(pack, locs)| {
                if listed.contains_key(pack)
                    && let Err(e) = check_pack(&repo, shared, reader.as_ref(), pack, locs)
                {
                    report.error(format!("{e:#}"));
                }
                done.fetch_add(1, Ordering::Relaxed);
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

fn check_pack(
    repo: &crate::repository::Repository,
    shared: &crate::keys::Shared,
    reader: Option<&Reader>,
    pack: &Id,
    locs: &[Location],
) -> Result<()> {
    let bytes = repo.backend.read(Kind::Packs, &pack.to_hex())?;
    if Id::of_bytes(&bytes) != *pack {
        bail!("pack {pack} is damaged: its content does not match its name");
    }
    let size = bytes.len() as u64;
    let hlen = crate::format::pack::parse_trailer(&bytes[bytes.len().saturating_sub(8)..])? as u64;
    if hlen + 8 > size {
        bail!("pack {pack} is damaged: its header length is out of range");
    }
    let header = &bytes[(size - 8 - hlen) as usize..(size - 8) as usize];
    let entries = index::parse_pack_header(&shared.subkeys, &repo.id(), pack, header, size)?;
    let in_header: HashSet<_> = entries.iter().map(|e| (e.id, e.offset, e.length)).collect();
    for l in locs {
        if !in_header.contains(&(l.entry.id, l.entry.offset, l.entry.length)) {
            bail!(
                "pack {pack}: the index places blob {} where the pack header does not",
                l.entry.id
            );
        }
    }
    if let Some(reader) = reader {
        for l in locs {
            let sealed = &bytes[l.entry.offset as usize..(l.entry.offset + l.entry.length) as usize];
            reader.open_blob(l, sealed, true)?;
        }
    }
    Ok(())
}
