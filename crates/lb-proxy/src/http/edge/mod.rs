//! The edge: strict HTTP/1.1 parsing (RFC 9112, RFC 9110) and limits,
//! in front of hyper.
//!
//! [`Server`](super::Server) reads every HTTP/1 client connection through
//! a checker that sees the raw bytes before hyper does. Each request head
//! is read whole (within [`Limits`]), checked against the grammar, and only
//! then handed to hyper; the body that follows is delimited the same way
//! hyper will delimit it (and a chunked body checked as it streams), so the
//! next head on a keep-alive connection is found and checked too. A request
//! that fails is never handed on: hyper gets a stand-in request instead,
//! which the server answers with the error status (after any responses
//! still owed to earlier, pipelined requests), and the connection closes.
//! Nothing after the bad request is read as a request.
//!
//! # What is refused, and by whom
//!
//! hyper 1.x (httparse) already refuses some of this, with 400: NUL, bare
//! CR and control bytes in field values, header lines without a colon,
//! obs-fold, whitespace before a colon or before the first field, invalid
//! method, target or version syntax, conflicting or malformed
//! Content-Length, a final transfer coding other than `chunked`, and
//! Transfer-Encoding in HTTP/1.0. It is lenient (or answers otherwise) on
//! the rest, which this module refuses:
//!
//! | request | hyper | here |
//! |---|---|---|
//! | bare LF as a line end | accepted | 400 |
//! | Content-Length with Transfer-Encoding | TE wins | 400 |
//! | `chunked` twice, `gzip, chunked` | accepted | 400, 501 |
//! | bad chunk size, overflow, bare LF, bad trailer | 502 after forwarding | 400 before |
//! | whitespace after a chunk size | accepted | 400 |
//! | NUL or control byte in a chunk extension | accepted | 400 |
//! | no Host in HTTP/1.1, several Host, invalid Host | accepted | 400 |
//! | absolute-form target whose authority differs from Host | accepted | 400 |
//! | `#`, non-ASCII in the target; `*` without OPTIONS | accepted | 400 |
//! | HTTP/2.0, HTTP/3.0, HTTP/0.9 in a request line | 400 | 505 |
//! | HTTP/1.2 and later minors | 400 | served as HTTP/1.1 (RFC 9110 §2.5) |
//! | HTTP/0.9 (`GET /`) | 400 | closed unanswered: a 0.9 client has no status line to read |
//! | CONNECT | forwarded | 501 |
//! | target over [`Limits::max_uri_bytes`] | 414 past 64 KiB | 414 |
//! | header block over [`Limits::max_header_bytes`] | 431 past ~400 KiB | 431 |
//! | no head within [`Limits::header_read_timeout`] | closed | 408, then closed |
//! | a body stalled for [`Limits::client_body_timeout`] | waits | 408 if unanswered (backend exchange dropped), else cut |
//! | `Expect` other than `100-continue` | forwarded | 417 (RFC 9110 §10.1.1); the connection goes on if the request has no body, else closes |
//! | a body over [`Limits::max_body_bytes`] (if set) | forwarded | 413 by its Content-Length or its chunk sizes while the head is held; a chunked body that passes it later is cut |
//!
//! A chunked body is checked before its head goes on as far as it has
//! arrived; a fault found later (in a body still streaming) can no longer
//! be answered: the connection is closed and the backend sees its request
//! end early, never a second request.
//!
//! HTTP/2 clients (prior knowledge, the connection preface) are handed to
//! hyper's HTTP/2 server unchecked: HTTP/2 framing leaves no such
//! ambiguities, and the h2 crate checks field values itself.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use http::StatusCode;

mod chunked;
mod head;
mod io;
mod respond;

pub(crate) use io::EdgeIo;
pub(crate) use respond::{Answering, EdgeBody, EdgeConn};

/// Limits on clients, enforced before hyper sees a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// How long a client may take to send a request head, counted from
    /// when the proxy is ready for it (connection accepted, or the previous
    /// response sent); 408 when it runs out. A keep-alive connection on
    /// which no byte of a next request arrived in that time is closed
    /// without an answer. Default 10 s; `None`: no limit.
    pub header_read_timeout: Option<Duration>,
    /// The longest request target: 414 beyond. Default 8 KiB.
    pub max_uri_bytes: usize,
    /// The longest header block (every field line, not the request line;
    /// also the limit on a chunked body's trailers): 431 beyond.
    /// Default 32 KiB.
    pub max_header_bytes: usize,
    /// The most header fields in a request: 431 beyond. Default 100.
    pub max_headers: usize,
    /// How long a client may leave a request body it is sending without a
    /// byte, counted while the proxy waits to read it (nginx
    /// `client_body_timeout`, the time between two successive reads, not
    /// for the whole body). When it runs out, a request not yet answered
    /// gets 408 and its exchange with the backend is dropped; after the
    /// response began, the connection is closed. Either way the backend
    /// sees its request end early. Default 60 s (nginx's); `None`: no
    /// limit.
    pub client_body_timeout: Option<Duration>,
    /// The most client connections open at once. When reached, the server
    /// stops accepting until one closes: new clients wait in the listen
    /// backlog (as with HAProxy `maxconn` or nginx `worker_connections`),
    /// and the kernel refuses them when the backlog is full. Default
    /// 10 000; `None`: no limit.
    pub max_connections: Option<usize>,
    /// The largest request body (nginx `client_max_body_size`): a request
    /// whose Content-Length is over it gets 413 before anything goes on,
    /// as does a chunked one whose chunk sizes add up past it while its
    /// head is still held; a chunked body that passes it later is cut (the
    /// connection closed, the backend sees its request end early). Default
    /// `None`: no limit (HAProxy's default; nginx's is 1 MiB).
    pub max_body_bytes: Option<u64>,
}

impl Limits {
    /// The largest [`max_uri_bytes`](Limits::max_uri_bytes): hyper's own
    /// ceiling on a target.
    pub const MAX_URI_BYTES: usize = 65_534;
    /// The largest [`max_header_bytes`](Limits::max_header_bytes): a head
    /// must fit in hyper's read buffer (about 400 KiB).
    pub const MAX_HEADER_BYTES: usize = 256 * 1024;
    /// The largest [`max_headers`](Limits::max_headers).
    pub const MAX_HEADERS: usize = 1000;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Some(Duration::from_secs(10)),
            client_body_timeout: Some(Duration::from_secs(60)),
            max_uri_bytes: 8 * 1024,
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            max_connections: Some(10_000),
            max_body_bytes: None,
        }
    }
}

/// Why a request was refused: the status to answer, or none (close).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Reject {
    status: Option<StatusCode>,
    why: &'static str,
}

impl Reject {
    pub(crate) fn answer(status: StatusCode, why: &'static str) -> Self {
        Reject {
            status: Some(status),
            why,
        }
    }

    pub(crate) fn close(why: &'static str) -> Self {
        Reject { status: None, why }
    }

    /// The status to answer with; `None` to close without an answer.
    pub(crate) fn status(&self) -> Option<StatusCode> {
        self.status
    }

    pub(crate) fn why(&self) -> &'static str {
        self.why
    }
}

/// The statuses the edge answers, in [`EdgeStats`] order.
const STATUSES: [u16; 8] = [400, 408, 413, 414, 417, 431, 501, 505];

/// Counters of a [`Server`](super::Server)'s edge, shared by its
/// connections.
#[derive(Debug, Default)]
pub struct EdgeStats {
    accepted: AtomicU64,
    open: AtomicU64,
    answered: [AtomicU64; STATUSES.len()],
    unanswered: AtomicU64,
    bad_bodies: AtomicU64,
    idle_closed: AtomicU64,
    header_timeouts: AtomicU64,
    body_timeouts: AtomicU64,
    limit_waits: AtomicU64,
}

impl EdgeStats {
    /// Client connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Relaxed)
    }

    /// Client connections open now.
    pub fn open(&self) -> u64 {
        self.open.load(Relaxed)
    }

    /// Requests the edge answered with `status` itself (400, 408, 413, 414, 417,
    /// 431, 501 or 505) and never passed on.
    pub fn rejected(&self, status: StatusCode) -> u64 {
        STATUSES
            .iter()
            .position(|s| *s == status.as_u16())
            .map_or(0, |i| self.answered[i].load(Relaxed))
    }

    /// Every status the edge answers itself, with its count
    /// ([`rejected`](EdgeStats::rejected) of each), in increasing order.
    pub fn rejections(&self) -> impl Iterator<Item = (StatusCode, u64)> + '_ {
        STATUSES
            .iter()
            .zip(&self.answered)
            .filter_map(|(s, n)| StatusCode::from_u16(*s).ok().map(|s| (s, n.load(Relaxed))))
    }

    /// Requests refused by closing the connection unanswered (HTTP/0.9).
    pub fn unanswered(&self) -> u64 {
        self.unanswered.load(Relaxed)
    }

    /// All requests the edge refused, answered or not.
    pub fn rejected_total(&self) -> u64 {
        self.answered.iter().map(|a| a.load(Relaxed)).sum::<u64>() + self.unanswered()
    }

    /// Chunked bodies found malformed after their head had gone on: the
    /// connection was closed mid-request.
    pub fn bad_bodies(&self) -> u64 {
        self.bad_bodies.load(Relaxed)
    }

    /// Keep-alive connections closed for sending no next request in time.
    pub fn idle_closed(&self) -> u64 {
        self.idle_closed.load(Relaxed)
    }

    /// Clients that sent no (complete) request head within the header read
    /// timeout, answered 408 (idle keep-alive connections closed are
    /// [`idle_closed`](EdgeStats::idle_closed)).
    pub fn header_timeouts(&self) -> u64 {
        self.header_timeouts.load(Relaxed)
    }

    /// Request bodies the client stopped sending for the body timeout:
    /// answered 408 (also counted in [`rejected`](EdgeStats::rejected))
    /// or, after the response began, cut.
    pub fn body_timeouts(&self) -> u64 {
        self.body_timeouts.load(Relaxed)
    }

    /// Times accepting paused because [`Limits::max_connections`]
    /// connections were open. (New clients wait in the listen backlog
    /// meanwhile; the kernel refuses those beyond it, which no counter here
    /// sees.)
    pub fn limit_waits(&self) -> u64 {
        self.limit_waits.load(Relaxed)
    }

    pub(crate) fn count_header_timeout(&self) {
        self.header_timeouts.fetch_add(1, Relaxed);
    }

    pub(crate) fn count_body_timeout(&self) {
        self.body_timeouts.fetch_add(1, Relaxed);
    }

    pub(crate) fn count_at_limit(&self) {
        self.limit_waits.fetch_add(1, Relaxed);
    }

    pub(crate) fn count_reject(&self, r: &Reject) {
        match r.status() {
            Some(s) => {
                if let Some(i) = STATUSES.iter().position(|x| *x == s.as_u16()) {
                    self.answered[i].fetch_add(1, Relaxed);
                }
            }
            None => {
                self.unanswered.fetch_add(1, Relaxed);
            }
        }
    }

    pub(crate) fn count_bad_body(&self) {
        self.bad_bodies.fetch_add(1, Relaxed);
    }

    pub(crate) fn count_idle_close(&self) {
        self.idle_closed.fetch_add(1, Relaxed);
    }

    /// Count an accepted connection, open until the guard drops.
    pub(crate) fn open_guard(self: &std::sync::Arc<Self>) -> OpenGuard {
        self.accepted.fetch_add(1, Relaxed);
        self.open.fetch_add(1, Relaxed);
        OpenGuard(self.clone())
    }
}

/// Counts a connection as open while it lives.
#[derive(Debug)]
pub(crate) struct OpenGuard(std::sync::Arc<EdgeStats>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests;
