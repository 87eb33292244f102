//! The on-disk cache of sealed blobs: the bytes of a blob exactly as read
//! from its pack (still encrypted: never plaintext), one file per blob and
//! pack in the repository's `blobs/` directory of the cache directory,
//! bounded in bytes with the least recently used evicted. It outlives the
//! process, so a remount reads what an earlier mount fetched without
//! touching the repository.
//!
//! Entries are written by one background thread, so that keeping a blob
//! never slows the read that fetched it; when that thread falls behind,
//! blobs are not kept (the next read of them keeps them).
//!
//! The directory is treated as hostile (another process of this user, or
//! damage): names are ones this code makes (hex blob id, `-`, hex pack
//! id); anything else found there is removed; files are opened relative
//! to the directory's descriptor without following symlinks; an entry of
//! the wrong length is removed here, and one that does not open under its
//! run's keys is removed by the reader, which then reads the pack.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, UTIME_NOW};

use crate::cache::{Cache, temporary_name};
use crate::format::Id;

use super::index::Location;

/// The directory of the repository's sealed blobs inside the cache.
pub const DIR: &str = "blobs";

/// One entry: a blob as stored in one pack.
type Key = (Id, Id);

struct State {
    /// Every entry with its size in bytes, least recently used first.
    lru: ::lru::LruCache<Key, u64>,
    bytes: u64,
}

/// Bytes of blobs waiting for the writing thread; more are not kept.
const MAX_PENDING: u64 = 32 << 20;

struct Inner {
    dir: OwnedFd,
    bound: u64,
    state: Mutex<State>,
    /// Bytes handed to the writing thread and not yet written.
    pending: AtomicU64,
}

enum Job {
    Keep(Key, Vec<u8>),
    /// Answered once every job sent before it is done.
    Flush(Sender<()>),
}

pub struct BlobCache {
    inner: Arc<Inner>,
    queue: Sender<Job>,
}

fn key(loc: &Location) -> Key {
    (loc.entry.id, loc.pack)
}

fn name((blob, pack): &Key) -> String {
    format!("{}-{}", blob.to_hex(), pack.to_hex())
}

/// The entry a file name stands for, if it is one this cache makes.
fn parse(name: &str) -> Option<Key> {
    let (blob, pack) = name.split_once('-')?;
    let lower = |s: &str| s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !lower(blob) || !lower(pack) {
        return None;
    }
    Some((Id::from_hex(blob)?, Id::from_hex(pack)?))
}

impl BlobCache {
    /// Opens the blob cache of repository `repo` in `cache`, bounded to
    /// `bound` bytes: scans its directory once (removing what is not an
    /// entry), orders the entries by their modification time (the last
    /// use) and evicts down to the bound. None if the cache directory is
    /// unusable.
    pub fn open(cache: &Cache, repo: &Id, bound: u64) -> Option<BlobCache> {
        let dir = cache.directory(repo, DIR)?;
        let mut found = Vec::new();
        for e in rustix::fs::Dir::read_from(&dir).ok()?.flatten() {
            let Ok(n) = e.file_name().to_str() else {
                continue;
            };
            if n == "." || n == ".." {
                continue;
            }
            let st = rustix::fs::statat(&dir, n, AtFlags::SYMLINK_NOFOLLOW).ok();
            match (parse(n), st) {
                (Some(k), Some(st))
                    if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
                        && (st.st_size as u64) <= bound =>
                {
                    found.push(((st.st_mtime, st.st_mtime_nsec), k, st.st_size as u64));
                }
                // Not ours: a leftover temporary file, a symlink, a stray
                // directory, a file larger than the whole cache. Removed,
                // never followed.
                _ => {
                    let _ = rustix::fs::unlinkat(&dir, n, AtFlags::empty());
                }
            }
        }
        found.sort();
        let mut state = State {
            lru: ::lru::LruCache::unbounded(),
            bytes: 0,
        };
        for (_, k, size) in found {
            state.lru.put(k, size);
            state.bytes = state.bytes.saturating_add(size);
        }
        let inner = Arc::new(Inner {
            dir,
            bound,
            state: Mutex::new(state),
            pending: AtomicU64::new(0),
        });
        let victims = inner.evict(&mut inner.lock());
        inner.unlink(victims);
        let (queue, jobs) = channel();
        let writer = inner.clone();
        std::thread::Builder::new()
            .name("blob-cache".into())
            .spawn(move || writer.run(jobs))
            .ok()?;
        Some(BlobCache { inner, queue })
    }

    /// The sealed bytes kept for the blob at `loc`, marked as just used;
    /// None if there are none or they are not a regular file of the
    /// length the index gives (then the entry is removed).
    pub fn get(&self, loc: &Location) -> Option<Vec<u8>> {
        self.inner.get(loc)
    }

    /// Has the sealed bytes of the blob at `loc` (read from its pack and
    /// found to open) kept, unless it is kept already, is larger than the
    /// whole cache, or the writing thread is behind.
    pub fn put(&self, loc: &Location, sealed: &[u8]) {
        let k = key(loc);
        let size = sealed.len() as u64;
        if size > self.inner.bound || self.inner.lock().lru.promote(&k) {
            return;
        }
        let pending = &self.inner.pending;
        if pending.fetch_add(size, Ordering::Relaxed) + size > MAX_PENDING
            || self.queue.send(Job::Keep(k, sealed.to_vec())).is_err()
        {
            pending.fetch_sub(size, Ordering::Relaxed);
        }
    }

    /// Waits until what was handed to [`BlobCache::put`] so far is on disk
    /// (or given up on).
    pub fn flush(&self) {
        let (done, wait) = channel();
        if self.queue.send(Job::Flush(done)).is_ok() {
            let _ = wait.recv();
        }
    }

    /// Removes the entry of the blob at `loc` (damaged, or not opening).
    pub fn remove(&self, loc: &Location) {
        self.inner.remove(&key(loc));
    }

    /// The entries and their total size, as accounted.
    pub fn usage(&self) -> (usize, u64) {
        let state = self.inner.lock();
        (state.lru.len(), state.bytes)
    }
}

impl Inner {
    /// The writing thread: until the cache is dropped.
    fn run(&self, jobs: Receiver<Job>) {
        for job in jobs {
            match job {
                Job::Keep(k, bytes) => {
                    self.store(k, &bytes);
                    self.pending.fetch_sub(bytes.len() as u64, Ordering::Relaxed);
                }
                Job::Flush(done) => {
                    let _ = done.send(());
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes entries out of the accounting, oldest first, until the total
    /// is within the bound; the caller unlinks them once the lock is gone.
    fn evict(&self, state: &mut State) -> Vec<Key> {
        let mut victims = Vec::new();
        while state.bytes > self.bound {
            let Some((k, size)) = state.lru.pop_lru() else {
                break;
            };
            state.bytes -= size;
            victims.push(k);
        }
        victims
    }

    fn unlink(&self, victims: Vec<Key>) {
        for k in victims {
            let _ = rustix::fs::unlinkat(&self.dir, name(&k).as_str(), AtFlags::empty());
        }
    }

    fn get(&self, loc: &Location) -> Option<Vec<u8>> {
        let k = key(loc);
        if !self.lock().lru.contains(&k) {
            return None;
        }
        let n = name(&k);
        let f = rustix::fs::openat(
            &self.dir,
            n.as_str(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()
        .map(File::from);
        let want = loc.entry.length as u64;
        let sealed = f.and_then(|mut f| {
            let meta = f.metadata().ok()?;
            if !meta.is_file() || meta.len() != want {
                return None;
            }
            let mut out = Vec::with_capacity(want as usize);
            // Never more than asked, should the file grow meanwhile.
            (&mut f).take(want + 1).read_to_end(&mut out).ok()?;
            // The modification time orders the entries at the next start.
            let now = Timespec {
                tv_sec: 0,
                tv_nsec: UTIME_NOW,
            };
            let _ = rustix::fs::futimens(
                &f,
                &Timestamps {
                    last_access: now,
                    last_modification: now,
                },
            );
            (out.len() as u64 == want).then_some(out)
        });
        match sealed {
            Some(bytes) => {
                self.lock().lru.promote(&k);
                Some(bytes)
            }
            None => {
                self.remove(&k);
                None
            }
        }
    }

    /// Writes an entry (to a temporary name, renamed into place) and
    /// evicts the least recently used beyond the bound. Failures are
    /// ignored: it is only a cache.
    fn store(&self, k: Key, sealed: &[u8]) {
        let size = sealed.len() as u64;
        let tmp = temporary_name();
        let Ok(fd) = rustix::fs::openat(
            &self.dir,
            tmp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::RUSR | Mode::WUSR,
        ) else {
            return;
        };
        let written = File::from(fd).write_all(sealed).is_ok();
        if !written || rustix::fs::renameat(&self.dir, tmp.as_str(), &self.dir, name(&k).as_str()).is_err() {
            let _ = rustix::fs::unlinkat(&self.dir, tmp.as_str(), AtFlags::empty());
            return;
        }
        let victims = {
            let mut state = self.lock();
            if let Some(old) = state.lru.put(k, size) {
                state.bytes -= old;
            }
            state.bytes += size;
            self.evict(&mut state)
        };
        self.unlink(victims);
    }

    fn remove(&self, k: &Key) {
        {
            let mut state = self.lock();
            if let Some(size) = state.lru.pop(k) {
                state.bytes -= size;
            }
        }
        self.unlink(vec![*k]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::index::BlobEntry;
    use crate::format::{BlobKind, RunId};

    fn loc(n: u8, length: u32) -> Location {
        Location {
            pack: Id([0xee; 32]),
            entry: BlobEntry {
                id: Id([n; 32]),
                kind: BlobKind::Data,
                run: RunId([0; 16]),
                offset: 0,
                length,
                raw_length: length,
            },
        }
    }

    #[test]
    fn only_names_it_makes_are_entries() {
        let k = key(&loc(0xab, 1));
        assert_eq!(parse(&name(&k)), Some(k));
        for bad in [
            name(&k).to_uppercase(),
            format!("{}-", "a".repeat(64)),
            format!("{}-{}", "a".repeat(63), "b".repeat(65)),
            format!("{}-{}-x", "a".repeat(64), "b".repeat(64)),
            ".tmp-1-2-3".to_string(),
        ] {
            assert_eq!(parse(&bad), None, "{bad}");
        }
    }

    #[test]
    fn the_least_recently_used_go_and_the_order_survives_a_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::open(Some(tmp.path()));
        let repo = Id([1; 32]);
        let c = BlobCache::open(&cache, &repo, 300).unwrap();
        c.put(&loc(1, 100), &[1; 100]);
        c.flush();
        c.put(&loc(2, 100), &[2; 100]);
        c.flush();
        std::thread::sleep(std::time::Duration::from_millis(20));
        c.put(&loc(3, 100), &[3; 100]);
        c.flush();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(c.get(&loc(1, 100)), Some(vec![1; 100]), "1 is now recent");
        c.put(&loc(4, 100), &[4; 100]);
        c.flush();
        assert_eq!(c.get(&loc(2, 100)), None, "2 was evicted");
        assert_eq!(c.usage(), (3, 300));
        // Too large to keep at all.
        c.put(&loc(5, 400), &[5; 400]);
        c.flush();
        assert_eq!(c.usage(), (3, 300));
        drop(c);
        // Reopened smaller: 3 is the oldest use (4 was written after 1 was
        // read).
        let c = BlobCache::open(&cache, &repo, 200).unwrap();
        assert_eq!(c.usage(), (2, 200));
        assert_eq!(c.get(&loc(3, 100)), None);
        assert_eq!(c.get(&loc(1, 100)), Some(vec![1; 100]));
        // The wrong length is not an entry.
        assert_eq!(c.get(&loc(4, 99)), None);
        assert_eq!(c.usage(), (1, 100));
    }
}
