//! Writing a request: its head into one buffer, then its body streamed
//! through a bounded window (as is under a `Content-Length`, else with the
//! chunked coding), trailers included when chunked.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap};
use http::{Method, Request};
use hyper::body::{Body, Frame};
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

use crate::pick::{BoxError, UpstreamBody};

/// Bytes of the request waiting to be written before no more frames are
/// pulled from the client: the next frame is read while the last ones are
/// still going out, so reading from the client and writing to the backend
/// overlap, and at most this plus one frame is held.
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
    /// The newest bytes to write (small frames copied, framing), after
    /// everything in `queue`.
    out: BytesMut,
    /// How much of `out` is written.
    off: usize,
    /// Older bytes to write first, in order: earlier contents of `out`, and
    /// large frames written straight from the client's buffer.
    queue: VecDeque<Segment<B::Data>>,
    /// The bytes in `queue`.
    queued: usize,
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
            queue: VecDeque::new(),
            queued: 0,
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
        if self.replayable && self.queue.is_empty() {
            self.off = 0;
            self.sent = 0;
            true
        } else {
            false
        }
    }

    /// Write what can be written, pulling frames from the client's body
    /// while fewer than [`WINDOW`] bytes wait; ready once the whole request
    /// is out.
    pub(crate) fn poll_send(
        &mut self,
        io: &mut TcpStream,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), UploadError>> {
        loop {
            if !self.ended && self.waiting() < WINDOW {
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
            let chunk: &[u8] = match self.queue.front() {
                Some(seg) => seg.chunk(),
                None if self.off < self.out.len() => &self.out[self.off..],
                None if self.ended => return Poll::Ready(Ok(())),
                None => return Poll::Pending,
            };
            let n = match Pin::new(&mut *io).poll_write(cx, chunk) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(write_zero())),
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(UploadError::Io(e))),
                Poll::Pending => return Poll::Pending,
            };
            self.sent += n as u64;
            match self.queue.front_mut() {
                Some(seg) => {
                    seg.advance(n);
                    self.queued -= n;
                    if !seg.has_remaining() {
                        self.queue.pop_front();
                    }
                }
                None => self.off += n,
            }
        }
    }

    /// Bytes gathered and not yet written.
    fn waiting(&self) -> usize {
        self.queued + (self.out.len() - self.off)
    }

    /// Queue a large frame to be written from the client's buffer, after
    /// what `out` holds (which moves to the queue first).
    fn push_big(&mut self, data: B::Data) {
        self.replayable = false;
        if self.off < self.out.len() {
            let _written = self.out.split_to(self.off);
            let rest = self.out.split().freeze();
            self.queued += rest.len();
            self.queue.push_back(Segment::Own(rest));
        } else {
            self.out.clear();
        }
        self.off = 0;
        self.queued += data.remaining();
        self.queue.push_back(Segment::Client(data));
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
        let chunked = self.framing == Framing::Chunked;
        if len > COPY_MAX {
            self.push_big(data);
            if chunked {
                self.out.put_slice(b"\r\n");
            }
            return Ok(());
        }
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

/// Bytes queued for the backend: our own, or a frame of the client's.
enum Segment<D> {
    Own(Bytes),
    Client(D),
}

impl<D: Buf> Segment<D> {
    fn chunk(&self) -> &[u8] {
        match self {
            Segment::Own(b) => b.chunk(),
            Segment::Client(d) => d.chunk(),
        }
    }

    fn advance(&mut self, n: usize) {
        match self {
            Segment::Own(b) => b.advance(n),
            Segment::Client(d) => d.advance(n),
        }
    }

    fn has_remaining(&self) -> bool {
        match self {
            Segment::Own(b) => b.has_remaining(),
            Segment::Client(d) => d.has_remaining(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::convert::Infallible;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// A body that yields the given frames, then ends; its size is known
    /// only when `sized`.
    struct Frames {
        frames: VecDeque<Bytes>,
        sized: Option<u64>,
    }

    impl Body for Frames {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.frames.pop_front().map(|b| Ok(Frame::data(b))))
        }
        fn size_hint(&self) -> hyper::body::SizeHint {
            match self.sized {
                Some(n) => hyper::body::SizeHint::with_exact(n),
                None => hyper::body::SizeHint::default(),
            }
        }
    }

    /// Frames below, at and above the copy limit, in an order that puts
    /// copied bytes before, between and after large frames.
    fn frames() -> Vec<Bytes> {
        [
            100,
            20_000,
            5,
            70_000,
            COPY_MAX,
            COPY_MAX + 1,
            3,
            200_000,
            1,
        ]
        .iter()
        .enumerate()
        .map(|(k, &n)| Bytes::from((0..n).map(|i| (i * 7 + k * 31) as u8).collect::<Vec<u8>>()))
        .collect()
    }

    /// What the backend reads when `frames` go up, read slowly at first so
    /// that writes stop short and wait.
    async fn sent(sized: bool) -> Vec<u8> {
        let frames = frames();
        let total: u64 = frames.iter().map(|f| f.len() as u64).sum();
        let body = Frames {
            frames: frames.into(),
            sized: sized.then_some(total),
        };
        let req = Request::post("/up")
            .header(header::HOST, "b")
            .body(UpstreamBody::new(body))
            .unwrap();
        let mut up = Upload::new(req).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                if got.len() < 64 * 1024 {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    return got;
                }
                got.extend_from_slice(&buf[..n]);
            }
        });
        let mut io = TcpStream::connect(addr).await.unwrap();
        std::future::poll_fn(|cx| up.poll_send(&mut io, cx))
            .await
            .unwrap();
        let sent = up.sent();
        drop(io);
        let wire = reader.await.unwrap();
        assert_eq!(
            wire.len() as u64,
            sent,
            "every byte counted as sent arrived"
        );
        wire
    }

    fn body_of(wire: &[u8]) -> (&[u8], &[u8]) {
        let at = wire.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        (&wire[..at], &wire[at..])
    }

    #[tokio::test]
    async fn mixed_frames_go_out_whole_and_in_order_sized() {
        let wire = sent(true).await;
        let (head, body) = body_of(&wire);
        let want: Vec<u8> = frames().concat();
        let head = std::str::from_utf8(head).unwrap();
        assert!(
            head.contains(&format!("content-length: {}\r\n", want.len())),
            "{head}"
        );
        assert!(
            body == want.as_slice(),
            "the body arrives whole and in order"
        );
    }

    #[tokio::test]
    async fn mixed_frames_go_out_whole_and_in_order_chunked() {
        let wire = sent(false).await;
        let (head, body) = body_of(&wire);
        assert!(std::str::from_utf8(head)
            .unwrap()
            .contains("transfer-encoding: chunked\r\n"));
        let mut want = Vec::new();
        for f in frames() {
            want.extend_from_slice(format!("{:x}\r\n", f.len()).as_bytes());
            want.extend_from_slice(&f);
            want.extend_from_slice(b"\r\n");
        }
        want.extend_from_slice(b"0\r\n\r\n");
        assert!(
            body == want.as_slice(),
            "chunks arrive whole, framed and in order"
        );
    }
}
