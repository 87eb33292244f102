//! Repository locks: a shared lock while adding or reading data, an
//! exclusive one while removing it. A lock is refreshed while it is held
//! and removed when its guard drops (or the process is interrupted); a lock
//! left by a dead process goes stale and stops counting.
//!
//! A lock's age is judged by this client's clock, not by the time written
//! in it (any key can write a lock, dated as it likes): the cache keeps when
//! each lock was first seen, and a lock is stale once
//! `now - min(refreshed, first seen)` exceeds [`STALE_AFTER_SECS`]. Without
//! a cache directory "first seen" is always now, so only a lock's own,
//! older, time can make it stale. A lock of this host whose process is gone
//! is removed by the next run here.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use anyhow::{Result, bail};
use rayon::prelude::*;

use crate::backend::{Backend, Kind};
use crate::cache::{Cache, Record};
use crate::crypto::subkeys::Subkeys;
use crate::crypto::{SecretKey, aead};
use crate::format::lock::{self, Lock, REFRESH_SECS, STALE_AFTER_SECS};
use crate::format::{FORMAT_VERSION, Id, Timestamp, aad, decode, encode};

use super::Repository;

/// The cache entry: lock object name → when this client first saw it.
pub const FIRST_SEEN: &str = "locks-first-seen";

/// A held lock; dropping it removes it from the repository.
pub struct LockGuard {
    backend: Arc<dyn Backend>,
    current: Arc<Mutex<String>>,
    /// Dropping it wakes the refresher and ends it.
    stop: Option<mpsc::Sender<()>>,
    refresher: Option<std::thread::JoinHandle<()>>,
    interrupt_token: u64,
}

/// A lock found in the repository, as this client judges it.
pub struct Found {
    pub name: String,
    pub lock: Lock,
    /// Not refreshed for [`STALE_AFTER_SECS`] by this client's clock.
    pub stale: bool,
    /// A lock of this host whose process no longer exists.
    pub orphaned: bool,
}

fn seal(key: &SecretKey, repo_id: &Id, l: &Lock) -> Result<(String, Vec<u8>)> {
    let sealed = aead::seal_salted(key, &aad(lock::SEAL_KIND, repo_id, &[]), &encode(l))?;
    Ok((Id::of_bytes(&sealed).to_hex(), sealed))
}

/// Reads a lock; `None` if it vanished, is damaged, or is not ours to open.
pub fn read(backend: &dyn Backend, key: &SecretKey, repo_id: &Id, name: &str) -> Option<Lock> {
    let bytes = crate::backend::read_bounded(backend, Kind::Locks, name).ok()?;
    let plain = aead::open_salted(key, &aad(lock::SEAL_KIND, repo_id, &[]), &bytes).ok()?;
    decode(&plain, "a lock").ok()
}

/// Writes a lock as it is (for tests that need one from another process).
pub fn write(repo: &Repository, key: &SecretKey, l: &Lock) -> Result<String> {
    let (name, sealed) = seal(key, &repo.id(), l)?;
    repo.backend.write(Kind::Locks, &name, &sealed)?;
    Ok(name)
}

/// The first-seen record, as the cache holds it (empty if missing or not
/// authentic: then every lock counts as first seen now).
pub fn first_seen(cache: &Cache, subkeys: &Subkeys, repo_id: &Id) -> BTreeMap<String, i64> {
    match cache.get_authenticated(repo_id, FIRST_SEEN, &subkeys.cache) {
        Record::Found(b) => decode(&b, "the record of locks seen").unwrap_or_default(),
        Record::Missing | Record::Damaged => BTreeMap::new(),
    }
}

/// Stores the first-seen record.
pub fn save_first_seen(cache: &Cache, subkeys: &Subkeys, repo_id: &Id, seen: &BTreeMap<String, i64>) {
    cache.put_authenticated(repo_id, FIRST_SEEN, &subkeys.cache, &encode(seen));
}

/// Every readable lock but `except`, judged stale or not by this client's
/// clock; records when each was first seen and forgets locks now gone.
pub fn survey(
    repo: &Repository,
    subkeys: &Subkeys,
    cache: &Cache,
    except: Option<&str>,
) -> Result<Vec<Found>> {
    let now = Timestamp::now().sec;
    let repo_id = repo.id();
    let names: Vec<String> = repo
        .backend
        .list(Kind::Locks)?
        .into_iter()
        .map(|l| l.name)
        .filter(|n| Some(n.as_str()) != except)
        .collect();
    let old = first_seen(cache, subkeys, &repo_id);
    let seen: BTreeMap<String, i64> = names
        .iter()
        .map(|n| (n.clone(), old.get(n).copied().unwrap_or(now).min(now)))
        .collect();
    if seen != old {
        save_first_seen(cache, subkeys, &repo_id, &seen);
    }
    let host = crate::hostname();
    let me = std::process::id();
    Ok(names
        .par_iter()
        .filter_map(|n| {
            let l = read(repo.backend.as_ref(), &subkeys.index, &repo_id, n)?;
            let since = l.refreshed.sec.min(seen.get(n).copied().unwrap_or(now));
            // Without a cache directory nothing remembers when a lock was
            // first seen: one dated further ahead than a lock ever lives
            // would block for good, so it counts as stale at once.
            let from_the_future =
                !cache.is_usable() && l.refreshed.sec > now.saturating_add(STALE_AFTER_SECS);
            Some(Found {
                name: n.clone(),
                stale: from_the_future || now.saturating_sub(since) > STALE_AFTER_SECS,
                orphaned: l.host == host && l.pid != me && crate::process_is_gone(l.pid),
                lock: l,
            })
        })
        .collect())
}

fn describe(f: &Found) -> String {
    let l = &f.lock;
    format!(
        "{} lock of host {} (pid {}, {}) taken at {}, last refreshed at {} (lock object {})",
        if l.exclusive { "an exclusive" } else { "a" },
        l.host,
        l.pid,
        l.purpose,
        crate::commands::format_time(&l.created, false),
        crate::commands::format_time(&l.refreshed, false),
        f.name,
    )
}

fn is_refused(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|c| c.downcast_ref::<crate::backend::Refused>().is_some())
}

/// Whether a lock's purpose only reads the repository.
fn purpose_only_reads(purpose: &str) -> bool {
    matches!(
        purpose,
        "restore" | "check" | "mount" | "copy" | "diff" | "find" | "stats"
    )
}

/// Takes a lock, or says who holds the one in the way.
pub fn acquire(
    repo: &Repository,
    subkeys: &Subkeys,
    cache: &Cache,
    exclusive: bool,
    purpose: &str,
) -> Result<LockGuard> {
    let now = Timestamp::now();
    let host = crate::hostname();
    let mine = Lock {
        format: FORMAT_VERSION,
        host: host.clone(),
        pid: std::process::id(),
        exclusive,
        purpose: purpose.to_string(),
        created: now,
        refreshed: now,
    };
    let key = &subkeys.index;
    let name = match write(repo, key, &mine) {
        Ok(name) => name,
        // A read-only credential (a strongroom server's reader role) may
        // not write a lock: reading goes on without one.
        Err(e) if !exclusive && purpose_only_reads(purpose) && is_refused(&e) => {
            // Still kept out by work that removes data.
            if let Some(b) = survey(repo, subkeys, cache, None)?
                .iter()
                .find(|f| !f.stale && f.lock.exclusive)
            {
                bail!("the repository is in use: {}", describe(b));
            }
            crate::warn(&format!(
                "the storage does not let this credential write a lock ({e:#}); reading without one"
            ));
            return Ok(LockGuard {
                backend: repo.backend.clone(),
                current: Arc::new(Mutex::new(String::new())),
                stop: None,
                refresher: None,
                interrupt_token: u64::MAX,
            });
        }
        Err(e) => return Err(e),
    };
    let mut blocking = None;
    for f in survey(repo, subkeys, cache, Some(&name))? {
        if f.orphaned {
            let _ = repo.backend.delete(Kind::Locks, &f.name);
        } else if !f.stale && (exclusive || f.lock.exclusive) && blocking.is_none() {
            blocking = Some(f);
        }
    }
    if let Some(b) = blocking {
        let _ = repo.backend.delete(Kind::Locks, &name);
        bail!(
            "the repository is in use: {}; a lock goes stale {} minutes after its last refresh or after this client \
             first saw it, whichever is earlier, and then `strongroom unlock` removes it \
             (`strongroom unlock --remove-all` removes every lock, stale or not)",
            describe(&b),
            STALE_AFTER_SECS / 60
        );
    }
    repo.backend.remove_stale_temporaries(&host);
    let current = Arc::new(Mutex::new(name));
    let interrupt_token = crate::interrupt::hold(repo.backend.clone(), current.clone());
    let (stop, stopped) = mpsc::channel::<()>();
    let refresher = {
        let (backend, current, key) = (repo.backend.clone(), current.clone(), key.clone());
        let repo_id = repo.id();
        std::thread::spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(Duration::from_secs(REFRESH_SECS))
            {
                let l = Lock {
                    refreshed: Timestamp::now(),
                    ..mine.clone()
                };
                // Held across the write, so that an interruption (which
                // takes it to remove the lock) never races a new one in.
                let mut cur = current.lock().unwrap_or_else(|e| e.into_inner());
                if let Ok((new, sealed)) = seal(&key, &repo_id, &l)
                    && backend.write(Kind::Locks, &new, &sealed).is_ok()
                {
                    let _ = backend.delete(Kind::Locks, &cur);
                    *cur = new;
                }
            }
        })
    };
    Ok(LockGuard {
        backend: repo.backend.clone(),
        current,
        stop: Some(stop),
        refresher: Some(refresher),
        interrupt_token,
    })
}

/// Removes the locks this client judges stale (or whose process on this
/// host is gone); returns how many.
pub fn remove_stale(repo: &Repository, subkeys: &Subkeys, cache: &Cache) -> Result<usize> {
    let mut removed = 0;
    for f in survey(repo, subkeys, cache, None)? {
        if f.stale || f.orphaned {
            repo.backend.delete(Kind::Locks, &f.name)?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Removes every lock object, readable or not; returns how many.
pub fn remove_all(repo: &Repository) -> Result<usize> {
    let all = repo.backend.list(Kind::Locks)?;
    for l in &all {
        repo.backend.delete(Kind::Locks, &l.name)?;
    }
    Ok(all.len())
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.refresher.take() {
            let _ = t.join();
        }
        let name = self.current.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if name.is_empty() {
            return;
        }
        if let Err(e) = self.backend.delete(Kind::Locks, &name) {
            crate::warn(&format!("removing lock {name} failed: {e:#}"));
        }
        crate::interrupt::release(self.interrupt_token);
    }
}
