//! Guards of the server's connections: a count per address, and a watch
//! on a connection's progress.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Connections per address, at most `limit` each.
pub struct PerAddress {
    limit: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

pub struct FromAddress {
    of: Arc<PerAddress>,
    ip: IpAddr,
}

impl PerAddress {
    pub fn new(limit: usize) -> PerAddress {
        PerAddress {
            limit,
            counts: Mutex::new(HashMap::new()),
        }
    }

    pub fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<FromAddress> {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = c.entry(ip).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(FromAddress { of: self.clone(), ip })
    }
}

impl Drop for FromAddress {
    fn drop(&mut self) {
        let mut c = self.of.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = c.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.remove(&self.ip);
            }
        }
    }
}

/// When a connection last moved a byte, in milliseconds since it opened.
#[derive(Clone)]
pub struct Progress {
    born: Instant,
    last: Arc<AtomicU64>,
}

impl Progress {
    fn touch(&self) {
        self.last
            .store(self.born.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Ends once no byte has moved for `limit`.
    pub async fn stalled(&self, limit: Duration) {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let idle = self.born.elapsed().as_millis() as u64 - self.last.load(Ordering::Relaxed);
            if idle >= limit.as_millis() as u64 {
                return;
            }
        }
    }
}

/// A stream that records its progress.
pub struct Watched<S> {
    inner: S,
    progress: Progress,
}

impl<S> Watched<S> {
    pub fn new(inner: S) -> (Watched<S>, Progress) {
        let progress = Progress {
            born: Instant::now(),
            last: Arc::new(AtomicU64::new(0)),
        };
        (
            Watched {
                inner,
                progress: progress.clone(),
            },
            progress,
        )
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.progress.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.progress.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
