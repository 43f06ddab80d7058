//! Header rewriting between client and upstream. Order matters and is fixed: hop-by-hop
//! headers and those named in `Connection` go first, then every client-sent `X-Auth-*` and
//! `X-Forwarded-Client-Cert`, then the consumed credentials; only then does the gateway set
//! `X-Forwarded-*`, `X-Request-Id` and the identity headers, so a client can never smuggle
//! an identity through.

use std::net::IpAddr;

use http::header::{
    CONNECTION, CONTENT_LENGTH, DATE, HeaderMap, HeaderName, HeaderValue, TE, TRAILER,
    TRANSFER_ENCODING, UPGRADE,
};

/// `X-Forwarded-For`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Request-Id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `X-Auth-Subject`.
pub static X_AUTH_SUBJECT: HeaderName = HeaderName::from_static("x-auth-subject");
/// `X-Auth-Method`.
pub static X_AUTH_METHOD: HeaderName = HeaderName::from_static("x-auth-method");
/// `X-Auth-Scopes`.
pub static X_AUTH_SCOPES: HeaderName = HeaderName::from_static("x-auth-scopes");
/// `X-Forwarded-Client-Cert`.
pub static XFCC: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static PROXY_AUTHORIZATION: HeaderName = HeaderName::from_static("proxy-authorization");
static PROXY_AUTHENTICATE: HeaderName = HeaderName::from_static("proxy-authenticate");

/// Whether a header is hop-by-hop (RFC 9110 §7.6.1, plus the legacy proxy ones).
fn hop_by_hop(k: &HeaderName) -> bool {
    matches!(
        k.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authorization"
            | "proxy-authenticate"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// The elements of a comma-separated field value (RFC 9110 §5.6.1), trimmed, empty ones
/// skipped. The one list splitter for `Connection`, `Content-Length` and the like, on both
/// sides of the gateway.
pub fn list_elements(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Every token of every `Connection` field in `h`.
pub fn connection_tokens(h: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    h.get_all(CONNECTION)
        .iter()
        .flat_map(|v| list_elements(v.as_bytes()))
}

/// Removes hop-by-hop headers and every header named in `Connection`.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    // One pass over the names first: most messages carry none of them.
    if !h.keys().any(hop_by_hop) {
        return;
    }
    if h.contains_key(CONNECTION) {
        let named: Vec<HeaderName> = connection_tokens(h)
            .filter_map(|t| HeaderName::from_bytes(t).ok())
            .collect();
        for n in named {
            h.remove(n);
        }
        h.remove(CONNECTION);
    }
    for n in [
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &PROXY_AUTHORIZATION,
        &PROXY_AUTHENTICATE,
    ] {
        if h.contains_key(n) {
            h.remove(n);
        }
    }
    for n in [TE, TRAILER, TRANSFER_ENCODING, UPGRADE] {
        if h.contains_key(&n) {
            h.remove(n);
        }
    }
}

/// Removes every client-sent header the upstream could take for the gateway's word: the
/// identity headers (`X-Auth-*`, `X-Forwarded-Client-Cert`), `set_by_gateway` (every
/// header an authenticator in the configuration can set, such as `forward_claims`, on
/// every route), client-address headers other than `X-Forwarded-For` (`Forwarded`,
/// `X-Real-IP`, `True-Client-IP`), and the overrides some frameworks honour after routing
/// (`X-Original-URL`, `X-Rewrite-URL`, `X-HTTP-Method-Override`). Each in every
/// `_`/`-` spelling: CGI, WSGI and PHP upstreams read `X_Tenant` and `X-Tenant` as the
/// same variable. `consumed` (the route's credential headers) loses its `_` spellings
/// here; the exact names are the caller's to remove (a `forward_token` route keeps one).
pub fn strip_identity(h: &mut HeaderMap, set_by_gateway: &[HeaderName], consumed: &[HeaderName]) {
    let doomed = |k: &HeaderName| {
        let s = k.as_str();
        spoofable(s)
            || set_by_gateway.iter().any(|n| same_field(s, n.as_str()))
            || (s.contains('_') && consumed.iter().any(|n| same_field(s, n.as_str())))
    };
    if h.keys().any(doomed) {
        let names: Vec<HeaderName> = h.keys().filter(|k| doomed(k)).cloned().collect();
        for n in names {
            h.remove(n);
        }
    }
}

/// Whether two lower-case field names are one variable to a CGI-style upstream (`_` and
/// `-` are the same).
fn same_field(a: &str, b: &str) -> bool {
    let dash = |c: u8| if c == b'_' { b'-' } else { c };
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| dash(x) == dash(y))
}

/// A client header that could pass for one the gateway sets, or that redirects the request
/// after it was routed and authorised. Dashed `X-Forwarded-*` and `X-Request-Id` are the
/// gateway's to rewrite; their `_` spellings go.
fn spoofable(s: &str) -> bool {
    // Most fields (host, accept, user-agent, content-type...) leave at the first byte.
    if !matches!(s.as_bytes().first(), Some(b'x' | b'f' | b't')) {
        return false;
    }
    let dashed = |t: &str| same_field(s, t);
    s.get(..7).is_some_and(|p| same_field(p, "x-auth-"))
        || [
            "x-forwarded-client-cert",
            "forwarded",
            "x-real-ip",
            "true-client-ip",
            "x-original-url",
            "x-rewrite-url",
            "x-http-method-override",
            "x-http-method",
            "x-method-override",
        ]
        .iter()
        .any(|t| dashed(t))
        || (s.contains('_')
            && [
                "x-forwarded-for",
                "x-forwarded-proto",
                "x-forwarded-host",
                "x-request-id",
            ]
            .iter()
            .any(|t| dashed(t)))
}

/// HTTP/2 sends each cookie as its own field; an HTTP/1.1 upstream expects one `Cookie`
/// header joined with `"; "` (RFC 9113 §8.2.3).
pub fn join_cookies(h: &mut HeaderMap) {
    let mut values = h.get_all(http::header::COOKIE).iter();
    if values.next().is_none() || values.next().is_none() {
        return;
    }
    let joined: Vec<&[u8]> = h
        .get_all(http::header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    if let Ok(v) = HeaderValue::from_bytes(&joined.join(&b"; "[..])) {
        h.insert(http::header::COOKIE, v);
    }
}

/// Whether `ip` (IPv4-mapped IPv6 counted as IPv4) lies in one of `trusted`.
pub fn is_trusted(ip: IpAddr, trusted: &[ipnet::IpNet]) -> bool {
    let ip = ip.to_canonical();
    trusted.iter().any(|n| n.contains(&ip))
}

/// The client a request comes from: the TCP peer, unless the peer is a trusted proxy
/// (`peer_trusted`, from [`is_trusted`]); then the right-most `X-Forwarded-For` entry that
/// is not itself a trusted proxy (entries to its left were written by the client and prove
/// nothing). An entry that is not an IP address stops the walk at the last trusted hop, so
/// a malformed header never names a stranger.
pub fn client_ip(
    h: &HeaderMap,
    peer: IpAddr,
    peer_trusted: bool,
    trusted: &[ipnet::IpNet],
) -> IpAddr {
    let mut client = peer.to_canonical();
    if !peer_trusted {
        return client;
    }
    for v in h.get_all(&X_FORWARDED_FOR).iter().rev() {
        let Ok(list) = v.to_str() else {
            return client;
        };
        for entry in list.rsplit(',') {
            let Ok(ip) = entry.trim().parse::<IpAddr>() else {
                return client;
            };
            client = ip.to_canonical();
            if !is_trusted(client, trusted) {
                return client;
            }
        }
    }
    client
}

/// Sets `X-Forwarded-For`: the peer replaces the caller's value, or is appended to it when
/// the peer is a trusted proxy.
pub fn set_forwarded_for(h: &mut HeaderMap, peer: &HeaderValue, trusted: bool) {
    if trusted {
        let mut prior = h
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .map(HeaderValue::as_bytes)
            .peekable();
        if prior.peek().is_some() {
            let mut list = Vec::with_capacity(64);
            for v in prior {
                list.extend_from_slice(v);
                list.extend_from_slice(b", ");
            }
            list.extend_from_slice(peer.as_bytes());
            if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(list)) {
                h.insert(X_FORWARDED_FOR.clone(), v);
            }
            return;
        }
    }
    h.insert(X_FORWARDED_FOR.clone(), peer.clone());
}

/// A peer address as an `X-Forwarded-For` element (IPv4-mapped IPv6 written as IPv4);
/// made once per connection.
pub fn ip_value(ip: IpAddr) -> HeaderValue {
    let text = match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => v6.to_string(),
    };
    // An address is always a valid header value; the fallback is never taken.
    HeaderValue::from_maybe_shared(bytes::Bytes::from(text))
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// The body length `Content-Length` declares, and whether it is written the one way an
/// upstream should read it (a single field, digits without leading zeros). Repeats and
/// lists of one value are that value (RFC 9110 §8.6); different values, or anything but
/// digits, are an error. `None` without the field.
pub fn content_length(h: &HeaderMap) -> Result<Option<(u64, bool)>, &'static str> {
    let mut fields = h.get_all(CONTENT_LENGTH).iter();
    let Some(first) = fields.next() else {
        return Ok(None);
    };
    let mut length: Option<u64> = None;
    let mut canonical = true;
    for v in std::iter::once(first).chain(fields) {
        for part in v.as_bytes().split(|&b| b == b',') {
            let n = digits(part.trim_ascii()).ok_or("invalid Content-Length")?;
            if length.is_some_and(|l| l != n) {
                return Err("conflicting Content-Length values");
            }
            canonical &= length.is_none() && (part.len() == 1 || part.first() != Some(&b'0'));
            length = Some(n);
        }
    }
    Ok(length.map(|n| (n, canonical)))
}

/// A decimal number of digits only (`u64::from_str` would also take a `+`).
pub fn digits(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |n, &b| {
        let digit = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// `X-Request-Id` kept if it is 1-128 characters of `[A-Za-z0-9._-]`.
pub fn valid_request_id(v: &[u8]) -> bool {
    (1..=128).contains(&v.len())
        && v.iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Removes hop-by-hop headers from an upstream response (keeping `Upgrade`/`Connection`
/// on a 101, which the client needs).
pub fn strip_response(h: &mut HeaderMap, switching: bool) {
    if switching {
        for n in [&KEEP_ALIVE, &PROXY_CONNECTION] {
            if h.contains_key(n) {
                h.remove(n);
            }
        }
        return;
    }
    strip_hop_by_hop(h);
    // HTTP/2: `Date` is sent as a never-indexed literal (~30 bytes). Its value changes
    // every second and the h2 crate's HPACK encoder, to find the current one, compares it
    // with every `Date` it has indexed on the connection, oldest first: with a 4 KiB table
    // up to ~60 comparisons of cold memory per response on a long-lived connection.
    if let Some(v) = h.get_mut(DATE) {
        v.set_sensitive(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_date_is_never_indexed() {
        let mut h = HeaderMap::new();
        h.insert(
            DATE,
            HeaderValue::from_static("Thu, 03 Dec 2026 12:00:00 GMT"),
        );
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        strip_response(&mut h, false);
        assert!(h.get(DATE).unwrap().is_sensitive());
        assert!(!h.get("content-type").unwrap().is_sensitive());
    }

    #[test]
    fn removes_connection_named_and_hop_by_hop() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("close, X-Secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(TE, HeaderValue::from_static("trailers"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn removes_underscore_spellings_of_gateway_headers() {
        let mut h = HeaderMap::new();
        for n in [
            "x_auth_subject",
            "x_forwarded_client_cert",
            "x_forwarded_for",
            "x_request_id",
            "x-auth_method",
        ] {
            h.insert(HeaderName::from_static(n), HeaderValue::from_static("evil"));
        }
        h.insert("x_custom_thing", HeaderValue::from_static("kept"));
        strip_identity(&mut h, &[], &[]);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x_custom_thing"));
    }

    #[test]
    fn removes_spoofed_identity() {
        let mut h = HeaderMap::new();
        h.insert("x-auth-subject", HeaderValue::from_static("admin"));
        h.append("x-auth-subject", HeaderValue::from_static("root"));
        h.insert("x-auth-method", HeaderValue::from_static("mtls"));
        h.insert(
            "x-forwarded-client-cert",
            HeaderValue::from_static("Hash=1"),
        );
        h.insert("x-authz", HeaderValue::from_static("kept"));
        strip_identity(&mut h, &[], &[]);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn removes_every_spelling_of_claim_headers_overrides_and_client_addresses() {
        let tenant = HeaderName::from_static("x-tenant");
        let api_key = HeaderName::from_static("x-api-key");
        let mut h = HeaderMap::new();
        for n in [
            "x-tenant",
            "x_tenant",
            "x-api_key",
            "x-original-url",
            "x_rewrite_url",
            "x-http-method-override",
            "x-method-override",
            "forwarded",
            "x-real-ip",
            "true_client_ip",
            "x_auth-subject",
        ] {
            h.insert(HeaderName::from_static(n), HeaderValue::from_static("evil"));
        }
        for n in ["x-api-key", "x-forwarded-for", "x-tenantx", "x-forwarded"] {
            h.insert(HeaderName::from_static(n), HeaderValue::from_static("kept"));
        }
        strip_identity(&mut h, &[tenant], &[api_key]);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(
            left,
            ["x-api-key", "x-forwarded", "x-forwarded-for", "x-tenantx"]
        );
    }

    #[test]
    fn client_ip_believes_forwarded_for_only_from_trusted_proxies() {
        let nets: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let with = |xff: &[&str]| {
            let mut h = HeaderMap::new();
            for v in xff {
                h.append(&X_FORWARDED_FOR, HeaderValue::from_str(v).unwrap());
            }
            h
        };
        let rows: &[(&str, &[&str], &str)] = &[
            // An untrusted peer is the client, whatever it claims.
            ("192.0.2.1", &["203.0.113.9"], "192.0.2.1"),
            // A trusted peer: the right-most entry that is not a trusted proxy.
            ("10.0.0.1", &["203.0.113.9"], "203.0.113.9"),
            (
                "10.0.0.1",
                &["198.51.100.7, 203.0.113.9, 10.1.2.3"],
                "203.0.113.9",
            ),
            (
                "10.0.0.1",
                &["198.51.100.7", "203.0.113.9, 10.1.2.3"],
                "203.0.113.9",
            ),
            ("::ffff:10.0.0.1", &[" 2001:db8::1 "], "2001:db8::1"),
            // No header, or only trusted hops: the last trusted hop.
            ("10.0.0.1", &[], "10.0.0.1"),
            ("10.0.0.1", &["10.9.9.9"], "10.9.9.9"),
            // Garbage stops the walk before it can name anyone.
            ("10.0.0.1", &["203.0.113.9, nonsense"], "10.0.0.1"),
            ("10.0.0.1", &["203.0.113.9, 10.1.2.3, unknown"], "10.0.0.1"),
            ("10.0.0.1", &["203.0.113.9, unknown, 10.1.2.3"], "10.1.2.3"),
        ];
        for (peer, xff, want) in rows {
            let peer_trusted = is_trusted(ip(peer), &nets);
            assert_eq!(
                client_ip(&with(xff), ip(peer), peer_trusted, &nets),
                ip(want),
                "peer {peer} xff {xff:?}"
            );
        }
        assert_eq!(
            client_ip(&with(&["203.0.113.9"]), ip("10.0.0.1"), false, &[]),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn forwarded_for_replaces_unless_trusted() {
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("6.6.6.6"));
        let peer = ip_value("10.0.0.1".parse().unwrap());
        set_forwarded_for(&mut h, &peer, false);
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.1");
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("1.2.3.4"));
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("5.6.7.8"));
        set_forwarded_for(&mut h, &peer, true);
        assert_eq!(h[&X_FORWARDED_FOR], "1.2.3.4, 5.6.7.8, 10.0.0.1");
        assert_eq!(h.get_all(&X_FORWARDED_FOR).iter().count(), 1);
        h.remove(&X_FORWARDED_FOR);
        set_forwarded_for(&mut h, &peer, true);
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.1");
    }

    #[test]
    fn peer_values_write_mapped_addresses_as_ipv4() {
        assert_eq!(ip_value("::ffff:10.1.2.3".parse().unwrap()), "10.1.2.3");
        assert_eq!(ip_value("2001:db8::1".parse().unwrap()), "2001:db8::1");
        assert_eq!(ip_value("127.0.0.1".parse().unwrap()), "127.0.0.1");
    }

    #[test]
    fn content_length_is_one_number_written_one_way() {
        let with = |vals: &[&str]| {
            let mut h = HeaderMap::new();
            for v in vals {
                h.append(CONTENT_LENGTH, HeaderValue::from_str(v).unwrap());
            }
            content_length(&h)
        };
        assert_eq!(with(&[]), Ok(None));
        assert_eq!(with(&["5"]), Ok(Some((5, true))));
        assert_eq!(with(&["0"]), Ok(Some((0, true))));
        assert_eq!(with(&["5, 5"]), Ok(Some((5, false))));
        assert_eq!(with(&["5", "5"]), Ok(Some((5, false))));
        assert_eq!(with(&["03", "3"]), Ok(Some((3, false))));
        assert_eq!(with(&["007"]), Ok(Some((7, false))));
        assert!(with(&["5", "6"]).is_err());
        assert!(with(&["5,6"]).is_err());
        assert!(with(&["+5"]).is_err());
        assert!(with(&[""]).is_err());
        assert!(with(&["99999999999999999999999"]).is_err());
    }

    #[test]
    fn validates_request_ids() {
        assert!(valid_request_id(b"abc-123_x.y"));
        assert!(!valid_request_id(b""));
        assert!(!valid_request_id(b"a b"));
        assert!(!valid_request_id(&[b'a'; 129]));
    }
}
