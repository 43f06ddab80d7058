//! Every refusal the gateway can give is a variant of `Refusal`, and `into_response` is
//! the one place that maps it to SPEC's status table: status, JSON body with the request
//! id, `WWW-Authenticate`, `Retry-After`. Bodies never echo credentials or say which of
//! several credentials failed.

use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Response, StatusCode};
use http_body_util::Full;

/// Why the gateway answered instead of the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Ambiguous or malformed request target (400).
    BadRequest(&'static str),
    /// No route matches (404).
    NotFound,
    /// Body larger than `max_body_bytes` (413).
    PayloadTooLarge,
    /// Header block larger than `max_header_bytes` (431).
    HeadersTooLarge,
    /// No or invalid credentials (401) with the challenges to send.
    Unauthorized {
        /// One `WWW-Authenticate` per authenticator that could have admitted.
        challenges: Vec<HeaderValue>,
    },
    /// Authenticated but not authorized (403).
    Forbidden {
        /// Bearer `insufficient_scope` where a token was used.
        challenge: Option<HeaderValue>,
    },
    /// Authenticated, but the verified subject cannot be written as a header value
    /// (control characters from the identity provider): never forwarded (403).
    UnforwardableIdentity,
    /// Locked out after too many failures (429).
    TooManyRequests {
        /// Sent as `Retry-After` (whole seconds, at least 1).
        retry_after: Duration,
    },
    /// Auth backend down and nothing cached, or hashing queue full (503).
    AuthUnavailable,
    /// Every connection `upstreams.X.max_connections` allows to the target is busy, and
    /// none came free within the upstream's `connect_timeout` (503, `Retry-After: 1`).
    UpstreamBusy,
    /// The client stopped sending its request body for `idle_timeout` (408).
    RequestTimeout,
    /// Upstream unreachable or failed (502).
    BadGateway,
    /// Upstream too slow (504).
    GatewayTimeout,
}

/// Response body type used for everything the gateway writes itself.
pub(crate) type ErrorBody = Full<Bytes>;

impl Refusal {
    /// The status code for this refusal.
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::BadRequest(_) => StatusCode::BAD_REQUEST,
            Refusal::NotFound => StatusCode::NOT_FOUND,
            Refusal::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Refusal::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Refusal::Forbidden { .. } | Refusal::UnforwardableIdentity => StatusCode::FORBIDDEN,
            Refusal::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Refusal::AuthUnavailable | Refusal::UpstreamBusy => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Refusal::BadGateway => StatusCode::BAD_GATEWAY,
            Refusal::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The short, non-secret text of the JSON `error` field.
    pub fn message(&self) -> &'static str {
        match self {
            Refusal::BadRequest(m) => m,
            Refusal::NotFound => "no route matches this request",
            Refusal::PayloadTooLarge => "request body too large",
            Refusal::HeadersTooLarge => "request headers too large",
            Refusal::Unauthorized { .. } => "authentication required",
            Refusal::Forbidden { .. } => "access denied",
            Refusal::UnforwardableIdentity => "identity cannot be forwarded to the upstream",
            Refusal::TooManyRequests { .. } => "too many failed attempts, retry later",
            Refusal::AuthUnavailable => "authentication service unavailable",
            Refusal::UpstreamBusy => "upstream connection limit reached, retry later",
            Refusal::RequestTimeout => "request body timed out",
            Refusal::BadGateway => "upstream unavailable",
            Refusal::GatewayTimeout => "upstream timed out",
        }
    }

    /// Builds the response.
    pub fn into_response(self, request_id: &str) -> Response<ErrorBody> {
        let status = self.status();
        let mut body = Vec::with_capacity(64 + request_id.len());
        body.extend_from_slice(b"{\"error\":\"");
        body.extend_from_slice(self.message().as_bytes());
        body.extend_from_slice(b"\",\"request_id\":\"");
        // request ids are validated to [A-Za-z0-9._-] or generated, so no escaping needed
        body.extend_from_slice(request_id.as_bytes());
        body.extend_from_slice(b"\"}");
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        match self {
            Refusal::Unauthorized { challenges } => {
                for c in challenges {
                    h.append(WWW_AUTHENTICATE, c);
                }
            }
            Refusal::Forbidden { challenge: Some(c) } => {
                h.insert(WWW_AUTHENTICATE, c);
            }
            Refusal::TooManyRequests { retry_after } => {
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                h.insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
            }
            Refusal::UpstreamBusy => {
                h.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(r: Refusal) -> u16 {
        r.into_response("rid").status().as_u16()
    }

    #[test]
    fn maps_each_row_of_the_status_table() {
        assert_eq!(status(Refusal::BadRequest("x")), 400);
        assert_eq!(status(Refusal::NotFound), 404);
        assert_eq!(status(Refusal::PayloadTooLarge), 413);
        assert_eq!(status(Refusal::HeadersTooLarge), 431);
        assert_eq!(status(Refusal::Unauthorized { challenges: vec![] }), 401);
        assert_eq!(status(Refusal::Forbidden { challenge: None }), 403);
        assert_eq!(status(Refusal::UnforwardableIdentity), 403);
        assert_eq!(
            status(Refusal::TooManyRequests {
                retry_after: Duration::from_secs(3)
            }),
            429
        );
        assert_eq!(status(Refusal::AuthUnavailable), 503);
        assert_eq!(status(Refusal::UpstreamBusy), 503);
        assert_eq!(status(Refusal::RequestTimeout), 408);
        assert_eq!(status(Refusal::BadGateway), 502);
        assert_eq!(status(Refusal::GatewayTimeout), 504);
    }

    #[test]
    fn sets_challenges_and_retry_after() {
        let r = Refusal::Unauthorized {
            challenges: vec![
                HeaderValue::from_static("Basic realm=\"a\""),
                HeaderValue::from_static("Bearer realm=\"b\""),
            ],
        }
        .into_response("id1");
        assert_eq!(r.headers().get_all(WWW_AUTHENTICATE).iter().count(), 2);
        let r = Refusal::TooManyRequests {
            retry_after: Duration::from_millis(1500),
        }
        .into_response("id");
        assert_eq!(r.headers()[RETRY_AFTER], "2");
    }

    #[test]
    fn body_is_json_with_request_id() {
        use http_body_util::BodyExt;
        let r = Refusal::NotFound.into_response("abc-1");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bytes = rt.block_on(r.into_body().collect()).unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["request_id"], "abc-1");
        assert_eq!(v["error"], "no route matches this request");
    }
}
