//! Raw TOML table -> `Config`. Each section is deserialized on its own and every semantic
//! problem goes into the one `Problems` sink, so `portcullis check` prints all of them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use super::error::Problems;
use super::units::Dur;
use super::{
    Admin, AuthExpr, ClientAuthMode, Config, HealthCheck, Limits, Lockout, Log, Require, Route,
    Server, Target, Upstream, raw, section,
};
use crate::auth::{self, BuildContext};

const TOP_LEVEL: &[&str] = &[
    "server",
    "admin",
    "log",
    "upstreams",
    "authenticators",
    "routes",
];

pub(super) fn validate(
    mut table: toml::Table,
    file: &Path,
    source: &str,
    config_dir: &Path,
    problems: &mut Problems,
) -> Option<Config> {
    for key in table.keys() {
        if !TOP_LEVEL.contains(&key.as_str()) {
            problems.push(
                key.clone(),
                format!(
                    "unknown key `{key}`, expected one of {}",
                    TOP_LEVEL.join(", ")
                ),
            );
        }
    }
    let empty = || toml::Value::Table(toml::Table::new());

    // [server] and its sub-tables are read separately so one bad key does not hide others.
    let mut server_value = table.remove("server").unwrap_or_else(empty);
    let mut sub = |name: &str| match &mut server_value {
        toml::Value::Table(t) => t.remove(name),
        _ => None,
    };
    let (tls_v, lockout_v, limits_v) = (sub("tls"), sub("lockout"), sub("limits"));
    let tls_raw = tls_v.and_then(|v| section(problems, "server.tls", v));
    let lockout_raw = lockout_v.and_then(|v| section(problems, "server.lockout", v));
    let limits_raw = limits_v.and_then(|v| section(problems, "server.limits", v));
    let raw_server: Option<raw::Server> =
        section(problems, "server", server_value).map(|mut s: raw::Server| {
            s.tls = tls_raw;
            s.lockout = lockout_raw;
            s.limits = limits_raw;
            s
        });

    let raw_admin: Option<raw::Admin> = section(
        problems,
        "admin",
        table.remove("admin").unwrap_or_else(empty),
    );
    let raw_log: Option<raw::Log> =
        section(problems, "log", table.remove("log").unwrap_or_else(empty));

    let server = raw_server.and_then(|s| server(problems, config_dir, s));
    let admin = raw_admin.and_then(|a| admin(problems, a));
    let log = raw_log.and_then(|l| log(problems, l));

    // Upstreams.
    let mut upstreams = Vec::new();
    let mut upstream_names = Vec::new();
    match table.remove("upstreams") {
        Some(toml::Value::Table(t)) => {
            for (name, v) in t {
                upstream_names.push(name.clone());
                let base = format!("upstreams.{name}");
                if let Some(r) = section::<raw::Upstream>(problems, &base, v) {
                    if let Some(u) = upstream(problems, &base, config_dir, name, r) {
                        upstreams.push(u);
                    }
                }
            }
        }
        Some(_) => problems.push("upstreams", "must be a table of upstreams"),
        None => {}
    }

    // Authenticators.
    let ctx = BuildContext {
        config_dir: config_dir.to_path_buf(),
        client_auth: server.as_ref().and_then(|s| s.client_auth),
    };
    let mut authenticators: Vec<(String, auth::Settings)> = Vec::new();
    let mut auth_names: Vec<String> = Vec::new();
    match table.remove("authenticators") {
        Some(toml::Value::Table(t)) => {
            for (name, v) in t {
                let base = format!("authenticators.{name}");
                auth_names.push(name.clone());
                if let Some(a) = auth::Settings::read(&name, v, &base, &ctx, problems) {
                    authenticators.push((name, a));
                }
            }
        }
        Some(_) => problems.push("authenticators", "must be a table of authenticators"),
        None => {}
    }

    // Routes.
    let mut routes = Vec::new();
    let mut written = 0;
    match table.remove("routes") {
        Some(toml::Value::Array(items)) => {
            written = items.len();
            if items.is_empty() {
                problems.push("routes", "no routes: add at least one [[routes]] entry");
            }
            for (i, v) in items.into_iter().enumerate() {
                let base = format!("routes[{i}]");
                if let Some(r) = section::<raw::Route>(problems, &base, v) {
                    if let Some(route) = route(
                        problems,
                        &base,
                        i,
                        r,
                        (&upstreams, &upstream_names),
                        &auth_names,
                        &authenticators,
                    ) {
                        routes.push(route);
                    }
                }
            }
        }
        Some(_) => problems.push("routes", "must be an array of tables ([[routes]])"),
        None => problems.push("routes", "no routes: add at least one [[routes]] entry"),
    }

    let mut seen = BTreeMap::new();
    for (i, r) in routes.iter().enumerate() {
        if let Some(prev) = seen.insert(r.name.clone(), i) {
            problems.push(
                format!("routes[{i}].name"),
                format!("duplicate route name \"{}\" (also routes[{prev}])", r.name),
            );
        }
    }

    // Their order, once every route is valid (positions are then the file's).
    let warnings = if routes.len() == written {
        super::coverage::check(&routes, &authenticators, problems)
    } else {
        Vec::new()
    };

    Some(Config {
        warnings,
        path: file.to_path_buf(),
        source: Arc::from(source),
        server: server?,
        admin: admin?,
        log: log?,
        upstreams,
        authenticators,
        routes,
    })
}

fn dur(v: Option<Dur>, default: Duration) -> Duration {
    v.map_or(default, |d| d.0)
}

fn positive(problems: &mut Problems, path: &str, v: Option<i64>, default: u64) -> u64 {
    match v {
        None => default,
        Some(n) if n > 0 => n as u64,
        Some(n) => {
            problems.push(path, format!("must be a positive integer, got {n}"));
            default
        }
    }
}

fn server(problems: &mut Problems, dir: &Path, s: raw::Server) -> Option<Server> {
    let mut listen = Vec::new();
    for (i, l) in s
        .listen
        .unwrap_or_else(|| vec!["0.0.0.0:8443".into()])
        .iter()
        .enumerate()
    {
        match l.parse::<SocketAddr>() {
            Ok(a) => listen.push(a),
            Err(_) => problems.push(
                format!("server.listen[{i}]"),
                format!("invalid address \"{l}\": expected IP:PORT such as \"0.0.0.0:8443\""),
            ),
        }
    }
    if listen.is_empty() && problems.is_empty() {
        problems.push("server.listen", "at least one listen address is required");
    }
    let workers = match s.workers {
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        Some(n) if (1..=1024).contains(&n) => n as usize,
        Some(n) => {
            problems.push(
                "server.workers",
                format!("must be between 1 and 1024, got {n}"),
            );
            1
        }
    };
    let insecure = s.insecure_plaintext.unwrap_or(false);

    let mut trusted = Vec::new();
    let mut cidrs = s.trusted_proxies.unwrap_or_default();
    let mut client_auth_mode = None;
    let tls = match s.tls {
        Some(t) => {
            if let Some(ca) = t.client_auth.as_ref() {
                cidrs.extend(ca.trusted_proxies.clone().unwrap_or_default());
                client_auth_mode = match ca.mode.as_deref() {
                    None | Some("optional") => Some(ClientAuthMode::Optional),
                    Some("required") => Some(ClientAuthMode::Required),
                    Some(m) => {
                        problems.push(
                            "server.tls.client_auth.mode",
                            format!("unknown mode \"{m}\": expected \"optional\" or \"required\""),
                        );
                        None
                    }
                };
            }
            crate::tls::read_server(problems, dir, &t, client_auth_mode)
        }
        None if insecure => None,
        None => {
            problems.push(
                "server.tls",
                "missing [server.tls] (cert and key); set server.insecure_plaintext = true only for local testing",
            );
            None
        }
    };
    for (i, c) in cidrs.iter().enumerate() {
        match c
            .parse::<IpNet>()
            .or_else(|_| c.parse::<std::net::IpAddr>().map(IpNet::from))
        {
            Ok(n) => trusted.push(n),
            Err(_) => problems.push(
                format!("server.trusted_proxies[{i}]"),
                format!("invalid CIDR \"{c}\": expected e.g. \"10.0.0.0/8\" or \"192.0.2.1\""),
            ),
        }
    }

    let lo = s.lockout.unwrap_or_default();
    let lockout = Lockout {
        enabled: lo.enabled.unwrap_or(true),
        max_failures: positive(problems, "server.lockout.max_failures", lo.max_failures, 10) as u32,
        window: dur(lo.window, Duration::from_secs(300)),
        lockout: dur(lo.lockout, Duration::from_secs(60)),
        max_lockout: dur(lo.max_lockout, Duration::from_secs(1800)),
        max_entries: positive(
            problems,
            "server.lockout.max_entries",
            lo.max_entries,
            100_000,
        ) as usize,
    };
    if lockout.max_lockout < lockout.lockout {
        problems.push(
            "server.lockout.max_lockout",
            "must not be shorter than `lockout`",
        );
    }
    let li = s.limits.unwrap_or_default();
    let limits = Limits {
        max_header_bytes: li.max_header_bytes.map_or(16 * 1024, |s| s.0) as usize,
        max_body_bytes: li.max_body_bytes.map_or(10 * 1024 * 1024, |s| s.0),
        header_read_timeout: dur(li.header_read_timeout, Duration::from_secs(10)),
        request_timeout: dur(li.request_timeout, Duration::from_secs(60)),
        idle_timeout: dur(li.idle_timeout, Duration::from_secs(60)),
        max_connections: positive(
            problems,
            "server.limits.max_connections",
            li.max_connections,
            10_000,
        ) as usize,
        max_concurrent_streams: positive(
            problems,
            "server.limits.max_concurrent_streams",
            li.max_concurrent_streams,
            100,
        )
        .min(u64::from(u32::MAX)) as u32,
        tunnel_idle_timeout: dur(li.tunnel_idle_timeout, Duration::from_secs(600)),
    };
    if limits.max_connections > 1_000_000 {
        problems.push("server.limits.max_connections", "must be at most 1000000");
    }
    if limits.max_header_bytes < 1024 {
        problems.push("server.limits.max_header_bytes", "must be at least 1KiB");
    }
    for (k, d) in [
        ("header_read_timeout", limits.header_read_timeout),
        ("request_timeout", limits.request_timeout),
        ("idle_timeout", limits.idle_timeout),
        ("tunnel_idle_timeout", limits.tunnel_idle_timeout),
    ] {
        if d.is_zero() {
            problems.push(format!("server.limits.{k}"), "must be greater than zero");
        }
    }
    Some(Server {
        listen,
        shutdown_grace: dur(s.shutdown_grace, Duration::from_secs(30)),
        workers,
        tls,
        client_auth: client_auth_mode,
        trusted_proxies: trusted,
        lockout,
        limits,
    })
}

fn admin(problems: &mut Problems, a: raw::Admin) -> Option<Admin> {
    let listen = match a.listen.as_deref() {
        None => Some(SocketAddr::from(([127, 0, 0, 1], 9901))),
        Some("" | "off") => None,
        Some(l) => match l.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                problems.push(
                    "admin.listen",
                    format!("invalid address \"{l}\": expected IP:PORT"),
                );
                None
            }
        },
    };
    Some(Admin { listen })
}

fn log(problems: &mut Problems, l: raw::Log) -> Option<Log> {
    let json = match l.format.as_deref() {
        None | Some("json") => true,
        Some("text") => false,
        Some(f) => {
            problems.push(
                "log.format",
                format!("unknown format \"{f}\": expected \"json\" or \"text\""),
            );
            true
        }
    };
    let level = l.level.unwrap_or_else(|| "info".into());
    if !is_log_filter(&level) {
        problems.push(
            "log.level",
            format!(
                "invalid level \"{level}\": expected one of {} (or directives such as \"info,portcullis::access=warn\")",
                LOG_LEVELS.join(", ")
            ),
        );
    }
    Some(Log { json, level })
}

/// The levels `log.level` takes.
const LOG_LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace", "off"];

/// Whether `s` is a level, or comma-separated directives each of which is a level or
/// `target=level`. A bare word that is not a level would be taken by tracing as a target
/// name, silencing every other line (the access log included), so it is refused.
fn is_log_filter(s: &str) -> bool {
    let level = |l: &str| LOG_LEVELS.iter().any(|x| x.eq_ignore_ascii_case(l));
    !s.trim().is_empty()
        && s.split(',').all(|d| match d.trim().split_once('=') {
            None => level(d.trim()),
            Some((target, l)) => {
                !target.is_empty()
                    && target
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
                    && level(l)
            }
        })
        && tracing_subscriber::EnvFilter::try_new(s).is_ok()
}

/// True for hosts where plain `http` is allowed (loopback sidecars and tests).
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Parses an `http(s)://host:port[/path]` URL that must be https unless on loopback.
pub(crate) fn remote_url(
    problems: &mut Problems,
    path: &str,
    url: &str,
    allow_path: bool,
) -> Option<http::Uri> {
    let uri: http::Uri = match url.parse() {
        Ok(u) => u,
        Err(_) => {
            problems.push(path, format!("invalid URL \"{url}\""));
            return None;
        }
    };
    let (Some(scheme), Some(auth)) = (uri.scheme_str(), uri.authority()) else {
        problems.push(
            path,
            format!("invalid URL \"{url}\": expected http(s)://host:port"),
        );
        return None;
    };
    match scheme {
        "https" => {}
        "http" if is_loopback_host(auth.host()) => {}
        "http" => {
            problems.push(
                path,
                format!(
                    "\"{url}\" must use https (plain http is only allowed on loopback addresses)"
                ),
            );
            return None;
        }
        s => {
            problems.push(
                path,
                format!("unsupported scheme \"{s}\" in \"{url}\": use https"),
            );
            return None;
        }
    }
    if !allow_path && !matches!(uri.path(), "" | "/") {
        problems.push(
            path,
            format!("\"{url}\": a target is scheme://host:port without a path"),
        );
        return None;
    }
    Some(uri)
}

fn upstream(
    problems: &mut Problems,
    base: &str,
    dir: &Path,
    name: String,
    r: raw::Upstream,
) -> Option<Upstream> {
    let before = problems.len();
    if r.targets.is_empty() {
        problems.push(format!("{base}.targets"), "at least one target is required");
    }
    let mut targets = Vec::new();
    for (i, t) in r.targets.iter().enumerate() {
        if let Some(uri) = remote_url(problems, &format!("{base}.targets[{i}]"), t, false) {
            let https = uri.scheme_str() == Some("https");
            if let Some(authority) = uri.authority().cloned() {
                targets.push(Target { https, authority });
            }
        }
    }
    let ca = r.ca.as_ref().and_then(|c| {
        crate::tls::load_certs(&super::resolve_path(dir, c))
            .map_err(|e| problems.push(format!("{base}.ca"), e.to_string()))
            .ok()
    });
    let health_check = r.health_check.map(|h| HealthCheck {
        path: h.path.unwrap_or_else(|| "/".into()),
        interval: dur(h.interval, Duration::from_secs(5)),
        timeout: dur(h.timeout, Duration::from_secs(2)),
    });
    if let Some(h) = &health_check {
        if !h.path.starts_with('/') {
            problems.push(format!("{base}.health_check.path"), "must start with /");
        }
        if h.interval.is_zero() || h.timeout.is_zero() {
            problems.push(
                format!("{base}.health_check"),
                "interval and timeout must be greater than zero",
            );
        }
    }
    let max_connections = positive(
        problems,
        &format!("{base}.max_connections"),
        r.max_connections,
        1024,
    ) as usize;
    let max_fails = match r.max_fails {
        None => 3,
        Some(n) => u32::try_from(n).unwrap_or_else(|_| {
            problems.push(
                format!("{base}.max_fails"),
                "must be between 0 and 4294967295",
            );
            3
        }),
    };
    let fail_timeout = dur(r.fail_timeout, Duration::from_secs(10));
    if fail_timeout.is_zero() {
        problems.push(format!("{base}.fail_timeout"), "must be greater than zero");
    }
    (problems.len() == before).then(|| Upstream {
        name,
        targets,
        connect_timeout: dur(r.connect_timeout, Duration::from_secs(2)),
        timeout: dur(r.timeout, Duration::from_secs(30)),
        max_connections,
        max_fails,
        fail_timeout,
        ca,
        health_check,
    })
}

fn auth_expr(
    problems: &mut Problems,
    base: &str,
    v: Option<toml::Value>,
    names: &[String],
    built: &[(String, auth::Settings)],
) -> Option<AuthExpr> {
    let path = format!("{base}.auth");
    let lookup = |problems: &mut Problems, p: String, n: &str| -> Option<usize> {
        if let Some(i) = built.iter().position(|(b, _)| b == n) {
            return Some(i);
        }
        if !names.iter().any(|x| x == n) {
            problems.push(
                p,
                format!("unknown authenticator \"{n}\" (define it as [authenticators.{n}])"),
            );
        }
        None
    };
    match v {
        None => {
            problems.push(
                path,
                "missing `auth`: every route names its authenticators; a public route uses one of kind \"none\"",
            );
            None
        }
        Some(toml::Value::String(n)) => lookup(problems, path, &n).map(|i| AuthExpr::Any(vec![i])),
        Some(toml::Value::Table(mut t)) => {
            let keys: Vec<String> = t.keys().cloned().collect();
            if keys.len() != 1 || !(keys[0] == "any" || keys[0] == "all") {
                problems.push(
                    path,
                    "expected \"name\", { any = [...] } or { all = [...] }",
                );
                return None;
            }
            let op = keys[0].clone();
            let list = match t.remove(&op) {
                Some(toml::Value::Array(a)) => a,
                _ => {
                    problems.push(
                        format!("{path}.{op}"),
                        "expected a list of authenticator names",
                    );
                    return None;
                }
            };
            if list.is_empty() {
                problems.push(
                    format!("{path}.{op}"),
                    "must name at least one authenticator (an empty list would admit no one)",
                );
                return None;
            }
            let mut out = Vec::new();
            let mut ok = true;
            for (i, item) in list.iter().enumerate() {
                let p = format!("{path}.{op}[{i}]");
                match item.as_str() {
                    Some(n) => match lookup(problems, p, n) {
                        Some(idx) if out.contains(&idx) => {
                            problems.push(
                                format!("{path}.{op}[{i}]"),
                                format!("\"{n}\" is listed twice"),
                            );
                            ok = false;
                        }
                        Some(idx) => out.push(idx),
                        None => ok = false,
                    },
                    None => {
                        problems.push(p, "expected an authenticator name");
                        ok = false;
                    }
                }
            }
            if !ok {
                return None;
            }
            Some(if op == "any" {
                AuthExpr::Any(out)
            } else {
                AuthExpr::All(out)
            })
        }
        Some(_) => {
            problems.push(
                path,
                "expected \"name\", { any = [...] } or { all = [...] }",
            );
            None
        }
    }
}

fn route(
    problems: &mut Problems,
    base: &str,
    index: usize,
    r: raw::Route,
    (upstreams, upstream_names): (&[Upstream], &[String]),
    auth_names: &[String],
    built: &[(String, auth::Settings)],
) -> Option<Route> {
    let before = problems.len();
    let name = r.name.unwrap_or_else(|| format!("route-{index}"));
    let mut prefix = r.matcher.path_prefix.clone();
    if !prefix.starts_with('/') {
        problems.push(
            format!("{base}.match.path_prefix"),
            format!("\"{prefix}\" must start with /"),
        );
    }
    if prefix.contains(['?', '#', '%', '\\']) || prefix.split('/').any(|s| s == "." || s == "..") {
        problems.push(
            format!("{base}.match.path_prefix"),
            format!(
                "\"{prefix}\" must be a plain decoded path without ?, #, %, \\ or dot segments"
            ),
        );
    }
    while prefix.len() > 1 && prefix.ends_with('/') {
        prefix.pop();
    }
    let mut methods = Vec::new();
    for (i, m) in r.matcher.methods.unwrap_or_default().iter().enumerate() {
        let up = m.to_ascii_uppercase();
        match http::Method::from_bytes(up.as_bytes()) {
            Ok(m) => methods.push(m),
            Err(_) => problems.push(
                format!("{base}.match.methods[{i}]"),
                format!("invalid method \"{m}\""),
            ),
        }
    }
    let host = r.matcher.host.map(|h| {
        let h = h.to_ascii_lowercase();
        h.strip_suffix('.').map(str::to_string).unwrap_or(h)
    });
    if host
        .as_deref()
        .is_some_and(|h| h.is_empty() || h.contains([':', '/', ' ']))
    {
        problems.push(
            format!("{base}.match.host"),
            "must be a host name without port, e.g. \"api.example.com\"",
        );
    }

    let upstream = upstreams.iter().position(|u| u.name == r.upstream);
    if upstream.is_none() && !upstream_names.contains(&r.upstream) {
        problems.push(
            format!("{base}.upstream"),
            format!(
                "unknown upstream \"{}\" (define it as [upstreams.{}])",
                r.upstream, r.upstream
            ),
        );
    }
    let auth = auth_expr(problems, base, r.auth, auth_names, built);
    let req = r.require.unwrap_or_default();
    let require = Require {
        scopes: req.scopes.unwrap_or_default(),
        claims: req.claims.unwrap_or_default().into_iter().collect(),
        bound_token: req.bound_token.unwrap_or(false),
    };
    if let Some(AuthExpr::Any(ids) | AuthExpr::All(ids)) = &auth {
        let kinds: Vec<&auth::Settings> = ids
            .iter()
            .filter_map(|i| built.get(*i).map(|(_, a)| a))
            .collect();
        if !require.scopes.is_empty() && !kinds.iter().any(|a| a.grants_scopes()) {
            problems.push(
                format!("{base}.require.scopes"),
                "none of this route's authenticators produces scopes (api_key, jwt or introspection do)",
            );
        }
        if (!require.claims.is_empty() || require.bound_token)
            && !kinds.iter().any(|a| a.is_token())
        {
            problems.push(
                format!("{base}.require"),
                "claims and bound_token need a jwt or introspection authenticator on the route",
            );
        }
    }
    if problems.len() != before || upstream.is_none() {
        return None;
    }
    Some(Route {
        name,
        path_prefix: prefix,
        methods,
        host,
        upstream: upstream?,
        auth: auth?,
        require,
    })
}

#[cfg(test)]
mod tests {
    use super::is_log_filter;

    #[test]
    fn a_log_level_is_a_level_or_directives_with_levels() {
        for ok in [
            "info",
            "DEBUG",
            "off",
            "info,portcullis::access=warn",
            "warn,hyper=error",
        ] {
            assert!(is_log_filter(ok), "{ok}");
        }
        for bad in [
            "verbose",
            "",
            "info,verbose",
            "portcullis=loud",
            "=info",
            "info,",
        ] {
            assert!(!is_log_filter(bad), "{bad}");
        }
    }
}
