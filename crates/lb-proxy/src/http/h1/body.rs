//! The response body of the [HTTP/1.1 client](super): read from the
//! backend's connection by whichever task polls it, the connection given
//! back to the pool when the body is over and it can take another request.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use super::chunked::{Decoder, Step};
use super::pool::{Conn, H1Pool};
use super::read::{broken, Kind};
use super::write::{PollUpload, UploadError};
use crate::pick::BoxError;

/// A backend's response body, read by the proxy's own HTTP/1.1 client.
///
/// Small bodies that came with the head are held whole (their connection
/// is already back in the pool); others are read from the connection as
/// the body is polled. Dropped before its end, the body closes its
/// connection.
pub struct H1Body {
    state: State,
}

enum State {
    /// The whole body, at hand.
    Full(Option<Bytes>),
    /// To be read from the connection.
    Stream(Box<Stream>),
    /// Over.
    Done,
}

struct Stream {
    conn: Conn,
    kind: Kind,
    /// For `Kind::Length`: bytes still to hand on.
    left: u64,
    decoder: Decoder,
    reusable: bool,
    pool: H1Pool,
    addr: SocketAddr,
    /// The rest of a request the response came before.
    upload: Option<Box<dyn PollUpload>>,
}

impl fmt::Debug for H1Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Full(_) => "full",
            State::Stream(_) => "streaming",
            State::Done => "done",
        };
        f.debug_struct("H1Body").field("state", &state).finish()
    }
}

impl H1Body {
    /// The body of a response whose head was just read from `conn`.
    /// `reusable` says whether the connection may take another request
    /// after it; `upload` is what is left to send of the request.
    pub(crate) fn new(
        mut conn: Conn,
        kind: Kind,
        reusable: bool,
        pool: H1Pool,
        addr: SocketAddr,
        upload: Option<Box<dyn PollUpload>>,
    ) -> Self {
        let sent = upload.is_none();
        let buffered = conn.buf.len() as u64;
        let whole = match kind {
            Kind::Empty => Some(None),
            Kind::Length(n) if buffered >= n => {
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                Some(Some(conn.buf.split_to(n).freeze()))
            }
            _ => None,
        };
        if let Some(body) = whole {
            if sent && reusable {
                pool.put(addr, conn);
            }
            return H1Body {
                state: State::Full(body),
            };
        }
        let left = match kind {
            Kind::Length(n) => n,
            _ => 0,
        };
        H1Body {
            state: State::Stream(Box::new(Stream {
                conn,
                kind,
                left,
                decoder: Decoder::new(),
                reusable,
                pool,
                addr,
                upload,
            })),
        }
    }
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match &mut this.state {
            State::Full(body) => {
                let frame = body.take().map(|b| Ok(Frame::data(b)));
                this.state = State::Done;
                Poll::Ready(frame)
            }
            State::Done => Poll::Ready(None),
            State::Stream(s) => {
                let r = ready!(s.poll_frame(cx));
                // The last bytes of a sized body end it at once: the
                // connection goes back before anyone polls for the end.
                let last = matches!(s.kind, Kind::Length(_)) && s.left == 0;
                match &r {
                    Ok(Some(f)) if !f.is_trailers() && !last => {}
                    Ok(_) => {
                        let State::Stream(s) = std::mem::replace(&mut this.state, State::Done)
                        else {
                            return Poll::Ready(None);
                        };
                        (*s).release();
                    }
                    Err(_) => this.state = State::Done,
                }
                Poll::Ready(r.transpose())
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            State::Full(body) => body.is_none(),
            State::Stream(_) => false,
            State::Done => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            State::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            State::Full(None) | State::Done => SizeHint::with_exact(0),
            State::Stream(s) if matches!(s.kind, Kind::Length(_)) => SizeHint::with_exact(s.left),
            State::Stream(_) => SizeHint::default(),
        }
    }
}

impl Stream {
    /// The next frame; `Ok(None)` and trailers end the body.
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Frame<Bytes>>, BoxError>> {
        loop {
            self.poll_upload(cx)?;
            let buf = &mut self.conn.buf;
            match self.kind {
                Kind::Empty => return Poll::Ready(Ok(None)),
                Kind::Length(_) if self.left == 0 => return Poll::Ready(Ok(None)),
                Kind::Length(_) if !buf.is_empty() => {
                    let n = usize::try_from(self.left)
                        .unwrap_or(usize::MAX)
                        .min(buf.len());
                    self.left -= n as u64;
                    return Poll::Ready(Ok(Some(Frame::data(buf.split_to(n).freeze()))));
                }
                Kind::Chunked => match self.decoder.decode(buf)? {
                    Step::Data(d) => return Poll::Ready(Ok(Some(Frame::data(d)))),
                    Step::Trailers(t) => return Poll::Ready(Ok(Some(Frame::trailers(t)))),
                    Step::End => return Poll::Ready(Ok(None)),
                    Step::More => {}
                },
                Kind::Close if !buf.is_empty() => {
                    let all = buf.split().freeze();
                    return Poll::Ready(Ok(Some(Frame::data(all))));
                }
                Kind::Length(_) | Kind::Close => {}
            }
            let n = ready!(poll_fill(&mut self.conn, cx)).map_err(broken)?;
            if n == 0 {
                if self.kind == Kind::Close {
                    self.reusable = false;
                    return Poll::Ready(Ok(None));
                }
                return Poll::Ready(Err(broken(
                    "the backend closed the connection before the end of the body",
                )));
            }
        }
    }

    /// Send on what is left of the request, as far as it goes now. The
    /// client's body failing cuts the response too (the exchange is
    /// broken); the backend no longer taking the request does not (it may
    /// have answered already), but the connection is then not reused.
    fn poll_upload(&mut self, cx: &mut Context<'_>) -> Result<(), BoxError> {
        let Some(up) = self.upload.as_mut() else {
            return Ok(());
        };
        match up.poll_send(&mut self.conn.io, cx) {
            Poll::Ready(Ok(())) => self.upload = None,
            Poll::Ready(Err(e @ UploadError::Client(_))) => return Err(e.into()),
            Poll::Ready(Err(e)) => {
                tracing::debug!(backend = %self.addr, error = %e, "the rest of the request was not sent");
                self.upload = None;
                self.reusable = false;
            }
            Poll::Pending => {}
        }
        Ok(())
    }

    /// The body is over: the connection goes back to the pool if it can
    /// take another request, else it is closed.
    fn release(self) {
        if self.reusable && self.upload.is_none() && self.conn.buf.is_empty() {
            self.pool.put(self.addr, self.conn);
        }
    }
}

/// Read what the socket has into the connection's buffer: the count, 0 at
/// the end of the stream (reads grow through a bulk body: `ReadSize`).
pub(crate) fn poll_fill(conn: &mut Conn, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
    conn.read_size.poll_fill(&mut conn.io, &mut conn.buf, cx)
}
