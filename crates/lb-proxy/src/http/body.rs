//! The body of a backend's response as [`Forward`](super::Forward) hands
//! it on: read by hyper's client, or by the proxy's own HTTP/1.1 client.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::h1::H1Body;
use crate::pick::BoxError;

/// A backend's response body: from hyper's client (protocol switches,
/// `CONNECT`, `Expect: 100-continue`, or with the own client turned off),
/// or from the proxy's own HTTP/1.1 client (everything else).
pub struct BackendBody {
    inner: Inner,
}

enum Inner {
    Hyper(Incoming),
    H1(H1Body),
}

impl BackendBody {
    /// A body read by hyper's client.
    pub fn hyper(body: Incoming) -> Self {
        BackendBody {
            inner: Inner::Hyper(body),
        }
    }

    pub(crate) fn h1(body: H1Body) -> Self {
        BackendBody {
            inner: Inner::H1(body),
        }
    }
}

impl fmt::Debug for BackendBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Inner::Hyper(b) => f.debug_tuple("BackendBody::Hyper").field(b).finish(),
            Inner::H1(b) => f.debug_tuple("BackendBody::H1").field(b).finish(),
        }
    }
}

impl Body for BackendBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.inner {
            Inner::Hyper(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(Into::into))),
            Inner::H1(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Hyper(b) => b.is_end_stream(),
            Inner::H1(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Hyper(b) => b.size_hint(),
            Inner::H1(b) => b.size_hint(),
        }
    }
}
