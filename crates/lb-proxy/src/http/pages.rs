//! Errors answered as short HTTP responses: 502, 503, 504, and the
//! edge's refusals.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::pick::Error;

/// The text body of an error response for `status`.
pub fn error_text(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "400 Bad Request\n",
        404 => "404 Not Found\n",
        408 => "408 Request Timeout: no request head in time\n",
        414 => "414 URI Too Long\n",
        431 => "431 Request Header Fields Too Large\n",
        501 => "501 Not Implemented\n",
        502 => "502 Bad Gateway: the backend failed\n",
        503 => "503 Service Unavailable: no backend available\n",
        504 => "504 Gateway Timeout: the backend did not answer in time\n",
        505 => "505 HTTP Version Not Supported\n",
        _ => "error\n",
    }
}

/// A short `text/plain` response with a static body.
pub fn text_response<B>(status: StatusCode, text: &'static str) -> Response<ProxyBody<B>> {
    let mut resp = Response::new(ProxyBody::text(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

pin_project! {
    /// A response body: the backend's, or a short message of the proxy's own.
    pub struct ProxyBody<B> {
        #[pin]
        inner: Inner<B>,
    }
}

pin_project! {
    #[project = InnerProj]
    enum Inner<B> {
        Backend { #[pin] body: B },
        Text { text: Option<Bytes> },
    }
}

impl<B> ProxyBody<B> {
    /// The backend's body.
    pub fn backend(body: B) -> Self {
        ProxyBody {
            inner: Inner::Backend { body },
        }
    }

    /// A message of the proxy's own.
    pub fn text(text: &'static str) -> Self {
        ProxyBody {
            inner: Inner::Text {
                text: Some(Bytes::from_static(text.as_bytes())),
            },
        }
    }
}

impl<B> fmt::Debug for ProxyBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Inner::Backend { .. } => f.write_str("ProxyBody::Backend"),
            Inner::Text { text } => f.debug_tuple("ProxyBody::Text").field(text).finish(),
        }
    }
}

impl<B> Body for ProxyBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().inner.project() {
            InnerProj::Backend { body } => body.poll_frame(cx),
            InnerProj::Text { text } => Poll::Ready(text.take().map(|t| Ok(Frame::data(t)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Backend { body } => body.is_end_stream(),
            Inner::Text { text } => text.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Backend { body } => body.size_hint(),
            Inner::Text { text } => {
                SizeHint::with_exact(text.as_ref().map_or(0, |t| t.len() as u64))
            }
        }
    }
}

/// A [`Layer`] that answers a balancing [`Error`] as a short response
/// ([`Error::status`]): 503 when no backend is available or none could be
/// connected to, 504 after a response timeout, 502 otherwise.
#[derive(Clone, Copy, Debug, Default)]
pub struct ErrorPagesLayer;

impl<S> Layer<S> for ErrorPagesLayer {
    type Service = ErrorPages<S>;

    fn layer(&self, inner: S) -> ErrorPages<S> {
        ErrorPages { inner }
    }
}

/// Answers [`Error`]s as responses; see [`ErrorPagesLayer`].
#[derive(Clone, Debug)]
pub struct ErrorPages<S> {
    inner: S,
}

impl<S> ErrorPages<S> {
    /// Wrap `inner`.
    pub fn new(inner: S) -> Self {
        ErrorPages { inner }
    }
}

impl<S, B, RB> Service<Request<B>> for ErrorPages<S>
where
    S: Service<Request<B>, Response = Response<RB>, Error = Error>,
{
    type Response = Response<ProxyBody<RB>>;
    type Error = Infallible;
    type Future = PagesFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // A readiness error is answered by the call that follows.
        let _ = ready!(self.inner.poll_ready(cx));
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        PagesFuture {
            fut: self.inner.call(req),
        }
    }
}

pin_project! {
    /// The response future of [`ErrorPages`].
    #[derive(Debug)]
    pub struct PagesFuture<F> {
        #[pin]
        fut: F,
    }
}

impl<F, RB> Future for PagesFuture<F>
where
    F: Future<Output = Result<Response<RB>, Error>>,
{
    type Output = Result<Response<ProxyBody<RB>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(Ok(match ready!(self.project().fut.poll(cx)) {
            Ok(resp) => resp.map(ProxyBody::backend),
            Err(e) => {
                let status = e.status();
                tracing::warn!(status = status.as_u16(), error = %e, "request failed");
                text_response(status, error_text(status))
            }
        }))
    }
}
