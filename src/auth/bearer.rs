//! What `jwt` and `introspection` share: reading `Authorization: Bearer`, the RFC 6750
//! challenges, turning verified claims into an [`Identity`], and the options both kinds
//! accept (`realm`, `forward_token`, `forward_claims`).
//!
//! Invariants: a token longer than [`MAX_TOKEN_BYTES`] is refused unread; one outside the
//! RFC 6750 `b64token` alphabet is refused before any parsing or IdP call ([`Token::checked`],
//! after the cache lookup: only checked tokens are ever cached, so a hit needs no second
//! pass over the bytes); another scheme is "absent", not "invalid", so an
//! any-of can try the next method; headers named by `forward_claims` are always stripped
//! from the request, so a caller cannot supply them when the token lacks the claim.

use std::sync::Arc;

use http::HeaderMap;
use http::header::{AUTHORIZATION, HeaderName, HeaderValue};
use serde_json::{Map, Value};

use super::{AuthMethod, Consumes, Identity};
use crate::config::Problems;

/// Longest accepted token; longer ones are rejected without parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// A bearer token on a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Bearer<'a> {
    /// No `Authorization`, or another scheme.
    Absent,
    /// `Bearer` with an empty, oversize or ambiguous token.
    Malformed,
    /// A token, its alphabet not yet checked.
    Token(Token<'a>),
}

/// A bearer token as sent: non-empty and at most [`MAX_TOKEN_BYTES`]. Its bytes may key a
/// cache lookup; anything else must go through [`Token::checked`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token<'a>(&'a [u8]);

impl<'a> Token<'a> {
    /// The raw bytes (for cache keys).
    pub fn bytes(self) -> &'a [u8] {
        self.0
    }

    /// The token if it is an RFC 6750 `b64token` (`=` only as trailing padding).
    pub fn checked(self) -> Option<&'a str> {
        let padding = self.0.iter().rev().take_while(|c| **c == b'=').count();
        let body = &self.0[..self.0.len() - padding];
        // No early exit: one pass of loads and ANDs is cheaper than a branch per byte.
        if body.is_empty()
            || !body
                .iter()
                .fold(true, |ok, c| ok & B64TOKEN[usize::from(*c)])
        {
            return None;
        }
        std::str::from_utf8(self.0).ok()
    }
}

impl<'a> From<&'a str> for Token<'a> {
    fn from(s: &'a str) -> Self {
        Token(s.as_bytes())
    }
}

/// The RFC 6750 `b64token` alphabet without its trailing `=` padding, as a table: the
/// check runs once per bearer request over up to 8 KiB, so it is one lookup per byte.
const B64TOKEN: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        t[i] = c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
        i += 1;
    }
    t
};

/// Reads `Authorization: Bearer <token>`.
pub fn bearer(headers: &HeaderMap) -> Bearer<'_> {
    let mut all = headers.get_all(AUTHORIZATION).iter();
    let Some(v) = all.next() else {
        return Bearer::Absent;
    };
    let b = v.as_bytes();
    let end = b.iter().position(|c| *c == b' ').unwrap_or(b.len());
    let (scheme, rest) = b.split_at(end);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Bearer::Absent;
    }
    if all.next().is_some() {
        // Two Authorization headers: which one would the upstream believe?
        return Bearer::Malformed;
    }
    let token = rest.trim_ascii();
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
        return Bearer::Malformed;
    }
    Bearer::Token(Token(token))
}

/// Precomputed `WWW-Authenticate` values of one token authenticator.
#[derive(Clone)]
pub struct Challenges {
    realm: String,
    plain: HeaderValue,
    invalid: HeaderValue,
}

impl Challenges {
    /// Challenges for `realm`; `None` if the realm cannot be quoted safely.
    pub fn new(realm: &str) -> Option<Self> {
        if realm.is_empty()
            || realm
                .chars()
                .any(|c| c == '"' || c == '\\' || c.is_control() || !c.is_ascii())
        {
            return None;
        }
        let plain = HeaderValue::from_str(&format!("Bearer realm=\"{realm}\"")).ok()?;
        let invalid = HeaderValue::from_str(&format!(
            "Bearer realm=\"{realm}\", error=\"invalid_token\""
        ))
        .ok()?;
        Some(Challenges {
            realm: realm.to_string(),
            plain,
            invalid,
        })
    }

    /// The challenge; `rejected` selects `error="invalid_token"`.
    pub fn get(&self, rejected: bool) -> &HeaderValue {
        if rejected { &self.invalid } else { &self.plain }
    }

    /// The realm.
    pub fn realm(&self) -> &str {
        &self.realm
    }
}

/// The keys both token kinds take, as written.
#[derive(Default)]
pub struct TokenKeys {
    /// `realm`.
    pub realm: Option<String>,
    /// `forward_token`.
    pub forward_token: Option<bool>,
    /// `forward_claims`.
    pub forward_claims: Option<std::collections::BTreeMap<String, String>>,
}

/// Options shared by the token kinds.
#[derive(Clone)]
pub struct TokenOptions {
    /// `WWW-Authenticate` values.
    pub challenges: Challenges,
    /// Keep `Authorization` for the upstream.
    pub forward_token: bool,
    /// Claim name -> upstream header.
    pub forward_claims: Vec<(String, HeaderName)>,
}

/// Headers `forward_claims` may not target: framing, hop-by-hop, credentials and the
/// identity headers the gateway sets itself.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "connection",
    "content-length",
    "content-type",
    "cookie",
    "host",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "x-auth-method",
    "x-auth-scopes",
    "x-auth-subject",
    "x-forwarded-client-cert",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-request-id",
];

impl TokenOptions {
    /// Reads `realm`, `forward_token` and `forward_claims`, recording problems.
    pub fn read(name: &str, r: TokenKeys, base: &str, problems: &mut Problems) -> Option<Self> {
        let realm = r.realm.as_deref().unwrap_or(name);
        let challenges = Challenges::new(realm);
        if challenges.is_none() {
            problems.push(
                format!("{base}.realm"),
                format!("realm \"{realm}\" must be non-empty printable ASCII without `\"` or `\\`"),
            );
        }
        let mut forward_claims = Vec::new();
        for (claim, header) in r.forward_claims.iter().flatten() {
            let path = format!("{base}.forward_claims.{claim}");
            match HeaderName::from_bytes(header.as_bytes()) {
                Ok(h) if RESERVED_HEADERS.contains(&h.as_str()) => problems.push(
                    path,
                    format!("header \"{header}\" is reserved; pick another name such as \"X-Claim-{claim}\""),
                ),
                Ok(h) => {
                    if forward_claims.iter().any(|(_, x)| *x == h) {
                        problems.push(path, format!("header \"{header}\" is used twice"));
                    } else {
                        forward_claims.push((claim.clone(), h));
                    }
                }
                Err(_) => problems.push(path, format!("\"{header}\" is not a valid header name")),
            }
        }
        Some(TokenOptions {
            challenges: challenges?,
            forward_token: r.forward_token.unwrap_or(false),
            forward_claims,
        })
    }

    /// `Authorization` plus every `forward_claims` header (stripped, then set from claims).
    pub fn consumes(&self) -> Consumes {
        let mut headers = vec![AUTHORIZATION];
        headers.extend(self.forward_claims.iter().map(|(_, h)| h.clone()));
        Consumes {
            headers,
            query: Vec::new(),
        }
    }

    /// The identity a verified claim set grants.
    pub fn identity(&self, method: AuthMethod, claims: Map<String, Value>) -> Identity {
        let subject = ["sub", "client_id"]
            .iter()
            .find_map(|k| claims.get(*k).and_then(Value::as_str))
            .unwrap_or("")
            .to_string();
        let mut id = Identity::new(method, subject).with_scopes(scopes(&claims));
        id.cnf_x5t_s256 = claims
            .get("cnf")
            .and_then(|c| c.get("x5t#S256"))
            .and_then(Value::as_str)
            .map(Arc::from);
        for (claim, header) in &self.forward_claims {
            if let Some(v) = claims
                .get(claim)
                .and_then(Value::as_str)
                .and_then(|s| HeaderValue::from_str(s).ok())
            {
                id.headers.push((header.clone(), v));
            }
        }
        id.keep_authorization = self.forward_token;
        id.claims = Some(Arc::new(claims));
        id
    }
}

/// Scopes from `scope` (space-separated) or `scp` (array or string).
pub fn scopes(claims: &Map<String, Value>) -> Arc<[String]> {
    let split = |s: &str| {
        s.split_ascii_whitespace()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    let v = match (claims.get("scope"), claims.get("scp")) {
        (Some(Value::String(s)), _) => split(s),
        (_, Some(Value::Array(a))) => a
            .iter()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect(),
        (_, Some(Value::String(s))) => split(s),
        _ => Vec::new(),
    };
    Arc::from(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn h(v: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        m
    }

    /// The token as the authenticators see it: read, then checked.
    fn token(m: &HeaderMap) -> Result<&str, Bearer<'_>> {
        match bearer(m) {
            Bearer::Token(t) => t.checked().ok_or(Bearer::Malformed),
            other => Err(other),
        }
    }

    #[test]
    fn reads_bearer_token() {
        assert_eq!(token(&h("Bearer abc.def.ghi")), Ok("abc.def.ghi"));
        assert_eq!(token(&h("bearer abc==")), Ok("abc=="));
        assert_eq!(token(&h("Bearer a=")), Ok("a="));
    }

    #[test]
    fn other_schemes_are_absent() {
        assert_eq!(bearer(&HeaderMap::new()), Bearer::Absent);
        assert_eq!(bearer(&h("Basic YTpi")), Bearer::Absent);
        assert_eq!(bearer(&h("Bearerx abc")), Bearer::Absent);
    }

    #[test]
    fn rejects_malformed_tokens() {
        assert_eq!(bearer(&h("Bearer")), Bearer::Malformed);
        assert_eq!(bearer(&h("Bearer   ")), Bearer::Malformed);
        let big = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        assert_eq!(bearer(&h(&big)), Bearer::Malformed);
        for bad in [
            "Bearer a b",
            "Bearer a=b",
            "Bearer ===",
            "Bearer =a",
            "Bearer a\"b",
            "Bearer a,b",
        ] {
            assert_eq!(token(&h(bad)), Err(Bearer::Malformed), "{bad}");
        }
        let mut m = HeaderMap::new();
        m.insert(
            AUTHORIZATION,
            HeaderValue::from_bytes(b"Bearer a\xe9b").unwrap(),
        );
        assert_eq!(token(&m), Err(Bearer::Malformed));
    }

    #[test]
    fn rejects_two_authorization_headers() {
        let mut m = h("Bearer a");
        m.append(AUTHORIZATION, HeaderValue::from_static("Bearer b"));
        assert_eq!(bearer(&m), Bearer::Malformed);
    }

    #[test]
    fn reads_scope_and_scp() {
        let c = json!({"scope": "a  b"});
        assert_eq!(&*scopes(c.as_object().unwrap()), ["a", "b"]);
        let c = json!({"scp": ["x", 1, "y"]});
        assert_eq!(&*scopes(c.as_object().unwrap()), ["x", "y"]);
        assert!(scopes(&Map::new()).is_empty());
    }

    #[test]
    fn challenges_quote_realm() {
        let c = Challenges::new("api").unwrap();
        assert_eq!(c.get(false), "Bearer realm=\"api\"");
        assert_eq!(c.get(true), "Bearer realm=\"api\", error=\"invalid_token\"");
        assert!(Challenges::new("a\"b").is_none());
    }

    #[test]
    fn identity_from_claims() {
        let mut p = Problems::default();
        let r = TokenKeys {
            forward_claims: Some([("tenant".to_string(), "X-Tenant".to_string())].into()),
            forward_token: Some(true),
            ..Default::default()
        };
        let o = TokenOptions::read("idp", r, "a", &mut p).unwrap();
        assert_eq!(p.len(), 0);
        let c = json!({"client_id": "svc", "tenant": "acme", "cnf": {"x5t#S256": "abc"}, "scope": "r w"});
        let id = o.identity(AuthMethod::Jwt, c.as_object().unwrap().clone());
        assert_eq!(id.subject, "svc");
        assert_eq!(id.cnf_x5t_s256.as_deref(), Some("abc"));
        assert_eq!(id.headers.len(), 1);
        assert!(id.keep_authorization);
        assert_eq!(o.consumes().headers.len(), 2);
    }

    #[test]
    fn refuses_reserved_forward_header() {
        let mut p = Problems::default();
        let r = TokenKeys {
            forward_claims: Some([("sub".to_string(), "X-Auth-Subject".to_string())].into()),
            ..Default::default()
        };
        assert!(TokenOptions::read("idp", r, "a", &mut p).is_some());
        assert_eq!(p.len(), 1);
    }
}
