//! Idle keep-alive connections to backends, per backend address, for the
//! [HTTP/1.1 client](super).
//!
//! The semantics are those of hyper's pool in [`Forward`](crate::http::Forward)
//! before: the most recently pooled connection is used first; idle
//! connections expire after the idle timeout (checked at checkout and by a
//! sweep every `max(timeout, 90 ms)`); at most `max_idle` are kept per
//! backend. With no task reading an idle connection, a checkout tries a
//! one-byte read (no system call while the runtime has seen nothing come
//! on it): an end of stream means the backend closed it, a byte means it
//! sent something unasked; either way it is dropped.

use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasherDefault;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::http::pool::AddrHasher;
use crate::pick::BoxError;

/// The idle sweep never runs more often than this.
const MIN_SWEEP: Duration = Duration::from_millis(90);

/// The read buffer a new connection starts with.
const READ_BUF: usize = 8 * 1024;

/// One connection to a backend and what was read from it but not used.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) io: TcpStream,
    pub(crate) buf: BytesMut,
}

/// Idle connections, shared by every clone of a `Forward`.
#[derive(Clone)]
pub(crate) struct H1Pool {
    inner: Arc<Inner>,
}

impl fmt::Debug for H1Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("H1Pool")
            .field("max_idle", &self.inner.max_idle)
            .field("idle_timeout", &self.inner.idle_timeout)
            .finish_non_exhaustive()
    }
}

struct Inner {
    idle: Mutex<IdleMap>,
    max_idle: usize,
    idle_timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    sweeping: AtomicBool,
}

type IdleMap = HashMap<SocketAddr, Vec<Idle>, BuildHasherDefault<AddrHasher>>;

struct Idle {
    conn: Conn,
    since: Instant,
}

impl H1Pool {
    /// An empty pool.
    pub(crate) fn new(
        max_idle: usize,
        idle_timeout: Option<Duration>,
        connect_timeout: Option<Duration>,
    ) -> Self {
        H1Pool {
            inner: Arc::new(Inner {
                idle: Mutex::new(HashMap::default()),
                max_idle,
                idle_timeout,
                connect_timeout,
                sweeping: AtomicBool::new(false),
            }),
        }
    }

    /// The most recently pooled live connection to `addr`; expired and
    /// closed ones met on the way are dropped (closed).
    pub(crate) fn take(&self, addr: SocketAddr) -> Option<Conn> {
        let now = Instant::now();
        let mut idle = self.inner.lock();
        let list = idle.get_mut(&addr)?;
        while let Some(e) = list.pop() {
            if !self.inner.expired(e.since, now) && alive(&e.conn.io) {
                return Some(e.conn);
            }
        }
        None
    }

    /// Keep `conn` for the next request to `addr`, if there is room; its
    /// read buffer must be empty (what is in it belongs to no request).
    pub(crate) fn put(&self, addr: SocketAddr, conn: Conn) {
        if !conn.buf.is_empty() {
            return;
        }
        let since = Instant::now();
        let mut idle = self.inner.lock();
        let list = idle.entry(addr).or_default();
        if list.len() < self.inner.max_idle {
            list.push(Idle { conn, since });
        }
    }

    /// A new connection to `addr`, within the connect timeout.
    pub(crate) async fn connect(self, addr: SocketAddr) -> Result<Conn, BoxError> {
        let io = crate::http::pool::connect(addr, self.inner.connect_timeout).await?;
        self.start_sweep();
        Ok(Conn {
            io,
            buf: BytesMut::with_capacity(READ_BUF),
        })
    }

    /// Close expired idle connections from time to time, while the pool lives.
    fn start_sweep(&self) {
        let Some(timeout) = self.inner.idle_timeout.filter(|t| !t.is_zero()) else {
            return;
        };
        if self.inner.max_idle == 0 || self.inner.sweeping.swap(true, Ordering::Relaxed) {
            return;
        }
        let every = timeout.max(MIN_SWEEP);
        let pool: Weak<Inner> = Arc::downgrade(&self.inner);
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

impl Inner {
    fn lock(&self) -> MutexGuard<'_, IdleMap> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn expired(&self, since: Instant, now: Instant) -> bool {
        self.idle_timeout
            .is_some_and(|t| now.saturating_duration_since(since) > t)
    }

    fn sweep(&self, timeout: Duration) {
        let now = Instant::now();
        let mut idle = self.lock();
        idle.retain(|_, list| {
            list.retain(|e| now.saturating_duration_since(e.since) <= timeout);
            !list.is_empty()
        });
    }
}

/// Whether an idle connection can take a request: nothing to read on it
/// (an end-of-file means the backend closed it; bytes mean it sent
/// something no request asked for). The runtime's readiness decides first,
/// so a quiet connection costs no system call; a close the runtime has not
/// yet seen is caught when the request is sent (see `exchange`), as hyper's
/// connection task would have seen it no sooner.
fn alive(io: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    match io.try_read(&mut probe) {
        Err(e) => e.kind() == io::ErrorKind::WouldBlock,
        Ok(_) => false,
    }
}
