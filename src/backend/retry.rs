//! Retries of a network backend's requests: a bounded number of attempts,
//! exponential backoff with jitter, and only for failures marked
//! [`Transient`](super::Transient) (a missing object or a refused
//! credential is an answer, not a failure). Each attempt has its own
//! deadline in the backend's client, so a request never hangs.

use std::time::Duration;

use anyhow::{Result, anyhow};

use super::{Backend, Kind, Listed, is_transient};

/// Attempts per request, the first included.
const ATTEMPTS: u32 = 8;
/// The wait before the second attempt; doubled after each failure.
const FIRST_WAIT: Duration = Duration::from_millis(250);
/// The longest wait between two attempts.
const MAX_WAIT: Duration = Duration::from_secs(8);
/// No attempt starts this long after the first did (an attempt has its
/// own deadline, 10 minutes at most: a store that answers a byte a minute
/// is not given eight of them).
const GIVE_UP_AFTER: Duration = Duration::from_secs(15 * 60);
/// The same for the mount ([`super::set_interactive`]): a read fails with
/// EIO rather than leave a program blocked.
const GIVE_UP_AFTER_INTERACTIVE: Duration = Duration::from_secs(20);

/// After a request gave up, how long others make one attempt each
/// instead of waiting through their own backoff (unless one succeeds).
const FAIL_FAST_FOR: Duration = Duration::from_secs(30);

pub struct Retry<B> {
    inner: B,
    first_wait: Duration,
    give_up_after: Duration,
    /// When a request last gave up: the storage is down, so a read that
    /// follows (the mount's, after its read-ahead failed) fails at once
    /// rather than wait as long again.
    gave_up: std::sync::Mutex<Option<std::time::Instant>>,
}

impl<B: Backend> Retry<B> {
    pub fn new(inner: B) -> Retry<B> {
        Retry {
            inner,
            first_wait: FIRST_WAIT,
            give_up_after: if super::is_interactive() {
                GIVE_UP_AFTER_INTERACTIVE
            } else {
                GIVE_UP_AFTER
            },
            gave_up: std::sync::Mutex::new(None),
        }
    }

    /// Runs `op` until it succeeds, fails for good, or has failed
    /// [`ATTEMPTS`] times.
    fn run<T>(&self, mut op: impl FnMut(&B) -> Result<T>) -> Result<T> {
        let mut wait = self.first_wait;
        let mut attempt = 1;
        let started = std::time::Instant::now();
        let gave_up = || self.gave_up.lock().unwrap_or_else(|e| e.into_inner());
        let attempts = match *gave_up() {
            Some(at) if at.elapsed() < FAIL_FAST_FOR => 1,
            _ => ATTEMPTS,
        };
        loop {
            let result = op(&self.inner);
            match &result {
                Ok(_) => *gave_up() = None,
                Err(e)
                    if is_transient(e)
                        && (attempt >= attempts || started.elapsed() >= self.give_up_after) =>
                {
                    *gave_up() = Some(std::time::Instant::now());
                }
                Err(_) => {}
            }
            match result {
                Err(e)
                    if is_transient(&e) && attempt < attempts && started.elapsed() < self.give_up_after =>
                {
                    if crate::verbosity() >= 1 {
                        crate::warn(&format!("{e:#}; trying again ({attempt} of {ATTEMPTS} failed)"));
                    }
                    std::thread::sleep(jitter(wait));
                    wait = (wait * 2).min(MAX_WAIT);
                    attempt += 1;
                }
                Err(e) if is_transient(&e) => {
                    return Err(anyhow!("{e:#} (gave up after {attempt} attempts)"));
                }
                r => return r,
            }
        }
    }
}

/// Between half of `wait` and all of it, at random: clients that failed
/// together do not all come back at once.
fn jitter(wait: Duration) -> Duration {
    let mut b = [0u8; 4];
    let r = if getrandom::fill(&mut b).is_ok() {
        u32::from_le_bytes(b)
    } else {
        u32::MAX / 2
    };
    wait / 2 + (wait / 2).mul_f64(r as f64 / u32::MAX as f64)
}

impl<B: Backend> Backend for Retry<B> {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn is_local(&self) -> bool {
        self.inner.is_local()
    }

    fn append_only(&self) -> bool {
        self.inner.append_only()
    }

    fn create(&self) -> Result<()> {
        self.run(|b| b.create())
    }

    fn read(&self, kind: Kind, name: &str) -> Result<Vec<u8>> {
        self.run(|b| b.read(kind, name))
    }

    fn read_range(&self, kind: Kind, name: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        self.run(|b| b.read_range(kind, name, offset, length))
    }

    fn write(&self, kind: Kind, name: &str, data: &[u8]) -> Result<()> {
        self.run(|b| b.write(kind, name, data))
    }

    fn write_new(&self, kind: Kind, name: &str, data: &[u8]) -> Result<bool> {
        self.run(|b| b.write_new(kind, name, data))
    }

    fn list(&self, kind: Kind) -> Result<Vec<Listed>> {
        self.run(|b| b.list(kind))
    }

    fn delete(&self, kind: Kind, name: &str) -> Result<()> {
        self.run(|b| b.delete(kind, name))
    }

    fn stat(&self, kind: Kind, name: &str) -> Result<u64> {
        self.run(|b| b.stat(kind, name))
    }

    fn remove_stale_temporaries(&self, host: &str) {
        self.inner.remove_stale_temporaries(host)
    }

    fn remove_own_temporaries(&self) {
        self.inner.remove_own_temporaries()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::backend::{NotFound, Refused, Transient, mem::Mem};

    /// Fails its first `failures` reads with `error`, then reads from memory.
    struct Flaky {
        mem: Mem,
        failures: Mutex<u32>,
        error: fn() -> anyhow::Error,
        calls: Mutex<u32>,
    }

    impl Backend for Flaky {
        fn location(&self) -> String {
            "flaky".into()
        }
        fn create(&self) -> Result<()> {
            self.mem.create()
        }
        fn read(&self, kind: Kind, name: &str) -> Result<Vec<u8>> {
            *self.calls.lock().unwrap() += 1;
            let mut f = self.failures.lock().unwrap();
            if *f > 0 {
                *f -= 1;
                return Err((self.error)());
            }
            self.mem.read(kind, name)
        }
        fn read_range(&self, kind: Kind, name: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
            self.mem.read_range(kind, name, offset, length)
        }
        fn write(&self, kind: Kind, name: &str, data: &[u8]) -> Result<()> {
            self.mem.write(kind, name, data)
        }
        fn list(&self, kind: Kind) -> Result<Vec<Listed>> {
            self.mem.list(kind)
        }
        fn delete(&self, kind: Kind, name: &str) -> Result<()> {
            self.mem.delete(kind, name)
        }
        fn stat(&self, kind: Kind, name: &str) -> Result<u64> {
            self.mem.stat(kind, name)
        }
    }

    fn flaky(failures: u32, error: fn() -> anyhow::Error) -> Retry<Flaky> {
        let mem = Mem::default();
        mem.create().unwrap();
        mem.write(Kind::Config, "config", b"c").unwrap();
        let mut r = Retry::new(Flaky {
            mem,
            failures: Mutex::new(failures),
            error,
            calls: Mutex::new(0),
        });
        r.first_wait = Duration::from_millis(1);
        r
    }

    #[test]
    fn transient_failures_are_retried_until_one_succeeds() {
        let r = flaky(ATTEMPTS - 1, || anyhow::Error::new(Transient("reset".into())));
        assert_eq!(r.read(Kind::Config, "config").unwrap(), b"c");
        assert_eq!(*r.inner.calls.lock().unwrap(), ATTEMPTS);
    }

    #[test]
    fn retries_are_bounded_and_say_so() {
        let r = flaky(ATTEMPTS + 5, || anyhow::Error::new(Transient("reset".into())));
        let e = r.read(Kind::Config, "config").unwrap_err();
        assert!(format!("{e:#}").contains("gave up after 8 attempts"), "{e:#}");
        assert_eq!(*r.inner.calls.lock().unwrap(), ATTEMPTS);
    }

    #[test]
    fn after_one_request_gave_up_the_next_tries_once_until_one_succeeds() {
        let r = flaky(ATTEMPTS + 2, || anyhow::Error::new(Transient("refused".into())));
        assert!(r.read(Kind::Config, "config").is_err());
        assert_eq!(*r.inner.calls.lock().unwrap(), ATTEMPTS);
        let e = r.read(Kind::Config, "config").unwrap_err();
        assert!(format!("{e:#}").contains("gave up after 1 attempts"), "{e:#}");
        assert_eq!(*r.inner.calls.lock().unwrap(), ATTEMPTS + 1);
        // The storage is back: the one attempt succeeds, and the next
        // failure is retried in full again.
        r.read(Kind::Config, "config").unwrap_err();
        assert_eq!(r.read(Kind::Config, "config").unwrap(), b"c");
        assert!(r.gave_up.lock().unwrap().is_none());
    }

    #[test]
    fn refusals_and_missing_objects_are_not_retried() {
        let r = flaky(3, || anyhow::Error::new(Refused("HTTP 403".into())));
        assert!(r.read(Kind::Config, "config").is_err());
        assert_eq!(*r.inner.calls.lock().unwrap(), 1);
        let r = flaky(3, || anyhow::Error::new(NotFound("config".into())));
        assert!(crate::backend::is_not_found(
            &r.read(Kind::Config, "config").unwrap_err()
        ));
        assert_eq!(*r.inner.calls.lock().unwrap(), 1);
    }

    #[test]
    fn jitter_stays_between_half_and_all_of_the_wait() {
        for _ in 0..100 {
            let j = jitter(Duration::from_millis(800));
            assert!(
                j >= Duration::from_millis(400) && j <= Duration::from_millis(800),
                "{j:?}"
            );
        }
    }
}
