//! Loading the one TOML file: text -> spanned document -> raw serde types (per section, so
//! one typo does not hide the next) -> validated `Config`, with every problem reported at
//! once as `FILE:LINE: KEY.PATH: message`. Files the config names (certs, keys, user
//! files, secrets) are read here, so `portcullis check` proves they load.

mod coverage;
#[cfg(test)]
mod doc_tests;
pub mod error;
mod explain;
pub mod raw;
pub mod secret;
pub mod units;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use serde::de::DeserializeOwned;
use toml::de::DeTable;

pub use error::{ConfigError, Problem, Problems};
pub(crate) use validate::remote_url;

use crate::auth;

/// A validated configuration: every reference resolved, every file loaded.
pub struct Config {
    /// The file this was loaded from.
    pub path: PathBuf,
    /// Its text, to place problems found after validation (see `Config::problem`).
    pub source: Arc<str>,
    /// `[server]`.
    pub server: Server,
    /// `[admin]`.
    pub admin: Admin,
    /// `[log]`.
    pub log: Log,
    /// `[upstreams.*]`, sorted by name.
    pub upstreams: Vec<Upstream>,
    /// `[authenticators.*]`, sorted by name: checked settings; the snapshot builds them.
    pub authenticators: Vec<(String, auth::Settings)>,
    /// `[[routes]]` in file order.
    pub routes: Vec<Route>,
    /// What is allowed but probably not meant (key path, message): a route needing weaker
    /// credentials before one it takes requests from. `check --strict` refuses them.
    pub warnings: Vec<(String, String)>,
}

/// `[server]`.
pub struct Server {
    /// Public listen addresses.
    pub listen: Vec<SocketAddr>,
    /// How long SIGTERM waits for in-flight requests.
    pub shutdown_grace: Duration,
    /// Runtime worker threads.
    pub workers: usize,
    /// Server TLS; `None` only with `insecure_plaintext`.
    pub tls: Option<ServerTls>,
    /// Whether `[server.tls.client_auth]` is configured.
    pub client_auth: Option<ClientAuthMode>,
    /// Peers whose `X-Forwarded-For` is appended to rather than replaced.
    pub trusted_proxies: Vec<IpNet>,
    /// `[server.lockout]`.
    pub lockout: Lockout,
    /// `[server.limits]`.
    pub limits: Limits,
}

/// `[server.tls]`, read: the certificate chain and key parsed from their PEM files. No
/// `Debug`: it holds the private key.
pub struct ServerTls {
    /// The listener's certificate chain, leaf first.
    pub cert_chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// Its private key.
    pub key: rustls::pki_types::PrivateKeyDer<'static>,
    /// `min_version = "1.3"`.
    pub tls13_only: bool,
    /// `[server.tls.client_auth]`.
    pub client_ca: Option<ClientCa>,
}

/// `[server.tls.client_auth]`, read.
pub struct ClientCa {
    /// Whether a certificate is required at the handshake.
    pub mode: ClientAuthMode,
    /// Each CA certificate with the key path and file it came from (for problems).
    pub roots: Vec<(String, String, rustls::pki_types::CertificateDer<'static>)>,
    /// Revocation lists.
    pub crls: Vec<rustls::pki_types::CertificateRevocationListDer<'static>>,
}

/// `client_auth.mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuthMode {
    /// Handshake succeeds without a certificate; routes decide.
    Optional,
    /// Handshake fails without a valid certificate.
    Required,
}

/// `[server.lockout]`.
#[derive(Clone, Debug)]
pub struct Lockout {
    /// Off only for trusted back-office networks.
    pub enabled: bool,
    /// Failures per key within `window` before a lockout.
    pub max_failures: u32,
    /// Failure counting window.
    pub window: Duration,
    /// First lockout; doubles on each repeat.
    pub lockout: Duration,
    /// Cap of the doubling.
    pub max_lockout: Duration,
    /// Bound on tracked keys (IPs and names).
    pub max_entries: usize,
}

/// `[server.limits]`.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Maximum request header block.
    pub max_header_bytes: usize,
    /// Maximum request body, enforced while streaming.
    pub max_body_bytes: u64,
    /// Time allowed to send the request headers.
    pub header_read_timeout: Duration,
    /// Bound on the whole upstream exchange up to response headers.
    pub request_timeout: Duration,
    /// Keep-alive connections idle this long are closed.
    pub idle_timeout: Duration,
    /// Concurrent public connections (WebSocket tunnels included).
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams per client connection.
    pub max_concurrent_streams: u32,
    /// A WebSocket tunnel with no traffic either way for this long is closed.
    pub tunnel_idle_timeout: Duration,
}

/// `[admin]`.
pub struct Admin {
    /// Admin listener address (plain HTTP).
    pub listen: Option<SocketAddr>,
}

/// `[log]`.
#[derive(Clone, Debug)]
pub struct Log {
    /// JSON lines (default) or human text.
    pub json: bool,
    /// `tracing` filter directive.
    pub level: String,
}

/// `[upstreams.NAME]`.
pub struct Upstream {
    /// Its name.
    pub name: String,
    /// Parsed targets.
    pub targets: Vec<Target>,
    /// TCP+TLS connect timeout.
    pub connect_timeout: Duration,
    /// Time to wait for response headers, and for each further piece of the body.
    pub timeout: Duration,
    /// Open connections allowed per target.
    pub max_connections: usize,
    /// Consecutive connect failures that take a target out of rotation (0: never).
    pub max_fails: u32,
    /// How long a target that failed `max_fails` times stays out.
    pub fail_timeout: Duration,
    /// Roots for https targets (`None`: webpki roots).
    pub ca: Option<Vec<rustls::pki_types::CertificateDer<'static>>>,
    /// Active health checking.
    pub health_check: Option<HealthCheck>,
}

/// One upstream target.
#[derive(Clone, Debug)]
pub struct Target {
    /// `http` or `https`.
    pub https: bool,
    /// `host:port` as written.
    pub authority: http::uri::Authority,
}

/// `health_check = { path, interval }`.
#[derive(Clone, Debug)]
pub struct HealthCheck {
    /// Path probed with GET.
    pub path: String,
    /// Probe interval.
    pub interval: Duration,
    /// Probe timeout.
    pub timeout: Duration,
}

/// `[[routes]]`.
pub struct Route {
    /// Name used in metrics and logs.
    pub name: String,
    /// Path prefix, without a trailing slash (except `/`).
    pub path_prefix: String,
    /// Allowed methods; empty = all.
    pub methods: Vec<http::Method>,
    /// Host (lower-case, no port); `None` = any.
    pub host: Option<String>,
    /// Index into `Config::upstreams`.
    pub upstream: usize,
    /// Authentication expression over indexes into `Config::authenticators`.
    pub auth: AuthExpr,
    /// Authorization after authentication.
    pub require: Require,
}

/// A route's `auth`: never empty (validation refuses `any = []`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthExpr {
    /// Any one admits (tried in order).
    Any(Vec<usize>),
    /// All must admit.
    All(Vec<usize>),
}

/// `require = { ... }`.
#[derive(Clone, Debug, Default)]
pub struct Require {
    /// Every scope must be granted.
    pub scopes: Vec<String>,
    /// Claim name -> required value.
    pub claims: Vec<(String, String)>,
    /// Token must be certificate-bound (RFC 8705) to this connection's certificate.
    pub bound_token: bool,
}

impl Config {
    /// The warnings, placed like problems: `FILE:LINE: KEY.PATH: message`.
    pub fn warning_lines(&self) -> Vec<String> {
        let mut problems = Problems::default();
        for (key, message) in &self.warnings {
            problems.push(key.clone(), message.clone());
        }
        let doc = DeTable::parse(&self.source).ok();
        problems
            .into_error(&self.path, &self.source, doc.as_ref().map(|d| d.get_ref()))
            .problems
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// A problem at `key` (a key path such as `authenticators.idp.ca`) found after
    /// validation, worded and placed like every validation problem: `FILE:LINE: KEY: msg`.
    pub fn problem(&self, key: String, message: impl Into<String>) -> ConfigError {
        let mut problems = Problems::default();
        problems.push(key, message);
        let doc = DeTable::parse(&self.source).ok();
        problems.into_error(&self.path, &self.source, doc.as_ref().map(|d| d.get_ref()))
    }
}

/// Resolves a path from the config: relative to the config file's directory when that
/// file exists there, so the same config always reads the same files wherever it is
/// started from; only a path that is not found there is tried relative to the working
/// directory (configs written for `portcullis certs --out certs` run from their parent).
pub fn resolve_path(config_dir: &Path, p: &str) -> PathBuf {
    let written = PathBuf::from(p);
    if written.is_absolute() {
        return written;
    }
    let beside = config_dir.join(p);
    if beside.exists() { beside } else { written }
}

/// Loads and validates `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let src = std::fs::read_to_string(path).map_err(|e| ConfigError {
        problems: vec![Problem {
            file: path.to_path_buf(),
            line: 0,
            path: String::new(),
            message: format!("cannot read config file: {e}"),
        }],
    })?;
    load_str(path, &src)
}

/// Loads and validates config text; `path` names it in errors and anchors relative paths.
pub fn load_str(path: &Path, src: &str) -> Result<Config, ConfigError> {
    let doc = match DeTable::parse(src) {
        Ok(d) => d,
        Err(e) => {
            let line = e.span().map_or(1, |s| error::line_of(src, s.start));
            return Err(ConfigError {
                problems: vec![Problem {
                    file: path.to_path_buf(),
                    line,
                    path: String::new(),
                    message: format!("invalid TOML: {}", e.message().trim()),
                }],
            });
        }
    };
    let mut problems = Problems::default();
    let table: toml::Table = match toml::from_str(src) {
        Ok(t) => t,
        Err(e) => {
            problems.push("", format!("invalid TOML: {}", e.message().trim()));
            return Err(problems.into_error(path, src, Some(doc.get_ref())));
        }
    };
    let config_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let result = validate::validate(table, path, src, &config_dir, &mut problems);
    match result {
        Some(c) if problems.is_empty() => Ok(c),
        _ => {
            if problems.is_empty() {
                problems.push("", "invalid configuration");
            }
            Err(problems.into_error(path, src, Some(doc.get_ref())))
        }
    }
}

/// Deserializes one section, recording a problem with the exact key path on failure.
/// Every problem with a key of the section's own table is reported (serde stops at the
/// first): the key is dropped and the rest read again, so the section's other problems,
/// and what is checked after it, show too.
pub(crate) fn section<T: DeserializeOwned>(
    problems: &mut Problems,
    base: &str,
    mut value: toml::Value,
) -> Option<T> {
    let mut dropped: Vec<String> = Vec::new();
    loop {
        let e = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(v) => return Some(v),
            Err(e) => e,
        };
        let inner = e.path().to_string();
        let mut msg = without_string_value(e.inner().message().trim());
        // A key dropped for a bad value is not also "missing".
        if dropped
            .iter()
            .any(|k| msg == format!("missing field `{k}`"))
        {
            return None;
        }
        let mut path = match (base.is_empty(), inner.as_str()) {
            (_, ".") => base.to_string(),
            (true, p) => p.to_string(),
            (false, p) if p.starts_with('[') => format!("{base}{p}"),
            (false, p) => format!("{base}.{p}"),
        };
        // The key of this table whose own value is at fault, if any (a problem deeper
        // down ends the section, so that dropping the key adds no "missing" problem).
        let mut key: Option<String> = Some(inner.clone())
            .filter(|k| !k.is_empty() && *k != "?" && *k != "." && !k.contains(['.', '[']));
        // serde reports unknown fields at the parent; name the key itself.
        if let Some(rest) = msg.strip_prefix("unknown field `") {
            if let Some(end) = rest.find('`') {
                let unknown = rest[..end].to_string();
                if path.is_empty() {
                    path = unknown.clone();
                } else if !path.ends_with(&unknown) {
                    path = format!("{path}.{unknown}");
                }
                msg = format!("unknown key `{unknown}`{}", &rest[end + 1..]);
                if inner == "." || inner == unknown {
                    key = Some(unknown);
                }
            }
        }
        problems.push(path, msg);
        // Read again without that key; anything else ends the section.
        let key = key?;
        value.as_table_mut()?.remove(&key)?;
        dropped.push(key);
    }
}

/// serde quotes a string it did not expect (`invalid type: string "…", expected …`). That
/// string may be a secret written under the wrong key, and the message reaches the
/// terminal and, on a reload, the log: it is never repeated (the line and key path say
/// where it is).
fn without_string_value(msg: &str) -> String {
    for kind in ["invalid type: string", "invalid value: string"] {
        let quoted = msg
            .strip_prefix(kind)
            .and_then(|rest| rest.strip_prefix(" \""))
            .and_then(|rest| rest.rfind("\", expected").map(|end| &rest[end + 1..]));
        if let Some(tail) = quoted {
            return format!("{kind}{tail}");
        }
    }
    msg.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misplaced_secret_is_not_repeated() {
        // `client_secret` under `[authenticators]` instead of `[authenticators.NAME]`.
        let src = "[authenticators]\nclient_secret = \"hunter2-hunter2\"\n";
        let Err(e) = load_str(Path::new("c.toml"), src) else {
            panic!("accepted");
        };
        let shown = e.to_string();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains(
                "c.toml:2: authenticators.client_secret: invalid type: string, expected a table with a `kind`"
            ),
            "{shown}"
        );
        assert_eq!(
            without_string_value(r#"invalid value: string "a\", expected x", expected a duration"#),
            "invalid value: string, expected a duration"
        );
        assert_eq!(
            without_string_value("missing field `x`"),
            "missing field `x`"
        );
    }

    /// A bad value no longer hides the rest of its section, nor what is checked after it
    /// (`shutdown_grace = "forever"` used to hide a bad `min_version`).
    #[test]
    fn every_problem_of_a_section_is_reported() {
        let src = "[server]\nshutdown_grace = \"forever\"\nworkers = \"many\"\n\n\
                   [server.tls]\ncert = \"none.crt\"\nkey = \"none.key\"\nmin_version = \"1.1\"\n\n\
                   [upstreams.app]\ntargets = [\"http://127.0.0.1:1\"]\ntimeout = \"soon\"\nmax_connections = 0\n\n\
                   [authenticators.public]\nkind = \"none\"\n\n\
                   [[routes]]\nmatch = { path_prefix = \"/\" }\nupstream = \"app\"\nauth = \"public\"\n";
        let Err(e) = load_str(Path::new("c.toml"), src) else {
            panic!("accepted");
        };
        let paths: Vec<&str> = e.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "server.shutdown_grace",
                "server.workers",
                "server.tls.cert",
                "server.tls.key",
                "server.tls.min_version",
                "upstreams.app.timeout",
                "upstreams.app.max_connections",
            ],
            "{e}"
        );
    }

    /// A file beside the config wins over one of the same name in the working directory,
    /// so where the gateway is started from does not change what it serves.
    #[test]
    fn relative_paths_prefer_the_config_files_directory() {
        // Tests run in the crate root, where `Cargo.toml` exists too.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Cargo.toml"), "beside").unwrap();
        assert_eq!(
            resolve_path(dir.path(), "Cargo.toml"),
            dir.path().join("Cargo.toml")
        );
        // Not beside the config: as written (relative to the working directory).
        assert_eq!(
            resolve_path(dir.path(), "README.md"),
            PathBuf::from("README.md")
        );
        // Absolute: as written.
        let abs = dir.path().join("elsewhere.pem");
        assert_eq!(resolve_path(dir.path(), abs.to_str().unwrap()), abs);
    }

    #[test]
    fn unknown_key_path_names_the_key_once() {
        let mut p = Problems::default();
        let v: toml::Value =
            toml::from_str("upstream = \"a\"\ncolour = 1\nmatch = { path_prefix = \"/\" }\nzz = 2")
                .unwrap();
        // Every unknown key is reported, and the rest of the section is still read.
        let r: Option<raw::Route> = section(&mut p, "routes[0]", v);
        assert!(r.is_some_and(|r| r.upstream == "a"));
        let e = p.into_error(Path::new("f"), "", None);
        let paths: Vec<_> = e.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["routes[0].colour", "routes[0].zz"]);
    }
}
