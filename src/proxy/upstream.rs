//! Upstream runtime: a keep-alive pool per target (`pool`), one TLS client configuration
//! per upstream for its https targets, round robin over the healthy targets, and
//! background work (health checks, closing long-idle connections) that stops when the
//! snapshot that owns the upstream is dropped.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response};
use rustls::pki_types::ServerName;

use super::body::ReqBody;
use super::pool::{self, Dialer, Endpoint, Pool, SendError, UpstreamBody};
use crate::config::{HealthCheck, Upstream as UpstreamConfig};
use crate::metrics::UpstreamCounters;

/// Why an upstream's runtime form could not be built.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The TLS client configuration for its https targets.
    #[error(transparent)]
    Tls(#[from] crate::tls::ClientTlsError),
    /// A target's host is not a name a certificate can be checked against.
    #[error("target {0}: not a valid TLS server name")]
    TlsName(String),
    /// A target's authority cannot be sent as a `Host` header.
    #[error("target {0}: not a valid Host header value")]
    Host(String),
}

/// One target with its health.
pub struct TargetRt {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// host:port.
    pub authority: Authority,
    /// host:port with the scheme's default port filled in, what is dialled.
    addr: String,
    /// For https: the name the certificate must be valid for.
    tls_name: Option<ServerName<'static>>,
    /// The Host header for requests that arrive without one.
    host: HeaderValue,
    pool: Arc<Pool>,
    /// The last active health check passed (always true without health checks).
    healthy: AtomicBool,
    /// Connect failures in a row (passive health).
    failures: AtomicU32,
    /// Out of rotation until this many milliseconds after the upstream's `epoch` (0: in).
    down_until: AtomicU64,
}

impl TargetRt {
    /// Whether the target takes requests: its active check passed and it is not out after
    /// `max_fails` connect failures.
    pub fn is_healthy(&self, now_ms: u64) -> bool {
        self.healthy.load(Ordering::Relaxed) && self.down_until.load(Ordering::Relaxed) <= now_ms
    }
}

/// A ready-to-use upstream.
pub struct UpstreamRt {
    /// Name from the config.
    pub name: String,
    /// Targets in config order.
    pub targets: Vec<TargetRt>,
    dialer: Dialer,
    /// Response-head timeout.
    pub timeout: Duration,
    /// Outcome counters.
    pub counters: UpstreamCounters,
    next: AtomicUsize,
    health_check: Option<HealthCheck>,
    /// Passive health: failures that take a target out, and for how long.
    max_fails: u32,
    fail_timeout: Duration,
    /// Time base of `down_until` and `last_warn`.
    epoch: Instant,
    /// Second (after `epoch`, plus one) of the last failure logged at warn.
    last_warn: AtomicU64,
}

impl UpstreamRt {
    /// Builds the runtime form of an upstream.
    pub fn new(cfg: &UpstreamConfig, counters: UpstreamCounters) -> Result<Self, UpstreamError> {
        let mut tls = crate::tls::client_config(cfg.ca.as_deref())?;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let dialer = Dialer {
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            connect_timeout: cfg.connect_timeout,
        };
        let targets = cfg
            .targets
            .iter()
            .map(|t| {
                let (scheme, port) = if t.https {
                    (Scheme::HTTPS, 443)
                } else {
                    (Scheme::HTTP, 80)
                };
                let host_name = t.authority.host();
                let addr = format!("{host_name}:{}", t.authority.port_u16().unwrap_or(port));
                let tls_name = t
                    .https
                    .then(|| {
                        let bare = host_name.trim_start_matches('[').trim_end_matches(']');
                        ServerName::try_from(bare.to_owned())
                    })
                    .transpose()
                    .map_err(|_| UpstreamError::TlsName(t.authority.to_string()))?;
                let host = HeaderValue::from_str(t.authority.as_str())
                    .map_err(|_| UpstreamError::Host(t.authority.to_string()))?;
                Ok(TargetRt {
                    scheme,
                    authority: t.authority.clone(),
                    addr,
                    tls_name,
                    host,
                    pool: Arc::new(Pool::new(cfg.max_connections)),
                    healthy: AtomicBool::new(true),
                    failures: AtomicU32::new(0),
                    down_until: AtomicU64::new(0),
                })
            })
            .collect::<Result<_, UpstreamError>>()?;
        Ok(UpstreamRt {
            name: cfg.name.clone(),
            targets,
            dialer,
            timeout: cfg.timeout,
            counters,
            next: AtomicUsize::new(0),
            health_check: cfg.health_check.clone(),
            max_fails: cfg.max_fails,
            fail_timeout: cfg.fail_timeout,
            epoch: Instant::now(),
            last_warn: AtomicU64::new(0),
        })
    }

    /// Milliseconds since `epoch`.
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Targets taking requests now.
    pub fn healthy_targets(&self) -> usize {
        let now = self.now_ms();
        self.targets.iter().filter(|t| t.is_healthy(now)).count()
    }

    /// Publishes the healthy-target count.
    fn publish_health(&self) {
        self.counters
            .healthy
            .set(i64::try_from(self.healthy_targets()).unwrap_or(i64::MAX));
    }

    /// Passive health: a connect failure; the `max_fails`-th in a row takes the target out
    /// for `fail_timeout` (and each one after it, while it stays out, starts that again).
    fn connect_failed(&self, t: &TargetRt) {
        let n = t.failures.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        if self.max_fails == 0 || n < self.max_fails {
            return;
        }
        let now = self.now_ms();
        let until =
            now.saturating_add(u64::try_from(self.fail_timeout.as_millis()).unwrap_or(u64::MAX));
        let was_in = t.down_until.swap(until, Ordering::Relaxed) <= now;
        if was_in {
            tracing::warn!(
                upstream.name = %self.name,
                upstream.target = %t.authority,
                failures = n,
                out_for_s = self.fail_timeout.as_secs_f64(),
                "upstream target out of rotation after connect failures"
            );
            self.publish_health();
        }
    }

    /// Passive health: the target was reached; its failure count starts again.
    fn connected(&self, t: &TargetRt) {
        if t.failures.load(Ordering::Relaxed) == 0 {
            return;
        }
        t.failures.store(0, Ordering::Relaxed);
        if t.down_until.swap(0, Ordering::Relaxed) != 0 {
            tracing::warn!(
                upstream.name = %self.name,
                upstream.target = %t.authority,
                "upstream target back in rotation"
            );
            self.publish_health();
        }
    }

    /// Logs a failed upstream exchange at warn, at most once a second per upstream (the
    /// metrics count every one), so a dead upstream cannot flood the log.
    pub fn log_failure(&self, request_id: &str, target: &TargetRt, reason: &dyn std::fmt::Display) {
        let second = self.epoch.elapsed().as_secs().saturating_add(1);
        if self.last_warn.swap(second, Ordering::Relaxed) == second {
            return;
        }
        tracing::warn!(
            request_id,
            upstream.name = %self.name,
            upstream.target = %target.authority,
            error = %reason,
            "upstream request failed"
        );
    }

    /// Next target by round robin, skipping unhealthy ones (all unhealthy: plain round robin,
    /// so a flapping check cannot black-hole traffic that might succeed).
    pub fn pick(&self) -> Option<&TargetRt> {
        let n = self.targets.len();
        if n == 1 {
            return self.targets.first();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = self.now_ms();
        (0..n)
            .map(|i| &self.targets[(start + i) % n])
            .find(|t| t.is_healthy(now))
            .or_else(|| self.targets.get(start % n.max(1)))
    }

    /// Sends `req` (origin-form URI) to `target` on a pooled or new connection.
    pub async fn send(
        &self,
        target: &TargetRt,
        req: Request<ReqBody>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let endpoint = Endpoint {
            addr: &target.addr,
            tls_name: target.tls_name.as_ref(),
            host: &target.host,
            pool: &target.pool,
            dialer: &self.dialer,
            timeout: self.timeout,
        };
        let result = endpoint.send(req).await;
        match &result {
            Err(SendError::Connect(_)) => self.connect_failed(target),
            Err(SendError::Busy) => {}
            Ok(_) | Err(SendError::Exchange(_)) => self.connected(target),
        }
        result
    }

    /// Whether at least one target is healthy (for `/readyz`).
    pub fn any_healthy(&self) -> bool {
        self.healthy_targets() > 0
    }

    /// Starts the background work, which ends when the upstream is dropped: every
    /// `pool::PURGE_INTERVAL`, closing connections idle for longer than `pool::IDLE_TIMEOUT`
    /// and half of a burst's surplus; and health checks.
    pub fn start(self: &Arc<Self>) {
        self.publish_health();
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(pool::PURGE_INTERVAL);
            loop {
                tick.tick().await;
                let Some(up) = weak.upgrade() else { return };
                for t in &up.targets {
                    t.pool.reap(pool::IDLE_TIMEOUT, pool::PURGE_INTERVAL);
                }
                // A target whose `fail_timeout` ran out is counted back in.
                up.publish_health();
            }
        });
        let Some(hc) = self.health_check.clone() else {
            return;
        };
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(hc.interval);
            loop {
                tick.tick().await;
                let Some(up) = weak.upgrade() else { return };
                for t in &up.targets {
                    let ok = up.probe(t, &hc).await;
                    if t.healthy.swap(ok, Ordering::Relaxed) != ok {
                        tracing::warn!(upstream.name = %up.name, upstream.target = %t.authority, healthy = ok, "upstream target health changed");
                        up.publish_health();
                    }
                }
            }
        });
    }

    async fn probe(&self, t: &TargetRt, hc: &HealthCheck) -> bool {
        let Ok(req) = Request::get(hc.path.as_str()).body(ReqBody::Empty) else {
            return false;
        };
        matches!(
            tokio::time::timeout(hc.timeout, self.send(t, req)).await,
            Ok(Ok(resp)) if resp.status().is_success()
        )
    }
}
