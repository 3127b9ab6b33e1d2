//! The balancing service and its layer.

use std::cell::RefCell;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderMap, Method, Request, Response, Uri};
use hyper::body::Body;
use lb_core::{BackendId, Ctx, IgnoreOutcomes, NoBackend, Observer};
use lb_sched::{Balancer, Conn};
use tower_layer::Layer;
use tower_service::Service;

use super::body::{LeasedBody, UpstreamBody};
use super::error::{BoxError, Error};
use super::future::ResponseFuture;
use super::policy::Retry;
use super::{ClientAddr, LocalAddr};
use crate::key::{KeyExtractor, KeyInput};

/// Keys longer than this do not keep their buffer's memory after the pick.
const KEEP_KEY_CAPACITY: usize = 16 * 1024;

thread_local! {
    static KEY_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// What every clone of a [`Balance`] shares.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) lb: Balancer,
    pub(crate) key: Option<Arc<dyn KeyExtractor>>,
    pub(crate) observer: Arc<dyn Observer>,
    pub(crate) retry: Retry,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balance")
            .field("balancer", &self.lb)
            .field("key", &self.key)
            .field("observer", &self.observer)
            .field("retry", &self.retry)
            .finish()
    }
}

/// The parts of a request a pick looks at.
pub(crate) struct Head<'a> {
    pub(crate) method: &'a Method,
    pub(crate) uri: &'a Uri,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) client: SocketAddr,
    pub(crate) local: Option<SocketAddr>,
}

impl Shared {
    /// Pick a backend not in `tried` and open a counted connection on it.
    /// Lock-free: one snapshot load, the scheduler's pick, one atomic
    /// reservation. The key is rendered into a reused thread-local buffer.
    pub(crate) fn connect(&self, head: &Head<'_>, tried: &[BackendId]) -> Result<Conn, NoBackend> {
        let mut ctx = Ctx::new(head.client).with_tried(tried);
        if let Some(local) = head.local {
            ctx = ctx.with_dest(local);
        }
        let Some(key) = &self.key else {
            return self.lb.connect(&ctx);
        };
        KEY_BUF.with_borrow_mut(|buf| {
            buf.clear();
            let input = KeyInput {
                method: head.method,
                uri: head.uri,
                headers: head.headers,
                client: head.client,
                local: head.local,
            };
            key.extract(&input, buf);
            let conn = self.lb.connect(&ctx.with_key(buf));
            if buf.capacity() > KEEP_KEY_CAPACITY {
                *buf = Vec::new();
            }
            conn
        })
    }
}

/// A [`Layer`] that balances requests over a pool: see [`Balance`].
///
/// ```
/// use lb_core::{Backend, Pool};
/// use lb_proxy::{BalanceLayer, KeyTemplate, Retry};
/// use lb_sched::Balancer;
///
/// let pool = Pool::new();
/// pool.add(Backend::new("a", "127.0.0.1:9001".parse()?))?;
/// let layer = BalanceLayer::new(Balancer::new(pool, lb_sched::build("wrr")?))
///     .key("$remote_addr".parse::<KeyTemplate>()?)
///     .retry(Retry::default().tries(2));
/// # let _ = layer;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct BalanceLayer {
    lb: Balancer,
    key: Option<Arc<dyn KeyExtractor>>,
    observer: Arc<dyn Observer>,
    retry: Retry,
}

impl BalanceLayer {
    /// Balance over `lb`'s pool with its scheduler; no hash key, outcomes
    /// ignored, [`Retry::default`].
    pub fn new(lb: Balancer) -> Self {
        BalanceLayer {
            lb,
            key: None,
            observer: Arc::new(IgnoreOutcomes),
            retry: Retry::default(),
        }
    }

    /// Give each pick a hash key built from the request (a
    /// [`KeyTemplate`](crate::KeyTemplate) or any [`KeyExtractor`]).
    pub fn key(mut self, key: impl KeyExtractor + 'static) -> Self {
        self.key = Some(Arc::new(key));
        self
    }

    /// As [`key`](Self::key), from a shared extractor.
    pub fn key_shared(mut self, key: Arc<dyn KeyExtractor>) -> Self {
        self.key = Some(key);
        self
    }

    /// Report every attempt's outcome and latency to `observer` (passive
    /// health checking).
    pub fn observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = observer;
        self
    }

    /// When to try the next backend (see [`Retry`]).
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }
}

impl<S> Layer<S> for BalanceLayer {
    type Service = Balance<S>;

    fn layer(&self, inner: S) -> Balance<S> {
        Balance {
            inner,
            shared: Arc::new(Shared {
                lb: self.lb.clone(),
                key: self.key.clone(),
                observer: self.observer.clone(),
                retry: self.retry,
            }),
        }
    }
}

/// Balances requests over a pool: picks a backend for each request, hands
/// the request to the inner per-backend service with the choice in its
/// extensions ([`Upstream`](crate::Upstream)), keeps the request counted on
/// the backend until the response body ends, reports each attempt's
/// outcome, and tries the next backend when [`Retry`] allows.
///
/// The pick happens in `call`, against the pool's current snapshot, with
/// no lock, no queue and no task hop: an idle service never stalls. The
/// context of the pick is the client address from the [`ClientAddr`]
/// extension (`0.0.0.0:0` without one), the destination from
/// [`LocalAddr`], and the hash key from the configured extractor.
///
/// The inner service receives the request with an [`UpstreamBody`]: the
/// client's body streamed, or nothing when it was empty. It reports how an
/// attempt failed through its error (see [`classify`](crate::classify)).
///
/// Each attempt's outcome goes to the observer and to the backend's
/// [`Counters::record`](lb_core::Counters::record) once its response head
/// arrives or it fails, as nginx reports to `max_fails` (a body that breaks
/// later is not counted again).
#[derive(Clone, Debug)]
pub struct Balance<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Balance<S> {
    /// Balance over `lb` with the defaults of [`BalanceLayer::new`].
    pub fn new(lb: Balancer, inner: S) -> Self {
        BalanceLayer::new(lb).layer(inner)
    }

    /// The balancer (its pool can be changed while the service runs).
    pub fn balancer(&self) -> &Balancer {
        &self.shared.lb
    }
}

impl<S, B, RB> Service<Request<B>> for Balance<S>
where
    S: Service<Request<UpstreamBody<B>>, Response = Response<RB>> + Clone,
    S::Error: Into<BoxError>,
    B: Body,
{
    type Response = Response<LeasedBody<RB>>;
    type Error = Error;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(|e| Error::Service(e.into()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The ready service serves this request; a clone takes its place.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let client = req
            .extensions()
            .get::<ClientAddr>()
            .map_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)), |c| c.0);
        let local = req.extensions().get::<LocalAddr>().map(|l| l.0);
        let head = Head {
            method: req.method(),
            uri: req.uri(),
            headers: req.headers(),
            client,
            local,
        };
        match self.shared.connect(&head, &[]) {
            Ok(conn) => ResponseFuture::start(self.shared.clone(), inner, req, conn, client, local),
            Err(NoBackend) => ResponseFuture::failed(self.shared.clone(), inner, Error::NoBackend),
        }
    }
}
