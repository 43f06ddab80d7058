//! Listeners and connections: bind, cap concurrent connections, TLS handshake under a
//! timeout with the *current* snapshot's certificates, connection facts computed once,
//! HTTP/1.1 and HTTP/2 served by hyper-util's auto builder, graceful drain on shutdown.
//! SIGHUP reloads (see `reload`), SIGTERM/SIGINT drain and exit.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::coalesce::Coalesced;
use crate::config::{self, Config};
use crate::conn::{ClientCert, ConnInfo, Upgraded};
use crate::gateway::{self, Shared};
use crate::metrics::{Metrics, ReasonLabel};
use crate::raw_target::Scanner;
use crate::snapshot::Snapshot;

/// A running gateway (listeners bound, serving).
pub struct Running {
    /// Bound public addresses (resolved when the config asked for port 0).
    pub addrs: Vec<SocketAddr>,
    /// Bound admin address.
    pub admin_addr: Option<SocketAddr>,
    /// Shared state (current snapshot, metrics).
    pub shared: Arc<Shared>,
    config_path: PathBuf,
    stop: watch::Sender<bool>,
    limit: Arc<Semaphore>,
    max_conns: usize,
    grace: Duration,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Builds the first snapshot and binds every listener. Must run inside a tokio runtime.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let metrics = Arc::new(Metrics::new());
    let config_path = config.path.clone();
    let listen = config.server.listen.clone();
    let admin_listen = config.admin.listen;
    let grace = config.server.shutdown_grace;
    let max_conns = config.server.limits.max_connections;
    if config.server.tls.is_none() {
        tracing::warn!(
            "server.insecure_plaintext is set: serving plain HTTP; credentials travel in the clear"
        );
    }
    let snapshot = Snapshot::build(config, &metrics).map_err(anyhow::Error::msg)?;
    snapshot.start();
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
        tasks.push(tokio::spawn(accept_loop(
            l,
            shared.clone(),
            limit.clone(),
            stop_rx.clone(),
        )));
    }
    let mut admin_addr = None;
    if let Some(addr) = admin_listen {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on admin address {addr}: {e}"))?;
        let local = l.local_addr()?;
        tracing::info!(address = %local, "admin listener bound");
        admin_addr = Some(local);
        tasks.push(tokio::spawn(admin_loop(l, shared.clone(), stop_rx.clone())));
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
        grace,
        tasks,
    })
}

impl Running {
    /// Re-reads the config file and swaps in a new snapshot; on any error the running
    /// snapshot stays and the error is returned (and counted).
    pub async fn reload(&self) -> Result<(), String> {
        let result = reload(&self.shared, self.config_path.clone()).await;
        let label = if result.is_ok() { "success" } else { "failure" };
        self.shared
            .metrics
            .reloads
            .get_or_create(&crate::metrics::ResultLabel { result: label })
            .inc();
        match &result {
            Ok(()) => {
                tracing::info!(config = %self.config_path.display(), "configuration reloaded")
            }
            Err(e) => {
                tracing::error!(config = %self.config_path.display(), error = %e, "reload rejected; keeping the running configuration")
            }
        }
        result
    }

    /// Stops accepting, lets in-flight requests finish for up to `shutdown_grace`.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in &self.tasks {
            t.abort();
        }
        let all = u32::try_from(self.max_conns).unwrap_or(u32::MAX);
        if tokio::time::timeout(self.grace, self.limit.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!(grace = ?self.grace, "shutdown grace elapsed with connections still open");
        }
    }

    /// Serves until SIGTERM/SIGINT, reloading on SIGHUP. `signals` come from
    /// `Signals::install` before `start`, so a signal sent as soon as the listeners are
    /// reported bound is not met by its default action (SIGHUP would end the process).
    pub async fn serve_until_signal(self, signals: Signals) -> anyhow::Result<()> {
        let Signals {
            mut hup,
            mut term,
            mut int,
        } = signals;
        loop {
            tokio::select! {
                _ = hup.recv() => { let _ = self.reload().await; }
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        tracing::info!("shutting down: draining in-flight requests");
        self.shutdown().await;
        Ok(())
    }
}

/// The process signals `serve_until_signal` answers, caught from the moment this is made.
pub struct Signals {
    hup: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Catches SIGHUP, SIGTERM and SIGINT (queued until served). Inside a runtime.
    pub fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            hup: signal(SignalKind::hangup())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }
}

async fn reload(shared: &Shared, path: PathBuf) -> Result<(), String> {
    let loaded = tokio::task::spawn_blocking(move || config::load(&path))
        .await
        .map_err(|e| format!("config loader failed: {e}"))?;
    let cfg = loaded.map_err(|e| e.to_string())?;
    let current = shared.snapshot.load();
    if cfg.server.listen != current.config.server.listen
        || cfg.admin.listen != current.config.admin.listen
    {
        tracing::warn!("listen addresses changed: they take effect only after a restart");
    }
    let snap = Snapshot::build(cfg, &shared.metrics)?;
    snap.inherit(&current);
    snap.start();
    shared.snapshot.store(Arc::new(snap));
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    limit: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
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
        let shared = shared.clone();
        let stop = stop.clone();
        // Spawned as is: wrapping it in another async block would store it twice.
        tokio::spawn(serve_conn(stream, peer, shared, stop, permit));
    }
}

struct ActiveGuard(Arc<Metrics>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active_connections.dec();
    }
}

async fn serve_conn(
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
    let tls = match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream)).await
    {
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

/// Classifies a failed handshake for `portcullis_tls_handshake_errors_total{reason}` by
/// the rustls error tokio-rustls wraps in the `io::Error` (never by message text).
/// The reasons are listed in `metrics::HANDSHAKE_REASONS`.
fn handshake_reason(e: &std::io::Error) -> &'static str {
    use rustls::{CertificateError as C, Error as E};
    let Some(err) = e.get_ref().and_then(|i| i.downcast_ref::<E>()) else {
        return "handshake";
    };
    match err {
        E::NoCertificatesPresented => "no_client_cert",
        E::InvalidCertificate(c) => match c {
            C::Expired | C::ExpiredContext { .. } => "client_cert_expired",
            C::NotValidYet | C::NotValidYetContext { .. } => "client_cert_not_yet_valid",
            C::Revoked => "client_cert_revoked",
            C::UnknownIssuer => "client_cert_untrusted",
            C::InvalidPurpose | C::InvalidPurposeContext { .. } => "client_cert_wrong_usage",
            _ => "bad_client_cert",
        },
        E::InvalidCertRevocationList(_) => "bad_client_cert",
        E::AlertReceived(_) => "alert_received",
        _ => "handshake",
    }
}

/// Lets at most `HANDSHAKE_LOG_BURST` handshake-failure lines through per second, so a
/// scan or a misconfigured client fleet cannot flood the log; the metric counts them all.
fn handshake_log_allowed() -> bool {
    use std::sync::atomic::AtomicU64;
    const HANDSHAKE_LOG_BURST: u64 = 10;
    static WINDOW: AtomicU64 = AtomicU64::new(0);
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if WINDOW.swap(now, Ordering::Relaxed) != now {
        COUNT.store(0, Ordering::Relaxed);
    }
    COUNT.fetch_add(1, Ordering::Relaxed) < HANDSHAKE_LOG_BURST
}

/// Which HTTP version a connection speaks, decided before hyper sees it so no read happens
/// without a timer (hyper-util's version sniffing has none).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Proto {
    Http1,
    Http2,
}

/// Per-connection request activity, for the idle and stall watchdogs and parking.
#[derive(Default)]
struct Activity {
    in_flight: AtomicUsize,
    started: AtomicU64,
    /// Response body frames hyper has taken.
    frames: AtomicU64,
    /// Responses hyper holds without waiting on their body: not polled yet, or their last
    /// frame taken and not back for the next. hyper is then waiting for the client to
    /// take what it wrote, or for flow-control window.
    waiting_client: AtomicUsize,
    /// HTTP/2 only, where one stream can stall while others flow: each response's clock
    /// (see `StreamClocks`).
    streams: Option<StreamClocks>,
}

/// Per-stream stall detection for HTTP/2. The watchdog advances `epoch` each tick; a
/// response waiting on the client holds the epoch its wait began in (0: not waiting). A
/// response that has waited for `idle_timeout` ends the connection, and with it the
/// upstream connections of all its streams; a client cannot shield a stalled stream
/// by keeping another one flowing.
#[derive(Default)]
struct StreamClocks {
    epoch: AtomicU64,
    clocks: std::sync::Mutex<Vec<std::sync::Weak<AtomicU64>>>,
}

impl StreamClocks {
    /// A clock for a new response (one short lock per HTTP/2 request).
    fn register(&self) -> Arc<AtomicU64> {
        let clock = Arc::new(AtomicU64::new(0));
        let mut clocks = self.clocks.lock().unwrap_or_else(|e| e.into_inner());
        clocks.push(Arc::downgrade(&clock));
        clock
    }

    /// Advances the epoch; true if a response has been waiting for `ticks` or more.
    fn tick(&self, ticks: u64) -> bool {
        let now = self.epoch.fetch_add(1, Ordering::Relaxed) + 2;
        let mut clocks = self.clocks.lock().unwrap_or_else(|e| e.into_inner());
        let mut stalled = false;
        clocks.retain(|w| match w.upgrade() {
            Some(c) => {
                let since = c.load(Ordering::Relaxed);
                stalled |= since != 0 && now - since > ticks;
                true
            }
            None => false,
        });
        stalled
    }

    /// Marks `clock` waiting (from now) or not.
    fn set(&self, clock: &AtomicU64, waiting: bool) {
        let v = if waiting {
            self.epoch.load(Ordering::Relaxed) + 1
        } else {
            0
        };
        clock.store(v, Ordering::Relaxed);
    }
}

impl Activity {
    /// True when no request is in flight and none started since `*seen`; updates `*seen`.
    fn quiet_since(&self, seen: &mut u64) -> bool {
        let started = self.started.load(Ordering::Relaxed);
        let quiet = self.in_flight.load(Ordering::Relaxed) == 0 && started == *seen;
        *seen = started;
        quiet
    }
}

/// Notices a client that stopped reading: a response waits on it and no response frame
/// has moved on the connection for `limit`. The connection is then dropped, which drops
/// every response body on it and so releases their upstream connections.
struct StallWatch {
    frames: u64,
    since: Instant,
}

impl StallWatch {
    fn new() -> Self {
        StallWatch {
            frames: 0,
            since: Instant::now(),
        }
    }

    fn stalled(&mut self, act: &Activity, limit: Duration) -> bool {
        let now = Instant::now();
        let frames = act.frames.load(Ordering::Relaxed);
        if act.waiting_client.load(Ordering::Relaxed) == 0 || frames != self.frames {
            self.frames = frames;
            self.since = now;
            return false;
        }
        now.duration_since(self.since) >= limit
    }
}

/// The longest a connection asked to close gracefully (idle, or its first request never
/// came) may take to do so before it is dropped.
fn close_wait(limits: &config::Limits) -> Duration {
    limits.header_read_timeout.min(Duration::from_secs(5))
}

/// The current `server.shutdown_grace`: how long a draining connection may finish.
fn drain_grace(shared: &Shared) -> Duration {
    shared.snapshot.load().config.server.shutdown_grace
}

/// Plaintext only: waits (bounded) for the first bytes and picks HTTP/2 for the
/// prior-knowledge preface (`PRI * HTTP/2.0`), else HTTP/1.1.
async fn sniff_plaintext(stream: &TcpStream, timeout: Duration) -> Option<Proto> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = [0u8; 3];
    loop {
        let n = tokio::time::timeout_at(deadline, stream.peek(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        if n >= 3 || buf.first() != Some(&b'P') {
            return Some(if &buf == b"PRI" {
                Proto::Http2
            } else {
                Proto::Http1
            });
        }
        tokio::time::sleep_until(
            (tokio::time::Instant::now() + Duration::from_millis(5)).min(deadline),
        )
        .await;
    }
}

/// How long an HTTP/1.1 connection stays quiet (no request in flight, none started)
/// before it is parked: hyper's state and its read and write buffers (16 to 24 KiB) are
/// dropped, and the connection waits for its next request holding only the TLS session.
/// Keep-alive connections under load never wait that long, so the request path is
/// untouched; idle ones cost what nginx's do.
const PARK_AFTER: Duration = Duration::from_millis(250);

/// The service every connection runs: the gateway, counted for the idle watchdog.
fn service(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    act: Arc<Activity>,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = hyper::Response<Tracked>,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<hyper::Response<Tracked>, std::convert::Infallible>> + Send,
> + Clone
+ Unpin {
    service_fn(move |req| {
        let in_flight = InFlight::start(&act);
        let (shared, conn) = (shared.clone(), conn.clone());
        // The gateway's future is made inside the block: one captured from outside would
        // be stored twice, and hyper moves this future once per request.
        async move {
            let resp = gateway::handle(shared, conn, req).await;
            resp.map(|r| r.map(|body| Tracked::new(body, in_flight)))
        }
    })
}

/// A request counted in flight from its head until its response body has been written
/// (hyper drops the body then) or the request is abandoned (client gone): an idle
/// connection is one whose last response is fully out.
struct InFlight(Arc<Activity>);

/// The gateway's response body, holding its request's `InFlight`; counts the frames
/// hyper takes and whether it is waiting for the client (see `StallWatch`).
struct Tracked {
    body: gateway::RespBody,
    in_flight: InFlight,
    waiting: bool,
    /// HTTP/2: this response's clock in `Activity::streams`.
    clock: Option<Arc<AtomicU64>>,
}

impl Tracked {
    /// A response hyper is about to take: until it polls the body, the ball is in its
    /// court (a client with no flow-control window may never let it).
    fn new(body: gateway::RespBody, in_flight: InFlight) -> Self {
        let clock = in_flight.0.streams.as_ref().map(StreamClocks::register);
        let mut t = Tracked {
            body,
            in_flight,
            waiting: false,
            clock,
        };
        t.set_waiting(true);
        t
    }

    fn set_waiting(&mut self, waiting: bool) {
        if self.waiting != waiting {
            self.waiting = waiting;
            let act = &self.in_flight.0;
            if let (Some(streams), Some(clock)) = (&act.streams, &self.clock) {
                streams.set(clock, waiting);
            }
            let counter = &act.waiting_client;
            if waiting {
                counter.fetch_add(1, Ordering::Relaxed);
            } else {
                counter.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.set_waiting(false);
    }
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = <gateway::RespBody as hyper::body::Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.set_waiting(false);
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &polled {
            self.in_flight.0.frames.fetch_add(1, Ordering::Relaxed);
            self.set_waiting(true);
        }
        polled
    }
    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

impl InFlight {
    fn start(act: &Arc<Activity>) -> Self {
        act.started.fetch_add(1, Ordering::Relaxed);
        act.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(act.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
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
        Proto::Http1 => serve_http1(io, conn, shared, limits, stop, permit).await,
        Proto::Http2 => serve_http2(io, conn, shared, limits, stop).await,
    }
}

/// Serves HTTP/1.1 in sessions: a hyper connection is built when request bytes arrive and
/// dropped (the connection "parked") after `PARK_AFTER` of quiet, keeping the stream.
/// Bytes hyper had read but not parsed when it was parked are replayed to the next session.
async fn serve_http1<S: Transport>(
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
    let mut session = SessionIo {
        replay: Bytes::new(),
        inner: io,
        scanner: Scanner::default(),
        conn: conn.clone(),
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
                    // start of one, and hyper would answer it `Connection: close`.
                    if !closing && activity.quiet_since(&mut seen) && seen != session_start {
                        // Idle between requests, hyper ends the session on the next poll.
                        // If it does not (a request body still arriving, a flush pending),
                        // keep-alive is now off and the stream closes when it ends.
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

/// Resolves once the server is shutting down.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Closes a stream politely (TLS close_notify, then FIN), bounded so a peer that stopped
/// reading cannot hold the task.
async fn shutdown<S: Transport>(mut io: S) {
    use tokio::io::AsyncWriteExt;
    let _ = tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
}

async fn serve_http2<S: Transport>(
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

/// A client connection's byte stream: TLS over TCP, or TCP alone with `insecure_plaintext`.
trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The TCP socket underneath, to wait for the next request without a buffer.
    fn tcp(&self) -> &TcpStream;
    /// Whether bytes already taken off the socket wait in this layer (decrypted records).
    fn has_buffered(&mut self) -> bool;
}

impl Transport for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
    fn has_buffered(&mut self) -> bool {
        false
    }
}

impl<T: Transport> Transport for Box<T> {
    fn tcp(&self) -> &TcpStream {
        (**self).tcp()
    }
    fn has_buffered(&mut self) -> bool {
        (**self).has_buffered()
    }
}

impl Transport for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
    fn has_buffered(&mut self) -> bool {
        // Records that arrived with the handshake, or with the last read, may already be
        // decrypted; an error is left for hyper to meet (and report) on its first read.
        self.get_mut()
            .1
            .process_new_packets()
            .map_or(true, |s| s.plaintext_bytes_to_read() > 0)
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
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
}

async fn admin_loop(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
            _ = stop.changed() => return,
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| crate::admin::handle(shared.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::{CertificateError, Error};

    fn wrapped(e: Error) -> std::io::Error {
        // What tokio-rustls returns for a failed handshake.
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }

    #[test]
    fn classifies_handshake_failures_by_rustls_error() {
        let cases = [
            (Error::NoCertificatesPresented, "no_client_cert"),
            (
                Error::InvalidCertificate(CertificateError::Expired),
                "client_cert_expired",
            ),
            (
                Error::InvalidCertificate(CertificateError::NotValidYet),
                "client_cert_not_yet_valid",
            ),
            (
                Error::InvalidCertificate(CertificateError::Revoked),
                "client_cert_revoked",
            ),
            (
                Error::InvalidCertificate(CertificateError::UnknownIssuer),
                "client_cert_untrusted",
            ),
            (
                Error::InvalidCertificate(CertificateError::InvalidPurpose),
                "client_cert_wrong_usage",
            ),
            (
                Error::InvalidCertificate(CertificateError::BadSignature),
                "bad_client_cert",
            ),
            (
                Error::AlertReceived(rustls::AlertDescription::UnknownCA),
                "alert_received",
            ),
            (Error::DecryptError, "handshake"),
        ];
        for (e, reason) in cases {
            let label = handshake_reason(&wrapped(e));
            assert_eq!(label, reason);
            assert!(crate::metrics::HANDSHAKE_REASONS.contains(&label));
        }
        let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        assert_eq!(handshake_reason(&eof), "handshake");
    }
}
