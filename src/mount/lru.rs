//! A bounded in-memory cache of decoded objects (decrypted blobs, trees)
//! by id, weighed in bytes and split into shards so that readers of
//! different blobs do not wait on one lock. Only successes are kept: a
//! failed read is tried again next time.

use std::sync::{Arc, Mutex};

use crate::format::Id;

const SHARDS: usize = 16;

struct Shard<V> {
    map: ::lru::LruCache<Id, (Arc<V>, usize)>,
    bytes: usize,
}

pub struct Lru<V> {
    shards: Vec<Mutex<Shard<V>>>,
    budget: usize,
}

impl<V> Lru<V> {
    /// A cache of at most `bytes` (split evenly over the shards).
    pub fn new(bytes: usize) -> Lru<V> {
        Lru {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        map: ::lru::LruCache::unbounded(),
                        bytes: 0,
                    })
                })
                .collect(),
            budget: bytes / SHARDS,
        }
    }

    fn shard(&self, id: &Id) -> &Mutex<Shard<V>> {
        &self.shards[id.0[0] as usize % SHARDS]
    }

    /// The cached value, or `load`'s, kept if it succeeds. The lock is not
    /// held while loading.
    pub fn get_or_load<E>(
        &self,
        id: &Id,
        weight: impl Fn(&V) -> usize,
        load: impl FnOnce() -> Result<V, E>,
    ) -> Result<Arc<V>, E> {
        if let Some((v, _)) = self
            .shard(id)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map
            .get(id)
        {
            return Ok(v.clone());
        }
        let value = Arc::new(load()?);
        let w = weight(&value);
        if w <= self.budget {
            let mut shard = self.shard(id).lock().unwrap_or_else(|e| e.into_inner());
            if let Some((_, old)) = shard.map.put(*id, (value.clone(), w)) {
                shard.bytes -= old;
            }
            shard.bytes += w;
            while shard.bytes > self.budget {
                match shard.map.pop_lru() {
                    Some((_, (_, old))) => shard.bytes -= old,
                    None => break,
                }
            }
        }
        Ok(value)
    }
}
