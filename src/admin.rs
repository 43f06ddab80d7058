//! The admin listener: plain HTTP on its own address, never on the public listener.
//! `/healthz` (alive), `/readyz` (listeners bound, upstreams healthy, keys loaded) and
//! `/metrics` (Prometheus text), as a plain match on the path.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::gateway::Shared;

/// Answers one admin request.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, ctype, body) = match (req.method().as_str(), req.uri().path()) {
        ("GET" | "HEAD", "/healthz") => (
            StatusCode::OK,
            "application/json",
            "{\"status\":\"ok\"}".to_string(),
        ),
        ("GET" | "HEAD", "/readyz") if shared.draining.load(Ordering::Acquire) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "application/json",
            "{\"status\":\"draining\",\"reasons\":[\"shutting down: finishing in-flight requests\"]}"
                .to_string(),
        ),
        ("GET" | "HEAD", "/readyz") => {
            let mut reasons = Vec::new();
            if !shared.listening.load(Ordering::Acquire) {
                reasons.push("listeners not bound".to_string());
            }
            reasons.extend(shared.snapshot.load().not_ready());
            if reasons.is_empty() {
                (
                    StatusCode::OK,
                    "application/json",
                    "{\"status\":\"ready\"}".to_string(),
                )
            } else {
                let body =
                    serde_json::json!({ "status": "not ready", "reasons": reasons }).to_string();
                (StatusCode::SERVICE_UNAVAILABLE, "application/json", body)
            }
        }
        ("GET" | "HEAD", "/metrics") => (
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            shared.metrics.render(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "application/json",
            "{\"error\":\"not found\"}".to_string(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    Ok(resp)
}
