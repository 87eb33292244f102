//! Read-ahead for open files: while one file is read sequentially, the
//! blobs that follow the one being read are loaded in parallel by a small
//! pool into the cache of decrypted blobs: from the disk cache of sealed
//! blobs when it holds them, else neighbouring blobs of one pack with one
//! ranged read. Random reads prefetch nothing. A prefetch that
//! fails says nothing: the read that needs the blob loads it again and
//! reports the failure itself.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use rayon::prelude::*;

use super::lru::{Claim, Lru};
use crate::format::tree::{Extent, Node};
use crate::repository::index::Location;
use crate::repository::reader::{MAX_SPAN, Reader};

/// Blobs loaded ahead of a sequential reader (about 1 MiB each).
const WINDOW: usize = 16;
/// Memory of decrypted blobs the window counts per blob it loads ahead
/// (blobs are up to 8 MiB).
const BYTES_PER_BLOB: u64 = 8 << 20;
/// The memory of decrypted blobs a full window needs.
pub const WINDOW_MEMORY: u64 = WINDOW as u64 * BYTES_PER_BLOB;
/// Threads loading ahead, over every open file.
const THREADS: usize = 4;
/// A read starting this close to where the file's reads got to still
/// counts as sequential (parallel requests of the kernel's read-ahead
/// arrive out of order).
const SLACK: u64 = 2 << 20;
/// Bytes between two blobs of one pack still read in one request (about
/// two blobs that other reads loaded: cheaper read again than asked for
/// apart).
const MAX_GAP: u64 = 2 << 20;
const SHARDS: usize = 16;

/// One open file's reads so far.
#[derive(Default)]
pub struct Sequence {
    /// The end of the furthest read.
    reached: AtomicU64,
    /// Extents before this one are loaded or being loaded.
    ahead: AtomicUsize,
}

/// The open files, by handle, in shards so readers do not share a lock.
pub struct OpenFiles {
    next: AtomicU64,
    shards: Vec<RwLock<HashMap<u64, Arc<Sequence>>>>,
}

impl Default for OpenFiles {
    fn default() -> Self {
        OpenFiles {
            next: AtomicU64::new(1),
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
        }
    }
}

impl OpenFiles {
    fn shard(&self, fh: u64) -> &RwLock<HashMap<u64, Arc<Sequence>>> {
        &self.shards[fh as usize % SHARDS]
    }

    /// A handle for a newly opened file.
    pub fn open(&self) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed);
        self.shard(fh)
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(fh, Arc::default());
        fh
    }

    pub fn get(&self, fh: u64) -> Option<Arc<Sequence>> {
        self.shard(fh)
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&fh)
            .cloned()
    }

    pub fn release(&self, fh: u64) {
        self.shard(fh)
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh);
    }
}

/// The pool that loads blobs ahead of sequential readers.
pub struct Prefetcher {
    reader: Arc<Reader<'static>>,
    blobs: Arc<Lru<Vec<u8>>>,
    pool: Option<rayon::ThreadPool>,
    window: usize,
}

impl Prefetcher {
    /// A prefetcher filling `blobs`, of `memory` bytes: a cache too
    /// small to hold the window gets none (what is loaded ahead would be
    /// evicted before it is read).
    pub fn new(reader: Arc<Reader<'static>>, blobs: Arc<Lru<Vec<u8>>>, memory: u64) -> Prefetcher {
        let window = ((memory / BYTES_PER_BLOB) as usize).min(WINDOW);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(THREADS)
            .thread_name(|i| format!("prefetch-{i}"))
            .build()
            .ok()
            .filter(|_| window > 0);
        Prefetcher {
            reader,
            blobs,
            pool,
            window,
        }
    }

    /// Notes a read of `offset..end` of `node` (whose extent `at` holds
    /// `offset`) by the open file `seq`; if its reads are sequential, loads
    /// the blobs of the extents that follow, up to the window.
    pub fn after_read(&self, seq: &Sequence, node: &Arc<Node>, at: usize, offset: u64, end: u64) {
        let Some(pool) = &self.pool else { return };
        let reached = seq.reached.fetch_max(end, Ordering::Relaxed);
        let sequential = offset <= reached.saturating_add(SLACK) && offset.saturating_add(SLACK) >= reached;
        if !sequential || (offset != 0 && reached == 0) {
            return;
        }
        // Half the window still ahead: nothing to add yet.
        let ahead = seq.ahead.load(Ordering::Relaxed);
        if ahead > at + self.window / 2 {
            return;
        }
        let to = (at + 1 + self.window).min(node.content.len());
        let from = seq.ahead.fetch_max(to, Ordering::Relaxed).max(at + 1);
        if from >= to {
            return;
        }
        let node = node.clone();
        let reader = self.reader.clone();
        let blobs = self.blobs.clone();
        pool.spawn(move || load_ahead(&reader, &blobs, &node.content[from..to]));
    }
}

/// Claims the blobs of `extents` nobody has or loads, groups those lying
/// close together in one pack (a backup stores a file's blobs about in
/// order, not exactly: they are sorted by pack and offset), and loads each
/// group with one ranged read, the groups and their blobs opened in
/// parallel.
fn load_ahead(reader: &Reader<'static>, blobs: &Arc<Lru<Vec<u8>>>, extents: &[Extent]) {
    let claimed: Vec<(Location, Claim<Vec<u8>>)> = extents
        .iter()
        .filter_map(|extent| {
            let Extent::Data { id, .. } = extent else {
                return None;
            };
            let loc = reader.data_location(id)?;
            Some((loc, blobs.try_claim(id)?))
        })
        .collect();
    // Those the disk cache holds are opened from there, in parallel.
    let mut claimed: Vec<(Location, Claim<Vec<u8>>)> = claimed
        .into_par_iter()
        .filter_map(|(loc, claim)| match reader.read_cached(&loc, true) {
            Some(data) => {
                let w = data.len();
                claim.fill(data, w);
                None
            }
            None => Some((loc, claim)),
        })
        .collect();
    claimed.sort_by_key(|(l, _)| (l.pack, l.entry.offset));
    let mut groups: Vec<Vec<(Location, Claim<Vec<u8>>)>> = Vec::new();
    for (loc, claim) in claimed {
        let joins = groups.last().is_some_and(|g| {
            let (first, prev) = (&g[0].0, &g[g.len() - 1].0);
            let prev_end = prev.entry.offset as u64 + prev.entry.length as u64;
            let at = loc.entry.offset as u64;
            loc.pack == prev.pack
                && at >= prev_end
                && at - prev_end <= MAX_GAP
                && at + loc.entry.length as u64 - first.entry.offset as u64 <= MAX_SPAN
        });
        match groups.last_mut() {
            Some(g) if joins => g.push((loc, claim)),
            _ => groups.push(vec![(loc, claim)]),
        }
    }
    groups.into_par_iter().for_each(|group| {
        let locs: Vec<Location> = group.iter().map(|(l, _)| *l).collect();
        // Failures drop the claims: the reads needing them retry and report.
        let Ok(span) = reader.read_span(&locs) else { return };
        group.into_par_iter().for_each(|(loc, claim)| {
            let Some(sealed) = span.sealed(&loc) else { return };
            if let Ok(data) = reader.open_blob(&loc, sealed, true) {
                let w = data.len();
                // The reader waiting for it first, the disk cache after.
                claim.fill(data, w);
                reader.keep(&loc, sealed);
            }
        });
    });
}
