//! The compiled route table: first match wins, on the canonical path only. A prefix
//! matches on segment boundaries (`/orders` matches `/orders` and `/orders/1`, not
//! `/ordersx`), case-sensitively; `methods` and `host` narrow the match.

use http::Method;

/// The match part of one route.
#[derive(Clone, Debug)]
pub struct Matcher {
    /// Prefix without trailing slash (except `/`).
    pub prefix: String,
    /// Allowed methods; empty = all.
    pub methods: Vec<Method>,
    /// Host without port, lower-case; `None` = any.
    pub host: Option<String>,
}

impl Matcher {
    /// Whether this route matches.
    pub fn matches(&self, path: &str, method: &Method, host: Option<&str>) -> bool {
        prefix_matches(&self.prefix, path)
            && (self.methods.is_empty() || self.methods.contains(method))
            && self
                .host
                .as_deref()
                .is_none_or(|want| host.is_some_and(|h| h.eq_ignore_ascii_case(want)))
    }
}

/// Segment-boundary prefix test.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// Host name of a `Host` header or authority: lower-case is compared case-insensitively,
/// the port and IPv6 brackets are stripped.
pub fn host_without_port(h: &str) -> &str {
    if let Some(rest) = h.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    let h = match h.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => h,
    };
    // `admin.example.com.` is the same host to DNS and to most upstreams.
    h.strip_suffix('.').unwrap_or(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(prefix: &str, methods: &[Method], host: Option<&str>) -> Matcher {
        Matcher {
            prefix: prefix.into(),
            methods: methods.to_vec(),
            host: host.map(String::from),
        }
    }

    #[test]
    fn matches_on_segment_boundaries() {
        let r = m("/orders", &[], None);
        assert!(r.matches("/orders", &Method::GET, None));
        assert!(r.matches("/orders/1", &Method::GET, None));
        assert!(r.matches("/orders/", &Method::GET, None));
        assert!(!r.matches("/ordersx", &Method::GET, None));
        assert!(!r.matches("/Orders", &Method::GET, None));
        assert!(!r.matches("/order", &Method::GET, None));
        assert!(m("/", &[], None).matches("/anything", &Method::GET, None));
    }

    #[test]
    fn narrows_by_method_and_host() {
        let r = m("/a", &[Method::GET, Method::HEAD], Some("api.example.com"));
        assert!(r.matches("/a", &Method::GET, Some("API.example.com")));
        assert!(!r.matches("/a", &Method::POST, Some("api.example.com")));
        assert!(!r.matches("/a", &Method::GET, Some("other")));
        assert!(!r.matches("/a", &Method::GET, None));
    }

    #[test]
    fn first_match_wins() {
        // As the gateway looks a route up: the first in order whose matcher matches.
        let routes = [m("/a/b", &[], None), m("/a", &[], None)];
        let find = |path: &str| routes.iter().find(|r| r.matches(path, &Method::GET, None));
        assert_eq!(find("/a/b/c").unwrap().prefix, "/a/b");
        assert_eq!(find("/a/x").unwrap().prefix, "/a");
        assert!(find("/z").is_none());
    }

    #[test]
    fn strips_ports() {
        assert_eq!(host_without_port("a.com:8443"), "a.com");
        assert_eq!(host_without_port("a.com"), "a.com");
        assert_eq!(host_without_port("[::1]:8443"), "::1");
        assert_eq!(host_without_port("127.0.0.1:1"), "127.0.0.1");
        assert_eq!(
            host_without_port("admin.example.com.:443"),
            "admin.example.com"
        );
        assert_eq!(host_without_port("admin.example.com."), "admin.example.com");
    }
}
