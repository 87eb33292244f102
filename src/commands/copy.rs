//! `strongroom copy --to URL [SNAPSHOT...]`: a second repository of the
//! same key family (the same config, so the same repository id), filled
//! with the source's objects **verbatim**: nothing is decrypted or sealed
//! again, so the second region never sees a key and a writer key can run
//! the copy.
//!
//! Each object's name is checked against the SHA-256 of its bytes before
//! it is written: a damaged source object is named and not propagated.
//! Objects the destination already holds are skipped, so a second run
//! copies only what is new and an interrupted one resumes. Order, as in a
//! backup: key envelopes, packs, index, and the snapshots last, only once
//! everything before them is in place. Nothing is ever deleted from the
//! destination: what a prune removes from the source stays in the copy
//! until the copy is pruned itself.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, anyhow, bail};
use rayon::prelude::*;
use serde::Serialize;

use crate::backend::{Backend, Kind, is_not_found, read_bounded};
use crate::cli::CopyArgs;
use crate::error::Exit;
use crate::format::index::PackEntries;
use crate::format::{Id, RunId};
use crate::keys::{Key, Shared};
use crate::repository::reader::Reader;
use crate::repository::snapshots::Snapshot;
use crate::repository::{Repository, index, lock, packs, prune};

use super::Ctx;

/// Objects copied at once: copying waits on storage, not on the CPU.
const PARALLEL: usize = 8;

#[derive(Serialize, Default, Clone, Copy)]
struct Tally {
    copied: u64,
    bytes_copied: u64,
    skipped: u64,
    bytes_skipped: u64,
}

#[derive(Serialize, Default)]
struct Summary {
    to: String,
    snapshots: Tally,
    keys: Tally,
    packs: Tally,
    index: Tally,
    objects_copied: u64,
    bytes_copied: u64,
    objects_skipped: u64,
    bytes_skipped: u64,
    /// Source objects whose bytes do not match their names: not copied.
    damaged: Vec<String>,
}

pub fn run(ctx: &Ctx, a: CopyArgs) -> Result<()> {
    let key = ctx.load_key()?;
    let shared = key.shared();
    let src = ctx.open(&key)?;
    let cache = ctx.cache();
    let _src_lock = lock::acquire(&src, &shared.subkeys, &cache, false, "copy")?;
    let listing = ctx.list_snapshots(&src, shared, &cache)?;
    for (name, e) in &listing.refused {
        crate::warn(&format!("snapshot {name} is refused and not copied: {e:#}"));
    }
    let chosen: Vec<&Snapshot> = if a.snapshots.is_empty() {
        listing.snapshots.iter().collect()
    } else {
        let mut v: Vec<&Snapshot> = Vec::new();
        for spec in &a.snapshots {
            let s = listing.find(spec, a.host.as_deref())?;
            if !v.iter().any(|c| c.id == s.id) {
                v.push(s);
            }
        }
        v
    };

    let password_file = a
        .to_password_file
        .as_deref()
        .or(ctx.global.password_file.as_deref());
    let dst_backend = ctx.backend_at(&a.to, shared, password_file)?;
    if dst_backend.location() == src.backend.location() {
        return Err(Exit::usage(format!(
            "--to {} is the source repository itself",
            dst_backend.location()
        )));
    }
    let dst = destination(&src, shared, dst_backend)?;
    let _dst_lock = lock::acquire(&dst, &shared.subkeys, &cache, false, "copy-to")?;

    let mut already_damaged = Vec::new();
    let want = if a.snapshots.is_empty() {
        let (w, d) = everything(&src, shared)?;
        already_damaged = d;
        w
    } else {
        let Key::Full(full) = &key else {
            return Err(Exit::usage(
                "copying chosen snapshots needs the full key, to read which data they use; a writer key copies \
                 every snapshot (give no SNAPSHOT)",
            ));
        };
        let reader = Reader::open(&src, full, &cache)?;
        needed_by(&reader, &dst, &chosen)?
    };

    let mut summary = Summary {
        to: dst.backend.location(),
        ..Summary::default()
    };
    for d in &already_damaged {
        crate::warn(&format!("{d}: not copied"));
    }
    summary.damaged = already_damaged;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(PARALLEL)
        .build()
        .context("starting the copy's threads")?;
    let show = crate::progress::wanted(ctx.global.json, ctx.global.quiet);
    let done = AtomicU64::new(0);
    let total = want.keys.len() + want.packs.len() + want.index.len() + chosen.len();
    let line = || format!("{} of {total} objects looked at", done.load(Ordering::Relaxed));
    let mut failed: Vec<String> = Vec::new();
    let snapshot_names: BTreeSet<String> = chosen.iter().map(|s| s.id.to_hex()).collect();
    crate::progress::run(show, line, || -> Result<()> {
        for (kind, names) in [(Kind::Keys, &want.keys), (Kind::Packs, &want.packs)] {
            let (tally, damaged, errors) = pool.install(|| copy_kind(&src, &dst, kind, names, &done))?;
            *tally_of(&mut summary, kind) = tally;
            summary.damaged.extend(damaged);
            failed.extend(errors);
        }
        // The index and the snapshots only once every pack they name is
        // in place: the copy keeps its last good state meanwhile.
        if !failed.is_empty() || !summary.damaged.is_empty() {
            return Ok(());
        }
        let (tally, damaged, errors) =
            pool.install(|| copy_kind(&src, &dst, Kind::Index, &want.index, &done))?;
        summary.index = tally;
        summary.damaged.extend(damaged);
        failed.extend(errors);
        // Index entries written for the packs a chosen-snapshot copy
        // brought (their source index files also name packs left behind).
        for chunk in want
            .new_index
            .chunks(crate::repository::writer::PACKS_PER_INDEX_FILE)
        {
            let id =
                index::write_index_file(dst.backend.as_ref(), &shared.subkeys, &dst.id(), chunk.to_vec())?;
            summary.index.copied += 1;
            summary.index.bytes_copied += dst.backend.stat(Kind::Index, &id.to_hex()).unwrap_or(0);
        }
        if !failed.is_empty() || !summary.damaged.is_empty() {
            return Ok(());
        }
        let (tally, damaged, errors) =
            pool.install(|| copy_kind(&src, &dst, Kind::Snapshots, &snapshot_names, &done))?;
        summary.snapshots = tally;
        summary.damaged.extend(damaged);
        failed.extend(errors);
        Ok(())
    })?;
    for t in [summary.snapshots, summary.keys, summary.packs, summary.index] {
        summary.objects_copied += t.copied;
        summary.bytes_copied += t.bytes_copied;
        summary.objects_skipped += t.skipped;
        summary.bytes_skipped += t.bytes_skipped;
    }
    if ctx.global.json {
        super::print_json(&summary)?;
    } else if !ctx.global.quiet {
        for (what, t) in [
            ("snapshot(s)", summary.snapshots),
            ("key envelope(s)", summary.keys),
            ("pack(s)", summary.packs),
            ("index file(s)", summary.index),
        ] {
            println!(
                "{what}: {} copied ({}), {} already there",
                t.copied,
                crate::progress::bytes(t.bytes_copied),
                t.skipped
            );
        }
    }
    if let Some(first) = failed.first() {
        bail!(
            "{} object(s) could not be copied (the first: {first}); no snapshot was copied while its data may be \
             missing: run the copy again to resume",
            failed.len()
        );
    }
    if let Some(first) = summary.damaged.first() {
        bail!(
            "{} source object(s) are damaged and were not copied, nor the index and snapshots that would name them \
             (the first: {first}); the copy keeps its last good state: `strongroom check` and `strongroom repair \
             index` on the source, then copy again",
            summary.damaged.len()
        );
    }
    Ok(())
}

fn tally_of(s: &mut Summary, kind: Kind) -> &mut Tally {
    match kind {
        Kind::Keys => &mut s.keys,
        Kind::Packs => &mut s.packs,
        Kind::Index => &mut s.index,
        _ => &mut s.snapshots,
    }
}

/// Opens the destination, first making it with the source's config, byte
/// for byte, if it holds no repository. One that holds another
/// repository, or a config this key's root did not sign, is refused; an
/// older version of the same config is brought up to date.
fn destination(src: &Repository, shared: &Shared, dst: Arc<dyn Backend>) -> Result<Repository> {
    let config =
        read_bounded(src.backend.as_ref(), Kind::Config, "config").context("reading the source's config")?;
    match dst.stat(Kind::Config, "config") {
        Err(e) if is_not_found(&e) => {
            dst.create()
                .with_context(|| format!("making a repository at {}", dst.location()))?;
            dst.write_new(Kind::Config, "config", &config)
                .with_context(|| format!("writing the config of {}", dst.location()))?;
        }
        Err(e) => return Err(e.context(format!("reading the config of {}", dst.location()))),
        Ok(_) => {}
    }
    let repo = Repository::open(dst.clone(), shared)?;
    if repo.id() != src.id() {
        bail!(
            "{} holds another repository ({}), not a copy of {} ({}): copy only fills a repository made by copy",
            dst.location(),
            repo.id().short(),
            src.backend.location(),
            src.id().short()
        );
    }
    if repo.config.version < src.config.version {
        dst.write(Kind::Config, "config", &config)
            .with_context(|| format!("bringing the config of {} up to date", dst.location()))?;
        return Repository::open(dst, shared);
    }
    Ok(repo)
}

/// What to copy: object names per kind, and index entries to write anew.
struct Wanted {
    keys: BTreeSet<String>,
    packs: BTreeSet<String>,
    index: BTreeSet<String>,
    new_index: Vec<PackEntries>,
}

fn names(backend: &dyn Backend, kind: Kind) -> Result<BTreeSet<String>> {
    Ok(backend
        .list(kind)
        .with_context(|| format!("listing {} of {}", kind.dir(), backend.location()))?
        .into_iter()
        .map(|l| l.name)
        .collect())
}

/// Every envelope and index file of the source, and every pack its index
/// names (a pack no index names, an interrupted backup's, is not needed).
/// Returns too what is damaged already: an index file that does not open,
/// a pack of another size than recorded.
fn everything(src: &Repository, shared: &Shared) -> Result<(Wanted, Vec<String>)> {
    let b = src.backend.as_ref();
    let index_names = names(b, Kind::Index)?;
    let files = index::read_index_files(
        b,
        &shared.subkeys,
        &src.id(),
        &index_names.iter().collect::<Vec<_>>(),
    );
    let mut damaged: Vec<String> = files
        .unreadable
        .iter()
        .map(|(n, e)| format!("{}: {e:#}", Kind::Index.path(n)))
        .collect();
    let listed = packs::listed(b)?;
    let mut wanted_packs = BTreeSet::new();
    for p in &files.packs {
        match listed.get(&p.pack) {
            Some(size) if *size == p.size => {
                wanted_packs.insert(p.pack.to_hex());
            }
            Some(size) => damaged.push(format!(
                "{}: it is {size} bytes, the index records {}",
                Kind::Packs.path(&p.pack.to_hex()),
                p.size
            )),
            None => damaged.push(format!("{}: it is missing", Kind::Packs.path(&p.pack.to_hex()))),
        }
    }
    damaged.sort();
    damaged.dedup();
    Ok((
        Wanted {
            keys: names(b, Kind::Keys)?,
            packs: wanted_packs,
            index: index_names,
            new_index: Vec::new(),
        },
        damaged,
    ))
}

/// What the chosen snapshots need: the packs holding their blobs, the
/// envelopes of every run those packs hold blobs of, and index entries for
/// those packs that the destination's index does not have yet.
fn needed_by(reader: &Reader, dst: &Repository, chosen: &[&Snapshot]) -> Result<Wanted> {
    let src = reader.repo;
    let subkeys = &reader.key.shared.subkeys;
    let roots: Vec<Id> = chosen.iter().map(|s| s.catalog.tree).collect();
    let used = prune::referenced(reader, &roots, &AtomicU64::new(0))?;
    let listed = packs::listed(src.backend.as_ref())?;
    let live = |pack: &Id| {
        listed
            .get(pack)
            .is_some_and(|s| reader.index.pack_size(pack) == Some(*s))
    };
    let mut packs_needed: HashSet<Id> = HashSet::new();
    for (id, kind) in &used {
        let locs: Vec<_> = reader
            .index
            .locations(id)
            .into_iter()
            .filter(|l| l.entry.kind == *kind && live(&l.pack))
            .collect();
        // Of several copies (one may be a forged index entry), the first
        // that opens and matches its id.
        let chosen = match locs.as_slice() {
            [one] => Some(*one),
            many => many.iter().copied().find(|l| {
                reader
                    .read_span(&[*l])
                    .ok()
                    .and_then(|span| span.sealed(l).map(|b| reader.open_blob(l, b, true).is_ok()))
                    .unwrap_or(false)
            }),
        };
        let loc = chosen.ok_or_else(|| {
            anyhow!(
                "{} blob {id} of the chosen snapshots is in no pack of the source that exists intact: \
                 `strongroom check` on the source names what is lost",
                prune::plan::kind_name(*kind)
            )
        })?;
        packs_needed.insert(loc.pack);
    }
    let mut entries: HashMap<Id, PackEntries> = HashMap::new();
    let mut index_names: Vec<String> = names(src.backend.as_ref(), Kind::Index)?.into_iter().collect();
    index_names.sort();
    let files = index::read_index_files(
        src.backend.as_ref(),
        subkeys,
        &src.id(),
        &index_names.iter().collect::<Vec<_>>(),
    );
    for p in files.packs.into_iter().filter(|p| packs_needed.contains(&p.pack)) {
        match entries.get_mut(&p.pack) {
            Some(e) => e.blobs.extend(p.blobs),
            None => {
                entries.insert(p.pack, p);
            }
        }
    }
    let mut runs: HashSet<RunId> = chosen.iter().map(|s| s.run).collect();
    runs.extend(entries.values().flat_map(|p| p.blobs.iter().map(|e| e.run)));
    let keys = names(src.backend.as_ref(), Kind::Keys)?
        .into_iter()
        .collect::<Vec<_>>()
        .par_iter()
        .filter(|n| prune::envelope_run(src.backend.as_ref(), n).is_some_and(|r| runs.contains(&r)))
        .cloned()
        .collect();

    // The destination's index: packs it names already need no entry.
    let dst_names: Vec<String> = names(dst.backend.as_ref(), Kind::Index)?.into_iter().collect();
    let dst_files = index::read_index_files(
        dst.backend.as_ref(),
        subkeys,
        &dst.id(),
        &dst_names.iter().collect::<Vec<_>>(),
    );
    let indexed: HashSet<Id> = dst_files.packs.iter().map(|p| p.pack).collect();
    let mut new_index: Vec<PackEntries> = entries
        .into_values()
        .filter(|p| !indexed.contains(&p.pack))
        .map(|mut p| {
            p.blobs.sort_by_key(|e| (e.offset, e.id.0));
            p.blobs.dedup();
            p
        })
        .collect();
    new_index.sort_by_key(|p| p.pack);
    Ok(Wanted {
        keys,
        packs: packs_needed.iter().map(Id::to_hex).collect(),
        index: BTreeSet::new(),
        new_index,
    })
}

/// Copies the objects of one kind the destination lacks. Returns the
/// tally, the damaged source objects (named) and the failures.
fn copy_kind(
    src: &Repository,
    dst: &Repository,
    kind: Kind,
    wanted: &BTreeSet<String>,
    done: &AtomicU64,
) -> Result<(Tally, Vec<String>, Vec<String>)> {
    let there: HashMap<String, u64> = dst
        .backend
        .list(kind)
        .with_context(|| format!("listing {} of {}", kind.dir(), dst.backend.location()))?
        .into_iter()
        .map(|l| (l.name, l.size))
        .collect();
    let src_sizes: HashMap<String, u64> = src
        .backend
        .list(kind)
        .with_context(|| format!("listing {} of {}", kind.dir(), src.backend.location()))?
        .into_iter()
        .map(|l| (l.name, l.size))
        .collect();
    enum Outcome {
        Skipped(u64),
        Copied(u64),
        Damaged(String),
        Failed(String),
    }
    let outcomes: Vec<Outcome> = wanted
        .par_iter()
        .map(|name| {
            let size = src_sizes.get(name).copied();
            let outcome = if size.is_some() && there.get(name) == size.as_ref() {
                Outcome::Skipped(size.unwrap_or(0))
            } else {
                copy_one(src, dst, kind, name)
            };
            done.fetch_add(1, Ordering::Relaxed);
            outcome
        })
        .collect();

    fn copy_one(src: &Repository, dst: &Repository, kind: Kind, name: &str) -> Outcome {
        let what = kind.path(name);
        let bytes = match read_bounded(src.backend.as_ref(), kind, name) {
            Ok(b) => b,
            Err(e) => return Outcome::Failed(format!("reading {what}: {e:#}")),
        };
        if Id::of_bytes(&bytes).to_hex() != name {
            return Outcome::Damaged(format!("{what}: its content does not match its name"));
        }
        match dst.backend.write(kind, name, &bytes) {
            Ok(()) => Outcome::Copied(bytes.len() as u64),
            Err(e) => Outcome::Failed(format!("writing {what} to {}: {e:#}", dst.backend.location())),
        }
    }

    let mut tally = Tally::default();
    let mut damaged = Vec::new();
    let mut failed = Vec::new();
    for o in outcomes {
        match o {
            Outcome::Skipped(n) => {
                tally.skipped += 1;
                tally.bytes_skipped += n;
            }
            Outcome::Copied(n) => {
                tally.copied += 1;
                tally.bytes_copied += n;
            }
            Outcome::Damaged(m) => {
                crate::warn(&format!("{m}: not copied"));
                damaged.push(m);
            }
            Outcome::Failed(m) => failed.push(m),
        }
    }
    Ok((tally, damaged, failed))
}
