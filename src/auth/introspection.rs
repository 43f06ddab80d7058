//! `kind = "introspection"`: asks an RFC 7662 endpoint whether an opaque bearer token is
//! active, authenticating the gateway with `client_secret_basic` (default) or
//! `client_secret_post`, and grants the answer's subject, scopes and claims.
//!
//! Invariants: fail closed — an endpoint that is down, slow (`timeout`, default 5s) or
//! answers anything but 200 + JSON yields `Unavailable` (503) unless a verdict is cached,
//! never an admission. Active answers are cached until min(`exp`, `cache_ttl`, default
//! 60s), inactive ones for `negative_cache_ttl` (default 5s), keyed by SHA-256 of the
//! token. Concurrent requests with the same token share one call (single-flight). The
//! client secret is never logged.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use dashmap::DashMap;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};

use rustls::pki_types::CertificateDer;
use serde_json::{Map, Value};
use tokio::sync::OnceCell;

use super::bearer::{Bearer, Token, TokenKeys, TokenOptions, bearer};
use super::idp::{IdpClient, idp_client};
use super::memo::{Memo, owner_id};
use super::token_cache::{MemoryStore, TokenKey, TokenStore, token_key};
use super::{
    AuthMethod, BuildContext, BuildError, Consumes, Identity, Outcome, RejectReason, RequestView,
};
use crate::config::secret::{self, Secret, Sources};
use crate::config::units::Dur;
use crate::config::{Problems, resolve_path};

/// Largest introspection response accepted.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// `[authenticators.NAME]` of kind `introspection`.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    /// Always `"introspection"`.
    pub kind: String,
    pub realm: Option<String>,
    pub endpoint: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub client_secret_file: Option<String>,
    pub client_secret_env: Option<String>,
    pub auth_method: Option<String>,
    pub ca: Option<String>,
    pub timeout: Option<Dur>,
    pub cache_ttl: Option<Dur>,
    pub negative_cache_ttl: Option<Dur>,
    pub cache_size: Option<i64>,
    pub issuer: Option<String>,
    pub audiences: Option<Vec<String>>,
    pub forward_token: Option<bool>,
    pub forward_claims: Option<BTreeMap<String, String>>,
}

/// `kind = "introspection"`, checked: the endpoint, how to authenticate to it (secret
/// loaded), the roots to trust, timeouts, cache bounds and the shared token options.
pub struct Settings {
    endpoint: Uri,
    auth: ClientAuth,
    ca: Option<Vec<CertificateDer<'static>>>,
    timeout: Duration,
    cache_ttl: Duration,
    negative_cache_ttl: Duration,
    cache_size: usize,
    issuer: Option<String>,
    audiences: Option<Vec<String>>,
    options: TokenOptions,
}

/// Why one call to the introspection endpoint failed; the text goes to the log and never
/// holds the token or the client secret.
#[derive(Debug, thiserror::Error)]
enum CallError {
    /// The request could not be built.
    #[error("cannot build request")]
    Request(#[source] http::Error),
    /// The request could not be sent or no response arrived.
    #[error("{0}")]
    Send(#[source] hyper_util::client::legacy::Error),
    /// The endpoint answered something other than 200.
    #[error("endpoint answered {0}")]
    Status(StatusCode),
    /// The body could not be read (or exceeded the size limit).
    #[error("reading response: {0}")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The body is not a JSON object.
    #[error("response is not a JSON object: {0}")]
    NotJson(#[source] serde_json::Error),
}

/// A cached verdict.
#[derive(Clone)]
pub enum Verdict {
    /// Active token and the identity it grants.
    Active(Arc<Identity>),
    /// Inactive, expired or not for us.
    Inactive,
}

/// How the gateway authenticates to the endpoint. Holds the secret: no `Debug`.
#[derive(Clone)]
enum ClientAuth {
    /// `Authorization: Basic` (precomputed, marked sensitive).
    Basic(HeaderValue),
    /// `client_id` and `client_secret` in the form body.
    Post { client_id: String, secret: Secret },
}

type Flight = Arc<OnceCell<Result<Verdict, ()>>>;

/// The introspection authenticator.
pub struct Introspection {
    name: String,
    endpoint: Uri,
    client: IdpClient,
    auth: ClientAuth,
    timeout: Duration,
    cache_ttl: Duration,
    negative_cache_ttl: Duration,
    issuer: Option<String>,
    audiences: Option<Vec<String>>,
    options: TokenOptions,
    cache: Box<dyn TokenStore<Verdict>>,
    /// This instance's id in connection memos.
    memo_owner: u64,
    inflight: DashMap<TokenKey, Flight>,
}

/// `application/x-www-form-urlencoded` encoding of one value.
pub fn form_encode(s: &str, out: &mut String) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'*') {
            out.push(char::from(b));
        } else if b == b' ' {
            out.push('+');
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

struct FlightDone<'a> {
    map: &'a DashMap<TokenKey, Flight>,
    key: TokenKey,
    flight: Flight,
}

impl Drop for FlightDone<'_> {
    fn drop(&mut self) {
        self.map
            .remove_if(&self.key, |_, f| Arc::ptr_eq(f, &self.flight));
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Introspection {
    /// Authenticates the request's bearer token.
    pub async fn authenticate(&self, req: &RequestView<'_>) -> Outcome {
        let token = match bearer(req.headers) {
            Bearer::Absent => return Outcome::Absent,
            Bearer::Malformed => return Outcome::Reject(RejectReason::InvalidToken),
            Bearer::Token(t) => t,
        };
        match self.verdict(token, &req.conn.memo).await {
            Some(Verdict::Active(id)) => Outcome::Admit(id),
            Some(Verdict::Inactive) => Outcome::Reject(RejectReason::InvalidToken),
            None => Outcome::Unavailable,
        }
    }

    /// The verdict on `token`: from the connection's memo or the cache, or from one
    /// (shared) call; `None` when the endpoint cannot answer.
    pub async fn verdict(&self, token: Token<'_>, memo: &Memo) -> Option<Verdict> {
        let now = Instant::now();
        if let Some(id) = memo.get(self.memo_owner, token.bytes(), now) {
            return Some(Verdict::Active(id));
        }
        let key = token_key(token.bytes());
        if let Some((v, deadline)) = self.cache.get(&key, now) {
            if let Verdict::Active(id) = &v {
                memo.put(self.memo_owner, token.bytes(), id.clone(), deadline);
            }
            return Some(v);
        }
        let Some(token) = token.checked() else {
            // Never sent to the endpoint, and not cached.
            return Some(Verdict::Inactive);
        };
        let flight: Flight = self.inflight.entry(key).or_default().clone();
        // Removes the in-flight entry however this future ends (even if the caller is
        // cancelled), so abandoned flights cannot accumulate.
        let _done = FlightDone {
            map: &self.inflight,
            key,
            flight: flight.clone(),
        };
        // Boxed: a miss is rare, and the HTTP call's state would otherwise size every
        // request's future.
        let result = Box::pin(flight.get_or_init(|| async {
            let r = self.call(token).await;
            if let Ok((v, ttl)) = &r {
                self.cache.put(key, v.clone(), *ttl);
            }
            r.map(|(v, _)| v)
        }))
        .await
        .clone();
        result.ok()
    }

    async fn call(&self, token: &str) -> Result<(Verdict, Duration), ()> {
        match tokio::time::timeout(self.timeout, self.call_inner(token)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                tracing::warn!(auth.name = %self.name, endpoint = %self.endpoint, error = %e, "token introspection failed");
                Err(())
            }
            Err(_) => {
                tracing::warn!(auth.name = %self.name, endpoint = %self.endpoint, "token introspection timed out");
                Err(())
            }
        }
    }

    async fn call_inner(&self, token: &str) -> Result<(Verdict, Duration), CallError> {
        let mut body = String::with_capacity(token.len() + 64);
        body.push_str("token=");
        form_encode(token, &mut body);
        body.push_str("&token_type_hint=access_token");
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(self.endpoint.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json");
        match &self.auth {
            ClientAuth::Basic(v) => req = req.header(AUTHORIZATION, v.clone()),
            ClientAuth::Post { client_id, secret } => {
                body.push_str("&client_id=");
                form_encode(client_id, &mut body);
                body.push_str("&client_secret=");
                form_encode(secret.expose(), &mut body);
            }
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(CallError::Request)?;
        let resp = self.client.request(req).await.map_err(CallError::Send)?;
        if resp.status() != StatusCode::OK {
            return Err(CallError::Status(resp.status()));
        }
        let bytes = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(CallError::Body)?
            .to_bytes();
        let claims: Map<String, Value> =
            serde_json::from_slice(&bytes).map_err(CallError::NotJson)?;
        Ok(self.judge(claims, unix_now()))
    }

    /// Turns an RFC 7662 response into a verdict and how long to cache it.
    pub fn judge(&self, claims: Map<String, Value>, now: u64) -> (Verdict, Duration) {
        let inactive = (Verdict::Inactive, self.negative_cache_ttl);
        if claims.get("active") != Some(&Value::Bool(true)) {
            return inactive;
        }
        let exp = claims.get("exp").and_then(Value::as_u64);
        if exp.is_some_and(|e| e <= now) {
            return inactive;
        }
        if claims
            .get("nbf")
            .and_then(Value::as_u64)
            .is_some_and(|n| n > now)
        {
            return inactive;
        }
        if let Some(iss) = &self.issuer {
            if claims.get("iss").and_then(Value::as_str) != Some(iss.as_str()) {
                return inactive;
            }
        }
        if let Some(want) = &self.audiences {
            let ok = match claims.get("aud") {
                Some(Value::String(a)) => want.contains(a),
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(Value::as_str)
                    .any(|a| want.iter().any(|w| w == a)),
                _ => false,
            };
            if !ok {
                return inactive;
            }
        }
        let ttl = exp.map_or(self.cache_ttl, |e| {
            Duration::from_secs(e.saturating_sub(now)).min(self.cache_ttl)
        });
        let id = self.options.identity(AuthMethod::Introspection, claims);
        (Verdict::Active(Arc::new(id)), ttl)
    }

    /// The Bearer challenge.
    pub fn challenge(&self, rejected: bool) -> &HeaderValue {
        self.options.challenges.get(rejected)
    }

    /// The Bearer realm.
    pub fn realm(&self) -> &str {
        self.options.challenges.realm()
    }

    /// `Authorization` and the `forward_claims` headers.
    pub fn consumes(&self) -> Consumes {
        self.options.consumes()
    }
}

impl Settings {
    /// Reads `[authenticators.NAME]` of kind `introspection`, recording problems under `base`.
    pub fn read(
        name: &str,
        r: Raw,
        base: &str,
        ctx: &BuildContext,
        problems: &mut Problems,
    ) -> Option<Settings> {
        let before = problems.len();
        let token_keys = TokenKeys {
            realm: r.realm.clone(),
            forward_token: r.forward_token,
            forward_claims: r.forward_claims.clone(),
        };
        let options = TokenOptions::read(name, token_keys, base, problems);
        let endpoint = match &r.endpoint {
            Some(e) => crate::config::remote_url(problems, &format!("{base}.endpoint"), e, true),
            None => {
                problems.push(
                    base.to_string(),
                    "missing `endpoint` (the RFC 7662 introspection URL)",
                );
                None
            }
        };
        let client_id = r.client_id.clone().unwrap_or_default();
        if client_id.is_empty() {
            problems.push(base.to_string(), "missing `client_id`");
        }
        let src = Sources {
            inline: r.client_secret.as_ref(),
            file: r.client_secret_file.as_ref(),
            env: r.client_secret_env.as_ref(),
        };
        let secret = secret::resolve(problems, base, "client_secret", src, &ctx.config_dir, true);
        let auth = match (r.auth_method.as_deref(), secret) {
            (_, None) => None,
            (None | Some("client_secret_basic"), Some(s)) => {
                // RFC 6749 §2.3.1: form-encode both parts before Base64.
                let mut pair = String::new();
                form_encode(&client_id, &mut pair);
                pair.push(':');
                form_encode(s.expose(), &mut pair);
                let v = format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                );
                HeaderValue::from_str(&v).ok().map(|mut v| {
                    v.set_sensitive(true);
                    ClientAuth::Basic(v)
                })
            }
            (Some("client_secret_post"), Some(s)) => Some(ClientAuth::Post {
                client_id: client_id.clone(),
                secret: s,
            }),
            (Some(m), Some(_)) => {
                problems.push(
                format!("{base}.auth_method"),
                format!("unknown auth_method \"{m}\" (expected \"client_secret_basic\" or \"client_secret_post\")"),
            );
                None
            }
        };
        let ca = r.ca.as_ref().and_then(|c| {
            crate::tls::load_certs(&resolve_path(&ctx.config_dir, c))
                .map_err(|e| problems.push(format!("{base}.ca"), e.to_string()))
                .ok()
        });
        let timeout = r.timeout.map_or(Duration::from_secs(5), |d| d.0);
        let cache_ttl = r.cache_ttl.map_or(Duration::from_secs(60), |d| d.0);
        let negative_cache_ttl = r.negative_cache_ttl.map_or(Duration::from_secs(5), |d| d.0);
        if timeout.is_zero() {
            problems.push(format!("{base}.timeout"), "must be greater than 0");
        }
        let cache_size = match r.cache_size {
            None => 10_000,
            Some(n) if n > 0 => usize::try_from(n).unwrap_or(usize::MAX),
            Some(_) => {
                problems.push(format!("{base}.cache_size"), "must be greater than 0");
                1
            }
        };
        if r.audiences.as_ref().is_some_and(Vec::is_empty) {
            problems.push(
                format!("{base}.audiences"),
                "must list at least one audience (or be omitted)",
            );
        }
        if problems.len() != before {
            return None;
        }
        Some(Settings {
            endpoint: endpoint?,
            auth: auth?,
            ca,
            timeout,
            cache_ttl,
            negative_cache_ttl,
            cache_size,
            issuer: r.issuer,
            audiences: r.audiences,
            options: options?,
        })
    }

    /// The authenticator: its HTTPS client, cache and single-flight table.
    pub fn build(&self, name: &str) -> Result<Introspection, BuildError> {
        let client =
            idp_client(self.ca.as_deref(), self.timeout).map_err(|e| BuildError::at("ca", e))?;
        Ok(Introspection {
            name: name.to_string(),
            endpoint: self.endpoint.clone(),
            client,
            auth: self.auth.clone(),
            timeout: self.timeout,
            cache_ttl: self.cache_ttl,
            negative_cache_ttl: self.negative_cache_ttl,
            issuer: self.issuer.clone(),
            audiences: self.audiences.clone(),
            options: self.options.clone(),
            cache: Box::new(MemoryStore::new(self.cache_size)),
            memo_owner: owner_id(),
            inflight: DashMap::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn intro(extra: impl FnOnce(&mut Raw)) -> Introspection {
        let mut r = Raw {
            kind: "introspection".into(),
            endpoint: Some("https://idp.example.com/introspect".into()),
            client_id: Some("gw".into()),
            client_secret: Some("s3cret".into()),
            ..Default::default()
        };
        extra(&mut r);
        let ctx = BuildContext {
            config_dir: ".".into(),
            client_auth: None,
        };
        let mut p = Problems::default();
        let s = Settings::read("opaque", r, "a", &ctx, &mut p);
        assert_eq!(p.len(), 0, "{p:?}");
        s.unwrap().build("opaque").unwrap()
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn form_encodes() {
        let mut s = String::new();
        form_encode("a b+c/=&é", &mut s);
        assert_eq!(s, "a+b%2Bc%2F%3D%26%C3%A9");
    }

    #[test]
    fn active_answer_is_cached_until_exp() {
        let i = intro(|_| {});
        let (v, ttl) = i.judge(obj(json!({"active": true, "sub": "u", "exp": 1010})), 1000);
        assert!(matches!(v, Verdict::Active(_)));
        assert_eq!(ttl, Duration::from_secs(10));
        let (_, ttl) = i.judge(obj(json!({"active": true})), 1000);
        assert_eq!(ttl, Duration::from_secs(60));
    }

    #[test]
    fn inactive_or_expired_is_refused() {
        let i = intro(|_| {});
        for v in [
            json!({"active": false}),
            json!({"active": "true"}),
            json!({}),
            json!({"active": true, "exp": 999}),
        ] {
            let (v, ttl) = i.judge(obj(v), 1000);
            assert!(matches!(v, Verdict::Inactive));
            assert_eq!(ttl, Duration::from_secs(5));
        }
    }

    #[test]
    fn checks_issuer_and_audience() {
        let i = intro(|r| {
            r.issuer = Some("https://idp".into());
            r.audiences = Some(vec!["api".into()]);
        });
        let ok = json!({"active": true, "iss": "https://idp", "aud": ["x", "api"]});
        assert!(matches!(i.judge(obj(ok), 0).0, Verdict::Active(_)));
        let bad = json!({"active": true, "iss": "https://idp", "aud": "x"});
        assert!(matches!(i.judge(obj(bad), 0).0, Verdict::Inactive));
        let bad = json!({"active": true, "aud": "api"});
        assert!(matches!(i.judge(obj(bad), 0).0, Verdict::Inactive));
    }

    #[test]
    fn refuses_unknown_auth_method() {
        let r = Raw {
            kind: "introspection".into(),
            endpoint: Some("https://idp.example.com/introspect".into()),
            client_id: Some("gw".into()),
            client_secret: Some("s3cret".into()),
            auth_method: Some("private_key_jwt".into()),
            ..Default::default()
        };
        let ctx = BuildContext {
            config_dir: ".".into(),
            client_auth: None,
        };
        let mut p = Problems::default();
        assert!(Settings::read("o", r, "a", &ctx, &mut p).is_none());
        assert_eq!(p.len(), 1);
        let r = Raw {
            kind: "introspection".into(),
            endpoint: Some("https://idp.example.com/introspect".into()),
            client_id: Some("gw".into()),
            ..Default::default()
        };
        let mut p = Problems::default();
        assert!(Settings::read("o", r, "a", &ctx, &mut p).is_none());
        assert_eq!(p.len(), 1);
    }

    /// The log shows these texts.
    #[test]
    fn call_errors_keep_their_text() {
        let build = http::Request::builder().uri("\n").body(()).unwrap_err();
        assert_eq!(
            CallError::Request(build).to_string(),
            "cannot build request"
        );
        assert_eq!(
            CallError::Status(StatusCode::INTERNAL_SERVER_ERROR).to_string(),
            "endpoint answered 500 Internal Server Error"
        );
        let json = serde_json::from_slice::<Map<String, Value>>(b"[]").unwrap_err();
        let e = CallError::NotJson(json).to_string();
        assert!(e.starts_with("response is not a JSON object: "), "{e}");
    }
}
