//! What a connection's watchdogs know about its requests: how many are in flight, when
//! the last one started, and which responses wait on the client (`Tracked`, the body
//! every response is wrapped in). `service` is the hyper service every connection runs.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::service::service_fn;

use crate::config;
use crate::conn::ConnInfo;
use crate::gateway::{self, Shared};

/// Per-connection request activity, for the idle and stall watchdogs and parking.
#[derive(Default)]
pub(super) struct Activity {
    pub(super) in_flight: AtomicUsize,
    pub(super) started: AtomicU64,
    /// Response body frames hyper has taken.
    pub(super) frames: AtomicU64,
    /// Responses hyper holds without waiting on their body: not polled yet, or their last
    /// frame taken and not back for the next. hyper is then waiting for the client to
    /// take what it wrote, or for flow-control window.
    pub(super) waiting_client: AtomicUsize,
    /// HTTP/2 only, where one stream can stall while others flow: each response's clock
    /// (see `StreamClocks`).
    pub(super) streams: Option<StreamClocks>,
}

/// Per-stream stall detection for HTTP/2. The watchdog advances `epoch` each tick; a
/// response waiting on the client holds the epoch its wait began in (0: not waiting). A
/// response that has waited for `idle_timeout` ends the connection, and with it the
/// upstream connections of all its streams; a client cannot shield a stalled stream
/// by keeping another one flowing.
#[derive(Default)]
pub(super) struct StreamClocks {
    epoch: AtomicU64,
    clocks: std::sync::Mutex<Vec<std::sync::Weak<AtomicU64>>>,
}

impl StreamClocks {
    /// A clock for a new response (one short lock per HTTP/2 request).
    pub(super) fn register(&self) -> Arc<AtomicU64> {
        let clock = Arc::new(AtomicU64::new(0));
        let mut clocks = self.clocks.lock().unwrap_or_else(|e| e.into_inner());
        clocks.push(Arc::downgrade(&clock));
        clock
    }

    /// Advances the epoch; true if a response has been waiting for `ticks` or more.
    pub(super) fn tick(&self, ticks: u64) -> bool {
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
    pub(super) fn set(&self, clock: &AtomicU64, waiting: bool) {
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
    pub(super) fn quiet_since(&self, seen: &mut u64) -> bool {
        let started = self.started.load(Ordering::Relaxed);
        let quiet = self.in_flight.load(Ordering::Relaxed) == 0 && started == *seen;
        *seen = started;
        quiet
    }
}

/// Notices a client that stopped reading: a response waits on it and no response frame
/// has moved on the connection for `limit`. The connection is then dropped, which drops
/// every response body on it and so releases their upstream connections.
pub(super) struct StallWatch {
    pub(super) frames: u64,
    since: Instant,
}

impl StallWatch {
    pub(super) fn new() -> Self {
        StallWatch {
            frames: 0,
            since: Instant::now(),
        }
    }

    pub(super) fn stalled(&mut self, act: &Activity, limit: Duration) -> bool {
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
pub(super) fn close_wait(limits: &config::Limits) -> Duration {
    limits.header_read_timeout.min(Duration::from_secs(5))
}

/// The current `server.shutdown_grace`: how long a draining connection may finish.
pub(super) fn drain_grace(shared: &Shared) -> Duration {
    shared.snapshot.load().config.server.shutdown_grace
}

/// The service every connection runs: the gateway, counted for the idle watchdog.
pub(super) fn service(
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
pub(super) struct InFlight(Arc<Activity>);

/// The gateway's response body, holding its request's `InFlight`; counts the frames
/// hyper takes and whether it is waiting for the client (see `StallWatch`).
pub(super) struct Tracked {
    body: gateway::RespBody,
    pub(super) in_flight: InFlight,
    waiting: bool,
    /// HTTP/2: this response's clock in `Activity::streams`.
    clock: Option<Arc<AtomicU64>>,
}

impl Tracked {
    /// A response hyper is about to take: until it polls the body, the ball is in its
    /// court (a client with no flow-control window may never let it).
    pub(super) fn new(body: gateway::RespBody, in_flight: InFlight) -> Self {
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
