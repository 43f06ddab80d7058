//! Accepting: one loop for the public and the admin listener, the public connection's
//! first steps (handshake or plaintext sniffing, connection facts), and the admin
//! connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use super::handshake::{Proto, handshake_log_allowed, handshake_reason, sniff_plaintext};
use super::transport::Transport;
use super::{h1, h2};
use crate::config;
use crate::conn::{ClientCert, ConnInfo};
use crate::gateway::Shared;
use crate::metrics::{Metrics, ReasonLabel};

/// Accepts connections until `stop`, each under a permit of `limit` (none free: the new
/// connection is closed at once), and hands each to `serve` on a task of its own. An
/// accept error (out of file descriptors, an aborted connection) backs off briefly
/// instead of spinning.
pub(super) async fn accept_loop<F, Fut>(
    listener: TcpListener,
    limit: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr, OwnedSemaphorePermit) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::debug!(client.ip = %peer.ip(), "connection limit reached; closing new connection");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        // Spawned as is: wrapping it in another async block would store it twice.
        tokio::spawn(serve(stream, peer, permit));
    }
}

struct ActiveGuard(Arc<Metrics>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active_connections.dec();
    }
}

pub(super) async fn serve_conn(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    permit: OwnedSemaphorePermit,
) {
    shared.metrics.active_connections.inc();
    let _guard = ActiveGuard(shared.metrics.clone());
    let (acceptor, limits) = {
        let snap = shared.snapshot.load();
        (snap.tls.clone(), snap.limits.clone())
    };
    let Some(acceptor) = acceptor else {
        let Some(proto) = sniff_plaintext(&stream, limits.header_read_timeout).await else {
            return;
        };
        let conn = Arc::new(ConnInfo::plain(peer));
        serve_http(stream, conn, shared, &limits, stop, proto, permit).await;
        return;
    };
    // A TLS record starts with a handshake byte; a request line starts with a method.
    // Plain HTTP gets a readable answer, as nginx gives, instead of a TLS alert.
    // One deadline for the first byte and the whole handshake.
    let deadline = tokio::time::Instant::now() + limits.header_read_timeout;
    if plain_http_on_tls_port(&stream, deadline).await {
        shared
            .metrics
            .handshake_errors
            .get_or_create(&ReasonLabel {
                reason: "plain_http",
            })
            .inc();
        answer_plain_http(stream).await;
        return;
    }
    let tls = match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let reason = handshake_reason(&e);
            shared
                .metrics
                .handshake_errors
                .get_or_create(&ReasonLabel { reason })
                .inc();
            if handshake_log_allowed() {
                tracing::debug!(client.ip = %peer.ip(), reason, error = %e, "tls handshake failed");
            }
            return;
        }
        Err(_) => {
            shared
                .metrics
                .handshake_errors
                .get_or_create(&ReasonLabel { reason: "timeout" })
                .inc();
            return;
        }
    };
    let client_cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|der| ClientCert::parse(der.as_ref()))
        .map(Arc::new);
    // ALPN decides the protocol, so hyper never sniffs without a timer.
    let proto = match tls.get_ref().1.alpn_protocol() {
        Some(b"h2") => Proto::Http2,
        _ => Proto::Http1,
    };
    let conn = Arc::new(ConnInfo::new(peer, true, client_cert));
    // Boxed so the async layers below move a pointer, not 1.2 KiB of TLS state each.
    serve_http(Box::new(tls), conn, shared, &limits, stop, proto, permit).await;
}

/// Whether the client's first byte is an ASCII capital letter (a request line's method):
/// a TLS client sends a handshake record (0x16) first. Waits for that byte at most
/// until `deadline`; a silent client then meets the handshake's (the same) deadline.
async fn plain_http_on_tls_port(stream: &TcpStream, deadline: tokio::time::Instant) -> bool {
    let mut first = [0u8; 1];
    matches!(
        tokio::time::timeout_at(deadline, stream.peek(&mut first)).await,
        Ok(Ok(1)) if first[0].is_ascii_uppercase()
    )
}

/// 400 for a plain HTTP request on the TLS port, then close.
async fn answer_plain_http(mut stream: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const BODY: &str = "{\"error\":\"plain HTTP sent to an HTTPS port\"}";
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
        // Read what the client sent before closing: closing with it unread resets the
        // connection, and the client may lose the answer.
        let mut discard = [0u8; 4096];
        let mut left: usize = 64 * 1024;
        while left > 0 {
            match stream.read(&mut discard).await {
                Ok(n) if n > 0 => left = left.saturating_sub(n),
                _ => break,
            }
        }
    })
    .await;
}

async fn serve_http<S: Transport>(
    io: S,
    conn: Arc<ConnInfo>,
    shared: Arc<Shared>,
    limits: &config::Limits,
    stop: watch::Receiver<bool>,
    proto: Proto,
    permit: OwnedSemaphorePermit,
) {
    match proto {
        Proto::Http1 => h1::serve_http1(io, conn, shared, limits, stop, permit).await,
        Proto::Http2 => h2::serve_http2(io, conn, shared, limits, stop).await,
    }
}

/// Serves the admin listener's plain HTTP/1.1 (`admin::handle`).
pub(super) async fn serve_admin(
    stream: TcpStream,
    shared: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
) {
    let svc = service_fn(move |req| crate::admin::handle(shared.clone(), req));
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .serve_connection(TokioIo::new(stream), svc)
        .await;
}
