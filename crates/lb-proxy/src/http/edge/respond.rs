//! The service side of the edge: answering refused requests in order, and
//! telling the connection's reader when responses are done and whether a
//! protocol switch happened.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use hyper::body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::http::pages::{error_text, text_response, ProxyBody};

/// What one client connection's reader ([`EdgeIo`](super::EdgeIo)) and its
/// service share.
#[derive(Debug, Default)]
pub(crate) struct EdgeConn {
    /// Request heads handed to hyper, stand-ins included.
    released: AtomicU64,
    /// Service calls so far.
    called: AtomicU64,
    /// Responses finished (their bodies dropped).
    done: AtomicU64,
    /// Stand-in requests not yet served, in order.
    refusals: Mutex<VecDeque<Refusal>>,
    /// How many: `begin` looks at the queue only when there are some.
    pending_refusals: AtomicU64,
    /// 0: no decision yet; 1: switched protocols; 2: did not.
    upgrade: AtomicU8,
    /// The request being served: [`UNWATCHED`], [`SERVING`], [`ANSWERED`]
    /// or [`TIMED_OUT`].
    phase: AtomicU8,
    reader: Mutex<Option<Waker>>,
    /// The service's task, waiting on the response of a request whose
    /// body is still coming.
    service: Mutex<Option<Waker>>,
}

/// No [`Answering`] watches the request being served.
const UNWATCHED: u8 = 0;
/// The service has not answered the request being served.
const SERVING: u8 = 1;
/// The service's response head is out.
const ANSWERED: u8 = 2;
/// Its body stalled before the service answered: the edge answers 408.
const TIMED_OUT: u8 = 3;

impl EdgeConn {
    /// Note a head handed to hyper.
    pub(crate) fn release(&self) {
        self.released.fetch_add(1, SeqCst);
    }

    /// Note that the next head handed to hyper is a stand-in for a request
    /// to answer with `status`, then close the connection, or (`close`
    /// false) go on serving it.
    pub(crate) fn reject_next(&self, status: StatusCode, close: bool) {
        let at = self.released.load(SeqCst) + 1;
        let mut q = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
        q.push_back(Refusal { at, status, close });
        self.pending_refusals.fetch_add(1, SeqCst);
        drop(q);
        self.release();
    }

    /// Whether some request handed to hyper has not been answered in full.
    pub(crate) fn owes_responses(&self) -> bool {
        self.done.load(SeqCst) < self.released.load(SeqCst)
    }

    /// Whether the last protocol switch request was answered with a switch;
    /// `None` before its response. Taking the answer clears it.
    pub(crate) fn take_upgrade(&self) -> Option<bool> {
        match self.upgrade.swap(0, SeqCst) {
            1 => Some(true),
            2 => Some(false),
            _ => None,
        }
    }

    /// Wake the reader when a response ends or an upgrade is decided.
    pub(crate) fn register(&self, waker: &Waker) {
        let mut slot = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        match slot.as_ref() {
            Some(w) if w.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
    }

    /// Forget the reader's waker: for a reader that will look again by
    /// itself (the own server, which reads the next head only after the
    /// response), so that the end of a response does not wake it for
    /// nothing.
    pub(crate) fn forget_reader(&self) {
        drop(self.reader.lock().unwrap_or_else(|e| e.into_inner()).take());
    }

    fn wake(&self) {
        let waker = self.reader.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Start serving a request: the refusal to answer if it is a stand-in,
    /// and a guard that marks its response done when dropped.
    pub(crate) fn begin(self: &Arc<Self>) -> (Option<Refusal>, ResponseGuard) {
        let n = self.called.fetch_add(1, SeqCst) + 1;
        self.phase.store(UNWATCHED, SeqCst);
        let mut reject = None;
        if self.pending_refusals.load(SeqCst) > 0 {
            let mut q = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
            if q.front().is_some_and(|r| r.at == n) {
                reject = q.pop_front();
                self.pending_refusals.fetch_sub(1, SeqCst);
            }
        }
        (reject, ResponseGuard(self.clone()))
    }

    /// The request body being read stalled: true if the service had not
    /// answered yet (it will answer 408 instead, see [`Answering`]).
    pub(crate) fn body_timed_out(&self) -> bool {
        let won = self
            .phase
            .compare_exchange(SERVING, TIMED_OUT, SeqCst, SeqCst)
            .is_ok();
        if won {
            let waker = self
                .service
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(w) = waker {
                w.wake();
            }
        }
        won
    }

    /// Record whether a protocol switch request got `101`.
    pub(crate) fn decide_upgrade(&self, switched: bool) {
        self.upgrade.store(if switched { 1 } else { 2 }, SeqCst);
        self.wake();
    }
}

/// A request the edge answers itself, in place of the service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// The ordinal of its stand-in among the heads handed to hyper.
    at: u64,
    status: StatusCode,
    /// Whether the connection closes after the answer.
    close: bool,
}

/// Marks a response done when dropped.
#[derive(Debug)]
pub(crate) struct ResponseGuard(Arc<EdgeConn>);

impl Drop for ResponseGuard {
    fn drop(&mut self) {
        self.0.done.fetch_add(1, SeqCst);
        self.0.wake();
    }
}

pin_project! {
    /// The service's response to a request whose body is still coming, or
    /// the edge's 408 if the body stalls first: the service's future is
    /// then dropped, and with it the exchange with the backend.
    pub(crate) struct Answering<F> {
        #[pin]
        inner: F,
        conn: Arc<EdgeConn>,
    }
}

impl<F> Answering<F> {
    /// Watch `inner`, the service's future for the request just begun.
    pub(crate) fn new(inner: F, conn: Arc<EdgeConn>) -> Self {
        conn.phase.store(SERVING, SeqCst);
        Answering { inner, conn }
    }
}

impl<F: Future> Future for Answering<F> {
    type Output = Result<F::Output, Refusal>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let timed_out = Refusal {
            at: 0,
            status: StatusCode::REQUEST_TIMEOUT,
            close: true,
        };
        if this.conn.phase.load(SeqCst) == TIMED_OUT {
            return Poll::Ready(Err(timed_out));
        }
        if let Poll::Ready(out) = this.inner.poll(cx) {
            let answered = this
                .conn
                .phase
                .compare_exchange(SERVING, ANSWERED, SeqCst, SeqCst);
            return Poll::Ready(match answered {
                Err(TIMED_OUT) => Err(timed_out),
                _ => Ok(out),
            });
        }
        *this.conn.service.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
        // The edge may have timed out between the first look and now.
        if this.conn.phase.load(SeqCst) == TIMED_OUT {
            return Poll::Ready(Err(timed_out));
        }
        Poll::Pending
    }
}

pin_project! {
    /// A response body that tells the edge when it is done.
    pub(crate) struct EdgeBody<B> {
        #[pin]
        body: ProxyBody<B>,
        guard: Option<ResponseGuard>,
    }
}

impl<B> EdgeBody<B> {
    /// The service's body.
    pub(crate) fn new(body: B, guard: ResponseGuard) -> Self {
        EdgeBody {
            body: ProxyBody::backend(body),
            guard: Some(guard),
        }
    }

    /// The answer to a refused request: its status, then close (or, for a
    /// refusal that keeps the connection, serve the next request).
    pub(crate) fn refusal(r: Refusal, guard: ResponseGuard) -> Response<Self> {
        let mut resp = text_response::<B>(r.status, error_text(r.status));
        if r.close {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp.map(|body| EdgeBody {
            body,
            guard: Some(guard),
        })
    }
}

impl<B: Body<Data = Bytes>> Body for EdgeBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let polled = this.body.poll_frame(cx);
        if let Poll::Ready(None) = polled {
            // The last piece is out: done, without waiting for the drop.
            this.guard.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
