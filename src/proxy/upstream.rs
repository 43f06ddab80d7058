//! Upstream runtime: a keep-alive pool per target (`pool`), one TLS client configuration
//! per upstream for its https targets, round robin over the healthy targets, and
//! background work (health checks, closing long-idle connections) that stops when the
//! snapshot that owns the upstream is dropped.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

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
    healthy: AtomicBool,
}

impl TargetRt {
    /// Whether the last health check passed (always true without health checks).
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
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
        })
    }

    /// Next target by round robin, skipping unhealthy ones (all unhealthy: plain round robin,
    /// so a flapping check cannot black-hole traffic that might succeed).
    pub fn pick(&self) -> Option<&TargetRt> {
        let n = self.targets.len();
        if n == 1 {
            return self.targets.first();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &self.targets[(start + i) % n])
            .find(|t| t.is_healthy())
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
        endpoint.send(req).await
    }

    /// Whether at least one target is healthy (for `/readyz`).
    pub fn any_healthy(&self) -> bool {
        self.targets.iter().any(TargetRt::is_healthy)
    }

    /// Starts the background work, which ends when the upstream is dropped: every
    /// `pool::PURGE_INTERVAL`, closing connections idle for longer than `pool::IDLE_TIMEOUT`
    /// and half of a burst's surplus; and health checks.
    pub fn start(self: &Arc<Self>) {
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(pool::PURGE_INTERVAL);
            loop {
                tick.tick().await;
                let Some(up) = weak.upgrade() else { return };
                for t in &up.targets {
                    t.pool.reap(pool::IDLE_TIMEOUT, pool::PURGE_INTERVAL);
                }
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
                        tracing::warn!(upstream.name = %up.name, target = %t.authority, healthy = ok, "upstream target health changed");
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
