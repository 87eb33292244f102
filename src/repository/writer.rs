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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use rayon::prelude::*;

use crate::cache::Cache;
use crate::crypto::subkeys::hmac;
use crate::format::index::{BlobEntry, PackEntries};
use crate::format::manifest::Catalog;
use crate::format::{BlobKind, Id};
use crate::keys::Key;

use super::Repository;
use super::index::{self, Index};
use super::packer::Packer;
use super::packs;
use super::packstore::{PackStore, write_index};
use super::runkeys::RunKeys;
use super::snapshots;
use super::trust::RunSigner;

const DATA_PACK_TARGET: usize = 16 * 1024 * 1024;
const TREE_PACK_TARGET: usize = 4 * 1024 * 1024;
pub use super::packstore::PACKS_PER_INDEX_FILE;
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
    store: PackStore,
    pub bytes_added: Arc<AtomicU64>,
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
        let bytes_added = Arc::new(AtomicU64::new(0));
        let store = PackStore::new(
            repo.backend.clone(),
            shared.subkeys.index.clone(),
            repo.id(),
            bytes_added.clone(),
        );
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
            store,
            bytes_added,
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
        let compressed = compress(data).filter(|c| c.len() + 64 < data.len());
        let sealed = match &compressed {
            Some(c) => self
                .run
                .seal_blob_parts(kind, &id, &self.repo.id(), &[&[ZSTD], c])?,
            None => self
                .run
                .seal_blob_parts(kind, &id, &self.repo.id(), &[&[RAW], data])?,
        };
        drop(compressed);
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
        let full = {
            let mut p = packer.lock().unwrap_or_else(|e| e.into_inner());
            if kind == BlobKind::Data && !p.has_pooled() {
                p.give(self.store.buffer()?);
            }
            if p.add(entry, &sealed) { p.take() } else { None }
        };
        drop(sealed);
        match full {
            Some(body) => self.store.send(body),
            None => self.store.check(),
        }
    }

    /// Flushes packs and index, then signs and writes the manifest.
    pub fn finish(self, mut catalog: Catalog) -> Result<(Id, Catalog)> {
        let shared = self.key.shared();
        for packer in [&self.data, &self.trees] {
            let body = packer.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(body) = body {
                self.store.send(body)?;
            }
        }
        let rest = self.store.close()?;
        if !rest.is_empty() {
            write_index(
                self.repo.backend.as_ref(),
                &shared.subkeys.index,
                &self.repo.id(),
                rest,
                &self.bytes_added,
            )?;
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

/// Blobs at least this long are sampled before they are compressed.
const SAMPLE_FROM: usize = 128 * 1024;
/// The sample: this many slices of this many bytes, spread over the blob.
const SAMPLES: usize = 8;
const SAMPLE_LEN: usize = 4096;

/// The blob compressed, unless that saves nothing. A large blob is first
/// judged by a sample: compressed data, media and ciphertext (which zstd
/// cannot shrink) cost a few microseconds instead of a full pass.
fn compress(data: &[u8]) -> Option<Vec<u8>> {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            *c = zstd::bulk::Compressor::new(ZSTD_LEVEL).ok();
        }
        let c = c.as_mut()?;
        if data.len() >= SAMPLE_FROM {
            let step = data.len() / SAMPLES;
            let mut sample = Vec::with_capacity(SAMPLES * SAMPLE_LEN);
            for i in 0..SAMPLES {
                sample.extend_from_slice(&data[i * step..i * step + SAMPLE_LEN]);
            }
            // Less than 2 % saved on the sample: store the blob raw.
            if c.compress(&sample).ok()?.len() * 50 > sample.len() * 49 {
                return None;
            }
        }
        c.compress(data).ok()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn random(n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        getrandom::fill(&mut v).unwrap();
        v
    }

    #[test]
    fn incompressible_blobs_are_stored_raw_and_text_is_compressed() {
        // Random bytes, large and small: nothing saved, nothing kept.
        assert!(compress(&random(4 << 20)).is_none());
        assert!(compress(&random(100_000)).is_none_or(|c| c.len() + 64 >= 100_000));
        // Text compresses, whether sampled or not.
        let text: Vec<u8> = (0..200_000u32)
            .flat_map(|i| format!("line {i}: the quick brown fox\n").into_bytes())
            .collect();
        let c = compress(&text).expect("text compresses");
        assert!(c.len() * 4 < text.len());
        assert_eq!(zstd::bulk::decompress(&c, text.len()).unwrap(), text);
        // Text with random runs between the samples still compresses: the
        // sample decides only for data that is random where it looks.
        let mut mixed = text[..1 << 20].to_vec();
        mixed.extend_from_slice(&random(1 << 20));
        assert!(compress(&mixed).is_some_and(|c| c.len() < mixed.len() * 3 / 4));
    }

    #[test]
    fn large_random_blobs_are_refused_by_the_sample_alone() {
        // A full compression of random bytes returns a (larger) result; only
        // the sample returns nothing, so this shows the sample decided.
        assert!(compress(&random(8 << 20)).is_none());
        assert!(compress(&random(SAMPLE_FROM)).is_none());
        let small = random(SAMPLE_FROM - 1);
        assert!(compress(&small).is_some_and(|c| c.len() + 64 >= small.len()));
    }
}
