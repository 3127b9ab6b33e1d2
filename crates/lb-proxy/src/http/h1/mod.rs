//! A small HTTP/1.1 client for [`Forward`](super::Forward)'s common case:
//! the request's own task writes the request and reads the response head,
//! and whichever task polls the response body (hyper's server task) reads
//! the body. No task per connection, no channel per request.
//!
//! - [`pool`]: idle keep-alive connections per backend address, most
//!   recently used first, expired after the idle timeout, at most
//!   `max_idle` per backend, checked for a close at checkout.
//! - [`write`]: the request head in one buffer, then the body streamed
//!   (as is under a `Content-Length`, else chunked) through a bounded window.
//! - [`read`]: the response head (interim `1xx` skipped) and its framing
//!   (RFC 9112 §6.3).
//! - [`body`] and [`chunked`]: the response body, read from the socket as it
//!   is polled; the connection goes back to the pool when it ends and can
//!   take another request.
//! - [`exchange`]: one request on its way, sent again on another connection
//!   when a reused one turns out closed before the backend could act on it.
//!
//! What it does not take (decided before anything is sent, see [`takes`]):
//! protocol switches (`Upgrade`), `CONNECT` and `Expect: 100-continue`. Those
//! go through hyper's client.

use http::{header, HeaderMap, Method};

pub(crate) mod body;
pub(crate) mod chunked;
pub(crate) mod exchange;
pub(crate) mod pool;
mod read;
mod write;

pub use body::H1Body;

/// The longest response head (status line and headers) read, as the
/// longest chunked trailer section.
pub(crate) const MAX_HEAD: usize = 64 * 1024;

/// The most header fields in a response head.
pub(crate) const MAX_HEADERS: usize = 128;

/// Whether a request (already prepared for the backend) can go through
/// this client: not a protocol switch, not `CONNECT`, no
/// `Expect: 100-continue`.
pub(crate) fn takes(method: &Method, headers: &HeaderMap, upgrading: bool) -> bool {
    !upgrading && method != Method::CONNECT && !headers.contains_key(header::EXPECT)
}
