//! Bearer tokens end to end: JWTs verified against keys from a real JWKS server on
//! loopback (and PEM / HMAC keys), RFC 7662 introspection against a real endpoint, both
//! counting the calls the gateway makes; scopes, claims, forwarding and RFC 8705 binding.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::KeyPair;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

use crate::support::{Gateway, Resp, eventually, gateway, pki};

const ISS: &str = "https://issuer.test/";
const HMAC: &str = "0123456789abcdef0123456789abcdef-hmac";

// ---------------------------------------------------------------------------------------
// A test identity provider: JWKS and introspection over plain HTTP on loopback.

#[derive(Default)]
struct IdpState {
    jwks: Mutex<String>,
    down: AtomicBool,
    jwks_hits: AtomicUsize,
    intro_hits: AtomicUsize,
    intro_delay_ms: AtomicU64,
    tokens: Mutex<HashMap<String, Value>>,
    last_auth: Mutex<Option<String>>,
    last_body: Mutex<Option<String>>,
}

struct Idp {
    addr: SocketAddr,
    state: Arc<IdpState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Idp {
    async fn start(jwks: Value) -> Idp {
        let state = Arc::new(IdpState::default());
        *state.jwks.lock().unwrap() = jwks.to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(st.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Idp { addr, state, task }
    }

    fn jwks_url(&self) -> String {
        format!("http://{}/jwks", self.addr)
    }

    fn endpoint(&self) -> String {
        format!("http://{}/introspect", self.addr)
    }

    fn set_jwks(&self, v: Value) {
        *self.state.jwks.lock().unwrap() = v.to_string();
    }

    fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    fn jwks_hits(&self) -> usize {
        self.state.jwks_hits.load(Ordering::SeqCst)
    }

    fn intro_hits(&self) -> usize {
        self.state.intro_hits.load(Ordering::SeqCst)
    }

    fn answer(&self, token: &str, v: Value) {
        self.state.tokens.lock().unwrap().insert(token.into(), v);
    }
}

async fn handle(
    st: Arc<IdpState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let path = req.uri().path().to_string();
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let reply = |status: StatusCode, body: String| {
        Ok(Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .header("cache-control", "max-age=300")
            .body(Full::new(Bytes::from(body)))
            .unwrap())
    };
    match path.as_str() {
        "/jwks" => {
            st.jwks_hits.fetch_add(1, Ordering::SeqCst);
            if st.down.load(Ordering::SeqCst) {
                return reply(StatusCode::SERVICE_UNAVAILABLE, "{}".into());
            }
            let doc = st.jwks.lock().unwrap().clone();
            reply(StatusCode::OK, doc)
        }
        "/introspect" => {
            st.intro_hits.fetch_add(1, Ordering::SeqCst);
            let delay = st.intro_delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            if st.down.load(Ordering::SeqCst) {
                return reply(StatusCode::SERVICE_UNAVAILABLE, "{}".into());
            }
            let form = String::from_utf8_lossy(&body).into_owned();
            *st.last_auth.lock().unwrap() = auth;
            *st.last_body.lock().unwrap() = Some(form.clone());
            let token = form
                .split('&')
                .find_map(|kv| kv.strip_prefix("token="))
                .unwrap_or_default()
                .to_string();
            let answer = st
                .tokens
                .lock()
                .unwrap()
                .get(&token)
                .cloned()
                .unwrap_or_else(|| json!({"active": false}));
            reply(StatusCode::OK, answer.to_string())
        }
        _ => reply(StatusCode::NOT_FOUND, "{}".into()),
    }
}

// ---------------------------------------------------------------------------------------
// Keys and tokens.

struct Key {
    pair: KeyPair,
    alg: Algorithm,
}

impl Key {
    fn rsa() -> Key {
        Key {
            pair: KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap(),
            alg: Algorithm::RS256,
        }
    }
    fn ec() -> Key {
        Key {
            pair: KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
            alg: Algorithm::ES256,
        }
    }
    fn ed() -> Key {
        Key {
            pair: KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap(),
            alg: Algorithm::EdDSA,
        }
    }

    fn encoding(&self) -> EncodingKey {
        let pem = self.pair.serialize_pem();
        match self.alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
            Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
            _ => EncodingKey::from_ed_pem(pem.as_bytes()).unwrap(),
        }
    }

    fn sign(&self, kid: Option<&str>, claims: &Value) -> String {
        let mut h = Header::new(self.alg);
        h.kid = kid.map(String::from);
        jsonwebtoken::encode(&h, claims, &self.encoding()).unwrap()
    }

    fn jwk(&self, kid: &str) -> Value {
        match self.alg {
            Algorithm::RS256 => {
                use x509_parser::prelude::FromDer;
                let der = rcgen::PublicKeyData::subject_public_key_info(&self.pair);
                let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&der).unwrap();
                let x509_parser::public_key::PublicKey::RSA(rsa) = spki.parsed().unwrap() else {
                    panic!("not RSA");
                };
                let strip = |b: &[u8]| {
                    let i = b.iter().position(|x| *x != 0).unwrap_or(0);
                    URL_SAFE_NO_PAD.encode(&b[i..])
                };
                json!({"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
                       "n": strip(rsa.modulus), "e": strip(rsa.exponent)})
            }
            Algorithm::ES256 => {
                let raw = self.pair.public_key_raw();
                json!({"kty": "EC", "crv": "P-256", "kid": kid,
                       "x": URL_SAFE_NO_PAD.encode(&raw[1..33]),
                       "y": URL_SAFE_NO_PAD.encode(&raw[33..65])})
            }
            _ => json!({"kty": "OKP", "crv": "Ed25519", "kid": kid,
                        "x": URL_SAFE_NO_PAD.encode(self.pair.public_key_raw())}),
        }
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Standard claims, with `extra` merged over them (`null` removes a claim).
fn claims(extra: Value) -> Value {
    let mut c = json!({"iss": ISS, "aud": "api", "sub": "alice", "exp": now() + 300,
                       "scope": "orders:read profile"});
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

fn hs256(claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(HMAC.as_bytes()),
    )
    .unwrap()
}

fn b64json(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

async fn get(gw: &Gateway, path: &str, token: &str) -> Resp {
    gw.client()
        .get_with(path, &[("authorization", &bearer(token))])
        .await
}

fn challenge(r: &Resp) -> String {
    r.headers
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join(" | ")
}

fn assert_invalid_token(r: &Resp, what: &str) {
    assert_eq!(r.status, 401, "{what}: {}", r.text());
    assert!(
        challenge(r).contains("error=\"invalid_token\""),
        "{what}: {}",
        challenge(r)
    );
}

fn jwt_auth(name: &str, idp: &Idp, extra: &str) -> String {
    format!(
        "[authenticators.{name}]\nkind = \"jwt\"\njwks_url = \"{}\"\nissuer = \"{ISS}\"\naudiences = [\"api\"]\n{extra}\n",
        idp.jwks_url()
    )
}

fn route(name: &str, auth: &str, extra: &str) -> String {
    format!(
        "[[routes]]\nname = \"{name}\"\nmatch = {{ path_prefix = \"/{name}\" }}\nupstream = \"echo\"\nauth = {auth}\n{extra}\n"
    )
}

// ---------------------------------------------------------------------------------------
// JWT.

struct JwtSetup {
    gw: Gateway,
    idp: Idp,
    rsa: Key,
    ec: Key,
    ed: Key,
    _keys: tempfile::TempDir,
}

async fn jwt_setup() -> JwtSetup {
    let (rsa, ec, ed) = (Key::rsa(), Key::ec(), Key::ed());
    let idp = Idp::start(json!({"keys": [rsa.jwk("rsa1"), ec.jwk("ec1")]})).await;
    let keys = tempfile::tempdir().unwrap();
    let ed_pem = keys.path().join("ed.pem");
    std::fs::write(&ed_pem, ed.pair.public_key_pem()).unwrap();
    let body = format!(
        "{}{}[authenticators.hs]\nkind = \"jwt\"\nsecret = \"{HMAC}\"\n\n{}{}{}{}",
        jwt_auth(
            "idp",
            &idp,
            "algorithms = [\"RS256\", \"ES256\"]\nleeway = \"30s\"\nforward_claims = { tenant = \"X-Tenant\" }"
        ),
        format_args!(
            "[authenticators.ed]\nkind = \"jwt\"\npublic_key_file = \"{}\"\nissuer = \"{ISS}\"\n\n",
            ed_pem.display()
        ),
        route("jwt", "\"idp\"", ""),
        route("ed", "\"ed\"", ""),
        route("hs", "\"hs\"", ""),
        route(
            "scoped",
            "\"idp\"",
            "require = { scopes = [\"orders:write\"] }"
        ),
    ) + &route(
        "claimed",
        "\"idp\"",
        "require = { claims = { tenant = \"acme\" } }",
    );
    let gw = gateway(&body).start().await;
    JwtSetup {
        gw,
        idp,
        rsa,
        ec,
        ed,
        _keys: keys,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admits_rs256_es256_eddsa_and_hs256_with_right_keys() {
    let s = jwt_setup().await;
    let r = get(
        &s.gw,
        "/jwt/a",
        &s.rsa.sign(Some("rsa1"), &claims(json!({}))),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.upstream_header("x-auth-subject").as_deref(),
        Some("alice")
    );
    assert_eq!(r.upstream_header("x-auth-method").as_deref(), Some("jwt"));
    assert_eq!(
        r.upstream_header("x-auth-scopes").as_deref(),
        Some("orders:read profile")
    );
    assert_eq!(r.upstream_header("authorization"), None);

    let r = get(&s.gw, "/jwt/a", &s.ec.sign(Some("ec1"), &claims(json!({})))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = get(
        &s.gw,
        "/ed/a",
        &s.ed.sign(None, &claims(json!({"aud": null}))),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = get(
        &s.gw,
        "/hs/a",
        &hs256(&claims(json!({"sub": "svc", "aud": null}))),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.upstream_header("x-auth-subject").as_deref(), Some("svc"));
    // Cached second use.
    let r = get(
        &s.gw,
        "/hs/a",
        &hs256(&claims(json!({"sub": "svc", "aud": null}))),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(
        s.gw.metric("portcullis_jwks_refresh_total{authenticator=\"idp\",result=\"success\"}")
            .await
            >= 1.0
    );
    assert_eq!(s.gw.admin_get("/readyz").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_forged_expired_and_malformed_tokens() {
    let s = jwt_setup().await;
    let good = s.rsa.sign(Some("rsa1"), &claims(json!({})));
    let parts: Vec<&str> = good.split('.').collect();
    let rsa_pub_pem = s.rsa.pair.public_key_pem();
    let mut cases: Vec<(&str, String)> = vec![
        (
            "alg none",
            format!(
                "{}.{}.",
                b64json(&json!({"alg": "none", "typ": "JWT"})),
                b64json(&claims(json!({})))
            ),
        ),
        (
            "alg none with kid",
            format!(
                "{}.{}.{}",
                b64json(&json!({"alg": "none", "kid": "rsa1"})),
                b64json(&claims(json!({}))),
                parts[2]
            ),
        ),
        ("alg confusion", {
            let mut h = Header::new(Algorithm::HS256);
            h.kid = Some("rsa1".into());
            jsonwebtoken::encode(
                &h,
                &claims(json!({})),
                &EncodingKey::from_secret(rsa_pub_pem.as_bytes()),
            )
            .unwrap()
        }),
        (
            "wrong iss",
            s.rsa
                .sign(Some("rsa1"), &claims(json!({"iss": "https://evil/"}))),
        ),
        (
            "no iss",
            s.rsa.sign(Some("rsa1"), &claims(json!({"iss": null}))),
        ),
        (
            "wrong aud",
            s.rsa.sign(Some("rsa1"), &claims(json!({"aud": "other"}))),
        ),
        (
            "no aud",
            s.rsa.sign(Some("rsa1"), &claims(json!({"aud": null}))),
        ),
        (
            "no exp",
            s.rsa.sign(Some("rsa1"), &claims(json!({"exp": null}))),
        ),
        (
            "expired",
            s.rsa
                .sign(Some("rsa1"), &claims(json!({"exp": now() - 120}))),
        ),
        (
            "beyond leeway",
            s.rsa
                .sign(Some("rsa1"), &claims(json!({"exp": now() - 45}))),
        ),
        (
            "nbf in the future",
            s.rsa
                .sign(Some("rsa1"), &claims(json!({"nbf": now() + 120}))),
        ),
        (
            "tampered payload",
            format!(
                "{}.{}.{}",
                parts[0],
                b64json(&claims(json!({"sub": "mallory"}))),
                parts[2]
            ),
        ),
        ("tampered signature", {
            let mut sig = parts[2].to_string();
            let first = if sig.starts_with('A') { "B" } else { "A" };
            sig.replace_range(0..1, first);
            format!("{}.{}.{sig}", parts[0], parts[1])
        }),
        (
            "key of another family",
            s.ec.sign(Some("rsa1"), &claims(json!({}))),
        ),
        ("hs256 on jwks route", hs256(&claims(json!({})))),
        ("oversize", "a".repeat(9000)),
        ("garbage", "abc".into()),
        ("three dots", "a.b.c".into()),
        ("dots only", "...".into()),
        ("bad base64", "!!!.???.***".into()),
        (
            "json garbage",
            format!("{}.{}.x", b64json(&json!([1])), b64json(&json!(1))),
        ),
    ];
    cases.push(("empty", String::new()));
    for (what, token) in &cases {
        let r = get(&s.gw, "/jwt/x", token).await;
        assert_invalid_token(&r, what);
        assert!(
            challenge(&r).contains("Bearer realm=\"idp\""),
            "{what}: {}",
            challenge(&r)
        );
    }
    // Within leeway is fine; the hs route refuses an RS256 token.
    let r = get(
        &s.gw,
        "/jwt/x",
        &s.rsa
            .sign(Some("rsa1"), &claims(json!({"exp": now() - 10}))),
    )
    .await;
    assert_eq!(r.status, 200, "within leeway");
    assert_invalid_token(&get(&s.gw, "/hs/x", &good).await, "rs256 on hs route");
    // No credential: a plain challenge, no error.
    let r = s.gw.client().get("/jwt/x").await;
    assert_eq!(r.status, 401);
    assert_eq!(challenge(&r), "Bearer realm=\"idp\"");
    // Another scheme is not a token.
    let r =
        s.gw.client()
            .get_with("/jwt/x", &[("authorization", "Basic YTpi")])
            .await;
    assert_eq!(r.status, 401);
    assert_eq!(challenge(&r), "Bearer realm=\"idp\"");
    // And a good token still works afterwards.
    assert_eq!(get(&s.gw, "/jwt/x", &good).await.status, 200);
    assert!(!crate::support::logs().contains(&parts[2][..40]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforces_scope_and_claim_requirements() {
    let s = jwt_setup().await;
    let t = s
        .rsa
        .sign(Some("rsa1"), &claims(json!({"tenant": "globex"})));
    let r = get(&s.gw, "/scoped/x", &t).await;
    assert_eq!(r.status, 403);
    assert!(challenge(&r).contains("error=\"insufficient_scope\""));
    let r = get(&s.gw, "/claimed/x", &t).await;
    assert_eq!(r.status, 403);
    assert!(challenge(&r).contains("insufficient_scope"));
    let t = s.rsa.sign(
        Some("rsa1"),
        &claims(json!({"tenant": "acme", "scp": ["orders:write"], "scope": null})),
    );
    assert_eq!(get(&s.gw, "/scoped/x", &t).await.status, 200);
    let r = get(&s.gw, "/claimed/x", &t).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-tenant").as_deref(), Some("acme"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strips_caller_supplied_claim_headers() {
    let s = jwt_setup().await;
    let t = s.rsa.sign(Some("rsa1"), &claims(json!({})));
    let r =
        s.gw.client()
            .get_with(
                "/jwt/x",
                &[("authorization", &bearer(&t)), ("x-tenant", "acme")],
            )
            .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-tenant"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kid_triggers_exactly_one_refetch_under_load() {
    let s = jwt_setup().await;
    let gw = &s.gw;
    eventually("jwks loaded", async || {
        gw.admin_get("/readyz").await.status == 200
    })
    .await;
    assert_eq!(s.idp.jwks_hits(), 1);
    let stranger = Key::ec();
    let t = stranger.sign(Some("nope"), &claims(json!({})));
    let c = gw.client();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let c = c.clone();
        let h = bearer(&t);
        tasks.push(tokio::spawn(async move {
            c.get_with("/jwt/x", &[("authorization", &h)]).await.status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 401);
    }
    assert_eq!(s.idp.jwks_hits(), 2, "one early refetch for 50 requests");
    // Rate-limited: another unknown kid right away does not refetch.
    let t = stranger.sign(Some("nope2"), &claims(json!({})));
    assert_eq!(get(gw, "/jwt/x", &t).await.status, 401);
    assert_eq!(s.idp.jwks_hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_key_is_fetched_early_on_first_unknown_kid() {
    let (old, new) = (Key::ec(), Key::ec());
    let idp = Idp::start(json!({"keys": [old.jwk("k1")]})).await;
    let body = jwt_auth("idp", &idp, "") + &route("jwt", "\"idp\"", "");
    let gw = gateway(&body).start().await;
    eventually("jwks loaded", async || {
        gw.admin_get("/readyz").await.status == 200
    })
    .await;
    assert_eq!(
        get(&gw, "/jwt/x", &old.sign(Some("k1"), &claims(json!({}))))
            .await
            .status,
        200
    );
    idp.set_jwks(json!({"keys": [new.jwk("k2")]}));
    let t = new.sign(Some("k2"), &claims(json!({})));
    assert_eq!(get(&gw, "/jwt/x", &t).await.status, 200);
    assert_eq!(idp.jwks_hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_down_at_start_fails_closed_then_recovers() {
    let key = Key::rsa();
    let idp = Idp::start(json!({"keys": [key.jwk("k")]})).await;
    idp.set_down(true);
    let body =
        jwt_auth("idp", &idp, "min_refresh_interval = \"200ms\"") + &route("jwt", "\"idp\"", "");
    let gw = gateway(&body).start().await;
    let t = key.sign(Some("k"), &claims(json!({})));
    eventually("first fetch attempted", async || idp.jwks_hits() >= 1).await;
    let r = get(&gw, "/jwt/x", &t).await;
    assert_eq!(r.status, 503, "{}", r.text());
    let ready = gw.admin_get("/readyz").await;
    assert_eq!(ready.status, 503);
    assert!(ready.text().contains("idp"), "{}", ready.text());
    assert!(
        gw.metric("portcullis_jwks_refresh_total{authenticator=\"idp\",result=\"failure\"}")
            .await
            >= 1.0
    );
    idp.set_down(false);
    eventually("recovered", async || {
        get(&gw, "/jwt/x", &t).await.status == 200
    })
    .await;
    assert_eq!(gw.admin_get("/readyz").await.status, 200);
    // Keys of a failed refresh are kept; a key they lack may be one the endpoint serves
    // now, and it cannot be asked: 503, not 401 (whether or not a refetch is allowed yet).
    idp.set_down(true);
    let hits = idp.jwks_hits();
    let other = Key::rsa().sign(Some("zzz"), &claims(json!({})));
    eventually("a refetch tried and failed", async || {
        let r = get(&gw, "/jwt/x", &other).await;
        assert_ne!(r.status, 200);
        r.status == 503 && idp.jwks_hits() > hits
    })
    .await;
    for _ in 0..3 {
        assert_eq!(get(&gw, "/jwt/x", &other).await.status, 503);
    }
    let fresh = key.sign(Some("k"), &claims(json!({"sub": "bob"})));
    assert_eq!(get(&gw, "/jwt/x", &fresh).await.status, 200);
    // Back up: the key is simply not there, 401.
    idp.set_down(false);
    eventually("a refetch succeeded", async || {
        get(&gw, "/jwt/x", &other).await.status == 401
    })
    .await;
}

/// A reload keeps the JWKS keys it has: an IdP that is down during a reload costs neither
/// readiness nor a single request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_jwks_keys_while_the_idp_is_down() {
    let key = Key::ec();
    let idp = Idp::start(json!({"keys": [key.jwk("k1")]})).await;
    let body = jwt_auth("idp", &idp, "") + &route("jwt", "\"idp\"", "");
    let mut gw = gateway(&body).start().await;
    eventually("jwks loaded", async || {
        gw.admin_get("/readyz").await.status == 200
    })
    .await;
    let t = key.sign(Some("k1"), &claims(json!({})));
    assert_eq!(get(&gw, "/jwt/x", &t).await.status, 200);
    idp.set_down(true);
    let hits = idp.jwks_hits();
    gw.rewrite_and_reload(&(body.clone() + &route("more", "\"idp\"", "")))
        .await
        .unwrap();
    assert_eq!(gw.admin_get("/readyz").await.status, 200);
    assert_eq!(get(&gw, "/jwt/x", &t).await.status, 200);
    assert_eq!(get(&gw, "/more/x", &t).await.status, 200);
    eventually("the new snapshot tried its own fetch", async || {
        idp.jwks_hits() > hits
    })
    .await;
    assert_eq!(get(&gw, "/more/y", &t).await.status, 200);
    assert_eq!(gw.admin_get("/readyz").await.status, 200);
}

/// A verified subject that cannot be written as a header value is never forwarded: 403,
/// not a 401 that would invite the client to retry the same credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_that_cannot_be_a_header_value_is_refused() {
    let s = jwt_setup().await;
    let r = get(&s.gw, "/hs/x", &hs256(&claims(json!({"sub": "ali\nce"})))).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("cannot be forwarded"), "{}", r.text());
}

/// A JWS whose `crit` names an extension the gateway does not understand is refused
/// (RFC 7515 §4.1.11), however valid its signature and claims.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_tokens_with_critical_header_extensions() {
    let s = jwt_setup().await;
    let mut h = Header::new(Algorithm::HS256);
    h.crit = Some(vec!["exp-ext".into()]);
    let c = claims(json!({}));
    let crit = jsonwebtoken::encode(&h, &c, &EncodingKey::from_secret(HMAC.as_bytes())).unwrap();
    assert_invalid_token(&get(&s.gw, "/hs/x", &crit).await, "crit");
    assert_eq!(get(&s.gw, "/hs/x", &hs256(&c)).await.status, 200);
}

fn with_forged<'a>(auth: &'a str, forged: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut v = vec![("authorization", auth)];
    v.extend_from_slice(forged);
    v
}

/// Every header an authenticator can set (`forward_claims`) is stripped on every route, in
/// every `_`/`-` spelling: an API-key route must not pass a client's `X-Tenant` on next to
/// a verified subject, nor a JWT route an `X_Tenant`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_headers_cannot_be_forged_on_any_route() {
    let s = jwt_setup().await;
    let forged = [
        ("x-tenant", "evil"),
        ("x_tenant", "evil"),
        ("X_TENANT", "evil"),
    ];
    let r =
        s.gw.client()
            .get_with(
                "/hs/x",
                &with_forged(&bearer(&hs256(&claims(json!({})))), &forged),
            )
            .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.upstream_header("x-auth-subject").as_deref(),
        Some("alice")
    );
    assert!(!r.text().contains("evil"), "{}", r.text());
    let t = s.rsa.sign(Some("rsa1"), &claims(json!({"tenant": "acme"})));
    let r =
        s.gw.client()
            .get_with("/jwt/x", &with_forged(&bearer(&t), &forged))
            .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_headers("x-tenant"), ["acme"]);
    assert!(!r.text().contains("evil"), "{}", r.text());
}

// ---------------------------------------------------------------------------------------
// Introspection.

/// A connection remembers its last admitted token (skipping the hash and the cache): it
/// must answer only that exact token, and a reload that changes the key must end it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_memo_answers_only_the_same_token_and_ends_with_a_reload() {
    let hs = |secret: &str| {
        format!("[authenticators.hs]\nkind = \"jwt\"\nsecret = \"{secret}\"\n\n")
            + &route("hs", "\"hs\"", "")
    };
    let mut gw = gateway(&hs(HMAC)).start().await;
    // HTTP/2: every request below shares one connection, so one memo.
    let c = gw.h2_client();
    let alice = hs256(&claims(json!({})));
    let bob = hs256(&claims(json!({"sub": "bob"})));
    let subject = async |token: &str| {
        let r = c
            .get_with("/hs", &[("authorization", &bearer(token))])
            .await;
        (r.status.as_u16(), r.upstream_header("x-auth-subject"))
    };
    for _ in 0..3 {
        assert_eq!(subject(&alice).await, (200, Some("alice".into())));
    }
    assert_eq!(subject(&bob).await, (200, Some("bob".into())));
    assert_eq!(subject(&alice).await, (200, Some("alice".into())));
    assert_eq!(subject(&alice).await, (200, Some("alice".into())));
    // Same length, one signature character changed.
    let mut forged = alice.clone().into_bytes();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    assert_eq!(subject(&forged).await.0, 401);
    assert_eq!(subject(&alice).await, (200, Some("alice".into())));

    gw.rewrite_and_reload(&hs("fedcba9876543210fedcba9876543210-rotated"))
        .await
        .unwrap();
    assert_eq!(
        subject(&alice).await.0,
        401,
        "a token signed with the old secret must not pass on a connection that used it"
    );
}

fn intro_auth(name: &str, idp: &Idp, extra: &str) -> String {
    format!(
        "[authenticators.{name}]\nkind = \"introspection\"\nendpoint = \"{}\"\nclient_id = \"gateway\"\nclient_secret = \"s3cret\"\ntimeout = \"1s\"\n{extra}\n",
        idp.endpoint()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_admits_active_and_caches() {
    let idp = Idp::start(json!({"keys": []})).await;
    idp.answer(
        "tok-active",
        json!({"active": true, "sub": "carol", "scope": "orders:read", "exp": now() + 600}),
    );
    idp.answer("tok-client", json!({"active": true, "client_id": "batch"}));
    let body = intro_auth("opaque", &idp, "forward_token = true")
        + &route("in", "\"opaque\"", "")
        + &route(
            "scoped",
            "\"opaque\"",
            "require = { scopes = [\"orders:write\"] }",
        );
    let gw = gateway(&body).start().await;
    let r = get(&gw, "/in/x", "tok-active").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.upstream_header("x-auth-subject").as_deref(),
        Some("carol")
    );
    assert_eq!(
        r.upstream_header("x-auth-method").as_deref(),
        Some("introspection")
    );
    assert_eq!(
        r.upstream_header("x-auth-scopes").as_deref(),
        Some("orders:read")
    );
    assert_eq!(
        r.upstream_header("authorization").as_deref(),
        Some("Bearer tok-active"),
        "forward_token keeps it"
    );
    let sent = idp.state.last_auth.lock().unwrap().clone();
    assert_eq!(
        sent.as_deref(),
        Some(format!("Basic {}", STANDARD.encode("gateway:s3cret")).as_str())
    );
    let form = idp.state.last_body.lock().unwrap().clone().unwrap();
    assert!(form.starts_with("token=tok-active"), "{form}");
    assert_eq!(idp.intro_hits(), 1);
    // Cached: the second request makes no call.
    assert_eq!(get(&gw, "/in/x", "tok-active").await.status, 200);
    assert_eq!(idp.intro_hits(), 1);
    // Cached answers survive the IdP going down.
    idp.set_down(true);
    assert_eq!(get(&gw, "/in/x", "tok-active").await.status, 200);
    idp.set_down(false);
    // Subject falls back to client_id.
    let r = get(&gw, "/in/x", "tok-client").await;
    assert_eq!(
        r.upstream_header("x-auth-subject").as_deref(),
        Some("batch")
    );
    // Scope requirement.
    let r = get(&gw, "/scoped/x", "tok-active").await;
    assert_eq!(r.status, 403);
    assert!(challenge(&r).contains("insufficient_scope"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_rejects_inactive_and_caches_briefly() {
    let idp = Idp::start(json!({"keys": []})).await;
    let body = intro_auth("opaque", &idp, "auth_method = \"client_secret_post\"")
        + &route("in", "\"opaque\"", "");
    let gw = gateway(&body).start().await;
    let r = get(&gw, "/in/x", "tok-unknown").await;
    assert_invalid_token(&r, "inactive");
    assert_eq!(idp.intro_hits(), 1);
    let form = idp.state.last_body.lock().unwrap().clone().unwrap();
    assert!(
        form.contains("client_id=gateway&client_secret=s3cret"),
        "{form}"
    );
    assert_eq!(idp.state.last_auth.lock().unwrap().clone(), None);
    assert_invalid_token(&get(&gw, "/in/x", "tok-unknown").await, "cached inactive");
    assert_eq!(idp.intro_hits(), 1, "negative answer cached");
    idp.answer(
        "tok-expired",
        json!({"active": true, "sub": "x", "exp": now() - 5}),
    );
    assert_invalid_token(&get(&gw, "/in/x", "tok-expired").await, "expired");
    assert!(!crate::support::logs().contains("s3cret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_is_single_flight() {
    let idp = Idp::start(json!({"keys": []})).await;
    idp.answer("tok-slow", json!({"active": true, "sub": "dave"}));
    idp.state.intro_delay_ms.store(300, Ordering::SeqCst);
    let body = intro_auth("opaque", &idp, "") + &route("in", "\"opaque\"", "");
    let gw = gateway(&body).start().await;
    let c = gw.client();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            c.get_with("/in/x", &[("authorization", "Bearer tok-slow")])
                .await
                .status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(idp.intro_hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_down_or_slow_fails_closed() {
    let idp = Idp::start(json!({"keys": []})).await;
    idp.answer("tok-a", json!({"active": true, "sub": "erin"}));
    let body = intro_auth("opaque", &idp, "") + &route("in", "\"opaque\"", "");
    let gw = gateway(&body).start().await;
    idp.set_down(true);
    let r = get(&gw, "/in/x", "tok-a").await;
    assert_eq!(r.status, 503, "{}", r.text());
    idp.set_down(false);
    idp.state.intro_delay_ms.store(1500, Ordering::SeqCst);
    assert_eq!(get(&gw, "/in/x", "tok-a").await.status, 503, "timeout");
    idp.state.intro_delay_ms.store(0, Ordering::SeqCst);
    assert_eq!(get(&gw, "/in/x", "tok-a").await.status, 200, "recovers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_of_jwt_and_introspection() {
    let key = Key::ec();
    let idp = Idp::start(json!({"keys": [key.jwk("k")]})).await;
    idp.answer("opaque-1", json!({"active": true, "sub": "frank"}));
    let body = jwt_auth("idp", &idp, "")
        + &intro_auth("opaque", &idp, "realm = \"opaque-api\"")
        + &route("any", "{ any = [\"idp\", \"opaque\"] }", "");
    let gw = gateway(&body).start().await;
    let r = get(&gw, "/any/x", &key.sign(Some("k"), &claims(json!({})))).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-auth-method").as_deref(), Some("jwt"));
    let r = get(&gw, "/any/x", "opaque-1").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.upstream_header("x-auth-method").as_deref(),
        Some("introspection")
    );
    assert_eq!(
        r.upstream_header("x-auth-subject").as_deref(),
        Some("frank")
    );
    let r = gw.client().get("/any/x").await;
    assert_eq!(r.status, 401);
    let ch = challenge(&r);
    assert!(
        ch.contains("Bearer realm=\"idp\"") && ch.contains("Bearer realm=\"opaque-api\""),
        "{ch}"
    );
    assert_invalid_token(&get(&gw, "/any/x", "opaque-2").await, "neither");
}

// ---------------------------------------------------------------------------------------
// RFC 8705 certificate-bound tokens.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bound_token_needs_its_certificate() {
    let p = pki();
    let good = p.client("svc");
    let other = p.client("other");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.crt"), p.ca.cert_pem()).unwrap();
    let thumb = URL_SAFE_NO_PAD.encode(Sha256::digest(&good.cert_der));
    let body = format!(
        "[authenticators.hs]\nkind = \"jwt\"\nsecret = \"{HMAC}\"\n\n{}",
        route("bound", "\"hs\"", "")
    );
    let gw = gateway(&body)
        .pki(p)
        .tls_extra(&format!(
            "[server.tls.client_auth]\nca = \"{}/ca.crt\"\nmode = \"optional\"",
            dir.path().display()
        ))
        .start()
        .await;
    let t = hs256(&claims(json!({"aud": null, "cnf": {"x5t#S256": thumb}})));
    let h = bearer(&t);
    let hdr = [("authorization", h.as_str())];
    let r = gw
        .mtls_client(&good, false)
        .get_with("/bound/x", &hdr)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = gw
        .mtls_client(&other, false)
        .get_with("/bound/x", &hdr)
        .await;
    assert_eq!(r.status, 401);
    let r = gw.client().get_with("/bound/x", &hdr).await;
    assert_eq!(r.status, 401);
}

// ---------------------------------------------------------------------------------------
// App + user: an app token in its own header, bound to the user's `Authorization`.

/// `{ all = ["app", "staff"] }` with the app's JWT in `X-App-Token` and `bind =
/// "authorization"`: admitted only when the token's `pay` is the SHA-256 of this request's
/// `Authorization`, so a stolen app token cannot ride along another user's password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_token_is_bound_to_the_user_credential_beside_it() {
    let bob = bcrypt::hash("bob-app-pw", 4).unwrap();
    let eve = bcrypt::hash("eve-app-pw", 4).unwrap();
    let body = format!(
        "[authenticators.app]\nkind = \"jwt\"\nsecret = \"{HMAC}\"\nissuer = \"{ISS}\"\naudiences = [\"api\"]\ntoken_header = \"X-App-Token\"\nbind = \"authorization\"\n\n\
         [authenticators.staff]\nkind = \"basic\"\nusers = {{ bob = \"{bob}\", eve = \"{eve}\" }}\n\n{}",
        route("both", r#"{ all = ["app", "staff"] }"#, "")
    );
    let gw = gateway(&body).start().await;
    let c = gw.client();
    let user = STANDARD.encode("bob:bob-app-pw");
    let authorization = format!("Basic {user}");
    let pay = URL_SAFE_NO_PAD.encode(Sha256::digest(authorization.as_bytes()));
    let app = hs256(&claims(json!({"sub": "mobile-app", "pay": pay})));
    let send = |auth: String, token: Option<String>| {
        let c = c.clone();
        async move {
            let mut h = vec![("authorization".to_string(), auth)];
            if let Some(t) = token {
                h.push(("x-app-token".to_string(), t));
            }
            let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            c.get_with("/both/x", &h).await
        }
    };
    let r = send(authorization.clone(), Some(app.clone())).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.upstream_header("x-auth-method").as_deref(),
        Some("jwt,basic")
    );
    assert_eq!(
        r.upstream_header("x-app-token"),
        None,
        "the app token is not forwarded"
    );
    assert_eq!(r.upstream_header("authorization"), None);
    // The same app token beside another user's (valid) credential: refused.
    let eve_auth = format!("Basic {}", STANDARD.encode("eve:eve-app-pw"));
    assert_eq!(send(eve_auth, Some(app.clone())).await.status, 401);
    // No `pay`, or no app token at all: refused.
    let unbound = hs256(&claims(json!({"sub": "mobile-app"})));
    assert_eq!(send(authorization.clone(), Some(unbound)).await.status, 401);
    assert_eq!(send(authorization.clone(), None).await.status, 401);
    // The binding is checked on every request, not only when the token is first verified.
    assert_eq!(send(authorization, Some(app)).await.status, 200);
    gw.shutdown().await;
}
