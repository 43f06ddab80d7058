//! `credentials`: reading Basic, Bearer and API-key credentials off a request, and the
//! htpasswd-style users file.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use base64::Engine;
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

use crate::auth::api_key::{self, ApiKey};
use crate::auth::basic::{self, Found, parse_users_file};
use crate::auth::bearer::{Bearer, MAX_TOKEN_BYTES, bearer};
use crate::auth::{Outcome, RequestView, Services};
use crate::config::{Lockout, Problems};
use crate::conn::ConnInfo;

/// The one configured API key (seeds in the corpus carry it).
const KEY: &str = "pk_fuzz";
/// Longest Basic token and API key the authenticators read (SPEC).
const MAX_BASIC_TOKEN: usize = 4096;
const MAX_KEY: usize = 1024;

static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// Two API-key authenticators for `KEY`: one reading `X-API-Key`, one the `api_key`
/// query parameter; and what a request view needs besides the request.
struct Fixture {
    by_header: Option<ApiKey>,
    by_query: Option<ApiKey>,
    services: Services,
    lockout: Lockout,
    conn: ConnInfo,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let hash = crate::credentials::api_key_hash(KEY);
    let keys = [("fuzz".to_string(), hash.clone(), Vec::new())];
    let toml = format!(
        "kind = \"api_key\"\nquery = \"api_key\"\nkeys = [{{ id = \"fuzz\", hash = \"{hash}\" }}]"
    );
    let by_query = toml::from_str::<api_key::Raw>(&toml)
        .ok()
        .and_then(|r| api_key::Settings::read(r, "fuzz", &mut Problems::default()))
        .map(|s| s.build());
    Fixture {
        by_header: ApiKey::from_hashes("x-api-key", &keys).ok(),
        by_query,
        services: Services::new(Arc::new(crate::metrics::Metrics::new())),
        lockout: Lockout {
            enabled: false,
            max_failures: 1,
            window: Duration::from_secs(1),
            lockout: Duration::from_secs(1),
            max_lockout: Duration::from_secs(1),
            max_entries: 1,
        },
        conn: ConnInfo::plain(SocketAddr::from((Ipv4Addr::LOCALHOST, 1))),
    }
});

/// Credentials on a request, and a users file.
///
/// Input: lines separated by LF; a line starting `A` is an `Authorization` value, `K` an
/// `X-API-Key` value, `Q` the request target (for `?api_key=`); any other line is an
/// `Authorization` value as a whole. The whole input is also read as a users file.
///
/// Invariants: nothing panics; Basic, Bearer and both API-key readers give the verdict
/// (absent, malformed or the credential; admitted only for the configured key) that an
/// independent reading of RFC 7617, RFC 6750 and the API-key rules gives; a Bearer token
/// is checked as `b64token` exactly; users-file entries and problems name real lines.
pub fn credentials(data: &[u8]) {
    let mut headers = HeaderMap::new();
    let mut uri = Uri::from_static("/");
    for line in data.split(|&b| b == b'\n') {
        let (name, value) = match line.split_first() {
            Some((b'A', v)) => (&AUTHORIZATION, v),
            Some((b'K', v)) => (&X_API_KEY, v),
            Some((b'Q', v)) => {
                if let Ok(u) = Uri::try_from(v) {
                    uri = u;
                }
                continue;
            }
            _ => (&AUTHORIZATION, line),
        };
        if let Ok(v) = HeaderValue::from_bytes(value) {
            headers.append(name.clone(), v);
        }
    }
    check_basic(&headers);
    check_bearer(&headers);
    check_api_keys(&headers, &uri);
    check_users_file(&String::from_utf8_lossy(data));
}

/// A credential reader's verdict, comparable.
#[derive(Debug, PartialEq)]
enum Verdict {
    Absent,
    Malformed,
    Found(Vec<u8>),
}

fn check_basic(headers: &HeaderMap) {
    let got = match basic::extract(headers) {
        Found::Absent => Verdict::Absent,
        Found::Malformed => Verdict::Malformed,
        Found::Credentials(user, password) => {
            let mut both = user.into_bytes();
            both.push(b':');
            both.extend_from_slice(&password);
            Verdict::Found(both)
        }
    };
    assert_eq!(got, basic_reference(headers));
}

/// RFC 7617 read independently: exactly one `Authorization` whose scheme is `Basic`
/// (any case, then whitespace or nothing), a canonical base64 token of at most 4 KiB,
/// UTF-8 `user:password` with a non-empty user free of control characters. Several
/// `Authorization` fields are malformed if any is Basic.
fn basic_reference(headers: &HeaderMap) -> Verdict {
    let values: Vec<&[u8]> = headers
        .get_all(AUTHORIZATION)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    let scheme_token = |v: &[u8]| -> Option<Vec<u8>> {
        let scheme: Vec<u8> = v.iter().take(5).map(u8::to_ascii_lowercase).collect();
        let after = v.get(5..).unwrap_or_default();
        let separated = matches!(after.first(), None | Some(b' ' | b'\t'));
        (scheme == b"basic" && separated).then(|| after.trim_ascii().to_vec())
    };
    let basic: Vec<Vec<u8>> = values.iter().filter_map(|v| scheme_token(v)).collect();
    let [token] = basic.as_slice() else {
        return if basic.is_empty() {
            Verdict::Absent
        } else {
            Verdict::Malformed
        };
    };
    if values.len() != 1 || token.is_empty() || token.len() > MAX_BASIC_TOKEN {
        return Verdict::Malformed;
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(token) else {
        return Verdict::Malformed;
    };
    // The engine refuses non-canonical encodings: the token is the encoding.
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .encode(&decoded)
            .as_bytes(),
        token.as_slice()
    );
    let Ok(text) = String::from_utf8(decoded) else {
        return Verdict::Malformed;
    };
    match text.find(':') {
        Some(0) | None => Verdict::Malformed,
        Some(i) if text[..i].chars().any(char::is_control) => Verdict::Malformed,
        Some(_) => Verdict::Found(text.into_bytes()),
    }
}

fn check_bearer(headers: &HeaderMap) {
    let got = bearer(headers);
    let want = {
        let mut all = headers.get_all(AUTHORIZATION).iter();
        match all.next().map(HeaderValue::as_bytes) {
            None => Verdict::Absent,
            Some(v) => {
                let (scheme, token) = match v.iter().position(|&b| b == b' ') {
                    Some(i) => (&v[..i], &v[i..]),
                    None => (v, &b""[..]),
                };
                let token = token.trim_ascii();
                if !scheme.eq_ignore_ascii_case(b"bearer") {
                    Verdict::Absent
                } else if all.next().is_some() || token.is_empty() || token.len() > MAX_TOKEN_BYTES
                {
                    Verdict::Malformed
                } else {
                    Verdict::Found(token.to_vec())
                }
            }
        }
    };
    let token = match got {
        Bearer::Absent => Verdict::Absent,
        Bearer::Malformed => Verdict::Malformed,
        Bearer::Token(t) => Verdict::Found(t.bytes().to_vec()),
    };
    assert_eq!(token, want);
    if let Bearer::Token(t) = got {
        // RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
        let bytes = t.bytes();
        let body_len = bytes.iter().rposition(|&b| b != b'=').map_or(0, |i| i + 1);
        let (body, padding) = bytes.split_at(body_len);
        let b64token = !body.is_empty()
            && body
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
            && padding.iter().all(|&b| b == b'=');
        assert_eq!(
            t.checked().is_some(),
            b64token,
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
        if let Some(s) = t.checked() {
            assert_eq!(s.as_bytes(), bytes);
        }
    }
}

fn check_api_keys(headers: &HeaderMap, uri: &Uri) {
    let f = &*FIXTURE;
    let view = RequestView {
        services: &f.services,
        lockout: &f.lockout,
        method: &Method::GET,
        uri,
        headers,
        conn: &f.conn,
        client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        attempted: &std::sync::OnceLock::new(),
    };
    let header_want = {
        let mut all = headers.get_all(&X_API_KEY).iter();
        match (all.next(), all.next()) {
            (None, _) => Verdict::Absent,
            (Some(_), Some(_)) => Verdict::Malformed,
            (Some(v), None) => key_verdict(v.as_bytes().trim_ascii().to_vec()),
        }
    };
    let query_want = {
        let values: Vec<&str> = uri
            .query()
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter_map(|pair| match pair.split_once('=') {
                Some(("api_key", v)) => Some(v),
                None if pair == "api_key" => Some(""),
                _ => None,
            })
            .collect();
        match values.as_slice() {
            [] => Verdict::Absent,
            [v] => form_decode(v).map_or(Verdict::Malformed, key_verdict),
            _ => Verdict::Malformed,
        }
    };
    for (key, want) in [(&f.by_header, header_want), (&f.by_query, query_want)] {
        let Some(key) = key else {
            continue;
        };
        let got = key.authenticate(&view);
        let ok = match (&got, &want) {
            (Outcome::Absent, Verdict::Absent) | (Outcome::Reject(_), Verdict::Malformed) => true,
            (Outcome::Admit(id), Verdict::Found(k)) => k == KEY.as_bytes() && id.subject == "fuzz",
            (Outcome::Reject(_), Verdict::Found(k)) => k != KEY.as_bytes(),
            _ => false,
        };
        assert!(
            ok,
            "api key: {want:?} -> {}",
            crate::auth::outcome_label(&got)
        );
    }
}

/// A presented key: empty or longer than 1 KiB is malformed.
fn key_verdict(k: Vec<u8>) -> Verdict {
    if k.is_empty() || k.len() > MAX_KEY {
        Verdict::Malformed
    } else {
        Verdict::Found(k)
    }
}

/// `application/x-www-form-urlencoded` value decoding: `+` is a space, `%XX` a byte, a
/// `%` without two hex digits malformed.
fn form_decode(v: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut it = v.bytes();
    while let Some(b) = it.next() {
        out.push(match b {
            b'+' => b' ',
            b'%' => {
                let hex = [it.next()?, it.next()?];
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?
            }
            b => b,
        });
    }
    Some(out)
}

fn check_users_file(text: &str) {
    let lines = text.lines().count();
    let (entries, problems) = parse_users_file(text);
    for (line, name, hash) in &entries {
        assert!((1..=lines).contains(line));
        assert!(!name.is_empty() && !name.contains(':') && name.trim() == name);
        assert!(!hash.is_empty() && hash.trim() == hash);
    }
    for (line, message) in &problems {
        assert!((1..=lines).contains(line));
        assert!(!message.is_empty());
    }
    assert!(entries.len() + problems.len() <= lines);
}
