//! Balancing requests over a pool: [`Balance`] and [`BalanceLayer`].
//!
//! The pick runs in `call` against the pool's lock-free snapshot with the
//! pool's scheduler (`lb_sched::Balancer`); the inner service is a
//! per-backend forwarder that reads the choice from the request's
//! [`Upstream`] extension. Retries follow nginx's `proxy_next_upstream`
//! (`ngx_http_upstream.c`), with the request's tried set in a fixed array of
//! [`MAX_TRIES`] ids passed to every scheduler through
//! [`Ctx::with_tried`](lb_core::Ctx::with_tried).

use std::net::SocketAddr;

mod body;
mod error;
mod future;
mod policy;
pub(crate) mod service;

pub(crate) use body::Sending;
pub use body::{Lease, LeasedBody, Upstream, UpstreamBody};
pub use error::{classify, BoxError, Error, OutcomeError};
pub use future::ResponseFuture;
pub use policy::{is_idempotent, Retry, MAX_TRIES, RETRYABLE_STATUSES};
pub use service::{Balance, BalanceLayer};

/// The client's address, as a request extension. Servers insert it for
/// each request ([`crate::http::Server`] does); [`Balance`] reads it for
/// the pick's context and `X-Forwarded-For`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// The local address a request came in on, as a request extension (the
/// pick's destination, for dh, lblc and lblcr).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalAddr(pub SocketAddr);
