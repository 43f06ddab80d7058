//! What attacking the gateway found, each as a test that failed before its fix: deadlines
//! on every phase of a connection and every body, caps on what one client can hold, and
//! headers no client can forge.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

use crate::support::{PUBLIC, eventually, gateway, next_head, raw_upstream, read_response};

/// Generous guard for "this must end": far above every deadline the tests configure.
const GUARD: Duration = Duration::from_secs(10);

/// Reads until the peer closes (EOF or an error); panics if it stays open past `GUARD`.
async fn closed_by_peer<S: AsyncRead + Unpin>(s: &mut S, what: &str) {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + GUARD;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => panic!("{what}: still open after {GUARD:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => {}
        }
    }
}

/// An upstream answering each request with an endless chunked body of `chunk`-byte
/// chunks, `pause` apart (`None`: as fast as it can), until the gateway hangs up. Returns
/// its address and the count of connections so released.
async fn flood_upstream(chunk: usize, pause: Option<Duration>) -> (SocketAddr, Arc<AtomicUsize>) {
    let released = Arc::new(AtomicUsize::new(0));
    let r = released.clone();
    let (addr, _) = raw_upstream(move |mut s| {
        let r = r.clone();
        async move {
            if next_head(&mut s, &mut Vec::new()).await.is_none() {
                return;
            }
            let mut out = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
            let size = format!("{chunk:x}\r\n");
            let data = vec![b'x'; chunk];
            loop {
                out.extend_from_slice(size.as_bytes());
                out.extend_from_slice(&data);
                out.extend_from_slice(b"\r\n");
                if s.write_all(&out).await.is_err() {
                    r.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                out.clear();
                if let Some(pause) = pause {
                    tokio::time::sleep(pause).await;
                }
            }
        }
    })
    .await;
    (addr, released)
}

/// Streams a 256 KiB chunked body (32 chunks of 8 KiB) on `s`, whose request head is
/// sent, and returns the answer read meanwhile, which must come within 5 s; the writer
/// stops at the first failed write or once the answer is in.
async fn answer_to_big_chunked_body<S>(s: S, what: &str) -> String
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(s);
    let writer = tokio::spawn(async move {
        let chunk = [b'a'; 8 * 1024];
        for _ in 0..32 {
            if wr.write_all(b"2000\r\n").await.is_err()
                || wr.write_all(&chunk).await.is_err()
                || wr.write_all(b"\r\n").await.is_err()
            {
                return;
            }
        }
        let _ = wr.write_all(b"0\r\n\r\n").await;
    });
    let resp = tokio::time::timeout(Duration::from_secs(5), read_response(&mut rd))
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer in time"));
    writer.abort();
    resp
}

fn upstream_route(name: &str, addr: SocketAddr, upstream_extra: &str) -> String {
    format!(
        "{PUBLIC}\n[upstreams.{name}]\ntargets = [\"http://{addr}\"]\n{upstream_extra}\n\n[[routes]]\nname = \"{name}\"\nmatch = {{ path_prefix = \"/{name}\" }}\nupstream = \"{name}\"\nauth = \"public\"\n"
    )
}

// ---------------------------------------------------------------------------------------
// Connections: every phase has a deadline.

/// Defect 1: a client that completes TLS with ALPN `h2` and sends nothing (or only the
/// preface) used to be kept forever; with `max_connections` such sockets locked every
/// other client out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_http2_connections_are_closed_within_the_header_timeout() {
    let gw = gateway(PUBLIC)
        .tls_extra("[server.limits]\nheader_read_timeout = \"300ms\"\nmax_connections = 2")
        .start()
        .await;
    let mut silent = gw.tls(b"h2").await;
    let mut preface_only = gw.tls(b"h2").await;
    // The client preface and an empty SETTINGS frame, then nothing.
    preface_only
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    closed_by_peer(&mut silent, "silent h2 connection").await;
    closed_by_peer(&mut preface_only, "h2 connection without a request").await;
    // Both places are free again: a connection's place is given back just after its
    // socket closes, so a client that saw the close may reconnect before that (and be
    // turned away, as the limit says) unless it waits for the count.
    eventually("both places given back", async || {
        gw.metric("portcullis_active_connections").await == 0.0
    })
    .await;
    let c = gw.h2_client();
    assert_eq!(c.get("/public/a").await.status, 200);
    assert_eq!(gw.client().get("/public/b").await.status, 200);
}

/// The default cap on concurrent HTTP/2 streams is 100 (as nginx and Envoy), and
/// `max_concurrent_streams` sets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_per_connection_are_capped() {
    for (limits, want) in [("", 100), ("max_concurrent_streams = 7", 7)] {
        let gw = gateway(PUBLIC)
            .tls_extra(&format!("[server.limits]\n{limits}"))
            .start()
            .await;
        let io = gw.tls(b"h2").await;
        let (mut send, conn) = h2::client::handshake(io).await.unwrap();
        let mut conn = Box::pin(conn);
        // The server's SETTINGS arrive with the first exchange.
        let req = Request::get("https://localhost/public/x").body(()).unwrap();
        let (resp, _) = send.send_request(req, true).unwrap();
        let resp = tokio::select! {
            r = resp => r.unwrap(),
            _ = &mut conn => panic!("connection ended"),
        };
        assert_eq!(resp.status(), 200);
        assert_eq!(conn.max_concurrent_send_streams(), want, "{limits:?}");
    }
}

/// Defect 2: a client that stops reading (an HTTP/2 stream window of zero, or an HTTP/1.1
/// socket never read) held its upstream connection for as long as it liked. No byte moved
/// for `idle_timeout`: the client connection is closed and the upstream one released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_releases_its_upstream_connection() {
    let (flood, released) = flood_upstream(16 * 1024, None).await;
    let gw = gateway(&upstream_route("flood", flood, ""))
        .tls_extra("[server.limits]\nidle_timeout = \"400ms\"")
        .start()
        .await;

    // HTTP/1.1: the request goes out, the response is never read.
    let mut h1 = gw.tls(b"http/1.1").await;
    h1.write_all(b"GET /flood/x HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();

    // HTTP/2: a stream window of zero, so not one body byte may be sent.
    let io = gw.tls(b"h2").await;
    let (mut send, conn) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, Bytes>(io)
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let req = Request::get("https://localhost/flood/y").body(()).unwrap();
    let (resp, _) = send.send_request(req, true).unwrap();
    let resp = tokio::time::timeout(GUARD, resp).await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);

    eventually("both upstream connections released", async || {
        released.load(Ordering::SeqCst) == 2
    })
    .await;
    closed_by_peer(&mut h1, "HTTP/1.1 client that stopped reading").await;
    let ended = tokio::time::timeout(GUARD, conn).await.unwrap().unwrap();
    assert!(ended.is_err() || ended.is_ok(), "connection task ended");
    // The gateway serves others throughout.
    assert_eq!(gw.client().get("/public/x").await.status, 200);
    drop(resp);
}

/// Defect 2, per stream: on HTTP/2 a client cannot shield a stalled stream by keeping
/// another one flowing; the stalled one ends the connection after `idle_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_http2_stream_is_not_shielded_by_a_flowing_one() {
    // A steady trickle, so the flowing stream keeps moving.
    let (flood, released) = flood_upstream(1024, Some(Duration::from_millis(5))).await;
    let gw = gateway(&upstream_route("flood", flood, ""))
        .tls_extra("[server.limits]\nidle_timeout = \"500ms\"")
        .start()
        .await;
    let io = gw.tls(b"h2").await;
    // A wide connection window, so the stalled stream's unread bytes do not block the other.
    let (mut send, conn) = h2::client::Builder::new()
        .initial_connection_window_size(64 * 1024 * 1024)
        .handshake::<_, Bytes>(io)
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let flowing = send
        .send_request(
            Request::get("https://localhost/flood/a").body(()).unwrap(),
            true,
        )
        .unwrap()
        .0;
    let stalled = send
        .send_request(
            Request::get("https://localhost/flood/b").body(()).unwrap(),
            true,
        )
        .unwrap()
        .0;
    let flowing = tokio::time::timeout(GUARD, flowing).await.unwrap().unwrap();
    let stalled = tokio::time::timeout(GUARD, stalled).await.unwrap().unwrap();
    let reader = tokio::spawn(async move {
        let mut body = flowing.into_body();
        let mut n = 0usize;
        while let Some(Ok(d)) = body.data().await {
            n += d.len();
            let _ = body.flow_control().release_capacity(d.len());
        }
        n
    });
    // The connection ends (the stalled stream's wait passes idle_timeout), and both
    // upstream connections are released.
    let ended = tokio::time::timeout(GUARD, conn).await;
    assert!(ended.is_ok(), "connection still open with a stalled stream");
    eventually("upstream connections released", async || {
        released.load(Ordering::SeqCst) == 2
    })
    .await;
    assert!(reader.await.unwrap() > 0, "the flowing stream did flow");
    drop(stalled);
}

/// Defect 2: `upstreams.X.max_connections` caps the connections to each target; a request
/// that finds them all busy waits up to `connect_timeout`, then gets 503 with Retry-After.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_target_connection_cap_answers_503_after_a_bounded_wait() {
    let release = Arc::new(Notify::new());
    let rel = release.clone();
    let (held, accepted) = raw_upstream(move |mut s| {
        let rel = rel.clone();
        async move {
            let mut buf = Vec::new();
            while next_head(&mut s, &mut buf).await.is_some() {
                rel.notified().await;
                if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    })
    .await;
    let gw = gateway(&upstream_route(
        "held",
        held,
        "max_connections = 1\nconnect_timeout = \"300ms\"",
    ))
    .start()
    .await;
    let c = gw.client();
    let first = tokio::spawn({
        let c = c.clone();
        async move { c.get("/held/1").await }
    });
    eventually("first request reached the upstream", async || {
        accepted.load(Ordering::SeqCst) == 1
    })
    .await;
    let busy = c.get("/held/2").await;
    assert_eq!(busy.status, 503, "{}", busy.text());
    assert_eq!(busy.headers["retry-after"], "1");
    assert!(
        busy.text().contains("busy") || busy.text().contains("limit"),
        "{}",
        busy.text()
    );
    release.notify_one();
    assert_eq!(first.await.unwrap().status, 200);
    // The one connection serves the next request.
    let next = tokio::spawn({
        let c = c.clone();
        async move { c.get("/held/3").await }
    });
    eventually("next request reached the upstream", async || {
        release.notify_one();
        next.is_finished()
    })
    .await;
    assert_eq!(next.await.unwrap().status, 200);
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

/// Defect 4: an upstream that sends the head and part of the body and then goes silent
/// held the client forever. The upstream `timeout` bounds each wait for more body bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_stalls_inside_its_body_is_cut_off() {
    let (stall, _) = raw_upstream(|mut s| async move {
        if next_head(&mut s, &mut Vec::new()).await.is_some() {
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
                .await;
            // Silent, connection open.
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
    })
    .await;
    let gw = gateway(&upstream_route("stall", stall, "timeout = \"300ms\""))
        .start()
        .await;
    for c in [gw.client(), gw.h2_client()] {
        let r = tokio::time::timeout(
            GUARD,
            c.try_send(Method::GET, "/stall/x", &[], Bytes::new()),
        )
        .await
        .expect("the stalled body must end");
        // The head got through; the body ends early (an error the client sees).
        if let Ok(r) = r {
            assert_eq!(r.status, 200);
            assert!(r.body.len() < 100, "{}", r.body.len());
        }
    }
}

/// Defect 12: crossing `max_body_bytes` in a chunked upload answers 413 at once, whatever
/// the upstream is doing (it is still waiting for the rest of the body).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_chunked_upload_is_answered_413_at_once() {
    let gw = gateway(PUBLIC)
        .tls_extra("[server.limits]\nmax_body_bytes = \"16KiB\"")
        .start()
        .await;
    for round in 0..8 {
        let mut s = gw.tls(b"http/1.1").await;
        s.write_all(
            b"POST /public/up HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .await
        .unwrap();
        let resp = answer_to_big_chunked_body(s, &format!("round {round}")).await;
        assert!(resp.starts_with("HTTP/1.1 413"), "round {round}: {resp}");
    }
    // The same over HTTP/2 (curl's default over TLS): DATA frames with no length declared,
    // and as curl does for an upload of unknown size, over HTTP/1.1 with
    // `Expect: 100-continue`.
    for round in 0..8 {
        let io = gw.tls(b"h2").await;
        let (mut send, conn) = h2::client::handshake(io).await.unwrap();
        tokio::spawn(conn);
        let req = Request::post("https://localhost/public/up")
            .body(())
            .unwrap();
        let (resp, mut body) = send.send_request(req, false).unwrap();
        let writer = tokio::spawn(async move {
            for _ in 0..16 {
                body.reserve_capacity(16 * 1024);
                match std::future::poll_fn(|cx| body.poll_capacity(cx)).await {
                    Some(Ok(_)) => {}
                    _ => return,
                }
                if body
                    .send_data(Bytes::from(vec![b'a'; 16 * 1024]), false)
                    .is_err()
                {
                    return;
                }
            }
            let _ = body.send_data(Bytes::new(), true);
        });
        let resp = tokio::time::timeout(Duration::from_secs(5), resp)
            .await
            .unwrap_or_else(|_| panic!("h2 round {round}: no answer in time"))
            .unwrap();
        assert_eq!(resp.status(), 413, "h2 round {round}");
        writer.abort();
    }
    for round in 0..8 {
        let mut s = gw.tls(b"http/1.1").await;
        s.write_all(b"POST /public/up HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut b = [0u8; 1024];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tokio::time::timeout(GUARD, s.read(&mut b))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0);
            got.extend_from_slice(&b[..n]);
        }
        let interim = String::from_utf8_lossy(&got).into_owned();
        assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");
        let resp = answer_to_big_chunked_body(s, &format!("expect round {round}")).await;
        assert!(
            resp.starts_with("HTTP/1.1 413"),
            "expect round {round}: {resp}"
        );
    }
}

/// Defect 5: a WebSocket tunnel keeps its connection's place under `max_connections`, and
/// one with no traffic either way for `tunnel_idle_timeout` is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_tunnels_count_as_connections_and_close_when_idle() {
    let gw = gateway(PUBLIC)
        .tls_extra("[server.limits]\nmax_connections = 1\ntunnel_idle_timeout = \"600ms\"")
        .start()
        .await;
    let mut ws = gw.tls(b"http/1.1").await;
    ws.write_all(b"GET /public/ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        .await
        .unwrap();
    let head = read_response(&mut ws).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // Traffic keeps it open past the idle timeout.
    for _ in 0..4 {
        ws.write_all(b"ping").await.unwrap();
        let mut b = [0u8; 4];
        tokio::time::timeout(GUARD, ws.read_exact(&mut b))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&b, b"ping");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The tunnel holds the only place: another connection is turned away.
    let refused = gw
        .client()
        .try_send(Method::GET, "/public/x", &[], Bytes::new())
        .await;
    assert!(refused.is_err(), "{:?}", refused.map(|r| r.status));
    // Silence closes it, and the place is free again.
    closed_by_peer(&mut ws, "idle tunnel").await;
    eventually("a new connection is served", async || {
        gw.client()
            .try_send(Method::GET, "/public/x", &[], Bytes::new())
            .await
            .is_ok_and(|r| r.status == 200)
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Requests: what the upstream may receive.

/// Defect 6: userinfo is not valid in an HTTP authority; `x@admin.local` would otherwise
/// skip a `host = "admin.local"` route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn userinfo_in_the_authority_is_refused() {
    let gw = gateway(PUBLIC).start().await;
    for raw in [
        "GET /public/x HTTP/1.1\r\nHost: x@localhost\r\nConnection: close\r\n\r\n",
        "GET https://x@localhost/public/x HTTP/1.1\r\nHost: x@localhost\r\nConnection: close\r\n\r\n",
        "GET https://u:p@localhost/public/x HTTP/1.1\r\nHost: u:p@localhost\r\nConnection: close\r\n\r\n",
    ] {
        let resp = gw.raw_request(raw.as_bytes()).await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{raw:?}: {resp}");
    }
    let ok = gw
        .raw_request(b"GET /public/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
}

/// Defect 7: a repeated `Content-Length` is one length; it reaches the other side as one
/// value (an HTTP/2 client refuses a list, and an upstream may read it either way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_content_length_is_forwarded_as_one_value() {
    let (dup, _) = raw_upstream(|mut s| async move {
        let mut buf = Vec::new();
        while let Some(head) = next_head(&mut s, &mut buf).await {
            let answer: &[u8] = if head.contains("/dup/list") {
                b"HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\nhello"
            } else {
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 05\r\n\r\nhello"
            };
            if s.write_all(answer).await.is_err() {
                return;
            }
        }
    })
    .await;
    let gw = gateway(&upstream_route("dup", dup, "")).start().await;
    for path in ["/dup/list", "/dup/twice"] {
        for c in [gw.client(), gw.h2_client()] {
            let r = c.get(path).await;
            assert_eq!(r.status, 200, "{path}");
            assert_eq!(&r.body[..], b"hello", "{path}");
            let lengths: Vec<_> = r.headers.get_all("content-length").iter().collect();
            assert!(lengths.len() <= 1, "{path}: {lengths:?}");
        }
    }
    // An HTTP/2 request with two spellings of one length reaches the upstream as one.
    let io = gw.tls(b"h2").await;
    let (mut send, conn) = h2::client::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let req = Request::post("https://localhost/public/cl")
        .header("content-length", "03")
        .header("content-length", "3")
        .body(())
        .unwrap();
    let (resp, mut body) = send.send_request(req, false).unwrap();
    body.send_data(Bytes::from_static(b"abc"), true).unwrap();
    let resp = tokio::time::timeout(GUARD, resp).await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    let mut rb = resp.into_body();
    let mut got = Vec::new();
    while let Some(d) = rb.data().await {
        let d = d.unwrap();
        let _ = rb.flow_control().release_capacity(d.len());
        got.extend_from_slice(&d);
    }
    let echo: serde_json::Value = serde_json::from_slice(&got).unwrap();
    let cl: Vec<&str> = echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p[0] == "content-length")
        .filter_map(|p| p[1].as_str())
        .collect();
    assert_eq!(cl, ["3"], "{echo}");
    assert_eq!(echo["body"], "abc");
}

/// Item 11: headers some frameworks honour after routing, and client-address headers other
/// than `X-Forwarded-For`, never reach the upstream; nor does a consumed query API key in
/// another spelling that frameworks decode to the same name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn override_and_address_headers_and_other_key_spellings_are_stripped() {
    use sha2::Digest;
    let key = "pk-live-0123456789abcdef";
    let hash = hex::encode(sha2::Sha256::digest(key.as_bytes()));
    let body = format!(
        "{PUBLIC}\n[authenticators.keys]\nkind = \"api_key\"\nquery = \"api_key\"\nkeys = [{{ id = \"acme\", hash = \"sha256:{hash}\" }}]\n\n[[routes]]\nname = \"keyed\"\nmatch = {{ path_prefix = \"/keyed\" }}\nupstream = \"echo\"\nauth = \"keys\"\n"
    );
    let gw = gateway(&body).start().await;
    let evil = [
        ("x-original-url", "/admin"),
        ("x-rewrite-url", "/admin"),
        ("x-http-method-override", "DELETE"),
        ("x-method-override", "DELETE"),
        ("forwarded", "for=6.6.6.6"),
        ("x-real-ip", "6.6.6.6"),
        ("true-client-ip", "6.6.6.6"),
    ];
    let r = gw.client().get_with("/public/x", &evil).await;
    assert_eq!(r.status, 200);
    let text = r.text();
    for (name, _) in evil {
        assert!(r.upstream_header(name).is_none(), "{name}: {text}");
    }
    assert!(
        !text.contains("6.6.6.6") && !text.contains("DELETE"),
        "{text}"
    );
    let r = gw
        .client()
        .get(&format!(
            "/keyed/x?api_key={key}&api%5Fkey=leak1&api_key[]=leak2&api.key=leak3&keep=1"
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["uri"], "/keyed/x?keep=1");
    assert_eq!(r.upstream_header("x-auth-subject").as_deref(), Some("acme"));
}

/// Defect 9: a raw `#` in the request target is refused, not silently dropped by the URI
/// parser (`GET /public#/../admin` used to be served as `/public`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_fragment_in_the_target_is_refused() {
    let gw = gateway(PUBLIC).start().await;
    for target in ["/public#/../admin", "/public/x?a=1#frag", "/public#"] {
        let raw = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        let resp = gw.raw_request(raw.as_bytes()).await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{target}: {resp}");
    }
    // On a keep-alive connection, split over two writes, between good requests.
    let mut s = gw.tls(b"http/1.1").await;
    s.write_all(b"GET /public/a HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut s).await.starts_with("HTTP/1.1 200"));
    s.write_all(b"GET /public/b#").await.unwrap();
    s.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    s.write_all(b"x HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let bad = read_response(&mut s).await;
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
    s.write_all(b"GET /public/b HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let good = read_response(&mut s).await;
    assert!(good.starts_with("HTTP/1.1 200"), "{good}");
    // A `#` in a header value or a body is no concern of the target's.
    let r = gw
        .client()
        .send(
            Method::POST,
            "/public/c",
            &[("x-note", "a#b")],
            "GET /public/d#e HTTP/1.1\r\n",
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(gw.client().get("/public/d").await.status, 200);
}

/// A reload cannot turn the HTTPS listener into a plaintext one: switching between TLS and
/// `insecure_plaintext` is refused whole, and the running configuration keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_cannot_switch_the_listener_to_plaintext() {
    let gw = gateway(PUBLIC).start().await;
    let text = &gw.config_text;
    let (tls_at, admin_at) = (
        text.find("[server.tls]").unwrap(),
        text.find("[admin]").unwrap(),
    );
    let plain = format!(
        "{}insecure_plaintext = true\n\n{}",
        &text[..tls_at],
        &text[admin_at..]
    );
    std::fs::write(&gw.config_path, plain).unwrap();
    let err = gw.reload().await.unwrap_err();
    assert!(err.contains("needs a restart"), "{err}");
    assert_eq!(gw.client().get("/public/x").await.status, 200);
    assert_eq!(
        gw.metric("portcullis_config_reloads_total{result=\"failure\"}")
            .await,
        1.0
    );
}

/// Plain HTTP sent to the TLS port gets a plain-HTTP 400 saying so (as nginx answers),
/// not a TLS alert the client cannot read, and the connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_on_the_tls_port_is_answered_400() {
    let gw = gateway(PUBLIC).start().await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /public/x HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(GUARD, s.read_to_end(&mut answer))
        .await
        .expect("closed after the answer")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(
        answer.contains("plain HTTP sent to an HTTPS port"),
        "{answer}"
    );
    assert_eq!(
        gw.metric("portcullis_tls_handshake_errors_total{reason=\"plain_http\"}")
            .await,
        1.0
    );
    // TLS clients are served as before.
    assert_eq!(gw.client().get("/public/x").await.status, 200);
}
