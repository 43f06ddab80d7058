//! Listeners and connections, in the order a connection meets them: `listen` accepts
//! under the connection cap and hands each connection to `handshake` (TLS under a
//! deadline with the *current* snapshot's certificates, or plaintext sniffing); the
//! connection facts are computed once (`conn`); then `h1` or `h2` serves it, with
//! `activity` counting its requests for the idle and stall watchdogs, over a `transport`.
//! Reloads and signals live in `reload`.

mod activity;
mod h1;
mod h2;
mod handshake;
mod listen;
mod transport;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::config::Config;
use crate::gateway::Shared;
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;

/// Concurrent connections on the admin listener (health checks and scrapes).
const ADMIN_MAX_CONNECTIONS: usize = 64;

/// A running gateway (listeners bound, serving).
pub struct Running {
    /// Bound public addresses (resolved when the config asked for port 0).
    pub addrs: Vec<SocketAddr>,
    /// Bound admin address.
    pub admin_addr: Option<SocketAddr>,
    /// Shared state (current snapshot, metrics).
    pub shared: Arc<Shared>,
    pub(crate) config_path: PathBuf,
    stop: watch::Sender<bool>,
    limit: Arc<Semaphore>,
    max_conns: usize,
    /// The public accept loops.
    tasks: Vec<tokio::task::JoinHandle<()>>,
    admin_stop: watch::Sender<bool>,
    admin_task: Option<tokio::task::JoinHandle<()>>,
}

/// Builds the first snapshot and binds every listener. Must run inside a tokio runtime.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let metrics = Arc::new(Metrics::new());
    let config_path = config.path.clone();
    let listen = config.server.listen.clone();
    let admin_listen = config.admin.listen;
    let max_conns = config.server.limits.max_connections;
    if config.server.tls.is_none() {
        tracing::warn!(
            "server.insecure_plaintext is set: serving plain HTTP; credentials travel in the clear"
        );
    }
    for w in config.warning_lines() {
        tracing::warn!(warning = %w, "config warning");
    }
    let snapshot = Snapshot::build(config, &metrics)?;
    snapshot.start(&metrics);
    let shared = Arc::new(Shared::new(snapshot, metrics));

    let (stop, stop_rx) = watch::channel(false);
    let limit = Arc::new(Semaphore::new(max_conns));
    let mut addrs = Vec::new();
    let mut tasks = Vec::new();
    for addr in listen {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
        let local = l.local_addr()?;
        tracing::info!(address = %local, "public listener bound");
        addrs.push(local);
        let (conn_shared, conn_stop) = (shared.clone(), stop_rx.clone());
        tasks.push(tokio::spawn(listen::accept_loop(
            l,
            limit.clone(),
            stop_rx.clone(),
            move |stream, peer, permit| {
                listen::serve_conn(stream, peer, conn_shared.clone(), conn_stop.clone(), permit)
            },
        )));
    }
    // The admin listener has its own stop: it keeps answering (`/readyz` says "draining")
    // until the public side has drained, so a load balancer sees the drain.
    let (admin_stop, admin_stop_rx) = watch::channel(false);
    let mut admin_task = None;
    let mut admin_addr = None;
    if let Some(addr) = admin_listen {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on admin address {addr}: {e}"))?;
        let local = l.local_addr()?;
        tracing::info!(address = %local, "admin listener bound");
        admin_addr = Some(local);
        let admin_shared = shared.clone();
        admin_task = Some(tokio::spawn(listen::accept_loop(
            l,
            Arc::new(Semaphore::new(ADMIN_MAX_CONNECTIONS)),
            admin_stop_rx,
            move |stream, _, permit| listen::serve_admin(stream, admin_shared.clone(), permit),
        )));
    }
    shared.listening.store(true, Ordering::Release);
    Ok(Running {
        addrs,
        admin_addr,
        shared,
        config_path,
        stop,
        limit,
        max_conns,
        tasks,
        admin_stop,
        admin_task,
    })
}

impl Running {
    /// Stops accepting, lets in-flight requests finish for up to `shutdown_grace` (the
    /// current snapshot's: a reload applies it, as it does for each connection's drain).
    /// The admin listener answers throughout, `/readyz` with 503 "draining", and closes
    /// last.
    pub async fn shutdown(mut self) {
        self.shared.draining.store(true, Ordering::Release);
        let _ = self.stop.send(true);
        for t in &self.tasks {
            t.abort();
        }
        // `abort` only asks: wait until each accept loop has ended, and its listener is
        // closed, before saying the gateway stopped accepting.
        for t in &mut self.tasks {
            let _ = t.await;
        }
        let all = u32::try_from(self.max_conns).unwrap_or(u32::MAX);
        let grace = self.shared.snapshot.load().config.server.shutdown_grace;
        if tokio::time::timeout(grace, self.limit.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!(grace = ?grace, "shutdown grace elapsed with connections still open");
        }
        let _ = self.admin_stop.send(true);
        if let Some(t) = self.admin_task.take() {
            t.abort();
            let _ = t.await;
        }
    }
}
