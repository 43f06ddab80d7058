//! `kind = "jwt"`: verifies `Authorization: Bearer` JWTs against keys from `jwks_url`,
//! `jwks_file`, `public_key_file` or an HMAC `secret`, then grants the token's subject,
//! scopes and claims.
//!
//! Invariants: exactly one key source; the `algorithms` allow-list never holds `none` and
//! only holds algorithms of the key source's type (HS* only with a secret, asymmetric ones
//! only with public keys), and a token's `alg` must be on it and match the type of the key
//! its `kid` selects — so an RS256 public key can never be used as an HMAC secret. `exp`
//! is required; `nbf`, `iss` and `aud` are checked with `leeway`. Tokens over 8 KiB are
//! refused unparsed. Verified tokens are cached by SHA-256 until min(`exp`, 5m).
//!
//! Defaults: `algorithms` = `["HS256"]` with a secret; the key's own type with
//! `public_key_file` (RS256, ES256/ES384 by curve, EdDSA); `["RS256", "ES256"]` with a
//! JWKS. `leeway` 30s, `refresh_interval` 5m, `min_refresh_interval` 10s, `timeout` 5s,
//! `cache_size` 10000.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::header::{HeaderName, HeaderValue};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use rustls::pki_types::CertificateDer;
use serde_json::{Map, Value};

use super::bearer::{Bearer, MAX_TOKEN_BYTES, Token, TokenKeys, TokenOptions, bearer};
use super::idp::idp_client;
use super::jwks::{KeySet, Lookup, RemoteJwks, RemoteSettings};
use super::memo::{Memo, owner_id};
use super::token_cache::{MemoryStore, TokenStore, token_key};
use super::{
    AuthMethod, BuildContext, BuildError, Consumes, Identity, Outcome, RejectReason, RequestView,
};
use crate::config::secret::{self, Sources};
use crate::config::units::Dur;
use crate::config::{Problems, resolve_path};

/// Longest a verified token stays cached.
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(300);
/// Shortest HMAC secret accepted (RFC 7518 §3.2: at least the hash size).
const MIN_SECRET_BYTES: usize = 32;

/// `[authenticators.NAME]` of kind `jwt`.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    /// Always `"jwt"`.
    pub kind: String,
    pub realm: Option<String>,
    pub issuer: Option<String>,
    pub audiences: Option<Vec<String>>,
    pub jwks_url: Option<String>,
    pub jwks_file: Option<String>,
    pub public_key_file: Option<String>,
    pub secret: Option<String>,
    pub secret_file: Option<String>,
    pub secret_env: Option<String>,
    pub ca: Option<String>,
    pub algorithms: Option<Vec<String>>,
    pub leeway: Option<Dur>,
    pub refresh_interval: Option<Dur>,
    pub min_refresh_interval: Option<Dur>,
    pub timeout: Option<Dur>,
    pub forward_token: Option<bool>,
    pub forward_claims: Option<BTreeMap<String, String>>,
    pub cache_size: Option<i64>,
    /// Read the token from this header, without a scheme, instead of `Authorization`.
    pub token_header: Option<String>,
    /// `"authorization"`: the token's `pay` claim must be the SHA-256 of the request's
    /// `Authorization` value (an app token bound to the user credential beside it).
    pub bind: Option<String>,
}

/// `kind = "jwt"`, checked: the key source with its key material loaded, one validation
/// per algorithm family on the allow-list, and the shared token options.
pub struct Settings {
    keys: KeySource,
    validations: Vec<Validation>,
    options: TokenOptions,
    cache_size: usize,
    token_header: Option<HeaderName>,
    bind_authorization: bool,
}

/// Where the keys come from, before anything is fetched.
enum KeySource {
    /// `jwks_file`, `public_key_file` or a secret: the keys themselves.
    Static(KeySet),
    /// `jwks_url`: where and how to fetch, and the roots to trust (`ca`).
    Remote(RemoteSettings, Option<Vec<CertificateDer<'static>>>),
}

/// Where keys come from.
pub enum Keys {
    /// `jwks_file`, `public_key_file` or a secret.
    Static(KeySet),
    /// `jwks_url`.
    Remote(Arc<RemoteJwks>),
}

/// The JWT authenticator. Holds key material: no `Debug`.
pub struct Jwt {
    /// Where the token travels: `None` is `Authorization: Bearer`.
    token_header: Option<HeaderName>,
    /// The token's `pay` must be base64url(SHA-256(`Authorization`)).
    bind_authorization: bool,
    keys: Keys,
    /// One validation per algorithm family on the allow-list (jsonwebtoken requires a
    /// validation's algorithms to share the key's family).
    validations: Vec<Validation>,
    options: TokenOptions,
    cache: Box<dyn TokenStore<Arc<Identity>>>,
    /// This instance's id in connection memos.
    memo_owner: u64,
}

fn reject() -> Outcome {
    Outcome::Reject(RejectReason::InvalidToken)
}

/// Whether the token's `pay` claim is base64url(SHA-256(the request's one `Authorization`
/// value)), compared in constant time.
fn bound(id: &Identity, headers: &http::HeaderMap) -> bool {
    use base64::Engine as _;
    use sha2::Digest as _;
    use subtle::ConstantTimeEq as _;
    let mut all = headers.get_all(http::header::AUTHORIZATION).iter();
    let (Some(auth), None) = (all.next(), all.next()) else {
        return false;
    };
    let Some(pay) = id
        .claims
        .as_ref()
        .and_then(|c| c.get("pay"))
        .and_then(Value::as_str)
    else {
        return false;
    };
    let want = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(auth.as_bytes()));
    bool::from(want.as_bytes().ct_eq(pay.as_bytes()))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Jwt {
    /// Verifies the request's token (bearer, or from `token_header`), and its binding.
    pub async fn authenticate(&self, req: &RequestView<'_>) -> Outcome {
        let token = match &self.token_header {
            None => match bearer(req.headers) {
                Bearer::Absent => return Outcome::Absent,
                Bearer::Malformed => return reject(),
                Bearer::Token(t) => t,
            },
            Some(name) => {
                let mut all = req.headers.get_all(name).iter();
                let (Some(v), None) = (all.next(), all.next()) else {
                    return if req.headers.contains_key(name) {
                        reject()
                    } else {
                        Outcome::Absent
                    };
                };
                match v.to_str().map(str::trim) {
                    Ok(t) if !t.is_empty() && t.len() <= MAX_TOKEN_BYTES => Token::from(t),
                    _ => return reject(),
                }
            }
        };
        let outcome = self.authenticate_token(token, &req.conn.memo).await;
        match outcome {
            Outcome::Admit(id) if self.bind_authorization && !bound(&id, req.headers) => {
                tracing::debug!("jwt rejected: pay does not bind the Authorization header");
                reject()
            }
            other => other,
        }
    }

    /// Verifies one bearer token: the connection's memo, then the cache, then the keys.
    pub async fn authenticate_token(&self, token: Token<'_>, memo: &Memo) -> Outcome {
        let now = Instant::now();
        if let Some(id) = memo.get(self.memo_owner, token.bytes(), now) {
            return Outcome::Admit(id);
        }
        let key = token_key(token.bytes());
        if let Some((id, deadline)) = self.cache.get(&key, now) {
            memo.put(self.memo_owner, token.bytes(), id.clone(), deadline);
            return Outcome::Admit(id);
        }
        let Some(token) = token.checked() else {
            return reject();
        };
        let Ok(header) = jsonwebtoken::decode_header(token) else {
            return reject();
        };
        // No header extension is understood: one the issuer marks critical means the
        // token must not be accepted (RFC 7515 §4.1.11).
        if header.crit.is_some() {
            tracing::debug!("jwt rejected: critical header extension not understood");
            return reject();
        }
        let Some(validation) = self
            .validations
            .iter()
            .find(|v| v.algorithms.contains(&header.alg))
        else {
            return reject();
        };
        let kid = header.kid.as_deref();
        let claims = match &self.keys {
            Keys::Static(set) => match set.lookup(kid, header.alg) {
                Lookup::Found(k) => verify(token, k, validation),
                Lookup::UnknownKid | Lookup::NoKey => None,
            },
            Keys::Remote(remote) => {
                let (mut set, mut generation) = remote.current();
                if set.is_none() {
                    // Boxed (here and below): fetching is rare, and its HTTP state would
                    // otherwise size every request's future.
                    Box::pin(remote.refresh_early(generation)).await;
                    (set, generation) = remote.current();
                }
                let Some(mut set) = set else {
                    return Outcome::Unavailable;
                };
                if matches!(set.lookup(kid, header.alg), Lookup::UnknownKid)
                    && Box::pin(remote.refresh_early(generation)).await
                {
                    if let (Some(s), _) = remote.current() {
                        set = s;
                    }
                }
                match set.lookup(kid, header.alg) {
                    Lookup::Found(k) => verify(token, k, validation),
                    // The key may be one the endpoint serves now, and it cannot be asked.
                    Lookup::UnknownKid if remote.failing() => return Outcome::Unavailable,
                    Lookup::UnknownKid | Lookup::NoKey => None,
                }
            }
        };
        let Some(claims) = claims else {
            return reject();
        };
        let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
        let ttl = Duration::from_secs(exp.saturating_sub(unix_now())).min(MAX_CACHE_TTL);
        let id = Arc::new(self.options.identity(AuthMethod::Jwt, claims));
        self.cache.put(key, id.clone(), ttl);
        Outcome::Admit(id)
    }

    /// The Bearer challenge.
    pub fn challenge(&self, rejected: bool) -> &HeaderValue {
        self.options.challenges.get(rejected)
    }

    /// The Bearer realm.
    pub fn realm(&self) -> &str {
        self.options.challenges.realm()
    }

    /// The header the token travels in (`Authorization`, or `token_header`) and the
    /// `forward_claims` headers.
    pub fn consumes(&self) -> Consumes {
        let mut c = self.options.consumes();
        if let (Some(h), Some(first)) = (&self.token_header, c.headers.first_mut()) {
            *first = h.clone();
        }
        c
    }

    /// The `forward_claims` headers (set by the gateway, so stripped on every route).
    pub fn sets_headers(&self) -> Vec<HeaderName> {
        self.options
            .forward_claims
            .iter()
            .map(|(_, h)| h.clone())
            .collect()
    }

    /// Err until a `jwks_url` has loaded keys.
    pub fn ready(&self) -> Result<(), super::NotReady> {
        match &self.keys {
            Keys::Remote(r) if !r.loaded() => Err(super::NotReady::JwksNotLoaded),
            _ => Ok(()),
        }
    }

    /// Takes over the keys the authenticator of the same name fetched in the snapshot a
    /// reload replaces (same `jwks_url`).
    pub fn inherit(&self, old: &Jwt) {
        if let (Keys::Remote(new), Keys::Remote(old)) = (&self.keys, &old.keys) {
            new.inherit(old);
        }
    }

    /// Starts the JWKS refresh loop, if any.
    pub fn start(&self) {
        if let Keys::Remote(r) = &self.keys {
            r.start();
        }
    }

    /// Resolves metric handles.
    pub fn attach(&self, metrics: &crate::metrics::Metrics) {
        if let Keys::Remote(r) = &self.keys {
            r.attach(metrics);
        }
    }
}

/// Verifies signature and claims; the caller has matched the key to the algorithm.
fn verify(token: &str, key: &DecodingKey, validation: &Validation) -> Option<Map<String, Value>> {
    match jsonwebtoken::decode::<Map<String, Value>>(token, key, validation) {
        Ok(data) => Some(data.claims),
        Err(e) => {
            tracing::debug!(reason = ?e.kind(), "jwt rejected");
            None
        }
    }
}

/// Parses `algorithms`, refusing `none` and unknown names.
fn parse_algorithms(problems: &mut Problems, base: &str, list: &[String]) -> Vec<Algorithm> {
    let mut out = Vec::new();
    if list.is_empty() {
        problems.push(
            format!("{base}.algorithms"),
            "must list at least one algorithm",
        );
    }
    for (i, a) in list.iter().enumerate() {
        let path = format!("{base}.algorithms[{i}]");
        if a.eq_ignore_ascii_case("none") {
            problems.push(
                path,
                "\"none\" is never accepted: unsigned tokens would admit anyone",
            );
            continue;
        }
        match Algorithm::from_str(a) {
            Ok(alg) if !out.contains(&alg) => out.push(alg),
            Ok(_) => {}
            Err(_) => problems.push(
                path,
                format!("unknown algorithm \"{a}\" (expected HS256/384/512, RS256/384/512, PS256/384/512, ES256/384 or EdDSA)"),
            ),
        }
    }
    out
}

/// A `public_key_file` that holds no public key this authenticator can use.
#[derive(Debug, thiserror::Error)]
#[error("not a PEM public key (RSA, EC P-256/P-384 or Ed25519 \"PUBLIC KEY\")")]
struct NotPublicKey;

/// Reads a PEM public key (RSA, EC or Ed25519) and the default algorithm for it.
fn read_public_key(pem: &[u8]) -> Result<(DecodingKey, Algorithm), NotPublicKey> {
    if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
        return Ok((k, Algorithm::RS256));
    }
    if let Ok(k) = DecodingKey::from_ec_pem(pem) {
        // Uncompressed point: 65 bytes on P-256, 97 on P-384.
        let alg = match k.try_get_as_bytes().map(<[u8]>::len) {
            Ok(97) => Algorithm::ES384,
            _ => Algorithm::ES256,
        };
        return Ok((k, alg));
    }
    if let Ok(k) = DecodingKey::from_ed_pem(pem) {
        return Ok((k, Algorithm::EdDSA));
    }
    Err(NotPublicKey)
}

fn family_name(f: AlgorithmFamily) -> &'static str {
    match f {
        AlgorithmFamily::Hmac => "HMAC",
        AlgorithmFamily::Rsa => "RSA",
        AlgorithmFamily::Ec => "EC",
        AlgorithmFamily::Ed => "Ed25519",
    }
}

impl Settings {
    /// Reads `[authenticators.NAME]` of kind `jwt`, recording problems under `base`.
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
        let has_secret = r.secret.is_some() || r.secret_file.is_some() || r.secret_env.is_some();
        let sources = [
            r.jwks_url.is_some(),
            r.jwks_file.is_some(),
            r.public_key_file.is_some(),
            has_secret,
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if sources != 1 {
            problems.push(
            base.to_string(),
            "give exactly one key source: `jwks_url`, `jwks_file`, `public_key_file` or `secret` (`secret_file` / `secret_env`)",
        );
            return None;
        }
        if r.ca.is_some() && r.jwks_url.is_none() {
            problems.push(format!("{base}.ca"), "`ca` only applies with `jwks_url`");
        }
        for (key, set) in [
            ("refresh_interval", r.refresh_interval.is_some()),
            ("min_refresh_interval", r.min_refresh_interval.is_some()),
            ("timeout", r.timeout.is_some()),
        ] {
            if set && r.jwks_url.is_none() {
                problems.push(
                    format!("{base}.{key}"),
                    format!("`{key}` only applies with `jwks_url`"),
                );
            }
        }
        let listed = r
            .algorithms
            .as_ref()
            .map(|l| parse_algorithms(problems, base, l));

        let (keys, defaults): (Option<KeySource>, Vec<Algorithm>) = if has_secret {
            let src = Sources {
                inline: r.secret.as_ref(),
                file: r.secret_file.as_ref(),
                env: r.secret_env.as_ref(),
            };
            let s = secret::resolve(problems, base, "secret", src, &ctx.config_dir, true);
            let keys = s.and_then(|s| {
                if s.expose().len() < MIN_SECRET_BYTES {
                    problems.push(
                        format!("{base}.secret"),
                        format!(
                            "HMAC secret is too short: use at least {MIN_SECRET_BYTES} random bytes"
                        ),
                    );
                    None
                } else {
                    Some(KeySource::Static(KeySet::single(DecodingKey::from_secret(
                        s.expose().as_bytes(),
                    ))))
                }
            });
            (keys, vec![Algorithm::HS256])
        } else if let Some(f) = &r.public_key_file {
            let p = resolve_path(&ctx.config_dir, f);
            match std::fs::read(&p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))
                .and_then(|pem| read_public_key(&pem).map_err(|e| format!("{}: {e}", p.display())))
            {
                Ok((k, alg)) => (Some(KeySource::Static(KeySet::single(k))), vec![alg]),
                Err(e) => {
                    problems.push(format!("{base}.public_key_file"), e);
                    (None, Vec::new())
                }
            }
        } else if let Some(f) = &r.jwks_file {
            let p = resolve_path(&ctx.config_dir, f);
            let set = std::fs::read(&p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))
                .and_then(|b| KeySet::from_jwks(&b).map_err(|e| format!("{}: {e}", p.display())));
            match set {
                Ok(s) => (
                    Some(KeySource::Static(s)),
                    vec![Algorithm::RS256, Algorithm::ES256],
                ),
                Err(e) => {
                    problems.push(format!("{base}.jwks_file"), e);
                    (None, Vec::new())
                }
            }
        } else {
            let url = r.jwks_url.as_deref().unwrap_or_default();
            let uri = crate::config::remote_url(problems, &format!("{base}.jwks_url"), url, true);
            let ca = r.ca.as_ref().and_then(|c| {
                crate::tls::load_certs(&resolve_path(&ctx.config_dir, c))
                    .map_err(|e| problems.push(format!("{base}.ca"), e.to_string()))
                    .ok()
            });
            let timeout = r.timeout.map_or(Duration::from_secs(5), |d| d.0);
            let refresh_interval = r.refresh_interval.map_or(Duration::from_secs(300), |d| d.0);
            let min_refresh_interval = r
                .min_refresh_interval
                .map_or(Duration::from_secs(10), |d| d.0);
            for (k, d) in [("timeout", timeout), ("refresh_interval", refresh_interval)] {
                if d.is_zero() {
                    problems.push(format!("{base}.{k}"), "must be greater than 0");
                }
            }
            let keys = uri.map(|url| {
                let remote = RemoteSettings {
                    name: name.to_string(),
                    url,
                    refresh_interval,
                    min_refresh_interval,
                    timeout,
                };
                KeySource::Remote(remote, ca)
            });
            (keys, vec![Algorithm::RS256, Algorithm::ES256])
        };

        let algorithms = listed.unwrap_or(defaults);
        for (i, a) in algorithms.iter().enumerate() {
            let fam = a.family();
            let ok = match &keys {
                _ if has_secret => fam == AlgorithmFamily::Hmac,
                Some(KeySource::Static(set)) if r.public_key_file.is_some() => {
                    matches!(set.lookup(None, *a), Lookup::Found(_))
                }
                _ => fam != AlgorithmFamily::Hmac,
            };
            if !ok {
                let what = if has_secret {
                    "an HMAC secret only verifies HS256/HS384/HS512".to_string()
                } else if fam == AlgorithmFamily::Hmac {
                    "HS* algorithms need a `secret`; public keys never verify HMAC tokens"
                        .to_string()
                } else {
                    format!(
                        "the public key cannot verify {a:?} ({} algorithm)",
                        family_name(fam)
                    )
                };
                problems.push(format!("{base}.algorithms[{i}]"), what);
            }
        }

        let leeway = r.leeway.map_or(Duration::from_secs(30), |d| d.0);
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = algorithms;
        validation.leeway = leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        match &r.issuer {
            Some(iss) if iss.is_empty() => {
                problems.push(format!("{base}.issuer"), "must not be empty")
            }
            Some(iss) => {
                validation.set_issuer(&[iss]);
                required.push("iss");
            }
            None => {}
        }
        match &r.audiences {
            Some(a) if a.is_empty() => problems.push(
                format!("{base}.audiences"),
                "must list at least one audience (or be omitted)",
            ),
            Some(a) => {
                validation.set_audience(a);
                validation.validate_aud = true;
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        let mut validations: Vec<Validation> = Vec::new();
        for a in &validation.algorithms {
            match validations.iter_mut().find(|v| {
                v.algorithms
                    .first()
                    .is_some_and(|f| f.family() == a.family())
            }) {
                Some(v) => v.algorithms.push(*a),
                None => {
                    let mut v = validation.clone();
                    v.algorithms = vec![*a];
                    validations.push(v);
                }
            }
        }
        let cache_size = match r.cache_size {
            None => 10_000,
            Some(n) if n > 0 => usize::try_from(n).unwrap_or(usize::MAX),
            Some(_) => {
                problems.push(format!("{base}.cache_size"), "must be greater than 0");
                1
            }
        };
        let token_header = match r.token_header.as_deref() {
            None => None,
            Some(h) => match HeaderName::from_bytes(h.as_bytes()) {
                Ok(n) if n != http::header::AUTHORIZATION && n != http::header::HOST => Some(n),
                _ => {
                    problems.push(
                        format!("{base}.token_header"),
                        format!("invalid header name \"{h}\" (and not Authorization or Host)"),
                    );
                    None
                }
            },
        };
        if token_header.is_some() && r.forward_token == Some(true) {
            problems.push(
                format!("{base}.forward_token"),
                "`forward_token` keeps `Authorization`; with `token_header` it would forward another authenticator's credential",
            );
        }
        let bind_authorization = match r.bind.as_deref() {
            None => false,
            Some("authorization") if r.token_header.is_some() => true,
            Some("authorization") => {
                problems.push(
                    format!("{base}.bind"),
                    "`bind = \"authorization\"` needs `token_header`: the token must travel beside the credential it is bound to",
                );
                false
            }
            Some(b) => {
                problems.push(
                    format!("{base}.bind"),
                    format!("unknown binding \"{b}\" (expected \"authorization\")"),
                );
                false
            }
        };
        if problems.len() != before {
            return None;
        }
        Some(Settings {
            keys: keys?,
            validations,
            options: options?,
            cache_size,
            token_header,
            bind_authorization,
        })
    }

    /// The authenticator: for `jwks_url`, the HTTPS client and the (empty) fetched key set.
    pub fn build(&self, name: &str) -> Result<Jwt, BuildError> {
        let keys = match &self.keys {
            KeySource::Static(set) => Keys::Static(set.clone()),
            KeySource::Remote(remote, ca) => {
                let client = idp_client(ca.as_deref(), remote.timeout)
                    .map_err(|e| BuildError::at("ca", e))?;
                debug_assert_eq!(remote.name, name);
                Keys::Remote(Arc::new(RemoteJwks::new(remote.clone(), client)))
            }
        };
        Ok(Jwt {
            token_header: self.token_header.clone(),
            bind_authorization: self.bind_authorization,
            keys,
            validations: self.validations.clone(),
            options: self.options.clone(),
            cache: Box::new(MemoryStore::new(self.cache_size)),
            memo_owner: owner_id(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::units::Dur;

    fn ctx() -> BuildContext {
        BuildContext {
            config_dir: ".".into(),
            client_auth: None,
        }
    }

    fn secret_raw() -> Raw {
        Raw {
            kind: "jwt".into(),
            secret: Some("0123456789abcdef0123456789abcdef".into()),
            ..Default::default()
        }
    }

    fn messages(p: &Problems) -> String {
        format!("{p:?}")
    }

    #[test]
    fn builds_hmac_authenticator() {
        let mut p = Problems::default();
        assert!(
            Settings::read("idp", secret_raw(), "authenticators.idp", &ctx(), &mut p).is_some()
        );
        assert_eq!(p.len(), 0, "{}", messages(&p));
    }

    #[test]
    fn a_binding_needs_a_token_header_of_its_own() {
        let mut p = Problems::default();
        let mut r = secret_raw();
        r.bind = Some("authorization".into());
        assert!(Settings::read("app", r, "a", &ctx(), &mut p).is_none());
        assert!(
            messages(&p).contains("needs `token_header`"),
            "{}",
            messages(&p)
        );
        for (header, forward) in [("Authorization", None), ("X-App-Token", Some(true))] {
            let mut p = Problems::default();
            let mut r = secret_raw();
            r.token_header = Some(header.into());
            r.forward_token = forward;
            assert!(
                Settings::read("app", r, "a", &ctx(), &mut p).is_none(),
                "{header}"
            );
        }
        let mut p = Problems::default();
        let mut r = secret_raw();
        r.token_header = Some("X-App-Token".into());
        r.bind = Some("authorization".into());
        let s = Settings::read("app", r, "a", &ctx(), &mut p).unwrap();
        let consumed = s.build("app").unwrap().consumes().headers;
        assert_eq!(consumed, [HeaderName::from_static("x-app-token")]);
    }

    #[test]
    fn refuses_none_algorithm() {
        let mut p = Problems::default();
        let mut r = secret_raw();
        r.algorithms = Some(vec!["HS256".into(), "none".into()]);
        assert!(Settings::read("idp", r, "a", &ctx(), &mut p).is_none());
        assert!(messages(&p).contains("never accepted"), "{}", messages(&p));
    }

    #[test]
    fn refuses_asymmetric_algorithm_with_secret() {
        let mut p = Problems::default();
        let mut r = secret_raw();
        r.algorithms = Some(vec!["RS256".into()]);
        assert!(Settings::read("idp", r, "a", &ctx(), &mut p).is_none());
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn refuses_hmac_with_jwks() {
        let mut p = Problems::default();
        let r = Raw {
            kind: "jwt".into(),
            jwks_url: Some("https://idp.example.com/jwks".into()),
            algorithms: Some(vec!["HS256".into()]),
            ..Default::default()
        };
        assert!(Settings::read("idp", r, "a", &ctx(), &mut p).is_none());
        assert!(messages(&p).contains("need a `secret`"), "{}", messages(&p));
    }

    #[test]
    fn refuses_two_key_sources() {
        let mut p = Problems::default();
        let mut r = secret_raw();
        r.jwks_url = Some("https://idp.example.com/jwks".into());
        assert!(Settings::read("idp", r, "a", &ctx(), &mut p).is_none());
        assert!(messages(&p).contains("exactly one key source"));
    }

    #[test]
    fn refuses_short_secret_and_plain_http() {
        let mut p = Problems::default();
        let mut r = secret_raw();
        r.secret = Some("short".into());
        assert!(Settings::read("idp", r, "a", &ctx(), &mut p).is_none());
        let r = Raw {
            kind: "jwt".into(),
            jwks_url: Some("http://idp.example.com/jwks".into()),
            leeway: Some(Dur(Duration::from_secs(5))),
            ..Default::default()
        };
        assert!(Settings::read("idp", r, "a", &ctx(), &mut p).is_none());
        assert_eq!(p.len(), 2, "{}", messages(&p));
    }

    /// `/readyz` and config problems show these texts.
    #[test]
    fn errors_keep_their_text() {
        assert_eq!(
            crate::auth::NotReady::JwksNotLoaded.to_string(),
            "JWKS not loaded yet"
        );
        assert_eq!(
            read_public_key(b"nope")
                .err()
                .map(|e| e.to_string())
                .as_deref(),
            Some("not a PEM public key (RSA, EC P-256/P-384 or Ed25519 \"PUBLIC KEY\")")
        );
    }
}
