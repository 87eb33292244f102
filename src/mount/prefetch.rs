//! Read-ahead, by a small pool, from the disk cache of sealed blobs when
//! it holds them, else neighbouring blobs of one pack with one ranged
//! read: while a file is read sequentially, the blobs that follow the one
//! being read (random reads prefetch nothing); when a file's first read
//! comes, the other files of its directory; when a directory is listed,
//! the trees of its subdirectories. A prefetch that
//! fails says nothing: the read that needs the blob loads it again and
//! reports the failure itself.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use super::dir::tree_weight;
use super::lru::{Claim, Lru};
use crate::format::tree::{Extent, Node, NodeKind, Tree};
use crate::repository::index::Location;
use crate::repository::reader::{MAX_SPAN, Reader, group_spans};

/// Blobs loaded ahead of a sequential reader (about 1 MiB each).
const WINDOW: usize = 16;
/// Memory of decrypted blobs the window counts per blob it loads ahead
/// (blobs are up to 8 MiB).
const BYTES_PER_BLOB: u64 = 8 << 20;
/// The memory of decrypted blobs a full window needs.
pub const WINDOW_MEMORY: u64 = WINDOW as u64 * BYTES_PER_BLOB;
/// Threads loading ahead, for every reader.
const THREADS: usize = 4;
/// A read starting this close to where the file's reads got to still
/// counts as sequential (parallel requests of the kernel's read-ahead
/// arrive out of order).
const SLACK: u64 = 2 << 20;
/// Bytes between two blobs of one pack still read in one request (about
/// two blobs that other reads loaded: cheaper read again than asked for
/// apart).
const MAX_GAP: u64 = 2 << 20;

/// Files of one directory loaded ahead at once, at most.
pub const FILES: usize = 64;
/// Bytes of files of one directory loaded ahead at most.
const FILE_BYTES: u64 = 16 << 20;
/// Subdirectory trees loaded ahead per listing, at most.
const SUBTREES: usize = 256;

/// One file's reads so far (readers of one file at once share it), or for
/// a directory, how far its files were loaded ahead.
#[derive(Default)]
pub struct Sequence {
    /// The end of the furthest read (of a large directory: files before
    /// this position in name order are loaded or being loaded).
    reached: AtomicU64,
    /// Extents before this one are loaded or being loaded (of a small
    /// directory: 1 once its files were loaded; of a large one, the files
    /// before this position in inode order).
    ahead: AtomicUsize,
}

/// A directory's entries (their positions) in the order of their inode
/// numbers, and where each stands in that order.
pub struct InodeOrder {
    pub order: Vec<u32>,
    pub rank: Vec<u32>,
}

impl InodeOrder {
    /// Of `order`, a permutation of the positions.
    pub fn new(order: Vec<u32>) -> InodeOrder {
        let mut rank = vec![0u32; order.len()];
        for (r, &i) in order.iter().enumerate() {
            rank[i as usize] = r as u32;
        }
        InodeOrder { order, rank }
    }
}

/// The order a large directory's files are loaded ahead in.
#[derive(Clone, Copy)]
pub enum Order {
    /// By name (`rsync`, `tar`, `find`).
    Name,
    /// By inode number (`cp -a`).
    Inode,
}

impl Sequence {
    /// True the first time it is asked (of a small directory's state:
    /// whether its files are to be loaded).
    pub fn first_time(&self) -> bool {
        self.ahead.swap(1, Ordering::Relaxed) == 0
    }

    /// Of a large directory of `len` entries whose file at position `at`
    /// of `order` is read for the first time, the positions (in that
    /// order) of the files to load ahead: none while at least half a
    /// window of the files after it are loaded or being loaded; else
    /// those up to a window after it that are not. Whole half windows at a
    /// time: a few ranged reads for a directory, not one per file.
    pub fn files_ahead(&self, order: Order, at: usize, len: usize) -> std::ops::Range<usize> {
        let window = FILES / 2;
        let frontier = match order {
            Order::Name => self.reached.load(Ordering::Relaxed) as usize,
            Order::Inode => self.ahead.load(Ordering::Relaxed),
        };
        let from = if at < frontier {
            if frontier - at > window / 2 {
                return 0..0;
            }
            frontier
        } else {
            at + 1
        };
        let to = (at + 1 + window).min(len);
        if from >= to {
            return 0..0;
        }
        // Two readers racing here may both load a range: the claims keep
        // each blob loaded once.
        let from = match order {
            Order::Name => (self.reached.fetch_max(to as u64, Ordering::Relaxed) as usize).max(from),
            Order::Inode => self.ahead.fetch_max(to, Ordering::Relaxed).max(from),
        };
        from.min(to)..to
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// Threads that run jobs in turn, idle ones asleep on the queue (a pool
/// that spins while waiting for work takes the CPU the readers need).
pub struct Pool {
    queue: mpsc::Sender<Job>,
}

impl Pool {
    fn new(threads: usize) -> Option<Pool> {
        let (queue, jobs) = mpsc::channel::<Job>();
        let jobs = Arc::new(Mutex::new(jobs));
        for i in 0..threads {
            let jobs = jobs.clone();
            std::thread::Builder::new()
                .name(format!("prefetch-{i}"))
                .spawn(move || {
                    loop {
                        let job = jobs.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })
                .ok()?;
        }
        Some(Pool { queue })
    }

    fn spawn(&self, job: impl FnOnce() + Send + 'static) {
        let _ = self.queue.send(Box::new(job));
    }
}

/// The pool that loads blobs ahead of sequential readers.
pub struct Prefetcher {
    reader: Arc<Reader<'static>>,
    blobs: Arc<Lru<Vec<u8>>>,
    trees: Arc<Lru<Tree>>,
    pool: Option<Pool>,
    window: usize,
}

impl Prefetcher {
    /// A prefetcher filling `blobs`, of `memory` bytes: a cache too
    /// small to hold the window gets none (what is loaded ahead would be
    /// evicted before it is read).
    pub fn new(
        reader: Arc<Reader<'static>>,
        blobs: Arc<Lru<Vec<u8>>>,
        trees: Arc<Lru<Tree>>,
        memory: u64,
    ) -> Prefetcher {
        let window = ((memory / BYTES_PER_BLOB) as usize).min(WINDOW);
        let pool = if window > 0 { Pool::new(THREADS) } else { None };
        Prefetcher {
            reader,
            blobs,
            trees,
            pool,
            window,
        }
    }

    /// Notes a read of `offset..end` of `node` (whose extent `at` holds
    /// `offset`), a file whose reads so far are `seq`; if its reads are
    /// sequential, loads the blobs of the extents that follow, up to the
    /// window.
    pub fn after_read(&self, seq: &Sequence, node: &Node, at: usize, offset: u64, end: u64) {
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
        self.load_data(pool, &node.content[from..to]);
    }

    /// Claims the blobs of `extents` now (a read arriving before the pool
    /// gets to them waits for the pool's load, it does not load them a
    /// second time) and has the pool load them.
    fn load_data(&self, pool: &Pool, extents: &[Extent]) {
        let claimed = claim_data(&self.reader, &self.blobs, extents);
        load_grouped(pool, &self.reader, claimed, |_, data| {
            let w = data.len();
            Some((data, w))
        });
    }

    /// Loads the blobs of the files at positions `which` of the directory
    /// `tree`, up to [`FILE_BYTES`] bytes.
    pub fn load_files(&self, tree: &Tree, which: impl Iterator<Item = usize>) {
        let Some(pool) = &self.pool else { return };
        let mut bytes = 0u64;
        let extents: Vec<Extent> = which
            .filter_map(|i| tree.nodes.get(i))
            .filter(|n| n.kind == NodeKind::File)
            .flat_map(|n| n.content.iter())
            .take_while(|x| {
                bytes += x.byte_len();
                bytes <= FILE_BYTES
            })
            .cloned()
            .collect();
        self.load_data(pool, &extents);
    }

    /// Loads the trees of `tree`'s subdirectories that are not cached, up
    /// to [`SUBTREES`] of them.
    pub fn subtrees(&self, tree: &Arc<Tree>) {
        let Some(pool) = &self.pool else { return };
        let claimed: Vec<_> = tree
            .nodes
            .iter()
            .filter(|n| n.kind == NodeKind::Dir)
            .filter_map(|n| n.subtree)
            .take(SUBTREES)
            .filter_map(|id| {
                let loc = self.reader.tree_location(&id)?;
                // One that would evict the others of its shard is left
                // for a reader to load, if one wants it.
                if loc.entry.raw_length as usize > self.trees.shard_bytes() / 4 {
                    return None;
                }
                Some((loc, self.trees.try_claim(&id)?))
            })
            .collect();
        load_grouped(pool, &self.reader, claimed, |loc, bytes| {
            let t = Tree::decode(&bytes, &format!("tree {}", loc.entry.id)).ok()?;
            let w = tree_weight(&t);
            Some((t, w))
        });
    }
}

/// Claims the blobs of `extents` that nobody has or loads.
fn claim_data(
    reader: &Reader<'static>,
    blobs: &Arc<Lru<Vec<u8>>>,
    extents: &[Extent],
) -> Vec<(Location, Claim<Vec<u8>>)> {
    extents
        .iter()
        .filter_map(|extent| {
            let Extent::Data { id, .. } = extent else {
                return None;
            };
            let loc = reader.data_location(id)?;
            Some((loc, blobs.try_claim(id)?))
        })
        .collect()
}

/// Loads claimed objects, those lying close together in one pack as one
/// group, each group a job of the pool. When a group's turn comes, its
/// claims that a reader took over meanwhile are left to that reader; of
/// the rest, those the disk cache holds come from there, the others with
/// one ranged read (then kept in the disk cache), opened and made into
/// values by `decode`.
fn load_grouped<V: Send + Sync + 'static>(
    pool: &Pool,
    reader: &Arc<Reader<'static>>,
    claimed: Vec<(Location, Claim<V>)>,
    decode: impl Fn(&Location, Vec<u8>) -> Option<(V, usize)> + Send + Sync + 'static,
) {
    if claimed.is_empty() {
        return;
    }
    let groups = group_spans(claimed, MAX_GAP, MAX_SPAN);
    let c = &reader.counters;
    c.ahead_groups.fetch_add(groups.len() as u64, Ordering::Relaxed);
    c.ahead_blobs
        .fetch_add(groups.iter().map(|g| g.len() as u64).sum(), Ordering::Relaxed);
    let decode = Arc::new(decode);
    for group in groups {
        let (reader, decode) = (reader.clone(), decode.clone());
        pool.spawn(move || load_group(&reader, group, &*decode));
    }
}

/// What a loaded blob's bytes are made into, with its weight.
type Decode<V> = dyn Fn(&Location, Vec<u8>) -> Option<(V, usize)>;

fn load_group<V>(reader: &Reader<'static>, group: Vec<(Location, Claim<V>)>, decode: &Decode<V>) {
    let mut rest = Vec::new();
    for (loc, mut claim) in group {
        if !claim.start() {
            continue;
        }
        match reader.read_cached(&loc, true) {
            Some(data) => {
                if let Some((value, w)) = decode(&loc, data) {
                    claim.fill(value, w);
                }
            }
            None => rest.push((loc, claim)),
        }
    }
    if rest.is_empty() {
        return;
    }
    let locs: Vec<Location> = rest.iter().map(|(l, _)| *l).collect();
    // Failures drop the claims: the reads needing them retry and report.
    let Ok(span) = reader.read_span(&locs) else { return };
    for (loc, claim) in rest {
        let Some(sealed) = span.sealed(&loc) else { continue };
        let Ok(data) = reader.open_blob(&loc, sealed, true) else {
            continue;
        };
        if let Some((value, w)) = decode(&loc, data) {
            // The reader waiting for it first, the disk cache after.
            claim.fill(value, w);
            reader.keep(&loc, sealed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_directory_is_loaded_ahead_half_a_window_at_a_time() {
        let s = Sequence::default();
        let half = FILES / 2;
        // First read: the window after it.
        assert_eq!(s.files_ahead(Order::Inode, 0, 1000), 1..1 + half);
        // Reads well inside what is loaded ahead add nothing.
        for at in 1..half / 2 {
            assert_eq!(s.files_ahead(Order::Inode, at, 1000), 0..0, "{at}");
        }
        // Half a window left: the rest up to a window past the read.
        let at = half / 2 + 1;
        assert_eq!(s.files_ahead(Order::Inode, at, 1000), 1 + half..at + 1 + half);
        // A jump past what was loaded starts again after it; the other
        // order keeps its own frontier.
        assert_eq!(s.files_ahead(Order::Inode, 500, 1000), 501..501 + half);
        assert_eq!(s.files_ahead(Order::Name, 500, 1000), 501..501 + half);
        // The end of the directory bounds the window.
        assert_eq!(s.files_ahead(Order::Name, 990, 1000), 991..1000);
        assert_eq!(s.files_ahead(Order::Name, 999, 1000), 0..0);
    }

    #[test]
    fn inode_order_ranks_are_the_inverse_permutation() {
        let o = InodeOrder::new(vec![2, 0, 3, 1]);
        assert_eq!(o.rank, [1, 3, 0, 2]);
    }
}
