//! Token hot paths: a cached JWT check against the uncached RS256 / ES256 verification it
//! replaces, and a cached introspection verdict.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::Full;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use portcullis::auth::memo::Memo;
use portcullis::auth::{BuildContext, Outcome, introspection, jwt};
use portcullis::config::Problems;
use rcgen::KeyPair;
use serde_json::{Map, Value, json};

/// Polls a future that must complete without waiting (the cached paths never await).
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("cached path awaited"),
    }
}

fn claims() -> Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    json!({"iss": "https://issuer.test/", "aud": "api", "sub": "alice", "exp": now + 3600,
           "scope": "orders:read orders:write", "tenant": "acme"})
}

fn validation(alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.set_issuer(&["https://issuer.test/"]);
    v.set_audience(&["api"]);
    v.validate_nbf = true;
    v.leeway = 30;
    v
}

fn ctx() -> BuildContext {
    BuildContext {
        config_dir: ".".into(),
        client_auth: None,
    }
}

fn bench_jwt(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    for (name, alg, sig) in [
        ("rs256", Algorithm::RS256, &rcgen::PKCS_RSA_SHA256),
        ("es256", Algorithm::ES256, &rcgen::PKCS_ECDSA_P256_SHA256),
    ] {
        let kp = KeyPair::generate_for(sig).unwrap();
        let pem = kp.serialize_pem();
        let enc = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
            _ => EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
        };
        let token = jsonwebtoken::encode(&Header::new(alg), &claims(), &enc).unwrap();
        let pub_pem = kp.public_key_pem();
        let dec = match alg {
            Algorithm::RS256 => DecodingKey::from_rsa_pem(pub_pem.as_bytes()).unwrap(),
            _ => DecodingKey::from_ec_pem(pub_pem.as_bytes()).unwrap(),
        };
        let v = validation(alg);
        c.bench_function(&format!("jwt/uncached_{name}_verify"), |b| {
            b.iter(|| {
                jsonwebtoken::decode::<Map<String, Value>>(black_box(&token), &dec, &v).unwrap()
            })
        });

        let path = dir.path().join(format!("{name}.pem"));
        std::fs::write(&path, &pub_pem).unwrap();
        let r = jwt::Raw {
            kind: "jwt".into(),
            public_key_file: Some(path.display().to_string()),
            issuer: Some("https://issuer.test/".into()),
            audiences: Some(vec!["api".into()]),
            forward_claims: Some([("tenant".to_string(), "X-Tenant".to_string())].into()),
            ..Default::default()
        };
        let mut p = Problems::default();
        let a = jwt::Settings::read("idp", r, "a", &ctx(), &mut p)
            .unwrap()
            .build("idp")
            .unwrap();
        assert!(matches!(
            ready(a.authenticate_token(token.as_str().into(), &Memo::default())),
            Outcome::Admit(_)
        ));
        // A new connection's first request (an empty memo: SHA-256 and the shared cache),
        // then a keep-alive connection's next ones (the memo answers).
        c.bench_function(&format!("jwt/cached_{name}_check"), |b| {
            b.iter(|| {
                let memo = Memo::default();
                match ready(a.authenticate_token(black_box(token.as_str()).into(), &memo)) {
                    Outcome::Admit(id) => id,
                    _ => panic!("not admitted"),
                }
            })
        });
        let memo = Memo::default();
        c.bench_function(&format!("jwt/memo_{name}_check"), |b| {
            b.iter(
                || match ready(a.authenticate_token(black_box(token.as_str()).into(), &memo)) {
                    Outcome::Admit(id) => id,
                    _ => panic!("not admitted"),
                },
            )
        });
    }
}

fn bench_introspection(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let addr = rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = l.accept().await {
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from_static(
                                br#"{"active":true,"sub":"carol","scope":"orders:read"}"#,
                            ),
                        )))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        addr
    });
    let r = introspection::Raw {
        kind: "introspection".into(),
        endpoint: Some(format!("http://{addr}/introspect")),
        client_id: Some("gw".into()),
        client_secret: Some("s3cret".into()),
        ..Default::default()
    };
    let mut p = Problems::default();
    let a = introspection::Settings::read("opaque", r, "a", &ctx(), &mut p)
        .unwrap()
        .build("opaque")
        .unwrap();
    let token = "opaque-token-0123456789abcdef0123456789abcdef";
    let _guard = rt.enter();
    assert!(
        rt.block_on(a.verdict(token.into(), &Memo::default()))
            .is_some()
    );
    c.bench_function("introspection/cached_check", |b| {
        b.iter(|| ready(a.verdict(black_box(token).into(), &Memo::default())).unwrap())
    });
}

criterion_group!(benches, bench_jwt, bench_introspection);
criterion_main!(benches);
