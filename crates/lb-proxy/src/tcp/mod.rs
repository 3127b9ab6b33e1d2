//! Layer-4 forwarding: HAProxy's `mode tcp`, LVS's scheduling, in user space.
//!
//! A [`TcpProxy`] takes accepted client connections. For each it builds a
//! [`Ctx`] from the client's address and the local address the client
//! reached (what `sh`, `dh` and `lblc` key on), lets the [`Balancer`]'s
//! scheduler pick a backend, and connects to it within the connect timeout.
//! A refused or timed-out connect is reported and the next backend is tried
//! (the failed ones are excluded through [`Ctx::with_tried`]), up to a
//! bounded number of attempts, as HAProxy's `retries` with `option redispatch`.
//! The client sees no failure as long as one backend answers.
//!
//! Once connected, bytes are copied both ways with half-close (a side that
//! ends its stream gets its FIN passed on while the other direction carries
//! on) until both directions end, one fails, or nothing moves for the idle
//! timeout. The connection is held in the backend's live counters for its
//! whole life by a [`ConnGuard`](lb_core::ConnGuard): active while both directions are open,
//! inactive once one side has closed (as LVS counts a TCP connection that
//! has left ESTABLISHED), gone when it closes; bytes are added to the
//! counters as they move.
//!
//! Every attempt is reported once: to the [`Observer`] (passive health),
//! to the backend's [`Counters::record`](lb_core::Counters::record) with the
//! connect latency on success, and to the scheduler through
//! [`Balancer::observe`] (so `peak_ewma` learns connect latencies). When no
//! backend can take the connection, the client's connection is reset at once
//! and a warning is logged.
//!
//! ```no_run
//! use lb_core::{Backend, Pool};
//! use lb_proxy::tcp::TcpProxy;
//! use lb_sched::Balancer;
//! use std::time::Duration;
//!
//! # async fn run() -> std::io::Result<()> {
//! let pool = Pool::new();
//! pool.add(Backend::new("a", "127.0.0.1:9001".parse().unwrap())).unwrap();
//! pool.add(Backend::new("b", "127.0.0.1:9002".parse().unwrap())).unwrap();
//! let lb = Balancer::new(pool, lb_sched::build("rr").unwrap());
//! let proxy = TcpProxy::new(lb).with_connect_timeout(Duration::from_secs(2));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9000").await?;
//! proxy.serve(listener).await;
//! # Ok(())
//! # }
//! ```

pub(crate) mod copy;
#[cfg(target_os = "linux")]
mod splice;

use std::fmt;
use std::future::{pending, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use lb_core::{BackendId, Ctx, IgnoreOutcomes, Observer, Outcome};
use lb_sched::{Balancer, Conn};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{timeout, Instant};
use tracing::{debug, info, warn};

pub use copy::{End, Moved};

/// Default connect timeout (HAProxy's `timeout connect` in many examples).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default idle timeout (HAProxy's `timeout client` / `timeout server` in
/// `mode tcp` examples; LVS's established-TCP timeout is 15 min).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default number of backends tried per client connection.
pub const DEFAULT_MAX_TRIES: usize = 3;

/// Forwards accepted TCP connections to backends a [`Balancer`] picks.
///
/// Cheap to clone (the balancer and observer are shared); one proxy serves
/// any number of connections at once. Use [`serve`](Self::serve) on a
/// listener, call [`handle`](Self::handle) per accepted connection, or use it
/// as a tower `Service<(TcpStream, SocketAddr)>`.
#[derive(Clone)]
pub struct TcpProxy {
    lb: Balancer,
    observer: Arc<dyn Observer>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_tries: usize,
    splice: bool,
}

impl fmt::Debug for TcpProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpProxy")
            .field("scheduler", &self.lb.scheduler().name())
            .field("observer", &self.observer)
            .field("connect_timeout", &self.connect_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_tries", &self.max_tries)
            .field("splice", &self.splice)
            .finish()
    }
}

/// A forwarded connection, as it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// The backend that served it.
    pub backend: BackendId,
    /// Its name.
    pub name: Arc<str>,
    /// Its address.
    pub addr: SocketAddr,
    /// Connect attempts made, this one included (1 when the first backend answered).
    pub attempts: usize,
    /// The bytes moved, and how the connection ended.
    pub moved: Moved,
}

/// A client connection that could not be forwarded.
#[derive(Debug)]
#[non_exhaustive]
pub enum TcpError {
    /// No backend took the connection: none was usable, or every attempt
    /// failed. The client's connection was reset.
    NoBackend {
        /// Connect attempts that failed before giving up.
        failed: usize,
    },
    /// The client's socket failed before forwarding began.
    Client(io::Error),
}

impl fmt::Display for TcpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TcpError::NoBackend { failed: 0 } => f.write_str("no backend available"),
            TcpError::NoBackend { failed } => {
                write!(
                    f,
                    "no backend available after {failed} failed connect attempts"
                )
            }
            TcpError::Client(e) => write!(f, "client socket error: {e}"),
        }
    }
}

impl std::error::Error for TcpError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TcpError::Client(e) => Some(e),
            TcpError::NoBackend { .. } => None,
        }
    }
}

impl TcpProxy {
    /// A proxy over `lb` with the default timeouts and tries, reporting
    /// outcomes to nobody but the counters and the scheduler.
    pub fn new(lb: Balancer) -> Self {
        TcpProxy {
            lb,
            observer: Arc::new(IgnoreOutcomes),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_tries: DEFAULT_MAX_TRIES,
            splice: cfg!(target_os = "linux"),
        }
    }

    /// Report every connect attempt's outcome to `observer` (passive health).
    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = observer;
        self
    }

    /// How long a connect to a backend may take before the next is tried.
    pub fn with_connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    /// Close a connection on which nothing moved for this long.
    pub fn with_idle_timeout(mut self, t: Duration) -> Self {
        self.idle_timeout = t;
        self
    }

    /// Backends tried per client connection (at least 1).
    pub fn with_max_tries(mut self, n: usize) -> Self {
        self.max_tries = n.max(1);
        self
    }

    /// Move bulk transfers with `splice(2)` (Linux; the default there): a
    /// direction whose read fills the 16 KiB copy buffer goes on through a
    /// pipe of its own, socket to socket inside the kernel, as HAProxy's
    /// `option splice-auto`. `false` copies through user space always.
    /// Elsewhere than Linux this has no effect.
    pub fn with_splice(mut self, on: bool) -> Self {
        self.splice = on && cfg!(target_os = "linux");
        self
    }

    /// The balancer.
    pub fn balancer(&self) -> &Balancer {
        &self.lb
    }

    /// Accept connections from `listener` forever, each handled on its own
    /// task. Accept errors (such as running out of file descriptors) are
    /// logged and retried after a short pause.
    pub async fn serve(&self, listener: TcpListener) {
        self.serve_until(listener, pending::<()>()).await;
    }

    /// As [`serve`](Self::serve), until `shutdown` completes: then no new
    /// connection is accepted, and connections already accepted carry on.
    pub async fn serve_until(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = &mut shutdown => return,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let proxy = self.clone();
                    tokio::spawn(async move { proxy.handle_logged(stream, peer).await });
                }
                Err(e) => {
                    warn!(error = %e, "accept failed; pausing");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    async fn handle_logged(&self, stream: TcpStream, peer: SocketAddr) {
        match self.handle(stream, peer).await {
            Ok(s) => debug!(
                client = %peer, backend = %s.name, attempts = s.attempts,
                to_backend = s.moved.to_backend, from_backend = s.moved.from_backend,
                end = ?s.moved.end, "connection closed"
            ),
            Err(e) => warn!(client = %peer, error = %e, "connection not forwarded"),
        }
    }

    /// Forward one accepted connection from `peer` until it ends.
    ///
    /// Returns what moved, or why nothing could be forwarded (the client's
    /// connection is then reset).
    pub async fn handle(&self, client: TcpStream, peer: SocketAddr) -> Result<Session, TcpError> {
        let local = client.local_addr().map_err(TcpError::Client)?;
        let _ = client.set_nodelay(true);
        let mut tried: Vec<BackendId> = Vec::with_capacity(self.max_tries);
        while tried.len() < self.max_tries {
            let ctx = Ctx::new(peer).with_dest(local).with_tried(&tried);
            let Ok(conn) = self.lb.connect(&ctx) else {
                break;
            };
            match self.connect(&conn).await {
                Some(backend) => {
                    let attempts = tried.len() + 1;
                    debug!(client = %peer, backend = %conn.name, attempts, "forwarding");
                    return Ok(self.forward(client, backend, conn, attempts).await);
                }
                None => tried.push(conn.backend),
            }
        }
        let failed = tried.len();
        warn!(client = %peer, failed, "no backend can take the connection; resetting it");
        // A reset, not a FIN: the client learns at once that nothing listens.
        let _ = client.set_zero_linger();
        drop(client);
        Err(TcpError::NoBackend { failed })
    }

    /// One connect attempt to the picked backend, reported everywhere.
    async fn connect(&self, conn: &Conn) -> Option<TcpStream> {
        let start = Instant::now();
        let result = timeout(self.connect_timeout, TcpStream::connect(conn.addr)).await;
        let latency = start.elapsed();
        let (outcome, stream) = match result {
            Ok(Ok(s)) => (Outcome::Success, Some(s)),
            Ok(Err(e)) => {
                info!(backend = %conn.name, addr = %conn.addr, error = %e, "connect failed");
                (Outcome::ConnectFailed, None)
            }
            Err(_) => {
                info!(backend = %conn.name, addr = %conn.addr, timeout = ?self.connect_timeout, "connect timed out");
                (Outcome::Timeout, None)
            }
        };
        let micros = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        let counters = conn.guard.counters();
        counters.record(outcome.is_success(), outcome.is_success().then_some(micros));
        self.observer.observe(conn.backend, outcome, latency);
        self.lb.observe(conn.backend, outcome, latency);
        stream
    }

    async fn forward(
        &self,
        client: TcpStream,
        backend: TcpStream,
        conn: Conn,
        attempts: usize,
    ) -> Session {
        let _ = backend.set_nodelay(true);
        let Conn {
            backend: id,
            name,
            addr,
            mut guard,
        } = conn;
        let moved =
            copy::forward(client, backend, &mut guard, self.idle_timeout, self.splice).await;
        drop(guard); // both sockets are closed: off the counters
        Session {
            backend: id,
            name,
            addr,
            attempts,
            moved,
        }
    }
}

/// The proxy as a tower service over accepted connections: each call
/// forwards one connection until it ends.
impl tower_service::Service<(TcpStream, SocketAddr)> for TcpProxy {
    type Response = Session;
    type Error = TcpError;
    type Future = Pin<Box<dyn Future<Output = Result<Session, TcpError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), TcpError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, (stream, peer): (TcpStream, SocketAddr)) -> Self::Future {
        let proxy = self.clone();
        Box::pin(async move { proxy.handle(stream, peer).await })
    }
}
