//! Prune: removes the blobs no snapshot references, and repacks packs that
//! are partly used, under an exclusive lock held by the caller.
//!
//! Order on storage, so that a kill at any moment leaves a repository that
//! checks clean and that the next prune completes:
//! 1. the blobs kept from packs being repacked go, sealed bytes unchanged
//!    (the AEAD binds no location), into new packs;
//! 2. new index files name them and the packs kept from the index files
//!    being rewritten;
//! 3. only then are the old index files deleted, then the packs no longer
//!    indexed, then the key envelopes of runs no indexed blob and no
//!    snapshot names.
//!
//! Nothing is deleted that was not first shown unreferenced: every
//! snapshot's trees are read (prune stops if one cannot be, or if a
//! snapshot cannot be verified), every copy moved is decrypted and its id
//! recomputed, and where a blob has several copies the one kept is checked
//! the same way before the others go.

pub mod plan;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, anyhow, bail};
use rayon::prelude::*;
use serde::Serialize;

use crate::backend::{Backend, Kind};
use crate::format::index::{BlobEntry, PackEntries};
use crate::format::{BlobKind, Id, RunId, Signed, decode};
use crate::format::{envelope::Envelope, tree::NodeKind};

use super::index::{self, Location};
use super::packer::{FinishedPack, Packer};
use super::packs;
use super::reader::Reader;
use super::snapshots::Listing;
use super::writer::PACKS_PER_INDEX_FILE;
use plan::{BlobRef, Fate, IndexFileIn, MaxUnused};

const DATA_PACK_TARGET: usize = 16 * 1024 * 1024;
const TREE_PACK_TARGET: usize = 4 * 1024 * 1024;

pub struct Options {
    pub max_unused: MaxUnused,
    pub dry_run: bool,
}

/// What a prune did (or, dry, would do).
#[derive(Serialize, Default, Debug)]
pub struct Summary {
    pub dry_run: bool,
    pub snapshots: usize,
    pub referenced_blobs: usize,
    pub packs_before: usize,
    pub pack_bytes_before: u64,
    pub packs_deleted: usize,
    pub packs_repacked: usize,
    pub packs_written: usize,
    pub blobs_moved: u64,
    pub bytes_moved: u64,
    pub unindexed_packs_deleted: usize,
    pub missing_packs_dropped: usize,
    pub index_files_written: usize,
    pub index_files_deleted: usize,
    pub envelopes_deleted: usize,
    /// Bytes deleted less bytes written: what the repository shrank by.
    pub bytes_freed: u64,
    pub pack_bytes_after: u64,
    /// Bytes of blobs no snapshot references that stay (within
    /// `--max-unused`).
    pub unused_bytes_after: u64,
}

/// Every blob the trees under `roots` reference, and the roots: read
/// level by level in parallel, each once.
pub fn referenced(reader: &Reader, roots: &[Id], progress: &AtomicU64) -> Result<HashSet<BlobRef>> {
    let mut used: HashSet<BlobRef> = HashSet::new();
    let mut frontier: Vec<Id> = Vec::new();
    for root in roots {
        if used.insert((*root, BlobKind::Tree)) {
            frontier.push(*root);
        }
    }
    let mut depth = 0;
    while !frontier.is_empty() {
        if depth > crate::format::tree::MAX_DEPTH + 1 {
            bail!(
                "directories are nested deeper than {} levels: the trees are damaged, and prune deletes nothing",
                crate::format::tree::MAX_DEPTH
            );
        }
        let trees: Vec<Result<crate::format::tree::Tree>> = frontier
            .par_iter()
            .map(|id| {
                let t = reader.read_tree(id).with_context(|| {
                    format!("reading tree {id} failed, so prune cannot know what it references and deletes nothing")
                });
                progress.fetch_add(1, Ordering::Relaxed);
                t
            })
            .collect();
        let mut next = Vec::new();
        for t in trees {
            for n in t?.nodes {
                if n.kind == NodeKind::Dir {
                    if let Some(sub) = n.subtree
                        && used.insert((sub, BlobKind::Tree))
                    {
                        next.push(sub);
                    }
                    continue;
                }
                for e in &n.content {
                    if let crate::format::tree::Extent::Data { id, .. } = e {
                        used.insert((*id, BlobKind::Data));
                    }
                }
            }
        }
        frontier = next;
        depth += 1;
    }
    Ok(used)
}

/// Plans and, unless dry, carries out a prune. `say` reports progress
/// for people.
pub fn prune(reader: &Reader, listing: &Listing, opts: &Options, say: &dyn Fn(&str)) -> Result<Summary> {
    let repo = reader.repo;
    let backend = repo.backend.as_ref();
    let subkeys = &reader.key.shared.subkeys;
    let repo_id = repo.id();
    // A snapshot of a revoked writer is genuine and no longer counts; any
    // other refusal may hide data still needed.
    let refused: Vec<&(String, anyhow::Error)> = listing
        .refused
        .iter()
        .filter(|(_, e)| !e.is::<super::snapshots::Revoked>())
        .collect();
    if let Some((name, e)) = refused.first() {
        bail!(
            "snapshot {name} cannot be verified ({e:#}), and its data may still be needed: prune deletes nothing \
             while a snapshot is refused ({} in all; `strongroom check` names them)",
            refused.len()
        );
    }
    let mut summary = Summary {
        dry_run: opts.dry_run,
        snapshots: listing.snapshots.len(),
        ..Summary::default()
    };

    say(&format!(
        "reading the trees of {} snapshot(s)",
        listing.snapshots.len()
    ));
    let trees_read = AtomicU64::new(0);
    let roots: Vec<Id> = listing.snapshots.iter().map(|s| s.catalog.tree).collect();
    let used = referenced(reader, &roots, &trees_read)?;
    summary.referenced_blobs = used.len();

    say("reading the index");
    let index_listed: HashMap<String, u64> = backend
        .list(Kind::Index)
        .context("listing the index")?
        .into_iter()
        .map(|l| (l.name, l.size))
        .collect();
    let mut names: Vec<&String> = index_listed.keys().collect();
    names.sort();
    let read: Vec<(String, Result<crate::format::index::IndexFile>)> = names
        .par_iter()
        .map(|n| {
            (
                n.to_string(),
                index::read_index_file(backend, subkeys, &repo_id, n),
            )
        })
        .collect();
    let mut files = Vec::new();
    for (name, r) in read {
        let f = r.map_err(|e| {
            anyhow!(
                "{e:#}; prune deletes nothing while an index file is unreadable: `strongroom repair index` replaces it"
            )
        })?;
        files.push(IndexFileIn { name, packs: f.packs });
    }
    let listed = packs::listed(backend)?;
    summary.packs_before = listed.len();
    summary.pack_bytes_before = listed.values().sum();

    // Packs no index file names: an interrupted backup's or prune's. Those
    // that verify take part (their blobs may be the copies kept); the
    // others are not understood, and are left alone.
    let indexed: HashSet<Id> = files
        .iter()
        .flat_map(|f| f.packs.iter().map(|p| p.pack))
        .collect();
    let unindexed_ids: Vec<&Id> = listed.keys().filter(|p| !indexed.contains(p)).collect();
    let unindexed: Vec<PackEntries> = unindexed_ids
        .par_iter()
        .filter_map(|p| match packs::read_verified(backend, subkeys, &repo_id, p) {
            Ok((_, entries)) => Some(entries),
            Err(e) => {
                crate::warn(&format!(
                    "pack {p} is left alone: it is not indexed and not a valid pack: {e:#}"
                ));
                None
            }
        })
        .collect();

    // Plan; a copy to be kept that does not verify is set aside and the
    // plan made again without it.
    let mut excluded: HashSet<(Id, BlobEntry)> = HashSet::new();
    let mut verified: HashSet<(Id, BlobEntry)> = HashSet::new();
    let plan = loop {
        let plan = plan::make(&plan::Input {
            files: &files,
            unindexed: &unindexed,
            listed: &listed,
            used: &used,
            excluded: &excluded,
            max_unused: opts.max_unused,
        })?;
        let todo: Vec<(Id, BlobEntry)> = plan
            .verify
            .iter()
            .filter(|c| !verified.contains(*c))
            .copied()
            .collect();
        let bad = verify_copies(reader, &todo)?;
        verified.extend(todo.iter().filter(|c| !bad.contains(c)).copied());
        if bad.is_empty() {
            break plan;
        }
        excluded.extend(bad);
    };
    for p in &plan.damaged {
        crate::warn(&format!(
            "pack {p} has another size than the index records: left as it is (`strongroom check` reports it)"
        ));
    }
    summary.packs_deleted = plan.count(Fate::Delete);
    summary.packs_repacked = plan.count(Fate::Repack);
    summary.unindexed_packs_deleted = plan
        .packs
        .values()
        .filter(|p| !p.indexed && p.fate != Fate::Keep)
        .count();
    summary.missing_packs_dropped = plan.missing.len();
    summary.unused_bytes_after = plan.unused_after;
    summary.blobs_moved = plan
        .packs
        .values()
        .filter(|p| p.fate == Fate::Repack)
        .map(|p| p.chosen.len() as u64)
        .sum();
    summary.bytes_moved = plan
        .packs
        .values()
        .filter(|p| p.fate == Fate::Repack)
        .map(|p| p.chosen.iter().map(|e| e.length as u64).sum::<u64>())
        .sum();
    if opts.dry_run {
        let going = plan.bytes(Fate::Delete) + plan.bytes(Fate::Repack);
        summary.bytes_freed = going.saturating_sub(summary.bytes_moved);
        summary.pack_bytes_after = summary.pack_bytes_before.saturating_sub(summary.bytes_freed);
        summary.index_files_deleted = plan.rewrite.len();
        return Ok(summary);
    }

    // 1. Repack.
    let moved = AtomicU64::new(0);
    say(&format!(
        "repacking {} pack(s): moving {} blob(s)",
        summary.packs_repacked, summary.blobs_moved
    ));
    let repacker = Repacker::new(reader);
    plan.packs
        .par_iter()
        .filter(|(_, p)| p.fate == Fate::Repack)
        .try_for_each(|(pack, p)| repacker.repack(pack, &p.chosen, &moved))?;
    let new_packs = repacker.finish()?;
    summary.packs_written = new_packs.len();
    let written_bytes: u64 = new_packs.iter().map(|p| p.size).sum();

    // 2. The new index.
    let mut carried: BTreeMap<Id, PackEntries> = BTreeMap::new();
    // A damaged pack's records stay as they were, each: which one is true
    // is for `repair index` to find out.
    let mut damaged_records: Vec<PackEntries> = Vec::new();
    for f in files.iter().filter(|f| plan.rewrite.contains(&f.name)) {
        for p in &f.packs {
            if plan.damaged.contains(&p.pack) {
                damaged_records.push(p.clone());
                continue;
            }
            if plan.packs.get(&p.pack).is_some_and(|pp| pp.fate == Fate::Keep) {
                let c = carried.entry(p.pack).or_insert_with(|| PackEntries {
                    pack: p.pack,
                    size: p.size,
                    blobs: Vec::new(),
                });
                c.blobs.extend_from_slice(&p.blobs);
            }
        }
    }
    for p in &unindexed {
        if plan.packs.get(&p.pack).is_some_and(|pp| pp.fate == Fate::Keep) {
            carried.insert(p.pack, p.clone());
        }
    }
    let mut to_index: Vec<PackEntries> = carried
        .into_values()
        .map(|mut p| {
            p.blobs.sort_by_key(|e| (e.offset, e.id.0, e.length));
            p.blobs.dedup();
            p
        })
        .collect();
    to_index.extend(damaged_records);
    to_index.extend(new_packs);
    say(&format!("writing the index ({} pack(s))", to_index.len()));
    let mut index_written = HashSet::new();
    let mut index_bytes_written = 0u64;
    for chunk in to_index.chunks(PACKS_PER_INDEX_FILE) {
        let id = index::write_index_file(backend, subkeys, &repo_id, chunk.to_vec())?;
        index_bytes_written += backend.stat(Kind::Index, &id.to_hex()).unwrap_or(0);
        index_written.insert(id.to_hex());
    }
    summary.index_files_written = index_written.len();

    // 3. Deletions, the index first.
    let mut failures: Vec<String> = Vec::new();
    let mut freed = 0u64;
    let old_files: Vec<&String> = plan
        .rewrite
        .iter()
        .filter(|n| !index_written.contains(*n))
        .collect();
    say(&format!("deleting {} old index file(s)", old_files.len()));
    for (name, r) in delete_all(backend, Kind::Index, &old_files) {
        match r {
            Ok(()) => {
                summary.index_files_deleted += 1;
                freed += index_listed.get(&name).copied().unwrap_or(0);
            }
            Err(e) => failures.push(format!("index file {name}: {e:#}")),
        }
    }
    if !failures.is_empty() {
        // The packs the old file names stay indexed: deleting them now
        // would leave the index naming packs that are gone.
        bail!(
            "prune could not delete {} old index file(s), so it deletes no pack (the first: {}); the new index is \
             written, and the next prune completes the work",
            failures.len(),
            failures[0]
        );
    }
    let going: Vec<String> = plan
        .packs
        .iter()
        .filter(|(_, p)| p.fate != Fate::Keep)
        .map(|(id, _)| id.to_hex())
        .collect();
    say(&format!("deleting {} pack(s)", going.len()));
    for (name, r) in delete_all(backend, Kind::Packs, &going.iter().collect::<Vec<_>>()) {
        match r {
            Ok(()) => {
                freed += Id::from_hex(&name)
                    .and_then(|id| listed.get(&id))
                    .copied()
                    .unwrap_or(0);
            }
            Err(e) => failures.push(format!("pack {name}: {e:#}")),
        }
    }

    // 4. Key envelopes of runs nothing names any more.
    let mut runs: HashSet<RunId> = listing.snapshots.iter().map(|s| s.run).collect();
    for f in files.iter().filter(|f| !plan.rewrite.contains(&f.name)) {
        runs.extend(f.packs.iter().flat_map(|p| p.blobs.iter().map(|e| e.run)));
    }
    runs.extend(to_index.iter().flat_map(|p| p.blobs.iter().map(|e| e.run)));
    let (deleted, bytes, envelope_failures) = delete_unneeded_envelopes(backend, &runs)?;
    summary.envelopes_deleted = deleted;
    freed += bytes;
    failures.extend(envelope_failures);

    summary.bytes_freed = freed.saturating_sub(written_bytes + index_bytes_written);
    summary.pack_bytes_after = packs::listed(backend)?.values().sum();
    if let Some(first) = failures.first() {
        bail!(
            "prune finished, but {} object(s) could not be deleted (the first: {first}); they are unreferenced, and \
             the next prune deletes them",
            failures.len()
        );
    }
    Ok(summary)
}

/// Reads each copy and checks it opens and matches its id; returns those
/// that do not (each named in a warning). A copy that cannot be read at
/// all (the storage failing) stops the prune: only a copy read and found
/// wrong is set aside.
fn verify_copies(reader: &Reader, copies: &[(Id, BlobEntry)]) -> Result<HashSet<(Id, BlobEntry)>> {
    let results: Vec<Result<Option<(Id, BlobEntry)>>> = copies
        .par_iter()
        .map(|(pack, entry)| {
            let loc = Location {
                pack: *pack,
                entry: *entry,
            };
            let span = reader
                .read_span(&[loc])
                .context("prune stops before changing anything")?;
            let opened = span
                .sealed(&loc)
                .ok_or_else(|| anyhow!("blob {} lies outside pack {pack}", entry.id))
                .and_then(|sealed| reader.open_blob(&loc, sealed, true));
            Ok(match opened {
                Ok(_) => None,
                Err(e) => {
                    crate::warn(&format!(
                        "the copy of blob {} in pack {pack} is unsound ({e:#}): another copy is kept",
                        entry.id
                    ));
                    Some((*pack, *entry))
                }
            })
        })
        .collect();
    let mut bad = HashSet::new();
    for r in results {
        if let Some(c) = r? {
            bad.insert(c);
        }
    }
    Ok(bad)
}

/// Deletes objects in parallel; each name with its outcome.
fn delete_all(backend: &dyn Backend, kind: Kind, names: &[&String]) -> Vec<(String, Result<()>)> {
    names
        .par_iter()
        .map(|n| (n.to_string(), backend.delete(kind, n)))
        .collect()
}

/// Deletes the envelopes of runs not in `needed`, judged by
/// [`envelope_run`]. One that cannot be read or decoded is left alone
/// (`check` names it). Returns (deleted, bytes, failures).
/// The run a key envelope names, read without verifying its signature:
/// its name is the hash of its bytes, so no object can pass for another's
/// envelope. `None` if it cannot be read or decoded.
pub fn envelope_run(backend: &dyn Backend, name: &str) -> Option<RunId> {
    let bytes = crate::backend::read_bounded(backend, Kind::Keys, name).ok()?;
    if Id::of_bytes(&bytes).to_hex() != name {
        return None;
    }
    let signed: Signed = decode(&bytes, "a key envelope").ok()?;
    let env: Envelope = decode(&signed.body, "a key envelope").ok()?;
    Some(env.run_id)
}

fn delete_unneeded_envelopes(
    backend: &dyn Backend,
    needed: &HashSet<RunId>,
) -> Result<(usize, u64, Vec<String>)> {
    let listed = backend.list(Kind::Keys).context("listing key envelopes")?;
    let results: Vec<Option<(u64, Result<()>, String)>> = listed
        .par_iter()
        .map(|l| {
            if needed.contains(&envelope_run(backend, &l.name)?) {
                return None;
            }
            Some((l.size, backend.delete(Kind::Keys, &l.name), l.name.clone()))
        })
        .collect();
    let mut deleted = 0;
    let mut bytes = 0;
    let mut failures = Vec::new();
    for (size, r, name) in results.into_iter().flatten() {
        match r {
            Ok(()) => {
                deleted += 1;
                bytes += size;
            }
            Err(e) => failures.push(format!("key envelope {name}: {e:#}")),
        }
    }
    Ok((deleted, bytes, failures))
}

/// Gathers the blobs moved out of repacked packs into new packs, data and
/// trees apart (so a directory listing never reads past file data).
struct Repacker<'a> {
    reader: &'a Reader<'a>,
    data: Mutex<Packer>,
    trees: Mutex<Packer>,
    written: Mutex<Vec<PackEntries>>,
}

impl<'a> Repacker<'a> {
    fn new(reader: &'a Reader<'a>) -> Self {
        Repacker {
            reader,
            data: Mutex::new(Packer::new(DATA_PACK_TARGET)),
            trees: Mutex::new(Packer::new(TREE_PACK_TARGET)),
            written: Mutex::new(Vec::new()),
        }
    }

    /// Moves the chosen blobs of one pack, each checked first: the pack
    /// must be what its name says, its header must place the blob where
    /// the index does, and the blob must open under its run's keys and
    /// match its id.
    fn repack(&self, pack: &Id, chosen: &[BlobEntry], moved: &AtomicU64) -> Result<()> {
        let repo = self.reader.repo;
        let subkeys = &self.reader.key.shared.subkeys;
        let (bytes, header) = packs::read_verified(repo.backend.as_ref(), subkeys, &repo.id(), pack)
            .context("prune stops before deleting anything")?;
        let in_header: HashSet<&BlobEntry> = header.blobs.iter().collect();
        let mut chosen = chosen.to_vec();
        chosen.sort_by_key(|e| e.offset);
        for e in &chosen {
            if !in_header.contains(e) {
                bail!(
                    "pack {pack}: the index places blob {} where the pack header does not; prune stops before \
                     deleting anything (`strongroom repair index` rebuilds the index from the headers)",
                    e.id
                );
            }
            let sealed = &bytes[e.offset as usize..(e.offset as u64 + e.length as u64) as usize];
            let loc = Location {
                pack: *pack,
                entry: *e,
            };
            self.reader
                .open_blob(&loc, sealed, true)
                .context("prune stops before deleting anything")?;
            let packer = match e.kind {
                BlobKind::Data => &self.data,
                BlobKind::Tree => &self.trees,
            };
            let full = {
                let mut p = packer.lock().unwrap_or_else(|e| e.into_inner());
                if p.add(*e, sealed) {
                    p.finish(subkeys, &repo.id())?
                } else {
                    None
                }
            };
            if let Some(f) = full {
                self.write(f)?;
            }
            moved.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn write(&self, f: FinishedPack) -> Result<()> {
        self.reader
            .repo
            .backend
            .write(Kind::Packs, &f.id.to_hex(), &f.bytes)
            .with_context(|| format!("writing pack {}", f.id))?;
        self.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(f.entries);
        Ok(())
    }

    /// Writes what is left in the packers; returns every pack written.
    fn finish(self) -> Result<Vec<PackEntries>> {
        let subkeys = &self.reader.key.shared.subkeys;
        let repo_id = self.reader.repo.id();
        for packer in [&self.data, &self.trees] {
            let last = packer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .finish(subkeys, &repo_id)?;
            if let Some(f) = last {
                self.write(f)?;
            }
        }
        Ok(self.written.into_inner().unwrap_or_else(|e| e.into_inner()))
    }
}
