//! Request bodies that are answered before they are read (404, 405, 413, ...).
//!
//! Over h2, a handler that answers without reading the body drops it; hyper then sends the
//! complete answer and, because the client's side of the stream is still open, a
//! `RST_STREAM(NO_ERROR)` (RFC 9113 §8.1, h2's `maybe_cancel`). Go's client (the API server)
//! reads that answer, but clients that are still uploading when the reset arrives (curl 7.88:
//! "Stream error in the HTTP/2 framing layer") lose it. Over HTTP/1.1 the unread body makes
//! hyper close the connection after the answer.
//!
//! So every request body is wrapped: when the wrapper is dropped before the end of the body, a
//! task reads the rest and throws it away (holding one frame at a time), so the stream ends with
//! both sides' END_STREAM and an HTTP/1.1 connection stays usable. Draining is bounded: at most
//! twice `maxBodyBytes` per body, within the body-read deadline, `limits.maxDrains` at once. Past
//! that, and for overload refusals (where reading the rest would spend the CPU the refusal is
//! saving), the body is dropped and hyper resets the stream after the complete answer.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame, SizeHint};
use tokio::sync::Semaphore;

/// Shared between the wrapper and the handler: the handler may forbid the drain.
#[derive(Debug, Default)]
pub struct DrainControl {
    skip: AtomicBool,
}

impl DrainControl {
    /// Do not read the rest of this body (an overload refusal or a too-slow client).
    pub fn skip(&self) {
        self.skip.store(true, Ordering::Relaxed);
    }
}

/// How draining is bounded.
#[derive(Clone)]
pub struct DrainPolicy {
    pub max_bytes: usize,
    pub timeout: Duration,
    pub slots: Arc<Semaphore>,
}

/// A request body that drains itself when dropped unfinished.
pub struct Drained {
    inner: Option<Body>,
    ended: bool,
    /// The client waits for `100 Continue` before sending; if we never asked, it sends nothing.
    expects_continue: bool,
    control: Arc<DrainControl>,
    policy: DrainPolicy,
}

impl Drained {
    pub fn new(
        inner: Body,
        expects_continue: bool,
        control: Arc<DrainControl>,
        policy: DrainPolicy,
    ) -> Self {
        Drained {
            ended: inner.is_end_stream(),
            inner: Some(inner),
            expects_continue,
            control,
            policy,
        }
    }
}

impl hyper::body::Body for Drained {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        // Reading at all makes hyper send the 100 Continue: from now on the client sends.
        this.expects_continue = false;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        // The end, or an error after which there is nothing left to drain.
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for Drained {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        if self.ended
            || inner.is_end_stream()
            || self.expects_continue
            || self.control.skip.load(Ordering::Relaxed)
        {
            return;
        }
        let left = self.policy.max_bytes;
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Ok(permit) = self.policy.slots.clone().try_acquire_owned() else {
            return;
        };
        let timeout = self.policy.timeout;
        runtime.spawn(async move {
            let _ = tokio::time::timeout(timeout, discard(inner, left)).await;
            drop(permit);
        });
    }
}

/// Read and drop frames until the end of the body or `left` bytes.
async fn discard(mut body: Body, mut left: usize) {
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            match left.checked_sub(data.len()) {
                Some(rest) => left = rest,
                None => return,
            }
        }
    }
}
