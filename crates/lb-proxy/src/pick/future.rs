//! The future of one balanced request: its attempts, outcome reports and
//! retries, as a small state machine (no boxing, no task).

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::{Extensions, HeaderMap, Method, Request, Response, Uri, Version};
use hyper::body::Body;
use lb_core::{BackendId, Outcome};
use lb_sched::Conn;
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_service::Service;

use super::body::{Lease, LeasedBody, Sending, Upstream, UpstreamBody};
use super::error::{classify_sent, BoxError, Error};
use super::policy::{is_idempotent, status_is_failure, MAX_TRIES};
use super::service::{Head, Shared};
use super::{ClientAddr, LocalAddr};

/// A request head kept to send the request again.
struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    extensions: Kept,
}

/// A request's extensions, kept for a replay.
enum Kept {
    /// Only the addresses [`Server`](crate::http::Server) puts in every
    /// request (the usual case): copied, with no map or boxes to clone.
    Addrs(Option<ClientAddr>, Option<LocalAddr>),
    /// Anything else: the whole map.
    All(Extensions),
}

impl Kept {
    fn new(ext: &Extensions) -> Self {
        let client = ext.get::<ClientAddr>().copied();
        let local = ext.get::<LocalAddr>().copied();
        if ext.len() == usize::from(client.is_some()) + usize::from(local.is_some()) {
            Kept::Addrs(client, local)
        } else {
            Kept::All(ext.clone())
        }
    }

    fn to_extensions(&self) -> Extensions {
        match self {
            Kept::Addrs(client, local) => {
                let mut ext = Extensions::new();
                if let Some(c) = client {
                    ext.insert(*c);
                }
                if let Some(l) = local {
                    ext.insert(*l);
                }
                ext
            }
            Kept::All(ext) => ext.clone(),
        }
    }
}

impl Replay {
    fn request<B>(&self, upstream: Upstream) -> Request<UpstreamBody<B>> {
        let mut req = Request::new(UpstreamBody::empty());
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        *req.extensions_mut() = self.extensions.to_extensions();
        req.extensions_mut().insert(upstream);
        req
    }
}

/// The attempt under way.
struct Current {
    id: BackendId,
    name: Arc<str>,
    lease: Lease,
}

fn upstream(conn: Conn) -> (Upstream, Current) {
    let lease = Lease::new(conn.guard);
    let up = Upstream {
        id: conn.backend,
        name: conn.name.clone(),
        addr: conn.addr,
        lease: lease.clone(),
    };
    let cur = Current {
        id: conn.backend,
        name: conn.name,
        lease,
    };
    (up, cur)
}

/// Everything but the pinned state.
struct Attempts<S, B> {
    shared: Arc<Shared>,
    inner: S,
    method: Method,
    replay: Option<Replay>,
    client: SocketAddr,
    local: Option<SocketAddr>,
    tried: [BackendId; MAX_TRIES],
    n_tried: usize,
    first: Instant,
    started: Instant,
    current: Option<Current>,
    /// The backend of the retry to make (the request is rebuilt from the
    /// replay copy when it is made).
    next: Option<Upstream>,
    _body: PhantomData<fn(B)>,
    /// Whether the client's body failed while being sent (only a streamed
    /// body can: an empty one needs no flag, and no allocation).
    client_failed: Option<Arc<Sending>>,
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Failed { error: Option<Error> },
        Waiting,
        Calling { #[pin] fut: F },
        Done,
    }
}

pin_project! {
    /// The response future of [`Balance`](crate::Balance).
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<UpstreamBody<B>>>,
    {
        #[pin]
        state: State<S::Future>,
        attempts: Attempts<S, B>,
    }
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<UpstreamBody<B>>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("tried", &&self.attempts.tried[..self.attempts.n_tried])
            .finish()
    }
}

enum Step<T> {
    Done(T),
    Retry,
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<UpstreamBody<B>>>,
    B: Body,
{
    /// The first attempt is made at once, on `inner` (the instance that
    /// [`Balance`](crate::Balance) found ready).
    pub(crate) fn start(
        shared: Arc<Shared>,
        mut inner: S,
        req: Request<B>,
        conn: Conn,
        client: SocketAddr,
        local: Option<SocketAddr>,
    ) -> Self {
        let (parts, body) = req.into_parts();
        let empty = body.is_end_stream();
        let replay = (empty && shared.retry.max_tries() > 1).then(|| Replay {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
            extensions: Kept::new(&parts.extensions),
        });
        let (up, current) = upstream(conn);
        let (body, client_failed) = if empty {
            drop(body);
            (UpstreamBody::empty(), None)
        } else {
            let failed = Arc::new(Sending::new());
            let counters = up.lease.counters().clone();
            (
                UpstreamBody::stream(body, counters, failed.clone()),
                Some(failed),
            )
        };
        let mut tried = [up.id; MAX_TRIES];
        tried[0] = up.id;
        let method = parts.method.clone();
        let mut req = Request::from_parts(parts, body);
        req.extensions_mut().insert(up);
        let now = Instant::now();
        let fut = inner.call(req);
        ResponseFuture {
            state: State::Calling { fut },
            attempts: Attempts {
                shared,
                inner,
                method,
                replay,
                client,
                local,
                tried,
                n_tried: 1,
                first: now,
                started: now,
                current: Some(current),
                next: None,
                _body: PhantomData,
                client_failed,
            },
        }
    }

    pub(crate) fn failed(shared: Arc<Shared>, inner: S, error: Error) -> Self {
        let now = Instant::now();
        ResponseFuture {
            state: State::Failed { error: Some(error) },
            attempts: Attempts {
                shared,
                inner,
                method: Method::GET,
                replay: None,
                client: SocketAddr::from(([0, 0, 0, 0], 0)),
                local: None,
                tried: [BackendId::from_raw(0); MAX_TRIES],
                n_tried: 0,
                first: now,
                started: now,
                current: None,
                next: None,
                _body: PhantomData,
                client_failed: None,
            },
        }
    }
}

impl<S, B, RB> Future for ResponseFuture<S, B>
where
    S: Service<Request<UpstreamBody<B>>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<Response<LeasedBody<RB>>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Failed { error } => {
                    let e = error.take().unwrap_or(Error::NoBackend);
                    this.state.set(State::Done);
                    return Poll::Ready(Err(e));
                }
                StateProj::Waiting => {
                    let a = &mut *this.attempts;
                    if let Err(e) = ready!(a.inner.poll_ready(cx)) {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(Error::Service(e.into())));
                    }
                    let (Some(up), Some(replay)) = (a.next.take(), &a.replay) else {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(Error::NoBackend));
                    };
                    let req = replay.request(up);
                    a.started = Instant::now();
                    let fut = a.inner.call(req);
                    this.state.set(State::Calling { fut });
                }
                StateProj::Calling { fut } => {
                    let res = ready!(fut.poll(cx));
                    match this.attempts.settle(res) {
                        Step::Done(out) => {
                            this.state.set(State::Done);
                            return Poll::Ready(out);
                        }
                        Step::Retry => this.state.set(State::Waiting),
                    }
                }
                StateProj::Done => panic!("ResponseFuture polled after completion"),
            }
        }
    }
}

impl<S, B> Attempts<S, B> {
    /// Report the attempt, then decide: answer, or go on to another backend.
    fn settle<RB, E: Into<BoxError>>(
        &mut self,
        res: Result<Response<RB>, E>,
    ) -> Step<Result<Response<LeasedBody<RB>>, Error>> {
        let latency = self.started.elapsed();
        let Some(cur) = self.current.take() else {
            return Step::Done(Err(Error::NoBackend));
        };
        match res {
            Ok(resp) => {
                let status = resp.status();
                if !self.shared.retry.retries_status(status) {
                    self.report(&cur, Outcome::Success, latency);
                    return Step::Done(Ok(resp.map(|b| LeasedBody::new(b, cur.lease))));
                }
                let outcome = if status_is_failure(status) {
                    Outcome::BadStatus(status.as_u16())
                } else {
                    Outcome::Success
                };
                self.report(&cur, outcome, latency);
                if is_idempotent(&self.method) && self.next_attempt() {
                    return Step::Retry;
                }
                Step::Done(Ok(resp.map(|b| LeasedBody::new(b, cur.lease))))
            }
            Err(e) if self.client_failed.as_ref().is_some_and(|f| f.failed()) => {
                // The client's body broke off: no fault of the backend's,
                // and nothing to send again.
                tracing::debug!(backend = %cur.name, "the client's request body failed");
                Step::Done(Err(Error::Client(e.into())))
            }
            Err(e) => {
                let e: BoxError = e.into();
                let (outcome, sent) = classify_sent(&*e);
                self.report(&cur, outcome, latency);
                tracing::debug!(backend = %cur.name, %outcome, error = %e, "attempt failed");
                if self
                    .shared
                    .retry
                    .retries_outcome(outcome, sent, &self.method)
                    && self.next_attempt()
                {
                    return Step::Retry;
                }
                Step::Done(Err(Error::Backend {
                    backend: cur.name,
                    outcome,
                    source: e,
                }))
            }
        }
    }

    fn report(&self, cur: &Current, outcome: Outcome, latency: std::time::Duration) {
        let ok = outcome.is_success();
        let us = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        cur.lease.counters().record(ok, ok.then_some(us));
        self.shared.observer.observe(cur.id, outcome, latency);
    }

    /// Prepare the next attempt if the limits allow and a backend not yet
    /// tried is eligible.
    fn next_attempt(&mut self) -> bool {
        let retry = &self.shared.retry;
        let Some(replay) = &self.replay else {
            return false;
        };
        if self.n_tried >= retry.max_tries() || self.n_tried >= MAX_TRIES {
            return false;
        }
        if retry
            .time_limit()
            .is_some_and(|t| self.first.elapsed() >= t)
        {
            return false;
        }
        let head = Head {
            method: &replay.method,
            uri: &replay.uri,
            headers: &replay.headers,
            client: self.client,
            local: self.local,
        };
        let Ok(conn) = self.shared.connect(&head, &self.tried[..self.n_tried]) else {
            return false;
        };
        let (up, cur) = upstream(conn);
        tracing::debug!(backend = %cur.name, attempt = self.n_tried + 1, "retrying on the next backend");
        self.tried[self.n_tried] = cur.id;
        self.n_tried += 1;
        self.next = Some(up);
        self.current = Some(cur);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct Other(u8);

    #[test]
    fn replayed_extensions_equal_the_originals() {
        let client = ClientAddr("192.0.2.1:5000".parse().unwrap());
        let local = LocalAddr("127.0.0.1:80".parse().unwrap());
        let mut ext = Extensions::new();
        ext.insert(client);
        ext.insert(local);
        let kept = Kept::new(&ext);
        assert!(matches!(kept, Kept::Addrs(Some(_), Some(_))));
        let again = kept.to_extensions();
        assert_eq!(again.len(), 2);
        assert_eq!(again.get::<ClientAddr>(), Some(&client));
        assert_eq!(again.get::<LocalAddr>(), Some(&local));

        ext.insert(Other(7));
        let kept = Kept::new(&ext);
        assert!(
            matches!(kept, Kept::All(_)),
            "an unknown extension keeps the map"
        );
        let again = kept.to_extensions();
        assert_eq!(again.len(), 3);
        assert_eq!(again.get::<Other>(), Some(&Other(7)));
        assert_eq!(again.get::<ClientAddr>(), Some(&client));

        let none = Kept::new(&Extensions::new()).to_extensions();
        assert!(none.is_empty());
    }
}
