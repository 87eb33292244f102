//! Seals and stores full packs on threads of their own, so the threads
//! that hash, compress and encrypt blobs never wait for a pack's hash, its
//! upload or its fsync.
//!
//! A pack's blobs count in an index file only once the pack is stored, and
//! index files are written every [`PACKS_PER_INDEX_FILE`] packs from here,
//! so an interrupted run's work is found again. At most one pack waits in
//! the queue beyond those being stored: memory stays bounded, and a slow
//! store slows the readers down rather than filling memory.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::{Context, Result, anyhow};

use crate::aligned::AlignedBuf;
use crate::backend::{Backend, Kind};
use crate::crypto::SecretKey;
use crate::format::Id;
use crate::format::index::PackEntries;

use super::index;
use super::packer::PackBody;

/// Index files are written every this many packs, so an interrupted run's
/// work is found without reading pack headers.
pub const PACKS_PER_INDEX_FILE: usize = 64;
/// Packs sealed and stored at once: one written while the other waits for
/// its fsync (or upload). One alone made the 1 GiB backup wait on the disk
/// (3.5 s against 2.0 s); three were no faster and held 16 MiB more.
const THREADS: usize = 2;

struct Shared {
    backend: Arc<dyn Backend>,
    index_key: SecretKey,
    repo_id: Id,
    unindexed: Mutex<Vec<PackEntries>>,
    /// The first failure; every later pack is dropped unwritten.
    failed: Mutex<Option<anyhow::Error>>,
    bytes_added: Arc<AtomicU64>,
    /// Buffers of stored packs, to fill again: no page is faulted in twice
    /// and memory stays what the packs in flight need.
    spare: Mutex<Vec<AlignedBuf>>,
}

pub struct PackStore {
    queue: Option<SyncSender<PackBody>>,
    threads: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl PackStore {
    pub fn new(
        backend: Arc<dyn Backend>,
        index_key: SecretKey,
        repo_id: Id,
        bytes_added: Arc<AtomicU64>,
    ) -> Self {
        let shared = Arc::new(Shared {
            backend,
            index_key,
            repo_id,
            unindexed: Mutex::new(Vec::new()),
            failed: Mutex::new(None),
            bytes_added,
            spare: Mutex::new(Vec::new()),
        });
        let (tx, rx) = sync_channel::<PackBody>(0);
        let rx = Arc::new(Mutex::new(rx));
        let threads = (0..THREADS)
            .map(|i| {
                let (shared, rx) = (shared.clone(), rx.clone());
                std::thread::Builder::new()
                    .name(format!("pack-store-{i}"))
                    .spawn(move || store_loop(&shared, &rx))
                    .expect("spawning a pack-store thread")
            })
            .collect();
        PackStore {
            queue: Some(tx),
            threads,
            shared,
        }
    }

    /// Queues a full pack; waits while the queue is full. Fails with the
    /// first store failure, so the run stops at the next blob.
    pub fn send(&self, body: PackBody) -> Result<()> {
        self.check()?;
        let queue = self
            .queue
            .as_ref()
            .ok_or_else(|| anyhow!("the pack store is closed"))?;
        if queue.send(body).is_err() {
            self.check()?;
            return Err(anyhow!("the pack-store threads have stopped"));
        }
        Ok(())
    }

    /// A buffer for a new pack of at least `capacity` bytes: a stored
    /// pack's, or a new empty one.
    pub fn buffer(&self, capacity: usize) -> AlignedBuf {
        let mut spare = self.shared.spare.lock().unwrap_or_else(|e| e.into_inner());
        match spare.iter().position(|b| b.capacity() >= capacity) {
            Some(i) => spare.swap_remove(i),
            None => AlignedBuf::default(),
        }
    }

    /// The first store failure, if any.
    pub fn check(&self) -> Result<()> {
        match &*self.shared.failed.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(e) => Err(anyhow!("{e:#}")),
            None => Ok(()),
        }
    }

    /// Waits until every queued pack is stored; returns the entries of the
    /// packs no index file names yet, or the first failure.
    pub fn close(mut self) -> Result<Vec<PackEntries>> {
        self.join();
        if let Some(e) = self
            .shared
            .failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            return Err(e);
        }
        Ok(std::mem::take(
            &mut *self.shared.unindexed.lock().unwrap_or_else(|e| e.into_inner()),
        ))
    }

    fn join(&mut self) {
        self.queue = None;
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                self.shared.fail(anyhow!("a pack-store thread panicked"));
            }
        }
    }
}

impl Drop for PackStore {
    /// A run that stops early still lets the packs in flight land: they are
    /// found again by the next run.
    fn drop(&mut self) {
        self.join();
    }
}

impl Shared {
    fn fail(&self, e: anyhow::Error) {
        let mut f = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        if f.is_none() {
            *f = Some(e);
        }
    }

    fn failed(&self) -> bool {
        self.failed.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    fn store(&self, body: PackBody) -> Result<()> {
        let pack = body.seal(&self.index_key, &self.repo_id)?;
        self.backend
            .write(Kind::Packs, &pack.id.to_hex(), &pack.bytes)
            .with_context(|| format!("writing pack {}", pack.id))?;
        self.bytes_added
            .fetch_add(pack.bytes.len() as u64, Ordering::Relaxed);
        {
            let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
            if spare.len() < THREADS {
                spare.push(pack.bytes);
            }
        }
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
            write_index(
                self.backend.as_ref(),
                &self.index_key,
                &self.repo_id,
                b,
                &self.bytes_added,
            )?;
        }
        Ok(())
    }
}

fn store_loop(shared: &Shared, rx: &Mutex<Receiver<PackBody>>) {
    loop {
        let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(body) = next else { return };
        if shared.failed() {
            continue;
        }
        if let Err(e) = shared.store(body) {
            shared.fail(e);
        }
    }
}

/// Writes one index file naming `packs` (each already stored) and counts
/// its bytes as added.
pub fn write_index(
    backend: &dyn Backend,
    index_key: &SecretKey,
    repo_id: &Id,
    packs: Vec<PackEntries>,
    bytes_added: &AtomicU64,
) -> Result<()> {
    let id = index::write_index_file_with(backend, index_key, repo_id, packs)?;
    if let Ok(size) = backend.stat(Kind::Index, &id.to_hex()) {
        bytes_added.fetch_add(size, Ordering::Relaxed);
    }
    Ok(())
}
