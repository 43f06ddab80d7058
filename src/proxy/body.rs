//! Request bodies on their way upstream: streamed frame by frame, never buffered, with
//! `max_body_bytes` enforced while streaming (the gateway turns `TooLarge` into 413) and
//! a client that stops sending for `idle_timeout` cut off (`Stalled`, 408).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Sleep;

/// Why forwarding a request body stopped.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The client sent more than `max_body_bytes`.
    #[error("request body exceeds the configured limit")]
    TooLarge,
    /// The client sent nothing for `idle_timeout` while more was due.
    #[error("client sent no body bytes within the idle timeout")]
    Stalled,
    /// The client connection failed.
    #[error("client body: {0}")]
    Client(#[from] hyper::Error),
}

/// The body type sent to upstreams.
pub enum ReqBody {
    /// The client's body with a byte budget.
    Stream {
        /// Client body.
        inner: Incoming,
        /// Bytes still allowed.
        remaining: u64,
        /// Longest wait for the client's next frame.
        idle: Duration,
        /// Runs while the body waits on the client; made on the first wait.
        stall: Option<Pin<Box<Sleep>>>,
        /// A frame came since the stall timer was last set.
        moved: bool,
    },
    /// No body (health checks).
    Empty,
}

impl ReqBody {
    /// Wraps a client body with a size limit and a no-progress timeout.
    pub fn limited(inner: Incoming, limit: u64, idle: Duration) -> Self {
        ReqBody::Stream {
            inner,
            remaining: limit,
            idle,
            stall: None,
            moved: true,
        }
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ReqBody::Empty => Poll::Ready(None),
            ReqBody::Stream {
                inner,
                remaining,
                idle,
                stall,
                moved,
            } => match Pin::new(inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    *moved = true;
                    if let Some(data) = frame.data_ref() {
                        let n = data.len() as u64;
                        if n > *remaining {
                            *remaining = 0;
                            return Poll::Ready(Some(Err(BodyError::TooLarge)));
                        }
                        *remaining -= n;
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(BodyError::Client(e)))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => {
                    let deadline = tokio::time::Instant::now() + *idle;
                    let timer =
                        stall.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                    if std::mem::take(moved) {
                        timer.as_mut().reset(deadline);
                    }
                    ready!(timer.as_mut().poll(cx));
                    Poll::Ready(Some(Err(BodyError::Stalled)))
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Empty => true,
            ReqBody::Stream { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Empty => SizeHint::with_exact(0),
            ReqBody::Stream { inner, .. } => inner.size_hint(),
        }
    }
}

/// The client-side `BodyError` in `err`'s source chain, if any.
pub fn client_fault<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a BodyError> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(b) = e.downcast_ref::<BodyError>() {
            return Some(b);
        }
        cur = e.source();
    }
    None
}
