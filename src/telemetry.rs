//! Logging: a tracing subscriber (JSON lines or text) and the one access-log event per
//! request. The access log carries the path without its query string and never a
//! credential, header value or body.

use tracing_subscriber::EnvFilter;

use crate::config::Log;

/// Installs the global subscriber. Safe to call once; later calls are ignored.
pub fn init(log: &Log) {
    let filter = EnvFilter::try_from_env("PORTCULLIS_LOG")
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if log.json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
    } else {
        builder.try_init()
    };
}

/// Installs a text subscriber at `info` for commands that run before a config is loaded.
pub fn init_default() {
    init(&Log {
        json: false,
        level: "info".into(),
    });
}

/// One finished request, as the access log records it.
pub struct Access<'a> {
    /// Request id.
    pub request_id: &'a str,
    /// Route name or `-`.
    pub route: &'a str,
    /// Method.
    pub method: &'a str,
    /// Path without query.
    pub path: &'a str,
    /// Status sent.
    pub status: u16,
    /// Seconds from head received to response head.
    pub duration: f64,
    /// Upstream name or `-`.
    pub upstream: &'a str,
    /// Admitting methods or `-`.
    pub auth_method: &'a str,
    /// Subject or empty.
    pub subject: &'a str,
    /// Client address.
    pub client_ip: std::net::IpAddr,
}

/// Emits the access-log event.
pub fn access(a: &Access<'_>) {
    tracing::info!(
        target: "portcullis::access",
        request_id = a.request_id,
        route.name = a.route,
        http.method = a.method,
        url.path = a.path,
        http.status = a.status,
        duration_ms = a.duration * 1000.0,
        upstream.name = a.upstream,
        auth.method = a.auth_method,
        auth.subject = a.subject,
        client.ip = %a.client_ip,
        "request"
    );
}
