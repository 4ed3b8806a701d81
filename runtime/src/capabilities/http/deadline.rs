//! A response body under the request's total timeout: the deadline that
//! bounded connecting and waiting for the head goes on bounding the body, so
//! a server that trickles bytes cannot hold a request open for longer.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};
use wasmtime_wasi_http::Error as HttpError;

/// `body` until `deadline`, then a timeout error. Holds `guard` (the
/// request's concurrency turns) for as long as the body lives.
pub(super) struct Deadline<B, G> {
    body: B,
    deadline: Pin<Box<Sleep>>,
    _guard: G,
}

impl<B, G> Deadline<B, G> {
    pub fn new(body: B, deadline: Instant, guard: G) -> Self {
        Deadline {
            body,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            _guard: guard,
        }
    }
}

impl<B, G> Body for Deadline<B, G>
where
    B: Body<Data = Bytes, Error = HttpError> + Unpin,
    G: Unpin,
{
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let this = self.get_mut();
        if this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(HttpError::HttpResponseTimeout)));
        }
        Pin::new(&mut this.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
