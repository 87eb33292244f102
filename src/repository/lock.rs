//! Repository locks: a shared lock while adding or reading data, an
//! exclusive one while removing it. A lock is refreshed while it is held
//! and removed when its guard drops; a lock left by a dead process goes
//! stale and stops counting.

use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use anyhow::{Result, bail};
use rayon::prelude::*;

use crate::backend::{Backend, Kind};
use crate::crypto::{SecretKey, aead};
use crate::format::lock::{self, Lock, REFRESH_SECS, STALE_AFTER_SECS};
use crate::format::{FORMAT_VERSION, Id, Timestamp, aad, decode, encode};

use super::Repository;

/// A held lock; dropping it removes it from the repository.
pub struct LockGuard {
    backend: Arc<dyn Backend>,
    current: Arc<Mutex<String>>,
    /// Dropping it wakes the refresher and ends it.
    stop: Option<mpsc::Sender<()>>,
    refresher: Option<std::thread::JoinHandle<()>>,
}

fn seal(key: &SecretKey, repo_id: &Id, l: &Lock) -> Result<(String, Vec<u8>)> {
    let sealed = aead::seal_salted(key, &aad(lock::SEAL_KIND, repo_id, &[]), &encode(l))?;
    Ok((Id::of_bytes(&sealed).to_hex(), sealed))
}

/// Reads a lock; `None` if it vanished, is damaged, or is not ours to open.
pub fn read(backend: &dyn Backend, key: &SecretKey, repo_id: &Id, name: &str) -> Option<Lock> {
    let bytes = backend.read(Kind::Locks, name).ok()?;
    let plain = aead::open_salted(key, &aad(lock::SEAL_KIND, repo_id, &[]), &bytes).ok()?;
    decode(&plain, "a lock").ok()
}

/// Writes a lock as it is (for tests that need one from another process).
pub fn write(repo: &Repository, key: &SecretKey, l: &Lock) -> Result<String> {
    let (name, sealed) = seal(key, &repo.id(), l)?;
    repo.backend.write(Kind::Locks, &name, &sealed)?;
    Ok(name)
}

fn describe(l: &Lock) -> String {
    format!(
        "{} lock of host {} (pid {}, {}) taken at {}",
        if l.exclusive { "an exclusive" } else { "a" },
        l.host,
        l.pid,
        l.purpose,
        crate::commands::format_time(&l.created, false)
    )
}

/// Takes a lock, or says who holds the one in the way.
pub fn acquire(repo: &Repository, key: &SecretKey, exclusive: bool, purpose: &str) -> Result<LockGuard> {
    let now = Timestamp::now();
    let mine = Lock {
        format: FORMAT_VERSION,
        host: crate::commands::hostname(),
        pid: std::process::id(),
        exclusive,
        purpose: purpose.to_string(),
        created: now,
        refreshed: now,
    };
    let name = write(repo, key, &mine)?;
    let others = repo.backend.list(Kind::Locks)?;
    let repo_id = repo.id();
    let blocking: Vec<Lock> = others
        .par_iter()
        .filter(|l| l.name != name)
        .filter_map(|l| read(repo.backend.as_ref(), key, &repo_id, &l.name))
        .filter(|l| now.sec - l.refreshed.sec < STALE_AFTER_SECS)
        .filter(|l| exclusive || l.exclusive)
        .collect();
    if let Some(b) = blocking.first() {
        let _ = repo.backend.delete(Kind::Locks, &name);
        bail!("the repository is in use: {}", describe(b));
    }
    let current = Arc::new(Mutex::new(name));
    let (stop, stopped) = mpsc::channel::<()>();
    let refresher = {
        let (backend, current, key) = (repo.backend.clone(), current.clone(), key.clone());
        std::thread::spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(Duration::from_secs(REFRESH_SECS))
            {
                let l = Lock {
                    refreshed: Timestamp::now(),
                    ..mine.clone()
                };
                if let Ok((new, sealed)) = seal(&key, &repo_id, &l)
                    && backend.write(Kind::Locks, &new, &sealed).is_ok()
                {
                    let mut cur = current.lock().unwrap_or_else(|e| e.into_inner());
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
    })
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.refresher.take() {
            let _ = t.join();
        }
        let name = self.current.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Err(e) = self.backend.delete(Kind::Locks, &name) {
            crate::warn(&format!("removing lock {name} failed: {e:#}"));
        }
    }
}
