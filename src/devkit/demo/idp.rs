//! The demo's built-in identity provider: an EC P-256 signing key generated at start-up,
//! its JWKS at `/jwks`, and an RFC 7662 endpoint at `/introspect` that knows one opaque
//! token and checks the gateway's client credentials. Loopback only, demo only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

/// Issuer of the demo tokens.
pub(super) const ISSUER: &str = "https://demo-issuer.portcullis.local/";
/// Audience of the demo tokens.
pub(super) const AUDIENCE: &str = "demo-api";
/// Introspection client id the gateway uses.
pub(super) const CLIENT_ID: &str = "portcullis-demo";

/// A running demo IdP. Holds credentials: no `Debug`.
pub(super) struct DemoIdp {
    /// Listening address.
    pub addr: SocketAddr,
    /// A signed JWT (ES256, 1 hour, scope `orders:read`).
    pub jwt: String,
    /// An app token (`X-App-Token`) bound to one `Authorization` value by its `pay` claim.
    pub app_jwt: String,
    /// The one active opaque token.
    pub opaque: String,
    /// Client secret the introspection endpoint expects.
    pub client_secret: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DemoIdp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct State {
    jwks: String,
    opaque: String,
    basic: String,
}

fn random_hex() -> String {
    let mut b = [0u8; 16];
    rand::fill(&mut b);
    hex::encode(b)
}

/// Generates the key and tokens and starts serving on 127.0.0.1:0. The app token is bound
/// to `bound_to`, the whole `Authorization` value it must travel beside.
pub(super) async fn spawn(bound_to: &str) -> anyhow::Result<DemoIdp> {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let raw = kp.public_key_raw();
    let (x, y) = match (raw.get(1..33), raw.get(33..65)) {
        (Some(x), Some(y)) => (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y)),
        _ => anyhow::bail!("unexpected EC public key encoding"),
    };
    let jwks = serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "x": x, "y": y,
        "kid": "demo-1", "alg": "ES256", "use": "sig"}]})
    .to_string();
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let claims = serde_json::json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "demo-user",
        "iat": now, "exp": now + 3600, "scope": "orders:read", "tenant": "acme"});
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("demo-1".into());
    let key = EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes())?;
    let jwt = jsonwebtoken::encode(&header, &claims, &key)?;
    let pay = URL_SAFE_NO_PAD.encode(<sha2::Sha256 as sha2::Digest>::digest(bound_to.as_bytes()));
    let app_claims = serde_json::json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "demo-app",
        "iat": now, "exp": now + 3600, "pay": pay});
    let app_jwt = jsonwebtoken::encode(&header, &app_claims, &key)?;
    let opaque = format!("demo-opaque-{}", random_hex());
    let client_secret = random_hex();
    let basic = format!(
        "Basic {}",
        STANDARD.encode(format!("{CLIENT_ID}:{client_secret}"))
    );
    let state = Arc::new(State {
        jwks,
        opaque: opaque.clone(),
        basic,
    });
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let st = state.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| handle(st.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Ok(DemoIdp {
        addr,
        jwt,
        app_jwt,
        opaque,
        client_secret,
        task,
    })
}

async fn handle(
    st: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let reply = |status: StatusCode, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        Ok(r)
    };
    match req.uri().path() {
        "/jwks" => reply(StatusCode::OK, st.jwks.clone()),
        "/introspect" => {
            let authorized = req
                .headers()
                .get(http::header::AUTHORIZATION)
                .is_some_and(|v| bool::from(v.as_bytes().ct_eq(st.basic.as_bytes())));
            if !authorized {
                return reply(
                    StatusCode::UNAUTHORIZED,
                    "{\"error\":\"invalid_client\"}".into(),
                );
            }
            let body = match Limited::new(req.into_body(), 16 * 1024).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return reply(StatusCode::BAD_REQUEST, "{}".into()),
            };
            let form = String::from_utf8_lossy(&body);
            let token = form.split('&').find_map(|kv| kv.strip_prefix("token="));
            let active =
                token.is_some_and(|t| bool::from(t.as_bytes().ct_eq(st.opaque.as_bytes())));
            let answer = if active {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                serde_json::json!({"active": true, "sub": "demo-service", "client_id": "demo-client",
                    "scope": "orders:read", "exp": now + 600})
            } else {
                serde_json::json!({"active": false})
            };
            reply(StatusCode::OK, answer.to_string())
        }
        _ => reply(StatusCode::NOT_FOUND, "{}".into()),
    }
}
