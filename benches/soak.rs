//! Soak and connection-hold driver for the release binary (issue 15, "Soak and load").
//! Not a criterion benchmark (`harness = false`): `benches/soak.sh` builds
//! `target/release/portcullis` and runs this driver against it as a child process, so the
//! figures are the real binary's, read from `/proc/PID/status` and `/proc/PID/fd`.
//!
//! `--minutes M` (default 10): mixed traffic from `--workers` tasks (default 12) for M
//! minutes — every authenticator kind with valid and invalid credentials, HTTP/1.1 and
//! HTTP/2, request bodies (4–256 KiB, the echo's `body_len` checked) and response bodies
//! (`/big`, length checked), WebSocket tunnels (short ones, and long ones that live across
//! reloads), slow upstream answers, streamed answers and injected upstream faults — while
//! the config file is rewritten (A and B alternately) and `SIGHUP` sent every 5 s, and
//! at a low rate the slow clients (silent HTTP/1.1 and HTTP/2 connections, a zero-window
//! HTTP/2 stream, a stalled HTTP/1.1 reader and a stalled uploader), each of which must be
//! cut off within its configured timeout. Every request has one expected status; any other
//! status, an unexpected 5xx, a wrong body or identity, or any transport error (a dropped
//! connection) fails the run with exit code 1. RSS and open descriptors are sampled every
//! 10 s and reported at the end of the 30 s warm-up and at the end.
//!
//! `--hold N`: N concurrent TLS connections (HTTP/1.1 keep-alive, one request each, then
//! idle), the gateway's RSS before, while held and per connection; then a second request
//! on every connection proves they all survived, and all are closed. `--hold-rounds`
//! (default 2) repeats that in the same process, so that memory the allocator keeps for
//! reuse (the same after each round) can be told from a leak (growing each round).
//!
//! Configs A and B differ in what a client can observe (the server certificate, and a
//! marker route `/marker-a` or `/marker-b`) but give every request the driver sends the
//! same decision; after each reload the driver checks that the new one is in force.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portcullis::certs::{Ca, ClientSpec, Issued};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

// ---------------------------------------------------------------------------------------
// Settings

/// `server.limits.header_read_timeout` in the soak configs.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// `server.limits.idle_timeout` in the soak configs.
const IDLE_TIMEOUT: Duration = Duration::from_secs(3);
/// A worker drops a keep-alive connection it has not used for this long, so that the
/// gateway's idle timer can never race one of its requests (that close would be the
/// client's problem in real life, not a reload's).
const RECYCLE_AFTER: Duration = Duration::from_millis(1500);
/// Every request (head and body) must finish within this.
const REQUEST_DEADLINE: Duration = Duration::from_secs(30);
/// Added to every "closed within" bound of the slow clients (a busy, shared machine).
const SLACK: Duration = Duration::from_secs(3);
/// Samples before this are warm-up.
const WARM_UP: Duration = Duration::from_secs(30);
/// RSS and descriptor sampling period.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// A transport error within this of a reload counts as "dropped by a reload".
const RELOAD_WINDOW: Duration = Duration::from_secs(1);
/// Period of the slow-client checks.
const SLOW_EVERY: Duration = Duration::from_secs(4);
/// Long-lived WebSocket tunnels kept open across reloads.
const LONG_TUNNELS: usize = 4;
/// Path of the release binary when neither `--binary` nor `PORTCULLIS_BIN` says.
fn default_binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("release").join("portcullis")
}

struct Args {
    minutes: f64,
    hold: Option<usize>,
    hold_secs: u64,
    hold_rounds: usize,
    workers: usize,
    reload_every: Duration,
    binary: PathBuf,
    keep: bool,
}

const USAGE: &str = "usage: soak [--minutes M] [--workers N] [--reload-every SECS] \
[--hold N [--hold-secs S] [--hold-rounds R]] [--binary PATH] [--keep]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        minutes: 10.0,
        hold: None,
        hold_secs: 30,
        hold_rounds: 2,
        workers: 12,
        reload_every: Duration::from_secs(5),
        binary: std::env::var_os("PORTCULLIS_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(default_binary),
        keep: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            // cargo bench passes --bench to harness = false targets.
            "--bench" => {}
            "--minutes" => {
                args.minutes = value("--minutes")?
                    .parse()
                    .map_err(|e| format!("--minutes: {e}"))?;
            }
            "--workers" => {
                args.workers = value("--workers")?
                    .parse()
                    .map_err(|e| format!("--workers: {e}"))?;
            }
            "--reload-every" => {
                let s: f64 = value("--reload-every")?
                    .parse()
                    .map_err(|e| format!("--reload-every: {e}"))?;
                args.reload_every = Duration::from_secs_f64(s);
            }
            "--hold" => {
                args.hold = Some(
                    value("--hold")?
                        .parse()
                        .map_err(|e| format!("--hold: {e}"))?,
                );
            }
            "--hold-secs" => {
                args.hold_secs = value("--hold-secs")?
                    .parse()
                    .map_err(|e| format!("--hold-secs: {e}"))?;
            }
            "--hold-rounds" => {
                args.hold_rounds = value("--hold-rounds")?
                    .parse()
                    .map_err(|e| format!("--hold-rounds: {e}"))?;
            }
            "--binary" => args.binary = PathBuf::from(value("--binary")?),
            "--keep" => args.keep = true,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if args.minutes.is_nan() || args.minutes < 0.0 || args.workers == 0 {
        return Err(format!("bad --minutes or --workers\n{USAGE}"));
    }
    Ok(args)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if !args.binary.is_file() {
        eprintln!(
            "{} not found: build it first (cargo build --release --bin portcullis) or give --binary",
            args.binary.display()
        );
        std::process::exit(2);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let code = rt.block_on(async move {
        match args.hold {
            Some(n) => hold(&args, n).await,
            None => soak(&args).await,
        }
    });
    match code {
        Ok(c) => std::process::exit(c),
        Err(e) => {
            eprintln!("soak: {e:#}");
            std::process::exit(1);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Fixture: certificates, credentials, the identity provider, the echo upstream, configs

/// The routes of both soak configs after the marker route, all to the echo upstream:
/// name, path prefix, `auth` (a TOML value) and the scope required ("" for none).
const ROUTES: [(&str, &str, &str, &str); 15] = [
    ("public", "/public", r#""public""#, ""),
    ("faults", "/status", r#""public""#, ""),
    ("die", "/die", r#""public""#, ""),
    ("slow", "/slow", r#""public""#, ""),
    ("stream", "/stream", r#""public""#, ""),
    ("basic", "/basic", r#""staff""#, ""),
    ("key", "/key", r#""partners""#, "orders:read"),
    ("jwt", "/jwt", r#""hs""#, "orders:read"),
    ("jwks", "/jwks", r#""idp""#, ""),
    ("opaque", "/opaque", r#""opaque""#, ""),
    ("mtls", "/mtls", r#""services""#, ""),
    ("both", "/both", r#"{ all = ["services", "staff"] }"#, ""),
    (
        "any",
        "/any",
        r#"{ any = ["idp", "opaque", "partners"] }"#,
        "",
    ),
    ("big", "/big", r#"{ any = ["partners", "staff"] }"#, ""),
    ("ws", "/ws", r#""hs""#, ""),
];

/// A `[[routes]]` table sending `prefix` to the echo upstream; `auth` is a TOML value and
/// `scope` the scope the route requires ("" for none).
fn echo_route(name: &str, prefix: &str, auth: &str, scope: &str) -> String {
    let mut table = format!(
        "\n[[routes]]\nname = \"{name}\"\nmatch = {{ path_prefix = \"{prefix}\" }}\nupstream = \"echo\"\nauth = {auth}\n"
    );
    if !scope.is_empty() {
        let _ = writeln!(table, "require = {{ scopes = [\"{scope}\"] }}");
    }
    table
}

/// A small xorshift generator: the traffic mix needs no cryptographic randomness.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::fill(&mut b[..]);
    hex::encode(b)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

const ISSUER: &str = "https://soak-issuer.local/";
const AUDIENCE: &str = "soak-api";
const INTROSPECTION_CLIENT: &str = "soak-gateway";
const CLIENT_URI: &str = "spiffe://soak.local/client";

/// Every credential the traffic uses, valid and invalid.
struct Creds {
    alice_password: String,
    key_read: String,
    key_no_scope: String,
    hs_ok: String,
    hs_bad_signature: String,
    hs_expired: String,
    hs_wrong_audience: String,
    hs_no_scope: String,
    jwks_ok: String,
    jwks_forged: String,
    jwks_unknown_kid: String,
    opaque_ok: String,
}

struct Fixture {
    dir: tempfile::TempDir,
    ca: Ca,
    client: Issued,
    stranger: Issued,
    server_der: [Vec<u8>; 2],
    creds: Creds,
    /// `users = { ... }` value.
    users: String,
    key_read_hash: String,
    key_no_scope_hash: String,
    hs_secret: String,
    introspection_secret: String,
    idp: Idp,
    echo: portcullis::echo::EchoServer,
}

fn jwt(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &serde_json::Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("sign")
}

fn claims(sub: &str, aud: &str, exp: u64, scope: &str) -> serde_json::Value {
    serde_json::json!({"iss": ISSUER, "aud": aud, "sub": sub, "iat": now_secs(),
        "exp": exp, "scope": scope})
}

impl Fixture {
    async fn new() -> anyhow::Result<Fixture> {
        let dir = tempfile::Builder::new()
            .prefix("portcullis-soak-")
            .tempdir()?;
        let d = dir.path();
        let ca = Ca::new("portcullis soak CA")?;
        std::fs::write(d.join("ca.crt"), ca.cert_pem())?;
        let hosts = ["localhost".to_owned(), "127.0.0.1".to_owned()];
        let server_a = ca.server(&hosts)?;
        let server_b = ca.server(&hosts)?;
        server_a.write(d, "server-a")?;
        server_b.write(d, "server-b")?;
        let mut spec = ClientSpec::new("soak-client");
        spec.uris = vec![CLIENT_URI.to_owned()];
        let client = ca.client(&spec)?;
        let stranger = ca.client(&ClientSpec::new("soak-stranger"))?;

        // Cheap argon2 parameters: a wrong password is hashed on every request (it is never
        // cached), and the soak is about the gateway, not about argon2.
        let alice_password = random_hex(12);
        let alice = portcullis::credentials::hash_password(&alice_password, 4096, 1, 1)
            .map_err(anyhow::Error::msg)?;
        let bob = portcullis::credentials::hash_password(&random_hex(12), 4096, 1, 1)
            .map_err(anyhow::Error::msg)?;
        let users = format!("{{ alice = \"{alice}\", bob = \"{bob}\" }}");
        let (key_read, key_read_hash) = portcullis::credentials::new_api_key("soak");
        let (key_no_scope, key_no_scope_hash) = portcullis::credentials::new_api_key("soak");

        let hs_secret = random_hex(32);
        let hs_key = EncodingKey::from_secret(hs_secret.as_bytes());
        let other_hs = EncodingKey::from_secret(random_hex(32).as_bytes());
        let later = now_secs() + 6 * 3600;
        let hs_ok = jwt(
            Algorithm::HS256,
            None,
            &hs_key,
            &claims("hs-user", AUDIENCE, later, "orders:read"),
        );
        let hs_bad_signature = jwt(
            Algorithm::HS256,
            None,
            &other_hs,
            &claims("hs-user", AUDIENCE, later, "orders:read"),
        );
        let hs_expired = jwt(
            Algorithm::HS256,
            None,
            &hs_key,
            &claims("hs-user", AUDIENCE, now_secs() - 3600, "orders:read"),
        );
        let hs_wrong_audience = jwt(
            Algorithm::HS256,
            None,
            &hs_key,
            &claims("hs-user", "another-api", later, "orders:read"),
        );
        let hs_no_scope = jwt(
            Algorithm::HS256,
            None,
            &hs_key,
            &claims("hs-user", AUDIENCE, later, "orders:write"),
        );

        let idp_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let forger = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let es_key = EncodingKey::from_ec_pem(idp_key.serialize_pem().as_bytes())?;
        let forged_key = EncodingKey::from_ec_pem(forger.serialize_pem().as_bytes())?;
        let jwks_ok = jwt(
            Algorithm::ES256,
            Some("soak-1"),
            &es_key,
            &claims("jwks-user", AUDIENCE, later, "orders:read"),
        );
        let jwks_forged = jwt(
            Algorithm::ES256,
            Some("soak-1"),
            &forged_key,
            &claims("jwks-user", AUDIENCE, later, "orders:read"),
        );
        let jwks_unknown_kid = jwt(
            Algorithm::ES256,
            Some("soak-unknown"),
            &forged_key,
            &claims("jwks-user", AUDIENCE, later, "orders:read"),
        );
        let opaque_ok = format!("soak-opaque-{}", random_hex(16));
        let introspection_secret = random_hex(16);
        let idp = Idp::spawn(&idp_key, opaque_ok.clone(), &introspection_secret).await?;
        let echo = portcullis::echo::spawn(([127, 0, 0, 1], 0).into(), None).await?;
        Ok(Fixture {
            dir,
            ca,
            client,
            stranger,
            server_der: [server_a.cert_der, server_b.cert_der],
            creds: Creds {
                alice_password,
                key_read,
                key_no_scope,
                hs_ok,
                hs_bad_signature,
                hs_expired,
                hs_wrong_audience,
                hs_no_scope,
                jwks_ok,
                jwks_forged,
                jwks_unknown_kid,
                opaque_ok,
            },
            users,
            key_read_hash,
            key_no_scope_hash,
            hs_secret,
            introspection_secret,
            idp,
            echo,
        })
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("portcullis.toml")
    }

    /// Config A (`variant` 0) or B (1) of the soak.
    fn soak_config(&self, variant: usize) -> String {
        let d = self.dir.path().display();
        let (cert, marker, pool) = if variant == 0 {
            ("server-a", "/marker-a", "")
        } else {
            // B also builds its upstream pool with other limits; the decisions stay.
            (
                "server-b",
                "/marker-b",
                "max_connections = 512\ntimeout = \"15s\"\n",
            )
        };
        let mut routes = echo_route("marker", marker, r#""public""#, "");
        for (name, prefix, auth, scope) in ROUTES {
            routes.push_str(&echo_route(name, prefix, auth, scope));
        }
        format!(
            r#"# portcullis soak config {variant_name}
[server]
listen = ["127.0.0.1:0"]
shutdown_grace = "5s"

[server.tls]
cert = "{d}/{cert}.crt"
key = "{d}/{cert}.key"

[server.tls.client_auth]
ca = "{d}/ca.crt"
mode = "optional"

[server.lockout]
enabled = false

[server.limits]
header_read_timeout = "{hrt}s"
idle_timeout = "{idle}s"
request_timeout = "20s"
max_connections = 4000
tunnel_idle_timeout = "20s"

[admin]
listen = "127.0.0.1:0"

[log]
format = "json"
level = "info,portcullis::access=off"

[upstreams.echo]
targets = ["http://{echo}"]
{pool}
[authenticators.public]
kind = "none"

[authenticators.staff]
kind = "basic"
realm = "soak"
users = {users}

[authenticators.partners]
kind = "api_key"
keys = [
  {{ id = "partner-read", hash = "{key_read}", scopes = ["orders:read"] }},
  {{ id = "partner-none", hash = "{key_none}" }},
]

[authenticators.hs]
kind = "jwt"
secret = "{hs}"
issuer = "{ISSUER}"
audiences = ["{AUDIENCE}"]
algorithms = ["HS256"]

[authenticators.idp]
kind = "jwt"
jwks_url = "http://{idp}/jwks"
issuer = "{ISSUER}"
audiences = ["{AUDIENCE}"]
algorithms = ["ES256"]

[authenticators.opaque]
kind = "introspection"
endpoint = "http://{idp}/introspect"
client_id = "{INTROSPECTION_CLIENT}"
client_secret = "{isecret}"

[authenticators.services]
kind = "mtls"
allow = ["URI:{CLIENT_URI}"]

{routes}"#,
            variant_name = if variant == 0 { "A" } else { "B" },
            hrt = HEADER_READ_TIMEOUT.as_secs(),
            idle = IDLE_TIMEOUT.as_secs(),
            echo = self.echo.addr,
            users = self.users,
            key_read = self.key_read_hash,
            key_none = self.key_no_scope_hash,
            hs = self.hs_secret,
            idp = self.idp.addr,
            isecret = self.introspection_secret,
        )
    }

    /// The `--hold` config: one public route, limits for `n` idle connections.
    fn hold_config(&self, n: usize) -> String {
        let d = self.dir.path().display();
        format!(
            r#"[server]
listen = ["127.0.0.1:0"]
shutdown_grace = "5s"

[server.tls]
cert = "{d}/server-a.crt"
key = "{d}/server-a.key"

[server.limits]
idle_timeout = "30m"
max_connections = {max}

[admin]
listen = "127.0.0.1:0"

[log]
format = "json"
level = "info,portcullis::access=off"

[upstreams.echo]
targets = ["http://{echo}"]

[authenticators.public]
kind = "none"

{route}"#,
            max = n + 1000,
            echo = self.echo.addr,
            route = echo_route("public", "/", r#""public""#, ""),
        )
    }

    /// rustls client config trusting the soak CA, presenting `identity`, offering `alpn`.
    fn tls(&self, identity: Option<&Issued>, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
        let b = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(self.ca.root_store().expect("roots"));
        let mut cfg = match identity {
            Some(id) => b
                .with_client_auth_cert(id.cert_chain(), id.private_key().expect("key"))
                .expect("client cert"),
            None => b.with_no_client_auth(),
        };
        cfg.alpn_protocols = vec![alpn.to_vec()];
        Arc::new(cfg)
    }
}

/// The in-process identity provider: `/jwks` (one EC P-256 key, kid `soak-1`) and an
/// RFC 7662 `/introspect` that knows one opaque token. Counts what it served.
struct Idp {
    addr: SocketAddr,
    jwks_fetches: Arc<AtomicU64>,
    introspections: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct IdpState {
    jwks: String,
    opaque: String,
    basic: String,
    jwks_fetches: Arc<AtomicU64>,
    introspections: Arc<AtomicU64>,
}

impl Idp {
    async fn spawn(key: &rcgen::KeyPair, opaque: String, secret: &str) -> anyhow::Result<Idp> {
        let raw = key.public_key_raw();
        let (x, y) = (
            URL_SAFE_NO_PAD.encode(&raw[1..33]),
            URL_SAFE_NO_PAD.encode(&raw[33..65]),
        );
        let jwks = serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "x": x, "y": y,
            "kid": "soak-1", "alg": "ES256", "use": "sig"}]})
        .to_string();
        let jwks_fetches = Arc::new(AtomicU64::new(0));
        let introspections = Arc::new(AtomicU64::new(0));
        let state = Arc::new(IdpState {
            jwks,
            opaque,
            basic: format!(
                "Basic {}",
                STANDARD.encode(format!("{INTROSPECTION_CLIENT}:{secret}"))
            ),
            jwks_fetches: jwks_fetches.clone(),
            introspections: introspections.clone(),
        });
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let st = state.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| idp_handle(st.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Ok(Idp {
            addr,
            jwks_fetches,
            introspections,
            task,
        })
    }
}

async fn idp_handle(
    st: Arc<IdpState>,
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
        "/jwks" => {
            st.jwks_fetches.fetch_add(1, Ordering::Relaxed);
            reply(StatusCode::OK, st.jwks.clone())
        }
        "/introspect" => {
            st.introspections.fetch_add(1, Ordering::Relaxed);
            let authorized = req
                .headers()
                .get(http::header::AUTHORIZATION)
                .is_some_and(|v| v.as_bytes() == st.basic.as_bytes());
            if !authorized {
                return reply(
                    StatusCode::UNAUTHORIZED,
                    "{\"error\":\"invalid_client\"}".into(),
                );
            }
            let Ok(body) = Limited::new(req.into_body(), 16 * 1024).collect().await else {
                return reply(StatusCode::BAD_REQUEST, "{}".into());
            };
            let body = body.to_bytes();
            let form = String::from_utf8_lossy(&body);
            let token = form.split('&').find_map(|kv| kv.strip_prefix("token="));
            let answer = if token == Some(st.opaque.as_str()) {
                serde_json::json!({"active": true, "sub": "opaque-user", "client_id": "soak",
                    "scope": "orders:read", "exp": now_secs() + 3600})
            } else {
                serde_json::json!({"active": false})
            };
            reply(StatusCode::OK, answer.to_string())
        }
        _ => reply(StatusCode::NOT_FOUND, "{}".into()),
    }
}

// ---------------------------------------------------------------------------------------
// The gateway child process

#[derive(Default)]
struct LogSummary {
    warnings: u64,
    errors: u64,
    samples: Vec<String>,
}

struct Gateway {
    child: Child,
    pid: u32,
    addr: SocketAddr,
    admin: SocketAddr,
    log: Arc<Mutex<LogSummary>>,
}

enum Bound {
    Public(SocketAddr),
    Admin(SocketAddr),
}

impl Gateway {
    /// Starts `BINARY run --config PATH` and waits until it logs both bound addresses.
    fn start(binary: &Path, config: &Path) -> anyhow::Result<Gateway> {
        let mut child = Command::new(binary)
            .arg("run")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let pid = child.id();
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(LogSummary::default()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                // Fields are flattened into the event (or nested under "fields").
                let field = |k: &str| v[k].as_str().or_else(|| v["fields"][k].as_str());
                let message = field("message").unwrap_or("");
                let address = field("address").and_then(|a| a.parse().ok());
                match (message, address) {
                    ("public listener bound", Some(a)) => {
                        let _ = tx.send(Bound::Public(a));
                    }
                    ("admin listener bound", Some(a)) => {
                        let _ = tx.send(Bound::Admin(a));
                    }
                    _ => {}
                }
                let level = v["level"].as_str().unwrap_or("");
                let mut s = sink.lock().unwrap();
                match level {
                    "WARN" => s.warnings += 1,
                    "ERROR" => s.errors += 1,
                    "INFO" | "DEBUG" | "TRACE" => continue,
                    _ => {} // not JSON: keep it, it may be a crash message
                }
                if s.samples.len() < 20 {
                    s.samples.push(line);
                }
            }
        });
        let (mut addr, mut admin) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(30);
        while addr.is_none() || admin.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(Bound::Public(a)) => addr = Some(a),
                Ok(Bound::Admin(a)) => admin = Some(a),
                Err(_) => {
                    if let Some(status) = child.try_wait()? {
                        anyhow::bail!(
                            "gateway exited at start ({status}): {:?}",
                            log.lock().unwrap().samples
                        );
                    }
                    if left.is_zero() {
                        let _ = child.kill();
                        anyhow::bail!("gateway did not log its bound addresses within 30 s");
                    }
                }
            }
        }
        Ok(Gateway {
            child,
            pid,
            addr: addr.expect("public"),
            admin: admin.expect("admin"),
            log,
        })
    }

    fn signal(&self, sig: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid.to_string())
            .status()?;
        anyhow::ensure!(status.success(), "kill -{sig} {} failed", self.pid);
        Ok(())
    }

    /// SIGTERM, then waits for the exit (SIGKILL after `grace`).
    async fn stop(&mut self, grace: Duration) -> String {
        let _ = self.signal("TERM");
        let deadline = Instant::now() + grace;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.to_string();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return format!("did not exit within {grace:?} of SIGTERM; killed");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn sample(&self) -> Sample {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let fds = std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .map(|d| d.count() as u64)
            .unwrap_or(0);
        Sample {
            rss_kib: field("VmRSS:"),
            hwm_kib: field("VmHWM:"),
            threads: field("Threads:"),
            fds,
        }
    }

    /// One sample line of the admin `/metrics` (`name{labels}`), 0 when absent.
    async fn metric(&self, sample: &str) -> anyhow::Result<f64> {
        let text = admin_get(self.admin, "/metrics").await?;
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|r| r.trim().parse().ok()))
            .unwrap_or(0.0))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[derive(Clone, Copy, Default)]
struct Sample {
    rss_kib: u64,
    hwm_kib: u64,
    threads: u64,
    fds: u64,
}

async fn admin_get(admin: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(admin).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await??;
    let text = String::from_utf8_lossy(&out);
    Ok(text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default())
}

const RELOADS_OK: &str = "portcullis_config_reloads_total{result=\"success\"}";
const RELOADS_FAILED: &str = "portcullis_config_reloads_total{result=\"failure\"}";

// ---------------------------------------------------------------------------------------
// Client connections

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

async fn tls_connect(addr: SocketAddr, cfg: Arc<rustls::ClientConfig>) -> anyhow::Result<Tls> {
    let tcp = TcpStream::connect(addr).await?;
    tls_over(tcp, cfg).await
}

async fn tls_over(tcp: TcpStream, cfg: Arc<rustls::ClientConfig>) -> anyhow::Result<Tls> {
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from("localhost").expect("name");
    let tls = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_rustls::TlsConnector::from(cfg).connect(name, tcp),
    )
    .await
    .map_err(|_| anyhow::anyhow!("TLS handshake timed out"))??;
    Ok(tls)
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// A worker's keep-alive connection.
struct Conn {
    sender: Sender,
    last_used: Instant,
    uses: u64,
    /// The last response said `Connection: close`.
    closing: bool,
}

impl Conn {
    async fn open(
        addr: SocketAddr,
        cfg: Arc<rustls::ClientConfig>,
        h2: bool,
    ) -> anyhow::Result<Conn> {
        let tls = tls_connect(addr, cfg).await?;
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let want: &[u8] = if h2 { b"h2" } else { b"http/1.1" };
        anyhow::ensure!(
            alpn.as_deref() == Some(want),
            "ALPN {alpn:?}, wanted {want:?}"
        );
        let io = TokioIo::new(tls);
        let sender = if h2 {
            let (tx, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await?;
            tokio::spawn(conn);
            Sender::H2(tx)
        } else {
            let (tx, conn) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(conn);
            Sender::H1(tx)
        };
        Ok(Conn {
            sender,
            last_used: Instant::now(),
            uses: 0,
            closing: false,
        })
    }

    async fn ready(&mut self) -> Result<(), hyper::Error> {
        match &mut self.sender {
            Sender::H1(tx) => tx.ready().await,
            Sender::H2(tx) => tx.ready().await,
        }
    }

    async fn send(
        &mut self,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, hyper::Error> {
        match &mut self.sender {
            Sender::H1(tx) => tx.send_request(req).await,
            Sender::H2(tx) => tx.send_request(req).await,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Counting

#[derive(Default, Clone)]
struct KindStats {
    h1: u64,
    h2: u64,
    expect: u16,
    injected: bool,
    wrong: u64,
    fivexx: u64,
    bad_body: u64,
    transport: u64,
}

enum Outcome {
    Ok,
    Wrong(String),
    FiveXx(String),
    BadBody(String),
    Transport(String),
}

#[derive(Default)]
struct SlowStats {
    runs: u64,
    cut: u64,
    failed: u64,
    max_cut: Duration,
    how: BTreeMap<String, u64>,
}

#[derive(Default)]
struct Stats {
    kinds: Mutex<BTreeMap<&'static str, KindStats>>,
    slow: Mutex<BTreeMap<&'static str, SlowStats>>,
    failures: Mutex<Vec<String>>,
    requests: AtomicU64,
    failed: AtomicU64,
    dropped_on_reload: AtomicU64,
    transport_other: AtomicU64,
    connects: AtomicU64,
    recycled: AtomicU64,
    gateway_closed_between: AtomicU64,
    expected_closes: AtomicU64,
    tunnels: AtomicU64,
    tunnel_messages: AtomicU64,
    tunnels_broken: AtomicU64,
    reloads_sent: AtomicU64,
    reloads_confirmed: AtomicU64,
    reload_problems: AtomicU64,
    slow_failed: AtomicU64,
}

/// What every task shares.
struct Ctx {
    fx: Fixture,
    gw_addr: SocketAddr,
    start: Instant,
    stop: AtomicBool,
    stats: Stats,
    reload_times: Mutex<Vec<Instant>>,
    /// `[who][h2]` client configs: who = plain, client cert, stranger cert.
    tls: [[Arc<rustls::ClientConfig>; 2]; 3],
    upload: Bytes,
}

impl Ctx {
    fn failure(&self, line: String) {
        let mut f = self.stats.failures.lock().unwrap();
        if f.len() < 200 {
            f.push(format!(
                "[{:7.1}s] {line}",
                self.start.elapsed().as_secs_f64()
            ));
        }
    }

    /// Whether a reload was signalled within `RELOAD_WINDOW` of `[from, to]`.
    fn near_reload(&self, from: Instant, to: Instant) -> Option<Duration> {
        let times = self.reload_times.lock().unwrap();
        times.iter().rev().find_map(|&r| {
            let lo = from.checked_sub(RELOAD_WINDOW).unwrap_or(from);
            (r >= lo && r <= to + RELOAD_WINDOW).then(|| to.saturating_duration_since(r))
        })
    }

    fn record(&self, kind: &'static str, plan: &Plan, h2: bool, outcome: Outcome, t0: Instant) {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        {
            let mut kinds = self.stats.kinds.lock().unwrap();
            let k = kinds.entry(kind).or_default();
            k.expect = plan.expect;
            k.injected = plan.injected;
            if h2 {
                k.h2 += 1;
            } else {
                k.h1 += 1;
            }
            match &outcome {
                Outcome::Ok => {}
                Outcome::Wrong(_) => k.wrong += 1,
                Outcome::FiveXx(_) => k.fivexx += 1,
                Outcome::BadBody(_) => k.bad_body += 1,
                Outcome::Transport(_) => k.transport += 1,
            }
        }
        let proto = if h2 { "h2" } else { "h1" };
        let detail = match outcome {
            Outcome::Ok => return,
            Outcome::Wrong(s) => format!("wrong decision: {kind} {proto} {}: {s}", plan.path),
            Outcome::FiveXx(s) => format!("unexpected 5xx: {kind} {proto} {}: {s}", plan.path),
            Outcome::BadBody(s) => format!("bad body: {kind} {proto} {}: {s}", plan.path),
            Outcome::Transport(s) => {
                let near = self.near_reload(t0, Instant::now());
                if let Some(after) = near {
                    self.stats.dropped_on_reload.fetch_add(1, Ordering::Relaxed);
                    format!(
                        "transport error {after:?} after a reload: {kind} {proto} {}: {s}",
                        plan.path
                    )
                } else {
                    self.stats.transport_other.fetch_add(1, Ordering::Relaxed);
                    format!("transport error: {kind} {proto} {}: {s}", plan.path)
                }
            }
        };
        self.stats.failed.fetch_add(1, Ordering::Relaxed);
        self.failure(detail);
    }
}

// ---------------------------------------------------------------------------------------
// The traffic mix

#[derive(Clone, Copy, PartialEq, Eq)]
enum Who {
    Plain = 0,
    Client = 1,
    Stranger = 2,
}

#[derive(Clone)]
enum Check {
    /// The status is enough.
    Status,
    /// 200 JSON echo: `X-Auth-Subject` as given (None: a forged one was stripped), and no
    /// credential header reached the upstream.
    Echo {
        subject: Option<&'static str>,
        body_len: usize,
    },
    /// `/big`: exactly this many bytes.
    Big(usize),
    /// `/stream`: these many chunks.
    Stream(u64),
}

struct Plan {
    kind: &'static str,
    who: Who,
    h1_only: bool,
    method: Method,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
    expect: u16,
    injected: bool,
    check: Check,
    websocket: bool,
    /// Concurrent copies of the request on one HTTP/2 connection.
    burst: usize,
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Weighted scenarios: (weight, name).
const MIX: &[(u64, &str)] = &[
    (6, "public"),
    (1, "h2 burst of 8 streams"),
    (3, "public upload"),
    (5, "basic ok"),
    (2, "basic upload"),
    (2, "basic wrong password"),
    (1, "basic unknown user"),
    (1, "basic missing"),
    (5, "api_key ok"),
    (2, "api_key upload"),
    (2, "api_key wrong key"),
    (1, "api_key no scope"),
    (1, "api_key missing"),
    (5, "jwt ok"),
    (1, "jwt bad signature"),
    (1, "jwt expired"),
    (1, "jwt wrong audience"),
    (1, "jwt no scope"),
    (4, "jwks ok"),
    (1, "jwks forged"),
    (1, "jwks unknown kid"),
    (4, "introspection ok"),
    (1, "introspection inactive"),
    (4, "mtls ok"),
    (1, "mtls stranger"),
    (1, "mtls missing"),
    (2, "all mtls+basic ok"),
    (1, "all mtls+basic wrong pw"),
    (1, "all basic without cert"),
    (2, "any opaque ok"),
    (1, "any jwks ok"),
    (1, "any wrong token"),
    (3, "big response"),
    (1, "big denied"),
    (1, "stream"),
    (1, "slow upstream"),
    (1, "no route"),
    (1, "injected 503"),
    (1, "injected 502 (/die)"),
    (2, "websocket"),
    (1, "websocket denied"),
];

impl Ctx {
    fn plan(&self, rng: &mut Rng) -> Plan {
        let total: u64 = MIX.iter().map(|(w, _)| w).sum();
        let mut pick = rng.below(total);
        let mut name = MIX[0].1;
        for &(w, n) in MIX {
            if pick < w {
                name = n;
                break;
            }
            pick -= w;
        }
        let c = &self.fx.creds;
        let mut p = Plan {
            kind: name,
            who: Who::Plain,
            h1_only: false,
            method: Method::GET,
            path: String::new(),
            headers: Vec::new(),
            body: Bytes::new(),
            expect: 200,
            injected: false,
            check: Check::Status,
            websocket: false,
            burst: 1,
        };
        let echo = |subject: Option<&'static str>| Check::Echo {
            subject,
            body_len: 0,
        };
        let n = rng.next() % 1000;
        match name {
            "public" => {
                p.path = format!("/public/item/{n}?q={n}");
                p.headers.push(("x-auth-subject", "forged".into()));
                p.check = echo(None);
            }
            "h2 burst of 8 streams" => {
                p.path = format!("/public/burst/{n}");
                p.burst = 8;
                p.check = echo(None);
            }
            "public upload" | "basic upload" | "api_key upload" => {
                let len = rng.range(4 * 1024, 256 * 1024) as usize;
                p.method = Method::POST;
                p.body = self.upload.slice(..len);
                p.headers
                    .push(("content-type", "application/octet-stream".into()));
                let subject = match name {
                    "basic upload" => {
                        p.path = format!("/basic/upload/{n}");
                        p.headers
                            .push(("authorization", basic("alice", &c.alice_password)));
                        Some("alice")
                    }
                    "api_key upload" => {
                        p.path = format!("/key/upload/{n}");
                        p.headers.push(("x-api-key", c.key_read.clone()));
                        Some("partner-read")
                    }
                    _ => {
                        p.path = format!("/public/upload/{n}");
                        p.headers.push(("x-auth-subject", "forged".into()));
                        None
                    }
                };
                p.check = Check::Echo {
                    subject,
                    body_len: len,
                };
            }
            "basic ok" => {
                p.path = format!("/basic/{n}");
                p.headers
                    .push(("authorization", basic("alice", &c.alice_password)));
                p.check = echo(Some("alice"));
            }
            "basic wrong password" => {
                p.path = format!("/basic/{n}");
                p.headers
                    .push(("authorization", basic("alice", "not-the-password")));
                p.expect = 401;
            }
            "basic unknown user" => {
                p.path = format!("/basic/{n}");
                p.headers
                    .push(("authorization", basic("mallory", &c.alice_password)));
                p.expect = 401;
            }
            "basic missing" => {
                p.path = format!("/basic/{n}");
                p.expect = 401;
            }
            "api_key ok" => {
                p.path = format!("/key/{n}");
                p.headers.push(("x-api-key", c.key_read.clone()));
                p.check = echo(Some("partner-read"));
            }
            "api_key wrong key" => {
                p.path = format!("/key/{n}");
                p.headers
                    .push(("x-api-key", format!("soak_{}", random_hex(16))));
                p.expect = 401;
            }
            "api_key no scope" => {
                p.path = format!("/key/{n}");
                p.headers.push(("x-api-key", c.key_no_scope.clone()));
                p.expect = 403;
            }
            "api_key missing" => {
                p.path = format!("/key/{n}");
                p.expect = 401;
            }
            "jwt ok" => {
                p.path = format!("/jwt/{n}");
                p.headers.push(("authorization", bearer(&c.hs_ok)));
                p.check = echo(Some("hs-user"));
            }
            "jwt bad signature" | "jwt expired" | "jwt wrong audience" => {
                p.path = format!("/jwt/{n}");
                let t = match name {
                    "jwt bad signature" => &c.hs_bad_signature,
                    "jwt expired" => &c.hs_expired,
                    _ => &c.hs_wrong_audience,
                };
                p.headers.push(("authorization", bearer(t)));
                p.expect = 401;
            }
            "jwt no scope" => {
                p.path = format!("/jwt/{n}");
                p.headers.push(("authorization", bearer(&c.hs_no_scope)));
                p.expect = 403;
            }
            "jwks ok" => {
                p.path = format!("/jwks/{n}");
                p.headers.push(("authorization", bearer(&c.jwks_ok)));
                p.check = echo(Some("jwks-user"));
            }
            "jwks forged" | "jwks unknown kid" => {
                p.path = format!("/jwks/{n}");
                let t = if name == "jwks forged" {
                    &c.jwks_forged
                } else {
                    &c.jwks_unknown_kid
                };
                p.headers.push(("authorization", bearer(t)));
                p.expect = 401;
            }
            "introspection ok" => {
                p.path = format!("/opaque/{n}");
                p.headers.push(("authorization", bearer(&c.opaque_ok)));
                p.check = echo(Some("opaque-user"));
            }
            "introspection inactive" => {
                p.path = format!("/opaque/{n}");
                p.headers.push((
                    "authorization",
                    bearer(&format!("soak-opaque-{}", random_hex(16))),
                ));
                p.expect = 401;
            }
            "mtls ok" => {
                p.who = Who::Client;
                p.path = format!("/mtls/{n}");
                p.check = echo(Some(CLIENT_URI));
            }
            "mtls stranger" => {
                p.who = Who::Stranger;
                p.path = format!("/mtls/{n}");
                p.expect = 403;
            }
            "mtls missing" => {
                p.path = format!("/mtls/{n}");
                p.expect = 401;
            }
            "all mtls+basic ok" => {
                p.who = Who::Client;
                p.path = format!("/both/{n}");
                p.headers
                    .push(("authorization", basic("alice", &c.alice_password)));
                p.check = echo(Some(CLIENT_URI));
            }
            "all mtls+basic wrong pw" => {
                p.who = Who::Client;
                p.path = format!("/both/{n}");
                p.headers.push(("authorization", basic("alice", "wrong")));
                p.expect = 401;
            }
            "all basic without cert" => {
                p.path = format!("/both/{n}");
                p.headers
                    .push(("authorization", basic("alice", &c.alice_password)));
                p.expect = 401;
            }
            "any opaque ok" => {
                p.path = format!("/any/{n}");
                p.headers.push(("authorization", bearer(&c.opaque_ok)));
                p.check = echo(Some("opaque-user"));
            }
            "any jwks ok" => {
                p.path = format!("/any/{n}");
                p.headers.push(("authorization", bearer(&c.jwks_ok)));
                p.check = echo(Some("jwks-user"));
            }
            "any wrong token" => {
                p.path = format!("/any/{n}");
                p.headers
                    .push(("authorization", bearer(&c.hs_bad_signature)));
                p.expect = 401;
            }
            "big response" => {
                let bytes = rng.range(4 * 1024, 2 * 1024 * 1024) as usize;
                p.path = format!("/big?bytes={bytes}");
                if rng.below(2) == 0 {
                    p.headers.push(("x-api-key", c.key_read.clone()));
                } else {
                    p.headers
                        .push(("authorization", basic("alice", &c.alice_password)));
                }
                p.check = Check::Big(bytes);
            }
            "big denied" => {
                p.path = "/big?bytes=1048576".into();
                p.headers.push(("x-api-key", "soak_nope".into()));
                p.expect = 401;
            }
            "stream" => {
                p.path = "/stream?chunks=20&delay_ms=50".into();
                p.check = Check::Stream(20);
            }
            "slow upstream" => {
                p.path = format!("/slow?ms={}", rng.range(200, 1500));
                p.check = echo(None);
            }
            "no route" => {
                p.path = format!("/nowhere/{n}");
                p.expect = 404;
            }
            "injected 503" => {
                p.path = "/status/503".into();
                p.expect = 503;
                p.injected = true;
            }
            "injected 502 (/die)" => {
                p.path = "/die".into();
                p.expect = 502;
                p.injected = true;
            }
            "websocket" => {
                p.path = "/ws".into();
                p.websocket = true;
                p.h1_only = true;
                p.expect = 101;
                p.headers.push(("authorization", bearer(&c.hs_ok)));
            }
            "websocket denied" => {
                p.path = "/ws".into();
                p.websocket = true;
                p.h1_only = true;
                p.expect = 401;
            }
            other => unreachable!("scenario {other}"),
        }
        p
    }
}

fn build_request(plan: &Plan, port: u16, h2: bool) -> Request<Full<Bytes>> {
    let mut b = Request::builder().method(plan.method.clone());
    b = if h2 {
        b.uri(format!("https://localhost:{port}{}", plan.path))
    } else {
        b.uri(plan.path.as_str())
            .header("host", format!("localhost:{port}"))
    };
    for (k, v) in &plan.headers {
        b = b.header(*k, v.as_str());
    }
    b.body(Full::new(plan.body.clone())).expect("request")
}

/// Judges a complete response against the plan.
fn judge(plan: &Plan, status: StatusCode, body: &[u8]) -> Outcome {
    let code = status.as_u16();
    if code != plan.expect {
        let snippet = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        let msg = format!("status {code}, expected {}: {snippet}", plan.expect);
        return if code >= 500 {
            Outcome::FiveXx(msg)
        } else {
            Outcome::Wrong(msg)
        };
    }
    match &plan.check {
        Check::Status => Outcome::Ok,
        Check::Big(n) => {
            if body.len() == *n && body.iter().all(|&b| b == b'x') {
                Outcome::Ok
            } else {
                Outcome::BadBody(format!("{} bytes, expected {n} x's", body.len()))
            }
        }
        Check::Stream(n) => {
            let want: String = (0..*n).map(|k| format!("chunk {k}\n")).collect();
            if body == want.as_bytes() {
                Outcome::Ok
            } else {
                Outcome::BadBody(format!("stream body of {} bytes differs", body.len()))
            }
        }
        Check::Echo { subject, body_len } => {
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
                return Outcome::BadBody("not the JSON echo".into());
            };
            if v["body_len"].as_u64() != Some(*body_len as u64) {
                return Outcome::BadBody(format!(
                    "upstream body_len {}, sent {body_len}",
                    v["body_len"]
                ));
            }
            let headers: Vec<(&str, &str)> = v["headers"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|h| Some((h[0].as_str()?, h[1].as_str()?)))
                        .collect()
                })
                .unwrap_or_default();
            let subjects: Vec<&str> = headers
                .iter()
                .filter(|(n, _)| *n == "x-auth-subject")
                .map(|(_, v)| *v)
                .collect();
            let ok = match subject {
                Some(s) => subjects == [*s],
                None => subjects.iter().all(|s| s.is_empty()),
            };
            if !ok {
                return Outcome::Wrong(format!(
                    "upstream saw X-Auth-Subject {subjects:?}, expected {subject:?}"
                ));
            }
            if subject.is_some()
                && headers
                    .iter()
                    .any(|(n, _)| *n == "authorization" || *n == "x-api-key")
            {
                return Outcome::Wrong("a consumed credential reached the upstream".into());
            }
            Outcome::Ok
        }
    }
}

async fn worker(ctx: Arc<Ctx>, id: usize) {
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15 ^ ((id as u64 + 1) * 0x1000_0001));
    let mut conns: [Option<Conn>; 6] = Default::default();
    let port = ctx.gw_addr.port();
    while !ctx.stop.load(Ordering::Relaxed) {
        let plan = ctx.plan(&mut rng);
        if plan.websocket {
            let t0 = Instant::now();
            let outcome = websocket(&ctx, &plan, &mut rng).await;
            ctx.record(plan.kind, &plan, false, outcome, t0);
            continue;
        }
        let h2 = plan.burst > 1 || (!plan.h1_only && rng.below(2) == 1);
        let slot = plan.who as usize * 2 + usize::from(h2);
        // Recycle before the gateway's idle timer could fire, and now and then anyway so
        // that new handshakes run all through the soak.
        if let Some(c) = &conns[slot] {
            if c.closing {
                ctx.stats.expected_closes.fetch_add(1, Ordering::Relaxed);
                conns[slot] = None;
            } else if c.last_used.elapsed() > RECYCLE_AFTER || c.uses >= 400 {
                ctx.stats.recycled.fetch_add(1, Ordering::Relaxed);
                conns[slot] = None;
            }
        }
        let t0 = Instant::now();
        if conns[slot].is_none() {
            ctx.stats.connects.fetch_add(1, Ordering::Relaxed);
            match Conn::open(
                ctx.gw_addr,
                ctx.tls[plan.who as usize][usize::from(h2)].clone(),
                h2,
            )
            .await
            {
                Ok(c) => conns[slot] = Some(c),
                Err(e) => {
                    ctx.record(
                        plan.kind,
                        &plan,
                        h2,
                        Outcome::Transport(format!("connect: {e:#}")),
                        t0,
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let conn = conns[slot].as_mut().expect("conn");
        if let Err(e) = conn.ready().await {
            // The gateway closed a connection it had no reason to close: between requests,
            // well before its idle timeout, after a response without `Connection: close`.
            ctx.stats
                .gateway_closed_between
                .fetch_add(1, Ordering::Relaxed);
            ctx.record(
                plan.kind,
                &plan,
                h2,
                Outcome::Transport(format!(
                    "keep-alive connection closed by the gateway between requests (idle {:?}): {e}",
                    conn.last_used.elapsed()
                )),
                t0,
            );
            conns[slot] = None;
            continue;
        }
        if let (Sender::H2(tx), true) = (&conn.sender, plan.burst > 1) {
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..plan.burst {
                let mut tx = tx.clone();
                let req = build_request(&plan, port, true);
                set.spawn(async move {
                    let t0 = Instant::now();
                    let exchange = async {
                        let resp = tx
                            .send_request(req)
                            .await
                            .map_err(|e| format!("request: {e}"))?;
                        let (parts, body) = resp.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map_err(|e| format!("response body after {}: {e}", parts.status))?
                            .to_bytes();
                        Ok::<_, String>((parts.status, body))
                    };
                    (t0, tokio::time::timeout(REQUEST_DEADLINE, exchange).await)
                });
            }
            let mut broken = false;
            while let Some(joined) = set.join_next().await {
                let (t0, result) = joined.expect("burst task");
                let outcome = match result {
                    Err(_) => Outcome::Transport(format!(
                        "no complete response within {REQUEST_DEADLINE:?}"
                    )),
                    Ok(Err(e)) => Outcome::Transport(e),
                    Ok(Ok((status, body))) => judge(&plan, status, &body),
                };
                broken |= matches!(outcome, Outcome::Transport(_));
                ctx.record(plan.kind, &plan, true, outcome, t0);
            }
            conn.last_used = Instant::now();
            conn.uses += plan.burst as u64;
            if broken {
                conns[slot] = None;
            }
            continue;
        }
        let req = build_request(&plan, port, h2);
        let exchange = async {
            let resp = conn.send(req).await.map_err(|e| format!("request: {e}"))?;
            let (parts, body) = resp.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| format!("response body after {}: {e}", parts.status))?
                .to_bytes();
            Ok::<_, String>((parts, body))
        };
        let result = tokio::time::timeout(REQUEST_DEADLINE, exchange).await;
        conn.last_used = Instant::now();
        conn.uses += 1;
        let outcome = match result {
            Err(_) => {
                Outcome::Transport(format!("no complete response within {REQUEST_DEADLINE:?}"))
            }
            Ok(Err(e)) => Outcome::Transport(e),
            Ok(Ok((parts, body))) => {
                if !h2
                    && parts
                        .headers
                        .get("connection")
                        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"))
                {
                    conn.closing = true;
                }
                judge(&plan, parts.status, &body)
            }
        };
        if matches!(outcome, Outcome::Transport(_)) {
            conns[slot] = None;
        }
        ctx.record(plan.kind, &plan, h2, outcome, t0);
    }
}

/// One WebSocket upgrade on a new HTTP/1.1 connection; on 101, a few messages echoed
/// through the tunnel, then a clean close.
async fn websocket(ctx: &Ctx, plan: &Plan, rng: &mut Rng) -> Outcome {
    let run = async {
        let (status, io) = ws_open(ctx, plan).await?;
        if status.as_u16() != plan.expect {
            return Ok(judge(plan, status, b""));
        }
        let Some(mut io) = io else {
            return Ok(Outcome::Ok);
        };
        for _ in 0..3 {
            let len = rng.range(1, 16 * 1024) as usize;
            ws_roundtrip(&mut io, &ctx.upload[..len]).await?;
        }
        io.shutdown().await.map_err(|e| format!("shutdown: {e}"))?;
        let mut rest = Vec::new();
        io.read_to_end(&mut rest)
            .await
            .map_err(|e| format!("reading the close: {e}"))?;
        if !rest.is_empty() {
            return Ok(Outcome::BadBody(format!(
                "{} stray bytes after close",
                rest.len()
            )));
        }
        ctx.stats.tunnels.fetch_add(1, Ordering::Relaxed);
        Ok(Outcome::Ok)
    };
    match tokio::time::timeout(REQUEST_DEADLINE, run).await {
        Err(_) => Outcome::Transport(format!("websocket not done within {REQUEST_DEADLINE:?}")),
        Ok(Err(e)) => Outcome::Transport(e),
        Ok(Ok(o)) => o,
    }
}

type WsIo = TokioIo<hyper::upgrade::Upgraded>;

/// Sends the upgrade request on a new connection; the tunnel when the answer is 101.
async fn ws_open(ctx: &Ctx, plan: &Plan) -> Result<(StatusCode, Option<WsIo>), String> {
    let tls = tls_connect(ctx.gw_addr, ctx.tls[0][0].clone())
        .await
        .map_err(|e| format!("connect: {e:#}"))?;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn.with_upgrades());
    let mut key = [0u8; 16];
    rand::fill(&mut key);
    let key = STANDARD.encode(key);
    let mut b = Request::get(plan.path.as_str())
        .header("host", format!("localhost:{}", ctx.gw_addr.port()))
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", key.as_str());
    for (k, v) in &plan.headers {
        b = b.header(*k, v.as_str());
    }
    let resp = tx
        .send_request(b.body(Full::new(Bytes::new())).expect("request"))
        .await
        .map_err(|e| format!("upgrade request: {e}"))?;
    let status = resp.status();
    if status != StatusCode::SWITCHING_PROTOCOLS {
        let _ = resp.into_body().collect().await;
        return Ok((status, None));
    }
    let accept = portcullis::echo::websocket_accept(key.as_bytes());
    if resp
        .headers()
        .get("sec-websocket-accept")
        .map(|v| v.as_bytes())
        != Some(accept.as_bytes())
    {
        return Err("101 without the right Sec-WebSocket-Accept".into());
    }
    let upgraded = hyper::upgrade::on(resp)
        .await
        .map_err(|e| format!("upgrade: {e}"))?;
    Ok((status, Some(TokioIo::new(upgraded))))
}

async fn ws_roundtrip(io: &mut WsIo, msg: &[u8]) -> Result<(), String> {
    io.write_all(msg)
        .await
        .map_err(|e| format!("tunnel write: {e}"))?;
    let mut back = vec![0u8; msg.len()];
    io.read_exact(&mut back)
        .await
        .map_err(|e| format!("tunnel read: {e}"))?;
    if back != msg {
        return Err("tunnel echoed different bytes".into());
    }
    Ok(())
}

/// Long-lived tunnels: each carries a message a second for ~30 s, across six reloads.
async fn long_tunnel(ctx: Arc<Ctx>, id: usize) {
    let mut rng = Rng::new(id as u64 * 7919 + 17);
    // Staggered so that the tunnels do not all open at once.
    tokio::time::sleep(Duration::from_millis(id as u64 * 1300)).await;
    let plan = Plan {
        kind: "websocket long-lived",
        who: Who::Plain,
        h1_only: true,
        method: Method::GET,
        path: "/ws".into(),
        headers: vec![("authorization", bearer(&ctx.fx.creds.hs_ok))],
        body: Bytes::new(),
        expect: 101,
        injected: false,
        check: Check::Status,
        websocket: true,
        burst: 1,
    };
    while !ctx.stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        let run = async {
            let (status, io) = ws_open(&ctx, &plan).await?;
            let Some(mut io) = io else {
                return Ok(judge(&plan, status, b""));
            };
            for _ in 0..30 {
                if ctx.stop.load(Ordering::Relaxed) {
                    break;
                }
                let len = rng.range(1, 512) as usize;
                ws_roundtrip(&mut io, &ctx.upload[..len]).await?;
                ctx.stats.tunnel_messages.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            io.shutdown().await.map_err(|e| format!("shutdown: {e}"))?;
            let mut rest = Vec::new();
            io.read_to_end(&mut rest)
                .await
                .map_err(|e| format!("reading the close: {e}"))?;
            ctx.stats.tunnels.fetch_add(1, Ordering::Relaxed);
            Ok::<_, String>(Outcome::Ok)
        };
        let outcome = match tokio::time::timeout(Duration::from_secs(90), run).await {
            Err(_) => Outcome::Transport("long tunnel stalled".into()),
            Ok(Err(e)) => {
                ctx.stats.tunnels_broken.fetch_add(1, Ordering::Relaxed);
                Outcome::Transport(e)
            }
            Ok(Ok(o)) => o,
        };
        ctx.record(plan.kind, &plan, false, outcome, t0);
    }
}

// ---------------------------------------------------------------------------------------
// Slow clients: each must be cut off within its configured timeout

const SLOW_KINDS: &[&str] = &[
    "silent h2 connection",
    "zero-window h2 stream",
    "stalled h1 reader",
    "silent h1 connection",
    "stalled h1 upload",
];

/// The bound each slow client is held to: the timeout, once more for the watchdog's
/// period, the graceful-close wait, and `SLACK`.
fn slow_bound(kind: &str) -> Duration {
    let close_wait = HEADER_READ_TIMEOUT.min(Duration::from_secs(5));
    match kind {
        "silent h2 connection" | "silent h1 connection" => {
            HEADER_READ_TIMEOUT * 2 + close_wait + SLACK
        }
        _ => IDLE_TIMEOUT * 2 + close_wait + SLACK,
    }
}

async fn slow_clients(ctx: Arc<Ctx>) {
    let mut i = 0usize;
    let mut tasks = Vec::new();
    tokio::time::sleep(Duration::from_secs(2)).await;
    while !ctx.stop.load(Ordering::Relaxed) {
        let kind = SLOW_KINDS[i % SLOW_KINDS.len()];
        i += 1;
        let c = ctx.clone();
        tasks.push(tokio::spawn(async move {
            let bound = slow_bound(kind);
            let t0 = Instant::now();
            let result = match kind {
                "silent h2 connection" => silent(&c, true, bound).await,
                "silent h1 connection" => silent(&c, false, bound).await,
                "zero-window h2 stream" => zero_window(&c, bound).await,
                "stalled h1 reader" => stalled_reader(&c, bound).await,
                _ => stalled_upload(&c, bound).await,
            };
            let mut slow = c.stats.slow.lock().unwrap();
            let s = slow.entry(kind).or_default();
            s.runs += 1;
            match result {
                Ok((after, how)) => {
                    s.cut += 1;
                    s.max_cut = s.max_cut.max(after);
                    *s.how.entry(how).or_default() += 1;
                }
                Err(e) => {
                    s.failed += 1;
                    drop(slow);
                    c.stats.slow_failed.fetch_add(1, Ordering::Relaxed);
                    c.failure(format!(
                        "slow client {kind} (started {:.1}s before): {e}",
                        t0.elapsed().as_secs_f64()
                    ));
                }
            }
        }));
        let until = Instant::now() + SLOW_EVERY;
        while Instant::now() < until && !ctx.stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// Reads (and discards) until EOF or an error; Ok(elapsed) if that came before `deadline`.
async fn wait_closed<R: tokio::io::AsyncRead + Unpin>(
    io: &mut R,
    t0: Instant,
    bound: Duration,
) -> Result<(Duration, String), String> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut first = Vec::new();
    loop {
        let left = bound.saturating_sub(t0.elapsed());
        match tokio::time::timeout(left, io.read(&mut buf)).await {
            Err(_) => return Err(format!("still open after {bound:?}")),
            Ok(Ok(0)) => {
                let how = if first.starts_with(b"HTTP/1.1 408") {
                    "408 then close".to_owned()
                } else if first.is_empty() {
                    "closed".to_owned()
                } else {
                    let head = String::from_utf8_lossy(&first[..first.len().min(12)]).into_owned();
                    format!("{head:?}... then close")
                };
                return Ok((t0.elapsed(), how));
            }
            Ok(Err(e)) => return Ok((t0.elapsed(), format!("reset ({})", e.kind()))),
            Ok(Ok(n)) => {
                if first.len() < 64 {
                    first.extend_from_slice(&buf[..n.min(64)]);
                }
            }
        }
    }
}

/// TLS handshake done (ALPN h2 or http/1.1), then nothing sent.
async fn silent(ctx: &Ctx, h2: bool, bound: Duration) -> Result<(Duration, String), String> {
    let t0 = Instant::now();
    let mut tls = tls_connect(ctx.gw_addr, ctx.tls[0][usize::from(h2)].clone())
        .await
        .map_err(|e| format!("connect: {e:#}"))?;
    let want: &[u8] = if h2 { b"h2" } else { b"http/1.1" };
    if tls.get_ref().1.alpn_protocol() != Some(want) {
        return Err("ALPN not negotiated".into());
    }
    wait_closed(&mut tls, t0, bound).await
}

/// An HTTP/2 client that opens with SETTINGS_INITIAL_WINDOW_SIZE = 0 and asks for 8 MiB:
/// the gateway can send the head but no body byte.
async fn zero_window(ctx: &Ctx, bound: Duration) -> Result<(Duration, String), String> {
    let tls = tls_connect(ctx.gw_addr, ctx.tls[0][1].clone())
        .await
        .map_err(|e| format!("connect: {e:#}"))?;
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, Bytes>(tls)
        .await
        .map_err(|e| format!("h2 handshake: {e}"))?;
    let t0 = Instant::now();
    let driver = tokio::spawn(async move {
        let r = connection.await;
        (Instant::now(), r.err().map(|e| e.to_string()))
    });
    let mut client = client.ready().await.map_err(|e| format!("h2 ready: {e}"))?;
    let req = Request::get(format!(
        "https://localhost:{}/big?bytes={}",
        ctx.gw_addr.port(),
        8 << 20
    ))
    .header("x-api-key", ctx.fx.creds.key_read.as_str())
    .body(())
    .expect("request");
    let (resp, _stream) = client
        .send_request(req, true)
        .map_err(|e| format!("h2 send: {e}"))?;
    // Keep the response (and so the stream) alive, never releasing capacity.
    let head = tokio::time::timeout(Duration::from_secs(10), resp).await;
    let _held = match head {
        Ok(Ok(r)) if r.status() == StatusCode::OK => r,
        Ok(Ok(r)) => return Err(format!("status {} to the zero-window request", r.status())),
        Ok(Err(e)) => return Err(format!("response head: {e}")),
        Err(_) => return Err("no response head within 10 s".into()),
    };
    let left = bound.saturating_sub(t0.elapsed());
    match tokio::time::timeout(left, driver).await {
        Ok(Ok((at, err))) => Ok((
            at.duration_since(t0),
            match err {
                None => "closed (GOAWAY/EOF)".into(),
                Some(e) => format!("connection error: {e}"),
            },
        )),
        Ok(Err(e)) => Err(format!("driver task: {e}")),
        Err(_) => Err(format!("still open after {bound:?}")),
    }
}

/// A raw HTTP/1.1 request on a socket with a 4 KiB receive buffer.
async fn raw_h1(ctx: &Ctx, request: &[u8]) -> Result<Tls, String> {
    let sock = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
    let _ = sock.set_recv_buffer_size(4096);
    let tcp = sock.connect(ctx.gw_addr).await.map_err(|e| e.to_string())?;
    let mut tls = tls_over(tcp, ctx.tls[0][0].clone())
        .await
        .map_err(|e| format!("connect: {e:#}"))?;
    tls.write_all(request)
        .await
        .map_err(|e| format!("write: {e}"))?;
    tls.flush().await.map_err(|e| format!("flush: {e}"))?;
    Ok(tls)
}

/// Asks for 64 MiB and reads nothing. Then, after `bound`, drains: a gateway that cut the
/// connection delivers less than the whole body and then EOF; one that did not would go on
/// sending, so the whole body arriving is a failure.
async fn stalled_reader(ctx: &Ctx, bound: Duration) -> Result<(Duration, String), String> {
    const BIG: u64 = 64 << 20;
    let req = format!(
        "GET /big?bytes={BIG} HTTP/1.1\r\nHost: localhost\r\nX-API-Key: {}\r\n\r\n",
        ctx.fx.creds.key_read
    );
    let mut tls = raw_h1(ctx, req.as_bytes()).await?;
    let t0 = Instant::now();
    let client_port = tls
        .get_ref()
        .0
        .local_addr()
        .map_err(|e| e.to_string())?
        .port();
    // The client cannot see the close while its window is zero, so the moment is read off
    // the gateway's side of the socket: it leaves ESTABLISHED when the gateway closes it.
    let mut cut_at = None;
    while t0.elapsed() < bound {
        if cut_at.is_none()
            && tcp_state(ctx.gw_addr.port(), client_port).is_none_or(|st| st != TCP_ESTABLISHED)
        {
            cut_at = Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut got: u64 = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await {
            Err(_) => {
                return Err(format!(
                    "neither cut nor sending after {bound:?} ({got} bytes read)"
                ));
            }
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got += n as u64,
        }
    }
    if got >= BIG {
        return Err(format!(
            "the whole {BIG}-byte body arrived: not cut within {bound:?}"
        ));
    }
    let Some(cut_at) = cut_at else {
        return Err(format!(
            "the gateway's socket was still ESTABLISHED after {bound:?} (and then {got} bytes arrived)"
        ));
    };
    Ok((
        cut_at,
        format!(
            "cut (~{:.0} MiB had reached the client)",
            got as f64 / f64::from(1 << 20)
        ),
    ))
}

const TCP_ESTABLISHED: u8 = 1;

/// State (`/proc/net/tcp` `st`) of the IPv4 socket with local port `local` and remote port
/// `remote`, if it exists.
fn tcp_state(local: u16, remote: u16) -> Option<u8> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let port = |a: &str| {
        a.rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
    };
    table.lines().skip(1).find_map(|l| {
        let mut f = l.split_whitespace().skip(1);
        let (loc, rem, st) = (f.next()?, f.next()?, f.next()?);
        (port(loc) == Some(local) && port(rem) == Some(remote))
            .then(|| u8::from_str_radix(st, 16).ok())
            .flatten()
    })
}

/// Announces a 100 kB body, sends 1,000 bytes, then pauses: 408 (or a close) expected.
async fn stalled_upload(ctx: &Ctx, bound: Duration) -> Result<(Duration, String), String> {
    let mut req =
        b"POST /public/upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n"
            .to_vec();
    req.extend_from_slice(&ctx.upload[..1000]);
    let mut tls = raw_h1(ctx, &req).await?;
    let t0 = Instant::now();
    wait_closed(&mut tls, t0, bound).await
}

// ---------------------------------------------------------------------------------------
// Reloads and sampling

async fn reloader(ctx: Arc<Ctx>, gw: Arc<Mutex<Gateway>>, every: Duration, admin: SocketAddr) {
    let path = ctx.fx.config_path();
    let mut variant = 1usize;
    let mut next = tokio::time::Instant::now() + every;
    let port = ctx.gw_addr.port();
    loop {
        tokio::time::sleep_until(next).await;
        next += every;
        if ctx.stop.load(Ordering::Relaxed) {
            return;
        }
        let problem = |msg: String| {
            ctx.stats.reload_problems.fetch_add(1, Ordering::Relaxed);
            ctx.failure(format!("reload to {}: {msg}", ["A", "B"][variant]));
        };
        let before = metric_at(admin, RELOADS_OK).await.unwrap_or(-1.0);
        if let Err(e) = std::fs::write(&path, ctx.fx.soak_config(variant)) {
            problem(format!("writing the config: {e}"));
            continue;
        }
        ctx.reload_times.lock().unwrap().push(Instant::now());
        let sent = gw.lock().unwrap().signal("HUP");
        if let Err(e) = sent {
            problem(format!("{e:#}"));
            continue;
        }
        ctx.stats.reloads_sent.fetch_add(1, Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(4);
        let mut applied = false;
        while Instant::now() < deadline {
            if metric_at(admin, RELOADS_OK).await.unwrap_or(before) > before {
                applied = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !applied {
            problem("not counted as a successful reload within 4 s".into());
        } else {
            // The new config is in force: its certificate and its marker route.
            match marker_check(&ctx, variant, port).await {
                Ok(()) => {
                    ctx.stats.reloads_confirmed.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => problem(e),
            }
        }
        if metric_at(admin, RELOADS_FAILED).await.unwrap_or(0.0) > 0.0 {
            problem("the gateway counted a failed reload".into());
        }
        variant = 1 - variant;
    }
}

async fn metric_at(admin: SocketAddr, sample: &str) -> anyhow::Result<f64> {
    let text = admin_get(admin, "/metrics").await?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(sample).and_then(|r| r.trim().parse().ok()))
        .unwrap_or(0.0))
}

async fn marker_check(ctx: &Ctx, variant: usize, port: u16) -> Result<(), String> {
    let mut conn = Conn::open(ctx.gw_addr, ctx.tls[0][0].clone(), false)
        .await
        .map_err(|e| format!("marker connect: {e:#}"))?;
    let (this, other) = if variant == 0 {
        ("/marker-a", "/marker-b")
    } else {
        ("/marker-b", "/marker-a")
    };
    for (path, want) in [(this, 200u16), (other, 404)] {
        let req = Request::get(path)
            .header("host", format!("localhost:{port}"))
            .body(Full::new(Bytes::new()))
            .expect("request");
        let resp = conn.send(req).await.map_err(|e| format!("marker: {e}"))?;
        let status = resp.status().as_u16();
        let _ = resp.into_body().collect().await;
        if status != want {
            return Err(format!("{path} answered {status}, expected {want}"));
        }
    }
    // The certificate: checked on a second connection so the first stays simple.
    let tls = tls_connect(ctx.gw_addr, ctx.tls[0][0].clone())
        .await
        .map_err(|e| format!("cert connect: {e:#}"))?;
    let served = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec());
    if served.as_deref() != Some(&ctx.fx.server_der[variant][..]) {
        return Err("new handshakes do not get the new config's certificate".into());
    }
    Ok(())
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

async fn sampler(
    ctx: Arc<Ctx>,
    gw: Arc<Mutex<Gateway>>,
    samples: Arc<Mutex<Vec<(Duration, Sample)>>>,
) {
    let mut next = tokio::time::Instant::now() + SAMPLE_EVERY;
    let mut last_requests = 0u64;
    while !ctx.stop.load(Ordering::Relaxed) {
        tokio::time::sleep_until(next).await;
        next += SAMPLE_EVERY;
        if ctx.stop.load(Ordering::Relaxed) {
            return;
        }
        let s = gw.lock().unwrap().sample();
        let at = ctx.start.elapsed();
        samples.lock().unwrap().push((at, s));
        let st = &ctx.stats;
        let requests = st.requests.load(Ordering::Relaxed);
        println!(
            "[{:5.0}s] requests {requests} ({:.0}/s), failures {}, reloads {}/{}, slow clients cut {}, rss {}, fds {}, threads {}",
            at.as_secs_f64(),
            (requests - last_requests) as f64 / SAMPLE_EVERY.as_secs_f64(),
            st.failed.load(Ordering::Relaxed)
                + st.slow_failed.load(Ordering::Relaxed)
                + st.reload_problems.load(Ordering::Relaxed),
            st.reloads_confirmed.load(Ordering::Relaxed),
            st.reloads_sent.load(Ordering::Relaxed),
            st.slow.lock().unwrap().values().map(|s| s.cut).sum::<u64>(),
            mib(s.rss_kib),
            s.fds,
            s.threads,
        );
        last_requests = requests;
    }
}

// ---------------------------------------------------------------------------------------
// The soak

async fn soak(args: &Args) -> anyhow::Result<i32> {
    let fx = Fixture::new().await?;
    std::fs::write(fx.config_path(), fx.soak_config(0))?;
    let gw = Gateway::start(&args.binary, &fx.config_path())?;
    let (gw_addr, admin, pid) = (gw.addr, gw.admin, gw.pid);
    println!(
        "soak: {} (pid {pid}) on {gw_addr}, admin {admin}, echo {}, idp {}; {} workers, {:.1} min, SIGHUP every {:?}; files in {}",
        args.binary.display(),
        fx.echo.addr,
        fx.idp.addr,
        args.workers,
        args.minutes,
        args.reload_every,
        fx.dir.path().display()
    );
    let tls = [
        [fx.tls(None, b"http/1.1"), fx.tls(None, b"h2")],
        [
            fx.tls(Some(&fx.client), b"http/1.1"),
            fx.tls(Some(&fx.client), b"h2"),
        ],
        [
            fx.tls(Some(&fx.stranger), b"http/1.1"),
            fx.tls(Some(&fx.stranger), b"h2"),
        ],
    ];
    let upload = Bytes::from(
        (0..256 * 1024)
            .map(|i| b'a' + (i % 26) as u8)
            .collect::<Vec<u8>>(),
    );
    // Let the first JWKS fetch finish before traffic (a 503 before the first fetch is the
    // documented fail-closed start, not what the soak measures).
    let ready_deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let body = admin_get(admin, "/readyz").await.unwrap_or_default();
        if fx.idp.jwks_fetches.load(Ordering::Relaxed) > 0 && !body.contains("authenticator") {
            break;
        }
        anyhow::ensure!(Instant::now() < ready_deadline, "gateway not ready: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let idle_start = gw.sample();
    let gw = Arc::new(Mutex::new(gw));
    let ctx = Arc::new(Ctx {
        fx,
        gw_addr,
        start: Instant::now(),
        stop: AtomicBool::new(false),
        stats: Stats::default(),
        reload_times: Mutex::new(Vec::new()),
        tls,
        upload,
    });
    let samples = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for id in 0..args.workers {
        tasks.push(tokio::spawn(worker(ctx.clone(), id)));
    }
    for id in 0..LONG_TUNNELS {
        tasks.push(tokio::spawn(long_tunnel(ctx.clone(), id)));
    }
    tasks.push(tokio::spawn(slow_clients(ctx.clone())));
    let reloads = tokio::spawn(reloader(ctx.clone(), gw.clone(), args.reload_every, admin));
    let sampling = tokio::spawn(sampler(ctx.clone(), gw.clone(), samples.clone()));

    tokio::time::sleep(Duration::from_secs_f64(args.minutes * 60.0)).await;
    let end_sample = gw.lock().unwrap().sample();
    let duration = ctx.start.elapsed();
    ctx.stop.store(true, Ordering::Relaxed);
    let _ = reloads.await;
    let _ = sampling.await;
    for t in tasks {
        let _ = t.await;
    }
    let drained_at = ctx.start.elapsed();
    // Quiet: client connections closed, the pool reaper halves idle upstream connections
    // every 5 s. What is left should be what was there before the traffic.
    tokio::time::sleep(IDLE_TIMEOUT * 2 + Duration::from_secs(20)).await;
    let mut gw = Arc::try_unwrap(gw)
        .map_err(|_| anyhow::anyhow!("gateway handle still shared"))?
        .into_inner()
        .unwrap();
    let quiet = gw.sample();
    let active = metric_at(admin, "portcullis_active_connections")
        .await
        .unwrap_or(-1.0);
    let exit = gw.stop(Duration::from_secs(15)).await;
    let log = {
        let l = gw.log.lock().unwrap();
        (l.warnings, l.errors, l.samples.clone())
    };
    let samples = samples.lock().unwrap().clone();
    let code = report(
        &ctx, args, duration, drained_at, idle_start, &samples, end_sample, quiet, active, &exit,
        log,
    );
    if args.keep {
        let kept = ctx.fx.dir.path().to_path_buf();
        println!("files kept in {}", kept.display());
        std::mem::forget(Arc::clone(&ctx));
    }
    Ok(code)
}

#[allow(clippy::too_many_arguments)]
fn report(
    ctx: &Ctx,
    args: &Args,
    duration: Duration,
    drained_at: Duration,
    idle_start: Sample,
    samples: &[(Duration, Sample)],
    end: Sample,
    quiet: Sample,
    active_after: f64,
    exit: &str,
    (warnings, errors, log_samples): (u64, u64, Vec<String>),
) -> i32 {
    let st = &ctx.stats;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n== soak: {:.1} min of traffic, {} workers, SIGHUP every {:?} ==\n",
        duration.as_secs_f64() / 60.0,
        args.workers,
        args.reload_every
    );
    let _ = writeln!(
        out,
        "| kind | expected | HTTP/1.1 | HTTP/2 | wrong decision | unexpected 5xx | bad body | transport error |"
    );
    let _ = writeln!(
        out,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    let kinds = st.kinds.lock().unwrap();
    let mut total = KindStats::default();
    let mut injected = 0u64;
    for (name, k) in kinds.iter() {
        let expect = if k.injected {
            format!("{} (injected)", k.expect)
        } else {
            k.expect.to_string()
        };
        let _ = writeln!(
            out,
            "| {name} | {expect} | {} | {} | {} | {} | {} | {} |",
            k.h1, k.h2, k.wrong, k.fivexx, k.bad_body, k.transport
        );
        total.h1 += k.h1;
        total.h2 += k.h2;
        total.wrong += k.wrong;
        total.fivexx += k.fivexx;
        total.bad_body += k.bad_body;
        total.transport += k.transport;
        if k.injected {
            injected += k.h1 + k.h2 - k.wrong - k.fivexx - k.transport;
        }
    }
    let requests = total.h1 + total.h2;
    let _ = writeln!(
        out,
        "| **total** | | {} | {} | {} | {} | {} | {} |",
        total.h1, total.h2, total.wrong, total.fivexx, total.bad_body, total.transport
    );
    drop(kinds);

    let _ = writeln!(
        out,
        "\n| slow client | runs | cut off | failed | bound | slowest cut | how |"
    );
    let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: | ---: | --- |");
    for (name, s) in st.slow.lock().unwrap().iter() {
        let how: Vec<String> = s.how.iter().map(|(h, n)| format!("{h} ×{n}")).collect();
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {:?} | {:.1} s | {} |",
            s.runs,
            s.cut,
            s.failed,
            slow_bound(name),
            s.max_cut.as_secs_f64(),
            how.join(", ")
        );
    }

    let after_warm = samples
        .iter()
        .find(|(at, _)| *at >= WARM_UP)
        .map(|(_, s)| *s)
        .unwrap_or(end);
    let warm_at = samples
        .iter()
        .find(|(at, _)| *at >= WARM_UP)
        .map_or(duration, |(at, _)| *at);
    let load: Vec<&Sample> = samples
        .iter()
        .filter(|(at, _)| *at >= WARM_UP)
        .map(|(_, s)| s)
        .collect();
    let rss_max = load.iter().map(|s| s.rss_kib).max().unwrap_or(end.rss_kib);
    let rss_min = load.iter().map(|s| s.rss_kib).min().unwrap_or(end.rss_kib);
    let fd_max = load.iter().map(|s| s.fds).max().unwrap_or(end.fds);
    let fd_min = load.iter().map(|s| s.fds).min().unwrap_or(end.fds);
    let trend = |from: Duration| {
        slope_per_minute(
            &samples
                .iter()
                .filter(|(at, _)| *at >= from)
                .map(|(at, s)| (at.as_secs_f64(), s.rss_kib as f64))
                .collect::<Vec<_>>(),
        )
        .map_or("too few samples".into(), |k| format!("{k:+.1} KiB/min"))
    };
    let (slope, slope_late) = (trend(WARM_UP), trend(duration / 2));
    let dropped = st.dropped_on_reload.load(Ordering::Relaxed);
    let other_transport = st.transport_other.load(Ordering::Relaxed);
    let reload_problems = st.reload_problems.load(Ordering::Relaxed);
    let slow_failed = st.slow_failed.load(Ordering::Relaxed);
    let _ = writeln!(out, "\n| measure | value |");
    let _ = writeln!(out, "| --- | ---: |");
    let rows: Vec<(&str, String)> = vec![
        (
            "requests (WebSocket upgrades included)",
            requests.to_string(),
        ),
        (
            "requests/s",
            format!("{:.0}", requests as f64 / duration.as_secs_f64()),
        ),
        ("wrong decisions", total.wrong.to_string()),
        ("bad bodies / identities", total.bad_body.to_string()),
        ("5xx, not injected", total.fivexx.to_string()),
        ("5xx injected (as expected)", injected.to_string()),
        (
            "transport errors within 1 s of a reload (dropped by a reload)",
            dropped.to_string(),
        ),
        ("other transport errors", other_transport.to_string()),
        (
            "  of which: keep-alive connection closed between requests",
            st.gateway_closed_between
                .load(Ordering::Relaxed)
                .to_string(),
        ),
        (
            "reloads signalled / confirmed (metric, marker route, certificate)",
            format!(
                "{} / {}",
                st.reloads_sent.load(Ordering::Relaxed),
                st.reloads_confirmed.load(Ordering::Relaxed)
            ),
        ),
        ("reload problems", reload_problems.to_string()),
        ("slow clients not cut off in time", slow_failed.to_string()),
        (
            "client connections opened",
            st.connects.load(Ordering::Relaxed).to_string(),
        ),
        (
            "  closed by the client before the idle timeout / after Connection: close",
            format!(
                "{} / {}",
                st.recycled.load(Ordering::Relaxed),
                st.expected_closes.load(Ordering::Relaxed)
            ),
        ),
        (
            "WebSocket tunnels completed / long-tunnel messages / broken",
            format!(
                "{} / {} / {}",
                st.tunnels.load(Ordering::Relaxed),
                st.tunnel_messages.load(Ordering::Relaxed),
                st.tunnels_broken.load(Ordering::Relaxed)
            ),
        ),
        (
            "JWKS fetches / introspection calls",
            format!(
                "{} / {}",
                ctx.fx.idp.jwks_fetches.load(Ordering::Relaxed),
                ctx.fx.idp.introspections.load(Ordering::Relaxed)
            ),
        ),
        (
            "RSS / fds before traffic",
            format!("{} / {}", mib(idle_start.rss_kib), idle_start.fds),
        ),
        (
            "RSS / fds at end of warm-up",
            format!(
                "{} / {} (at {:.0} s)",
                mib(after_warm.rss_kib),
                after_warm.fds,
                warm_at.as_secs_f64()
            ),
        ),
        (
            "RSS / fds at end of traffic",
            format!(
                "{} / {} (at {:.0} s)",
                mib(end.rss_kib),
                end.fds,
                duration.as_secs_f64()
            ),
        ),
        (
            "RSS min–max / fds min–max after warm-up",
            format!("{}–{} / {}–{}", mib(rss_min), mib(rss_max), fd_min, fd_max),
        ),
        (
            "RSS / fds after the traffic, quiet (drained + 26 s)",
            format!(
                "{} / {} (at {:.0} s; active connections {active_after})",
                mib(quiet.rss_kib),
                quiet.fds,
                drained_at.as_secs_f64() + 26.0
            ),
        ),
        (
            "RSS trend after warm-up / over the second half (least squares)",
            format!("{slope} / {slope_late}"),
        ),
        ("RSS high-water mark", mib(quiet.hwm_kib.max(end.hwm_kib))),
        ("gateway exit on SIGTERM", exit.to_owned()),
        (
            "gateway log lines at WARN / ERROR",
            format!("{warnings} / {errors}"),
        ),
    ];
    for (k, v) in rows {
        let _ = writeln!(out, "| {k} | {v} |");
    }
    let _ = writeln!(out, "\nRSS and fds every {SAMPLE_EVERY:?}:");
    for (at, s) in samples {
        let _ = write!(
            out,
            " {:.0}s:{}/{}",
            at.as_secs_f64(),
            s.rss_kib / 1024,
            s.fds
        );
    }
    let _ = writeln!(out, " (MiB/fds)");
    let failures = st.failures.lock().unwrap();
    if !failures.is_empty() {
        let _ = writeln!(out, "\nFirst failures ({} kept):", failures.len());
        for f in failures.iter().take(60) {
            let _ = writeln!(out, "  {f}");
        }
    }
    if !log_samples.is_empty() {
        let _ = writeln!(
            out,
            "\nGateway WARN/ERROR lines (first {}):",
            log_samples.len()
        );
        for l in &log_samples {
            let _ = writeln!(out, "  {l}");
        }
    }
    // An idle descriptor budget: the long-lived client connections are gone, the upstream
    // pool has been reaped; a leak of one descriptor per reload or per slow client would
    // show here as dozens.
    let fd_leak = quiet.fds > idle_start.fds + 16;
    let bad = total.wrong
        + total.fivexx
        + total.bad_body
        + total.transport
        + reload_problems
        + slow_failed
        + u64::from(fd_leak)
        + u64::from(!exit.contains("exit status: 0"));
    let _ = writeln!(
        out,
        "\nverdict: {}",
        if bad == 0 {
            "PASS".to_owned()
        } else {
            format!(
                "FAIL ({} wrong, {} unexpected 5xx, {} bad bodies, {} transport errors ({dropped} near a reload), {reload_problems} reload problems, {slow_failed} slow clients not cut{}{})",
                total.wrong,
                total.fivexx,
                total.bad_body,
                total.transport,
                if fd_leak {
                    ", descriptors not back to the idle level"
                } else {
                    ""
                },
                if exit.contains("exit status: 0") {
                    ""
                } else {
                    ", bad exit"
                },
            )
        }
    );
    print!("{out}");
    i32::from(bad != 0)
}

/// Least-squares slope of `(seconds, KiB)` points, in KiB per minute.
fn slope_per_minute(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 3 {
        return None;
    }
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    (sxx > 0.0).then(|| sxy / sxx * 60.0)
}

// ---------------------------------------------------------------------------------------
// --hold N

/// Open files allowed to this process (soft limit).
fn nofile_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// One keep-alive `GET` on a raw TLS stream; the response read whole.
async fn hold_get(tls: &mut Tls, path: &str) -> Result<(), String> {
    tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    loop {
        let n = tls
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            if !head.starts_with("http/1.1 200") {
                return Err(format!("answer {:?}", head.lines().next()));
            }
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .ok_or("no content-length")?;
            while buf.len() < end + 4 + len {
                let n = tls
                    .read(&mut chunk)
                    .await
                    .map_err(|e| format!("read: {e}"))?;
                if n == 0 {
                    return Err("closed mid-body".into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Ok(());
        }
    }
}

/// What one round of `--hold` measured.
struct Round {
    opened: usize,
    failed: u64,
    open_secs: f64,
    active: f64,
    idle: Sample,
    later: Sample,
    second_ok: u64,
    after_second: Sample,
    closed: Sample,
}

/// Opens `n` connections (one request each), holds them idle, asks again on every one,
/// closes them all.
async fn hold_round(
    gw: &Gateway,
    cfg: &Arc<rustls::ClientConfig>,
    n: usize,
    hold_secs: u64,
) -> Round {
    let held: Arc<Mutex<Vec<Tls>>> = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let failed = Arc::new(AtomicU64::new(0));
    let sem = Arc::new(Semaphore::new(128));
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let permit = sem.clone().acquire_owned().await.expect("semaphore");
        let (cfg, held, failed, addr) = (cfg.clone(), held.clone(), failed.clone(), gw.addr);
        tasks.push(tokio::spawn(async move {
            let r = async {
                let mut t = tls_connect(addr, cfg).await.map_err(|e| format!("{e:#}"))?;
                hold_get(&mut t, &format!("/hold/{i}")).await?;
                Ok::<_, String>(t)
            }
            .await;
            drop(permit);
            match r {
                Ok(t) => held.lock().unwrap().push(t),
                Err(e) => {
                    if failed.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!("connection {i}: {e}");
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let opened = held.lock().unwrap().len();
    let open_secs = t0.elapsed().as_secs_f64();
    println!(
        "opened {opened} connections ({} failed) in {open_secs:.1} s",
        failed.load(Ordering::Relaxed)
    );
    // Idle: HTTP/1.1 connections park after 250 ms; the upstream pool's burst surplus is
    // reaped (half every 5 s).
    tokio::time::sleep(Duration::from_secs(20)).await;
    let idle = gw.sample();
    let active = gw
        .metric("portcullis_active_connections")
        .await
        .unwrap_or(-1.0);
    println!(
        "held idle: rss {}, fds {}, active {active}",
        mib(idle.rss_kib),
        idle.fds
    );
    tokio::time::sleep(Duration::from_secs(hold_secs.saturating_sub(20))).await;
    let later = gw.sample();

    // A second request on every held connection: all of them must still work.
    let conns: Vec<Tls> = std::mem::take(&mut *held.lock().unwrap());
    let ok = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(n);
    for (i, mut t) in conns.into_iter().enumerate() {
        let permit = sem.clone().acquire_owned().await.expect("semaphore");
        let (ok, held) = (ok.clone(), held.clone());
        tasks.push(tokio::spawn(async move {
            let r = tokio::time::timeout(
                Duration::from_secs(30),
                hold_get(&mut t, &format!("/again/{i}")),
            )
            .await;
            drop(permit);
            match r {
                Ok(Ok(())) => {
                    ok.fetch_add(1, Ordering::Relaxed);
                    held.lock().unwrap().push(t);
                }
                Ok(Err(e)) => eprintln!("second request on connection {i}: {e}"),
                Err(_) => eprintln!("second request on connection {i}: timed out"),
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let second_ok = ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_second = gw.sample();
    drop(std::mem::take(&mut *held.lock().unwrap()));
    tokio::time::sleep(Duration::from_secs(15)).await;
    let closed = gw.sample();
    println!("closed: rss {}, fds {}", mib(closed.rss_kib), closed.fds);
    Round {
        opened,
        failed: failed.load(Ordering::Relaxed),
        open_secs,
        active,
        idle,
        later,
        second_ok,
        after_second,
        closed,
    }
}

async fn hold(args: &Args, n: usize) -> anyhow::Result<i32> {
    let limit = nofile_limit();
    anyhow::ensure!(
        limit >= n as u64 + 1000,
        "open-file limit {limit} is too low for {n} connections: raise it (ulimit -n 65536; benches/soak.sh does)"
    );
    let fx = Fixture::new().await?;
    let path = fx.dir.path().join("hold.toml");
    std::fs::write(&path, fx.hold_config(n))?;
    let mut gw = Gateway::start(&args.binary, &path)?;
    println!(
        "hold: {} (pid {}) on {}, {n} connections, {} rounds, open-file limit {limit}",
        args.binary.display(),
        gw.pid,
        gw.addr,
        args.hold_rounds
    );
    let cfg = fx.tls(None, b"http/1.1");
    // Warm the process up (allocator arenas, the upstream pool) with a few connections.
    for _ in 0..20 {
        let mut t = tls_connect(gw.addr, cfg.clone()).await?;
        hold_get(&mut t, "/warm")
            .await
            .map_err(anyhow::Error::msg)?;
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    let before = gw.sample();
    println!("before: rss {}, fds {}", mib(before.rss_kib), before.fds);
    let mut rounds = Vec::new();
    for r in 1..=args.hold_rounds {
        println!("round {r}:");
        rounds.push(hold_round(&gw, &cfg, n, args.hold_secs).await);
    }
    let hwm = gw.sample().hwm_kib;
    let exit = gw.stop(Duration::from_secs(15)).await;

    let per_conn = |s: &Sample, opened: usize| {
        (s.rss_kib as f64 - before.rss_kib as f64) / (opened.max(1) as f64)
    };
    println!(
        "\n== hold: {n} concurrent TLS connections (HTTP/1.1 keep-alive, one request each, then idle), {} rounds in one process ==\n",
        rounds.len()
    );
    let mut head = "| measure |".to_owned();
    let mut rule = "| --- |".to_owned();
    for r in 1..=rounds.len() {
        let _ = write!(head, " round {r} |");
        rule.push_str(" ---: |");
    }
    println!("{head}\n{rule}");
    let row = |name: &str, f: &dyn Fn(&Round) -> String| {
        let cells: Vec<String> = rounds.iter().map(f).collect();
        println!("| {name} | {} |", cells.join(" | "));
    };
    row("connections opened / failed", &|r| {
        format!("{} / {}", r.opened, r.failed)
    });
    row("time to open (128 handshakes in flight)", &|r| {
        format!("{:.1} s", r.open_secs)
    });
    row("gateway active connections (metric)", &|r| {
        r.active.to_string()
    });
    row(
        &format!(
            "RSS (before: {}) with all held idle, after 20 s",
            mib(before.rss_kib)
        ),
        &|r| mib(r.idle.rss_kib),
    );
    row("  per connection", &|r| {
        format!("{:.1} KiB", per_conn(&r.idle, r.opened))
    });
    row(
        &format!("RSS after {} s held", args.hold_secs.max(20)),
        &|r| {
            format!(
                "{} ({:.1} KiB per connection)",
                mib(r.later.rss_kib),
                per_conn(&r.later, r.opened)
            )
        },
    );
    row("second request on every connection: ok", &|r| {
        format!("{} / {}", r.second_ok, r.opened)
    });
    row("RSS after the second round of requests", &|r| {
        mib(r.after_second.rss_kib)
    });
    row("RSS 15 s after closing them all", &|r| {
        mib(r.closed.rss_kib)
    });
    row(
        &format!("fds (before: {}) held / after close", before.fds),
        &|r| format!("{} / {}", r.idle.fds, r.closed.fds),
    );
    row("gateway threads", &|r| r.idle.threads.to_string());
    println!("\n| RSS high-water mark | {} |", mib(hwm));
    println!("| gateway exit on SIGTERM | {exit} |");
    let good = rounds
        .iter()
        .all(|r| r.opened == n && r.second_ok == r.opened as u64)
        && exit.contains("exit status: 0");
    println!("\nverdict: {}", if good { "PASS" } else { "FAIL" });
    Ok(i32::from(!good))
}
