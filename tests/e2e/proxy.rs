//! Proxying on a public route: what the upstream sees, what the caller sees.

use http::Method;

use crate::support::{
    Gateway, PUBLIC, eventually, gateway, next_head, raw_upstream, read_response,
};

/// The public route, and `orders` for GET only.
fn public_and_orders() -> String {
    format!(
        r#"{PUBLIC}
[[routes]]
name = "orders"
match = {{ path_prefix = "/orders", methods = ["GET"] }}
upstream = "echo"
auth = "public"
"#
    )
}

async fn start() -> Gateway {
    gateway(&public_and_orders()).start().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_public_route_to_upstream() {
    let gw = start().await;
    let r = gw.client().get("/public/hello?x=1").await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["method"], "GET");
    assert_eq!(v["uri"], "/public/hello?x=1");
    assert_eq!(r.upstream_header("x-auth-method").as_deref(), Some("none"));
    assert_eq!(
        r.upstream_header("x-forwarded-proto").as_deref(),
        Some("https")
    );
    assert_eq!(
        r.upstream_header("x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    let host = format!("localhost:{}", gw.addr.port());
    assert_eq!(r.upstream_header("host").as_deref(), Some(host.as_str()));
    assert_eq!(
        r.upstream_header("x-forwarded-host").as_deref(),
        Some(host.as_str())
    );
    assert!(r.upstream_header("x-request-id").is_some());
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_404_for_unrouted_paths_and_methods() {
    let gw = start().await;
    let c = gw.client();
    let r = c.get("/nowhere").await;
    assert_eq!(r.status, 404);
    assert!(
        r.json()["request_id"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    assert_eq!(c.get("/publicx").await.status, 404);
    assert_eq!(
        c.send(Method::POST, "/orders/1", &[], "x").await.status,
        404
    );
    assert_eq!(c.get("/orders/1").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_ambiguous_paths_before_routing() {
    let gw = start().await;
    for target in [
        "/public/..%2f..%2forders",
        "/public/%2e%2e/orders",
        "/public/../orders",
        "/public/./x",
        "/public%2Fx",
        "/public/a%5Cb",
        "/public/a\\b",
        "/public/a%00b",
        "/public//x",
        "/public/a%23b",
        "/public;x",
    ] {
        let raw = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        let resp = gw.raw_request(raw.as_bytes()).await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{target}: {resp}");
        assert!(resp.contains("\"request_id\""), "{target}: {resp}");
    }
    // Decode-then-compare: an encoded letter routes like the letter.
    let r = gw.client().get("/%70ublic/x").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["uri"], "/%70ublic/x");
    // The echo upstream was never reached by a refused request.
    assert_eq!(gw.echo.requests_seen(), 1);
    // A legitimate request still works after the hostile ones.
    assert_eq!(gw.client().get("/public/ok").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_on_path_not_on_query_or_forwarded_headers() {
    let gw = start().await;
    let c = gw.client();
    let r = c
        .get_with(
            "/nowhere?path=/public",
            &[
                ("x-forwarded-uri", "/public"),
                ("x-original-url", "/public"),
            ],
        )
        .await;
    assert_eq!(r.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_absolute_form_with_mismatched_host() {
    let gw = start().await;
    let raw = "GET https://evil.example/public/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let resp = gw.raw_request(raw.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    let raw =
        "GET https://localhost/public/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let resp = gw.raw_request(raw.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let raw = "GET /public/x HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n";
    assert!(
        gw.raw_request(raw.as_bytes())
            .await
            .starts_with("HTTP/1.1 400")
    );
    let raw = "GET /public/x HTTP/1.1\r\nConnection: close\r\n\r\n";
    assert!(
        gw.raw_request(raw.as_bytes())
            .await
            .starts_with("HTTP/1.1 400")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strips_spoofed_identity_and_hop_by_hop_headers() {
    let gw = start().await;
    let r = gw
        .client()
        .get_with(
            "/public/x",
            &[
                ("x-auth-subject", "admin"),
                ("x-auth-method", "mtls"),
                ("x-auth-scopes", "root"),
                ("x-forwarded-client-cert", "Hash=00;Subject=\"CN=admin\""),
                ("x-forwarded-for", "6.6.6.6"),
                ("connection", "x-secret-hop"),
                ("x-secret-hop", "1"),
                ("x-request-id", "caller-id_1.2"),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.upstream_header("x-auth-subject").is_none());
    assert_eq!(
        r.upstream_headers("x-auth-method"),
        vec!["none".to_string()]
    );
    assert!(r.upstream_header("x-auth-scopes").is_none());
    assert!(r.upstream_header("x-forwarded-client-cert").is_none());
    assert!(r.upstream_header("x-secret-hop").is_none());
    assert_eq!(
        r.upstream_headers("x-forwarded-for"),
        vec!["127.0.0.1".to_string()]
    );
    assert_eq!(
        r.upstream_header("x-request-id").as_deref(),
        Some("caller-id_1.2")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regenerates_invalid_request_ids() {
    let gw = start().await;
    let r = gw
        .client()
        .get_with("/public/x", &[("x-request-id", "bad id with spaces")])
        .await;
    let id = r.upstream_header("x-request-id").unwrap();
    assert_ne!(id, "bad id with spaces");
    assert!(id.bytes().all(|b| b.is_ascii_alphanumeric()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_forwarded_for_only_for_trusted_proxies() {
    let gw = gateway(&public_and_orders())
        .server("trusted_proxies = [\"127.0.0.0/8\"]")
        .start()
        .await;
    let r = gw
        .client()
        .get_with("/public/x", &[("x-forwarded-for", "203.0.113.7")])
        .await;
    assert_eq!(
        r.upstream_header("x-forwarded-for").as_deref(),
        Some("203.0.113.7, 127.0.0.1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforces_body_limit_by_length_and_while_streaming() {
    let gw = gateway(&public_and_orders())
        .tls_extra("[server.limits]\nmax_body_bytes = \"1KiB\"")
        .start()
        .await;
    let c = gw.client();
    let r = c
        .send(Method::POST, "/public/up", &[], vec![b'a'; 1000])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body_len"], 1000);
    let r = c
        .send(Method::POST, "/public/up", &[], vec![b'a'; 2000])
        .await;
    assert_eq!(r.status, 413);
    // Chunked body without Content-Length, over the limit.
    let mut raw = b"POST /public/up HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..3 {
        raw.extend_from_slice(b"400\r\n");
        raw.extend_from_slice(&[b'b'; 1024]);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let resp = gw.raw_request(&raw).await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_oversized_headers() {
    let gw = start().await;
    let big = "v".repeat(20 * 1024);
    let raw = format!(
        "GET /public/x HTTP/1.1\r\nHost: localhost\r\nX-Big: {big}\r\nConnection: close\r\n\r\n"
    );
    let resp = gw.raw_request(raw.as_bytes()).await;
    assert!(
        resp.starts_with("HTTP/1.1 431"),
        "{}",
        &resp[..resp.len().min(200)]
    );
}

const SLOW_AND_DOWN: &str = r#"
[upstreams.slow]
targets = ["http://{echo}"]
timeout = "300ms"

[upstreams.down]
targets = ["http://127.0.0.1:9"]
connect_timeout = "500ms"

[authenticators.public]
kind = "none"

[[routes]]
name = "slow"
match = { path_prefix = "/slow" }
upstream = "slow"
auth = "public"

[[routes]]
name = "down"
match = { path_prefix = "/down" }
upstream = "down"
auth = "public"

[[routes]]
name = "echo"
match = { path_prefix = "/" }
upstream = "echo"
auth = "public"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maps_upstream_failures_to_502_and_504() {
    let gw = gateway(SLOW_AND_DOWN).start().await;
    let c = gw.client();
    let r = c.get("/down/x").await;
    assert_eq!(r.status, 502);
    assert!(r.json()["request_id"].is_string());
    let r = c.get("/slow?ms=2000").await;
    assert_eq!(r.status, 504);
    let r = c.get("/die").await;
    assert_eq!(r.status, 502);
    assert!(
        gw.metric("portcullis_upstream_requests_total{upstream=\"down\",outcome=\"error\"}")
            .await
            >= 1.0
    );
    assert!(
        gw.metric("portcullis_upstream_requests_total{upstream=\"slow\",outcome=\"timeout\"}")
            .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_response_bodies() {
    let gw = gateway(SLOW_AND_DOWN).start().await;
    let r = gw.client().get("/stream?chunks=5&delay_ms=10").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "chunk 0\nchunk 1\nchunk 2\nchunk 3\nchunk 4\n");
    let r = gw.client().get("/big?bytes=300000").await;
    assert_eq!(r.body.len(), 300000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pauses_inside_a_response_neither_park_nor_hold_a_closing_connection() {
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = gateway(SLOW_AND_DOWN).start().await;
    // HTTP/1.1: pauses longer than the park period inside a body keep the connection.
    let mut s = gw.raw_tls().await;
    let slow = "GET /stream?chunks=3&delay_ms=700 HTTP/1.1\r\nHost: localhost\r\n\r\n";
    s.write_all(slow.as_bytes()).await.unwrap();
    let resp = read_response(&mut s).await;
    assert!(resp.contains("chunk 2"), "{resp}");
    assert!(
        !resp.to_ascii_lowercase().contains("connection: close"),
        "{resp}"
    );
    s.write_all(b"GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut s).await.starts_with("HTTP/1.1 200"));

    // HTTP/1.0: the body ends with the connection, which must close right after it
    // (not linger until idle_timeout as a parked connection).
    let mut s = gw.raw_tls().await;
    let slow10 = "GET /stream?chunks=3&delay_ms=700 HTTP/1.0\r\nHost: localhost\r\n\r\n";
    s.write_all(slow10.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
        .await
        .expect("connection closed after the body");
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("chunk 2"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_http2() {
    let gw = start().await;
    let c = gw.h2_client();
    let r = c.get("/public/h2").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["version"], "HTTP/1.1", "upstream leg is HTTP/1.1");
    let host = format!("localhost:{}", gw.addr.port());
    assert_eq!(r.upstream_header("host").as_deref(), Some(host.as_str()));
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move { c.get(&format!("/public/{i}")).await.status })
        })
        .collect();
    for h in handles {
        assert_eq!(h.await.unwrap(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_websocket_upgrades_through() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = start().await;
    let mut s = gw.raw_tls().await;
    let req = "GET /public/ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before 101");
        got.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&got).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    s.write_all(b"ping-through-tunnel").await.unwrap();
    let mut echoed = Vec::new();
    while echoed.len() < 19 {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0);
        echoed.extend_from_slice(&buf[..n]);
    }
    assert_eq!(&echoed, b"ping-through-tunnel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_bytes_sent_with_the_request_head_reach_the_upstream() {
    use tokio::io::AsyncWriteExt;
    let gw = start().await;
    let mut s = gw.raw_tls().await;
    // The first frame rides in the same write as the head, so hyper reads it early.
    let req = "GET /public/ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\nearly-bytes";
    s.write_all(req.as_bytes()).await.unwrap();
    let mut got = read_response(&mut s).await;
    assert!(got.starts_with("HTTP/1.1 101"), "{got}");
    let head_len = got.find("\r\n\r\n").unwrap() + 4;
    let mut buf = [0u8; 64];
    while got.len() < head_len + "early-bytes".len() {
        use tokio::io::AsyncReadExt;
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("echo in time")
            .unwrap();
        assert!(n > 0, "tunnel closed: {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert_eq!(&got[head_len..], "early-bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_keep_alive_connections_serve_their_next_request() {
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;
    let gw = start().await;
    let mut s = gw.raw_tls().await;
    let req = "GET /public/a HTTP/1.1\r\nHost: localhost\r\n\r\n";
    s.write_all(req.as_bytes()).await.unwrap();
    assert!(read_response(&mut s).await.starts_with("HTTP/1.1 200"));
    // Quiet for more than two park periods: the connection gives up its HTTP state.
    eventually("the idle connection is parked", async || {
        gw.metric("portcullis_parked_connections").await == 1.0
    })
    .await;
    s.write_all(req.as_bytes()).await.unwrap();
    let resp = read_response(&mut s).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        !resp.to_ascii_lowercase().contains("connection: close"),
        "{resp}"
    );
    assert_eq!(gw.metric("portcullis_parked_connections").await, 0.0);

    // Half a request head, then quiet: hyper had read those bytes when the connection
    // parked; the next session gets them back and the request completes on keep-alive.
    s.write_all(b"GET /public/b HTTP/1.1\r\nHo").await.unwrap();
    tokio::time::sleep(Duration::from_millis(2600)).await;
    s.write_all(b"st: localhost\r\n\r\n").await.unwrap();
    let resp = read_response(&mut s).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("/public/b"), "{resp}");
    assert!(
        !resp.to_ascii_lowercase().contains("connection: close"),
        "{resp}"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    assert!(read_response(&mut s).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closes_idle_keep_alive_connections_after_idle_timeout() {
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = gateway(&public_and_orders())
        .tls_extra("[server.limits]\nidle_timeout = \"1500ms\"")
        .start()
        .await;
    let mut s = gw.raw_tls().await;
    s.write_all(b"GET /public/a HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut s).await.starts_with("HTTP/1.1 200"));
    let idle_since = Instant::now();
    let mut buf = [0u8; 64];
    // Parked after a quarter second, then closed (close_notify, FIN) at the idle timeout.
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("idle connection must be closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    let waited = idle_since.elapsed();
    assert!(
        waited >= Duration::from_millis(1200),
        "closed too early: {waited:?}"
    );
    assert_eq!(gw.metric("portcullis_parked_connections").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_reports_health_readiness_and_metrics() {
    let gw = start().await;
    assert_eq!(gw.admin_get("/healthz").await.status, 200);
    assert_eq!(gw.admin_get("/readyz").await.status, 200);
    gw.client().get("/public/x").await;
    let m = gw.admin_get("/metrics").await;
    assert_eq!(m.status, 200);
    let text = m.text();
    for family in [
        "portcullis_requests_total{route=\"public\",status=\"200\"} 1",
        "portcullis_request_duration_seconds_bucket{",
        "portcullis_auth_decisions_total{authenticator=\"public\",result=\"admit\"} 1",
        "portcullis_upstream_requests_total{upstream=\"echo\",outcome=\"success\"} 1",
        "portcullis_active_connections",
        "portcullis_tls_handshake_errors_total",
        "portcullis_config_reloads_total{result=\"success\"} 0",
        "portcullis_build_info{version=\"",
        "portcullis_upstream_duration_seconds_bucket{le=\"0.0005\",upstream=\"echo\"}",
        "portcullis_upstream_healthy_targets{upstream=\"echo\"} 1",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_start_time_seconds ",
    ] {
        assert!(text.contains(family), "missing {family}:\n{text}");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let expiry = gw
        .metric("portcullis_certificate_expiry_timestamp_seconds{cert=\"server\"}")
        .await;
    assert!(
        expiry > now && expiry < now + 20.0 * 365.0 * 86400.0,
        "{expiry}"
    );
    // Admin endpoints are never served on the public listener.
    assert_eq!(gw.client().get("/metrics").await.status, 404);
    assert_eq!(gw.client().get("/healthz").await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_while_no_upstream_target_is_healthy() {
    let body = r#"
[upstreams.checked]
targets = ["http://127.0.0.1:9"]
health_check = { path = "/health", interval = "100ms" }

[authenticators.public]
kind = "none"

[[routes]]
match = { path_prefix = "/" }
upstream = "checked"
auth = "public"
"#;
    let gw = gateway(body).start().await;
    crate::support::eventually("readyz 503", async || {
        gw.admin_get("/readyz").await.status == 503
    })
    .await;
    let r = gw.admin_get("/readyz").await;
    assert!(r.text().contains("checked"), "{}", r.text());
}

/// Passive health: connect failures in a row take a target out of rotation (readiness and
/// the healthy-target gauge say so) without any `health_check`; it comes back once it
/// answers again. Each failure is logged at warn with the request id and the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_take_a_target_out_until_it_answers() {
    // A port nothing listens on, until the test listens on it.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let body = format!(
        r#"
[upstreams.flaky]
targets = ["http://127.0.0.1:{port}"]
max_fails = 2
fail_timeout = "300ms"

[authenticators.public]
kind = "none"

[[routes]]
match = {{ path_prefix = "/" }}
upstream = "flaky"
auth = "public"
"#
    );
    let gw = gateway(&body).start().await;
    let c = gw.client();
    assert_eq!(gw.admin_get("/readyz").await.status, 200);
    let healthy = "portcullis_upstream_healthy_targets{upstream=\"flaky\"}";
    assert_eq!(gw.metric(healthy).await, 1.0);
    for i in 0..2 {
        let r = c
            .get_with("/x", &[("x-request-id", &format!("passive-health-{i}"))])
            .await;
        assert_eq!(r.status, 502);
    }
    let r = gw.admin_get("/readyz").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("flaky"), "{}", r.text());
    assert_eq!(gw.metric(healthy).await, 0.0);
    let logs = crate::support::logs();
    assert!(
        logs.lines().any(|l| l.contains("upstream request failed")
            && l.contains("passive-health-0")
            && l.contains("flaky")
            && l.contains("connect")),
        "the first failure is logged with its request id and reason"
    );
    // The upstream comes up; once `fail_timeout` has passed it is tried, and answers.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from_static(b"back")),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    crate::support::eventually("readyz 200 again", async || {
        gw.admin_get("/readyz").await.status == 200
    })
    .await;
    assert_eq!(c.get("/x").await.status, 200);
    assert_eq!(gw.metric(healthy).await, 1.0);
}

/// An upstream a reload removes stops reporting its health: a 0 left behind would keep a
/// "no healthy target" alert firing for something that no longer exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_upstream_stops_reporting_health() {
    let spare = "\n[upstreams.spare]\ntargets = [\"http://127.0.0.1:9\"]\n\n[[routes]]\nname = \"spare\"\nmatch = { path_prefix = \"/spare\" }\nupstream = \"spare\"\nauth = \"public\"\n";
    let base = crate::support::PUBLIC;
    let mut gw = gateway(&format!("{base}{spare}")).start().await;
    let series = "portcullis_upstream_healthy_targets{upstream=\"spare\"}";
    assert!(gw.admin_get("/metrics").await.text().contains(series));
    gw.rewrite_and_reload(base).await.unwrap();
    let text = gw.admin_get("/metrics").await.text();
    assert!(!text.contains(series), "{text}");
    assert!(text.contains("portcullis_upstream_healthy_targets{upstream=\"echo\"} 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_routes_and_rejects_broken_config() {
    let mut gw = start().await;
    let c = gw.client();
    assert_eq!(c.get("/fresh/x").await.status, 404);
    let next = public_and_orders().replace("path_prefix = \"/orders\"", "path_prefix = \"/fresh\"");
    gw.rewrite_and_reload(&next).await.unwrap();
    assert_eq!(c.get("/fresh/x").await.status, 200);
    assert_eq!(c.get("/orders/x").await.status, 404);

    let broken = next.replace("auth = \"public\"", "auth = \"missing\"");
    let err = gw.rewrite_and_reload(&broken).await.unwrap_err();
    assert!(err.contains("unknown authenticator \"missing\""), "{err}");
    assert_eq!(
        c.get("/fresh/x").await.status,
        200,
        "old config keeps serving"
    );
    assert_eq!(
        gw.metric("portcullis_config_reloads_total{result=\"failure\"}")
            .await,
        1.0
    );
    assert_eq!(
        gw.metric("portcullis_config_reloads_total{result=\"success\"}")
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_survive_reload_and_drain_on_shutdown() {
    let mut gw = gateway(SLOW_AND_DOWN).start().await;
    let c = gw.client();
    let seen = gw.echo.requests_seen();
    let slow = {
        let c = c.clone();
        tokio::spawn(async move { c.get("/slow?ms=200").await.status })
    };
    eventually("the slow request reached the upstream", async || {
        gw.echo.requests_seen() > seen
    })
    .await;
    gw.rewrite_and_reload(&SLOW_AND_DOWN.replace("\"300ms\"", "\"10s\""))
        .await
        .unwrap();
    assert_eq!(slow.await.unwrap(), 200);

    let seen = gw.echo.requests_seen();
    let slow = {
        let c = c.clone();
        tokio::spawn(async move { c.get("/slow?ms=3000").await.status })
    };
    eventually("the second slow request reached the upstream", async || {
        gw.echo.requests_seen() > seen
    })
    .await;
    let (addr, admin) = (gw.addr, gw.admin);
    let stopping = tokio::spawn(gw.shutdown());
    // While the request drains, the admin listener still answers: not ready, draining.
    eventually("readyz says draining", async || {
        admin_readyz(admin)
            .await
            .is_some_and(|r| r.starts_with("HTTP/1.1 503") && r.contains("draining"))
    })
    .await;
    stopping.await.unwrap();
    assert_eq!(slow.await.unwrap(), 200, "in-flight request drained");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed after shutdown"
    );
    assert!(admin_readyz(admin).await.is_none(), "admin closed last");
}

/// `GET /readyz` on the admin listener, the whole answer; `None` when nothing listens.
async fn admin_readyz(admin: std::net::SocketAddr) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(admin).await.ok()?;
    s.write_all(b"GET /readyz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut out = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// An echo upstream serving TLS with a certificate for 127.0.0.1 from a fresh CA.
async fn tls_echo(ca_name: &str) -> (portcullis::certs::Ca, portcullis::echo::EchoServer) {
    let ca = portcullis::certs::Ca::new(ca_name).unwrap();
    let leaf = ca.server(&["127.0.0.1".into()]).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(leaf.cert_chain(), leaf.private_key().unwrap())
        .unwrap();
    let server =
        portcullis::echo::spawn(([127, 0, 0, 1], 0).into(), Some(std::sync::Arc::new(tls)))
            .await
            .unwrap();
    (ca, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_to_https_upstreams_with_a_private_ca_and_round_robins() {
    let pki = crate::support::pki();
    let (upstream_ca, secure) = tls_echo("upstream CA").await;
    let second = portcullis::echo::spawn(([127, 0, 0, 1], 0).into(), None)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("upstream-ca.crt");
    std::fs::write(&ca_path, upstream_ca.cert_pem()).unwrap();
    let body = format!(
        r#"
[upstreams.secure]
targets = ["https://{}"]
ca = "{}"

[upstreams.pair]
targets = ["http://{{echo}}", "http://{}"]

[authenticators.public]
kind = "none"

[[routes]]
match = {{ path_prefix = "/secure" }}
upstream = "secure"
auth = "public"

[[routes]]
match = {{ path_prefix = "/pair" }}
upstream = "pair"
auth = "public"
"#,
        secure.addr,
        ca_path.display(),
        second.addr
    );
    let gw = gateway(&body).pki(pki).start().await;
    let c = gw.client();
    let r = c.get("/secure/x").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(secure.requests_seen(), 1);
    for i in 0..4 {
        assert_eq!(c.get(&format!("/pair/{i}")).await.status, 200);
    }
    assert_eq!(gw.echo.requests_seen(), 2);
    assert_eq!(second.requests_seen(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_https_upstream_with_an_untrusted_certificate() {
    let (_rogue_ca, secure) = tls_echo("rogue CA").await;
    let body = format!(
        "[upstreams.secure]\ntargets = [\"https://{}\"]\n\n[authenticators.public]\nkind = \"none\"\n\n[[routes]]\nmatch = {{ path_prefix = \"/\" }}\nupstream = \"secure\"\nauth = \"public\"\n",
        secure.addr
    );
    let gw = gateway(&body).start().await;
    assert_eq!(gw.client().get("/x").await.status, 502);
    assert_eq!(secure.requests_seen(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closes_connections_that_never_send_a_request() {
    use tokio::io::AsyncReadExt;
    let gw = gateway(&public_and_orders())
        .tls_extra("[server.limits]\nheader_read_timeout = \"300ms\"\nidle_timeout = \"300ms\"")
        .start()
        .await;
    let mut s = gw.raw_tls().await;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("connection must be closed by the gateway")
        .unwrap_or(0);
    assert!(n == 0 || String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408"));
    // A plain TCP connection that never completes a handshake is closed too.
    let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("silent TCP connection must be closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert_eq!(gw.client().get("/public/x").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strips_underscore_spellings_of_identity_headers() {
    let gw = start().await;
    let raw = "GET /public/x HTTP/1.1\r\nHost: localhost\r\nX_Auth_Subject: admin\r\nX_Forwarded_Client_Cert: Hash=1\r\nX_Forwarded_For: 6.6.6.6\r\nConnection: close\r\n\r\n";
    let resp = gw.raw_request(raw.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let body = &resp[resp.find("\r\n\r\n").unwrap() + 4..];
    assert!(
        !body.contains("admin") && !body.contains("Hash=1") && !body.contains("6.6.6.6"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnels_only_websocket_upgrades() {
    let gw = start().await;
    let raw = "GET /public/x HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n";
    let resp = gw.raw_request(raw.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        !resp.to_ascii_lowercase().contains("\"upgrade\""),
        "upgrade header must not reach the upstream: {resp}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matches_hosts_with_a_trailing_dot_and_refuses_lowercase_methods() {
    let body = r#"
[authenticators.public]
kind = "none"

[[routes]]
name = "admin-host"
match = { path_prefix = "/", host = "admin.example.com" }
upstream = "echo"
auth = "public"
"#;
    let gw = gateway(body).start().await;
    let raw = "GET /x HTTP/1.1\r\nHost: admin.example.com.\r\nConnection: close\r\n\r\n";
    assert!(
        gw.raw_request(raw.as_bytes())
            .await
            .starts_with("HTTP/1.1 200")
    );
    let raw = "GET /x HTTP/1.1\r\nHost: other.example.com\r\nConnection: close\r\n\r\n";
    assert!(
        gw.raw_request(raw.as_bytes())
            .await
            .starts_with("HTTP/1.1 404")
    );
    let raw = "get /x HTTP/1.1\r\nHost: admin.example.com\r\nConnection: close\r\n\r\n";
    assert!(
        gw.raw_request(raw.as_bytes())
            .await
            .starts_with("HTTP/1.1 400")
    );
}

/// A raw HTTP/1.1 upstream that counts its connections. It answers every request with
/// `ok` (no body for HEAD) and closes a connection, without a word, after `close_after`
/// responses on it — as an upstream's own keep-alive timeout does.
async fn counting_upstream(
    close_after: usize,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use tokio::io::AsyncWriteExt;
    raw_upstream(move |mut s| async move {
        let mut buf = Vec::new();
        for _ in 0..close_after {
            let Some(head) = next_head(&mut s, &mut buf).await else {
                return;
            };
            let reply: &[u8] = if head.starts_with("HEAD ") {
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"
            } else {
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
            };
            if s.write_all(reply).await.is_err() {
                return;
            }
        }
    })
    .await
}

fn raw_upstream_routes(addr: std::net::SocketAddr) -> String {
    format!(
        r#"
[upstreams.raw]
targets = ["http://{addr}"]

[authenticators.public]
kind = "none"

[[routes]]
match = {{ path_prefix = "/" }}
upstream = "raw"
auth = "public"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_reused_including_after_bodiless_responses() {
    let (addr, accepted) = counting_upstream(usize::MAX).await;
    let gw = gateway(&raw_upstream_routes(addr)).start().await;
    let c = gw.client();
    for (i, method) in [
        Method::GET,
        Method::HEAD,
        Method::GET,
        Method::HEAD,
        Method::GET,
    ]
    .into_iter()
    .enumerate()
    {
        let r = c.send(method.clone(), &format!("/r{i}"), &[], "").await;
        assert_eq!(r.status, 200, "{method} {i}");
        let expected = if method == Method::HEAD { "" } else { "ok" };
        assert_eq!(r.text(), expected);
    }
    // Sequential requests take turns on one kept-alive connection; a HEAD answer (no
    // body to read to its end) hands the connection back too.
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_closing_an_idle_connection_costs_no_request() {
    let (addr, accepted) = counting_upstream(1).await;
    let gw = gateway(&raw_upstream_routes(addr)).start().await;
    let c = gw.client();
    for i in 0..3 {
        let r = c.get(&format!("/r{i}")).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.text(), "ok");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_each_chunk_without_waiting_for_the_next() {
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // An upstream that sends the head and a first chunk, then waits for the test to
    // have received that chunk before it finishes: bytes held back anywhere on the way
    // (the HTTP/2 write coalescing) would leave both sides waiting forever.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (got_first, wait_first) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await.unwrap();
        s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n6\r\nfirst\n\r\n")
            .await
            .unwrap();
        let _ = wait_first.await;
        s.write_all(b"5\r\nlast\n\r\n0\r\n\r\n").await.unwrap();
    });
    let gw = gateway(&raw_upstream_routes(addr)).start().await;
    let tls = gw.tls(b"h2").await;
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(format!("https://localhost:{}/s", gw.addr.port()))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    async fn within<F: std::future::Future>(f: F) -> F::Output {
        tokio::time::timeout(std::time::Duration::from_secs(10), f)
            .await
            .expect("in time, not held back")
    }
    let resp = within(send.send_request(req)).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = within(body.frame()).await.unwrap().unwrap();
    let first = first.into_data().unwrap();
    assert_eq!(&first[..], b"first\n");
    got_first.send(()).unwrap();
    let rest = within(body.collect()).await.unwrap();
    assert_eq!(&rest.to_bytes()[..], b"last\n");
}

/// A raw HTTP/1.1 upstream answering by path in each framing a server may use, written
/// in pieces with pauses so the gateway reads them part by part; counts connections.
async fn framing_upstream() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    raw_upstream(|mut s| async move {
        let mut buf = Vec::new();
        while let Some(head) = next_head(&mut s, &mut buf).await {
            let path = head.split(' ').nth(1).unwrap_or("").to_owned();
            let big = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: 300000\r\n\r\n{}",
                "b".repeat(300_000)
            );
            let pieces: Vec<&[u8]> = match path.as_str() {
                "/chunked" => vec![
                    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;e",
                    b"xt=1\r\nhel",
                    b"lo\r\n6\r\n world\r\n0\r\nx-t",
                    b"railer: 1\r\n\r\n",
                ],
                "/hints" => vec![
                    b"HTTP/1.1 103 Early Hints\r\nlink: </s.css>\r\n\r\n",
                    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhi",
                    b"nts",
                ],
                "/close" => vec![b"HTTP/1.1 200 OK\r\n\r\nuntil ", b"the close"],
                "/both" => vec![
                    b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n",
                    b"transfer-encoding: chunked\r\n\r\n4\r\nboth\r\n0\r\n\r\n",
                ],
                "/bad" => vec![b"HTTP/1.1 2xx nope\r\n\r\n"],
                "/big" => big.as_bytes().chunks(100_000).collect(),
                "/continue" | "/duplex" => {
                    // `/continue`: a 100 first, as some servers send unasked; `/duplex`:
                    // the answer's head before the body is read. Then the 5-byte body
                    // comes back in the answer.
                    let first: &[u8] = if path == "/continue" {
                        b"HTTP/1.1 100 Continue\r\n\r\n"
                    } else {
                        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                    };
                    let _ = s.write_all(first).await;
                    while buf.len() < 5 {
                        let mut chunk = [0u8; 64];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let got: Vec<u8> = buf.drain(..5).collect();
                    let got = String::from_utf8_lossy(&got).into_owned();
                    let answer = if path == "/continue" {
                        format!("HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\ngot {got}")
                    } else {
                        format!("9\r\ngot {got}\r\n0\r\n\r\n")
                    };
                    let _ = s.write_all(answer.as_bytes()).await;
                    continue;
                }
                "/stall" => {
                    // Reads 1 MB of the body, answers, and reads no more.
                    let mut got = buf.len();
                    while got < 1_000_000 {
                        let mut chunk = [0u8; 65536];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got += n,
                        }
                    }
                    let _ = s
                        .write_all(b"HTTP/1.1 413 Too Large\r\ncontent-length: 4\r\nconnection: close\r\n\r\nbig!")
                        .await;
                    tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                    return;
                }
                "/early" => {
                    // Answer before the body, then read it to the end (closing with
                    // unread bytes would reset the connection).
                    let _ = s
                        .write_all(b"HTTP/1.1 413 Too Large\r\ncontent-length: 4\r\nconnection: close\r\n\r\nbig!")
                        .await;
                    let mut sink = [0u8; 4096];
                    while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
                    return;
                }
                _ => vec![b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"],
            };
            for p in pieces {
                if s.write_all(p).await.is_err() {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            if path == "/close" || path == "/bad" {
                return;
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_answers_in_every_framing_reach_the_client() {
    use std::sync::atomic::Ordering;
    let (addr, accepted) = framing_upstream().await;
    let gw = gateway(&raw_upstream_routes(addr)).start().await;
    for c in [gw.client(), gw.h2_client()] {
        for (path, body) in [
            ("/chunked", "hello world".to_owned()),
            ("/hints", "hints".to_owned()),
            ("/big", "b".repeat(300_000)),
            ("/both", "both".to_owned()),
            ("/close", "until the close".to_owned()),
        ] {
            let r = c.get(path).await;
            assert_eq!(r.status, 200, "{path}");
            assert!(r.text() == body, "{path}: {:.80}", r.text());
        }
        let r = c.get("/bad").await;
        assert_eq!(r.status, 502, "a malformed answer");
        assert_eq!(r.json()["error"], "upstream unavailable");
    }
    // Per client: /chunked, /hints and /big share one connection; /both (a length next
    // to chunked) and /close are not used again; /bad is closed. 1 + 1 + 1 per client.
    assert_eq!(accepted.load(Ordering::SeqCst), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_answering_before_the_request_body_ends_is_heard() {
    use tokio::io::AsyncWriteExt;
    let (addr, _) = framing_upstream().await;
    let gw = gateway(&raw_upstream_routes(addr)).start().await;
    let mut s = gw.raw_tls().await;
    // A body announced at 1 MB of which only the first bytes come: the upstream's early
    // answer must come through without waiting for the rest.
    s.write_all(b"POST /early HTTP/1.1\r\nhost: localhost\r\ncontent-length: 1000000\r\n\r\n")
        .await
        .unwrap();
    s.write_all(&[b'x'; 1000]).await.unwrap();
    let r = read_response(&mut s).await;
    assert!(r.starts_with("HTTP/1.1 413"), "{r}");
    assert!(r.ends_with("big!"), "the upstream's own answer: {r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_reach_upstreams_that_answer_first_or_send_100_continue() {
    use tokio::io::AsyncWriteExt;
    let (addr, _) = framing_upstream().await;
    let gw = gateway(&raw_upstream_routes(addr)).start().await;
    for path in ["/continue", "/duplex"] {
        // The body comes after a pause, so the upstream's first words arrive while the
        // gateway waits for it: a 100 is skipped, a final head is passed on, and the body
        // still goes up.
        let mut s = gw.raw_tls().await;
        let head = format!("POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-length: 5\r\n\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        s.write_all(b"hello").await.unwrap();
        let r = read_response(&mut s).await;
        assert!(r.starts_with("HTTP/1.1 200"), "{path}: {r}");
        assert!(r.contains("got hello"), "{path}: {r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_answers_and_stops_reading_is_heard() {
    use tokio::io::AsyncWriteExt;
    let (addr, _) = framing_upstream().await;
    let gw = gateway(&raw_upstream_routes(addr)).start().await;
    let (mut r, mut w) = tokio::io::split(gw.raw_tls().await);
    // The client sends 9 MB as fast as it can; the upstream answers after 1 MB and reads
    // no more, so the gateway's writes block with the answer waiting behind them.
    tokio::spawn(async move {
        let head = b"POST /stall HTTP/1.1\r\nhost: localhost\r\ncontent-length: 9000000\r\n\r\n";
        if w.write_all(head).await.is_err() {
            return;
        }
        let block = vec![b'x'; 60_000];
        for _ in 0..150 {
            if w.write_all(&block).await.is_err() {
                return;
            }
        }
    });
    let r = read_response(&mut r).await;
    assert!(r.starts_with("HTTP/1.1 413 Too Large"), "{r}");
    assert!(r.ends_with("big!"), "the upstream's own answer: {r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_still_reaches_an_upstream_that_accepted_before_reading_it() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // The upstream answers 202 (complete, no body) on the head alone, then reads the
    // request body and reports it.
    let (got_tx, mut got_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let (addr, _) = raw_upstream(move |mut s| {
        let got_tx = got_tx.clone();
        async move {
            let mut buf = Vec::new();
            if next_head(&mut s, &mut buf).await.is_none() {
                return;
            }
            let _ = s
                .write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n")
                .await;
            while buf.len() < 5 {
                let mut chunk = [0u8; 64];
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let _ = got_tx.send(buf);
        }
    })
    .await;
    let gw = gateway(&raw_upstream_routes(addr)).start().await;
    let mut s = gw.raw_tls().await;
    s.write_all(b"POST /ingest HTTP/1.1\r\nhost: localhost\r\ncontent-length: 5\r\n\r\n")
        .await
        .unwrap();
    let r = read_response(&mut s).await;
    assert!(r.starts_with("HTTP/1.1 202"), "{r}");
    s.write_all(b"hello").await.unwrap();
    let got = tokio::time::timeout(std::time::Duration::from_secs(5), got_rx.recv())
        .await
        .expect("the upstream read the body in time");
    assert_eq!(got.as_deref(), Some(&b"hello"[..]));
}
