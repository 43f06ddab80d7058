//! Micro-benchmarks of the request path's pure parts, each against the naive way where one
//! exists: route matching over 200 routes, path canonicalization, header rewriting, the
//! `none` auth pipeline, request-id formatting and the access-log event.
//!
//! `CARGO_TARGET_DIR=/work/main/target cargo bench --bench gateway`

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Uri};
use portcullis::auth::pipeline::{DecisionCounters, Member, Pipeline};
use portcullis::auth::{Authenticator, RequestView, Services, none::NoneAuth};
use portcullis::config::{AuthExpr, Lockout, Require};
use portcullis::conn::ConnInfo;
use portcullis::metrics::Metrics;
use portcullis::proxy::headers;
use portcullis::route::Matcher;

fn routes() -> Vec<Matcher> {
    (0..200)
        .map(|i| Matcher {
            prefix: format!("/svc{i}/api"),
            methods: if i % 3 == 0 {
                vec![Method::GET, Method::HEAD]
            } else {
                Vec::new()
            },
            host: (i % 5 == 0).then(|| "api.example.com".to_string()),
        })
        .collect()
}

/// The naive matcher: a fresh `prefix + "/"` string per route, methods compared as strings.
fn naive_match(m: &Matcher, path: &str, method: &Method, host: Option<&str>) -> bool {
    let with_slash = format!("{}/", m.prefix);
    (path == m.prefix || path.starts_with(&with_slash) || m.prefix == "/")
        && (m.methods.is_empty()
            || m.methods
                .iter()
                .map(|x| x.to_string())
                .any(|x| x == method.as_str()))
        && m.host
            .as_ref()
            .is_none_or(|w| host.is_some_and(|h| h.to_lowercase() == w.to_lowercase()))
}

fn bench_routes(c: &mut Criterion) {
    let table = routes();
    let mut g = c.benchmark_group("route_match_200");
    for (label, path) in [
        ("first", "/svc1/api/orders/1"),
        ("middle", "/svc101/api/orders/1"),
        ("last", "/svc199/api/orders/1"),
        ("miss", "/nope/orders/1"),
    ] {
        g.bench_function(format!("matcher/{label}"), |b| {
            b.iter(|| {
                table
                    .iter()
                    .position(|m| m.matches(black_box(path), &Method::GET, Some("api.example.com")))
            })
        });
        g.bench_function(format!("naive/{label}"), |b| {
            b.iter(|| {
                table.iter().position(|m| {
                    naive_match(m, black_box(path), &Method::GET, Some("api.example.com"))
                })
            })
        });
    }
    g.finish();
}

/// The naive canonicalizer: always decode into a new String, split into a Vec of segments,
/// check each, join again.
fn naive_canonicalize(raw: &str) -> Result<String, &'static str> {
    if !raw.starts_with('/') {
        return Err("no slash");
    }
    let mut out = Vec::new();
    let b = raw.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3).ok_or("bad")?).map_err(|_| "bad")?;
            let v = u8::from_str_radix(h, 16).map_err(|_| "bad")?;
            if v == b'/' || v == b'\\' || v == b'%' {
                return Err("encoded");
            }
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    let s = String::from_utf8(out).map_err(|_| "utf8")?;
    let segs: Vec<&str> = s.split('/').skip(1).collect();
    for (n, seg) in segs.iter().enumerate() {
        if *seg == "." || *seg == ".." || (seg.is_empty() && n + 1 != segs.len()) {
            return Err("segment");
        }
        if seg
            .bytes()
            .any(|c| c < 0x20 || c == b'\\' || c == b'#' || c == b';')
        {
            return Err("byte");
        }
    }
    Ok(format!("/{}", segs.join("/")))
}

fn bench_paths(c: &mut Criterion) {
    let mut g = c.benchmark_group("canonicalize");
    for (label, p) in [
        ("plain", "/orders/2024/items/17/detail"),
        ("encoded", "/orders/caf%C3%A9/items%20x/17"),
    ] {
        assert!(portcullis::path::canonicalize(p).is_ok());
        assert!(naive_canonicalize(p).is_ok());
        g.bench_function(format!("canonicalize/{label}"), |b| {
            b.iter(|| portcullis::path::canonicalize(black_box(p)).map(|c| c.len()))
        });
        g.bench_function(format!("naive/{label}"), |b| {
            b.iter(|| naive_canonicalize(black_box(p)).map(|c| c.len()))
        });
    }
    g.finish();
}

fn typical_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "api.example.com:8443"),
        ("user-agent", "curl/8.5.0"),
        ("accept", "*/*"),
        ("accept-encoding", "gzip, deflate, br"),
        ("accept-language", "en-US,en;q=0.9"),
        ("cookie", "session=abcdef0123456789; theme=dark"),
        ("x-forwarded-for", "6.6.6.6"),
        (
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
    ] {
        h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    h
}

const HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The naive rewrite: lower-case every header name into a String and compare against the
/// lists, then collect the names to remove; `X-Forwarded-For` built with `format!`.
fn naive_rewrite(h: &mut HeaderMap, peer: IpAddr) {
    let mut remove: Vec<String> = Vec::new();
    for (k, v) in h.iter() {
        let name = k.as_str().to_lowercase();
        if name == "connection" {
            for t in v.to_str().unwrap_or("").split(',') {
                remove.push(t.trim().to_lowercase());
            }
        }
        if HOP.contains(&name.as_str())
            || name.starts_with("x-auth-")
            || name == "x-forwarded-client-cert"
        {
            remove.push(name);
        }
    }
    for n in remove {
        h.remove(n.as_str());
    }
    h.insert(
        "x-forwarded-for",
        HeaderValue::from_str(&format!("{peer}")).unwrap(),
    );
}

fn bench_headers(c: &mut Criterion) {
    let base = typical_headers();
    let peer: IpAddr = "10.1.2.3".parse().unwrap();
    let peer_ip = headers::ip_value(peer);
    let mut hostile = typical_headers();
    hostile.insert(
        "connection",
        HeaderValue::from_static("keep-alive, x-secret"),
    );
    hostile.insert("x-secret", HeaderValue::from_static("1"));
    hostile.insert("x-auth-subject", HeaderValue::from_static("admin"));
    hostile.insert("te", HeaderValue::from_static("trailers"));
    let mut g = c.benchmark_group("rewrite_headers");
    for (label, input) in [("typical", &base), ("hostile", &hostile)] {
        g.bench_function(format!("portcullis/{label}"), |b| {
            b.iter_batched_ref(
                || input.clone(),
                |h| {
                    headers::strip_hop_by_hop(h);
                    headers::strip_identity(h, &[], &[]);
                    headers::set_forwarded_for(h, &peer_ip, false);
                },
                criterion::BatchSize::SmallInput,
            )
        });
        g.bench_function(format!("naive/{label}"), |b| {
            b.iter_batched_ref(
                || input.clone(),
                |h| naive_rewrite(h, peer),
                criterion::BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn bench_pipeline(c: &mut Criterion) {
    let metrics = Arc::new(Metrics::new());
    let services = Services::new(metrics.clone());
    let lockout = Lockout {
        enabled: true,
        max_failures: 10,
        window: Duration::from_secs(300),
        lockout: Duration::from_secs(60),
        max_lockout: Duration::from_secs(1800),
        max_entries: 100_000,
    };
    let pipeline = Pipeline::new(
        &AuthExpr::Any(vec![0]),
        Require::default(),
        vec![Member {
            auth: Arc::new(Authenticator::None(NoneAuth)),
            counters: DecisionCounters::default(),
        }],
    );
    let conn = ConnInfo::plain(SocketAddr::from(([127, 0, 0, 1], 40000)));
    let uri: Uri = "/orders/1".parse().unwrap();
    let headers = typical_headers();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    c.bench_function("pipeline/none", |b| {
        b.iter(|| {
            let view = RequestView {
                services: &services,
                lockout: &lockout,
                method: &Method::GET,
                uri: &uri,
                headers: &headers,
                conn: &conn,
                client_ip: conn.peer.ip(),
                attempted: &std::sync::OnceLock::new(),
            };
            let admitted = rt.block_on(pipeline.run(&view)).ok().unwrap();
            (admitted.methods().len(), admitted.subject().len())
        })
    });
}

fn bench_request_id(c: &mut Criterion) {
    let prefix = "0a1b2c3d4e5f";
    let mut g = c.benchmark_group("request_id");
    g.bench_function("format", |b| {
        b.iter(|| format!("{}{:010x}", prefix, black_box(123_456_789u64)))
    });
    // What gateway.rs does since the fix: hex digits into a stack buffer, one copy.
    g.bench_function("stack_hex_header_value", |b| {
        b.iter(|| {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let n = black_box(123_456_789u64);
            let mut buf = [0u8; 22];
            let (p, counter) = buf.split_at_mut(12);
            p.copy_from_slice(prefix.as_bytes());
            for (i, d) in counter.iter_mut().enumerate() {
                *d = HEX[((n >> (4 * (9 - i))) & 0xf) as usize];
            }
            HeaderValue::from_bytes(&buf).unwrap()
        })
    });
    g.bench_function("header_value_from_string", |b| {
        b.iter(|| {
            let s = format!("{}{:010x}", prefix, black_box(123_456_789u64));
            HeaderValue::from_str(&s).unwrap()
        })
    });
    g.finish();
}

fn bench_access_log(c: &mut Criterion) {
    let a = portcullis::telemetry::Access {
        request_id: "0a1b2c3d4e5f00075bcd15",
        route: "public",
        method: "GET",
        path: "/orders/1",
        status: 200,
        duration: 0.000_321,
        upstream: "up",
        auth_method: "none",
        subject: "",
        attempted: "",
        client_ip: "203.0.113.5".parse().unwrap(),
        peer_ip: "127.0.0.1".parse().unwrap(),
    };
    let mut g = c.benchmark_group("access_log");
    for (label, level) in [("level_warn", "warn"), ("level_info_json", "info")] {
        let sub = tracing_subscriber::fmt()
            .with_env_filter(level)
            .json()
            .flatten_event(true)
            .with_writer(std::io::sink)
            .finish();
        tracing::subscriber::with_default(sub, || {
            g.bench_function(label, |b| {
                b.iter(|| portcullis::telemetry::access(black_box(&a)))
            });
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    bench_routes,
    bench_paths,
    bench_headers,
    bench_pipeline,
    bench_request_id,
    bench_access_log
);
criterion_main!(benches);
