//! The checking reader: a client connection as hyper reads it, with every
//! request head and chunked body checked before hyper sees it.

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::chunked::Chunked;
use super::head::{self, Framing};
use super::respond::EdgeConn;
use super::{EdgeStats, Limits, Reject};

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What hyper reads in place of a refused request; the service answers it
/// with the refusal status (see [`EdgeConn::reject_next`]).
const STAND_IN: &[u8] = b"GET / HTTP/1.1\r\nhost: edge\r\nconnection: close\r\n\r\n";

/// The stand-ins for a refused request after which the connection goes on
/// (a HEAD one, so that hyper sends no body to a HEAD request's client).
const STAND_IN_KEEP: &[u8] = b"GET / HTTP/1.1\r\nhost: edge\r\n\r\n";
const STAND_IN_KEEP_HEAD: &[u8] = b"HEAD / HTTP/1.1\r\nhost: edge\r\n\r\n";

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;

/// Buffers larger than this are freed, not kept, when emptied.
const SMALL: usize = 4 * 1024;

/// Room past a head for the body bytes checked before the head goes on.
const BODY_WINDOW: usize = 64 * 1024;

/// How long, and how many bytes, a refused client's remaining input is
/// read and dropped after the answer, so that closing does not reset the
/// connection before the client has read the answer (nginx's lingering
/// close).
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: u64 = 1024 * 1024;

/// A header read timeout too long to represent stands for about 30 years.
const FAR: Duration = Duration::from_secs(86_400 * 365 * 30);

#[derive(Debug)]
enum State {
    /// The first bytes: an HTTP/2 preface, or a first request.
    Start,
    /// A request head.
    Head,
    /// `left` bytes of a sized body.
    Body { left: u64, upgrade: bool },
    /// A chunked body.
    Chunked { check: Chunked, upgrade: bool },
    /// After a protocol switch request: until its response says.
    AwaitUpgrade,
    /// Not HTTP/1 any more (HTTP/2, or after a switch): bytes pass as is.
    Tunnel,
    /// Refused: nothing more is read; EOF once owed responses are sent.
    Closed,
    /// A chunked body went wrong after its head went on.
    Broken(&'static str),
}

/// A client connection as hyper reads it. See [the module](super).
#[derive(Debug)]
pub(crate) struct EdgeIo<T: AsyncRead + Unpin + Send + 'static> {
    io: Option<T>,
    /// Read from the client, not yet checked.
    raw: BytesMut,
    /// Checked, for hyper.
    out: BytesMut,
    state: State,
    eof: bool,
    /// No request head handed on yet.
    first: bool,
    /// Refused with an answer: linger on close.
    refused: bool,
    /// The header read timer, kept between requests and reset (a reset to
    /// a later instant costs no timer-wheel lock; a new timer costs two).
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether `timer` runs for the head awaited now.
    armed: bool,
    /// The body read timeout: made at the first wait on a body, reset at
    /// each later one.
    body_timer: Option<Pin<Box<Sleep>>>,
    /// Waiting on the client for body bytes (the body timer runs).
    body_waiting: bool,
    conn: Arc<EdgeConn>,
    limits: Limits,
    stats: Arc<EdgeStats>,
}

impl<T: AsyncRead + Unpin + Send + 'static> EdgeIo<T> {
    /// Check what hyper reads from `io`.
    pub(crate) fn new(io: T, conn: Arc<EdgeConn>, limits: Limits, stats: Arc<EdgeStats>) -> Self {
        EdgeIo {
            io: Some(io),
            raw: BytesMut::new(),
            out: BytesMut::new(),
            state: State::Start,
            eof: false,
            first: true,
            refused: false,
            timer: None,
            armed: false,
            body_timer: None,
            body_waiting: false,
            conn,
            limits,
            stats,
        }
    }

    /// The most raw bytes held: a head at its limits plus a body window.
    fn raw_cap(&self) -> usize {
        self.limits.max_uri_bytes + self.limits.max_header_bytes + BODY_WINDOW
    }

    /// See [`EdgeConn::forget_reader`].
    pub(crate) fn forget_reader(&self) {
        self.conn.forget_reader();
    }

    /// Whether the connection is not (or no longer) HTTP/1: an HTTP/2
    /// preface came, or a protocol switch happened.
    pub(crate) fn is_tunnel(&self) -> bool {
        matches!(self.state, State::Tunnel)
    }

    /// Ready once hyper has something to read (a checked head, a refusal's
    /// stand-in, HTTP/2 bytes) or the connection is over: hyper, and its
    /// buffers, are set up only then, so that a client that is slow to
    /// send its first head costs little more than its socket. The header
    /// read timeout runs meanwhile.
    pub(crate) fn poll_first(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if !self.out.is_empty() || !matches!(self.state, State::Start | State::Head) {
                return Poll::Ready(());
            }
            self.advance();
            if !self.out.is_empty() || !matches!(self.state, State::Start | State::Head) {
                return Poll::Ready(());
            }
            if self.eof {
                return Poll::Ready(());
            }
            match self.fill(cx) {
                Poll::Ready(Ok(())) => {}
                // hyper meets the error (or the end) at its first read.
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Pending => {
                    if self.poll_timer(cx) {
                        self.on_timeout();
                        continue;
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// Check what `raw` holds, moving what passes to `out`, until more
    /// bytes (or a decision from the service) are needed.
    fn advance(&mut self) {
        self.check();
        // Give back a large buffer once emptied (after a body): an idle
        // keep-alive connection keeps no read chunk.
        if self.raw.is_empty() && self.raw.capacity() > SMALL {
            self.raw = BytesMut::new();
        }
    }

    fn check(&mut self) {
        loop {
            let progressed = match &mut self.state {
                State::Start => self.start(),
                State::Head => self.head(),
                State::Body { left, upgrade } => {
                    let take = self
                        .raw
                        .len()
                        .min(usize::try_from(*left).unwrap_or(usize::MAX));
                    *left -= take as u64;
                    let (done, upgrade) = (*left == 0, *upgrade);
                    self.out.extend_from_slice(&self.raw[..take]);
                    self.raw.advance(take);
                    if done {
                        self.end_of_body(upgrade);
                    }
                    done
                }
                State::Chunked { check, upgrade } => match check.feed(&self.raw) {
                    Ok((n, done)) => {
                        let upgrade = *upgrade;
                        self.out.extend_from_slice(&self.raw[..n]);
                        self.raw.advance(n);
                        if done {
                            self.end_of_body(upgrade);
                        }
                        done
                    }
                    Err(r) => {
                        tracing::debug!(why = r.why(), "malformed chunked body; closing");
                        self.stats.count_bad_body();
                        self.raw.clear();
                        self.state = State::Broken(r.why());
                        false
                    }
                },
                State::AwaitUpgrade => match self.conn.take_upgrade() {
                    Some(true) => {
                        self.state = State::Tunnel;
                        true
                    }
                    Some(false) => {
                        self.state = State::Head;
                        true
                    }
                    None => false,
                },
                State::Tunnel => {
                    self.out.extend_from_slice(&self.raw);
                    self.raw.clear();
                    false
                }
                State::Closed | State::Broken(_) => false,
            };
            if !progressed || self.raw.is_empty() && !matches!(self.state, State::AwaitUpgrade) {
                return;
            }
        }
    }

    /// Tell an HTTP/2 preface from an HTTP/1 request.
    fn start(&mut self) -> bool {
        let n = self.raw.len().min(H2_PREFACE.len());
        if self.raw[..n] != H2_PREFACE[..n] {
            self.state = State::Head;
            return true;
        }
        if n == H2_PREFACE.len() {
            self.state = State::Tunnel;
            return true;
        }
        if self.eof && !self.raw.is_empty() {
            self.state = State::Head;
            return true;
        }
        false
    }

    /// Check and hand on one request head, with what has come of its body.
    fn head(&mut self) -> bool {
        // RFC 9112 §2.2: empty lines before a request line are ignored.
        while self.raw.starts_with(b"\r\n") {
            self.raw.advance(2);
        }
        if self.raw.is_empty() {
            // Nothing to parse yet (the parse would say as much).
            return false;
        }
        let parsed = match head::parse(&self.raw, &self.limits) {
            Ok(Some(h)) => h,
            Ok(None) if self.raw.len() > self.raw_cap() => {
                // Cannot happen within the limits; refuse rather than grow.
                self.refuse(Reject::answer(
                    http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "request head over the limit",
                ));
                return false;
            }
            Ok(None) => return false,
            Err(r) => {
                self.refuse(r);
                return false;
            }
        };
        if parsed.unmet_expectation {
            self.unmet_expectation(&parsed);
            return !matches!(self.state, State::Closed);
        }
        if let (Framing::Length(n), Some(max)) = (parsed.framing, self.limits.max_body_bytes) {
            if n > max {
                self.refuse(Reject::answer(
                    http::StatusCode::PAYLOAD_TOO_LARGE,
                    "request body over the limit",
                ));
                return false;
            }
        }
        let check = (parsed.framing == Framing::Chunked).then(|| {
            Chunked::new(self.limits.max_header_bytes).with_max_body(self.limits.max_body_bytes)
        });
        if let Some(mut check) = check.clone() {
            // Refuse a body already known to be bad before the head goes on.
            if let Err(r) = check.feed(&self.raw[parsed.len..]) {
                self.refuse(r);
                return false;
            }
        }
        // Copied out, then skipped: `split_to` would make `raw` shared (an
        // allocation a request) and its next `reserve` copy or allocate.
        let start = self.out.len();
        self.out.extend_from_slice(&self.raw[..parsed.len]);
        self.raw.advance(parsed.len);
        if let Some(at) = parsed.minor_at {
            self.out[start + at] = b'1';
        }
        self.conn.release();
        self.first = false;
        self.armed = false;
        let upgrade = parsed.upgrade;
        match (parsed.framing, check) {
            (Framing::Length(left), _) => self.state = State::Body { left, upgrade },
            (Framing::Chunked, Some(check)) => self.state = State::Chunked { check, upgrade },
            _ => self.end_of_body(upgrade),
        }
        true
    }

    fn end_of_body(&mut self, upgrade: bool) {
        self.body_waiting = false;
        self.state = if upgrade {
            State::AwaitUpgrade
        } else {
            State::Head
        };
    }

    /// Answer 417 to a request whose expectation cannot be met (RFC 9110
    /// §10.1.1). A request with no body on a persistent connection is
    /// dropped and the connection goes on; after one with a body (which
    /// the client may or may not send now) the connection closes.
    fn unmet_expectation(&mut self, parsed: &head::Head) {
        let r = Reject::answer(
            http::StatusCode::EXPECTATION_FAILED,
            "an expectation other than 100-continue",
        );
        if parsed.framing != Framing::None || !parsed.persistent || parsed.upgrade {
            self.refuse(r);
            return;
        }
        tracing::debug!(why = r.why(), "refused a request; the connection goes on");
        self.stats.count_reject(&r);
        self.raw.advance(parsed.len);
        self.conn
            .reject_next(http::StatusCode::EXPECTATION_FAILED, false);
        self.out.extend_from_slice(if parsed.head_method {
            STAND_IN_KEEP_HEAD
        } else {
            STAND_IN_KEEP
        });
        self.first = false;
        self.armed = false;
        self.state = State::Head;
    }

    /// Refuse the request at the front of `raw`, and all that follows.
    fn refuse(&mut self, r: Reject) {
        tracing::debug!(why = r.why(), status = ?r.status(), "refused a request");
        self.stats.count_reject(&r);
        self.raw.clear();
        if let Some(status) = r.status() {
            self.conn.reject_next(status, true);
            self.out.extend_from_slice(STAND_IN);
            self.refused = true;
        }
        self.state = State::Closed;
    }

    /// Whether the client is being waited on for a request head, with no
    /// response owed: the header read timeout runs.
    fn awaiting_head(&self) -> bool {
        matches!(self.state, State::Start | State::Head)
            && self.out.is_empty()
            && !self.conn.owes_responses()
    }

    /// Run the header read timeout; true when it has run out.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(limit) = self.limits.header_read_timeout else {
            return false;
        };
        self.conn.register(cx.waker());
        if !self.awaiting_head() {
            self.armed = false;
            return false;
        }
        if !self.armed {
            self.armed = true;
            let now = Instant::now();
            let at = now.checked_add(limit).unwrap_or(now + FAR);
            set_timer(&mut self.timer, at);
        }
        timer_fired(&mut self.timer, cx)
    }

    /// Run the body read timeout while the client is waited on for body
    /// bytes; true when it has run out.
    fn poll_body_timer(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(limit) = self.limits.client_body_timeout else {
            return false;
        };
        if !matches!(self.state, State::Body { .. } | State::Chunked { .. }) {
            return false;
        }
        if !self.body_waiting {
            self.body_waiting = true;
            let Some(deadline) = Instant::now().checked_add(limit) else {
                return false;
            };
            set_timer(&mut self.body_timer, deadline);
        }
        timer_fired(&mut self.body_timer, cx)
    }

    /// The client sent no body bytes for the body timeout: 408 if the
    /// service has not answered yet (the exchange with the backend is
    /// dropped), else the connection is cut.
    fn on_body_timeout(&mut self) {
        self.body_waiting = false;
        self.body_timer = None;
        self.raw.clear();
        self.stats.count_body_timeout();
        if self.conn.body_timed_out() {
            let r = Reject::answer(
                http::StatusCode::REQUEST_TIMEOUT,
                "no request body bytes in time",
            );
            tracing::debug!(why = r.why(), "refused a request");
            self.stats.count_reject(&r);
            self.refused = true;
            self.state = State::Closed;
        } else {
            tracing::debug!("no request body bytes in time, after the response began; closing");
            self.state = State::Broken("no request body bytes in time");
        }
    }

    fn on_timeout(&mut self) {
        self.armed = false;
        if self.first || !self.raw.is_empty() {
            self.stats.count_header_timeout();
            let status = http::StatusCode::REQUEST_TIMEOUT;
            self.refuse(Reject::answer(status, "no request head in time"));
        } else {
            self.stats.count_idle_close();
            self.state = State::Closed;
        }
    }

    /// Read what the socket has now, up to the cap: `Ready` at EOF or when
    /// bytes came, `Pending` when none did.
    fn fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let cap = self.raw_cap();
        let Some(io) = self.io.as_mut() else {
            self.eof = true;
            return Poll::Ready(Ok(()));
        };
        let mut got = false;
        // Read on the stack and keep only what came: a client dribbling a
        // head holds a few bytes here, not a whole read chunk.
        let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        while !self.eof && self.raw.len() < cap {
            let want = (cap - self.raw.len()).min(READ_CHUNK);
            let mut rb = ReadBuf::uninit(&mut chunk[..want]);
            let polled = Pin::new(&mut *io).poll_read(cx, &mut rb);
            let n = rb.filled().len();
            self.raw.extend_from_slice(rb.filled());
            match polled {
                Poll::Ready(Ok(())) if n == 0 => self.eof = true,
                Poll::Ready(Ok(())) => {
                    got = true;
                    self.body_waiting = false;
                    if n < want {
                        // A short read: the socket had no more (tokio has
                        // noted as much); asking again would only say so.
                        break;
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending if got => break,
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin + Send + 'static> AsyncRead for EdgeIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.out.is_empty() {
                let n = this.out.len().min(buf.remaining());
                buf.put_slice(&this.out[..n]);
                this.out.advance(n);
                if this.out.is_empty() && this.out.capacity() > SMALL {
                    this.out = BytesMut::new();
                }
                return Poll::Ready(Ok(()));
            }
            match &mut this.state {
                State::Body { left, .. }
                    if this.raw.is_empty()
                        && buf.remaining() > 0
                        && *left >= buf.remaining() as u64 =>
                {
                    // Body bytes need no checking: read them straight in.
                    let Some(io) = this.io.as_mut() else {
                        return Poll::Ready(Ok(()));
                    };
                    let before = buf.filled().len();
                    if Pin::new(io).poll_read(cx, buf)?.is_pending() {
                        if this.poll_body_timer(cx) {
                            this.on_body_timeout();
                            continue;
                        }
                        return Poll::Pending;
                    }
                    let State::Body { left, upgrade } = &mut this.state else {
                        return Poll::Ready(Ok(()));
                    };
                    this.body_waiting = false;
                    let n = (buf.filled().len() - before) as u64;
                    *left -= n;
                    if *left == 0 {
                        let upgrade = *upgrade;
                        this.end_of_body(upgrade);
                    }
                    this.eof |= n == 0;
                    return Poll::Ready(Ok(()));
                }
                State::Tunnel if this.raw.is_empty() => {
                    let Some(io) = this.io.as_mut() else {
                        return Poll::Ready(Ok(()));
                    };
                    return Pin::new(io).poll_read(cx, buf);
                }
                State::Closed => {
                    // Let hyper finish what it owes before it sees the end.
                    this.conn.register(cx.waker());
                    if this.conn.owes_responses() {
                        return Poll::Pending;
                    }
                    return Poll::Ready(Ok(()));
                }
                State::Broken(why) => {
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, *why)));
                }
                State::AwaitUpgrade => {
                    this.conn.register(cx.waker());
                }
                _ => {}
            }
            this.advance();
            if !this.out.is_empty() || matches!(this.state, State::Closed | State::Broken(_)) {
                continue;
            }
            if matches!(this.state, State::AwaitUpgrade) {
                return Poll::Pending;
            }
            if this.eof {
                // The client is gone: hyper closes, or ends a body early.
                return Poll::Ready(Ok(()));
            }
            match this.fill(cx) {
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    if this.poll_timer(cx) {
                        this.on_timeout();
                        continue;
                    }
                    if this.poll_body_timer(cx) {
                        this.on_body_timeout();
                        continue;
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncWrite for EdgeIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().io.as_mut() {
            Some(io) => Pin::new(io).poll_write(cx, buf),
            None => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().io.as_mut() {
            Some(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            None => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(|io| io.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().io.as_mut() {
            Some(io) => Pin::new(io).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().io.as_mut() {
            Some(io) => Pin::new(io).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl<T: AsyncRead + Unpin + Send + 'static> Drop for EdgeIo<T> {
    fn drop(&mut self) {
        if !self.refused {
            return;
        }
        if let (Some(io), Ok(rt)) = (self.io.take(), tokio::runtime::Handle::try_current()) {
            rt.spawn(linger(io));
        }
    }
}

/// Read and drop what a refused client still sends, for a short while,
/// before closing: closing a socket with unread input resets it, and a
/// reset can destroy the answer before the client reads it.
pub(crate) async fn linger<T: AsyncRead + Unpin>(mut io: T) {
    let drain = async {
        let mut buf = [0u8; 4096];
        let mut total = 0u64;
        while let Ok(n) = io.read(&mut buf).await {
            total += n as u64;
            if n == 0 || total > LINGER_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// Run `slot`'s timer until `at`: the timer is reset (no timer-wheel lock
/// when moved later), or made the first time.
fn set_timer(slot: &mut Option<Pin<Box<Sleep>>>, at: Instant) {
    match slot.as_mut() {
        Some(timer) => timer.as_mut().reset(at),
        None => *slot = Some(Box::pin(tokio::time::sleep_until(at))),
    }
}

/// Whether `slot`'s timer has fired (registering `cx` to be woken then).
fn timer_fired(slot: &mut Option<Pin<Box<Sleep>>>, cx: &mut Context<'_>) -> bool {
    slot.as_mut()
        .is_some_and(|t| t.as_mut().poll(cx).is_ready())
}
