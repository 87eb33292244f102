//! A bounded in-memory cache of decoded objects (decrypted blobs, trees)
//! by id, weighed in bytes and split into shards so that readers of
//! different blobs do not wait on one lock. Only successes are kept: a
//! failed read is tried again next time. An object is loaded once however
//! many want it at once (the kernel's parallel read-ahead within one blob,
//! a prefetch racing the read it prepares): the first to ask claims it and
//! the others wait for that claim alone. A claim taken ahead of time (by
//! read-ahead, queued behind other work) is taken over by the first reader
//! that needs it before its loader has started: nobody waits on a queue.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use crate::format::Id;

const SHARDS: usize = 16;

/// Opened when a claimed load ends, whether it succeeded or not.
#[derive(Default)]
struct Gate {
    done: Mutex<bool>,
    opened: Condvar,
    /// Someone is loading (or has loaded) the object: set by whoever
    /// starts, once.
    taken: AtomicBool,
}

impl Gate {
    fn wait(&self) {
        let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        while !*done {
            done = self.opened.wait(done).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn open(&self) {
        *self.done.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.opened.notify_all();
    }

    /// True for the one caller that gets to load the object.
    fn take(&self) -> bool {
        !self.taken.swap(true, Ordering::AcqRel)
    }
}

struct Shard<V> {
    map: ::lru::LruCache<Id, (Arc<V>, usize)>,
    bytes: usize,
    /// Ids being loaded, each with the gate its loader opens when done.
    loading: HashMap<Id, Arc<Gate>>,
}

pub struct Lru<V> {
    shards: Vec<Mutex<Shard<V>>>,
    budget: usize,
}

/// The right to load one missing object, taken ahead of the load: those
/// asking for it meanwhile take it over if its loader has not started
/// ([`Claim::start`]), else wait until it is filled or dropped (a failure:
/// the next to ask loads it).
pub struct Claim<V> {
    lru: Arc<Lru<V>>,
    id: Id,
    gate: Arc<Gate>,
    started: bool,
}

impl<V> Claim<V> {
    /// True if the load is still this claim's to do (no reader took it
    /// over); the loader calls it just before it loads.
    pub fn start(&mut self) -> bool {
        self.started = self.gate.take();
        self.started
    }

    /// Keeps the loaded value (if this claim was started) and wakes those
    /// waiting for it.
    pub fn fill(self, value: V, weight: usize) {
        if self.started {
            self.lru
                .finish(&self.id, &self.gate, Some((Arc::new(value), weight)));
        }
    }
}

impl<V> Drop for Claim<V> {
    fn drop(&mut self) {
        // Filled or not, the claim ends here (a second `finish` of one
        // gate changes nothing); one never started ends unless a reader
        // took it over (that reader ends it).
        if self.started || self.gate.take() {
            self.lru.finish(&self.id, &self.gate, None);
            self.gate.open();
        }
    }
}

/// A load under way in [`Lru::get_or_load`]: ended (the id no longer
/// counted as loading, its waiters woken) even if the load panics.
struct Loading<'a, V> {
    lru: &'a Lru<V>,
    id: Id,
    gate: Arc<Gate>,
}

impl<V> Drop for Loading<'_, V> {
    fn drop(&mut self) {
        self.lru.finish(&self.id, &self.gate, None);
        self.gate.open();
    }
}

enum Ask<V> {
    Cached(Arc<V>),
    Loading(Arc<Gate>),
    Claimed(Arc<Gate>),
}

impl<V> Lru<V> {
    /// A cache of about `bytes`, split evenly over the shards; each shard
    /// keeps at least its most recent object, however large.
    pub fn new(bytes: usize) -> Lru<V> {
        Lru::with_shards(bytes, SHARDS)
    }

    /// A cache of about `bytes` in `shards` shards: fewer shards, larger
    /// objects kept (each shard holds a share of the bytes).
    pub fn with_shards(bytes: usize, shards: usize) -> Lru<V> {
        let shards = shards.max(1);
        Lru {
            shards: (0..shards)
                .map(|_| {
                    Mutex::new(Shard {
                        map: ::lru::LruCache::unbounded(),
                        bytes: 0,
                        loading: HashMap::new(),
                    })
                })
                .collect(),
            budget: bytes / shards,
        }
    }

    /// The bytes one shard keeps: an object larger than that evicts all
    /// others of its shard.
    pub fn shard_bytes(&self) -> usize {
        self.budget
    }

    fn shard(&self, id: &Id) -> std::sync::MutexGuard<'_, Shard<V>> {
        self.shards[id.0[0] as usize % self.shards.len()]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn ask(&self, id: &Id) -> Ask<V> {
        let mut shard = self.shard(id);
        if let Some((v, _)) = shard.map.get(id) {
            return Ask::Cached(v.clone());
        }
        if let Some(g) = shard.loading.get(id) {
            return Ask::Loading(g.clone());
        }
        let gate = Arc::new(Gate::default());
        shard.loading.insert(*id, gate.clone());
        Ask::Claimed(gate)
    }

    /// Ends the load `gate` stands for: keeps `value` if there is one, and
    /// stops counting the id as loading (the caller opens the gate).
    fn finish(&self, id: &Id, gate: &Arc<Gate>, value: Option<(Arc<V>, usize)>) {
        let mut shard = self.shard(id);
        if shard.loading.get(id).is_some_and(|g| Arc::ptr_eq(g, gate)) {
            shard.loading.remove(id);
        }
        let Some((value, w)) = value else { return };
        if let Some((_, old)) = shard.map.put(*id, (value, w)) {
            shard.bytes -= old;
        }
        shard.bytes += w;
        while shard.bytes > self.budget && shard.map.len() > 1 {
            match shard.map.pop_lru() {
                Some((_, (_, old))) => shard.bytes -= old,
                None => break,
            }
        }
    }

    /// The right to load `id`, unless it is cached or already being
    /// loaded (then nobody needs to).
    pub fn try_claim(self: &Arc<Self>, id: &Id) -> Option<Claim<V>> {
        match self.ask(id) {
            Ask::Claimed(gate) => Some(Claim {
                lru: self.clone(),
                id: *id,
                gate,
                started: false,
            }),
            Ask::Cached(_) | Ask::Loading(_) => None,
        }
    }

    /// The cached value, or `load`'s, kept if it succeeds; if someone else
    /// is loading it, their result once they are done. No shard lock is
    /// held while loading or waiting.
    pub fn get_or_load<E>(
        &self,
        id: &Id,
        weight: impl Fn(&V) -> usize,
        load: impl FnOnce() -> Result<V, E>,
    ) -> Result<Arc<V>, E> {
        let gate = loop {
            match self.ask(id) {
                Ask::Cached(v) => return Ok(v),
                // Claimed ahead, not started yet: this reader loads it.
                Ask::Loading(g) if g.take() => break g,
                // Then cached, or failed: asked again, this reader may load.
                Ask::Loading(g) => g.wait(),
                Ask::Claimed(g) => {
                    g.take();
                    break g;
                }
            }
        };
        let loading = Loading {
            lru: self,
            id: *id,
            gate,
        };
        let result = load().map(Arc::new);
        if let Ok(v) = &result {
            self.finish(id, &loading.gate, Some((v.clone(), weight(v))));
        }
        drop(loading);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(first: u8, n: u8) -> Id {
        let mut b = [0u8; 32];
        b[0] = first;
        b[1] = n;
        Id(b)
    }

    #[test]
    fn a_failed_load_is_not_kept_and_is_tried_again() {
        let lru: Lru<Vec<u8>> = Lru::new(1 << 20);
        let r: Result<_, &str> = lru.get_or_load(&id(0, 1), Vec::len, || Err("pack missing"));
        assert!(r.is_err());
        let v = lru
            .get_or_load(&id(0, 1), Vec::len, || Ok::<_, ()>(vec![7; 10]))
            .unwrap();
        assert_eq!(*v, vec![7; 10]);
        // Now cached: the loader is not called.
        let v = lru.get_or_load(&id(0, 1), Vec::len, || Err(())).unwrap();
        assert_eq!(v.len(), 10);
    }

    #[test]
    fn least_recently_used_go_first_and_one_oversized_value_stays() {
        // 1600 bytes over 16 shards: 100 per shard; all ids here share one.
        let lru: Lru<Vec<u8>> = Lru::new(1600);
        let load = |n: usize| move || Ok::<_, ()>(vec![0u8; n]);
        lru.get_or_load(&id(0, 1), Vec::len, load(60)).unwrap();
        lru.get_or_load(&id(0, 2), Vec::len, load(30)).unwrap();
        lru.get_or_load(&id(0, 1), Vec::len, load(60)).unwrap(); // 1 is now recent
        lru.get_or_load(&id(0, 3), Vec::len, load(30)).unwrap(); // evicts 2
        assert!(lru.get_or_load(&id(0, 1), Vec::len, || Err(())).is_ok());
        assert!(lru.get_or_load(&id(0, 2), Vec::len, || Err(())).is_err());
        lru.get_or_load(&id(0, 4), Vec::len, load(500)).unwrap();
        assert!(
            lru.get_or_load(&id(0, 4), Vec::len, || Err(())).is_ok(),
            "kept alone"
        );
        assert!(lru.get_or_load(&id(0, 3), Vec::len, || Err(())).is_err());
    }

    #[test]
    fn readers_of_one_missing_blob_at_once_load_it_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let lru: Lru<Vec<u8>> = Lru::new(1 << 20);
        let loads = AtomicUsize::new(0);
        let barrier = std::sync::Barrier::new(8);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    barrier.wait();
                    lru.get_or_load(&id(0, 9), Vec::len, || {
                        loads.fetch_add(1, Ordering::SeqCst);
                        // A slow pack read: the others arrive meanwhile.
                        std::thread::sleep(std::time::Duration::from_millis(100));
                        Ok::<_, ()>(vec![1; 8])
                    })
                    .unwrap();
                });
            }
        });
        assert_eq!(loads.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_started_claim_is_waited_for_not_loaded_again_and_a_dropped_claim_lets_the_reader_load() {
        let lru: Arc<Lru<Vec<u8>>> = Arc::new(Lru::new(1 << 20));
        let mut claim = lru.try_claim(&id(0, 5)).unwrap();
        assert!(lru.try_claim(&id(0, 5)).is_none(), "claimed once only");
        assert!(claim.start());
        std::thread::scope(|s| {
            let reader = s.spawn(|| {
                lru.get_or_load(&id(0, 5), Vec::len, || Err::<Vec<u8>, _>("loaded twice"))
                    .map(|v| v.len())
            });
            std::thread::sleep(std::time::Duration::from_millis(50));
            claim.fill(vec![3; 4], 4);
            assert_eq!(reader.join().unwrap(), Ok(4));
        });
        // A started claim dropped unfilled (a failed prefetch) hands the
        // load on.
        let mut claim = lru.try_claim(&id(0, 6)).unwrap();
        assert!(claim.start());
        std::thread::scope(|s| {
            let reader = s.spawn(|| {
                lru.get_or_load(&id(0, 6), Vec::len, || Ok::<_, ()>(vec![1; 2]))
                    .map(|v| v.len())
            });
            std::thread::sleep(std::time::Duration::from_millis(50));
            drop(claim);
            assert_eq!(reader.join().unwrap(), Ok(2));
        });
        assert!(lru.try_claim(&id(0, 6)).is_none(), "cached by the reader");
    }

    #[test]
    fn a_claim_not_started_yet_is_taken_over_by_the_reader_that_needs_it() {
        let lru: Arc<Lru<Vec<u8>>> = Arc::new(Lru::new(1 << 20));
        // Claimed ahead, its load queued behind other work: the reader
        // does not wait for the queue, it loads the object itself.
        let mut claim = lru.try_claim(&id(0, 7)).unwrap();
        let v = lru
            .get_or_load(&id(0, 7), Vec::len, || Ok::<_, ()>(vec![5; 3]))
            .unwrap();
        assert_eq!(*v, vec![5; 3]);
        // The queued load then finds it taken and does nothing.
        assert!(!claim.start());
        claim.fill(vec![9; 9], 9);
        let v = lru.get_or_load(&id(0, 7), Vec::len, || Err(())).unwrap();
        assert_eq!(*v, vec![5; 3]);
    }

    #[test]
    fn a_load_that_panics_leaves_nothing_claimed() {
        let lru: Lru<Vec<u8>> = Lru::new(1 << 20);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            lru.get_or_load(&id(0, 8), Vec::len, || -> Result<Vec<u8>, ()> { panic!("a bug") })
        }));
        assert!(r.is_err());
        // Not left "loading": the next reader loads it (no hang).
        let v = lru
            .get_or_load(&id(0, 8), Vec::len, || Ok::<_, ()>(vec![1]))
            .unwrap();
        assert_eq!(*v, vec![1]);
    }
}
