//! A body under a deadline: after it, the body ends in an error. Outbound
//! responses use it so that a server trickling bytes cannot hold a request
//! past its total timeout; the server uses it so that a client trickling a
//! request body cannot hold a connection.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `body` until `deadline`, then the error `expired` makes. Holds `guard`
/// (e.g. a request's concurrency turns) for as long as the body lives.
///
/// The timer is armed only once the body makes its reader wait: a body
/// that is there at once (most requests, read with their head) costs no
/// timer, and one that trickles is cut off at the same instant.
pub struct Deadline<B, G> {
    body: B,
    deadline: Instant,
    timer: Option<Pin<Box<Sleep>>>,
    expired: fn() -> BoxError,
    _guard: G,
}

impl<B, G> Deadline<B, G> {
    pub fn new(body: B, deadline: Instant, guard: G, expired: fn() -> BoxError) -> Self {
        Deadline {
            body,
            deadline,
            timer: None,
            expired,
            _guard: guard,
        }
    }
}

impl<B, G> Body for Deadline<B, G>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
    G: Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(timer) = &mut this.timer
            && timer.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Some(Err((this.expired)())));
        }
        let polled = Pin::new(&mut this.body)
            .poll_frame(cx)
            .map(|frame| frame.map(|frame| frame.map_err(Into::into)));
        if polled.is_pending() {
            let deadline = this.deadline;
            let timer = this
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Some(Err((this.expired)())));
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
