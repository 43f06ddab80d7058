//! Keep-alive connections to one upstream target, HTTP/1.1 only.
//!
//! The request path takes the newest idle connection (LIFO: it is the least likely to have
//! been closed by the upstream's own idle timer, and its memory the most likely to be in
//! cache) or opens one, runs the exchange (`h1`) on its own task, and gets the connection
//! back when the response body has been read to its end: at once when the body came with
//! the head, else in the body's own poll. A body dropped early (the client went away)
//! drops its connection, because unread bytes may still be on the wire.
//!
//! A connection the upstream closed while idle is noticed when it is taken (the reactor
//! has marked it readable) and skipped. One closed just as it was taken answers nothing;
//! a bodiless request with an idempotent method then goes out once more on a new
//! connection (as Go's and nginx's clients do); any other request gets a 502.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::HOST;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tokio_rustls::TlsConnector;

use super::body::ReqBody;
use super::h1::{self, Conn, Decoder, Io, ReqFraming, Upload, UploadError};

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
    Connect(#[source] io::Error),
    /// Every connection `max_connections` allows is in use and none came free in time.
    #[error("every connection to the target is busy")]
    Busy,
    /// The exchange failed (the source chain says why, e.g. a request body over its limit).
    #[error(transparent)]
    Exchange(#[from] h1::Error),
}

/// The connections of one target: the idle ones, and a permit for each open one.
pub struct Pool {
    idle: Mutex<Vec<Idle>>,
    /// One permit per connection `upstreams.X.max_connections` allows.
    slots: Arc<Semaphore>,
    /// Requests waiting for a permit: a connection that comes back then is closed instead
    /// of kept idle, so that its permit goes to one of them.
    waiting: AtomicUsize,
}

impl Default for Pool {
    fn default() -> Self {
        Pool::new(1024)
    }
}

struct Idle {
    conn: Conn,
    since: Instant,
}

impl Pool {
    /// A pool for a target allowed `max_connections` open connections.
    pub fn new(max_connections: usize) -> Self {
        Pool {
            idle: Mutex::new(Vec::new()),
            slots: Arc::new(Semaphore::new(max_connections.min(Semaphore::MAX_PERMITS))),
            waiting: AtomicUsize::new(0),
        }
    }

    /// A permit for one more connection, waiting up to `wait` for one to come free.
    async fn permit(&self, wait: Duration) -> Result<OwnedSemaphorePermit, SendError> {
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Ok(p);
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let got = tokio::time::timeout(wait, self.slots.clone().acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        match got {
            Ok(Ok(p)) => Ok(p),
            _ => Err(SendError::Busy),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Idle>> {
        // Nothing here can panic while holding the lock; recover rather than propagate.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The newest connection ready for a request.
    fn checkout(&self) -> Option<Conn> {
        loop {
            let mut idle = self.lock().pop()?;
            if idle.conn.is_usable() {
                return Some(idle.conn);
            }
        }
    }

    /// Takes a connection back once its exchange is over (nothing unread on it).
    fn checkin(&self, mut conn: Conn) {
        if self.waiting.load(Ordering::Relaxed) > 0 {
            // Its permit goes to a request waiting for one.
            return;
        }
        // An idle connection holds no buffer memory.
        conn.buf = BytesMut::new();
        let mut idle = self.lock();
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }

    /// Closes connections idle for longer than `max_idle` (and forgets closed ones), then
    /// half of those idle for longer than `purge_after` (the oldest: the bottom of the
    /// stack), so one idle connection can wait out `max_idle`.
    pub fn reap(&self, max_idle: Duration, purge_after: Duration) {
        let mut idle = self.lock();
        idle.retain_mut(|c| c.since.elapsed() < max_idle && c.conn.is_usable());
        // Oldest first: connections are pushed in the order they became idle.
        let stale = idle
            .iter()
            .take_while(|c| c.since.elapsed() >= purge_after)
            .count();
        idle.drain(..stale / 2);
    }
}

/// Opens connections for one upstream's targets.
pub struct Dialer {
    /// For `https` targets (ALPN `http/1.1`).
    pub tls: TlsConnector,
    /// Bounds TCP connect and TLS handshake together.
    pub connect_timeout: Duration,
}

/// Where a target is and how to reach it.
pub struct Endpoint<'a> {
    /// `host:port` to dial.
    pub addr: &'a str,
    /// The name to verify the certificate against, for `https` targets.
    pub tls_name: Option<&'a ServerName<'static>>,
    /// Host header for requests that came without one.
    pub host: &'a HeaderValue,
    /// The target's idle connections.
    pub pool: &'a Arc<Pool>,
    /// Opens new connections.
    pub dialer: &'a Dialer,
    /// The upstream's response timeout; also bounds finishing a request body the
    /// upstream answered before it was all sent.
    pub timeout: Duration,
}

impl Endpoint<'_> {
    /// Sends `req` (origin-form URI) on a pooled or new connection. A body that came
    /// whole with the head is returned as one buffer, its connection already back in the
    /// pool.
    pub async fn send(&self, req: Request<ReqBody>) -> Result<Response<UpstreamBody>, SendError> {
        let (mut parts, body) = req.into_parts();
        if !parts.headers.contains_key(HOST) {
            parts.headers.insert(HOST, self.host.clone());
        }
        let head_request = parts.method == Method::HEAD;
        let (head, framing) = h1::encode_head(&mut parts, &body);
        // A pooled connection the upstream closed just as it was taken answers nothing;
        // a bodiless idempotent request is then sent once more on a new connection.
        let replayable = framing == ReqFraming::Empty && parts.method.is_idempotent();
        let mut upload = Upload::new(body, framing);
        let (mut conn, pooled) = match self.pool.checkout() {
            Some(conn) => (conn, true),
            // Boxed: connecting is rare, and its state (resolver, TCP and TLS handshakes)
            // would otherwise size every request's future.
            None => (Box::pin(self.connect()).await?, false),
        };
        let mut answer = conn.exchange(&head, &mut upload, head_request).await;
        if pooled && replayable && matches!(answer, Err(h1::Error::Stale)) {
            conn = Box::pin(self.connect()).await?;
            answer = conn.exchange(&head, &mut upload, head_request).await;
        }
        let h1::Head {
            status,
            version,
            headers,
            framing,
            keep_alive,
            reason,
        } = answer?;
        let body = if status == StatusCode::SWITCHING_PROTOCOLS {
            UpstreamBody::Upgrade(Some(Box::new(conn)))
        } else {
            match Decoder::new(framing) {
                // The whole answer is here.
                Decoder::Done => {
                    settle(self.pool, conn, keep_alive, upload, status, self.timeout);
                    UpstreamBody::Full(None)
                }
                Decoder::Length(n) if conn.buf.len() as u64 >= n => {
                    let data = conn.buf.split_to(n as usize).freeze();
                    settle(self.pool, conn, keep_alive, upload, status, self.timeout);
                    UpstreamBody::Full(Some(data))
                }
                decoder => UpstreamBody::Stream(Box::new(Streaming {
                    conn: Some(conn),
                    decoder,
                    upload,
                    keep_alive,
                    status,
                    timeout: self.timeout,
                    pool: self.pool.clone(),
                    stall: None,
                    moved: true,
                })),
            }
        };
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        *resp.version_mut() = version;
        *resp.headers_mut() = headers;
        if let Some(reason) = reason {
            resp.extensions_mut().insert(reason);
        }
        Ok(resp)
    }

    async fn connect(&self) -> Result<Conn, SendError> {
        let permit = self.pool.permit(self.dialer.connect_timeout).await?;
        let dial = async {
            let tcp = TcpStream::connect(self.addr).await?;
            tcp.set_nodelay(true)?;
            Ok::<_, io::Error>(match self.tls_name {
                None => Io::Plain(tcp),
                Some(name) => Io::Tls(Box::new(self.dialer.tls.connect(name.clone(), tcp).await?)),
            })
        };
        match tokio::time::timeout(self.dialer.connect_timeout, dial).await {
            Ok(Ok(io)) => {
                let mut conn = Conn::new(io);
                conn.permit = Some(permit);
                Ok(conn)
            }
            Ok(Err(e)) => Err(SendError::Connect(e)),
            Err(_) => Err(SendError::Connect(io::Error::new(
                io::ErrorKind::TimedOut,
                "connect timed out",
            ))),
        }
    }
}

/// A response body from an upstream.
pub enum UpstreamBody {
    /// All of it (or nothing) came with the head; the connection is already back in the
    /// pool.
    Full(Option<Bytes>),
    /// The rest is read from the connection as the client takes it; the connection goes
    /// back to the pool at the end. Dropped early, it closes the connection (unread
    /// bytes may still be on the wire).
    Stream(Box<Streaming>),
    /// A 101 answer: no body, and the connection for the tunnel (`take_upgrade`).
    Upgrade(Option<Box<Conn>>),
}

/// The part of an upstream body still on its connection.
pub struct Streaming {
    conn: Option<Conn>,
    decoder: Decoder,
    /// The request body, when the upstream answered before it was all sent.
    upload: Option<Upload>,
    keep_alive: bool,
    status: StatusCode,
    /// Longest wait for the next piece of the body (`upstreams.X.timeout`).
    timeout: Duration,
    pool: Arc<Pool>,
    /// Runs while the body waits on the upstream; made on the first wait.
    stall: Option<Pin<Box<Sleep>>>,
    /// Data came since the stall timer was last set.
    moved: bool,
}

impl UpstreamBody {
    /// After a 101: the upstream connection and what was read past the head.
    pub fn take_upgrade(&mut self) -> Option<Box<Conn>> {
        match self {
            UpstreamBody::Upgrade(conn) => conn.take(),
            _ => None,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = h1::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h1::Error>>> {
        let s = match self.get_mut() {
            UpstreamBody::Full(data) => {
                return Poll::Ready(data.take().map(|d| Ok(Frame::data(d))));
            }
            UpstreamBody::Upgrade(_) => return Poll::Ready(None),
            UpstreamBody::Stream(s) => s,
        };
        let Some(conn) = s.conn.as_mut() else {
            return Poll::Ready(None);
        };
        if let Some(up) = s.upload.as_mut() {
            match up.poll_send(&mut conn.io, cx) {
                Poll::Ready(Ok(())) => s.upload = None,
                // The upstream stopped reading: what it answers still comes through.
                Poll::Ready(Err(UploadError::Write(_))) => s.upload = None,
                Poll::Ready(Err(UploadError::Body(e))) => {
                    s.conn = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Pending => {}
            }
        }
        let polled = match s.decoder.poll_data(conn, cx) {
            Poll::Ready(r) => r,
            Poll::Pending => return s.poll_stall(cx),
        };
        s.moved = true;
        match polled {
            Ok(Some(data)) => {
                if s.decoder.is_done() {
                    s.finish();
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Ok(None) => {
                s.finish();
                Poll::Ready(None)
            }
            Err(e) => {
                s.conn = None;
                Poll::Ready(Some(Err(e)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Full(data) => data.is_none(),
            UpstreamBody::Stream(s) => s.decoder.is_done(),
            UpstreamBody::Upgrade(_) => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            UpstreamBody::Stream(s) => s
                .decoder
                .remaining()
                .map_or_else(SizeHint::default, SizeHint::with_exact),
            UpstreamBody::Upgrade(_) => SizeHint::with_exact(0),
        }
    }
}

impl Streaming {
    /// Waiting for the upstream: ends the body with an error once no byte has come for
    /// `timeout` (as nginx's `proxy_read_timeout`); the connection is closed.
    fn poll_stall(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h1::Error>>> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let timer = self
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if std::mem::take(&mut self.moved) {
            timer.as_mut().reset(deadline);
        }
        ready!(timer.as_mut().poll(cx));
        self.conn = None;
        Poll::Ready(Some(Err(h1::Error::Io(io::Error::new(
            io::ErrorKind::TimedOut,
            "upstream sent no body bytes within its timeout",
        )))))
    }

    fn finish(&mut self) {
        if let Some(conn) = self.conn.take() {
            let upload = self.upload.take();
            settle(
                &self.pool,
                conn,
                self.keep_alive,
                upload,
                self.status,
                self.timeout,
            );
        }
    }
}

/// Ends an exchange whose answer has been read in full. The connection is pooled if it
/// can carry another request (bytes past the body's end mean broken framing: dropped).
/// A request body the upstream answered before its end is finished first when the
/// answer was not an error (a 202 that goes on reading, as hyper's client would), for at
/// most `limit`, and the connection then closed; after an error it is cut short.
fn settle(
    pool: &Pool,
    conn: Conn,
    keep_alive: bool,
    upload: Option<Upload>,
    status: StatusCode,
    limit: Duration,
) {
    match upload {
        None if keep_alive && conn.buf.is_empty() => pool.checkin(conn),
        Some(up) if !status.is_client_error() && !status.is_server_error() => {
            finish_upload(conn, up, limit);
        }
        _ => {}
    }
}

#[cold]
fn finish_upload(mut conn: Conn, mut up: Upload, limit: Duration) {
    tokio::spawn(async move {
        let send = std::future::poll_fn(|cx| up.poll_send(&mut conn.io, cx));
        let _ = tokio::time::timeout(limit, send).await;
    });
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
        addr: String,
        host: HeaderValue,
        pool: Arc<Pool>,
        dialer: Dialer,
    }

    impl Target {
        fn new(addr: std::net::SocketAddr) -> Self {
            let tls = crate::tls::client_config(None).unwrap();
            Target {
                addr: addr.to_string(),
                host: HeaderValue::from_str(&addr.to_string()).unwrap(),
                pool: Arc::new(Pool::default()),
                dialer: Dialer {
                    tls: TlsConnector::from(Arc::new(tls)),
                    connect_timeout: Duration::from_secs(2),
                },
            }
        }

        fn endpoint(&self) -> Endpoint<'_> {
            Endpoint {
                addr: &self.addr,
                tls_name: None,
                host: &self.host,
                pool: &self.pool,
                dialer: &self.dialer,
                timeout: Duration::from_secs(5),
            }
        }
    }

    #[tokio::test]
    async fn the_reaper_halves_a_bursts_surplus_down_to_one() {
        let (addr, accepted) = upstream(None).await;
        let target = Target::new(addr);
        let (ep, pool) = (target.endpoint(), &target.pool);
        // Eight requests in flight at once hold eight connections.
        let (a, b, c, d, e, f, g, h) = tokio::join!(
            get(&ep),
            get(&ep),
            get(&ep),
            get(&ep),
            get(&ep),
            get(&ep),
            get(&ep),
            get(&ep)
        );
        for body in [a, b, c, d, e, f, g, h] {
            assert_eq!(&body[..], b"ok");
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
