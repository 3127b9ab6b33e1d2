//! Accepting clients: HTTP/1.1 and HTTP/2 (prior knowledge, h2c) on one
//! listener, with protocol switches, for any tower service.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tower_service::Service;

use crate::pick::{BoxError, ClientAddr, LocalAddr};

/// Serves a tower service to HTTP clients on a listener.
///
/// Each connection speaks HTTP/1.1 or HTTP/2 (detected from its first
/// bytes: an HTTP/2 client must use prior knowledge, as there is no TLS
/// here), each request carries the [`ClientAddr`] and [`LocalAddr`]
/// extensions, and HTTP/1.1 protocol switches (WebSocket) are allowed.
/// Malformed requests are answered `400 Bad Request` by hyper and the
/// connection closed; other connections are not affected.
#[derive(Clone)]
pub struct Server {
    builder: auto::Builder<TokioExecutor>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server").finish_non_exhaustive()
    }
}

impl Default for Server {
    fn default() -> Self {
        Self::new()
    }
}

impl Server {
    /// A server that waits at most 30 s for a request head.
    pub fn new() -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30))
            .keep_alive(true);
        builder.http2().timer(TokioTimer::new());
        Server { builder }
    }

    /// How long to wait for a client's request head (HTTP/1.1; also the
    /// limit on an idle keep-alive connection waiting for its next request).
    pub fn header_read_timeout(mut self, limit: Duration) -> Self {
        self.builder.http1().header_read_timeout(limit);
        self
    }

    /// Accept clients on `listener` and serve each with a clone of `svc`,
    /// until accepting fails for good. Transient accept errors (out of file
    /// descriptors) are logged and retried after a short pause.
    pub async fn serve<S, B>(self, listener: TcpListener, svc: S) -> io::Error
    where
        S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>,
        S: Clone + Send + 'static,
        S::Future: Send + 'static,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let local = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => return e,
        };
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(pair) => pair,
                Err(e) if is_transient(&e) => {
                    tracing::warn!(error = %e, "accept failed; pausing");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Err(e) => return e,
            };
            tokio::spawn(
                self.clone()
                    .serve_connection(stream, peer, local, svc.clone()),
            );
        }
    }

    /// Serve one accepted connection to its end.
    pub fn serve_connection<S, B>(
        self,
        stream: TcpStream,
        peer: SocketAddr,
        local: SocketAddr,
        svc: S,
    ) -> impl Future<Output = ()> + Send + 'static
    where
        S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>,
        S: Clone + Send + 'static,
        S::Future: Send + 'static,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let _ = stream.set_nodelay(true);
        let hyper_svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(ClientAddr(peer));
            req.extensions_mut().insert(LocalAddr(local));
            let mut svc = svc.clone();
            async move {
                std::future::poll_fn(|cx| svc.poll_ready(cx)).await?;
                svc.call(req).await
            }
        });
        async move {
            let conn = self
                .builder
                .serve_connection_with_upgrades(TokioIo::new(stream), hyper_svc);
            if let Err(e) = conn.await {
                tracing::debug!(client = %peer, error = %e, "client connection ended with an error");
            }
        }
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
