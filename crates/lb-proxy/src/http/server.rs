//! Accepting clients: HTTP/1.1 and HTTP/2 (prior knowledge, h2c) on one
//! listener, with protocol switches, for any tower service.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode, Version};
use hyper::body::{Body, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::sync::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower_service::Service;

use super::edge::{Answering, EdgeBody, EdgeConn, EdgeIo, EdgeStats, Limits};
use super::h1srv::{self, ClientBody, HandOff, Shared};
use crate::pick::{BoxError, ClientAddr, LocalAddr};

/// hyper's limit on header fields when none is set (`DEFAULT_MAX_HEADERS`).
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

/// Serves a tower service to HTTP clients on a listener.
///
/// Each connection speaks HTTP/1.1 or HTTP/2 (detected from its first
/// bytes: an HTTP/2 client must use prior knowledge, as there is no TLS
/// here), each request carries the [`ClientAddr`] and [`LocalAddr`]
/// extensions, and HTTP/1.1 protocol switches (WebSocket) are allowed.
///
/// HTTP/1 requests pass [the edge](super::edge) first: strict RFC 9112
/// parsing and the [`Limits`] (header read timeout, target, header block
/// and field count limits, and a limit on open connections). A refused
/// request is answered with its status (400, 408, 413, 414, 417, 431, 501, 505) and
/// its connection closed; it never reaches the service. [`EdgeStats`]
/// counts them.
///
/// Plain HTTP/1 requests are then served by the proxy's own HTTP/1.1
/// server side, in the connection's task, on the heads the edge checked;
/// the request body is a [`ClientBody`] read from the connection as the
/// service polls it. HTTP/2, protocol switches and `Expect: 100-continue`
/// go to hyper's server, for the rest of their connection.
/// [`h1_server(false)`](Server::h1_server) hands every connection to hyper.
#[derive(Clone)]
pub struct Server {
    builder: auto::Builder<TokioExecutor>,
    limits: Limits,
    stats: Arc<EdgeStats>,
    h1_server: bool,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("limits", &self.limits)
            .field("h1_server", &self.h1_server)
            .finish_non_exhaustive()
    }
}

impl Default for Server {
    fn default() -> Self {
        Self::new()
    }
}

impl Server {
    /// A server with the default [`Limits`].
    pub fn new() -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            // The edge keeps the time (and answers 408, which hyper does not).
            .header_read_timeout(None)
            .keep_alive(true);
        builder.http2().timer(TokioTimer::new());
        Server {
            builder,
            limits: Limits::default(),
            stats: Arc::default(),
            h1_server: true,
        }
        .with_limits(Limits::default())
    }

    /// Set every limit at once. Values are brought within what hyper can
    /// serve: a target of at most [`Limits::MAX_URI_BYTES`], a header block
    /// of at most [`Limits::MAX_HEADER_BYTES`], at most
    /// [`Limits::MAX_HEADERS`] fields; at least one of each.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = Limits {
            max_uri_bytes: limits.max_uri_bytes.clamp(1, Limits::MAX_URI_BYTES),
            max_header_bytes: limits.max_header_bytes.clamp(1, Limits::MAX_HEADER_BYTES),
            max_headers: limits.max_headers.clamp(1, Limits::MAX_HEADERS),
            max_connections: limits
                .max_connections
                .map(|n| n.clamp(1, Semaphore::MAX_PERMITS)),
            ..limits
        };
        // hyper's own count must let through all the edge lets through.
        // Within hyper's default (100) it is left unset: a set count makes
        // hyper build a heap-sized index vector for every request head
        // (about 1.7k instructions a request), the default a stack array.
        if self.limits.max_headers > HYPER_DEFAULT_MAX_HEADERS {
            self.builder.http1().max_headers(self.limits.max_headers);
        }
        self
    }

    /// Whether plain HTTP/1 requests are served by the proxy's own
    /// HTTP/1.1 server (the default) rather than hyper's. Either way HTTP/2,
    /// protocol switches and `Expect: 100-continue` go through hyper's (on
    /// the own server's connections from the request that asks for them
    /// on), and the edge checks every HTTP/1 request first.
    pub fn h1_server(mut self, on: bool) -> Self {
        self.h1_server = on;
        self
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// How long to wait for a client's request head (also the limit on an
    /// idle keep-alive connection waiting for its next request); `None`
    /// for no limit. See [`Limits::header_read_timeout`].
    pub fn header_read_timeout(self, limit: impl Into<Option<Duration>>) -> Self {
        let limits = Limits {
            header_read_timeout: limit.into(),
            ..self.limits
        };
        self.with_limits(limits)
    }

    /// The most client connections open at once (`None`: no limit). See
    /// [`Limits::max_connections`].
    pub fn max_connections(self, max: impl Into<Option<usize>>) -> Self {
        let limits = Limits {
            max_connections: max.into(),
            ..self.limits
        };
        self.with_limits(limits)
    }

    /// The longest request target. See [`Limits::max_uri_bytes`].
    pub fn max_uri_bytes(self, max: usize) -> Self {
        let limits = Limits {
            max_uri_bytes: max,
            ..self.limits
        };
        self.with_limits(limits)
    }

    /// The longest header block. See [`Limits::max_header_bytes`].
    pub fn max_header_bytes(self, max: usize) -> Self {
        let limits = Limits {
            max_header_bytes: max,
            ..self.limits
        };
        self.with_limits(limits)
    }

    /// The most header fields in a request. See [`Limits::max_headers`].
    pub fn max_headers(self, max: usize) -> Self {
        let limits = Limits {
            max_headers: max,
            ..self.limits
        };
        self.with_limits(limits)
    }

    /// The counters of this server (shared by its clones).
    pub fn stats(&self) -> Arc<EdgeStats> {
        self.stats.clone()
    }

    /// Accept clients on `listener` and serve each with a clone of `svc`,
    /// until accepting fails for good. Transient accept errors (out of file
    /// descriptors) are logged and retried after a short pause. At
    /// [`Limits::max_connections`] open connections, accepting pauses until
    /// one closes.
    pub async fn serve<S, B>(self, listener: TcpListener, svc: S) -> io::Error
    where
        S: Service<Request<ClientBody>, Response = Response<B>, Error = Infallible>,
        S: Clone + Send + 'static,
        S::Future: Send + 'static,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let local = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => return e,
        };
        let slots = self
            .limits
            .max_connections
            .map(|n| Arc::new(Semaphore::new(n)));
        loop {
            let slot = match &slots {
                Some(s) if s.available_permits() == 0 => {
                    self.stats.count_at_limit();
                    match s.clone().acquire_owned().await {
                        Ok(permit) => Some(permit),
                        Err(e) => return io::Error::other(e),
                    }
                }
                Some(s) => match s.clone().acquire_owned().await {
                    Ok(permit) => Some(permit),
                    Err(e) => return io::Error::other(e),
                },
                None => None,
            };
            let (stream, peer) = match listener.accept().await {
                Ok(pair) => pair,
                Err(e) if is_transient(&e) => {
                    tracing::warn!(error = %e, "accept failed; pausing");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Err(e) => return e,
            };
            let conn = self
                .clone()
                .serve_connection(stream, peer, local, svc.clone());
            tokio::spawn(async move {
                conn.await;
                drop(slot);
            });
        }
    }

    /// Serve one accepted connection to its end, through the edge (the
    /// connection limit is [`serve`](Server::serve)'s: it applies to what
    /// `serve` accepts).
    pub fn serve_connection<S, B>(
        self,
        stream: TcpStream,
        peer: SocketAddr,
        local: SocketAddr,
        svc: S,
    ) -> impl Future<Output = ()> + Send + 'static
    where
        S: Service<Request<ClientBody>, Response = Response<B>, Error = Infallible>,
        S: Clone + Send + 'static,
        S::Future: Send + 'static,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let _ = stream.set_nodelay(true);
        let open = self.stats.open_guard();
        let edge = Arc::new(EdgeConn::default());
        let mut io = EdgeIo::new(stream, edge.clone(), self.limits, self.stats.clone());
        let answers = Answers {
            edge,
            svc,
            peer,
            local,
        };
        async move {
            // hyper (boxed: the task stays small until then) only once the
            // client has sent a head: see `EdgeIo::poll_first`.
            std::future::poll_fn(|cx| io.poll_first(cx)).await;
            let result = if self.h1_server && !io.is_tunnel() {
                let link = Arc::new(Mutex::new(Shared::new(io)));
                let mut each = answers.clone();
                let end = h1srv::serve(&link, &mut each).await;
                if end == h1srv::End::Close {
                    h1srv::shutdown(&link).await;
                    drop(open);
                    return;
                }
                let svc = answers.hyper_service();
                Box::pin(
                    self.builder
                        .serve_connection_with_upgrades(TokioIo::new(HandOff(link)), svc),
                )
                .await
            } else {
                let svc = answers.hyper_service();
                Box::pin(
                    self.builder
                        .serve_connection_with_upgrades(TokioIo::new(io), svc),
                )
                .await
            };
            if let Err(e) = result {
                tracing::debug!(client = %peer, error = %e, "client connection ended with an error");
            }
            drop(open);
        }
    }
}

/// What answering a client's requests takes: the service, the edge's
/// state, the addresses.
#[derive(Clone)]
struct Answers<S> {
    edge: Arc<EdgeConn>,
    svc: S,
    peer: SocketAddr,
    local: SocketAddr,
}

impl<S, B> Answers<S>
where
    S: Service<Request<ClientBody>, Response = Response<B>, Error = Infallible>,
    S: Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    /// Answer one request, as [`Answer::answer`](h1srv::Answer::answer)
    /// does, owning what it takes (for hyper).
    async fn answer_owned(mut self, req: Request<ClientBody>) -> Response<EdgeBody<B>> {
        h1srv::Answer::answer(&mut self, req).await
    }

    /// The same, as a hyper service.
    fn hyper_service(
        self,
    ) -> impl hyper::service::Service<
        Request<Incoming>,
        Response = Response<EdgeBody<B>>,
        Error = Infallible,
        Future = impl Future<Output = Result<Response<EdgeBody<B>>, Infallible>> + Send + 'static,
    > + Clone
           + Send
           + 'static {
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let answer = self.clone().answer_owned(req.map(ClientBody::hyper));
            async move { Ok::<_, Infallible>(answer.await) }
        })
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    ) || e
        .raw_os_error()
        .is_some_and(|c| c == 23 || c == 24 || c == 12 || c == 105)
}

impl<S, B> h1srv::Answer for Answers<S>
where
    S: Service<Request<ClientBody>, Response = Response<B>, Error = Infallible>,
    S: Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Body = EdgeBody<B>;

    /// Answer one request: the edge's refusal if it is a stand-in, else
    /// the service's response (or the edge's 408 if its body stalls first).
    fn answer(
        &mut self,
        mut req: Request<ClientBody>,
    ) -> impl Future<Output = Response<EdgeBody<B>>> + Send + '_ {
        let (refusal, done) = self.edge.begin();
        req.extensions_mut().insert(ClientAddr(self.peer));
        req.extensions_mut().insert(LocalAddr(self.local));
        async move {
            if let Some(status) = refusal {
                return EdgeBody::refusal(status, done);
            }
            let upgrade =
                req.version() == Version::HTTP_11 && req.headers().contains_key(header::UPGRADE);
            let Ok(()) = std::future::poll_fn(|cx| self.svc.poll_ready(cx)).await;
            let resp = if req.body().is_end_stream() {
                let Ok(resp) = self.svc.call(req).await;
                resp
            } else {
                // A body still to come may stall: the edge answers 408.
                match Answering::new(self.svc.call(req), self.edge.clone()).await {
                    Ok(Ok(resp)) => resp,
                    Err(refusal) => return EdgeBody::refusal(refusal, done),
                }
            };
            if upgrade {
                self.edge
                    .decide_upgrade(resp.status() == StatusCode::SWITCHING_PROTOCOLS);
            }
            resp.map(|b| EdgeBody::new(b, done))
        }
    }
}
