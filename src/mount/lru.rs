//! A bounded in-memory cache of decoded objects (decrypted blobs, trees)
//! by id, weighed in bytes and split into shards so that readers of
//! different blobs do not wait on one lock. Only successes are kept: a
//! failed read is tried again next time. Readers wanting the same missing
//! object at once (the kernel's parallel read-ahead within one blob) load
//! it once: the others wait for it on a lock of that id alone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::format::Id;

const SHARDS: usize = 16;

struct Shard<V> {
    map: ::lru::LruCache<Id, (Arc<V>, usize)>,
    bytes: usize,
    /// Ids being loaded, each with the lock its loader holds.
    loading: HashMap<Id, Arc<Mutex<()>>>,
}

pub struct Lru<V> {
    shards: Vec<Mutex<Shard<V>>>,
    budget: usize,
}

impl<V> Lru<V> {
    /// A cache of about `bytes`, split evenly over the shards; each shard
    /// keeps at least its most recent object, however large.
    pub fn new(bytes: usize) -> Lru<V> {
        Lru {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        map: ::lru::LruCache::unbounded(),
                        bytes: 0,
                        loading: HashMap::new(),
                    })
                })
                .collect(),
            budget: bytes / SHARDS,
        }
    }

    fn shard(&self, id: &Id) -> std::sync::MutexGuard<'_, Shard<V>> {
        self.shards[id.0[0] as usize % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The cached value, or `load`'s, kept if it succeeds. No shard lock is
    /// held while loading.
    pub fn get_or_load<E>(
        &self,
        id: &Id,
        weight: impl Fn(&V) -> usize,
        load: impl FnOnce() -> Result<V, E>,
    ) -> Result<Arc<V>, E> {
        let gate = {
            let mut shard = self.shard(id);
            if let Some((v, _)) = shard.map.get(id) {
                return Ok(v.clone());
            }
            shard.loading.entry(*id).or_default().clone()
        };
        let _loading = gate.lock().unwrap_or_else(|e| e.into_inner());
        // Another reader may have loaded it while this one waited.
        if let Some((v, _)) = self.shard(id).map.get(id) {
            return Ok(v.clone());
        }
        let result = load().map(Arc::new);
        let mut shard = self.shard(id);
        shard.loading.remove(id);
        let value = result?;
        let w = weight(&value);
        if let Some((_, old)) = shard.map.put(*id, (value.clone(), w)) {
            shard.bytes -= old;
        }
        shard.bytes += w;
        while shard.bytes > self.budget && shard.map.len() > 1 {
            match shard.map.pop_lru() {
                Some((_, (_, old))) => shard.bytes -= old,
                None => break,
            }
        }
        Ok(value)
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
}
