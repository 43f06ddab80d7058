//! The built-in echo upstream, used by `portcullis demo` and by the tests.
//!
//! It stands where a real backend would stand, behind the proxy, and reflects
//! what it received so that a test can assert the *upstream's* view of a
//! request (which headers survived, which identity headers were added, what
//! the path became). It speaks HTTP/1.1 (with upgrades) and HTTP/2, in clear
//! text or over TLS.
//!
//! | path | behaviour |
//! | --- | --- |
//! | `/slow?ms=N` | sleeps N ms, then echoes |
//! | `/die` | closes the connection (HTTP/2: resets the stream) without answering |
//! | `/status/NNN` | answers status NNN (200-599) with the echo body; anything else is 400 |
//! | `/big?bytes=N` | N bytes of `x`, with a Content-Length, in 16 KiB frames |
//! | `/stream?chunks=N&delay_ms=D` | N chunks `chunk K\n` (K from 0), D ms apart, chunked encoding |
//! | `/ws`, or any HTTP/1.1 request with `Upgrade` | 101 and raw byte echo on the upgraded stream |
//! | anything else | 200 with the JSON echo (see [`spawn`]) |
//!
//! Invariant: nothing derived from the request can panic the server; bad
//! numbers fall back to defaults, and request bodies are counted in full but
//! kept only up to [`MAX_ECHO_BODY`] bytes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::BodyExt as _;
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

/// Request bodies are echoed up to this many bytes (the count is always complete).
pub const MAX_ECHO_BODY: usize = 64 * 1024;
/// Frame size used by `/big`.
const BIG_FRAME: usize = 16 * 1024;
/// Upper bound for a TLS handshake before the connection is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections get to finish after [`EchoServer::shutdown`].
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// GUID from RFC 6455 section 1.3 for `Sec-WebSocket-Accept`.
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

static BIG_FILL: [u8; BIG_FRAME] = [b'x'; BIG_FRAME];

/// A running echo server. Dropping it (or calling [`EchoServer::shutdown`])
/// stops accepting, drains open connections briefly and closes upgraded streams,
/// so keep the handle alive for as long as the server should run.
#[derive(Debug)]
pub struct EchoServer {
    /// The address actually bound (the real port when 0 was requested).
    pub addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    requests: Arc<AtomicU64>,
}

impl EchoServer {
    /// Stops the server; idempotent.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// How many requests (of any kind, including `/die` and upgrades) reached the server.
    pub fn requests_seen(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Binds `addr` (port 0 picks a free port) and serves the echo endpoints in a
/// tokio task, over TLS when `tls` is given (HTTP/2 is chosen by ALPN or by
/// the prior-knowledge preface).
///
/// The default endpoint answers 200, `content-type: application/json`, with
/// `{"method", "uri" (path and query), "version" ("HTTP/1.1" | "HTTP/2.0"),
/// "headers" ([[name, value], ...], lower-case names, repeated headers kept;
/// order is by first appearance of each name, values of one name adjacent),
/// "body_len", "body" (UTF-8-lossy, first 64 KiB)}`.
pub async fn spawn(
    addr: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<EchoServer> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let (shutdown, _) = watch::channel(false);
    let requests = Arc::new(AtomicU64::new(0));
    let shared = Shared {
        requests: Arc::clone(&requests),
        shutdown: shutdown.subscribe(),
    };
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    tokio::spawn(accept_loop(listener, acceptor, shared));
    Ok(EchoServer {
        addr,
        shutdown,
        requests,
    })
}

/// What every connection and request task shares.
#[derive(Clone)]
struct Shared {
    requests: Arc<AtomicU64>,
    shutdown: watch::Receiver<bool>,
}

impl Shared {
    /// Resolves once shutdown was requested (or the handle is gone).
    async fn stopped(&self) {
        let mut rx = self.shutdown.clone();
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    shared: Shared,
) {
    loop {
        let accepted = tokio::select! {
            () = shared.stopped() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, _peer)) => {
                tokio::spawn(serve_tcp(tcp, acceptor.clone(), shared.clone()));
            }
            // Out of descriptors and similar: back off instead of spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn serve_tcp(tcp: TcpStream, acceptor: Option<tokio_rustls::TlsAcceptor>, shared: Shared) {
    let _ = tcp.set_nodelay(true);
    match acceptor {
        None => serve_io(tcp, shared).await,
        Some(acceptor) => {
            let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
            if let Ok(Ok(tls)) = handshake.await {
                serve_io(tls, shared).await;
            }
        }
    }
}

async fn serve_io<I>(io: I, shared: Shared)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let builder = auto::Builder::new(TokioExecutor::new());
    let service_shared = shared.clone();
    let service = hyper::service::service_fn(move |req| handle(req, service_shared.clone()));
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = shared.stopped() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, conn).await;
        }
    }
}

/// Why a request got no response at all.
#[derive(Debug, thiserror::Error)]
enum NoAnswer {
    /// `/die` was requested.
    #[error("echo: /die requested, closing the connection without a response")]
    Die,
    /// The request body could not be read.
    #[error("echo: reading the request body failed: {0}")]
    Body(#[source] hyper::Error),
}

async fn handle(
    mut req: Request<Incoming>,
    shared: Shared,
) -> Result<Response<EchoBody>, NoAnswer> {
    shared.requests.fetch_add(1, Ordering::Relaxed);

    if req.version() == Version::HTTP_11 && req.headers().contains_key(header::UPGRADE) {
        return Ok(upgrade(&mut req, shared));
    }

    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    match path.as_str() {
        "/die" => Err(NoAnswer::Die),
        "/ws" => {
            let mut resp = echo(req).await?;
            *resp.status_mut() = StatusCode::UPGRADE_REQUIRED;
            resp.headers_mut()
                .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            Ok(resp)
        }
        "/slow" => {
            let ms = query_u64(&query, "ms").unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            echo(req).await
        }
        "/big" => Ok(big(query_u64(&query, "bytes").unwrap_or(0))),
        "/stream" => Ok(stream(
            query_u64(&query, "chunks").unwrap_or(0),
            Duration::from_millis(query_u64(&query, "delay_ms").unwrap_or(0)),
        )),
        _ => match path.strip_prefix("/status/") {
            Some(code) => status(req, code).await,
            None => echo(req).await,
        },
    }
}

/// `/status/NNN`: the echo body under the requested status (no body where
/// the status forbids one).
async fn status(req: Request<Incoming>, code: &str) -> Result<Response<EchoBody>, NoAnswer> {
    let parsed = code
        .parse::<u16>()
        .ok()
        .filter(|c| (200..=599).contains(c))
        .and_then(|c| StatusCode::from_u16(c).ok());
    let mut resp = echo(req).await?;
    match parsed {
        Some(status) => {
            *resp.status_mut() = status;
            if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
                *resp.body_mut() = EchoBody::empty();
                resp.headers_mut().remove(header::CONTENT_TYPE);
            }
        }
        None => *resp.status_mut() = StatusCode::BAD_REQUEST,
    }
    Ok(resp)
}

/// The JSON echo of everything the request carried.
async fn echo(req: Request<Incoming>) -> Result<Response<EchoBody>, NoAnswer> {
    let (parts, mut body) = req.into_parts();
    let mut kept = Vec::new();
    let mut body_len: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(NoAnswer::Body)?;
        if let Some(data) = frame.data_ref() {
            body_len = body_len.saturating_add(data.len() as u64);
            let room = MAX_ECHO_BODY.saturating_sub(kept.len());
            kept.extend(data.iter().take(room));
        }
    }
    let headers: Vec<[String; 2]> = parts
        .headers
        .iter()
        .map(|(name, value)| {
            [
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            ]
        })
        .collect();
    let uri = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let json = serde_json::json!({
        "method": parts.method.as_str(),
        "uri": uri,
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_len": body_len,
        "body": String::from_utf8_lossy(&kept),
    });
    let mut resp = Response::new(if parts.method == Method::HEAD {
        EchoBody::empty()
    } else {
        EchoBody::full(Bytes::from(json.to_string()))
    });
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// `/big?bytes=N`.
fn big(bytes: u64) -> Response<EchoBody> {
    let mut resp = Response::new(EchoBody::Big { remaining: bytes });
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    resp
}

/// `/stream?chunks=N&delay_ms=D`: chunks are produced by a task and handed
/// over one at a time, so each is sent as soon as it exists.
fn stream(chunks: u64, delay: Duration) -> Response<EchoBody> {
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    tokio::spawn(async move {
        for k in 0..chunks {
            if k > 0 {
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = tx.closed() => return,
                }
            }
            if tx.send(Bytes::from(format!("chunk {k}\n"))).await.is_err() {
                return;
            }
        }
    });
    let mut resp = Response::new(EchoBody::Chunks(rx));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Answers 101 with the first offered protocol and echoes raw bytes on the
/// upgraded stream until EOF or shutdown.
fn upgrade(req: &mut Request<Incoming>, shared: Shared) -> Response<EchoBody> {
    let token = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').map(str::trim).find(|t| !t.is_empty()))
        .and_then(|t| HeaderValue::from_str(t).ok());
    let Some(token) = token else {
        let mut resp = Response::new(EchoBody::empty());
        *resp.status_mut() = StatusCode::BAD_REQUEST;
        return resp;
    };
    let accept = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|key| websocket_accept(key.as_bytes()))
        .and_then(|accept| HeaderValue::from_str(&accept).ok());

    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut io = TokioIo::new(upgraded);
        tokio::select! {
            () = echo_bytes(&mut io) => {}
            () = shared.stopped() => {}
        }
        let _ = io.shutdown().await;
    });

    let mut resp = Response::new(EchoBody::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = resp.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, token);
    if let Some(accept) = accept {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    resp
}

async fn echo_bytes<I: AsyncRead + AsyncWrite + Unpin>(io: &mut I) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match io.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let Some(data) = buf.get(..n) else { return };
        if io.write_all(data).await.is_err() || io.flush().await.is_err() {
            return;
        }
    }
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 section 4.2.2).
pub fn websocket_accept(key: &[u8]) -> String {
    use base64::Engine as _;
    use sha1::Digest as _;
    let mut sha = sha1::Sha1::new();
    sha.update(key);
    sha.update(WEBSOCKET_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// The value of `key` in a query string like `a=1&b=2`, as a number.
fn query_u64(query: &str, key: &str) -> Option<u64> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}

/// Response bodies of the echo server.
enum EchoBody {
    /// A single buffer (or nothing once sent).
    Full(Option<Bytes>),
    /// `remaining` bytes of `x`, produced lazily in 16 KiB frames.
    Big { remaining: u64 },
    /// Frames produced by a task, as they come.
    Chunks(mpsc::Receiver<Bytes>),
}

impl EchoBody {
    fn full(bytes: Bytes) -> Self {
        Self::Full(Some(bytes))
    }

    fn empty() -> Self {
        Self::Full(None)
    }
}

impl Body for EchoBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Self::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Self::Big { remaining } => {
                if *remaining == 0 {
                    return Poll::Ready(None);
                }
                let n = usize::try_from(*remaining).map_or(BIG_FRAME, |r| r.min(BIG_FRAME));
                *remaining = remaining.saturating_sub(n as u64);
                let fill: &'static [u8] = BIG_FILL.get(..n).unwrap_or(&BIG_FILL);
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(fill)))))
            }
            Self::Chunks(rx) => rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full(bytes) => bytes.is_none(),
            Self::Big { remaining } => *remaining == 0,
            Self::Chunks(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Self::Big { remaining } => SizeHint::with_exact(*remaining),
            Self::Chunks(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests;
