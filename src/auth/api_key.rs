//! `kind = "api_key"`: a static key in a header (default `X-API-Key`) or, with
//! `query = "name"`, in that query parameter.
//!
//! Place in the request path: the pipeline calls [`ApiKey::authenticate`]; the gateway
//! strips the header or query parameter named by [`ApiKey::consumes`] before forwarding,
//! and sets `X-Auth-Subject` to the key's `id` and `X-Auth-Scopes` to its scopes.
//!
//! Security invariants:
//!
//! * Keys are stored only as SHA-256 digests (`sha256:<64 hex>` in the config). A
//!   presented key is hashed once, looked up by digest, and the digest is compared again
//!   in constant time (`subtle`), so neither the map nor the compare leaks key bytes.
//! * Lockout is checked before the key is hashed. Every present-but-wrong key (unknown,
//!   expired, malformed, repeated) counts against the client IP; there is no per-name
//!   counter because an unknown key has no `id` (see `throttle.rs`).
//! * Expired keys are refused (401). No challenge header is sent (SPEC).
//! * No type here derives `Debug`.

use std::collections::HashMap;
use std::sync::Arc;

use http::HeaderName;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::throttle::Throttle;
use super::{AuthMethod, Identity, Outcome, RejectReason, RequestView};
use crate::config::Problems;

/// `[authenticators.NAME]` of kind `api_key`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    /// Always `"api_key"`.
    pub kind: String,
    /// Header carrying the key (default `X-API-Key`).
    pub header: Option<String>,
    /// Query parameter carrying the key, instead of a header.
    pub query: Option<String>,
    /// The accepted keys.
    pub keys: Option<Vec<RawKey>>,
}

/// One entry of `keys = [...]`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    /// What the key is admitted as.
    pub id: String,
    /// `sha256:<64 hex>` of the key.
    pub hash: String,
    /// Scopes the key grants.
    pub scopes: Option<Vec<String>>,
    /// RFC 3339 time after which the key is refused.
    pub expires: Option<String>,
}

/// `kind = "api_key"`, checked: where the key travels and each key's digest.
pub struct Settings {
    source: Source,
    keys: HashMap<[u8; 32], Entry>,
}

/// Longest accepted key.
const MAX_KEY_LEN: usize = 1024;

/// Where the key travels.
#[derive(Clone)]
enum Source {
    Header(HeaderName),
    Query(String),
}

/// One configured key.
#[derive(Clone)]
struct Entry {
    digest: [u8; 32],
    /// What the key is admitted as (`id`, `scopes`).
    identity: Arc<Identity>,
    expires: Option<OffsetDateTime>,
}

/// The API-key authenticator.
pub struct ApiKey {
    source: Source,
    keys: HashMap<[u8; 32], Entry>,
}

fn identity(id: &str, scopes: Vec<String>) -> Arc<Identity> {
    Arc::new(Identity::new(AuthMethod::ApiKey, id).with_scopes(Arc::from(scopes)))
}

/// Why a configured key hash is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HashError {
    /// The value does not start with `sha256:`.
    #[error("must be `sha256:<64 hex digits>` (see `portcullis gen-api-key`)")]
    Prefix,
    /// What follows `sha256:` is not 64 hex digits.
    #[error("must be `sha256:` followed by exactly 64 hex digits")]
    Digest,
}

/// Why `ApiKey::from_hashes` could not build the authenticator.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The header name is not a valid HTTP header name.
    #[error("{0}")]
    Header(#[source] http::header::InvalidHeaderName),
    /// A key hash is refused.
    #[error("{0}")]
    Hash(#[source] HashError),
}

/// Parses `sha256:<64 hex>` into a digest.
pub fn parse_hash(s: &str) -> Result<[u8; 32], HashError> {
    let hexpart = s.strip_prefix("sha256:").ok_or(HashError::Prefix)?;
    let mut out = [0u8; 32];
    if hexpart.len() != 64 || hex::decode_to_slice(hexpart, &mut out).is_err() {
        return Err(HashError::Digest);
    }
    Ok(out)
}

/// What the request carries.
enum Found {
    Absent,
    Malformed,
    Key(Vec<u8>),
}

impl Settings {
    /// Reads `[authenticators.NAME]` of kind api_key, recording problems under `base`.
    pub fn read(r: Raw, base: &str, problems: &mut Problems) -> Option<Settings> {
        let before = problems.len();
        let source = match (&r.header, &r.query) {
            (Some(_), Some(_)) => {
                problems.push(
                    format!("{base}.query"),
                    "give either `header` or `query`, not both",
                );
                None
            }
            (_, Some(q)) => {
                if q.is_empty() || q.contains(['&', '=', '#', ' ', '%', '+']) {
                    problems.push(
                        format!("{base}.query"),
                        format!("invalid query parameter name \"{q}\""),
                    );
                    None
                } else {
                    Some(Source::Query(q.clone()))
                }
            }
            (h, None) => {
                let h = h.as_deref().unwrap_or("X-API-Key");
                match HeaderName::from_bytes(h.as_bytes()) {
                    Ok(n) if n != http::header::AUTHORIZATION && n != http::header::HOST => {
                        Some(Source::Header(n))
                    }
                    _ => {
                        problems.push(
                            format!("{base}.header"),
                            format!("invalid header name \"{h}\""),
                        );
                        None
                    }
                }
            }
        };
        let mut keys = HashMap::new();
        match &r.keys {
            None => problems.push(
                base.to_string(),
                "kind \"api_key\" needs `keys = [{ id = \"...\", hash = \"sha256:...\" }]`",
            ),
            Some(list) if list.is_empty() => {
                problems.push(format!("{base}.keys"), "no keys: add at least one")
            }
            Some(list) => {
                for (i, k) in list.iter().enumerate() {
                    let kb = format!("{base}.keys[{i}]");
                    if k.id.is_empty() || http::HeaderValue::from_str(&k.id).is_err() {
                        problems.push(format!("{kb}.id"), "must be non-empty printable text");
                    }
                    let digest = match parse_hash(&k.hash) {
                        Ok(d) => d,
                        Err(e) => {
                            problems.push(format!("{kb}.hash"), e.to_string());
                            continue;
                        }
                    };
                    let expires = match &k.expires {
                        None => None,
                        Some(s) => match OffsetDateTime::parse(s, &Rfc3339) {
                            Ok(t) => Some(t),
                            Err(_) => {
                                problems.push(
                                    format!("{kb}.expires"),
                                    format!("\"{s}\" is not an RFC 3339 time such as 2027-06-30T00:00:00Z"),
                                );
                                continue;
                            }
                        },
                    };
                    let scopes = k.scopes.clone().unwrap_or_default();
                    if let Some(s) = scopes
                        .iter()
                        .find(|s| s.is_empty() || s.contains(char::is_whitespace))
                    {
                        problems.push(
                            format!("{kb}.scopes"),
                            format!("invalid scope \"{s}\" (no spaces)"),
                        );
                    }
                    if keys.contains_key(&digest) {
                        problems.push(format!("{kb}.hash"), "the same key is configured twice");
                        continue;
                    }
                    keys.insert(
                        digest,
                        Entry {
                            digest,
                            identity: identity(&k.id, scopes),
                            expires,
                        },
                    );
                }
            }
        }
        if problems.len() != before {
            return None;
        }
        Some(Settings {
            source: source?,
            keys,
        })
    }

    /// The authenticator.
    pub fn build(&self) -> ApiKey {
        ApiKey {
            source: self.source.clone(),
            keys: self.keys.clone(),
        }
    }
}

impl ApiKey {
    /// Builds a header-based authenticator from `(id, sha256:hex, scopes)` (benches, tests).
    pub fn from_hashes(
        header: &str,
        keys: &[(String, String, Vec<String>)],
    ) -> Result<ApiKey, SetupError> {
        let name = HeaderName::from_bytes(header.as_bytes()).map_err(SetupError::Header)?;
        let mut map = HashMap::with_capacity(keys.len());
        for (id, hash, scopes) in keys {
            let digest = parse_hash(hash).map_err(SetupError::Hash)?;
            map.insert(
                digest,
                Entry {
                    digest,
                    identity: identity(id, scopes.clone()),
                    expires: None,
                },
            );
        }
        Ok(ApiKey {
            source: Source::Header(name),
            keys: map,
        })
    }

    /// Header or query parameter the gateway must strip: `(headers, query)`.
    pub fn consumes(&self) -> (Vec<HeaderName>, Vec<String>) {
        match &self.source {
            Source::Header(h) => (vec![h.clone()], Vec::new()),
            Source::Query(q) => (Vec::new(), vec![q.clone()]),
        }
    }

    fn find(&self, req: &RequestView<'_>) -> Found {
        let value = match &self.source {
            Source::Header(name) => {
                let mut all = req.headers.get_all(name).iter();
                let Some(v) = all.next() else {
                    return Found::Absent;
                };
                if all.next().is_some() {
                    return Found::Malformed;
                }
                v.as_bytes().trim_ascii().to_vec()
            }
            Source::Query(name) => {
                let Some(q) = req.uri.query() else {
                    return Found::Absent;
                };
                let mut hits = crate::query::pairs(q).filter_map(|(k, v)| (k == name).then_some(v));
                let Some(v) = hits.next() else {
                    return Found::Absent;
                };
                if hits.next().is_some() {
                    return Found::Malformed;
                }
                match crate::query::percent_decode(v) {
                    Some(v) => v,
                    None => return Found::Malformed,
                }
            }
        };
        if value.is_empty() || value.len() > MAX_KEY_LEN {
            return Found::Malformed;
        }
        Found::Key(value)
    }

    /// The lookup alone: the matching key's id when `key` is configured and not expired.
    pub fn lookup(&self, key: &[u8]) -> Option<&str> {
        match self.check(key, OffsetDateTime::now_utc()) {
            Ok(e) => Some(e.identity.subject.as_str()),
            Err(_) => None,
        }
    }

    fn check(&self, key: &[u8], now: OffsetDateTime) -> Result<&Entry, RejectReason> {
        let digest: [u8; 32] = Sha256::digest(key).into();
        let entry = self.keys.get(&digest).ok_or(RejectReason::Invalid)?;
        if !bool::from(entry.digest.ct_eq(&digest)) {
            return Err(RejectReason::Invalid);
        }
        if entry.expires.is_some_and(|t| now >= t) {
            return Err(RejectReason::Expired);
        }
        Ok(entry)
    }

    /// Checks one request.
    pub fn authenticate(&self, req: &RequestView<'_>) -> Outcome {
        let found = self.find(req);
        if matches!(found, Found::Absent) {
            return Outcome::Absent;
        }
        let throttle = Throttle::new(&*req.services.failures, req.lockout, req.client_ip);
        if let Some(d) = throttle.check(None) {
            return Outcome::Locked(d);
        }
        let Found::Key(key) = found else {
            throttle.failure(None);
            return Outcome::Reject(RejectReason::Invalid);
        };
        match self.check(&key, OffsetDateTime::now_utc()) {
            Ok(e) => Outcome::Admit(e.identity.clone()),
            Err(reason) => {
                throttle.failure(None);
                if reason == RejectReason::Expired {
                    let digest: [u8; 32] = Sha256::digest(&key).into();
                    if let Some(e) = self.keys.get(&digest) {
                        let _ = req.attempted.set(e.identity.subject.as_str().into());
                    }
                }
                Outcome::Reject(reason)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_sha256_hex() {
        let (_, h) = crate::credentials::new_api_key("pk");
        assert!(parse_hash(&h).is_ok());
        assert!(parse_hash(&h.to_uppercase().replace("SHA256:", "sha256:")).is_ok());
        assert!(parse_hash(h.trim_start_matches("sha256:")).is_err());
        assert!(parse_hash(&format!("{h}0")).is_err());
        assert!(parse_hash(&h[..h.len() - 1]).is_err());
        assert!(parse_hash("sha512:abcd").is_err());
        assert!(parse_hash(&format!("sha256:{}", "g".repeat(64))).is_err());
    }

    #[test]
    fn looks_up_by_digest_and_rejects_near_misses() {
        let (key, hash) = crate::credentials::new_api_key("pk");
        let a =
            ApiKey::from_hashes("x-api-key", &[("acme".into(), hash, vec!["r".into()])]).unwrap();
        assert_eq!(a.lookup(key.as_bytes()), Some("acme"));
        let mut changed = key.clone().into_bytes();
        if let Some(b) = changed.last_mut() {
            *b = if *b == b'A' { b'B' } else { b'A' };
        }
        assert_eq!(a.lookup(&changed), None);
        assert_eq!(a.lookup(&key.as_bytes()[..key.len() - 1]), None);
        assert_eq!(a.lookup(format!("{key}x").as_bytes()), None);
        assert_eq!(a.lookup(format!("x{key}").as_bytes()), None);
    }

    #[test]
    fn expired_keys_are_rejected_as_expired() {
        let (key, hash) = crate::credentials::new_api_key("");
        let mut a = ApiKey::from_hashes("x-api-key", &[("acme".into(), hash, vec![])]).unwrap();
        for e in a.keys.values_mut() {
            e.expires = Some(OffsetDateTime::parse("2020-01-01T00:00:00Z", &Rfc3339).unwrap());
        }
        assert!(matches!(
            a.check(key.as_bytes(), OffsetDateTime::now_utc()),
            Err(RejectReason::Expired)
        ));
        let before = OffsetDateTime::parse("2019-12-31T23:59:59Z", &Rfc3339).unwrap();
        assert!(a.check(key.as_bytes(), before).is_ok());
    }

    /// Each refusal's text, byte for byte: it is the config problem users read.
    #[test]
    fn refusals_keep_their_text() {
        assert_eq!(
            parse_hash("md5:00").unwrap_err().to_string(),
            "must be `sha256:<64 hex digits>` (see `portcullis gen-api-key`)"
        );
        assert_eq!(
            parse_hash("sha256:00").unwrap_err().to_string(),
            "must be `sha256:` followed by exactly 64 hex digits"
        );
        let keys = [("acme".to_string(), "sha256:00".to_string(), vec![])];
        let e = ApiKey::from_hashes("x-api-key", &keys)
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("must be `sha256:` followed by exactly 64 hex digits")
        );
        let e = ApiKey::from_hashes("bad header", &[])
            .err()
            .map(|e| e.to_string());
        assert_eq!(e.as_deref(), Some("invalid HTTP header name"));
    }
}
