//! HTTP/1.1 connections, served in sessions so an idle one holds only its TLS state.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, watch};

use super::activity::{Activity, StallWatch, drain_grace, service};
use super::transport::{Transport, shutdown, stopped};
use crate::config;
use crate::conn::{ConnInfo, Upgraded};
use crate::gateway::Shared;
use crate::metrics::Metrics;
use crate::raw_target::Scanner;

/// How long an HTTP/1.1 connection stays quiet (no request in flight, none started)
/// before it is parked: hyper's state and its read and write buffers (16 to 24 KiB) are
/// dropped, and the connection waits for its next request holding only the TLS session.
/// Keep-alive connections under load never wait that long, so the request path is
/// untouched; idle ones cost what nginx's do.
const PARK_AFTER: Duration = Duration::from_millis(250);

/// Serves HTTP/1.1 in sessions: a hyper connection is built when request bytes arrive and
/// dropped (the connection "parked") after `PARK_AFTER` of quiet, keeping the stream.
/// Bytes hyper had read but not parsed when it was parked are replayed to the next session.
pub(super) async fn serve_http1<S: Transport>(
    io: S,
    conn: Arc<ConnInfo>,
    shared: Arc<Shared>,
    limits: &config::Limits,
    mut stop: watch::Receiver<bool>,
    permit: OwnedSemaphorePermit,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192) + 1024)
        .keep_alive(true);
    let activity = Arc::new(Activity::default());
    let mut svc = service(shared.clone(), conn.clone(), activity.clone());
    let tick = PARK_AFTER.min(limits.idle_timeout);
    let unflushed = Arc::new(AtomicBool::new(false));
    let mut session = SessionIo {
        replay: Bytes::new(),
        inner: io,
        scanner: Scanner::default(),
        conn: conn.clone(),
        unflushed: unflushed.clone(),
    };
    // A new connection gets `header_read_timeout` for its first request, a parked one
    // `idle_timeout` (less the quiet time already spent) for its next.
    let mut wait = limits.header_read_timeout;
    loop {
        if session.replay.is_empty() && !session.inner.has_buffered() {
            let parked = Parked::new(&shared.metrics);
            let readable = tokio::select! {
                r = tokio::time::timeout(wait, session.inner.tcp().readable()) => matches!(r, Ok(Ok(()))),
                () = stopped(&mut stop) => false,
            };
            drop(parked);
            if !readable {
                break;
            }
        }
        let mut c = Box::pin(builder.serve_connection(TokioIo::new(session), svc));
        // Set once hyper was asked to end the session: `parking` if it was idle and
        // ended at once, `closing` if not (then the stream is closed when it ends).
        let mut parking = false;
        let mut closing = false;
        let session_start = activity.started.load(Ordering::Relaxed);
        let mut seen = session_start;
        let sleep = tokio::time::sleep(tick);
        tokio::pin!(sleep);
        let mut stall = StallWatch::new();
        let result = loop {
            tokio::select! {
                biased;
                r = c.as_mut() => break r,
                () = stopped(&mut stop), if !closing => {
                    // Finish the request in flight (answered `Connection: close`), then close.
                    c.as_mut().graceful_shutdown();
                    match tokio::time::timeout(drain_grace(&shared), c.as_mut()).await {
                        Ok(Err(e)) => tracing::debug!(error = %e, "connection ended with error"),
                        Ok(Ok(())) => {}
                        Err(_) => return,
                    }
                    let parts = Pin::into_inner(c).into_parts();
                    shutdown(parts.io.into_inner().inner).await;
                    return;
                }
                () = &mut sleep => {
                    if stall.stalled(&activity, limits.idle_timeout) {
                        tracing::debug!(client.ip = %conn.peer.ip(), "client stopped reading its response; closing the connection");
                        return;
                    }
                    sleep.as_mut().reset(tokio::time::Instant::now() + tick);
                    // Only after a request: a session that has served none may hold the
                    // start of one, and hyper would answer it `Connection: close`. Only
                    // once all it wrote is flushed: hyper idle with a flush pending would
                    // not end at once, and the stream would be closed after a response
                    // the client was told it may follow on the same connection.
                    if !closing
                        && !unflushed.load(Ordering::Relaxed)
                        && activity.quiet_since(&mut seen)
                        && seen != session_start
                    {
                        // Idle between requests, hyper ends the session on the next poll.
                        // If it does not (a request body still arriving), keep-alive is
                        // now off and the stream closes when it ends.
                        c.as_mut().graceful_shutdown();
                        closing = true;
                        match std::future::poll_fn(|cx| Poll::Ready(c.as_mut().poll(cx))).await {
                            Poll::Ready(r) => {
                                parking = r.is_ok();
                                break r;
                            }
                            Poll::Pending => {}
                        }
                    }
                }
            }
        };
        let parts = Pin::into_inner(c).into_parts();
        svc = parts.service;
        session = parts.io.into_inner();
        if session.replay.is_empty() {
            // An emptied `Bytes` still holds the buffer it was cut from.
            session.replay = Bytes::new();
        }
        if !parts.read_buf.is_empty() {
            session.replay = if session.replay.is_empty() {
                parts.read_buf
            } else {
                [parts.read_buf, session.replay].concat().into()
            };
        }
        let tunnel = conn.upgrade.take();
        match result {
            Ok(()) if tunnel.is_some() => {
                // hyper wrote (and flushed) the 101: the stream belongs to the tunnel now.
                if let Some(tunnel) = tunnel {
                    let _ = tunnel.send(Upgraded {
                        io: Box::new(session.inner),
                        read_ahead: session.replay,
                        permit,
                    });
                }
                return;
            }
            Ok(()) if parking => wait = limits.idle_timeout.saturating_sub(tick),
            Ok(()) => break,
            Err(e) => {
                // A tunnel waiting for this stream gets nothing (its sender is dropped).
                tracing::debug!(error = %e, "connection ended with error");
                return;
            }
        }
    }
    shutdown(session.inner).await;
}

/// Counts a connection in `portcullis_parked_connections` while it lives.
struct Parked<'a>(&'a prometheus_client::metrics::gauge::Gauge);

impl<'a> Parked<'a> {
    fn new(metrics: &'a Metrics) -> Self {
        metrics.parked_connections.inc();
        Parked(&metrics.parked_connections)
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The stream as one hyper session sees it: `replay` (bytes an earlier session read but
/// did not parse) comes first. Shutting down is not hyper's to do: a session that ends
/// may only be parking, so `serve_http1` closes the stream itself when it is done.
struct SessionIo<S> {
    replay: Bytes,
    inner: S,
    /// Request targets with a `#`, which the URI parser would drop (`raw_target`).
    scanner: Scanner,
    conn: Arc<ConnInfo>,
    /// Set by every write, cleared when a flush completes: while set, bytes hyper wrote
    /// may not have reached the socket, and the session must not be parked.
    unflushed: Arc<AtomicBool>,
}

impl<S: Transport> AsyncRead for SessionIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.replay.is_empty() {
            let before = buf.filled().len();
            let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
            // Replayed bytes were scanned when first read; these are new.
            let this = &mut *self;
            if let Some(read) = buf.filled().get(before..).filter(|r| !r.is_empty()) {
                this.scanner.scan(read, &this.conn.fragments);
            }
            return polled;
        }
        let n = self.replay.len().min(buf.remaining());
        buf.put_slice(&self.replay[..n]);
        bytes::Buf::advance(&mut self.replay, n);
        Poll::Ready(Ok(()))
    }
}

impl<S: Transport> AsyncWrite for SessionIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.unflushed.store(true, Ordering::Relaxed);
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.unflushed.store(true, Ordering::Relaxed);
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let flushed = Pin::new(&mut self.inner).poll_flush(cx);
        if matches!(flushed, Poll::Ready(Ok(()))) {
            self.unflushed.store(false, Ordering::Relaxed);
        }
        flushed
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.poll_flush(cx)
    }
}
