//! Seals and stores full packs on threads of their own, so the threads
//! that hash, compress and encrypt blobs never wait for a pack's hash, its
//! upload or its fsync.
//!
//! A pack's blobs count in an index file only once the pack is stored, and
//! index files are written every [`PACKS_PER_INDEX_FILE`] packs from here,
//! so an interrupted run's work is found again. Data packs are built in
//! buffers of a pool of [`POOL`]: one filling, the others waiting or being
//! stored. A thread that would start another pack waits for a buffer, so
//! memory stays bounded however many threads add blobs, and a slow store
//! slows the readers down rather than filling memory.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
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
/// Data-pack buffers that exist at once: the one filling and one per
/// store thread. A fourth, filling while a full pack waits for a store
/// thread, was no faster.
const POOL: usize = THREADS + 1;

/// The data-pack buffers: those free to fill again, and how many exist.
#[derive(Default)]
struct Pool {
    free: Vec<AlignedBuf>,
    made: usize,
}

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
    pool: Mutex<Pool>,
    /// Signalled when a buffer goes back to the pool, or the store fails.
    returned: Condvar,
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
            pool: Mutex::new(Pool::default()),
            returned: Condvar::new(),
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

    /// A buffer for a new data pack: a stored pack's, or a new one while
    /// fewer than [`POOL`] exist. Waits for one otherwise; fails once the
    /// store has failed.
    pub fn buffer(&self) -> Result<AlignedBuf> {
        let mut pool = self.shared.pool.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            self.check()?;
            if let Some(b) = pool.free.pop() {
                return Ok(b);
            }
            if pool.made < POOL {
                pool.made += 1;
                return Ok(AlignedBuf::default());
            }
            pool = self.shared.returned.wait(pool).unwrap_or_else(|e| e.into_inner());
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
        {
            let mut f = self.failed.lock().unwrap_or_else(|e| e.into_inner());
            if f.is_none() {
                *f = Some(e);
            }
        }
        // Under the pool's lock, so a thread about to wait for a buffer
        // either sees the failure or is woken.
        let _pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        self.returned.notify_all();
    }

    /// Gives a pooled buffer back (`None`: it was lost with its pack, and
    /// another may be made in its place).
    fn give_back(&self, buf: Option<AlignedBuf>) {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        match buf {
            Some(b) => pool.free.push(b),
            None => pool.made -= 1,
        }
        self.returned.notify_one();
    }

    fn failed(&self) -> bool {
        self.failed.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// Seals and writes a pack, then writes an index file if enough packs
    /// wait for one; returns the pack's buffer once it is written.
    fn store(&self, body: PackBody) -> Result<AlignedBuf> {
        let pack = body.seal(&self.index_key, &self.repo_id)?;
        self.backend
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
            write_index(
                self.backend.as_ref(),
                &self.index_key,
                &self.repo_id,
                b,
                &self.bytes_added,
            )?;
        }
        Ok(pack.bytes)
    }
}

/// Marks the store failed if its thread panics, so no thread waits for a
/// buffer that will not come back.
struct PanicGuard<'a>(&'a Shared);

impl Drop for PanicGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.fail(anyhow!("a pack-store thread panicked"));
        }
    }
}

fn store_loop(shared: &Shared, rx: &Mutex<Receiver<PackBody>>) {
    let _guard = PanicGuard(shared);
    loop {
        let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(body) = next else { return };
        let pooled = body.pooled;
        let buf = if shared.failed() {
            Some(body.into_buffer())
        } else {
            match shared.store(body) {
                Ok(buf) => Some(buf),
                Err(e) => {
                    shared.fail(e);
                    None
                }
            }
        };
        if pooled {
            shared.give_back(buf);
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
