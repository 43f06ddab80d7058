//! Credential hot paths: the cached basic check (one HMAC + map lookup + constant-time
//! compare) against the uncached argon2id verify it avoids, and the API-key lookup by
//! digest among 10,000 keys against a naive linear constant-time scan.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis::auth::api_key::ApiKey;
use portcullis::auth::basic::Basic;
use portcullis::credentials::{hash_password, new_api_key};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

fn basic(c: &mut Criterion) {
    // OWASP defaults, as `hash-password` produces.
    let hash = hash_password("correct horse battery", 19_456, 2, 1).unwrap();
    let b = Basic::new(
        "staff",
        "staff",
        &[("alice".to_string(), hash)],
        Duration::from_secs(300),
        10_000,
    )
    .unwrap();
    assert!(b.verify_uncached("alice", b"correct horse battery"));
    let mut g = c.benchmark_group("basic");
    g.bench_function("cached_check", |bch| {
        bch.iter(|| b.verify_cached(black_box("alice"), black_box(b"correct horse battery")))
    });
    g.bench_function("cache_miss_check", |bch| {
        bch.iter(|| b.verify_cached(black_box("alice"), black_box(b"wrong horse battery")))
    });
    g.sample_size(10);
    g.bench_function("uncached_argon2id_m19456_t2_p1", |bch| {
        bch.iter(|| b.verify_uncached(black_box("alice"), black_box(b"wrong horse battery")))
    });
    g.finish();
}

fn api_keys(c: &mut Criterion) {
    let mut keys = Vec::with_capacity(10_000);
    let mut plain = Vec::with_capacity(10_000);
    for i in 0..10_000 {
        let (k, h) = new_api_key("pk");
        keys.push((format!("client-{i}"), h, vec!["orders:read".to_string()]));
        plain.push(k);
    }
    let a = ApiKey::from_hashes("x-api-key", &keys).unwrap();
    let present = plain[7_777].clone();
    let (absent, _) = new_api_key("pk");
    assert_eq!(a.lookup(present.as_bytes()), Some("client-7777"));
    let digests: Vec<[u8; 32]> = plain
        .iter()
        .map(|k| Sha256::digest(k.as_bytes()).into())
        .collect();
    let mut g = c.benchmark_group("api_key_10000");
    g.bench_function("lookup_hit", |bch| {
        bch.iter(|| a.lookup(black_box(present.as_bytes())))
    });
    g.bench_function("lookup_miss", |bch| {
        bch.iter(|| a.lookup(black_box(absent.as_bytes())))
    });
    g.bench_function("naive_linear_ct_scan_hit", |bch| {
        bch.iter(|| {
            let d: [u8; 32] = Sha256::digest(black_box(present.as_bytes())).into();
            digests.iter().position(|x| bool::from(x.ct_eq(&d)))
        })
    });
    g.finish();
}

criterion_group!(benches, basic, api_keys);
criterion_main!(benches);
