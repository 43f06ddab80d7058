//! What `portcullis check --routes` and `check --explain` print: the route table in match
//! order, and which route one request would take and what it would need. Read from the
//! validated config with the same matcher the gateway routes with.

use std::fmt::Write as _;

use http::Method;

use super::coverage::admits_anyone;
use super::{AuthExpr, Config, Route};
use crate::route::{Matcher, host_without_port};

impl Config {
    /// One line per route, in match order: `N. NAME  MATCH  -> UPSTREAM  auth: EXPR`.
    pub fn route_table(&self) -> String {
        let mut out = String::new();
        for (i, r) in self.routes.iter().enumerate() {
            let _ = writeln!(
                out,
                "{}. {}  {}  -> {}  auth: {}{}",
                i + 1,
                r.name,
                match_text(r),
                self.upstream_name(r),
                self.auth_text(&r.auth),
                require_text(r),
            );
        }
        out
    }

    /// The route a request for `target` (a path, with or without a query) would take and
    /// what it needs, or why it would be refused before routing (400) or match nothing
    /// (404). Uses the gateway's own path rules and matcher.
    pub fn explain(&self, target: &str, method: &Method, host: Option<&str>) -> String {
        let path = target.split_once('?').map_or(target, |(p, _)| p);
        let canonical = match crate::path::canonicalize(path) {
            Ok(p) => p,
            Err(why) => return format!("400: {why} (refused before routing)\n"),
        };
        let host = host.map(host_without_port);
        let found = self.routes.iter().enumerate().find(|(_, r)| {
            Matcher {
                prefix: r.path_prefix.clone(),
                methods: r.methods.clone(),
                host: r.host.clone(),
            }
            .matches(&canonical, method, host)
        });
        let Some((i, r)) = found else {
            return format!("404: no route matches {method} {canonical}\n");
        };
        let mut out = format!(
            "route {} (#{}): {}  -> {}\nneeds: {}{}\n",
            r.name,
            i + 1,
            match_text(r),
            self.upstream_name(r),
            self.auth_text(&r.auth),
            require_text(r),
        );
        if admits_anyone(&r.auth, &self.authenticators) {
            out.push_str("admitted without credentials (the route is public)\n");
        }
        out
    }

    fn upstream_name<'a>(&'a self, r: &Route) -> &'a str {
        self.upstreams
            .get(r.upstream)
            .map_or("?", |u| u.name.as_str())
    }

    /// `name (kind)`, or `{ any = [...] }` / `{ all = [...] }` of those.
    fn auth_text(&self, expr: &AuthExpr) -> String {
        let name = |i: &usize| {
            self.authenticators
                .get(*i)
                .map_or_else(|| "?".to_string(), |(n, s)| format!("{n} ({})", s.kind()))
        };
        match expr {
            AuthExpr::Any(ids) if ids.len() == 1 => ids.iter().map(name).collect(),
            AuthExpr::Any(ids) => format!("any of [{}]", join(ids.iter().map(name))),
            AuthExpr::All(ids) => format!("all of [{}]", join(ids.iter().map(name))),
        }
    }
}

fn join(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

/// `[GET HEAD] host/prefix`, with `*` for any method and no host for any host.
fn match_text(r: &Route) -> String {
    let methods = if r.methods.is_empty() {
        "*".to_string()
    } else {
        r.methods
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "[{methods}] {}{}",
        r.host.as_deref().unwrap_or(""),
        r.path_prefix
    )
}

/// `; require scopes [..], claims {..}, bound token`, or nothing.
fn require_text(r: &Route) -> String {
    let q = &r.require;
    let mut parts = Vec::new();
    if !q.scopes.is_empty() {
        parts.push(format!("scopes [{}]", q.scopes.join(", ")));
    }
    if !q.claims.is_empty() {
        let claims: Vec<String> = q.claims.iter().map(|(k, v)| format!("{k} = {v}")).collect();
        parts.push(format!("claims {{{}}}", claims.join(", ")));
    }
    if q.bound_token {
        parts.push("a certificate-bound token".to_string());
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("; require {}", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use http::Method;

    const CONFIG: &str = r#"
[server]
insecure_plaintext = true

[upstreams.app]
targets = ["http://127.0.0.1:1"]

[authenticators.public]
kind = "none"

[authenticators.partners]
kind = "api_key"
keys = [{ id = "acme", hash = "sha256:0000000000000000000000000000000000000000000000000000000000000000", scopes = ["orders:read"] }]

[[routes]]
name = "orders"
match = { path_prefix = "/orders", methods = ["GET"], host = "api.example.com" }
upstream = "app"
auth = { any = ["partners"] }
require = { scopes = ["orders:read"] }

[[routes]]
name = "public"
match = { path_prefix = "/" }
upstream = "app"
auth = "public"
"#;

    fn config() -> crate::config::Config {
        crate::config::load_str(Path::new("c.toml"), CONFIG).unwrap()
    }

    #[test]
    fn the_route_table_lists_routes_in_match_order() {
        assert_eq!(
            config().route_table(),
            "1. orders  [GET] api.example.com/orders  -> app  auth: partners (api_key); require scopes [orders:read]\n\
             2. public  [*] /  -> app  auth: public (none)\n"
        );
    }

    #[test]
    fn explain_names_the_route_a_request_takes_and_what_it_needs() {
        let c = config();
        let get = Method::GET;
        let orders = c.explain("/orders/1?x=1", &get, Some("API.example.com:443"));
        assert!(orders.starts_with("route orders (#1): "), "{orders}");
        assert!(
            orders.contains("needs: partners (api_key); require scopes [orders:read]"),
            "{orders}"
        );
        // Another host, or another method, falls through to the public route.
        let public = c.explain("/orders/1", &Method::POST, Some("api.example.com"));
        assert!(public.starts_with("route public (#2)"), "{public}");
        assert!(public.contains("public"), "{public}");
        assert!(c.explain("/%2e%2e/orders", &get, None).starts_with("400: "));
    }
}
