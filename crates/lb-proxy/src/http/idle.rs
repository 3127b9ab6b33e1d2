//! A body that fails when its source goes quiet for too long.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::drain::Watch;
use crate::pick::{BoxError, OutcomeError};

pin_project! {
    /// A body whose frames must come less than an idle timeout apart (nginx
    /// `proxy_read_timeout`): after a longer silence it ends with a timeout
    /// error, and the client sees the response cut short.
    pub struct IdleBody<B> {
        #[pin]
        body: B,
        // Made at the first wait: most small bodies never wait.
        #[pin]
        sleep: Option<Sleep>,
        limit: Option<Duration>,
        waiting: bool,
        // Set when a drain may cut the exchange.
        watch: Option<Watch>,
    }
}

impl<B> IdleBody<B> {
    /// Wrap `body`; `None` means no limit.
    pub fn new(body: B, limit: Option<Duration>) -> Self {
        IdleBody {
            body,
            sleep: None,
            limit,
            waiting: false,
            watch: None,
        }
    }

    /// Let a drain cut this body (see [`drain`](crate::drain)).
    pub(crate) fn watch(&mut self, watch: Watch) {
        self.watch = Some(watch);
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
        let mut this = self.project();
        match this.body.poll_frame(cx) {
            Poll::Ready(frame) => {
                *this.waiting = false;
                Poll::Ready(frame.map(|r| r.map_err(Into::into)))
            }
            Poll::Pending => {
                if let Some(w) = this.watch.as_mut() {
                    if w.poll_cut(cx) {
                        return Poll::Ready(Some(Err(crate::drain::cut_error())));
                    }
                }
                let Some(limit) = *this.limit else {
                    return Poll::Pending;
                };
                // Only time spent waiting on the source counts, not time
                // the reader took between frames.
                if !*this.waiting {
                    *this.waiting = true;
                    let Some(deadline) = Instant::now().checked_add(limit) else {
                        return Poll::Pending; // too far to ever come
                    };
                    match this.sleep.as_mut().as_pin_mut() {
                        Some(sleep) => sleep.reset(deadline),
                        None => this.sleep.set(Some(tokio::time::sleep_until(deadline))),
                    }
                }
                let fired = this
                    .sleep
                    .as_pin_mut()
                    .is_some_and(|s| s.poll(cx).is_ready());
                if !fired {
                    return Poll::Pending;
                }
                let msg = format!("backend sent nothing for {limit:?}");
                let e = OutcomeError::new(lb_core::Outcome::Timeout, msg);
                Poll::Ready(Some(Err(e.into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
