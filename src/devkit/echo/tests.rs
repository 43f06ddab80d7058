//! Unit tests of `echo`.

use super::*;
use http_body_util::Full;
use hyper::client::conn::{http1, http2};
use serde_json::Value;

type Sender = http1::SendRequest<Full<Bytes>>;

async fn h1(addr: SocketAddr) -> Sender {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = http1::handshake(TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn.with_upgrades());
    sender
}

fn get(uri: &str) -> Request<Full<Bytes>> {
    Request::get(uri)
        .header(header::HOST, "echo.test")
        .body(Full::default())
        .unwrap()
}

async fn json(resp: Response<Incoming>) -> Value {
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap()
}

async fn server() -> EchoServer {
    spawn("127.0.0.1:0".parse().unwrap(), None).await.unwrap()
}

#[tokio::test]
async fn echoes_method_uri_headers_and_body() {
    let srv = server().await;
    let mut tx = h1(srv.addr).await;
    let req = Request::post("/a/b?x=1&y=%20")
        .header(header::HOST, "echo.test")
        .header("X-One", "1")
        .header("x-rep", "a")
        .header("x-rep", "b")
        .body(Full::new(Bytes::from_static(b"hello")))
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
    let v = json(resp).await;
    assert_eq!(v["method"], "POST");
    assert_eq!(v["uri"], "/a/b?x=1&y=%20");
    assert_eq!(v["version"], "HTTP/1.1");
    assert_eq!(v["body_len"], 5);
    assert_eq!(v["body"], "hello");
    let headers = v["headers"].as_array().unwrap();
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|h| (h[0].as_str().unwrap(), h[1].as_str().unwrap()))
        .collect();
    assert!(pairs.contains(&("host", "echo.test")));
    assert!(pairs.contains(&("x-one", "1")));
    let reps: Vec<_> = pairs.iter().filter(|(n, _)| *n == "x-rep").collect();
    assert_eq!(reps, vec![&("x-rep", "a"), &("x-rep", "b")]);
    assert_eq!(srv.requests_seen(), 1);
}

#[tokio::test]
async fn counts_whole_body_but_echoes_first_64k() {
    let srv = server().await;
    let mut tx = h1(srv.addr).await;
    let body = vec![b'a'; 100_000];
    let req = Request::put("/upload")
        .header(header::HOST, "echo.test")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let v = json(tx.send_request(req).await.unwrap()).await;
    assert_eq!(v["body_len"], 100_000);
    assert_eq!(v["body"].as_str().unwrap().len(), MAX_ECHO_BODY);
}

#[tokio::test]
async fn slow_sleeps_then_echoes() {
    let srv = server().await;
    let mut tx = h1(srv.addr).await;
    let start = std::time::Instant::now();
    let resp = tx.send_request(get("/slow?ms=50")).await.unwrap();
    assert!(start.elapsed() >= Duration::from_millis(50));
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(json(resp).await["uri"], "/slow?ms=50");
}

#[tokio::test]
async fn die_closes_connection_without_response() {
    let srv = server().await;
    let mut tx = h1(srv.addr).await;
    let err = tx.send_request(get("/die")).await.unwrap_err();
    assert!(err.is_incomplete_message() || err.is_closed(), "{err:?}");
    // The server is still fine for the next connection.
    let mut tx = h1(srv.addr).await;
    let resp = tx.send_request(get("/after")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(srv.requests_seen(), 2);
}

#[tokio::test]
async fn status_answers_requested_code_with_echo_body() {
    let srv = server().await;
    let mut tx = h1(srv.addr).await;
    let resp = tx.send_request(get("/status/418")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::IM_A_TEAPOT);
    assert_eq!(json(resp).await["uri"], "/status/418");

    let resp = tx.send_request(get("/status/503")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json(resp).await["method"], "GET");

    let resp = tx.send_request(get("/status/204")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(body.is_empty());
}

#[tokio::test]
async fn status_rejects_out_of_range_code() {
    let srv = server().await;
    let mut tx = h1(srv.addr).await;
    for uri in ["/status/abc", "/status/101", "/status/600", "/status/"] {
        let resp = tx.send_request(get(uri)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{uri}");
        let _ = json(resp).await;
    }
}

#[tokio::test]
async fn big_streams_requested_bytes_in_16k_frames() {
    let srv = server().await;
    let mut tx = h1(srv.addr).await;
    let resp = tx.send_request(get("/big?bytes=100000")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_LENGTH], "100000");
    let mut body = resp.into_body();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let data = frame.unwrap().into_data().unwrap();
        assert!(data.iter().all(|&b| b == b'x'));
        total += data.len();
    }
    assert_eq!(total, 100_000);

    let resp = tx.send_request(get("/big?bytes=0")).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(body.is_empty());
}

#[tokio::test]
async fn stream_sends_separate_chunks() {
    let srv = server().await;
    let mut tx = h1(srv.addr).await;
    let resp = tx
        .send_request(get("/stream?chunks=3&delay_ms=10"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::TRANSFER_ENCODING], "chunked");
    assert!(resp.headers().get(header::CONTENT_LENGTH).is_none());
    let mut body = resp.into_body();
    let mut frames = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            frames.push(String::from_utf8(data.to_vec()).unwrap());
        }
    }
    assert_eq!(frames, vec!["chunk 0\n", "chunk 1\n", "chunk 2\n"]);
}

fn upgrade_request(uri: &str, protocol: &str, key: Option<&str>) -> Request<Full<Bytes>> {
    let mut req = Request::get(uri)
        .header(header::HOST, "echo.test")
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, protocol);
    if let Some(key) = key {
        req = req
            .header(header::SEC_WEBSOCKET_KEY, key)
            .header(header::SEC_WEBSOCKET_VERSION, "13");
    }
    req.body(Full::default()).unwrap()
}

#[tokio::test]
async fn websocket_upgrade_answers_accept_and_echoes_bytes() {
    let srv = server().await;
    let mut tx = h1(srv.addr).await;
    let req = upgrade_request("/ws", "websocket", Some("dGhlIHNhbXBsZSBub25jZQ=="));
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(resp.headers()[header::UPGRADE], "websocket");
    assert_eq!(resp.headers()[header::CONNECTION], "upgrade");
    // The example from RFC 6455 section 1.3.
    assert_eq!(
        resp.headers()[header::SEC_WEBSOCKET_ACCEPT],
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
    let upgraded = hyper::upgrade::on(resp).await.unwrap();
    let mut io = TokioIo::new(upgraded);
    io.write_all(b"\x81\x05hello").await.unwrap();
    let mut back = [0u8; 7];
    io.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"\x81\x05hello");
    io.shutdown().await.unwrap();
    let mut rest = Vec::new();
    io.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
}

#[tokio::test]
async fn other_upgrade_token_is_echoed_on_any_path() {
    let srv = server().await;
    let mut tx = h1(srv.addr).await;
    let resp = tx
        .send_request(upgrade_request("/anything", "echo-proto", None))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(resp.headers()[header::UPGRADE], "echo-proto");
    assert!(resp.headers().get(header::SEC_WEBSOCKET_ACCEPT).is_none());
    let mut io = TokioIo::new(hyper::upgrade::on(resp).await.unwrap());
    io.write_all(b"raw bytes").await.unwrap();
    let mut back = [0u8; 9];
    io.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"raw bytes");
}

#[tokio::test]
async fn ws_without_upgrade_header_is_426() {
    let srv = server().await;
    let mut tx = h1(srv.addr).await;
    let resp = tx.send_request(get("/ws")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UPGRADE_REQUIRED);
    assert_eq!(resp.headers()[header::UPGRADE], "websocket");
}

#[tokio::test]
async fn answers_http2_prior_knowledge() {
    let srv = server().await;
    let tcp = TcpStream::connect(srv.addr).await.unwrap();
    let (mut tx, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::post(format!("http://{}/h2?q=1", srv.addr))
        .header("x-h2", "yes")
        .body(Full::new(Bytes::from_static(b"two")))
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.version(), Version::HTTP_2);
    let v = json(resp).await;
    assert_eq!(v["version"], "HTTP/2.0");
    assert_eq!(v["uri"], "/h2?q=1");
    assert_eq!(v["body"], "two");

    let req = Request::get(format!("http://{}/die", srv.addr))
        .body(Full::default())
        .unwrap();
    assert!(tx.send_request(req).await.is_err());
}

fn tls_configs(alpn: &[u8]) -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(signing_key.serialize_der()).unwrap();
    let mut server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .unwrap();
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![alpn.to_vec()];
    (Arc::new(server), Arc::new(client))
}

async fn tls_connect(
    addr: SocketAddr,
    client: Arc<rustls::ClientConfig>,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(client)
        .connect(name, tcp)
        .await
        .unwrap()
}

#[tokio::test]
async fn serves_http1_over_tls() {
    let (server, client) = tls_configs(b"http/1.1");
    let srv = spawn("127.0.0.1:0".parse().unwrap(), Some(server))
        .await
        .unwrap();
    let tls = tls_connect(srv.addr, client).await;
    let (mut tx, conn) = http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let v = json(tx.send_request(get("/tls")).await.unwrap()).await;
    assert_eq!(v["version"], "HTTP/1.1");
    assert_eq!(v["uri"], "/tls");
}

#[tokio::test]
async fn serves_http2_over_tls_with_alpn() {
    let (server, client) = tls_configs(b"h2");
    let srv = spawn("127.0.0.1:0".parse().unwrap(), Some(server))
        .await
        .unwrap();
    let tls = tls_connect(srv.addr, client).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut tx, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("https://localhost/tls2")
        .body(Full::<Bytes>::default())
        .unwrap();
    let v = json(tx.send_request(req).await.unwrap()).await;
    assert_eq!(v["version"], "HTTP/2.0");
}

#[tokio::test]
async fn shutdown_stops_accepting() {
    let srv = server().await;
    let addr = srv.addr;
    let mut tx = h1(addr).await;
    assert_eq!(
        tx.send_request(get("/")).await.unwrap().status(),
        StatusCode::OK
    );
    srv.shutdown();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if TcpStream::connect(addr).await.is_err() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still accepting");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(srv.requests_seen(), 1);
}

#[tokio::test]
async fn big_body_yields_16k_frames_with_exact_size_hint() {
    let mut body = EchoBody::Big { remaining: 40_000 };
    assert_eq!(body.size_hint().exact(), Some(40_000));
    let mut sizes = Vec::new();
    while let Some(frame) = body.frame().await {
        sizes.push(frame.unwrap().into_data().unwrap().len());
    }
    assert_eq!(sizes, vec![BIG_FRAME, BIG_FRAME, 40_000 - 2 * BIG_FRAME]);
    assert!(body.is_end_stream());
}

#[test]
fn parses_query_numbers() {
    assert_eq!(query_u64("ms=5", "ms"), Some(5));
    assert_eq!(query_u64("a=1&ms=7&ms=9", "ms"), Some(7));
    assert_eq!(query_u64("ms=x", "ms"), None);
    assert_eq!(query_u64("ms", "ms"), None);
    assert_eq!(query_u64("", "ms"), None);
    assert_eq!(query_u64("ms=-1", "ms"), None);
}

#[test]
fn websocket_accept_matches_rfc_example() {
    assert_eq!(
        websocket_accept(b"dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}
