//! HTTP/2 connections: hyper's server with the stream cap, and a watchdog that ends a
//! connection whose first request does not come in time, that has been idle, or one of
//! whose responses the client has stopped taking.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::watch;

use super::activity::{Activity, StreamClocks, close_wait, drain_grace, service};
use super::transport::{Transport, stopped};
use crate::coalesce::Coalesced;
use crate::config;
use crate::conn::ConnInfo;
use crate::gateway::Shared;

pub(super) async fn serve_http2<S: Transport>(
    io: S,
    conn: Arc<ConnInfo>,
    shared: Arc<Shared>,
    limits: &config::Limits,
    mut stop: watch::Receiver<bool>,
) {
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(limits.max_concurrent_streams)
        .keep_alive_interval(Some(limits.idle_timeout))
        .keep_alive_timeout(Duration::from_secs(20));
    let activity = Arc::new(Activity {
        streams: Some(StreamClocks::default()),
        ..Activity::default()
    });
    let svc = service(shared.clone(), conn.clone(), activity.clone());
    // Boxed: inline, hyper's HTTP/2 state would size every connection's task.
    let io = TokioIo::new(Coalesced::new(io));
    let mut c = Box::pin(builder.serve_connection(io, svc));
    let (idle, first) = (limits.idle_timeout, limits.header_read_timeout);
    // Often enough that each deadline is met within half its length again.
    let tick = (idle.min(first) / 2).max(Duration::from_millis(10));
    let opened = Instant::now();
    let mut quiet_from = opened;
    let mut seen = 0;
    // Ticks a response may wait on the client: a wait that began just after a tick is
    // seen one tick late, so this errs long by at most one tick.
    let stall_ticks = (idle.as_millis() / tick.as_millis().max(1)).max(1) as u64;
    let result = loop {
        tokio::select! {
            r = c.as_mut() => break r,
            () = stopped(&mut stop) => {
                c.as_mut().graceful_shutdown();
                break tokio::time::timeout(drain_grace(&shared), c.as_mut()).await.unwrap_or(Ok(()));
            }
            () = tokio::time::sleep(tick) => {
                let now = Instant::now();
                if !activity.quiet_since(&mut seen) {
                    quiet_from = now;
                }
                if seen == 0 && now.duration_since(opened) >= first {
                    // No request within `header_read_timeout` (perhaps not even the
                    // preface, which hyper would wait for before any GOAWAY): drop it.
                    tracing::debug!(client.ip = %conn.peer.ip(), "no HTTP/2 request in time; closing the connection");
                    return;
                }
                if activity.streams.as_ref().is_some_and(|s| s.tick(stall_ticks)) {
                    tracing::debug!(client.ip = %conn.peer.ip(), "client stopped reading a response; closing the connection");
                    return;
                }
                if now.duration_since(quiet_from) >= idle {
                    // Idle: GOAWAY, and a close that must not take long.
                    c.as_mut().graceful_shutdown();
                    break tokio::time::timeout(close_wait(limits), c.as_mut()).await.unwrap_or(Ok(()));
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with error");
    }
}
