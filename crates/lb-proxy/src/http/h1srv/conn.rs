//! One client connection served request after request in its own task:
//! read a head, call the service, write the response, go on.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::{pin, Pin};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http::{Request, Response};
use hyper::body::Body;
use tokio::io::AsyncWrite;

use super::body::{lock, ClientBody, Link, Reading, HEAD_CHUNK};
use super::head::{self, Parsed};
use super::write::{self, Asked, BodyLen, Framing};
use crate::pick::BoxError;

/// Frames up to this size are copied behind the head (or the chunk line)
/// and go out in one write; larger ones are written on their own.
const COPY_MAX: usize = 8 * 1024;

/// Written bytes waiting in the buffer are sent once they reach this.
const FLUSH_AT: usize = 16 * 1024;

/// At most this much of a request body the service left unread is read
/// and dropped after its response (what has arrived: the client is not
/// waited for); a body longer than that closes the connection.
const DRAIN_MAX: u64 = 64 * 1024;

/// How a connection ends.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// Closed (or to be closed).
    Close,
    /// The next request is for hyper: serve the rest of the connection
    /// through it. Nothing is owed to the client at this point.
    HandOff,
}

/// What turns a request into a response (the edge's refusals and timeouts
/// included), in the connection's task.
pub(crate) trait Answer: Send {
    /// The response body.
    type Body: Body<Data = Bytes> + Send;

    /// The response to `req`.
    fn answer(
        &mut self,
        req: Request<ClientBody>,
    ) -> impl Future<Output = Response<Self::Body>> + Send + '_;
}

/// Serve requests on `link` until the connection ends or a request is
/// for hyper.
pub(crate) async fn serve<A>(link: &Link, answers: &mut A) -> End
where
    A: Answer,
    <A::Body as Body>::Error: Into<BoxError>,
{
    let mut out = Vec::new();
    loop {
        let head = match poll_fn(|cx| poll_head(link, cx)).await {
            Ok(Some(head)) => head,
            Ok(None) => return End::HandOff,
            Err(Stop::Bad) => {
                // As hyper answers a head it cannot parse.
                let bad = Response::builder()
                    .status(http::StatusCode::BAD_REQUEST)
                    .body(http_body_util::Empty::<Bytes>::new())
                    .unwrap_or_default();
                let asked = Asked {
                    version: http::Version::HTTP_11,
                    head_method: false,
                    keep_alive: false,
                };
                let _ = respond(link, &mut out, bad, asked).await;
                return End::Close;
            }
            Err(Stop::Closed) => return End::Close,
        };
        let head::ReqHead {
            req,
            body,
            length,
            keep_alive,
        } = head;
        let asked = Asked {
            version: req.version(),
            head_method: write::is_head(req.method()),
            keep_alive,
        };
        let body = match body {
            Reading::Done => ClientBody::empty(),
            reading => {
                let mut shared = lock(link);
                shared.body = reading;
                ClientBody::h1(link.clone(), shared.gen, length)
            }
        };
        let resp = answers.answer(req.map(|()| body)).await;
        // The next head is read once this response is out: the response's
        // end need not wake this task.
        lock(link).io.forget_reader();
        let keep_alive = match respond(link, &mut out, resp, asked).await {
            Ok(keep_alive) => keep_alive,
            Err(e) => {
                tracing::debug!(error = %e, "response to a client cut");
                false
            }
        };
        if out.capacity() > 4 * FLUSH_AT {
            out = Vec::new();
        }
        if !keep_alive || !poll_fn(|cx| Poll::Ready(finish_body(link, cx))).await {
            return End::Close;
        }
    }
}

/// Why no request head came.
enum Stop {
    /// The connection ended (or failed).
    Closed,
    /// A head `http` cannot take.
    Bad,
}

/// The next request head: `Ok(None)` when it is hyper's to serve.
fn poll_head(link: &Link, cx: &mut Context<'_>) -> Poll<Result<Option<head::ReqHead>, Stop>> {
    let mut shared = lock(link);
    loop {
        if !shared.buf.is_empty() {
            match head::parse(&mut shared.buf) {
                Parsed::Request(h) => return Poll::Ready(Ok(Some(h))),
                Parsed::HandOff => return Poll::Ready(Ok(None)),
                // The edge has checked the head: only what `http` refuses
                // more strictly (hyper answers it 400, and closes).
                Parsed::Bad => return Poll::Ready(Err(Stop::Bad)),
                Parsed::Partial => {}
            }
        }
        match shared.poll_fill(cx, HEAD_CHUNK) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Err(Stop::Closed)),
            Poll::Ready(Ok(_)) => {}
        }
    }
}

/// After a response: the request's body read to its end, or what has come
/// of it dropped (at most [`DRAIN_MAX`]); false when the connection cannot
/// go on.
fn finish_body(link: &Link, cx: &mut Context<'_>) -> bool {
    let mut shared = lock(link);
    shared.gen += 1;
    let mut drained = 0u64;
    loop {
        match shared.poll_body(cx) {
            Poll::Ready(None) => return true,
            Poll::Ready(Some(Ok(frame))) => {
                drained += frame.data_ref().map_or(0, |d| d.len() as u64);
                if drained > DRAIN_MAX {
                    return false;
                }
            }
            Poll::Ready(Some(Err(_))) | Poll::Pending => {
                shared.body = Reading::Failed;
                return false;
            }
        }
    }
}

/// Write `resp`: its head, then its body as it comes. Whether the
/// connection goes on.
async fn respond<B>(
    link: &Link,
    out: &mut Vec<u8>,
    resp: Response<B>,
    asked: Asked,
) -> Result<bool, BoxError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let (parts, body) = resp.into_parts();
    let len = if body.is_end_stream() {
        BodyLen::None
    } else {
        body.size_hint()
            .exact()
            .map_or(BodyLen::Unknown, BodyLen::Known)
    };
    out.clear();
    let (framing, keep_alive) = write::head(out, &parts, asked, len);
    drop(parts);
    if framing == Framing::Empty {
        drop(body);
        write_all(link, out).await?;
        return Ok(keep_alive);
    }
    let mut body = pin!(body);
    let mut left = match framing {
        Framing::Length(n) => n,
        _ => u64::MAX,
    };
    loop {
        let frame = if out.is_empty() {
            poll_fn(|cx| poll_frame(body.as_mut(), cx)).await
        } else {
            // Bytes wait: send them along with the next frame if it is
            // there now, else send them first.
            match poll_fn(|cx| Poll::Ready(poll_frame(body.as_mut(), cx))).await {
                Poll::Ready(f) => f,
                Poll::Pending => {
                    write_all(link, out).await?;
                    out.clear();
                    continue;
                }
            }
        };
        match frame {
            None => break,
            // What waits unsent is dropped, as hyper drops it.
            Some(Err(e)) => return Err(e),
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if data.is_empty() {
                    continue;
                }
                if framing == Framing::Length(0) || (data.len() as u64) > left {
                    write_all(link, out).await?;
                    return Err("response body longer than its Content-Length".into());
                }
                if framing != Framing::Chunked {
                    left = left.saturating_sub(data.len() as u64);
                }
                put_data(link, out, framing, data).await?;
                if out.len() >= FLUSH_AT {
                    write_all(link, out).await?;
                    out.clear();
                }
            }
        }
    }
    match framing {
        Framing::Chunked => out.extend_from_slice(b"0\r\n\r\n"),
        Framing::Length(_) if left != 0 => {
            write_all(link, out).await?;
            return Err("response body shorter than its Content-Length".into());
        }
        _ => {}
    }
    write_all(link, out).await?;
    out.clear();
    Ok(keep_alive)
}

/// A frame of the response body, its error boxed (`Send` across waits).
type Polled = Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>>;

fn poll_frame<B>(body: Pin<&mut B>, cx: &mut Context<'_>) -> Polled
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    body.poll_frame(cx)
        .map(|f| f.map(|r| r.map_err(Into::into)))
}

/// Queue (small) or write (large) one frame of body data.
async fn put_data(
    link: &Link,
    out: &mut Vec<u8>,
    framing: Framing,
    mut data: Bytes,
) -> io::Result<()> {
    if framing == Framing::Chunked {
        let mut hex = [0u8; 18];
        let mut at = hex.len() - 2;
        hex[at..].copy_from_slice(b"\r\n");
        let mut n = data.len();
        loop {
            at -= 1;
            hex[at] = b"0123456789abcdef"[n & 15];
            n >>= 4;
            if n == 0 {
                break;
            }
        }
        out.extend_from_slice(&hex[at..]);
    }
    if data.len() <= COPY_MAX {
        out.extend_from_slice(&data);
    } else {
        write_all(link, out).await?;
        out.clear();
        while data.has_remaining() {
            let n = poll_fn(|cx| poll_write(link, cx, &data)).await?;
            data.advance(n);
        }
    }
    if framing == Framing::Chunked {
        out.extend_from_slice(b"\r\n");
    }
    Ok(())
}

/// Write all of `buf` to the client.
async fn write_all(link: &Link, buf: &[u8]) -> io::Result<()> {
    let mut at = 0;
    while at < buf.len() {
        at += poll_fn(|cx| poll_write(link, cx, &buf[at..])).await?;
    }
    Ok(())
}

fn poll_write(link: &Link, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
    let mut shared = lock(link);
    match Pin::new(&mut shared.io).poll_write(cx, buf) {
        Poll::Ready(Ok(0)) => Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
        polled => polled,
    }
}

/// Shut the connection down for writing (the client sees the end).
pub(crate) async fn shutdown(link: &Link) {
    let _ = poll_fn(|cx| Pin::new(&mut lock(link).io).poll_shutdown(cx)).await;
}
