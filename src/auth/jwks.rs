//! Signing keys for `kind = "jwt"`: a parsed key set (from a JWKS document, a PEM public
//! key or an HMAC secret) and, for `jwks_url`, its lifecycle — fetched when the snapshot
//! starts, refreshed on an interval (honouring `Cache-Control: max-age` within [1m, 24h])
//! and early when a token names an unknown `kid`.
//!
//! Invariants: symmetric (`oct`) keys in a JWKS are ignored, so a published key can never
//! become an HMAC secret; a key is only used for algorithms of its own family; early
//! refreshes are single-flight and at most one per `min_refresh_interval`, so random `kid`s
//! cannot hammer the IdP; a failed refresh keeps the previous keys; until the first fetch
//! succeeds there are no keys and requests get 503 (fail closed). The refresh task holds
//! only a `Weak` and stops when the snapshot owning the key set is dropped.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::Uri;
use http_body_util::{BodyExt, Full, Limited};
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::Notify;

use super::idp::IdpClient;
use crate::metrics::{Metrics, RefreshLabels};

/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Bounds applied to `Cache-Control: max-age`.
const MIN_MAX_AGE: Duration = Duration::from_secs(60);
const MAX_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// One verification key.
#[derive(Clone)]
pub struct KeyEntry {
    kid: Option<String>,
    alg: Option<Algorithm>,
    key: DecodingKey,
}

/// A set of verification keys.
#[derive(Clone)]
pub struct KeySet {
    keys: Vec<KeyEntry>,
}

/// Why a JWKS document yields no key set.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The document does not parse as JSON.
    #[error("JWKS is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    /// The document has no `keys` array.
    #[error("JWKS has no \"keys\" array")]
    NoKeys,
    /// Every key was skipped (symmetric, encryption-only or unparsable).
    #[error("JWKS holds no usable public signing key")]
    NoUsableKey,
}

/// Why fetching the JWKS from `jwks_url` failed; the text goes to the log.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No answer within the configured timeout.
    #[error("timed out after {0:?}")]
    TimedOut(Duration),
    /// The request could not be built.
    #[error("{0}")]
    Request(#[source] http::Error),
    /// The request could not be sent or no response arrived.
    #[error("{0}")]
    Send(#[source] hyper_util::client::legacy::Error),
    /// The endpoint answered something other than 200.
    #[error("status {0}")]
    Status(http::StatusCode),
    /// The body could not be read (or exceeded the size limit).
    #[error("reading body: {0}")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The body is not a usable JWKS.
    #[error(transparent)]
    Document(#[from] JwksError),
}

/// Result of looking a token's key up.
pub enum Lookup<'a> {
    /// The key to verify with.
    Found(&'a DecodingKey),
    /// The token names a `kid` the set does not hold.
    UnknownKid,
    /// No usable key: ambiguous (no `kid`, several keys) or wrong type for the algorithm.
    NoKey,
}

impl KeySet {
    /// A set holding one key that every token uses (`public_key_file`, `secret`).
    pub fn single(key: DecodingKey) -> Self {
        KeySet {
            keys: vec![KeyEntry {
                kid: None,
                alg: None,
                key,
            }],
        }
    }

    /// Parses a JWKS document, keeping the usable public signing keys.
    pub fn from_jwks(bytes: &[u8]) -> Result<Self, JwksError> {
        let doc: serde_json::Value = serde_json::from_slice(bytes).map_err(JwksError::NotJson)?;
        let list = doc
            .get("keys")
            .and_then(serde_json::Value::as_array)
            .ok_or(JwksError::NoKeys)?;
        let mut keys = Vec::new();
        for k in list {
            if k.get("use")
                .and_then(serde_json::Value::as_str)
                .is_some_and(|u| u != "sig")
            {
                continue;
            }
            let Ok(jwk) = serde_json::from_value::<Jwk>(k.clone()) else {
                continue;
            };
            if matches!(
                jwk.algorithm,
                AlgorithmParameters::OctetKey(_) | AlgorithmParameters::Other(_)
            ) {
                continue;
            }
            let alg = match &jwk.common.key_algorithm {
                None => None,
                Some(ka) => match serde_json::to_value(ka)
                    .ok()
                    .and_then(|v| v.as_str().and_then(|s| Algorithm::from_str(s).ok()))
                {
                    Some(a) => Some(a),
                    None => continue, // an encryption algorithm
                },
            };
            let Ok(key) = DecodingKey::from_jwk(&jwk) else {
                continue;
            };
            if alg.is_some_and(|a| a.family() != key.family()) {
                continue;
            }
            keys.push(KeyEntry {
                kid: jwk.common.key_id.clone(),
                alg,
                key,
            });
        }
        if keys.is_empty() {
            return Err(JwksError::NoUsableKey);
        }
        Ok(KeySet { keys })
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set is empty (never true for a parsed set).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Finds the key for a token with this `kid` and `alg`. A `kid` is only a lookup key: a
    /// single-key set serves tokens without one; the key type must match `alg`'s family.
    pub fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> Lookup<'_> {
        let entry = match (kid, self.keys.as_slice()) {
            (_, [only]) if only.kid.is_none() => only,
            (Some(k), keys) => match keys.iter().find(|e| e.kid.as_deref() == Some(k)) {
                Some(e) => e,
                None => return Lookup::UnknownKid,
            },
            (None, [only]) => only,
            (None, _) => return Lookup::NoKey,
        };
        if entry.key.family() != alg.family() || entry.alg.is_some_and(|a| a != alg) {
            return Lookup::NoKey;
        }
        Lookup::Found(&entry.key)
    }
}

/// The `max-age` of a `Cache-Control` value, clamped to [1m, 24h].
pub fn max_age(cache_control: Option<&http::HeaderValue>) -> Option<Duration> {
    let v = cache_control?.to_str().ok()?;
    v.split(',').find_map(|d| {
        let (k, n) = d.trim().split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("max-age") {
            return None;
        }
        let secs: u64 = n.trim().trim_matches('"').parse().ok()?;
        Some(Duration::from_secs(secs).clamp(MIN_MAX_AGE, MAX_MAX_AGE))
    })
}

/// Settings of a remote key set.
#[derive(Clone)]
pub struct RemoteSettings {
    /// Authenticator name (metric label, logs).
    pub name: String,
    /// The JWKS URL.
    pub url: Uri,
    /// Periodic refresh when the response has no `max-age`.
    pub refresh_interval: Duration,
    /// Minimum spacing of early (unknown `kid`) refreshes and of retries after a failure.
    pub min_refresh_interval: Duration,
    /// Whole-fetch timeout.
    pub timeout: Duration,
}

/// A key set fetched from `jwks_url`.
pub struct RemoteJwks {
    settings: RemoteSettings,
    client: IdpClient,
    keys: ArcSwapOption<KeySet>,
    generation: AtomicU64,
    /// The last fetch failed: the endpoint is down, so a key missing from the cached set
    /// may be one it would serve (fail closed with 503, not 401).
    failing: AtomicBool,
    /// Time of the last early refresh; the lock makes early refreshes single-flight.
    early: tokio::sync::Mutex<Option<Instant>>,
    counters: OnceLock<(Counter, Counter)>,
    started: AtomicBool,
    stop: Arc<Notify>,
}

impl Drop for RemoteJwks {
    fn drop(&mut self) {
        self.stop.notify_one();
    }
}

impl RemoteJwks {
    /// A key set with nothing loaded yet.
    pub fn new(settings: RemoteSettings, client: IdpClient) -> Self {
        RemoteJwks {
            settings,
            client,
            keys: ArcSwapOption::empty(),
            generation: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            early: tokio::sync::Mutex::new(None),
            counters: OnceLock::new(),
            started: AtomicBool::new(false),
            stop: Arc::new(Notify::new()),
        }
    }

    /// Resolves `portcullis_jwks_refresh_total` for this authenticator.
    pub fn attach(&self, metrics: &Metrics) {
        let c = |result| {
            metrics.jwks_refresh.get_or_create_owned(&RefreshLabels {
                authenticator: self.settings.name.clone(),
                result,
            })
        };
        let _ = self.counters.set((c("success"), c("failure")));
    }

    /// The current keys and the generation they belong to.
    pub fn current(&self) -> (Option<Arc<KeySet>>, u64) {
        let generation = self.generation.load(Ordering::Acquire);
        (self.keys.load_full(), generation)
    }

    /// Takes over the keys `old` (the same authenticator in the snapshot a reload
    /// replaces) holds for the same URL, so a reload neither forgets them nor waits for a
    /// fetch: an IdP that is down during a reload costs nothing. Before `start`.
    pub fn inherit(&self, old: &RemoteJwks) {
        if self.settings.url != old.settings.url || self.loaded() {
            return;
        }
        let (keys, _) = old.current();
        if let Some(keys) = keys {
            self.keys.store(Some(keys));
            self.generation.fetch_add(1, Ordering::AcqRel);
            self.failing.store(old.failing(), Ordering::Release);
        }
    }

    /// Whether the last fetch failed (the endpoint is down or answers garbage).
    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::Acquire)
    }

    /// Whether keys have been loaded.
    pub fn loaded(&self) -> bool {
        self.keys.load().is_some()
    }

    /// Fetches the JWKS once; on success installs it and returns the next refresh delay.
    pub async fn fetch(&self) -> Result<Duration, FetchError> {
        let r = tokio::time::timeout(self.settings.timeout, self.fetch_inner()).await;
        let r = r.unwrap_or(Err(FetchError::TimedOut(self.settings.timeout)));
        let (ok, fail) = match self.counters.get() {
            Some((s, f)) => (Some(s), Some(f)),
            None => (None, None),
        };
        self.failing.store(r.is_err(), Ordering::Release);
        match &r {
            Ok(_) => {
                ok.map(Counter::inc);
            }
            Err(e) => {
                fail.map(Counter::inc);
                tracing::warn!(auth.name = %self.settings.name, url = %self.settings.url, error = %e, "JWKS fetch failed; keeping previous keys");
            }
        }
        r
    }

    async fn fetch_inner(&self) -> Result<Duration, FetchError> {
        let req = http::Request::get(self.settings.url.clone())
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(FetchError::Request)?;
        let resp = self.client.request(req).await.map_err(FetchError::Send)?;
        if resp.status() != http::StatusCode::OK {
            return Err(FetchError::Status(resp.status()));
        }
        let next = max_age(resp.headers().get(http::header::CACHE_CONTROL))
            .unwrap_or(self.settings.refresh_interval);
        let body = Limited::new(resp.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(FetchError::Body)?
            .to_bytes();
        let set = KeySet::from_jwks(&body)?;
        tracing::info!(auth.name = %self.settings.name, keys = set.len(), "JWKS loaded");
        self.keys.store(Some(Arc::new(set)));
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(next)
    }

    /// Early refresh for a token naming an unknown `kid` (or arriving before any keys):
    /// single-flight and rate-limited. Returns whether keys newer than `seen` exist.
    pub async fn refresh_early(&self, seen: u64) -> bool {
        let mut last = self.early.lock().await;
        if self.generation.load(Ordering::Acquire) != seen {
            return true;
        }
        if last.is_some_and(|t| t.elapsed() < self.settings.min_refresh_interval) {
            return false;
        }
        *last = Some(Instant::now());
        self.fetch().await.is_ok()
    }

    /// Starts the fetch-and-refresh loop (once); it ends when `self` is dropped.
    pub fn start(self: &Arc<Self>) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak: Weak<Self> = Arc::downgrade(self);
        let stop = self.stop.clone();
        tokio::spawn(async move {
            loop {
                let Some(me) = weak.upgrade() else { return };
                let retry = me
                    .settings
                    .min_refresh_interval
                    .max(Duration::from_secs(1))
                    .min(me.settings.refresh_interval);
                let wait = me.fetch().await.unwrap_or(retry);
                drop(me);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.notified() => return,
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EC_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
    const EC_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";

    fn jwks(keys: &str) -> Vec<u8> {
        format!("{{\"keys\":[{keys}]}}").into_bytes()
    }

    fn ec(kid: &str) -> String {
        format!(
            "{{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"{EC_X}\",\"y\":\"{EC_Y}\",\"kid\":\"{kid}\"}}"
        )
    }

    #[test]
    fn ignores_symmetric_and_encryption_keys() {
        let doc = jwks(&format!(
            "{{\"kty\":\"oct\",\"k\":\"c2VjcmV0\",\"kid\":\"h\"}},{{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"{EC_X}\",\"y\":\"{EC_Y}\",\"use\":\"enc\"}},{},{{\"kty\":\"weird\"}}",
            ec("a")
        ));
        let set = KeySet::from_jwks(&doc).unwrap();
        assert_eq!(set.len(), 1);
        assert!(KeySet::from_jwks(&jwks("{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"}")).is_err());
        assert!(KeySet::from_jwks(b"[]").is_err());
    }

    #[test]
    fn looks_keys_up_by_kid() {
        let set = KeySet::from_jwks(&jwks(&format!("{},{}", ec("a"), ec("b")))).unwrap();
        assert!(matches!(
            set.lookup(Some("a"), Algorithm::ES256),
            Lookup::Found(_)
        ));
        assert!(matches!(
            set.lookup(Some("z"), Algorithm::ES256),
            Lookup::UnknownKid
        ));
        assert!(matches!(set.lookup(None, Algorithm::ES256), Lookup::NoKey));
        assert!(matches!(
            set.lookup(Some("a"), Algorithm::RS256),
            Lookup::NoKey
        ));
        assert!(matches!(
            set.lookup(Some("a"), Algorithm::HS256),
            Lookup::NoKey
        ));
    }

    #[test]
    fn single_key_serves_tokens_without_kid() {
        let set = KeySet::from_jwks(&jwks(&ec("a"))).unwrap();
        assert!(matches!(
            set.lookup(None, Algorithm::ES256),
            Lookup::Found(_)
        ));
        let set = KeySet::single(DecodingKey::from_secret(b"k"));
        assert!(matches!(
            set.lookup(Some("x"), Algorithm::HS256),
            Lookup::Found(_)
        ));
        assert!(matches!(set.lookup(None, Algorithm::RS256), Lookup::NoKey));
    }

    #[test]
    fn clamps_max_age() {
        let v = |s: &'static str| max_age(Some(&http::HeaderValue::from_static(s)));
        assert_eq!(v("public, max-age=600"), Some(Duration::from_secs(600)));
        assert_eq!(v("max-age=1"), Some(MIN_MAX_AGE));
        assert_eq!(v("max-age=99999999"), Some(MAX_MAX_AGE));
        assert_eq!(v("no-cache"), None);
        assert_eq!(max_age(None), None);
    }

    /// The texts reach the log and, through a `jwks_file`, config problems.
    #[test]
    fn errors_keep_their_text() {
        let e = |b: &[u8]| KeySet::from_jwks(b).err().map(|e| e.to_string());
        assert!(e(b"{").is_some_and(|m| m.starts_with("JWKS is not JSON: ")));
        assert_eq!(e(b"[]").as_deref(), Some("JWKS has no \"keys\" array"));
        assert_eq!(
            e(&jwks("{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"}")).as_deref(),
            Some("JWKS holds no usable public signing key")
        );
        assert_eq!(
            FetchError::TimedOut(Duration::from_millis(1500)).to_string(),
            "timed out after 1.5s"
        );
        assert_eq!(
            FetchError::Status(http::StatusCode::NOT_FOUND).to_string(),
            "status 404 Not Found"
        );
        assert_eq!(
            FetchError::from(JwksError::NoKeys).to_string(),
            "JWKS has no \"keys\" array"
        );
    }
}
