//! The request body as the service sees it: [`ClientBody`], read from the
//! client's connection by whichever task polls it, or hyper's `Incoming`
//! on connections hyper serves.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::io::AsyncRead;
use tokio::net::TcpStream;

use super::super::edge::EdgeIo;
use super::super::h1::chunked::{Decoder, Step};
use super::super::readsize::ReadSize;
use crate::pick::BoxError;

/// Room made for reading heads: an idle keep-alive connection holds no more
/// (the edge reads the socket in larger pieces and keeps what it checks).
pub(crate) const HEAD_CHUNK: usize = 4 * 1024;

/// Below this much room left in the read buffer, it grows.
const MIN_ROOM: usize = 1024;

/// A request body as [`Server`](super::super::Server) hands it to its
/// service: read from the client's connection by the proxy's own HTTP/1.1
/// server (plain HTTP/1 requests), or by hyper's (HTTP/2, protocol
/// switches, `Expect: 100-continue`).
///
/// Data comes as the client sends it, one read at a time: nothing is read
/// from the client before the body is polled.
pub struct ClientBody {
    inner: Inner,
}

enum Inner {
    Empty,
    H1(ReqBody),
    Hyper(Incoming),
}

impl ClientBody {
    /// A body read by hyper's server.
    pub fn hyper(body: Incoming) -> Self {
        ClientBody {
            inner: Inner::Hyper(body),
        }
    }

    /// No body.
    pub fn empty() -> Self {
        ClientBody {
            inner: Inner::Empty,
        }
    }

    pub(crate) fn h1(link: Link, gen: u64, left: Option<u64>) -> Self {
        ClientBody {
            inner: Inner::H1(ReqBody {
                link,
                gen,
                left,
                ended: false,
            }),
        }
    }
}

impl Default for ClientBody {
    fn default() -> Self {
        Self::empty()
    }
}

impl From<Incoming> for ClientBody {
    fn from(body: Incoming) -> Self {
        Self::hyper(body)
    }
}

impl fmt::Debug for ClientBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Inner::Empty => f.write_str("ClientBody::Empty"),
            Inner::H1(b) => f
                .debug_struct("ClientBody::H1")
                .field("left", &b.left)
                .field("ended", &b.ended)
                .finish(),
            Inner::Hyper(b) => f.debug_tuple("ClientBody::Hyper").field(b).finish(),
        }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().inner {
            Inner::Empty => Poll::Ready(None),
            Inner::H1(b) => b.poll_frame(cx),
            Inner::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Empty => true,
            Inner::H1(b) => b.ended,
            Inner::Hyper(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Empty => SizeHint::with_exact(0),
            Inner::H1(b) if b.ended => SizeHint::with_exact(0),
            Inner::H1(b) => b.left.map_or_else(SizeHint::default, SizeHint::with_exact),
            Inner::Hyper(b) => b.size_hint(),
        }
    }
}

/// A body read by the own server, from the connection it shares with it.
struct ReqBody {
    link: Link,
    /// Which request's body this is: the connection's reading moves on
    /// (and this handle reads no more) once the request is done with.
    gen: u64,
    /// Bytes still to come of a sized body.
    left: Option<u64>,
    ended: bool,
}

impl ReqBody {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let mut shared = lock(&self.link);
        if shared.gen != self.gen {
            self.ended = true;
            return Poll::Ready(Some(Err(
                "request body read after its request was done".into()
            )));
        }
        let polled = shared.poll_body(cx);
        drop(shared);
        match &polled {
            Poll::Ready(Some(Ok(f))) => {
                if let (Some(left), Some(d)) = (self.left.as_mut(), f.data_ref()) {
                    *left = left.saturating_sub(d.len() as u64);
                }
                self.ended = f.is_trailers();
            }
            Poll::Ready(_) => self.ended = true,
            Poll::Pending => {}
        }
        polled
    }
}

/// How the body of the request being read goes on.
#[derive(Debug)]
pub(crate) enum Reading {
    /// Over (or none).
    Done,
    /// This many bytes still to come.
    Length(u64),
    /// Chunked: decoding.
    Chunked(Decoder),
    /// Broken off: the connection cannot go on.
    Failed,
}

/// The client connection, shared by the server's task and the body of the
/// request being read: one of them reads at a time, and the lock is never
/// held across a wait.
pub(crate) type Link = Arc<Mutex<Shared>>;

/// What the lock guards.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) io: EdgeIo<TcpStream>,
    /// Read from the client, not yet consumed.
    pub(crate) buf: BytesMut,
    pub(crate) body: Reading,
    /// The request whose body is read now.
    pub(crate) gen: u64,
    /// How much a body read takes (growing through a bulk upload, so that
    /// it comes in few large frames, passed on without a copy).
    body_read: ReadSize,
}

/// Lock the connection (a poisoned lock is taken as is: every change under
/// it leaves it consistent).
pub(crate) fn lock(link: &Link) -> MutexGuard<'_, Shared> {
    link.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub(crate) fn new(io: EdgeIo<TcpStream>) -> Self {
        Shared {
            io,
            buf: BytesMut::new(),
            body: Reading::Done,
            gen: 0,
            body_read: ReadSize::default(),
        }
    }

    /// Read what the client sent into `buf` (with room for at least
    /// `room` bytes): the number of bytes, 0 at EOF.
    pub(crate) fn poll_fill(
        &mut self,
        cx: &mut Context<'_>,
        room: usize,
    ) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < MIN_ROOM {
            self.buf.reserve(room);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }

    /// The next frame of the request body being read.
    pub(crate) fn poll_body(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            match &mut self.body {
                Reading::Done => return Poll::Ready(None),
                Reading::Failed => return Poll::Ready(Some(Err("request body broken off".into()))),
                Reading::Length(0) => {
                    self.body = Reading::Done;
                    return Poll::Ready(None);
                }
                Reading::Length(left) if !self.buf.is_empty() => {
                    let n = usize::try_from(*left)
                        .unwrap_or(usize::MAX)
                        .min(self.buf.len());
                    *left -= n as u64;
                    if *left == 0 {
                        self.body = Reading::Done;
                    }
                    return Poll::Ready(Some(Ok(Frame::data(self.buf.split_to(n).freeze()))));
                }
                Reading::Length(_) => {}
                Reading::Chunked(d) => match d.decode(&mut self.buf) {
                    Ok(Step::Data(b)) => return Poll::Ready(Some(Ok(Frame::data(b)))),
                    Ok(Step::Trailers(t)) => {
                        self.body = Reading::Done;
                        return Poll::Ready(Some(Ok(Frame::trailers(t))));
                    }
                    Ok(Step::End) => {
                        self.body = Reading::Done;
                        return Poll::Ready(None);
                    }
                    Ok(Step::More) => {}
                    Err(e) => {
                        self.body = Reading::Failed;
                        return Poll::Ready(Some(Err(e)));
                    }
                },
            }
            match self.body_read.poll_fill(&mut self.io, &mut self.buf, cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    self.body = Reading::Failed;
                    let e = "the client closed the connection before the request body ended";
                    return Poll::Ready(Some(Err(e.into())));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    self.body = Reading::Failed;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }
}

/// hyper's view of a connection handed over to it mid-way: what was read
/// and not consumed comes first, then the rest of the connection.
#[derive(Debug)]
pub(crate) struct HandOff(pub(crate) Link);

impl AsyncRead for HandOff {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut shared = lock(&self.0);
        if !shared.buf.is_empty() {
            let n = shared.buf.len().min(out.remaining());
            out.put_slice(&shared.buf[..n]);
            shared.buf.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut shared.io).poll_read(cx, out)
    }
}

impl tokio::io::AsyncWrite for HandOff {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut lock(&self.0).io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut lock(&self.0).io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut lock(&self.0).io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut lock(&self.0).io).poll_shutdown(cx)
    }
}
