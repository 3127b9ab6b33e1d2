//! Writing a request: its head into one buffer, then its body streamed
//! through a bounded window (as is under a `Content-Length`, else with the
//! chunked coding), trailers included when chunked.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use http::header::{self, HeaderMap};
use http::{Method, Request};
use hyper::body::{Body, Frame};
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

use crate::pick::{BoxError, UpstreamBody};

/// Bytes of the request gathered before they are written: frames are
/// pulled from the client only while fewer than this wait.
const WINDOW: usize = 64 * 1024;

/// Frames larger than this are written from the client's buffer, not
/// copied into the window.
const COPY_MAX: usize = 16 * 1024;

/// How a request body is delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// No body (none is sent).
    Empty,
    /// Exactly this many bytes are still to come.
    Length(u64),
    /// The chunked coding.
    Chunked,
}

/// Why a request could not be written.
#[derive(Debug)]
pub(crate) enum UploadError {
    /// The connection failed.
    Io(io::Error),
    /// The client's body failed.
    Client(BoxError),
    /// The client's body did not match its own framing.
    Framing(&'static str),
}

impl fmt::Display for UploadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UploadError::Io(e) => write!(f, "writing the request failed: {e}"),
            UploadError::Client(e) => write!(f, "the client's body failed: {e}"),
            UploadError::Framing(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for UploadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UploadError::Io(e) => Some(e),
            UploadError::Client(e) => Some(&**e),
            UploadError::Framing(_) => None,
        }
    }
}

/// A request on its way out: the head and body bytes gathered, the body
/// still to read.
pub(crate) struct Upload<B: Body> {
    body: UpstreamBody<B>,
    framing: Framing,
    out: BytesMut,
    /// How much of `out` is written.
    off: usize,
    /// A large frame being written straight from the client's buffer.
    big: Option<B::Data>,
    /// Bytes written in all.
    sent: u64,
    /// Whether everything written so far is still in `out` (the request
    /// can be written again on another connection).
    replayable: bool,
    /// Whether the body's end (and its framing) is in `out`.
    ended: bool,
}

impl<B: Body> fmt::Debug for Upload<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upload")
            .field("framing", &self.framing)
            .field("sent", &self.sent)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl<B> Upload<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    /// The request's head written into a buffer, its body to stream after.
    pub(crate) fn new(req: Request<UpstreamBody<B>>) -> Result<Self, &'static str> {
        let (parts, body) = req.into_parts();
        let mut out = BytesMut::with_capacity(512);
        out.put_slice(parts.method.as_str().as_bytes());
        out.put_u8(b' ');
        let target = match parts.uri.path_and_query() {
            Some(pq) => pq.as_str(),
            None => "/",
        };
        out.put_slice(target.as_bytes());
        out.put_slice(b" HTTP/1.1\r\n");
        let framing = framing(&parts.method, &parts.headers, &body)?;
        write_fields(&mut out, &parts.headers);
        match framing {
            Framing::Chunked => out.put_slice(b"transfer-encoding: chunked\r\n"),
            Framing::Length(n) if !parts.headers.contains_key(header::CONTENT_LENGTH) => {
                out.put_slice(b"content-length: ");
                put_number(&mut out, n, 10);
                out.put_slice(b"\r\n");
            }
            _ => {}
        }
        out.put_slice(b"\r\n");
        Ok(Upload {
            body,
            framing,
            out,
            off: 0,
            big: None,
            sent: 0,
            replayable: true,
            ended: framing == Framing::Empty || framing == Framing::Length(0),
        })
    }

    /// Bytes written to the backend so far.
    pub(crate) fn sent(&self) -> u64 {
        self.sent
    }

    /// Start again from the first byte, on another connection: possible
    /// only while everything written is still at hand.
    pub(crate) fn rewind(&mut self) -> bool {
        if self.replayable && self.big.is_none() {
            self.off = 0;
            self.sent = 0;
            true
        } else {
            false
        }
    }

    /// Write what can be written, pulling frames from the client's body
    /// while the window has room; ready once the whole request is out.
    pub(crate) fn poll_send(
        &mut self,
        io: &mut TcpStream,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), UploadError>> {
        loop {
            if !self.ended && self.big.is_none() && self.out.len() - self.off < WINDOW {
                match Pin::new(&mut self.body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        self.take(frame)?;
                        continue;
                    }
                    Poll::Ready(Some(Err(e))) => {
                        return Poll::Ready(Err(UploadError::Client(e.into())));
                    }
                    Poll::Ready(None) => {
                        self.end(None)?;
                        continue;
                    }
                    Poll::Pending => {}
                }
            }
            if self.off < self.out.len() {
                let n = match Pin::new(&mut *io).poll_write(cx, &self.out[self.off..]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(write_zero())),
                    Poll::Ready(Ok(n)) => n,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(UploadError::Io(e))),
                    Poll::Pending => return Poll::Pending,
                };
                self.off += n;
                self.sent += n as u64;
                continue;
            }
            if let Some(big) = self.big.as_mut() {
                let n = match Pin::new(&mut *io).poll_write(cx, big.chunk()) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(write_zero())),
                    Poll::Ready(Ok(n)) => n,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(UploadError::Io(e))),
                    Poll::Pending => return Poll::Pending,
                };
                big.advance(n);
                self.sent += n as u64;
                if !big.has_remaining() {
                    self.big = None;
                    if self.framing == Framing::Chunked {
                        self.room().put_slice(b"\r\n");
                    }
                }
                continue;
            }
            return if self.ended {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            };
        }
    }

    /// The window to add to: emptied first when all of it is written.
    fn room(&mut self) -> &mut BytesMut {
        if self.off > 0 && self.off == self.out.len() {
            self.out.clear();
            self.off = 0;
            self.replayable = false;
        }
        &mut self.out
    }

    fn take(&mut self, frame: Frame<B::Data>) -> Result<(), UploadError> {
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => return self.end(frame.into_trailers().ok()),
        };
        let len = data.remaining();
        if len == 0 {
            return Ok(());
        }
        match self.framing {
            Framing::Empty => {
                return Err(UploadError::Framing("a body on a request sent without one"))
            }
            Framing::Length(left) => {
                let Some(left) = left.checked_sub(len as u64) else {
                    return Err(UploadError::Framing(
                        "request body longer than its Content-Length",
                    ));
                };
                self.framing = Framing::Length(left);
                self.ended = left == 0;
            }
            Framing::Chunked => {
                let out = self.room();
                put_number(out, len as u64, 16);
                out.put_slice(b"\r\n");
            }
        }
        if len > COPY_MAX {
            self.replayable = false;
            self.big = Some(data);
            return Ok(());
        }
        let chunked = self.framing == Framing::Chunked;
        let out = self.room();
        out.put(data);
        if chunked {
            out.put_slice(b"\r\n");
        }
        Ok(())
    }

    /// The body ended (with these trailers): its last framing goes out.
    fn end(&mut self, trailers: Option<HeaderMap>) -> Result<(), UploadError> {
        match self.framing {
            Framing::Length(left) if left > 0 => {
                return Err(UploadError::Framing(
                    "request body shorter than its Content-Length",
                ));
            }
            Framing::Chunked => {
                let out = self.room();
                out.put_slice(b"0\r\n");
                if let Some(t) = &trailers {
                    write_fields(out, t);
                }
                out.put_slice(b"\r\n");
            }
            _ => {}
        }
        self.ended = true;
        Ok(())
    }
}

/// How the body goes: by the client's `Content-Length`, by its exact size,
/// not at all when empty (`Content-Length: 0` added for the methods that
/// mean to send one), else chunked.
fn framing<B: Body>(
    method: &Method,
    headers: &HeaderMap,
    body: &UpstreamBody<B>,
) -> Result<Framing, &'static str> {
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    if let Some(v) = lengths.next() {
        let n = std::str::from_utf8(v.as_bytes())
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or("invalid Content-Length on the request")?;
        if lengths.any(|o| o != v) {
            return Err("conflicting Content-Length on the request");
        }
        return Ok(Framing::Length(n));
    }
    if body.is_end_stream() {
        return Ok(
            if matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
                Framing::Length(0)
            } else {
                Framing::Empty
            },
        );
    }
    Ok(match body.size_hint().exact() {
        Some(n) => Framing::Length(n),
        None => Framing::Chunked,
    })
}

/// `name: value\r\n` for each field.
fn write_fields(out: &mut BytesMut, fields: &HeaderMap) {
    for (name, value) in fields {
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
}

fn write_zero() -> UploadError {
    UploadError::Io(io::Error::new(
        io::ErrorKind::WriteZero,
        "the backend connection took no more bytes",
    ))
}

/// `n` in `radix` (10 or 16), lowercase, with no allocation.
fn put_number(out: &mut BytesMut, mut n: u64, radix: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b"0123456789abcdef"[(n % radix) as usize];
        n /= radix;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[at..]);
}

/// A request being written, with its body type erased: what a response
/// body keeps sending when the response came before the request was all out.
pub(crate) trait PollUpload: Send {
    /// As [`Upload::poll_send`].
    fn poll_send(
        &mut self,
        io: &mut TcpStream,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), UploadError>>;
}

impl<B> PollUpload for Upload<B>
where
    B: Body + Send + Unpin,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    fn poll_send(
        &mut self,
        io: &mut TcpStream,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), UploadError>> {
        Upload::poll_send(self, io, cx)
    }
}
