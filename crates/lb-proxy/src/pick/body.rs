//! The chosen backend as the inner service sees it, and the bodies that
//! carry a request's accounting to the end of its response.

use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Buf;
use hyper::body::{Body, Frame, SizeHint};
use lb_core::{BackendId, ConnGuard, Counters};
use pin_project_lite::pin_project;

/// Keeps one connection counted on its backend (active) while any clone of
/// it is alive.
///
/// [`Balance`](crate::Balance) holds one in the response body until the
/// body ends; an inner service that outlives the response (an upgraded
/// WebSocket tunnel) keeps a clone until it is done.
#[derive(Clone, Debug)]
pub struct Lease(Arc<ConnGuard>);

impl Lease {
    pub(crate) fn new(guard: ConnGuard) -> Self {
        Lease(Arc::new(guard))
    }

    /// The live counters of the backend.
    pub fn counters(&self) -> &Arc<Counters> {
        self.0.counters()
    }
}

/// The backend [`Balance`](crate::Balance) chose for this attempt, put in
/// the request's extensions for the inner service to read.
#[derive(Clone, Debug)]
pub struct Upstream {
    /// The backend's id in the pool.
    pub id: BackendId,
    /// Its name.
    pub name: Arc<str>,
    /// Its address.
    pub addr: SocketAddr,
    /// Its accounting: keep a clone to keep the connection counted.
    pub lease: Lease,
}

pin_project! {
    /// The request body an inner service receives: the client's body, or
    /// nothing when the client's body was empty (so the request can be sent
    /// again to another backend).
    ///
    /// Bytes sent to the backend are added to its counters.
    pub struct UpstreamBody<B> {
        #[pin]
        inner: Inner<B>,
    }
}

pin_project! {
    #[project = InnerProj]
    enum Inner<B> {
        Stream {
            #[pin]
            body: B,
            counters: Option<Arc<Counters>>,
            // Whether the client's body failed (the attempt's error is then
            // the client's doing, not the backend's), and when a byte last
            // went on to the backend.
            failed: Option<Arc<Sending>>,
        },
        Empty,
    }
}

impl<B> UpstreamBody<B> {
    pub(crate) fn stream(body: B, counters: Arc<Counters>, failed: Arc<Sending>) -> Self {
        UpstreamBody {
            inner: Inner::Stream {
                body,
                counters: Some(counters),
                failed: Some(failed),
            },
        }
    }

    /// How the sending of this body goes, when it is the client's body.
    pub(crate) fn sending(&self) -> Option<Arc<Sending>> {
        match &self.inner {
            Inner::Stream { failed, .. } => failed.clone(),
            Inner::Empty => None,
        }
    }

    /// A body with nothing in it.
    pub fn empty() -> Self {
        UpstreamBody {
            inner: Inner::Empty,
        }
    }

    /// A body that streams `body` (without byte accounting).
    pub fn new(body: B) -> Self {
        UpstreamBody {
            inner: Inner::Stream {
                body,
                counters: None,
                failed: None,
            },
        }
    }
}

impl<B> fmt::Debug for UpstreamBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.inner {
            Inner::Stream { .. } => f.write_str("UpstreamBody::Stream"),
            Inner::Empty => f.write_str("UpstreamBody::Empty"),
        }
    }
}

impl<B: Body> Body for UpstreamBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().inner.project() {
            InnerProj::Stream {
                body,
                counters,
                failed,
            } => {
                let frame = ready!(body.poll_frame(cx));
                match (&frame, counters, failed) {
                    (Some(Ok(f)), c, failed) => {
                        if let (Some(d), Some(c)) = (f.data_ref(), c) {
                            c.add_bytes(d.remaining() as u64, 0);
                        }
                        if let Some(s) = failed {
                            s.touch();
                        }
                    }
                    (Some(Err(_)), _, Some(s)) => s.failed.store(true, Ordering::Relaxed),
                    (None, _, Some(s)) => s.touch(),
                    _ => {}
                }
                Poll::Ready(frame)
            }
            InnerProj::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Stream { body, .. } => body.is_end_stream(),
            Inner::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Stream { body, .. } => body.size_hint(),
            Inner::Empty => SizeHint::with_exact(0),
        }
    }
}

/// How a client's request body is going on to the backend: whether it
/// failed, and when its last frame went on (the response timeout runs from
/// then, as nginx's `proxy_read_timeout` starts once the request is sent).
#[derive(Debug)]
pub(crate) struct Sending {
    failed: AtomicBool,
    base: tokio::time::Instant,
    last_ns: AtomicU64,
}

impl Sending {
    pub(crate) fn new() -> Self {
        Sending {
            failed: AtomicBool::new(false),
            base: tokio::time::Instant::now(),
            last_ns: AtomicU64::new(0),
        }
    }

    /// Whether the client's body failed.
    pub(crate) fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// A frame went on now.
    fn touch(&self) {
        let ns = self.base.elapsed().as_nanos();
        self.last_ns
            .store(u64::try_from(ns).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// When the last frame went on (the creation time before any did).
    pub(crate) fn last(&self) -> tokio::time::Instant {
        let ns = self.last_ns.load(Ordering::Relaxed);
        let at = self.base.checked_add(std::time::Duration::from_nanos(ns));
        at.unwrap_or(self.base)
    }
}

pin_project! {
    /// A response body that keeps its request counted on the backend until
    /// the body ends (its last frame, an error, or being dropped), and adds
    /// the bytes it carries to the backend's counters.
    pub struct LeasedBody<B> {
        #[pin]
        body: B,
        lease: Option<Lease>,
    }
}

impl<B> LeasedBody<B> {
    pub(crate) fn new(body: B, lease: Lease) -> Self {
        LeasedBody {
            body,
            lease: Some(lease),
        }
    }

    /// The body without its lease (the lease is released).
    pub fn into_inner(self) -> B {
        self.body
    }
}

impl<B> fmt::Debug for LeasedBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeasedBody")
            .field("open", &self.lease.is_some())
            .finish()
    }
}

impl<B: Body> Body for LeasedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.body.poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let (Some(d), Some(l)) = (f.data_ref(), this.lease.as_ref()) {
                    l.counters().add_bytes(0, d.remaining() as u64);
                }
            }
            // The body ended: the request is over for the backend.
            Some(Err(_)) | None => *this.lease = None,
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
