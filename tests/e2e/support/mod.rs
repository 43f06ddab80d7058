//! Test harness: a real gateway on 127.0.0.1:0 in front of the real echo upstream, with
//! certificates made by an rcgen CA in the test, and real TLS clients (HTTP/1.1, HTTP/2,
//! raw bytes). Logs are captured so tests can assert what never appears in them.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use portcullis::certs::{Ca, ClientSpec, Issued};
use portcullis::echo::EchoServer;
use portcullis::server::Running;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The `public` authenticator (kind `none`) and the route `/public` to the echo upstream
/// with it.
pub const PUBLIC: &str = r#"
[authenticators.public]
kind = "none"

[[routes]]
name = "public"
match = { path_prefix = "/public" }
upstream = "echo"
auth = "public"
"#;

/// Captured log output of the whole test binary.
static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

#[derive(Clone)]
struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capturing subscriber (debug level, JSON, like production).
pub fn init_logs() {
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let w = LogWriter(buf.clone());
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug,h2=info,hyper=info,rustls=info,hyper_util=info")
            .json()
            .with_writer(move || w.clone())
            .try_init();
        buf
    });
}

/// Everything logged so far by any test in this binary.
pub fn logs() -> String {
    LOGS.get()
        .and_then(|b| {
            b.lock()
                .ok()
                .map(|v| String::from_utf8_lossy(&v).into_owned())
        })
        .unwrap_or_default()
}

/// Polls `f` until it returns true or the deadline passes.
pub async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Test PKI: a CA and a server certificate for localhost / 127.0.0.1.
pub struct Pki {
    /// The CA.
    pub ca: Ca,
    /// Server certificate.
    pub server: Issued,
}

impl Pki {
    /// Fresh CA and server certificate.
    pub fn new() -> Self {
        let ca = Ca::new("portcullis test CA").unwrap();
        let server = ca
            .server(&["localhost".into(), "127.0.0.1".into()])
            .unwrap();
        Pki { ca, server }
    }

    /// A client certificate with the given CN.
    pub fn client(&self, cn: &str) -> Issued {
        self.ca.client(&ClientSpec::new(cn)).unwrap()
    }
}

/// Builds a gateway config around test-provided sections.
pub struct Builder {
    server_extra: String,
    tls_extra: String,
    body: String,
    plaintext: bool,
    pki: Option<Pki>,
}

impl Builder {
    /// Lines appended to `[server]` (e.g. `trusted_proxies = [...]`).
    pub fn server(mut self, s: &str) -> Self {
        self.server_extra.push_str(s);
        self.server_extra.push('\n');
        self
    }
    /// Tables appended after `[server.tls]` (e.g. `[server.tls.client_auth]`, `[server.limits]`).
    pub fn tls_extra(mut self, s: &str) -> Self {
        self.tls_extra.push_str(s);
        self.tls_extra.push('\n');
        self
    }
    /// Plain HTTP listener (`insecure_plaintext = true`).
    pub fn plaintext(mut self) -> Self {
        self.plaintext = true;
        self
    }
    /// Uses this PKI instead of a fresh one.
    pub fn pki(mut self, pki: Pki) -> Self {
        self.pki = Some(pki);
        self
    }

    /// Starts echo + gateway. `{echo}` in the body is replaced by the echo address and
    /// `{dir}` by the gateway's temp directory.
    pub async fn start(self) -> Gateway {
        init_logs();
        let dir = tempfile::tempdir().unwrap();
        let pki = self.pki.unwrap_or_else(Pki::new);
        let d = dir.path().to_path_buf();
        std::fs::write(d.join("server.crt"), &pki.server.cert_pem).unwrap();
        std::fs::write(d.join("server.key"), &pki.server.key_pem).unwrap();
        std::fs::write(d.join("ca.crt"), pki.ca.cert_pem()).unwrap();
        let echo = portcullis::echo::spawn(([127, 0, 0, 1], 0).into(), None)
            .await
            .unwrap();
        let tls = if self.plaintext {
            "insecure_plaintext = true\n".to_string()
        } else {
            format!(
                "\n[server.tls]\ncert = \"{0}/server.crt\"\nkey = \"{0}/server.key\"\n{1}",
                d.display(),
                self.tls_extra.replace("{dir}", &d.display().to_string())
            )
        };
        let body = self
            .body
            .replace("{echo}", &echo.addr.to_string())
            .replace("{dir}", &d.display().to_string());
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nshutdown_grace = \"5s\"\n{}{tls}\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[upstreams.echo]\ntargets = [\"http://{}\"]\n\n{body}",
            self.server_extra, echo.addr
        );
        let path = d.join("portcullis.toml");
        std::fs::write(&path, &text).unwrap();
        let config = portcullis::config::load(&path)
            .unwrap_or_else(|e| panic!("test config invalid:\n{e}\n---\n{text}"));
        let running = portcullis::server::start(config).await.unwrap();
        Gateway {
            addr: running.addrs[0],
            admin: running.admin_addr.unwrap(),
            running: Some(running),
            echo,
            pki,
            dir,
            config_path: path,
            config_text: text,
        }
    }
}

/// Starts a builder whose config body (authenticators, routes, more upstreams) is `body`.
pub fn gateway(body: &str) -> Builder {
    Builder {
        server_extra: String::new(),
        tls_extra: String::new(),
        body: body.to_string(),
        plaintext: false,
        pki: None,
    }
}

/// A running gateway under test.
pub struct Gateway {
    /// Public address.
    pub addr: SocketAddr,
    /// Admin address.
    pub admin: SocketAddr,
    /// The echo upstream.
    pub echo: EchoServer,
    /// Certificates.
    pub pki: Pki,
    /// Temp dir with config and certs.
    pub dir: tempfile::TempDir,
    /// Config file.
    pub config_path: PathBuf,
    /// Config text as written.
    pub config_text: String,
    running: Option<Running>,
}

/// A response, fully read.
#[derive(Debug)]
pub struct Resp {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl Resp {
    /// Body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    /// All values of a header the upstream received (echo body).
    pub fn upstream_headers(&self, name: &str) -> Vec<String> {
        let v = self.json();
        v["headers"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|p| p[0].as_str() == Some(name))
                    .filter_map(|p| p[1].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }
    /// The single value of a header the upstream received.
    pub fn upstream_header(&self, name: &str) -> Option<String> {
        self.upstream_headers(name).into_iter().next()
    }
    /// Body text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// An HTTPS client trusting the test CA (optionally with a client certificate).
#[derive(Clone)]
pub struct Client {
    inner: HyperClient<Connector, Full<Bytes>>,
    base: String,
}

/// rustls client config trusting `ca`, optionally presenting `identity`.
pub fn tls_client_config(
    ca: &Ca,
    identity: Option<&Issued>,
    alpn: &[&[u8]],
) -> rustls::ClientConfig {
    let roots = ca.root_store().unwrap();
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut cfg = match identity {
        Some(id) => b
            .with_client_auth_cert(id.cert_chain(), id.private_key().unwrap())
            .unwrap(),
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    cfg
}

impl Gateway {
    /// HTTP/1.1 client with keep-alive.
    pub fn client(&self) -> Client {
        self.client_with(None, false)
    }
    /// HTTP/2 client.
    pub fn h2_client(&self) -> Client {
        self.client_with(None, true)
    }
    /// Client presenting a certificate.
    pub fn mtls_client(&self, id: &Issued, h2: bool) -> Client {
        self.client_with(Some(id), h2)
    }

    fn client_with(&self, id: Option<&Issued>, h2: bool) -> Client {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_client_config(&self.pki.ca, id, &[]))
            .https_or_http();
        let connector = if h2 {
            builder.enable_http2().wrap_connector(http)
        } else {
            builder.enable_http1().wrap_connector(http)
        };
        let mut cb = HyperClient::builder(TokioExecutor::new());
        if h2 {
            cb.http2_only(true);
        }
        let scheme = if self.config_text.contains("insecure_plaintext = true") {
            "http"
        } else {
            "https"
        };
        Client {
            inner: cb.build(connector),
            base: format!("{scheme}://localhost:{}", self.addr.port()),
        }
    }

    /// GET on the admin listener.
    pub async fn admin_get(&self, path: &str) -> Resp {
        let client: HyperClient<HttpConnector, Full<Bytes>> =
            HyperClient::builder(TokioExecutor::new()).build_http();
        let resp = client
            .get(format!("http://{}{path}", self.admin).parse().unwrap())
            .await
            .unwrap();
        let (parts, body) = resp.into_parts();
        Resp {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    }

    /// The value of one metric sample line (`name{labels}`), or 0 if absent.
    pub async fn metric(&self, sample: &str) -> f64 {
        let text = self.admin_get("/metrics").await.text();
        text.lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|r| r.trim().parse().ok()))
            .unwrap_or(0.0)
    }

    /// Opens a TLS connection trusting `trust`, presenting `id` and offering `alpn`; the
    /// handshake's failure is returned.
    pub async fn tls_connect(
        &self,
        trust: &Ca,
        id: Option<&Issued>,
        alpn: &[&[u8]],
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let cfg = tls_client_config(trust, id, alpn);
        let tcp = TcpStream::connect(self.addr).await?;
        tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
    }

    /// Opens a TLS connection offering only `alpn`, for hand-written bytes or frames.
    pub async fn tls(&self, alpn: &[u8]) -> tokio_rustls::client::TlsStream<TcpStream> {
        self.tls_connect(&self.pki.ca, None, &[alpn]).await.unwrap()
    }

    /// Opens a raw TLS connection (HTTP/1.1 ALPN) for hand-written bytes.
    pub async fn raw_tls(&self) -> tokio_rustls::client::TlsStream<TcpStream> {
        self.tls(b"http/1.1").await
    }

    /// Sends raw bytes over a fresh TLS connection and reads until the server closes or
    /// a complete response head arrives plus a short grace period.
    pub async fn raw_request(&self, bytes: &[u8]) -> String {
        let mut s = self.raw_tls().await;
        s.write_all(bytes).await.unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                Ok(Ok(n)) => {
                    out.extend_from_slice(&buf[..n]);
                    if response_complete(&out) {
                        break;
                    }
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Rewrites the config file (same header, new body) and reloads.
    pub async fn rewrite_and_reload(&mut self, body: &str) -> Result<(), String> {
        let head_end = self.config_text.find("\n\n[upstreams.echo]").unwrap();
        let head = &self.config_text[..head_end];
        let body = body
            .replace("{echo}", &self.echo.addr.to_string())
            .replace("{dir}", &self.dir.path().display().to_string());
        let text = format!(
            "{head}\n\n[upstreams.echo]\ntargets = [\"http://{}\"]\n\n{body}",
            self.echo.addr
        );
        std::fs::write(&self.config_path, &text).unwrap();
        self.config_text = text;
        self.reload().await
    }

    /// Triggers a reload of the config file as it is on disk.
    pub async fn reload(&self) -> Result<(), String> {
        self.running
            .as_ref()
            .unwrap()
            .reload()
            .await
            .map_err(|e| e.to_string())
    }

    /// Graceful shutdown.
    pub async fn shutdown(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

/// Reads exactly one response (head and body) off a keep-alive stream; panics if the
/// stream closes or stalls first.
pub async fn read_response<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    while !response_complete(&out) {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("response in time")
            .expect("read");
        assert!(
            n > 0,
            "closed mid-response: {}",
            String::from_utf8_lossy(&out)
        );
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A raw upstream on loopback: `serve` runs for each connection; the count is of
/// connections accepted.
pub async fn raw_upstream<F, Fut>(serve: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(s));
        }
    });
    (addr, accepted)
}

/// The next request head off `s` (bytes after it stay in `buf`); `None` once closed.
pub async fn next_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head: Vec<u8> = buf.drain(..i + 4).collect();
            return Some(String::from_utf8_lossy(&head).into_owned());
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn response_complete(buf: &[u8]) -> bool {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let body_len = buf.len() - end - 4;
    match head.lines().find_map(|l| {
        l.strip_prefix("content-length:")
            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
    }) {
        Some(n) => body_len >= n,
        None => !head.contains("transfer-encoding: chunked") || buf.ends_with(b"0\r\n\r\n"),
    }
}

impl Client {
    /// GET `path`.
    pub async fn get(&self, path: &str) -> Resp {
        self.send(Method::GET, path, &[], Bytes::new()).await
    }

    /// GET with headers.
    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.send(Method::GET, path, headers, Bytes::new()).await
    }

    /// Any request.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Resp {
        self.try_send(method, path, headers, body).await.unwrap()
    }

    /// Any request, transport errors returned.
    pub async fn try_send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Resp, hyper_util::client::legacy::Error> {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Full::new(body.into())).unwrap();
        let resp = self.inner.request(req).await?;
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        Ok(Resp {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

/// Basic `Authorization` value.
pub fn basic(user: &str, pass: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

/// A fresh PKI for tests that need their own certificates.
pub fn pki() -> Pki {
    Pki::new()
}
