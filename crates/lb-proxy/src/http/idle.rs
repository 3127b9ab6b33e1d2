//! A body that fails when its source goes quiet for too long.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::pick::{BoxError, OutcomeError};

pin_project! {
    /// A body whose frames must come less than an idle timeout apart (nginx
    /// `proxy_read_timeout`): after a longer silence it ends with a timeout
    /// error, and the client sees the response cut short.
    pub struct IdleBody<B> {
        #[pin]
        body: B,
        #[pin]
        sleep: Option<Sleep>,
        limit: Duration,
        waiting: bool,
    }
}

impl<B> IdleBody<B> {
    /// Wrap `body`; `None` means no limit.
    pub fn new(body: B, limit: Option<Duration>) -> Self {
        IdleBody {
            body,
            sleep: limit.map(|l| tokio::time::sleep(l)),
            limit: limit.unwrap_or(Duration::MAX),
            waiting: false,
        }
    }
}

impl<B> fmt::Debug for IdleBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdleBody")
            .field("limit", &self.limit)
            .finish()
    }
}

impl<B> Body for IdleBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        match this.body.poll_frame(cx) {
            Poll::Ready(frame) => {
                *this.waiting = false;
                Poll::Ready(frame.map(|r| r.map_err(Into::into)))
            }
            Poll::Pending => match this.sleep.as_pin_mut() {
                Some(mut sleep) => {
                    // Only time spent waiting on the source counts, not
                    // time the reader took between frames.
                    if !*this.waiting {
                        *this.waiting = true;
                        sleep.as_mut().reset(Instant::now() + *this.limit);
                    }
                    if sleep.poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    let msg = format!("backend sent nothing for {:?}", this.limit);
                    let e = OutcomeError::new(lb_core::Outcome::Timeout, msg);
                    Poll::Ready(Some(Err(e.into())))
                }
                None => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
