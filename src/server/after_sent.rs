//! A response body that runs a follow-up once hyper is done with it: the shadow set's evaluation
//! starts only after the answer's bytes have been handed to the connection, so it can neither
//! change nor delay the answer.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, SizeHint};

pub struct AfterSent {
    inner: Full<Bytes>,
    then: Option<Box<dyn FnOnce() + Send>>,
}

impl AfterSent {
    pub fn new(bytes: Vec<u8>, then: Option<Box<dyn FnOnce() + Send>>) -> Self {
        AfterSent {
            inner: Full::new(Bytes::from(bytes)),
            then,
        }
    }
}

impl Body for AfterSent {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for AfterSent {
    /// Hyper drops a body after writing its last frame (or when the connection goes away; the
    /// answer was decided either way).
    fn drop(&mut self) {
        if let Some(then) = self.then.take() {
            then();
        }
    }
}
