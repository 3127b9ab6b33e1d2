//! One request through the [HTTP/1.1 client](super): a connection taken
//! from the pool (or made), the request written, the response head read,
//! all in the request's own task.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{Method, Request, Response};
use hyper::body::Body;
use lb_core::Outcome;

use super::body::{poll_fill, H1Body};
use super::chunked::Decoder;
use super::pool::{Conn, H1Pool};
use super::read::{self, broken, Kind, Parsed};
use super::write::{PollUpload, Upload, UploadError};
use crate::http::BackendBody;
use crate::pick::{is_idempotent, BoxError, OutcomeError, UpstreamBody};

type Connecting = Pin<Box<dyn Future<Output = Result<Conn, BoxError>> + Send>>;

/// The response head of a request sent by the HTTP/1.1 client.
///
/// A reused connection that turns out closed is left for another (a new
/// one, or another idle one) when the backend cannot have acted on the
/// request: nothing of it was written, or (for an idempotent request
/// written whole from one buffer) the backend closed or reset the
/// connection without answering a byte.
pub(crate) struct Exchange<B: Body> {
    pool: H1Pool,
    addr: SocketAddr,
    upload: Option<Upload<B>>,
    /// Whether the whole request is written.
    sent: bool,
    /// Why writing the request stopped short (the response is still read:
    /// the backend may have answered before it stopped reading).
    write_error: Option<io::Error>,
    conn: Option<Conn>,
    connecting: Option<Connecting>,
    reused: bool,
    /// Whether an interim response came: the backend has the request.
    answered: bool,
    /// Whether bytes came that the head parser has not seen.
    unparsed: bool,
    head_request: bool,
    idempotent: bool,
    /// An error to give at the first poll.
    error: Option<BoxError>,
}

// No field is pinned: the body is polled through `Pin::new` (it is
// `Unpin`), and its buffered data is only read through `&mut`.
impl<B: Body> Unpin for Exchange<B> {}

impl<B: Body> fmt::Debug for Exchange<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exchange")
            .field("addr", &self.addr)
            .field("sent", &self.sent)
            .field("reused", &self.reused)
            .finish_non_exhaustive()
    }
}

impl<B> Exchange<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// Send `req` (prepared for the backend) to `addr`.
    pub(crate) fn new(pool: H1Pool, addr: SocketAddr, req: Request<UpstreamBody<B>>) -> Self {
        let head_request = req.method() == Method::HEAD;
        let idempotent = is_idempotent(req.method());
        let (upload, error) = match Upload::new(req) {
            Ok(up) => (Some(up), None),
            Err(why) => (
                None,
                Some(OutcomeError::unsent(Outcome::Broken, why).into()),
            ),
        };
        Exchange {
            pool,
            addr,
            upload,
            sent: false,
            write_error: None,
            conn: None,
            connecting: None,
            reused: false,
            answered: false,
            unparsed: true,
            head_request,
            idempotent,
            error,
        }
    }

    /// A connection: an idle one, else a new one.
    fn poll_conn(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        loop {
            if self.conn.is_some() {
                return Poll::Ready(Ok(()));
            }
            if let Some(c) = self.connecting.as_mut() {
                let conn = ready!(c.as_mut().poll(cx));
                self.connecting = None;
                self.conn = Some(conn?);
                self.reused = false;
                self.answered = false;
                continue;
            }
            match self.pool.take(self.addr) {
                Some(conn) => {
                    self.conn = Some(conn);
                    self.reused = true;
                    self.answered = false;
                }
                None => self.connecting = Some(Box::pin(self.pool.clone().connect(self.addr))),
            }
        }
    }

    /// Drop the connection and start over on another, if the request can
    /// be written again from its first byte and the backend cannot have
    /// acted on it.
    fn resend(&mut self, answered_nothing: bool) -> bool {
        let Some(up) = self.upload.as_mut() else {
            return false;
        };
        let untouched = up.sent() == 0 || (answered_nothing && self.idempotent);
        if !self.reused || !untouched || !up.rewind() {
            return false;
        }
        tracing::debug!(backend = %self.addr, "a reused connection was closed: sending on another");
        self.conn = None;
        self.sent = false;
        self.write_error = None;
        true
    }

    /// Write what can be written of the request.
    fn poll_upload(&mut self, cx: &mut Context<'_>) -> Result<bool, BoxError> {
        let (Some(up), Some(conn)) = (self.upload.as_mut(), self.conn.as_mut()) else {
            return Ok(false);
        };
        if self.sent || self.write_error.is_some() {
            return Ok(false);
        }
        match up.poll_send(&mut conn.io, cx) {
            Poll::Ready(Ok(())) => self.sent = true,
            Poll::Ready(Err(UploadError::Io(e))) => {
                if self.resend(false) {
                    return Ok(true);
                }
                self.write_error = Some(e);
            }
            Poll::Ready(Err(e @ UploadError::Client(_))) => return Err(e.into()),
            Poll::Ready(Err(e @ UploadError::Framing(_))) => {
                let sent = up.sent() > 0;
                return Err(if sent {
                    OutcomeError::new(Outcome::Broken, e).into()
                } else {
                    OutcomeError::unsent(Outcome::Broken, e).into()
                });
            }
            Poll::Pending => {}
        }
        Ok(false)
    }

    /// The response, once its head is read.
    fn respond(&mut self, head: read::Head) -> Result<Response<BackendBody>, BoxError> {
        let conn = self.conn.take().ok_or("no connection")?;
        if head.kind == Kind::Chunked {
            Decoder::check_start(&conn.buf)?;
        }
        let upload: Option<Box<dyn PollUpload>> = match self.upload.take() {
            Some(up) if !self.sent && self.write_error.is_none() => Some(Box::new(up)),
            _ => None,
        };
        let reusable = head.reusable && self.write_error.is_none();
        let body = H1Body::new(
            conn,
            head.kind,
            reusable,
            self.pool.clone(),
            self.addr,
            upload,
        );
        Ok(head.response.map(|()| BackendBody::h1(body)))
    }

    /// The connection ended (or failed) before a whole response head.
    fn cut(&mut self, e: Option<io::Error>) -> Result<bool, BoxError> {
        let nothing = !self.answered && self.conn.as_ref().is_some_and(|c| c.buf.is_empty());
        let reset = e.as_ref().is_none_or(|e| {
            matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
            )
        });
        if nothing && reset && self.resend(true) {
            return Ok(true);
        }
        let unsent = self.upload.as_ref().is_some_and(|up| up.sent() == 0);
        Err(match (self.write_error.take(), e) {
            // Not a byte went out: the request may go to another backend.
            (Some(w), _) if unsent => OutcomeError::unsent(Outcome::Broken, w).into(),
            (Some(w), _) => broken(w),
            (None, Some(e)) => broken(e),
            (None, None) => broken("the backend closed the connection before its response head"),
        })
    }
}

impl<B> Future for Exchange<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<BackendBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Some(e) = this.error.take() {
            return Poll::Ready(Err(e));
        }
        loop {
            ready!(this.poll_conn(cx))?;
            if this.poll_upload(cx)? {
                continue;
            }
            let Some(conn) = this.conn.as_mut() else {
                continue;
            };
            // Parsed only when bytes came since the last try.
            if this.unparsed && !conn.buf.is_empty() {
                this.unparsed = false;
                match read::parse(&mut conn.buf, this.head_request)? {
                    Parsed::Final(head) => return Poll::Ready(this.respond(head)),
                    Parsed::Interim => {
                        this.answered = true;
                        this.unparsed = true;
                        continue;
                    }
                    Parsed::Partial => {}
                }
            }
            let filled = match ready!(poll_fill(conn, cx)) {
                Ok(0) => this.cut(None),
                Ok(_) => {
                    this.unparsed = true;
                    Ok(false)
                }
                Err(e) => this.cut(Some(e)),
            };
            filled?;
        }
    }
}
