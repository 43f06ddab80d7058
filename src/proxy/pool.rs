//! Keep-alive connections to one upstream target, HTTP/1.1 only.
//!
//! The request path takes the newest idle connection (LIFO: it is the least likely to have
//! been closed by the upstream's own idle timer) or opens one, sends, and gets the
//! connection back when the response body has been read to its end — in the body's own
//! poll, so a finished exchange costs no extra task. A body dropped early (the client went
//! away) drops its connection, because unread bytes may still be on the wire.
//!
//! A pooled connection the upstream closed just as it was taken hands the request back
//! unsent, and the request goes out once more on a new connection; nothing that reached
//! the upstream is ever sent twice.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderValue, Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use tower_service::Service;

use super::body::ReqBody;
use super::upstream::Connector;

/// Idle connections kept per target. Above the concurrency a target sees, not below it:
/// a cap under the peak closes connections after each burst only to open them again for
/// the next (at 256, one HTTP/2 request in eight paid a TCP connect under h2load -c10
/// -m32). Envoy's default connection limit is the same 1,024; HAProxy keeps all.
const MAX_IDLE: usize = 1024;
/// An idle connection older than this is closed by the reaper.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// The reaper's period; each time, half of the connections idle for longer than this are
/// closed (as HAProxy's `pool-purge-delay`): a burst's surplus is gone within seconds
/// instead of holding its memory for `IDLE_TIMEOUT`. After `h2load -c100 -m10` the 1,000
/// connections it left made the same process's HTTP/1.1 10 % slower than before it.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(5);

/// Why a request could not be sent or answered.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection: refused, unreachable, TLS failed, connect timeout.
    #[error("connect: {0}")]
    Connect(Box<dyn std::error::Error + Send + Sync>),
    /// The exchange failed (the source chain says why, e.g. a request body over its limit).
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

/// The idle connections of one target.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<Vec<Idle>>,
}

struct Idle {
    tx: SendRequest<ReqBody>,
    since: Instant,
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, Vec<Idle>> {
        // Nothing here can panic while holding the lock; recover rather than propagate.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The newest connection ready for a request.
    fn checkout(&self) -> Option<SendRequest<ReqBody>> {
        let mut idle = self.lock();
        while let Some(c) = idle.pop() {
            if c.tx.is_ready() {
                return Some(c.tx);
            }
        }
        None
    }

    /// Takes a connection back once its exchange is over.
    fn checkin(self: Arc<Self>, tx: SendRequest<ReqBody>) {
        if tx.is_ready() {
            self.put(tx);
        } else if !tx.is_closed() {
            // The connection has not yet noticed the exchange is over (its task has not
            // run since); it will be ready, or closed, as soon as it does.
            tokio::spawn(async move {
                let mut tx = tx;
                if tx.ready().await.is_ok() {
                    self.put(tx);
                }
            });
        }
    }

    fn put(&self, tx: SendRequest<ReqBody>) {
        let mut idle = self.lock();
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                tx,
                since: Instant::now(),
            });
        }
    }

    /// Closes connections idle for longer than `max_idle` (and forgets closed ones), then
    /// half of those idle for longer than `purge_after` (the oldest: the bottom of the
    /// stack), so one idle connection can wait out `max_idle`.
    pub fn reap(&self, max_idle: Duration, purge_after: Duration) {
        let mut idle = self.lock();
        idle.retain(|c| !c.tx.is_closed() && c.since.elapsed() < max_idle);
        // Oldest first: connections are pushed in the order they became idle.
        let stale = idle
            .iter()
            .take_while(|c| c.since.elapsed() >= purge_after)
            .count();
        idle.drain(..stale / 2);
    }
}

/// Where a target is and how to reach it.
pub struct Endpoint<'a> {
    /// `scheme://authority/`, what the connector dials.
    pub uri: &'a Uri,
    /// Host header for requests that came without one.
    pub host: &'a HeaderValue,
    /// The target's idle connections.
    pub pool: &'a Arc<Pool>,
    /// Dials new connections (TCP, and TLS for https targets).
    pub connector: &'a Connector,
}

impl Endpoint<'_> {
    /// Sends `req` (origin-form URI) on a pooled or new connection.
    pub async fn send(
        &self,
        mut req: Request<ReqBody>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        if !req.headers().contains_key(HOST) {
            req.headers_mut().insert(HOST, self.host.clone());
        }
        let (mut tx, pooled) = match self.pool.checkout() {
            Some(tx) => (tx, true),
            // Boxed: connecting is rare, and its state (resolver, TCP and TLS handshakes)
            // would otherwise size every request's future.
            None => (Box::pin(self.connect()).await?, false),
        };
        let resp = match tx.try_send_request(req).await {
            Ok(resp) => resp,
            // Closed under us before a byte was written: once more, on a new connection.
            // Boxed, as it is rare.
            Err(e) if pooled => {
                let (new, resp) = Box::pin(self.resend(e)).await?;
                tx = new;
                resp
            }
            Err(e) => return Err(e.into_error().into()),
        };
        let slot = Some(Checkin {
            tx,
            pool: self.pool.clone(),
        });
        Ok(resp.map(|inner| UpstreamBody { inner, slot }.settle()))
    }

    async fn resend(
        &self,
        mut e: hyper::client::conn::TrySendError<Request<ReqBody>>,
    ) -> Result<(SendRequest<ReqBody>, Response<Incoming>), SendError> {
        let Some(req) = e.take_message() else {
            return Err(e.into_error().into());
        };
        let mut tx = self.connect().await?;
        let resp = tx.send_request(req).await?;
        Ok((tx, resp))
    }

    async fn connect(&self) -> Result<SendRequest<ReqBody>, SendError> {
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(SendError::Connect)?;
        let io = connector
            .call(self.uri.clone())
            .await
            .map_err(SendError::Connect)?;
        let (tx, conn) = http1::handshake(io).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with error");
            }
        });
        Ok(tx)
    }
}

struct Checkin {
    tx: SendRequest<ReqBody>,
    pool: Arc<Pool>,
}

/// A response body from an upstream; its connection goes back to the pool at the end.
pub struct UpstreamBody {
    inner: Incoming,
    slot: Option<Checkin>,
}

impl UpstreamBody {
    /// A body that is over before it starts (204, 304, HEAD, `Content-Length: 0`, 101)
    /// may never be polled: settle its connection now.
    fn settle(mut self) -> Self {
        if self.inner.is_end_stream() {
            self.release();
        }
        self
    }

    fn release(&mut self) {
        if let Some(Checkin { tx, pool }) = self.slot.take() {
            pool.checkin(tx);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.release(),
            Poll::Ready(Some(Err(_))) => this.slot = None,
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::Notify;

    use super::*;

    /// A raw HTTP/1.1 upstream answering `ok` to bodiless requests, with keep-alive; with
    /// `close`, it closes a connection after its first answer once `close` is notified.
    /// Counts the connections it accepts.
    async fn upstream(close: Option<Arc<Notify>>) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let close = close.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    loop {
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                            match s.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => head.extend_from_slice(&buf[..n]),
                            }
                        }
                        head.clear();
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if s.write_all(answer).await.is_err() {
                            return;
                        }
                        if let Some(close) = &close {
                            close.notified().await;
                            return;
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    /// What an `Endpoint` borrows.
    struct Target {
        uri: Uri,
        host: HeaderValue,
        pool: Arc<Pool>,
        connector: Connector,
    }

    impl Target {
        fn new(addr: std::net::SocketAddr) -> Self {
            Target {
                uri: format!("http://{addr}/").parse().unwrap(),
                host: HeaderValue::from_str(&addr.to_string()).unwrap(),
                pool: Arc::new(Pool::default()),
                connector: super::super::upstream::connector(None, Duration::from_secs(2)).unwrap(),
            }
        }

        fn endpoint(&self) -> Endpoint<'_> {
            Endpoint {
                uri: &self.uri,
                host: &self.host,
                pool: &self.pool,
                connector: &self.connector,
            }
        }
    }

    #[tokio::test]
    async fn the_reaper_halves_a_bursts_surplus_down_to_one() {
        let (addr, accepted) = upstream(None).await;
        let target = Target::new(addr);
        let (ep, pool) = (target.endpoint(), &target.pool);
        // Eight responses in flight at once hold eight connections.
        let mut held = vec![];
        for _ in 0..8 {
            let req = Request::get("/").body(ReqBody::Empty).unwrap();
            held.push(ep.send(req).await.unwrap());
        }
        for resp in held {
            assert_eq!(
                &resp.into_body().collect().await.unwrap().to_bytes()[..],
                b"ok"
            );
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 8);
        assert_eq!(pool.lock().len(), 8);
        pool.reap(IDLE_TIMEOUT, PURGE_INTERVAL);
        assert_eq!(pool.lock().len(), 8, "none idle for a purge interval yet");
        for c in pool.lock().iter_mut() {
            c.since -= PURGE_INTERVAL;
        }
        let mut left = vec![];
        for _ in 0..4 {
            pool.reap(IDLE_TIMEOUT, PURGE_INTERVAL);
            left.push(pool.lock().len());
        }
        assert_eq!(left, [4, 2, 1, 1]);
        // A connection newer than the interval is not part of the surplus.
        assert_eq!(&get(&ep).await[..], b"ok");
        pool.reap(IDLE_TIMEOUT, PURGE_INTERVAL);
        assert_eq!(pool.lock().len(), 1);
    }

    async fn get(ep: &Endpoint<'_>) -> Bytes {
        let req = Request::get("/").body(ReqBody::Empty).unwrap();
        let resp = ep.send(req).await.unwrap();
        resp.into_body().collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn an_idle_connection_the_upstream_closed_is_reaped_and_replaced() {
        let close = Arc::new(Notify::new());
        let (addr, accepted) = upstream(Some(close.clone())).await;
        let target = Target::new(addr);
        let (ep, pool) = (target.endpoint(), &target.pool);
        assert_eq!(&get(&ep).await[..], b"ok");
        assert_eq!(
            pool.lock().len(),
            1,
            "a finished exchange returns its connection"
        );
        // The upstream closes it: the reaper forgets it, and the next request dials anew.
        close.notify_one();
        let mut waited = 0;
        while !pool.lock().is_empty() {
            assert!(
                waited < 200,
                "the reaper never noticed the closed connection"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
            pool.reap(IDLE_TIMEOUT, PURGE_INTERVAL);
            waited += 1;
        }
        assert_eq!(&get(&ep).await[..], b"ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn the_reaper_closes_connections_idle_too_long() {
        let (addr, accepted) = upstream(None).await;
        let target = Target::new(addr);
        let (ep, pool) = (target.endpoint(), &target.pool);
        assert_eq!(&get(&ep).await[..], b"ok");
        assert_eq!(&get(&ep).await[..], b"ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "kept alive and reused");
        pool.reap(IDLE_TIMEOUT, PURGE_INTERVAL);
        assert_eq!(
            pool.lock().len(),
            1,
            "an open connection idle for less is kept"
        );
        pool.reap(Duration::ZERO, PURGE_INTERVAL);
        assert!(pool.lock().is_empty());
    }
}
