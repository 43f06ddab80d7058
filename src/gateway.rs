//! THE request path, one straight-line async fn in phase order:
//!
//! request id -> path check -> host check -> route -> size limits -> authenticate and
//! authorize -> rewrite headers -> forward -> access log and metrics.
//!
//! Every refusal is a `Refusal` rendered in one place (`error.rs`); every request, whatever
//! its outcome, produces exactly one access-log event and one `requests_total` increment.

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, HeaderValue, UPGRADE};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use crate::auth::{Identity, RequestView};
use crate::conn::ConnInfo;
use crate::error::Refusal;
use crate::metrics::Metrics;
use crate::path;
use crate::proxy::body::{BodyError, ReqBody, client_fault};
use crate::proxy::headers::{
    self, X_AUTH_METHOD, X_AUTH_SCOPES, X_AUTH_SUBJECT, X_FORWARDED_HOST, X_FORWARDED_PROTO,
    X_REQUEST_ID, XFCC,
};
use crate::proxy::pool::SendError;
use crate::proxy::pool::UpstreamBody;
use crate::route::host_without_port;
use crate::snapshot::{RouteRt, Snapshot};
use crate::telemetry;

/// Response body: streamed from the upstream, or written by the gateway.
pub(crate) type RespBody = Either<UpstreamBody, Full<Bytes>>;

/// State shared by every connection for the life of the process.
pub struct Shared {
    /// The current snapshot.
    pub snapshot: ArcSwap<Snapshot>,
    /// Metrics registry and handles.
    pub metrics: Arc<Metrics>,
    /// Services authenticators share across reloads.
    pub services: crate::auth::Services,
    /// Set once every public listener is bound.
    pub listening: AtomicBool,
    /// Set when shutdown begins (`/readyz` then says "draining").
    pub draining: AtomicBool,

    id_prefix: [u8; 12],
    id_counter: AtomicU64,
}

impl Shared {
    /// Wraps the first snapshot.
    pub fn new(snapshot: Snapshot, metrics: Arc<Metrics>) -> Self {
        let mut prefix = [0u8; 6];
        rand::fill(&mut prefix);
        Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            services: crate::auth::Services::new(metrics.clone()),
            metrics,
            listening: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            id_prefix: {
                let mut p = [0u8; 12];
                for (pair, b) in p.chunks_exact_mut(2).zip(prefix) {
                    pair.copy_from_slice(&[HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
                }
                p
            },
            id_counter: AtomicU64::new(1),
        }
    }

    /// The caller's `X-Request-Id` if valid (shared, no copy), else a new one written
    /// straight into a header value: no `format!`, no second copy for the header.
    fn request_id(&self, req: &Request<Incoming>) -> HeaderValue {
        if let Some(v) = req.headers().get(&X_REQUEST_ID) {
            if headers::valid_request_id(v.as_bytes()) {
                return v.clone();
            }
        }
        let n = self.id_counter.fetch_add(1, Ordering::Relaxed);
        let mut buf = [0u8; 22];
        let (prefix, counter) = buf.split_at_mut(12);
        prefix.copy_from_slice(&self.id_prefix);
        for (i, b) in counter.iter_mut().enumerate() {
            let shift = 4 * (9 - i);
            *b = HEX[((n >> shift) & 0xf) as usize];
        }
        HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("-"))
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// What the access log needs from the inner phases.
struct Trace {
    route: Option<usize>,
    auth_method: Cow<'static, str>,
    /// Whose subject the access log names.
    subject: Option<Arc<Identity>>,
    /// The client's address as `trusted_proxies` resolve it (`None`: not resolved yet,
    /// the TCP peer stands in).
    client_ip: Option<std::net::IpAddr>,
    /// Who a refused credential claimed to be.
    attempted: std::sync::OnceLock<Box<str>>,
}

/// Serves one request. Never fails: errors become responses.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, Infallible> {
    let start = Instant::now();
    let snap = shared.snapshot.load_full();
    let request_id_value = shared.request_id(&req);
    let request_id = request_id_value.to_str().unwrap_or("-");
    let method = req.method().clone();
    let uri = req.uri().clone();
    let mut trace = Trace {
        route: None,
        auth_method: Cow::Borrowed(""),
        subject: None,
        client_ip: None,
        attempted: std::sync::OnceLock::new(),
    };

    let resp = match process(&shared, &snap, &conn, req, &request_id_value, &mut trace).await {
        Ok(r) => r,
        Err(refusal) => refusal.into_response(request_id).map(Either::Right),
    };

    let status = resp.status().as_u16();
    let elapsed = start.elapsed().as_secs_f64();
    let route: Option<&RouteRt> = trace.route.and_then(|i| snap.routes.get(i));
    route
        .map_or(&snap.unmatched, |r| &r.metrics)
        .record(status, elapsed);
    telemetry::access(&telemetry::Access {
        request_id,
        route: route.map_or("-", |r| r.name.as_str()),
        method: method.as_str(),
        path: uri.path(),
        status,
        duration: elapsed,
        upstream: route.map_or("-", |r| r.upstream.name.as_str()),
        auth_method: if trace.auth_method.is_empty() {
            "-"
        } else {
            &trace.auth_method
        },
        subject: trace.subject.as_ref().map_or("", |i| i.subject.as_str()),
        attempted: trace.attempted.get().map_or("", |a| a),
        client_ip: trace.client_ip.unwrap_or(conn.peer.ip()),
        peer_ip: conn.peer.ip(),
    });
    Ok(resp)
}

async fn process(
    shared: &Shared,
    snap: &Snapshot,
    conn: &ConnInfo,
    req: Request<Incoming>,
    request_id: &HeaderValue,
    trace: &mut Trace,
) -> Result<Response<RespBody>, Refusal> {
    // Path check: before routing, so no route can be bypassed.
    let canonical = path::canonicalize(req.uri().path()).map_err(Refusal::BadRequest)?;
    // A `#` the URI parser dropped from the raw HTTP/1.1 target.
    if conn.fragments.take(req.uri()) {
        return Err(Refusal::BadRequest("fragment in request target"));
    }

    // Host: absolute-form authority (or HTTP/2 :authority) must agree with Host.
    let host: Option<HeaderValue> = {
        let header = req.headers().get(HOST);
        match (req.uri().authority(), header) {
            (Some(a), Some(h)) if !h.to_str().is_ok_and(|h| a.as_str().eq_ignore_ascii_case(h)) => {
                return Err(Refusal::BadRequest(
                    "request target authority does not match Host",
                ));
            }
            (Some(_), Some(h)) => Some(h.clone()),
            (Some(a), None) => HeaderValue::from_str(a.as_str()).ok(),
            (None, h) => h.cloned(),
        }
    };
    if req.headers().get_all(HOST).iter().nth(1).is_some() {
        return Err(Refusal::BadRequest("duplicate Host header"));
    }
    // Userinfo is not part of an HTTP authority (RFC 9110 §4.2.4, RFC 9113 §8.3.1); a
    // `user@host` would otherwise slip past a route's `host`.
    if host.as_ref().is_some_and(|h| h.as_bytes().contains(&b'@')) {
        return Err(Refusal::BadRequest(
            "userinfo is not allowed in the authority",
        ));
    }
    if host.is_none() && req.version() == Version::HTTP_11 {
        return Err(Refusal::BadRequest("missing Host header"));
    }

    // `post` is not `POST` to the route table but is to many upstreams: refuse the mix.
    if req
        .method()
        .as_str()
        .bytes()
        .any(|b| b.is_ascii_lowercase())
    {
        let upper = req.method().as_str().to_ascii_uppercase();
        if matches!(
            upper.as_str(),
            "GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "CONNECT" | "OPTIONS" | "TRACE" | "PATCH"
        ) {
            return Err(Refusal::BadRequest("method must be upper-case"));
        }
    }

    let limits = &snap.limits;

    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if header_bytes > limits.max_header_bytes {
        return Err(Refusal::HeadersTooLarge);
    }

    // Route.
    let host_name = host
        .as_ref()
        .and_then(|h| h.to_str().ok())
        .map(host_without_port);
    let (index, route) = snap
        .routes
        .iter()
        .enumerate()
        .find(|(_, r)| r.matcher.matches(&canonical, req.method(), host_name))
        .ok_or(Refusal::NotFound)?;
    trace.route = Some(index);

    // Cheap size check first; the streaming limit enforces the rest.
    let content_length = headers::content_length(req.headers()).map_err(Refusal::BadRequest)?;
    if let Some((len, _)) = content_length {
        if len > limits.max_body_bytes {
            return Err(Refusal::PayloadTooLarge);
        }
    }

    // Authenticate and authorize.
    let peer_trusted = headers::is_trusted(conn.peer.ip(), &snap.trusted_proxies);
    let client_ip = headers::client_ip(
        req.headers(),
        conn.peer.ip(),
        peer_trusted,
        &snap.trusted_proxies,
    );
    trace.client_ip = Some(client_ip);
    let admitted = {
        let view = RequestView {
            services: &shared.services,
            lockout: &snap.config.server.lockout,
            method: req.method(),
            uri: req.uri(),
            headers: req.headers(),
            conn,
            client_ip,
            attempted: &trace.attempted,
        };
        route.pipeline.run(&view).await?
    };
    trace.auth_method = match admitted.identities.as_slice() {
        [one] => Cow::Borrowed(one.method.as_str()),
        _ => Cow::Owned(admitted.methods()),
    };
    trace.subject = admitted.subject_identity().cloned();

    // Upgrade (WebSocket): only on HTTP/1.1 with `Connection: upgrade`.
    // Only WebSocket: other protocols (h2c, TLS) would turn an authenticated request into
    // an unauthenticated tunnel carrying requests for any path.
    let upgrade = (req.version() == Version::HTTP_11 && connection_has_upgrade(req.headers()))
        .then(|| {
            req.headers()
                .get(UPGRADE)
                .filter(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
                .cloned()
        })
        .flatten();

    // Rewrite headers: strip first, then set.
    let (mut parts, body) = req.into_parts();
    let h = &mut parts.headers;
    // Room for what the gateway adds (X-Forwarded-*, X-Request-Id, X-Auth-*): one
    // growth now instead of one per insert as the map fills.
    h.reserve(8);
    headers::strip_hop_by_hop(h);
    headers::strip_identity(h, &snap.set_by_gateway, &route.consumes.headers);
    if parts.version == Version::HTTP_2 {
        headers::join_cookies(h);
    }

    for name in &route.consumes.headers {
        if admitted.keeps(name) {
            continue;
        }
        h.remove(name);
    }
    if let Some((len, false)) = content_length {
        // One value as the upstream should read it, not the list or spelling sent.
        h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    }
    headers::set_forwarded_for(h, &conn.peer_ip, peer_trusted);
    h.insert(X_FORWARDED_PROTO.clone(), snap.proto.clone());
    if let Some(hv) = host {
        if !h.contains_key(HOST) {
            h.insert(HOST, hv.clone());
        }
        h.insert(X_FORWARDED_HOST.clone(), hv);
    } else {
        h.remove(&X_FORWARDED_HOST);
    }
    h.insert(X_REQUEST_ID.clone(), request_id.clone());
    if let Some(id) = admitted.subject_identity() {
        // A subject that cannot be sent as a header (control characters) is refused.
        let v = id
            .subject_value
            .clone()
            .ok_or(Refusal::UnforwardableIdentity)?;
        h.insert(X_AUTH_SUBJECT.clone(), v);
    }
    let method_value = match &trace.auth_method {
        Cow::Borrowed(m) => Ok(HeaderValue::from_static(m)),
        Cow::Owned(m) => HeaderValue::from_str(m),
    };
    if let Ok(v) = method_value {
        h.insert(X_AUTH_METHOD.clone(), v);
    }
    if let Some(v) = admitted.scopes_value() {
        h.insert(X_AUTH_SCOPES.clone(), v.into_owned());
    }
    for id in &admitted.identities {
        for (k, v) in &id.headers {
            h.insert(k.clone(), v.clone());
        }
    }
    if let Some(xfcc) = conn.client_cert.as_ref().and_then(|c| c.xfcc.clone()) {
        h.insert(XFCC.clone(), xfcc);
    }
    if let Some(token) = &upgrade {
        h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(UPGRADE, token.clone());
    }

    // Target: the chosen upstream target; the request line keeps the path and query.
    let upstream = &route.upstream;
    let target = upstream.pick().ok_or(Refusal::BadGateway)?;
    let pq = match parts.uri.path_and_query() {
        Some(pq) if !route.consumes.query.is_empty() => strip_query(pq, &route.consumes.query),
        Some(pq) => pq.clone(),
        None => PathAndQuery::from_static("/"),
    };
    parts.uri = Uri::from(pq);
    parts.version = Version::HTTP_11;
    let upstream_req = Request::from_parts(
        parts,
        ReqBody::limited(body, limits.max_body_bytes, limits.idle_timeout),
    );

    // Forward.
    let timeout = upstream.timeout.min(limits.request_timeout);
    let sent = Instant::now();
    let answer = tokio::time::timeout(timeout, upstream.send(target, upstream_req)).await;
    upstream
        .counters
        .duration
        .observe(sent.elapsed().as_secs_f64());
    // Only a failure is logged with it.
    let id = || request_id.to_str().unwrap_or("-");
    let mut resp = match answer {
        Ok(Ok(resp)) => {
            upstream.counters.success.inc();
            resp
        }
        Ok(Err(e)) => {
            match client_fault(&e) {
                Some(BodyError::TooLarge) => return Err(Refusal::PayloadTooLarge),
                Some(BodyError::Stalled) => return Err(Refusal::RequestTimeout),
                _ => {}
            }
            upstream.counters.error.inc();
            upstream.log_failure(id(), target, &e);
            if matches!(e, SendError::Busy) {
                return Err(Refusal::UpstreamBusy);
            }
            return Err(Refusal::BadGateway);
        }
        Err(_) => {
            upstream.counters.timeout.inc();
            upstream.log_failure(
                id(),
                target,
                &format_args!("no response head within {timeout:?}"),
            );
            return Err(Refusal::GatewayTimeout);
        }
    };

    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    headers::strip_response(resp.headers_mut(), switching);
    if switching {
        let agreed = resp
            .headers()
            .get(UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
        if upgrade.is_none() || !agreed {
            return Err(Refusal::BadGateway);
        }
        // The tunnel takes over the client connection, and with it the connection's
        // place under `max_connections`.
        let client_upgrade = conn.upgrade.claim();
        let upstream_upgrade = resp.body_mut().take_upgrade();
        let metrics = shared.metrics.clone();
        let idle = limits.tunnel_idle_timeout;
        tokio::spawn(async move {
            metrics.active_connections.inc();
            crate::proxy::upgrade::tunnel(client_upgrade, upstream_upgrade, idle).await;
            metrics.active_connections.dec();
        });
    }
    Ok(resp.map(Either::Left))
}

fn connection_has_upgrade(h: &http::HeaderMap) -> bool {
    headers::connection_tokens(h).any(|t| t.eq_ignore_ascii_case(b"upgrade"))
}

/// Removes the named query parameters (API keys sent as `?api_key=`).
fn strip_query(pq: &PathAndQuery, names: &[String]) -> PathAndQuery {
    let Some(query) = pq.query() else {
        return pq.clone();
    };
    let kept: Vec<&str> = query
        .split('&')
        .zip(crate::query::pairs(query))
        .filter(|(_, (key, _))| !names.iter().any(|n| crate::query::decodes_to(key, n)))
        .map(|(kv, _)| kv)
        .collect();
    let s = if kept.is_empty() {
        pq.path().to_string()
    } else {
        format!("{}?{}", pq.path(), kept.join("&"))
    };
    PathAndQuery::try_from(s).unwrap_or_else(|_| PathAndQuery::from_static("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_only_named_query_parameters() {
        let pq = PathAndQuery::from_static("/a?api_key=s3cret&x=1&api_key2=y");
        assert_eq!(
            strip_query(&pq, &["api_key".into()]).as_str(),
            "/a?x=1&api_key2=y"
        );
        let pq = PathAndQuery::from_static("/a?api_key=s3cret");
        assert_eq!(strip_query(&pq, &["api_key".into()]).as_str(), "/a");
        let pq = PathAndQuery::from_static("/a?api%5Fkey=1&x=2&api_key[]=3&api.key=4");
        assert_eq!(strip_query(&pq, &["api_key".into()]).as_str(), "/a?x=2");
    }
}
