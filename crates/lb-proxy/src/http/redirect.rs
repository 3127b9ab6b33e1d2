//! Redirect-style balancing: answer each request with a redirect to the
//! chosen backend instead of forwarding it (like a GSLB or LVS's
//! "direct routing" at layer 7: the client then talks to the backend).

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use lb_core::{IgnoreOutcomes, NoBackend};
use lb_sched::Balancer;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::pages::{error_text, text_response, ProxyBody};
use crate::key::KeyExtractor;
use crate::pick::service::{Head, Shared};
use crate::pick::{ClientAddr, LocalAddr, Retry};

/// A [`Layer`] that answers requests with a redirect to a backend: see
/// [`Redirect`].
#[derive(Clone, Debug)]
pub struct RedirectLayer {
    shared: Arc<Shared>,
    status: StatusCode,
}

impl RedirectLayer {
    /// Redirect with `302 Found` to backends picked by `lb`.
    pub fn new(lb: Balancer) -> Self {
        RedirectLayer {
            shared: Arc::new(Shared {
                lb,
                key: None,
                observer: Arc::new(IgnoreOutcomes),
                retry: Retry::never(),
            }),
            status: StatusCode::FOUND,
        }
    }

    /// Use another redirect status (`307` keeps the method and body).
    pub fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// Give each pick a hash key built from the request.
    pub fn key(self, key: impl KeyExtractor + 'static) -> Self {
        let Shared {
            lb,
            observer,
            retry,
            ..
        } = Arc::unwrap_or_clone(self.shared);
        RedirectLayer {
            shared: Arc::new(Shared {
                lb,
                key: Some(Arc::new(key)),
                observer,
                retry,
            }),
            status: self.status,
        }
    }
}

impl<S> Layer<S> for RedirectLayer {
    type Service = Redirect<S>;

    fn layer(&self, inner: S) -> Redirect<S> {
        Redirect {
            inner,
            shared: self.shared.clone(),
            status: self.status,
        }
    }
}

/// Answers each request with `302 Found` and `Location:
/// http://BACKEND/path?query`, the backend picked by the scheduler as for a
/// forwarded request (the same context: client, destination, key).
///
/// The pick opens and at once closes a connection on the backend, so it
/// counts in the backend's total and respects its `max_conns`, but never
/// stays active (least-connection schedulers see no load from redirects).
/// When no backend is eligible, the request goes to the inner service (a
/// local fallback page, or [`Unavailable`]).
#[derive(Clone, Debug)]
pub struct Redirect<S> {
    inner: S,
    shared: Arc<Shared>,
    status: StatusCode,
}

pin_project! {
    /// The response future of [`Redirect`].
    pub struct RedirectFuture<F, RB> {
        #[pin]
        state: State<F, RB>,
    }
}

pin_project! {
    #[project = RedirectProj]
    enum State<F, RB> {
        Answered { response: Option<Response<ProxyBody<RB>>> },
        Inner { #[pin] fut: F },
    }
}

impl<F, RB> fmt::Debug for RedirectFuture<F, RB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RedirectFuture")
    }
}

impl<F, RB, E> Future for RedirectFuture<F, RB>
where
    F: Future<Output = Result<Response<RB>, E>>,
{
    type Output = Result<Response<ProxyBody<RB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            RedirectProj::Answered { response } => match response.take() {
                Some(r) => Poll::Ready(Ok(r)),
                None => panic!("RedirectFuture polled after completion"),
            },
            RedirectProj::Inner { fut } => fut
                .poll(cx)
                .map(|r| r.map(|resp| resp.map(ProxyBody::backend))),
        }
    }
}

impl<S, B, RB> Service<Request<B>> for Redirect<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
{
    type Response = Response<ProxyBody<RB>>;
    type Error = S::Error;
    type Future = RedirectFuture<S::Future, RB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let client = req
            .extensions()
            .get::<ClientAddr>()
            .map_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)), |c| c.0);
        let head = Head {
            method: req.method(),
            uri: req.uri(),
            headers: req.headers(),
            client,
            local: req.extensions().get::<LocalAddr>().map(|l| l.0),
        };
        let conn = match self.shared.connect(&head, &[]) {
            Ok(conn) => conn,
            Err(NoBackend) => {
                return RedirectFuture {
                    state: State::Inner {
                        fut: self.inner.call(req),
                    },
                }
            }
        };
        let pq = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let location = format!("http://{}{pq}", conn.addr);
        drop(conn);
        let mut resp = text_response(self.status, "redirected\n");
        match HeaderValue::from_str(&location) {
            Ok(v) => {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            Err(_) => {
                resp = text_response(StatusCode::BAD_REQUEST, error_text(StatusCode::BAD_REQUEST))
            }
        }
        RedirectFuture {
            state: State::Answered {
                response: Some(resp),
            },
        }
    }
}

/// A service that answers every request `503 Service Unavailable`: the
/// fallback under [`Redirect`] when no backend is eligible.
#[derive(Clone, Copy, Debug, Default)]
pub struct Unavailable;

impl<B> Service<Request<B>> for Unavailable {
    type Response = Response<http_body_util::Full<bytes::Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<B>) -> Self::Future {
        let status = StatusCode::SERVICE_UNAVAILABLE;
        let text = bytes::Bytes::from_static(error_text(status).as_bytes());
        let mut resp = Response::new(http_body_util::Full::new(text));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        std::future::ready(Ok(resp))
    }
}
