//! Keep-alive HTTP/1.1 connections to backends, pooled per backend address
//! (what hyper-util's legacy client did for [`Forward`](super::Forward),
//! without its per-request costs: no URI authority to build and compare, no
//! SipHash of a `(scheme, authority)` key, no boxed checkout-or-connect race).
//!
//! Semantics kept from the legacy client: the most recently pooled
//! connection is used first; idle connections expire after the idle timeout
//! (checked at checkout and by a sweep every `max(timeout, 90 ms)`); at most
//! `max_idle` are kept per backend; a connection goes back to the pool once
//! it can take another request (at once for a small response, else when its
//! body has been read); a request that a reused connection closed before
//! sending it is sent again on another connection.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::client::conn::TrySendError;
use hyper_util::rt::TokioIo;
use lb_core::Outcome;
use pin_project_lite::pin_project;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

use super::body::BackendBody;
use crate::pick::{BoxError, OutcomeError};

/// The idle sweep never runs more often than this (as hyper-util's pool).
const MIN_SWEEP: Duration = Duration::from_millis(90);

/// A connection an [`IdlePool`] can keep between requests.
pub(crate) trait Reusable: Send + 'static {
    /// Whether it can take a request now (asked at checkout).
    fn usable(&self) -> bool;
    /// Whether it is gone for good (the sweep drops it early).
    fn closed(&self) -> bool {
        false
    }
}

/// Idle keep-alive connections per backend address, shared by clones: the
/// most recently pooled first, expired after the idle timeout (checked at
/// checkout and by a sweep every `max(timeout, 90 ms)` while the pool
/// lives), at most `max_idle` per backend.
pub(crate) struct IdlePool<T> {
    inner: Arc<IdleInner<T>>,
}

struct IdleInner<T> {
    idle: Mutex<IdleMap<T>>,
    max_idle: usize,
    idle_timeout: Option<Duration>,
    dial: Dial,
    sweeping: AtomicBool,
}

/// How new connections to backends are made.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Dial {
    /// The limit on connecting.
    pub(crate) timeout: Option<Duration>,
    /// The socket's send buffer (`SO_SNDBUF`), or the kernel's autotuning.
    pub(crate) send_buffer: Option<u32>,
}

type IdleMap<T> = HashMap<SocketAddr, Vec<(T, Instant)>, BuildHasherDefault<AddrHasher>>;

impl<T> Clone for IdlePool<T> {
    fn clone(&self) -> Self {
        IdlePool {
            inner: self.inner.clone(),
        }
    }
}

impl<T> fmt::Debug for IdlePool<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdlePool")
            .field("max_idle", &self.inner.max_idle)
            .field("idle_timeout", &self.inner.idle_timeout)
            .finish_non_exhaustive()
    }
}

impl<T: Reusable> IdlePool<T> {
    /// An empty pool.
    pub(crate) fn new(max_idle: usize, idle_timeout: Option<Duration>, dial: Dial) -> Self {
        IdlePool {
            inner: Arc::new(IdleInner {
                idle: Mutex::new(HashMap::default()),
                max_idle,
                idle_timeout,
                dial,
                sweeping: AtomicBool::new(false),
            }),
        }
    }

    /// How new connections are made.
    pub(crate) fn dial(&self) -> Dial {
        self.inner.dial
    }

    /// The most recently pooled usable connection to `addr`; expired and
    /// unusable ones met on the way are dropped (closed).
    pub(crate) fn take(&self, addr: SocketAddr) -> Option<T> {
        self.inner.take(addr)
    }

    /// Keep `conn` for the next request to `addr`, if there is room.
    pub(crate) fn put(&self, addr: SocketAddr, conn: T) {
        self.inner.put(addr, conn);
    }

    /// A way to [`put`](Self::put) a connection later, from another task,
    /// that does nothing once the pool is gone (for a connection that
    /// becomes reusable after its response body was read).
    pub(crate) fn later(&self) -> impl FnOnce(SocketAddr, T) + Send + 'static {
        let pool = Arc::downgrade(&self.inner);
        move |addr, conn| {
            if let Some(pool) = pool.upgrade() {
                pool.put(addr, conn);
            }
        }
    }

    /// Whether connections are kept at all.
    pub(crate) fn keeps(&self) -> bool {
        self.inner.max_idle > 0
    }

    /// Close expired idle connections from time to time, while the pool
    /// lives (started once, at the first new connection).
    pub(crate) fn start_sweep(&self) {
        let Some(timeout) = self.inner.idle_timeout.filter(|t| !t.is_zero()) else {
            return;
        };
        if self.inner.max_idle == 0 || self.inner.sweeping.swap(true, Ordering::Relaxed) {
            return;
        }
        let every = timeout.max(MIN_SWEEP);
        let pool: Weak<IdleInner<T>> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
            loop {
                ticks.tick().await;
                let Some(pool) = pool.upgrade() else { return };
                pool.sweep(timeout);
            }
        });
    }
}

impl<T: Reusable> IdleInner<T> {
    fn lock(&self) -> MutexGuard<'_, IdleMap<T>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take(&self, addr: SocketAddr) -> Option<T> {
        let now = Instant::now();
        let mut idle = self.lock();
        let list = idle.get_mut(&addr)?;
        while let Some((conn, since)) = list.pop() {
            let fresh = self
                .idle_timeout
                .is_none_or(|t| now.saturating_duration_since(since) <= t);
            if fresh && conn.usable() {
                return Some(conn);
            }
        }
        None
    }

    fn put(&self, addr: SocketAddr, conn: T) {
        let since = Instant::now();
        let mut idle = self.lock();
        let list = idle.entry(addr).or_default();
        if list.len() < self.max_idle {
            list.push((conn, since));
        }
    }

    fn sweep(&self, timeout: Duration) {
        let now = Instant::now();
        let mut idle = self.lock();
        idle.retain(|_, list| {
            list.retain(|(conn, since)| {
                !conn.closed() && now.saturating_duration_since(*since) <= timeout
            });
            !list.is_empty()
        });
    }
}

impl<B: Send + 'static> Reusable for SendRequest<B> {
    fn usable(&self) -> bool {
        self.is_ready()
    }
    fn closed(&self) -> bool {
        self.is_closed()
    }
}

/// Connections to backends through hyper's client, shared by every clone
/// of a `Forward`.
pub(crate) struct Pool<B> {
    idle: IdlePool<SendRequest<B>>,
}

impl<B> Clone for Pool<B> {
    fn clone(&self) -> Self {
        Pool {
            idle: self.idle.clone(),
        }
    }
}

impl<B> fmt::Debug for Pool<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool").field("idle", &self.idle).finish()
    }
}

impl<B> Pool<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// An empty pool.
    pub(crate) fn new(max_idle: usize, idle_timeout: Option<Duration>, dial: Dial) -> Self {
        Pool {
            idle: IdlePool::new(max_idle, idle_timeout, dial),
        }
    }

    /// Send `req` (in origin form) to `addr` on a pooled connection, or a
    /// new one; the future resolves to the response head.
    ///
    /// With an idle connection at hand (the usual case) the request is
    /// handed to it at once, and the future stays small (it is boxed and
    /// moved with every request); connecting, and sending again after a
    /// reused connection closed, run in a boxed future of their own.
    pub(crate) fn send(&self, addr: SocketAddr, req: Request<B>) -> Sending<B, impl SendFuture<B>> {
        let (tx, first, slow) = match self.idle.take(addr) {
            Some(mut tx) => {
                let first = tx.try_send_request(req);
                (Some(tx), Some(first), None)
            }
            None => (None, None, Some(self.clone().send_slow(addr, req))),
        };
        Sending {
            first,
            tx,
            slow,
            pool: self.clone(),
            addr,
        }
    }

    /// Send on an idle connection or a new one, again while a reused one
    /// turns out closed before the request went out.
    fn send_slow(self, addr: SocketAddr, mut req: Request<B>) -> SlowFuture {
        Box::pin(async move {
            loop {
                let (mut tx, reused) = match self.idle.take(addr) {
                    Some(tx) => (tx, true),
                    None => (self.connect(addr).await?, false),
                };
                match tx.try_send_request(req).await {
                    Ok(resp) => {
                        self.release(addr, tx);
                        return Ok(resp);
                    }
                    Err(mut e) => match e.take_message() {
                        // The backend closed a kept-alive connection before
                        // the request went out: nothing was sent, try another.
                        Some(again) if reused => req = again,
                        _ => return Err(e.into_error().into()),
                    },
                }
            }
        })
    }

    /// A new connection to `addr`, its driver task spawned.
    async fn connect(&self, addr: SocketAddr) -> Result<SendRequest<B>, BoxError> {
        let stream = connect(addr, self.idle.dial()).await?;
        let (mut tx, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(backend = %addr, error = %e, "backend connection ended with an error");
            }
        });
        self.idle.start_sweep();
        tx.ready().await?;
        Ok(tx)
    }

    /// Give a connection back once it can take another request.
    fn release(&self, addr: SocketAddr, mut tx: SendRequest<B>) {
        if tx.is_ready() {
            self.idle.put(addr, tx);
        } else if !tx.is_closed() && self.idle.keeps() {
            // Its response body is still to be read.
            let put = self.idle.later();
            tokio::spawn(async move {
                if tx.ready().await.is_ok() {
                    put(addr, tx);
                }
            });
        }
    }
}

/// The future of [`Pool::send`]'s first try on an idle connection.
pub(crate) trait SendFuture<B>:
    Future<Output = Result<Response<Incoming>, TrySendError<Request<B>>>> + Send + 'static
{
}

impl<B, F> SendFuture<B> for F where
    F: Future<Output = Result<Response<Incoming>, TrySendError<Request<B>>>> + Send + 'static
{
}

type SlowFuture = Pin<Box<dyn Future<Output = Result<Response<Incoming>, BoxError>> + Send>>;

pin_project! {
    /// The response head of a request sent by [`Pool::send`].
    pub(crate) struct Sending<B, F> {
        #[pin]
        first: Option<F>,
        tx: Option<SendRequest<B>>,
        slow: Option<SlowFuture>,
        pool: Pool<B>,
        addr: SocketAddr,
    }
}

impl<B, F> Future for Sending<B, F>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    F: SendFuture<B>,
{
    type Output = Result<Response<BackendBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(first) = this.first.as_mut().as_pin_mut() {
            let res = ready!(first.poll(cx));
            this.first.set(None);
            match res {
                Ok(resp) => {
                    if let Some(tx) = this.tx.take() {
                        this.pool.release(*this.addr, tx);
                    }
                    return Poll::Ready(Ok(resp.map(BackendBody::hyper)));
                }
                Err(mut e) => match e.take_message() {
                    // The idle connection closed before the request went
                    // out: send it on a new one (or another idle one).
                    Some(again) => {
                        let retry = this.pool.clone().send_slow(*this.addr, again);
                        *this.slow = Some(retry);
                    }
                    None => return Poll::Ready(Err(e.into_error().into())),
                },
            }
        }
        match this.slow.as_mut() {
            Some(slow) => slow.as_mut().poll(cx).map_ok(|r| r.map(BackendBody::hyper)),
            None => Poll::Ready(Err("request polled after completion".into())),
        }
    }
}

/// A TCP connection to backend `addr` as `dial` says, with Nagle off: a
/// timeout is an unsent [`Outcome::Timeout`], a refusal or other failure an
/// unsent [`Outcome::ConnectFailed`] (the request may go elsewhere).
pub(crate) async fn connect(addr: SocketAddr, dial: Dial) -> Result<TcpStream, BoxError> {
    let connecting = async {
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if let Some(size) = dial.send_buffer {
            socket.set_send_buffer_size(size)?;
        }
        socket.connect(addr).await
    };
    let stream = match dial.timeout {
        Some(limit) => match tokio::time::timeout(limit, connecting).await {
            Ok(r) => r,
            Err(_) => {
                let e = io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connect to {addr} timed out after {limit:?}"),
                );
                return Err(OutcomeError::unsent(Outcome::Timeout, e).into());
            }
        },
        None => connecting.await,
    }
    .map_err(|e| OutcomeError::unsent(Outcome::ConnectFailed, e))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// FxHash over the address's bytes: a few multiplications, not SipHash (the
/// keys are the configured backends, not attacker-chosen).
#[derive(Default)]
struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
}

impl AddrHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

#[cfg(test)]
mod tests {

    #[tokio::test]
    async fn a_new_connection_gets_the_send_buffer_asked_for() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let size = |stream: TcpStream| {
            TcpSocket::from_std_stream(stream.into_std().unwrap())
                .send_buffer_size()
                .unwrap()
        };
        let asked = Dial {
            timeout: Some(Duration::from_secs(5)),
            send_buffer: Some(256 << 10),
        };
        let s = connect(addr, asked).await.unwrap();
        // Linux doubles the value asked for, capped by net.core.wmem_max.
        let max = std::fs::read_to_string("/proc/sys/net/core/wmem_max")
            .ok()
            .and_then(|m| m.trim().parse::<u32>().ok());
        match max {
            Some(max) => assert_eq!(size(s), 2 * max.min(256 << 10)),
            None => assert!(size(s) >= 256 << 10),
        }
        // Without it, the connection is made all the same (the kernel's
        // autotuning decides).
        connect(addr, Dial::default()).await.unwrap();
    }

    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn addresses_hash_apart() {
        let h = BuildHasherDefault::<AddrHasher>::default();
        let a: SocketAddr = "127.0.0.1:9001".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:9002".parse().unwrap();
        let c: SocketAddr = "[::1]:9001".parse().unwrap();
        assert_ne!(h.hash_one(a), h.hash_one(b));
        assert_ne!(h.hash_one(a), h.hash_one(c));
        assert_eq!(h.hash_one(a), h.hash_one(a));
    }
}
