//! The strongroom server: repositories for accounts over HTTPS, and
//! nothing else.
//!
//! TLS only (rustls with ring: TLS 1.3 and 1.2, ECDHE key exchange and
//! AEAD suites only, so every session is forward secret), HTTP/1.1 on
//! hyper, storage calls on tokio's blocking pool. Instances keep no state
//! of their own beyond caches: accounts, the session key and lock owners
//! live in the store, so several instances on one bucket serve the same
//! repositories and honour each other's sessions.

pub mod accounts;
mod api;
mod login;
pub mod store;
mod watch;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use zeroize::Zeroizing;

use accounts::Account;
use store::Store;

pub use api::{HSTS, REASON, valid_object_name};

/// The most connections served at once; more wait in the kernel's queue.
const MAX_CONNECTIONS: usize = 1024;
/// The most connections from one address at once; more are closed.
const MAX_PER_ADDRESS: usize = 256;
/// A connection that moves no byte either way for this long is closed
/// (a client that stops reading its answer holds nothing for long).
const STALLED: Duration = Duration::from_secs(120);
/// Request and response bodies held in memory at once, in MiB.
const MEMORY_MIB: u32 = 1024;
/// Logins whose key derivation runs at once.
const KDF_AT_ONCE: usize = 2;
/// How long an account read from the store is trusted.
const ACCOUNT_CACHE: Duration = Duration::from_secs(5);
/// How long a TLS handshake may take.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// Failed logins, each slowing the next: per account and address (from
/// the first failure), per address (from the fourth) and per account from
/// anywhere (from the eleventh, so that nobody can keep an account shut
/// out with a few tries of their own). Once a key is failing, its tries go
/// one at a time, so parallel guesses do not slip past a wait; before
/// that, logins in parallel are only bounded by the key-derivation queue.
#[derive(Default)]
pub struct Throttle {
    state: Mutex<HashMap<String, Tries>>,
}

#[derive(Default)]
struct Tries {
    failures: u32,
    last: Option<Instant>,
    in_flight: u32,
}

/// A login attempt under way; ends with the value.
pub struct Attempt<'a> {
    throttle: &'a Throttle,
    keys: Vec<(String, u32)>,
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        let mut map = self.throttle.state.lock().unwrap_or_else(|e| e.into_inner());
        for (k, _) in &self.keys {
            if let Some(t) = map.get_mut(k) {
                t.in_flight = t.in_flight.saturating_sub(1);
                if t.in_flight == 0 && t.failures == 0 {
                    map.remove(k);
                }
            }
        }
    }
}

impl Throttle {
    /// The keys of a login of `account` from `peer`, each with the
    /// failures it forgives.
    pub fn keys(account: &str, peer: std::net::IpAddr) -> Vec<(String, u32)> {
        vec![
            (format!("{account} from {peer}"), 0),
            (format!("from {peer}"), 3),
            (account.to_string(), 10),
        ]
    }

    /// After n failures beyond those forgiven, the next try waits
    /// 2^(n-1) seconds, at most a minute.
    fn delay(failures: u32, forgiven: u32) -> Duration {
        match failures.saturating_sub(forgiven) {
            0 => Duration::ZERO,
            n => Duration::from_secs(1u64 << (n - 1).min(6)).min(Duration::from_secs(60)),
        }
    }

    /// Starts an attempt, or says how long to wait first.
    pub fn begin(&self, keys: &[(String, u32)]) -> Result<Attempt<'_>, Duration> {
        let mut map = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > 100_000 {
            let horizon = Duration::from_secs(15 * 60);
            map.retain(|_, t| t.in_flight > 0 || t.last.is_some_and(|l| l.elapsed() < horizon));
        }
        for (k, forgiven) in keys {
            if let Some(t) = map.get(k) {
                if t.failures <= *forgiven {
                    // Logins in parallel are what clients of one account
                    // do (hosts behind one address, a mount's threads).
                    continue;
                }
                let until = t.last.map(|l| l + Throttle::delay(t.failures, *forgiven));
                if let Some(wait) = until.and_then(|u| u.checked_duration_since(Instant::now())) {
                    return Err(wait);
                }
                // Once failing, one try at a time: guesses in parallel
                // wait for the one before to be judged.
                if t.in_flight > 0 {
                    return Err(Duration::from_secs(1));
                }
            }
        }
        for (k, _) in keys {
            map.entry(k.clone()).or_default().in_flight += 1;
        }
        Ok(Attempt {
            throttle: self,
            keys: keys.to_vec(),
        })
    }

    pub fn failed(&self, keys: &[(String, u32)]) {
        let mut map = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for (k, _) in keys {
            let t = map.entry(k.clone()).or_default();
            t.failures = t.failures.saturating_add(1);
            t.last = Some(Instant::now());
        }
    }

    /// Forgets the failures of the account from this address.
    pub fn succeeded(&self, keys: &[(String, u32)]) {
        let mut map = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = map.get_mut(&keys[0].0) {
            t.failures = 0;
            t.last = None;
        }
    }
}

/// A bounded queue: at most `limit` inside at once.
#[derive(Default)]
pub struct Queue(std::sync::atomic::AtomicUsize);

pub struct InQueue<'a>(&'a Queue);

impl Queue {
    pub fn try_enter(&self, limit: usize) -> Option<InQueue<'_>> {
        use std::sync::atomic::Ordering;
        if self.0.fetch_add(1, Ordering::AcqRel) >= limit {
            self.0.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(InQueue(self))
    }
}

impl Drop for InQueue<'_> {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// What every request handler shares.
pub struct Shared {
    store: Store,
    session_key: Zeroizing<Vec<u8>>,
    throttle: Throttle,
    kdf: Semaphore,
    kdf_queue: Queue,
    memory: Arc<Semaphore>,
    accounts: Mutex<HashMap<String, (Instant, Option<Account>)>>,
    errors: std::sync::atomic::AtomicU64,
}

impl Shared {
    fn count_error(&self) {
        self.errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Holds `bytes` of the memory budget until dropped.
    async fn memory(&self, bytes: u64) -> Result<OwnedSemaphorePermit, tokio::sync::AcquireError> {
        let mib = bytes.div_ceil(1 << 20).clamp(1, MEMORY_MIB as u64) as u32;
        self.memory.clone().acquire_many_owned(mib).await
    }

    /// An account, from a cache of a few seconds.
    async fn account(self: &Arc<Self>, name: &str) -> Result<Option<Account>> {
        if let Some((at, a)) = self.accounts.lock().unwrap_or_else(|e| e.into_inner()).get(name)
            && at.elapsed() < ACCOUNT_CACHE
        {
            return Ok(a.clone());
        }
        let (s, n) = (self.clone(), name.to_string());
        let a = tokio::task::spawn_blocking(move || s.store.accounts.get(&n))
            .await
            .map_err(|e| anyhow!("reading account {name}: {e}"))??;
        let mut cache = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(name.to_string(), (Instant::now(), a.clone()));
        Ok(a)
    }

    fn lock_owner(&self, repo: &str, lock: &str) -> Result<Option<String>> {
        self.store.accounts.lock_owner(repo, lock)
    }

    fn set_lock_owner(&self, repo: &str, lock: &str, account: &str) -> Result<()> {
        self.store.accounts.set_lock_owner(repo, lock, account)
    }

    fn clear_lock_owner(&self, repo: &str, lock: &str) -> Result<()> {
        self.store.accounts.clear_lock_owner(repo, lock)
    }
}

fn tls_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<_, _>>())
        .map_err(|e| anyhow!("reading certificates from {}: {e}", cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{} holds no certificate", cert.display());
    }
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| anyhow!("reading the key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| anyhow!("the certificate and key do not go together: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Serves until SIGINT or SIGTERM.
pub fn serve(listen: &str, cert: &Path, key: &Path, store: Store) -> Result<()> {
    // Bodies of up to a pack each pass through many threads: a few malloc
    // arenas keep freed ones from piling up per thread.
    // SAFETY: mallopt only sets an allocator parameter.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    let tls = Arc::new(tls_config(cert, key)?);
    store.accounts.prepare()?;
    let session_key = store.accounts.session_key()?;
    let where_ = store.describe();
    let shared = Arc::new(Shared {
        store,
        session_key,
        throttle: Throttle::default(),
        kdf: Semaphore::new(KDF_AT_ONCE),
        kdf_queue: Queue::default(),
        memory: Arc::new(Semaphore::new(MEMORY_MIB as usize)),
        accounts: Mutex::new(HashMap::new()),
        errors: Default::default(),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(
            std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .clamp(2, 8),
        )
        .max_blocking_threads(64)
        .enable_all()
        .build()
        .context("starting the server's threads")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        let addr = listener.local_addr()?;
        println!("strongroom server: listening on https://{addr}, storing in {where_}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        accept(listener, tokio_rustls::TlsAcceptor::from(tls), shared).await
    })
}

async fn accept(
    listener: tokio::net::TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    shared: Arc<Shared>,
) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let per_address = Arc::new(watch::PerAddress::new(MAX_PER_ADDRESS));
    loop {
        let permit = tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            p = connections.clone().acquire_owned() => p?,
        };
        let (tcp, peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors, usually: wait a little.
                    eprintln!("strongroom server: accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(from_peer) = per_address.enter(peer.ip()) else {
            drop(tcp);
            continue;
        };
        let (tls, shared) = (tls.clone(), shared.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let _from_peer = from_peer;
            let _ = tcp.set_nodelay(true);
            let Ok(Ok(stream)) = tokio::time::timeout(HANDSHAKE, tls.accept(tcp)).await else {
                return;
            };
            let (io, progress) = watch::Watched::new(stream);
            let service = hyper::service::service_fn(move |req| api::handle(shared.clone(), peer.ip(), req));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(60))
                .max_buf_size(64 << 10)
                .serve_connection(TokioIo::new(io), service);
            tokio::select! {
                _ = conn => {}
                _ = progress.stalled(STALLED) => {}
            }
        });
    }
    eprintln!("strongroom server: stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_in_parallel_pass_until_one_fails_then_wait_their_turn() {
        let t = Throttle::default();
        let keys = Throttle::keys("host", "127.0.0.1".parse().unwrap());
        let a = t.begin(&keys).unwrap();
        let b = t.begin(&keys).unwrap();
        drop((a, b));
        let a = t.begin(&keys).unwrap();
        t.failed(&keys);
        drop(a);
        // One failure of this account from this address: a second wait.
        let wait = t.begin(&keys).err().expect("a wait");
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        // Another address is not slowed by it.
        let elsewhere = Throttle::keys("host", "192.0.2.1".parse().unwrap());
        assert!(t.begin(&elsewhere).is_ok());
        assert_eq!(Throttle::delay(1, 0), Duration::from_secs(1));
        assert_eq!(Throttle::delay(4, 3), Duration::from_secs(1));
        assert_eq!(Throttle::delay(10, 0), Duration::from_secs(60));
        assert_eq!(Throttle::delay(10, 10), Duration::ZERO);
    }
}
