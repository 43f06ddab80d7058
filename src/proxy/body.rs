//! Request bodies on their way upstream: streamed frame by frame, never buffered, with
//! `max_body_bytes` enforced while streaming (the gateway turns `TooLarge` into 413).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// Why forwarding a request body stopped.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The client sent more than `max_body_bytes`.
    #[error("request body exceeds the configured limit")]
    TooLarge,
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
    },
    /// No body (health checks).
    Empty,
}

impl ReqBody {
    /// Wraps a client body with a limit.
    pub fn limited(inner: Incoming, limit: u64) -> Self {
        ReqBody::Stream {
            inner,
            remaining: limit,
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
            ReqBody::Stream { inner, remaining } => match Pin::new(inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
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
                Poll::Pending => Poll::Pending,
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

/// True if `err` (or anything in its source chain) is `BodyError::TooLarge`.
pub fn is_too_large(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if matches!(e.downcast_ref::<BodyError>(), Some(BodyError::TooLarge)) {
            return true;
        }
        cur = e.source();
    }
    false
}
