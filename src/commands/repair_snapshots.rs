//! `strongroom repair snapshots [--dry-run]`: rewrites every snapshot that
//! references lost data, so what survives can be restored.
//!
//! A blob is lost when the index has no location for it in a pack that
//! exists with the recorded size. A damaged file keeps its size: its lost
//! extents become holes and it is marked with the extended attribute
//! `user.strongroom.damaged` (how many bytes were lost); a directory whose
//! tree is lost becomes empty. The new trees are written by a new run and
//! the new manifest (same catalog, plus the tag `repaired`) is signed with
//! the root key. The damaged snapshot is kept unless `--forget` asks for it
//! to go (as restic's `repair snapshots` does), and only once its repaired
//! copy is written.
//!
//! Only data the index shows lost counts as lost: any other failure to read
//! a tree (a run's keys unavailable, a read error) leaves that snapshot as
//! it is and is reported, so nothing transient turns into a rewrite.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::backend::Kind;
use crate::cli::RepairSnapshotsArgs;
use crate::error::Exit;
use crate::format::tree::{Extent, MAX_DEPTH, Node, NodeKind, TREE_VERSION, Tree};
use crate::format::{BlobKind, Id, encode};
use crate::keys::Key;
use crate::repository::reader::Reader;
use crate::repository::writer::Writer;

use super::Ctx;

/// The extended attribute that marks a file whose data was partly lost.
pub const DAMAGED_XATTR: &[u8] = b"user.strongroom.damaged";
pub const REPAIRED_TAG: &str = "repaired";

/// Walks one snapshot's trees and rebuilds those that reference lost blobs.
struct Rewrite<'r> {
    reader: &'r Reader<'r>,
    /// Why a blob is lost, or `None` if it is stored intact.
    lost: &'r dyn Fn(&Id) -> Option<String>,
    /// Stores a rebuilt tree; returns its id.
    store: &'r dyn Fn(&Tree) -> Result<Id>,
    losses: Vec<String>,
}

impl Rewrite<'_> {
    /// The directory's new tree id, or `None` if nothing under it is lost.
    fn dir(&mut self, id: Id, path: &Path, depth: usize) -> Result<Option<Id>> {
        if depth > MAX_DEPTH {
            bail!(
                "{} is nested deeper than {MAX_DEPTH} directories: refused as damaged",
                path.display()
            );
        }
        let read = match (self.lost)(&id) {
            Some(why) => Err(why),
            None => Ok(self
                .reader
                .read_tree(&id)
                .with_context(|| format!("reading directory {} (tree {id})", path.display()))?),
        };
        let mut tree = match read {
            Ok(t) => t,
            Err(why) => {
                self.losses.push(format!(
                    "{}: the directory's tree {id} is lost ({why}); it becomes empty",
                    path.display()
                ));
                let empty = Tree {
                    version: TREE_VERSION,
                    nodes: Vec::new(),
                };
                return (self.store)(&empty).map(Some);
            }
        };
        let mut changed = false;
        for n in &mut tree.nodes {
            let p = path.join(OsStr::from_bytes(&n.name));
            match n.kind {
                NodeKind::Dir => {
                    if let Some(t) = n.subtree
                        && let Some(new) = self.dir(t, &p, depth + 1)?
                    {
                        n.subtree = Some(new);
                        changed = true;
                    }
                }
                NodeKind::File => changed |= self.file(n, &p),
                _ => {}
            }
        }
        if changed {
            (self.store)(&tree).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Turns a file's lost extents into holes and marks it; says whether
    /// anything was lost.
    fn file(&mut self, n: &mut Node, path: &Path) -> bool {
        let mut lost_bytes = 0u64;
        for e in &mut n.content {
            if let Extent::Data { id, len } = *e
                && let Some(why) = (self.lost)(&id)
            {
                self.losses.push(format!(
                    "{}: blob {id} is lost ({why}): {len} bytes become zeros",
                    path.display()
                ));
                *e = Extent::Hole { len: len as u64 };
                lost_bytes += len as u64;
            }
        }
        if lost_bytes == 0 {
            return false;
        }
        mark_damaged(n, lost_bytes);
        true
    }
}

/// Sets (or adds to) the damage mark: the number of bytes lost, in decimal.
fn mark_damaged(n: &mut Node, lost: u64) {
    let before = n
        .xattrs
        .iter()
        .find(|(k, _)| k == DAMAGED_XATTR)
        .and_then(|(_, v)| {
            std::str::from_utf8(v)
                .ok()?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0);
    n.xattrs.retain(|(k, _)| k != DAMAGED_XATTR);
    let value = format!("{} bytes lost", before.saturating_add(lost)).into_bytes();
    let at = n.xattrs.partition_point(|(k, _)| k.as_slice() < DAMAGED_XATTR);
    n.xattrs.insert(at, (DAMAGED_XATTR.to_vec(), value));
}

pub fn run(ctx: &Ctx, a: RepairSnapshotsArgs) -> Result<()> {
    let key = ctx.load_key()?;
    let full = match &key {
        Key::Full(k) => k,
        Key::Writer(w) => {
            return Err(Exit::usage(format!(
                "this is a writer key (host {}): it can add backups but cannot repair snapshots; use the full key",
                w.host
            )));
        }
    };
    let repo = ctx.open(&key)?;
    let shared = key.shared();
    let cache = ctx.cache();
    let _lock = crate::repository::lock::acquire(&repo, &shared.subkeys, &cache, true, "repair snapshots")?;
    let listing = ctx.list_snapshots(&repo, shared, &cache)?;
    for (name, err) in &listing.refused {
        crate::warn(&format!("snapshot {name} is refused and left alone: {err:#}"));
    }
    let reader = Reader::open(&repo, full, &cache)?;
    let listed: HashMap<Id, u64> = crate::repository::packs::listed(repo.backend.as_ref())?;
    let index = &reader.index;
    let lost = |id: &Id| -> Option<String> {
        let locations = index.locations(id);
        if locations.is_empty() {
            return Some("it is not in the index".to_string());
        }
        let intact = locations.iter().any(|l| {
            listed
                .get(&l.pack)
                .is_some_and(|s| index.pack_size(&l.pack) == Some(*s))
        });
        if intact {
            return None;
        }
        let packs: Vec<String> = locations.iter().map(|l| l.pack.to_hex()).collect();
        Some(format!("pack {} is missing or truncated", packs.join(", ")))
    };

    let mut repaired = 0usize;
    let mut failed = 0usize;
    for s in &listing.snapshots {
        match repair_one(&repo, &key, &cache, &reader, &lost, s, &a) {
            Ok(true) => repaired += 1,
            Ok(false) => {}
            Err(e) => {
                failed += 1;
                eprintln!(
                    "error: {}",
                    crate::escape::text(&format!("snapshot {} is left as it is: {e:#}", s.id.short()))
                );
            }
        }
    }
    if !ctx.global.quiet {
        let verb = if a.dry_run {
            "would be rewritten"
        } else {
            "rewritten"
        };
        println!("{repaired} of {} snapshot(s) {verb}", listing.snapshots.len());
    }
    if failed > 0 {
        bail!("{failed} snapshot(s) could not be examined (named above)");
    }
    Ok(())
}

/// Repairs one snapshot if it references lost data; says whether it did
/// (or, with `--dry-run`, would).
fn repair_one(
    repo: &crate::repository::Repository,
    key: &Key,
    cache: &crate::cache::Cache,
    reader: &Reader,
    lost: &dyn Fn(&Id) -> Option<String>,
    s: &crate::repository::snapshots::Snapshot,
    a: &RepairSnapshotsArgs,
) -> Result<bool> {
    // A first pass only finds the damage; a run is begun only for a
    // snapshot that needs one.
    let hash_only = |t: &Tree| Ok(Id::of_bytes(&encode(t)));
    let mut survey = Rewrite {
        reader,
        lost,
        store: &hash_only,
        losses: Vec::new(),
    };
    let root = PathBuf::from("/");
    if survey.dir(s.catalog.tree, &root, 0)?.is_none() {
        return Ok(false);
    }
    for l in &survey.losses {
        println!(
            "{}",
            crate::escape::text(&format!("snapshot {} {l}", s.id.short()))
        );
    }
    if a.dry_run {
        println!("snapshot {} would be rewritten", s.id.short());
        return Ok(true);
    }
    let writer = Writer::begin(repo, key, cache)?;
    let store = |t: &Tree| writer.add_blob(BlobKind::Tree, &encode(t));
    let mut rewrite = Rewrite {
        reader,
        lost,
        store: &store,
        losses: Vec::new(),
    };
    let tree = rewrite
        .dir(s.catalog.tree, &root, 0)?
        .context("the damage found a moment ago is gone")?;
    let mut catalog = s.catalog.clone();
    catalog.tree = tree;
    if !catalog.tags.iter().any(|t| t == REPAIRED_TAG) {
        catalog.tags.push(REPAIRED_TAG.to_string());
    }
    let (new_id, _) = writer
        .finish(catalog)
        .with_context(|| format!("writing the repaired snapshot of {}", s.id.short()))?;
    if a.forget {
        repo.backend
            .delete(Kind::Snapshots, &s.id.to_hex())
            .with_context(|| format!("deleting the damaged snapshot {}", s.id))?;
        println!(
            "snapshot {} is replaced by {} (tagged {REPAIRED_TAG})",
            s.id.short(),
            new_id.short()
        );
    } else {
        println!(
            "snapshot {} is repaired as {} (tagged {REPAIRED_TAG}); the damaged one is kept (--forget removes it)",
            s.id.short(),
            new_id.short()
        );
    }
    Ok(true)
}
