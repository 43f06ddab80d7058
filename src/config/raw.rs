//! The serde shape of the TOML file and nothing else: every table denies unknown keys, so
//! a typo is an error rather than a silently ignored setting. Semantic checks live in
//! `validate.rs`, which turns these types into `Config`. Each authenticator kind's shape
//! lives beside the kind (`auth::basic::Raw`, ...), read once its `kind` is known.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::units::{Dur, Size};

/// `[server]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub listen: Option<Vec<String>>,
    pub shutdown_grace: Option<Dur>,
    pub workers: Option<i64>,
    pub insecure_plaintext: Option<bool>,
    pub trusted_proxies: Option<Vec<String>>,
    pub tls: Option<Tls>,
    pub lockout: Option<Lockout>,
    pub limits: Option<Limits>,
}

/// `[server.tls]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub min_version: Option<String>,
    pub client_auth: Option<ClientAuth>,
}

/// `[server.tls.client_auth]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientAuth {
    /// One PEM file or a list of them.
    pub ca: Option<toml::Value>,
    pub mode: Option<String>,
    pub crls: Option<Vec<String>>,
    /// Accepted here too because SPEC's sample places it after this table header.
    pub trusted_proxies: Option<Vec<String>>,
}

/// `[server.lockout]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lockout {
    pub enabled: Option<bool>,
    pub max_failures: Option<i64>,
    pub window: Option<Dur>,
    pub lockout: Option<Dur>,
    pub max_lockout: Option<Dur>,
    pub max_entries: Option<i64>,
}

/// `[server.limits]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_header_bytes: Option<Size>,
    pub max_body_bytes: Option<Size>,
    pub header_read_timeout: Option<Dur>,
    pub request_timeout: Option<Dur>,
    pub idle_timeout: Option<Dur>,
    pub max_connections: Option<i64>,
    pub max_concurrent_streams: Option<i64>,
    pub tunnel_idle_timeout: Option<Dur>,
}

/// `[admin]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    pub listen: Option<String>,
}

/// `[log]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    pub format: Option<String>,
    pub level: Option<String>,
}

/// `[upstreams.NAME]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub targets: Vec<String>,
    pub connect_timeout: Option<Dur>,
    pub timeout: Option<Dur>,
    pub max_connections: Option<i64>,
    pub max_fails: Option<i64>,
    pub fail_timeout: Option<Dur>,
    pub ca: Option<String>,
    pub health_check: Option<HealthCheck>,
}

/// `upstreams.NAME.health_check`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    pub path: Option<String>,
    pub interval: Option<Dur>,
    pub timeout: Option<Dur>,
}

/// `[[routes]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub name: Option<String>,
    #[serde(rename = "match")]
    pub matcher: Match,
    pub upstream: String,
    /// `"name"`, `{ any = [...] }` or `{ all = [...] }`; read by hand in `validate.rs`.
    pub auth: Option<toml::Value>,
    pub require: Option<Require>,
}

/// `routes[i].match`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    pub path_prefix: String,
    pub methods: Option<Vec<String>>,
    pub host: Option<String>,
}

/// `routes[i].require`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Require {
    pub scopes: Option<Vec<String>>,
    pub claims: Option<BTreeMap<String, String>>,
    pub bound_token: Option<bool>,
}
