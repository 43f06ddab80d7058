//! Prometheus metrics (prometheus-client). Every family SPEC lists is registered and given
//! zero-valued series at start-up. Hot-path handles (per route and status, per
//! authenticator, per upstream) are resolved once per snapshot, so a request only bumps
//! atomics. `/metrics` renders Prometheus text format 0.0.4.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::auth::pipeline::DecisionCounters;

mod process;

/// `{route,status}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteStatus {
    /// Route name (`-` when no route matched).
    pub route: String,
    /// HTTP status code.
    pub status: u16,
}

/// `{route}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    /// Route name.
    pub route: String,
}

/// `{authenticator,result}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthLabels {
    /// Authenticator name.
    pub authenticator: String,
    /// admit | absent | reject | unavailable | locked.
    pub result: &'static str,
}

/// `{upstream,outcome}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    /// Upstream name.
    pub upstream: String,
    /// success | error | timeout.
    pub outcome: &'static str,
}

/// `{reason}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why the handshake failed.
    pub reason: &'static str,
}

/// `{result}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// success | failure.
    pub result: &'static str,
}

/// `{authenticator,result}` of JWKS refreshes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefreshLabels {
    /// Authenticator name.
    pub authenticator: String,
    /// success | failure.
    pub result: &'static str,
}

/// `{upstream}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabel {
    /// Upstream name.
    pub upstream: String,
}

/// `{version}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabel {
    /// The crate version.
    pub version: &'static str,
}

/// `{cert}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertLabel {
    /// `server`, `client_ca:<subject CN or index>` or `crl:<issuer CN or index>`.
    pub cert: String,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The process-wide metrics.
pub struct Metrics {
    registry: Registry,
    /// `portcullis_requests_total{route,status}`.
    pub requests: Family<RouteStatus, Counter>,
    /// `portcullis_request_duration_seconds{route}`.
    pub duration: Family<RouteLabel, Histogram, fn() -> Histogram>,
    /// `portcullis_auth_decisions_total{authenticator,result}`.
    pub auth: Family<AuthLabels, Counter>,
    /// `portcullis_upstream_requests_total{upstream,outcome}`.
    pub upstream: Family<UpstreamLabels, Counter>,
    /// `portcullis_active_connections`.
    pub active_connections: Gauge,
    /// `portcullis_parked_connections`: idle HTTP/1.1 connections holding no HTTP state.
    pub parked_connections: Gauge,
    /// `portcullis_tls_handshake_errors_total{reason}`.
    pub handshake_errors: Family<ReasonLabel, Counter>,
    /// `portcullis_config_reloads_total{result}`.
    pub reloads: Family<ResultLabel, Counter>,
    /// `portcullis_jwks_refresh_total{authenticator,result}`.
    pub jwks_refresh: Family<RefreshLabels, Counter>,
    /// `portcullis_password_hashes_total`: argon2/bcrypt verifications actually run.
    pub password_hashes: Counter,
    /// `portcullis_upstream_duration_seconds{upstream}`: request sent to response head.
    pub upstream_duration: Family<UpstreamLabel, Histogram, fn() -> Histogram>,
    /// `portcullis_upstream_healthy_targets{upstream}`.
    pub healthy_targets: Family<UpstreamLabel, Gauge>,
    /// `portcullis_certificate_expiry_timestamp_seconds{cert}`.
    pub certificate_expiry: Family<CertLabel, Gauge>,
}

/// Statuses whose counters are resolved up front for every route.
const COMMON_STATUSES: &[u16] = &[
    200, 201, 204, 301, 302, 304, 400, 401, 403, 404, 413, 429, 500, 502, 503, 504,
];

/// Handshake failure reasons pre-created at zero.
pub const HANDSHAKE_REASONS: &[&str] = &[
    "handshake",
    "timeout",
    "alert_received",
    "no_client_cert",
    "bad_client_cert",
    "client_cert_expired",
    "client_cert_not_yet_valid",
    "client_cert_revoked",
    "client_cert_untrusted",
    "client_cert_wrong_usage",
    "plain_http",
];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every family.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RouteStatus, Counter>::default();
        let duration: Family<RouteLabel, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(duration_histogram);
        let auth = Family::<AuthLabels, Counter>::default();
        let upstream = Family::<UpstreamLabels, Counter>::default();
        let active_connections = Gauge::default();
        let parked_connections = Gauge::default();
        let handshake_errors = Family::<ReasonLabel, Counter>::default();
        let reloads = Family::<ResultLabel, Counter>::default();
        let jwks_refresh = Family::<RefreshLabels, Counter>::default();
        let password_hashes = Counter::default();
        let upstream_duration: Family<UpstreamLabel, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(duration_histogram);
        let healthy_targets = Family::<UpstreamLabel, Gauge>::default();
        let certificate_expiry = Family::<CertLabel, Gauge>::default();
        let build_info = Family::<VersionLabel, Gauge>::default();
        build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register(
            "portcullis_build_info",
            "Always 1; the version of the running binary is its label",
            build_info,
        );
        registry.register(
            "portcullis_upstream_duration_seconds",
            "Time from sending a request upstream to its response head (or failure), by upstream",
            upstream_duration.clone(),
        );
        registry.register(
            "portcullis_upstream_healthy_targets",
            "Targets of an upstream currently taking requests (active and passive health)",
            healthy_targets.clone(),
        );
        registry.register(
            "portcullis_certificate_expiry_timestamp_seconds",
            "Unix time at which a certificate the listener uses expires (for a CRL: its next update)",
            certificate_expiry.clone(),
        );
        registry.register(
            "portcullis_requests",
            "Requests answered, by route and status",
            requests.clone(),
        );
        registry.register(
            "portcullis_request_duration_seconds",
            "Time from request head to response head, by route",
            duration.clone(),
        );
        registry.register(
            "portcullis_auth_decisions",
            "Authenticator verdicts",
            auth.clone(),
        );
        registry.register(
            "portcullis_upstream_requests",
            "Requests sent upstream, by outcome",
            upstream.clone(),
        );
        registry.register(
            "portcullis_active_connections",
            "Open public connections",
            active_connections.clone(),
        );
        registry.register(
            "portcullis_parked_connections",
            "Idle keep-alive connections parked without HTTP buffers (part of the active ones)",
            parked_connections.clone(),
        );
        registry.register(
            "portcullis_tls_handshake_errors",
            "Failed TLS handshakes",
            handshake_errors.clone(),
        );
        registry.register(
            "portcullis_config_reloads",
            "Config reloads, by result",
            reloads.clone(),
        );
        registry.register(
            "portcullis_jwks_refresh",
            "JWKS fetches, by result",
            jwks_refresh.clone(),
        );
        registry.register(
            "portcullis_password_hashes",
            "Password hash verifications computed",
            password_hashes.clone(),
        );
        for r in ["success", "failure"] {
            reloads.get_or_create(&ResultLabel { result: r }).get();
        }
        for r in HANDSHAKE_REASONS {
            handshake_errors
                .get_or_create(&ReasonLabel { reason: r })
                .get();
        }
        Metrics {
            registry,
            requests,
            duration,
            auth,
            upstream,
            active_connections,
            parked_connections,
            handshake_errors,
            reloads,
            jwks_refresh,
            password_hashes,
            upstream_duration,
            healthy_targets,
            certificate_expiry,
        }
    }

    /// Drops the gauges of an upstream a reload removed (its counters stay: they are
    /// totals, and Prometheus handles a series that stops growing).
    pub fn forget_upstream(&self, name: &str) {
        self.healthy_targets.remove(&UpstreamLabel {
            upstream: name.to_string(),
        });
    }

    /// Replaces every `portcullis_certificate_expiry_timestamp_seconds` series (on start
    /// and on each reload, so a removed certificate stops being reported).
    pub fn set_certificate_expiry(&self, certs: &[(String, i64)]) {
        self.certificate_expiry.clear();
        for (cert, at) in certs {
            self.certificate_expiry
                .get_or_create(&CertLabel { cert: cert.clone() })
                .set(*at);
        }
    }

    /// Resolves the decision counters of one authenticator (creating the zero series).
    pub fn decisions(&self, authenticator: &str) -> DecisionCounters {
        let c = |result| {
            self.auth.get_or_create_owned(&AuthLabels {
                authenticator: authenticator.to_string(),
                result,
            })
        };
        DecisionCounters {
            admit: c("admit"),
            absent: c("absent"),
            reject: c("reject"),
            unavailable: c("unavailable"),
            locked: c("locked"),
        }
    }

    /// Resolves the per-route handles.
    pub fn route(self: &Arc<Self>, route: &str) -> RouteMetrics {
        let statuses = COMMON_STATUSES
            .iter()
            .map(|s| {
                (
                    *s,
                    self.requests.get_or_create_owned(&RouteStatus {
                        route: route.to_string(),
                        status: *s,
                    }),
                )
            })
            .collect();
        RouteMetrics {
            name: route.to_string(),
            statuses,
            duration: self.duration.get_or_create_owned(&RouteLabel {
                route: route.to_string(),
            }),
            metrics: self.clone(),
        }
    }

    /// Resolves the per-upstream outcome counters.
    pub fn upstream(&self, name: &str) -> UpstreamCounters {
        let c = |outcome| {
            self.upstream.get_or_create_owned(&UpstreamLabels {
                upstream: name.to_string(),
                outcome,
            })
        };
        let label = UpstreamLabel {
            upstream: name.to_string(),
        };
        UpstreamCounters {
            success: c("success"),
            error: c("error"),
            timeout: c("timeout"),
            duration: self.upstream_duration.get_or_create_owned(&label),
            healthy: self.healthy_targets.get_or_create_owned(&label),
        }
    }

    /// Renders Prometheus text format 0.0.4.
    pub fn render(&self) -> String {
        let mut open = String::with_capacity(8192);
        if prometheus_client::encoding::text::encode(&mut open, &self.registry).is_err() {
            return String::new();
        }
        // OpenMetrics names counter families without `_total`; Prometheus 0.0.4 names
        // them like their samples. Also drop the OpenMetrics `# EOF` terminator.
        let mut out = String::with_capacity(open.len() + 256);
        let mut counters: Vec<String> = Vec::new();
        for line in open.lines() {
            if line == "# EOF" {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                if let Some(name) = rest.strip_suffix(" counter") {
                    counters.push(name.to_string());
                    out.push_str("# TYPE ");
                    out.push_str(name);
                    out.push_str("_total counter\n");
                    continue;
                }
            }
            if let Some(rest) = line.strip_prefix("# HELP ") {
                if let Some((name, help)) = rest.split_once(' ') {
                    if counters.iter().any(|c| c == name)
                        || open.contains(&format!("# TYPE {name} counter"))
                    {
                        out.push_str("# HELP ");
                        out.push_str(name);
                        out.push_str("_total ");
                        out.push_str(help);
                        out.push('\n');
                        continue;
                    }
                }
            }
            out.push_str(line);
            out.push('\n');
        }
        process::render(&mut out);
        out
    }
}

/// Per-route metric handles.
#[derive(Clone)]
pub struct RouteMetrics {
    /// Route name.
    pub name: String,
    statuses: Vec<(u16, Counter)>,
    duration: Histogram,
    metrics: Arc<Metrics>,
}

impl RouteMetrics {
    /// Records one answered request.
    pub fn record(&self, status: u16, seconds: f64) {
        match self.statuses.iter().find(|(s, _)| *s == status) {
            Some((_, c)) => {
                c.inc();
            }
            None => {
                self.metrics
                    .requests
                    .get_or_create(&RouteStatus {
                        route: self.name.clone(),
                        status,
                    })
                    .inc();
            }
        }
        self.duration.observe(seconds);
    }
}

/// Per-upstream outcome counters.
#[derive(Clone)]
pub struct UpstreamCounters {
    /// Response received.
    pub success: Counter,
    /// Connect or protocol error.
    pub error: Counter,
    /// No response within the timeout.
    pub timeout: Counter,
    /// Time to the response head (or the failure).
    pub duration: Histogram,
    /// Targets taking requests.
    pub healthy: Gauge,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_present_from_start() {
        let m = Arc::new(Metrics::new());
        m.decisions("staff");
        m.route("r").record(200, 0.001);
        m.upstream("u");
        m.set_certificate_expiry(&[("old".into(), 1)]);
        m.set_certificate_expiry(&[("server".into(), 1_900_000_000)]);
        let text = m.render();
        assert!(
            !text.contains("cert=\"old\""),
            "a replaced certificate is dropped"
        );
        for name in [
            "portcullis_requests_total{",
            "portcullis_request_duration_seconds_bucket{",
            "portcullis_auth_decisions_total{",
            "portcullis_upstream_requests_total{",
            "portcullis_active_connections ",
            "portcullis_parked_connections ",
            "portcullis_tls_handshake_errors_total{",
            "portcullis_config_reloads_total{result=\"failure\"} 0",
            "# TYPE portcullis_requests_total counter",
            "portcullis_build_info{version=\"",
            "portcullis_upstream_duration_seconds_bucket{le=\"0.0005\",upstream=\"u\"}",
            "portcullis_upstream_healthy_targets{upstream=\"u\"}",
            "portcullis_certificate_expiry_timestamp_seconds{cert=\"server\"} 1900000000",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_cpu_seconds_total ",
            "process_start_time_seconds ",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
        assert!(!text.contains("# EOF"));
    }
}
