//! Forwarding one request to the backend [`Balance`](crate::Balance) chose,
//! over pooled keep-alive connections: with the proxy's own HTTP/1.1 client
//! in the request's task, or hyper's client for what that one does not take
//! (protocol switches, `CONNECT`, `Expect: 100-continue`).

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use pin_project_lite::pin_project;
use tokio::time::Instant;

use http::header::{self, HeaderValue};
use http::uri::{Authority, Parts};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Body;
use lb_core::{Observer, Outcome};
use tower_service::Service;

use super::body::BackendBody;
use super::deadline::Deadline;
use super::h1;
use super::h1::exchange::Exchange;
use super::h1::pool::H1Pool;
use super::headers::{add_forwarded, connection_has, strip_hop_by_hop};
use super::idle::IdleBody;
use super::pool::{Dial, Pool};
use super::upgrade;
use crate::pick::{BoxError, ClientAddr, OutcomeError, Sending, Upstream, UpstreamBody};

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
    /// Limit on waiting for the response head, connecting included
    /// (nginx `proxy_read_timeout` for the head, 60 s). It runs from the
    /// last frame of the request body handed on (from the request itself
    /// when it has no body): an upload is cut only when it stops for this
    /// long (nginx `proxy_send_timeout`), never for taking long in all.
    pub response_timeout: Option<Duration>,
    /// Limit on the gap between two pieces of a response body (nginx
    /// `proxy_read_timeout` for the body, 60 s); also how long an idle
    /// keep-alive connection to a backend is kept.
    pub idle_timeout: Option<Duration>,
    /// Limit on silence both ways in an upgraded (WebSocket) tunnel, after
    /// which it is closed (HAProxy `timeout tunnel`). Default 1 h.
    pub tunnel_timeout: Option<Duration>,
    /// Idle keep-alive connections kept per backend.
    pub max_idle_per_backend: usize,
    /// The send buffer of connections to backends (`SO_SNDBUF`, which Linux
    /// doubles; HAProxy `tune.sndbuf.server`); `None` leaves it to the
    /// kernel's autotuning. Default 1 MiB: a backend that reads slower than
    /// a client uploads then has at most about 2 MiB waiting for it in the
    /// kernel, still warm in the caches when it reads, instead of the several
    /// MiB autotuning lets pile up (on loopback, with curl and the backend
    /// sharing a core, that made the backend spend 1.6x the CPU per GiB
    /// uploaded: `benches/chaos_compare.sh`, scenario e). It also bounds one
    /// upload's throughput to about 2 MiB per round trip to the backend.
    pub upstream_send_buffer: Option<u32>,
    /// The Host header sent to backends.
    pub host: HostHeader,
    /// Whether to add `X-Forwarded-For`, `X-Forwarded-Proto` and `Forwarded`.
    pub forwarded_headers: bool,
    /// An early report of a response head that is late (none by default).
    pub slow_response: Option<SlowResponse>,
    /// Whether requests go through the proxy's own HTTP/1.1 client, which
    /// does its I/O in the request's task (the default), rather than
    /// hyper's client with a task per backend connection. Protocol
    /// switches, `CONNECT` and `Expect: 100-continue` always go through
    /// hyper's.
    pub h1_client: bool,
}

/// Report a request still waiting for its response head after `after`
/// to `observer` ([`Observer::slow`]) at once, without ending it: passive
/// health can then take a hung backend out of new picks before the
/// response timeout fires. The response timeout's own timer fires first at
/// `after`, then waits on to the timeout: no timer of its own. Ignored
/// unless shorter than the response timeout.
#[derive(Clone, Debug)]
pub struct SlowResponse {
    /// How long a response head may take before it is reported (counted
    /// like the response timeout, from the last request body frame).
    pub after: Duration,
    /// Who hears of it (passive health).
    pub observer: Arc<dyn Observer>,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        ForwardConfig {
            connect_timeout: Some(Duration::from_secs(60)),
            response_timeout: Some(Duration::from_secs(60)),
            idle_timeout: Some(Duration::from_secs(60)),
            tunnel_timeout: Some(Duration::from_secs(3600)),
            max_idle_per_backend: 32,
            upstream_send_buffer: Some(1 << 20),
            host: HostHeader::Preserve,
            forwarded_headers: true,
            slow_response: None,
            h1_client: true,
        }
    }
}

/// Forwards a request to the backend in its [`Upstream`] extension: the
/// inner service of [`Balance`](crate::Balance) for HTTP.
///
/// - Connections to backends are pooled per backend address and kept
///   alive; requests go to backends as HTTP/1.1 whatever the client spoke.
///   The proxy's own HTTP/1.1 client sends them from the request's task
///   and reads the response body in whichever task polls it (no task per
///   connection, no channel per request); protocol switches, `CONNECT` and
///   `Expect: 100-continue` go through hyper's client (see
///   [`ForwardConfig::h1_client`]). The response body is a [`BackendBody`]
///   either way.
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
pub struct Forward<B = super::ClientBody> {
    pool: Pool<UpstreamBody<B>>,
    h1: H1Pool,
    config: Arc<ForwardConfig>,
}

impl<B> Clone for Forward<B> {
    fn clone(&self) -> Self {
        Forward {
            pool: self.pool.clone(),
            h1: self.h1.clone(),
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
        let dial = Dial {
            timeout: config.connect_timeout,
            send_buffer: config.upstream_send_buffer,
        };
        Forward {
            pool: Pool::new(config.max_idle_per_backend, config.idle_timeout, dial),
            h1: H1Pool::new(config.max_idle_per_backend, config.idle_timeout, dial),
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
    Pin<Box<dyn Future<Output = Result<Response<IdleBody<BackendBody>>, BoxError>> + Send>>;

impl<B> Service<Request<UpstreamBody<B>>> for Forward<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<IdleBody<BackendBody>>;
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
        let counters = up.lease.counters().clone();
        let sending = req.body().sending();
        if self.config.h1_client && h1::takes(req.method(), req.headers(), upgrading) {
            let sent = Exchange::new(self.h1.clone(), up.addr, req);
            return self.forwarding(sent, sending, up, None, &counters);
        }
        let sent = self.pool.send(up.addr, req);
        self.forwarding(sent, sending, up, client_upgrade, &counters)
    }
}

impl<B> Forward<B> {
    /// The response future around `sent`, under the response timeout, the
    /// slow report and a drain's cut.
    fn forwarding<F>(
        &self,
        sent: F,
        sending: Option<Arc<Sending>>,
        up: Upstream,
        client_upgrade: Option<OnUpgrade>,
        counters: &Arc<lb_core::Counters>,
    ) -> ForwardFuture
    where
        F: Future<Output = Result<Response<BackendBody>, BoxError>> + Send + 'static,
    {
        let forwarding = Forwarding {
            sent,
            sending,
            started: None,
            deadline: Deadline::default(),
            limit: self.config.response_timeout,
            armed: false,
            slow: self.config.slow_response.clone(),
            up,
            client_upgrade,
            idle: self.config.idle_timeout,
            tunnel: self.config.tunnel_timeout,
        };
        // A drain's deadline may cut the exchange.
        Box::pin(crate::drain::Cuttable::new(forwarding, counters))
    }
}

pin_project! {
    /// A request on its way: the response head within the response
    /// timeout, then the response prepared for the client. Written out
    /// rather than as an `async` block, whose captured request would take
    /// room in the (boxed) future for its whole life.
    struct Forwarding<F> {
        #[pin]
        sent: F,
        // Armed at the first poll.
        deadline: Deadline,
        limit: Option<Duration>,
        armed: bool,
        // The client's body on its way, if any: the timeouts run from its
        // last frame (nginx: proxy_send_timeout, then proxy_read_timeout).
        sending: Option<Arc<Sending>>,
        // When the deadline was first armed.
        started: Option<Instant>,
        // The slow report still to make.
        slow: Option<SlowResponse>,
        up: Upstream,
        client_upgrade: Option<OnUpgrade>,
        idle: Option<Duration>,
        tunnel: Option<Duration>,
    }
}

impl<F> Future for Forwarding<F>
where
    F: Future<Output = Result<Response<BackendBody>, BoxError>>,
{
    type Output = Result<Response<IdleBody<BackendBody>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if !*this.armed {
            *this.armed = true;
            let limit = *this.limit;
            let soft = this.slow.as_ref().map(|s| s.after);
            if soft.filter(|a| limit.is_none_or(|l| *a < l)).is_none() {
                *this.slow = None;
            }
            let now = Instant::now();
            *this.started = Some(now);
            if let Some(at) = phase(this.slow, *this.limit).and_then(|d| now.checked_add(d)) {
                this.deadline.arm(at);
            }
        }
        let resp = match this.sent.poll(cx) {
            Poll::Ready(resp) => resp?,
            Poll::Pending => loop {
                if !this.deadline.poll_passed(cx) {
                    return Poll::Pending;
                }
                let Some(wait) = phase(this.slow, *this.limit) else {
                    return Poll::Pending;
                };
                // A request body still going on is not late: the time runs
                // from its last frame.
                if let Some(s) = this.sending.as_ref() {
                    if let Some(at) = s.last().checked_add(wait) {
                        if at > Instant::now() {
                            this.deadline.reset(at);
                            continue;
                        }
                    }
                }
                if let Some(slow) = this.slow.take() {
                    // Late: report it now, then wait on to the timeout.
                    slow.observer.slow(this.up.id, slow.after);
                    let Some(limit) = *this.limit else {
                        *this.deadline = Deadline::default();
                        return Poll::Pending;
                    };
                    let from = match this.sending.as_ref() {
                        Some(s) => Some(s.last()),
                        None => *this.started,
                    };
                    let from = from.unwrap_or_else(Instant::now);
                    if let Some(at) = from.checked_add(limit) {
                        this.deadline.reset(at);
                    }
                    continue;
                }
                let limit = this.limit.unwrap_or_default();
                let msg = format!("no response head within {limit:?}");
                return Poll::Ready(Err(OutcomeError::new(Outcome::Timeout, msg).into()));
            },
        };
        Poll::Ready(respond(
            resp,
            this.client_upgrade.take(),
            this.up,
            *this.idle,
            *this.tunnel,
        ))
    }
}

/// How long the current wait may last: to the slow report while one is
/// still to make, else to the response timeout.
fn phase(slow: &Option<SlowResponse>, limit: Option<Duration>) -> Option<Duration> {
    slow.as_ref().map(|s| s.after).or(limit)
}

/// The backend's response as the client gets it: a protocol switch joined,
/// hop-by-hop headers removed, HTTP/1.1, the body under the idle timeout.
fn respond(
    mut resp: Response<BackendBody>,
    client_upgrade: Option<OnUpgrade>,
    up: &Upstream,
    idle: Option<Duration>,
    tunnel: Option<Duration>,
) -> Result<Response<IdleBody<BackendBody>>, BoxError> {
    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    match client_upgrade {
        Some(client_side) if switching => {
            let backend_side = hyper::upgrade::on(&mut resp);
            tokio::spawn(upgrade::tunnel(
                client_side,
                backend_side,
                up.lease.clone(),
                up.name.clone(),
                tunnel,
            ));
            strip_hop_by_hop(resp.headers_mut(), true);
        }
        None if switching => {
            let msg = "the backend switched protocols on a request that asked for no switch";
            return Err(OutcomeError::new(Outcome::Broken, msg).into());
        }
        _ => strip_hop_by_hop(resp.headers_mut(), false),
    }
    *resp.version_mut() = Version::HTTP_11;
    Ok(resp.map(|b| IdleBody::new(b, idle)))
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
    if let Some(uri) = backend_target(req.method(), req.uri(), up.addr)? {
        *req.uri_mut() = uri;
    }
    *req.version_mut() = Version::HTTP_11;
    Ok(())
}

/// The request target sent to the backend, when it is not the client's as
/// is: the origin form `/path?query` (an absolute-form URI loses its scheme
/// and authority), or for CONNECT the backend's `IP:PORT`.
fn backend_target(
    method: &Method,
    uri: &Uri,
    addr: SocketAddr,
) -> Result<Option<Uri>, OutcomeError> {
    fn broken(e: impl Into<BoxError>) -> OutcomeError {
        OutcomeError::unsent(Outcome::Broken, e)
    }
    if method == Method::CONNECT {
        let mut parts = Parts::default();
        parts.authority = Some(Authority::try_from(addr.to_string()).map_err(broken)?);
        return Uri::from_parts(parts).map(Some).map_err(broken);
    }
    match uri.path_and_query() {
        _ if uri.scheme().is_none() && uri.authority().is_none() => Ok(None),
        Some(pq) if pq.as_str() != "/" => {
            let mut parts = Parts::default();
            parts.path_and_query = Some(pq.clone());
            Uri::from_parts(parts).map(Some).map_err(broken)
        }
        _ => Ok(Some(Uri::default())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(method: Method, uri: &str) -> Option<String> {
        let addr = "[::1]:9001".parse().unwrap();
        backend_target(&method, &uri.parse().unwrap(), addr)
            .unwrap()
            .map(|u| u.to_string())
    }

    #[test]
    fn backends_get_the_origin_form() {
        assert_eq!(target(Method::GET, "/a/b?c=1"), None, "kept as is");
        assert_eq!(target(Method::OPTIONS, "*"), None, "kept as is");
        let abs = target(Method::GET, "http://example.com/a/b?c=1");
        assert_eq!(abs.as_deref(), Some("/a/b?c=1"));
        let bare = target(Method::GET, "http://example.com");
        assert_eq!(bare.as_deref(), Some("/"));
        let connect = target(Method::CONNECT, "example.com:443");
        assert_eq!(connect.as_deref(), Some("[::1]:9001"));
    }
}
