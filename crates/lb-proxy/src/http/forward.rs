//! Forwarding one request to the backend [`Balance`](crate::Balance) chose,
//! with hyper's pooled keep-alive client.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body, Incoming};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use lb_core::Outcome;
use tower_service::Service;

use super::headers::{add_forwarded, connection_has, strip_hop_by_hop};
use super::idle::IdleBody;
use super::upgrade;
use crate::pick::{BoxError, ClientAddr, OutcomeError, Upstream, UpstreamBody};

/// What the Host header of a forwarded request says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum HostHeader {
    /// The client's Host (for HTTP/2 clients, the request's authority), as
    /// HAProxy does. The default.
    #[default]
    Preserve,
    /// The backend's address, `IP:PORT` (nginx's default `$proxy_host`).
    Backend,
    /// A fixed value (nginx `proxy_set_header Host VALUE`).
    Fixed(HeaderValue),
}

/// Settings of a [`Forward`] service.
#[derive(Clone, Debug)]
pub struct ForwardConfig {
    /// Limit on connecting to a backend (nginx `proxy_connect_timeout`, 60 s).
    pub connect_timeout: Option<Duration>,
    /// Limit on waiting for the response head once the request is handed to
    /// the client, connecting included (nginx `proxy_read_timeout` for the
    /// head, 60 s).
    pub response_timeout: Option<Duration>,
    /// Limit on the gap between two pieces of a response body (nginx
    /// `proxy_read_timeout` for the body, 60 s); also how long an idle
    /// keep-alive connection to a backend is kept.
    pub idle_timeout: Option<Duration>,
    /// Idle keep-alive connections kept per backend.
    pub max_idle_per_backend: usize,
    /// The Host header sent to backends.
    pub host: HostHeader,
    /// Whether to add `X-Forwarded-For`, `X-Forwarded-Proto` and `Forwarded`.
    pub forwarded_headers: bool,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        ForwardConfig {
            connect_timeout: Some(Duration::from_secs(60)),
            response_timeout: Some(Duration::from_secs(60)),
            idle_timeout: Some(Duration::from_secs(60)),
            max_idle_per_backend: 32,
            host: HostHeader::Preserve,
            forwarded_headers: true,
        }
    }
}

/// Forwards a request to the backend in its [`Upstream`] extension: the
/// inner service of [`Balance`](crate::Balance) for HTTP.
///
/// - Connections to backends are pooled and kept alive (hyper-util's
///   client); requests go to backends as HTTP/1.1 whatever the client spoke.
/// - Bodies stream both ways and are never buffered whole.
/// - Hop-by-hop headers are removed both ways (`Connection` and the
///   headers it names, `Keep-Alive`, `Proxy-*`, `TE`, `Trailer`,
///   `Transfer-Encoding`, `Upgrade`); `X-Forwarded-For` is appended to,
///   `X-Forwarded-Proto` set, a `Forwarded` element appended; Host follows
///   [`HostHeader`].
/// - An HTTP/1.1 protocol switch (WebSocket) is passed through: the backend's
///   `101` goes to the client and both upgraded connections are joined,
///   counted on the backend until either side closes.
/// - Errors say how the attempt failed ([`OutcomeError`]), so
///   [`Balance`](crate::Balance) can report and retry.
pub struct Forward<B = Incoming> {
    client: Client<HttpConnector, UpstreamBody<B>>,
    config: Arc<ForwardConfig>,
}

impl<B> Clone for Forward<B> {
    fn clone(&self) -> Self {
        Forward {
            client: self.client.clone(),
            config: self.config.clone(),
        }
    }
}

impl<B> fmt::Debug for Forward<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Forward")
            .field("config", &self.config)
            .finish()
    }
}

impl<B> Forward<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// A forwarder with its own connection pool.
    pub fn new(config: ForwardConfig) -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(config.connect_timeout);
        http.set_nodelay(true);
        http.enforce_http(true);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(config.idle_timeout)
            .pool_max_idle_per_host(config.max_idle_per_backend)
            .set_host(false);
        Forward {
            client: builder.build(http),
            config: Arc::new(config),
        }
    }

    /// The settings.
    pub fn config(&self) -> &ForwardConfig {
        &self.config
    }
}

/// The response future of [`Forward`].
pub type ForwardFuture =
    Pin<Box<dyn Future<Output = Result<Response<IdleBody<Incoming>>, BoxError>> + Send>>;

impl<B> Service<Request<UpstreamBody<B>>> for Forward<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<IdleBody<Incoming>>;
    type Error = BoxError;
    type Future = ForwardFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<UpstreamBody<B>>) -> ForwardFuture {
        let Some(up) = req.extensions_mut().remove::<Upstream>() else {
            let e = OutcomeError::unsent(
                Outcome::Broken,
                "no Upstream extension: run Forward inside Balance",
            );
            return Box::pin(std::future::ready(Err(e.into())));
        };
        let upgrading = req.version() == Version::HTTP_11
            && req.headers().contains_key(header::UPGRADE)
            && connection_has(req.headers(), "upgrade");
        let client_upgrade = upgrading.then(|| hyper::upgrade::on(&mut req));
        if let Err(e) = prepare(&mut req, &up, &self.config, upgrading) {
            return Box::pin(std::future::ready(Err(e.into())));
        }
        let sent = self.client.request(req);
        let config = self.config.clone();
        Box::pin(async move {
            let resp = match config.response_timeout {
                Some(limit) => match tokio::time::timeout(limit, sent).await {
                    Ok(r) => r,
                    Err(_) => {
                        let msg = format!("no response head within {limit:?}");
                        return Err(OutcomeError::new(Outcome::Timeout, msg).into());
                    }
                },
                None => sent.await,
            };
            let mut resp = resp?;
            let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
            match client_upgrade {
                Some(client_side) if switching => {
                    let backend_side = hyper::upgrade::on(&mut resp);
                    tokio::spawn(upgrade::tunnel(
                        client_side,
                        backend_side,
                        up.lease.clone(),
                        up.name.clone(),
                    ));
                    strip_hop_by_hop(resp.headers_mut(), true);
                }
                None if switching => {
                    let msg =
                        "the backend switched protocols on a request that asked for no switch";
                    return Err(OutcomeError::new(Outcome::Broken, msg).into());
                }
                _ => strip_hop_by_hop(resp.headers_mut(), false),
            }
            *resp.version_mut() = Version::HTTP_11;
            let idle = config.idle_timeout;
            Ok(resp.map(|b| IdleBody::new(b, idle)))
        })
    }
}

/// Rewrite a client's request for the backend.
fn prepare<B>(
    req: &mut Request<B>,
    up: &Upstream,
    config: &ForwardConfig,
    upgrading: bool,
) -> Result<(), OutcomeError> {
    let client = req.extensions().get::<ClientAddr>().map(|c| c.0);
    // HTTP/2 clients send the authority in the URI, not in Host.
    let original_host = match req.headers().get(header::HOST) {
        Some(h) => Some(h.clone()),
        None => req
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
    };
    let headers = req.headers_mut();
    strip_hop_by_hop(headers, upgrading);
    let host = match &config.host {
        HostHeader::Preserve => original_host,
        HostHeader::Backend => HeaderValue::from_str(&up.addr.to_string()).ok(),
        HostHeader::Fixed(v) => Some(v.clone()),
    };
    match host {
        Some(h) => {
            headers.insert(header::HOST, h);
        }
        None => {
            headers.remove(header::HOST);
        }
    }
    if config.forwarded_headers {
        if let Some(client) = client {
            add_forwarded(headers, client, "http");
        }
    }
    *req.uri_mut() = backend_uri(req.uri(), up.addr)?;
    *req.version_mut() = Version::HTTP_11;
    Ok(())
}

/// `http://BACKEND/path?query` for the client.
fn backend_uri(uri: &Uri, addr: SocketAddr) -> Result<Uri, OutcomeError> {
    let authority = Authority::try_from(addr.to_string())
        .map_err(|e| OutcomeError::unsent(Outcome::Broken, e))?;
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(authority);
    parts.path_and_query = Some(
        uri.path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    );
    Uri::from_parts(parts).map_err(|e| OutcomeError::unsent(Outcome::Broken, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_uri_keeps_path_and_query() {
        let u = backend_uri(&"/a/b?c=1".parse().unwrap(), "[::1]:9001".parse().unwrap()).unwrap();
        assert_eq!(u, "http://[::1]:9001/a/b?c=1");
        let u = backend_uri(
            &"http://example.com".parse().unwrap(),
            "127.0.0.1:80".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(u, "http://127.0.0.1:80/");
    }
}
