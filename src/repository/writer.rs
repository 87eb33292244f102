//! The writing side of a backup run: deduplicates blobs against the index,
//! compresses and seals them under the run's keys, gathers them into packs,
//! writes the index and finally the signed manifest.
//!
//! Order on storage, so an interruption never leaves a snapshot that points
//! at nothing: the key envelope first, then packs, then index files naming
//! them, then the manifest.
//!
//! The packs are listed once, at the start: a blob counts as stored only
//! where its pack exists with the size the index records, so a lost or
//! truncated pack is never deduplicated against (its blobs are uploaded
//! again) and never spreads into new snapshots.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use rayon::prelude::*;

use crate::backend::Kind;
use crate::cache::Cache;
use crate::crypto::subkeys::hmac;
use crate::format::index::{BlobEntry, PackEntries};
use crate::format::manifest::Catalog;
use crate::format::{BlobKind, Id};
use crate::keys::Key;

use super::Repository;
use super::index::{self, Index};
use super::packer::{FinishedPack, Packer};
use super::packs;
use super::runkeys::RunKeys;
use super::snapshots;
use super::trust::RunSigner;

const DATA_PACK_TARGET: usize = 16 * 1024 * 1024;
const TREE_PACK_TARGET: usize = 4 * 1024 * 1024;
/// Index files are written every this many packs, so an interrupted run's
/// work is found without reading pack headers.
pub const PACKS_PER_INDEX_FILE: usize = 64;
/// zstd level: fast, and within a few percent of level 3's ratio.
const ZSTD_LEVEL: i32 = 1;

const RAW: u8 = 0;
const ZSTD: u8 = 1;

pub struct Writer<'a> {
    pub repo: &'a Repository,
    key: &'a Key,
    signer: RunSigner<'a>,
    run: RunKeys,
    index: Index,
    /// The indexed packs that exist with the size the index records.
    live: HashSet<Id>,
    /// Blobs added by this run (and not in `index`).
    pending: Mutex<HashSet<Id>>,
    data: Mutex<Packer>,
    trees: Mutex<Packer>,
    unindexed: Mutex<Vec<PackEntries>>,
    pub bytes_added: AtomicU64,
    pub blobs_added: AtomicU64,
}

impl<'a> Writer<'a> {
    /// Loads the index, indexes packs an interrupted run left behind, and
    /// writes this run's key envelope.
    pub fn begin(repo: &'a Repository, key: &'a Key, cache: &Cache) -> Result<Writer<'a>> {
        let shared = key.shared();
        if let Key::Writer(w) = key {
            let fingerprint = w.signing.public().fingerprint();
            let certified = crate::format::decode::<crate::format::envelope::WriterCertificate>(
                &w.certificate.body,
                "the writer certificate",
            )?
            .created;
            if let Some(r) = repo
                .config
                .revoked
                .iter()
                .find(|r| r.covers(&w.host, &fingerprint, certified))
            {
                return Err(anyhow::anyhow!(
                    "this writer key ({} of host {}) was revoked at {}: it can back up no more; ask for a new one \
                     (`strongroom key export-writer` with the full key)",
                    &hex::encode(fingerprint)[..16],
                    w.host,
                    crate::commands::format_time(&crate::format::Timestamp { sec: r.at, nsec: 0 }, false)
                ));
            }
        }
        let mut index = Index::load(repo.backend.as_ref(), &shared.subkeys, &repo.id(), cache)?;
        let listed: HashMap<Id, u64> = crate::repository::packs::listed(repo.backend.as_ref())?;
        let recovered = recover_unindexed(repo, key, &mut index, &listed);
        let live: HashSet<Id> = index
            .packs()
            .filter(|p| {
                listed
                    .get(*p)
                    .is_some_and(|size| index.pack_size(p) == Some(*size))
            })
            .copied()
            .collect();
        if !recovered.is_empty() {
            index::write_index_file(repo.backend.as_ref(), &shared.subkeys, &repo.id(), recovered)?;
        }
        let signer = RunSigner::of(key)?;
        let run = RunKeys::new(&signer.fingerprint())?;
        run.write_envelope(repo, &signer)?;
        Ok(Writer {
            repo,
            key,
            signer,
            run,
            index,
            live,
            pending: Mutex::new(HashSet::new()),
            data: Mutex::new(Packer::new(DATA_PACK_TARGET)),
            trees: Mutex::new(Packer::new(TREE_PACK_TARGET)),
            unindexed: Mutex::new(Vec::new()),
            bytes_added: AtomicU64::new(0),
            blobs_added: AtomicU64::new(0),
        })
    }

    pub fn blob_id(&self, data: &[u8]) -> Id {
        Id(hmac(&self.key.shared().subkeys.blob_id, data))
    }

    /// Whether the repository holds a blob in a pack that exists with the
    /// size the index records.
    fn stored(&self, id: &Id) -> bool {
        self.index
            .find_location(id, |l| self.live.contains(&l.pack))
            .is_some()
    }

    /// Whether the repository (or this run) already holds a blob.
    pub fn has_blob(&self, id: &Id) -> bool {
        self.stored(id)
            || self
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(id)
    }

    /// Stores a blob unless the repository already holds it; returns its id.
    pub fn add_blob(&self, kind: BlobKind, data: &[u8]) -> Result<Id> {
        let id = self.blob_id(data);
        self.add_blob_with_id(kind, id, data)?;
        Ok(id)
    }

    fn add_blob_with_id(&self, kind: BlobKind, id: Id, data: &[u8]) -> Result<()> {
        if self.stored(&id) || !self.pending.lock().unwrap_or_else(|e| e.into_inner()).insert(id) {
            return Ok(());
        }
        let mut plain = Vec::with_capacity(data.len() + 1);
        match compress(data) {
            Some(c) if c.len() + 64 < data.len() => {
                plain.push(ZSTD);
                plain.extend_from_slice(&c);
            }
            _ => {
                plain.push(RAW);
                plain.extend_from_slice(data);
            }
        }
        let sealed = self.run.seal_blob(kind, &id, &self.repo.id(), &plain)?;
        let entry = BlobEntry {
            id,
            kind,
            run: self.run.run,
            offset: 0,
            length: 0,
            raw_length: data.len() as u32,
        };
        self.blobs_added.fetch_add(1, Ordering::Relaxed);
        let packer = match kind {
            BlobKind::Data => &self.data,
            BlobKind::Tree => &self.trees,
        };
        let finished = {
            let mut p = packer.lock().unwrap_or_else(|e| e.into_inner());
            if p.add(entry, &sealed) {
                p.finish(&self.key.shared().subkeys, &self.repo.id())?
            } else {
                None
            }
        };
        if let Some(f) = finished {
            self.store_pack(f)?;
        }
        Ok(())
    }

    fn store_pack(&self, pack: FinishedPack) -> Result<()> {
        self.repo
            .backend
            .write(Kind::Packs, &pack.id.to_hex(), &pack.bytes)
            .with_context(|| format!("writing pack {}", pack.id))?;
        self.bytes_added
            .fetch_add(pack.bytes.len() as u64, Ordering::Relaxed);
        let batch = {
            let mut u = self.unindexed.lock().unwrap_or_else(|e| e.into_inner());
            u.push(pack.entries);
            if u.len() >= PACKS_PER_INDEX_FILE {
                Some(std::mem::take(&mut *u))
            } else {
                None
            }
        };
        if let Some(b) = batch {
            self.write_index(b)?;
        }
        Ok(())
    }

    fn write_index(&self, packs: Vec<PackEntries>) -> Result<()> {
        let id = index::write_index_file(
            self.repo.backend.as_ref(),
            &self.key.shared().subkeys,
            &self.repo.id(),
            packs,
        )?;
        if let Ok(size) = self.repo.backend.stat(Kind::Index, &id.to_hex()) {
            self.bytes_added.fetch_add(size, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Flushes packs and index, then signs and writes the manifest.
    pub fn finish(self, mut catalog: Catalog) -> Result<(Id, Catalog)> {
        let shared = self.key.shared();
        for packer in [&self.data, &self.trees] {
            let f = packer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .finish(&shared.subkeys, &self.repo.id())?;
            if let Some(f) = f {
                self.store_pack(f)?;
            }
        }
        let rest = std::mem::take(&mut *self.unindexed.lock().unwrap_or_else(|e| e.into_inner()));
        if !rest.is_empty() {
            self.write_index(rest)?;
        }
        catalog.summary.bytes_added = self.bytes_added.load(Ordering::Relaxed);
        catalog.summary.blobs_added = self.blobs_added.load(Ordering::Relaxed);
        let id = snapshots::write(
            self.repo,
            shared,
            &self.signer,
            (self.run.run, self.run.salt),
            &catalog,
        )?;
        Ok((id, catalog))
    }
}

thread_local! {
    /// One zstd context per thread: making one per blob costs more than
    /// compressing a small file.
    static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

fn compress(data: &[u8]) -> Option<Vec<u8>> {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            *c = zstd::bulk::Compressor::new(ZSTD_LEVEL).ok();
        }
        c.as_mut()?.compress(data).ok()
    })
}

/// Indexes packs that exist but no index file names (left by an interrupted
/// run). Each is read whole and indexed only if it verifies (its name is the
/// hash of its bytes, its header opens and describes its body), so a header
/// copied onto other bytes is never deduplicated against. Packs that do not
/// verify are left for `check` to report.
fn recover_unindexed(
    repo: &Repository,
    key: &Key,
    index: &mut Index,
    listed: &HashMap<Id, u64>,
) -> Vec<PackEntries> {
    let orphans: Vec<&Id> = listed.keys().filter(|id| !index.has_pack(id)).collect();
    let shared = key.shared();
    let recovered: Vec<PackEntries> = orphans
        .par_iter()
        .filter_map(|id| {
            packs::read_verified(repo.backend.as_ref(), &shared.subkeys, &repo.id(), id)
                .ok()
                .map(|(_, entries)| entries)
        })
        .collect();
    for p in &recovered {
        index.insert_pack(p);
    }
    recovered
}
