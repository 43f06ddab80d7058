//! Differential test of our HTTP/1.1 upstream client (`pool::Endpoint` over `h1`) against
//! the one it replaced, `hyper::client::conn::http1`.
//!
//! Each case is an upstream's byte stream, served from a raw listener on `127.0.0.1:0`
//! once to each client. What a client makes of it is reduced to what the gateway's client
//! would see: the status, version and reason phrase; the header fields as a multiset, less
//! hop-by-hop and framing fields; the body bytes (or that the body failed); and, when the
//! stream holds a second answer, whether the connection was used again and what came on
//! it. The two outcomes must be equal, or differ in a way listed in `LISTED` (below). Any
//! other difference fails the test, and so does a listed one no longer seen.
//!
//! Cases: a table of hand-picked streams; every prefix of a few streams (the upstream
//! closing at every byte offset); and a few thousand streams from a seeded generator
//! (valid and broken framings, 1xx answers, keep-alive pairs, answers sent before the
//! request body was read). The generator is deterministic: a failure names its case.
//!
//! Intended differences: ours is stricter (also in `docs/h1-differences.md`).
//!
//! | id | upstream sends | portcullis | hyper | why |
//! |----|----------------|------------|-------|-----|
//! | D1 | a head (final or 1xx) over 64 KiB | refused (502) | read, up to its 400 KiB buffer | a bounded head buffer per connection |
//! | D2 | `Transfer-Encoding` and `Content-Length` | connection closed after the answer | reused | RFC 9112 §6.3: a confused sender, maybe smuggling |
//! | D3 | `Transfer-Encoding` and an unreadable, conflicting or too large `Content-Length` | refused | length ignored | every length is checked, whatever the framing |
//! | D4 | the same length on an answer without a body (1xx, 204, 304, to HEAD) | refused | ignored | as D3 |
//! | D5 | `Transfer-Encoding` that is not visible ASCII (`x\xe9, chunked`) | refused | not chunked: read to the close | codings are tokens; hyper passes the raw chunked bytes on as the body |
//! | D6 | `Connection` that is not visible ASCII | connection closed after the answer | field ignored, reused | an unreadable hop-by-hop field is no promise of keep-alive |
//! | D7 | nothing, on a reused connection, after the request | the bodiless idempotent request sent again on a new connection | error | the upstream's idle close raced the reuse (`pool`); Go's and nginx's clients resend too |
//!
//! No finding is open: every place where ours was laxer than hyper is fixed, the last being
//! chunk extensions over 16 KiB in one body (now bounded per body, as hyper bounds them).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HOST};
use http::{HeaderMap, HeaderValue, Method, Request, Response, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::ext::ReasonPhrase;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsConnector;

use super::body::ReqBody;
use super::pool::{Dialer, Endpoint, Pool};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Failure guard on each client's run of a case (never reached by a passing case).
const GUARD: Duration = Duration::from_secs(10);
/// The generator's seed.
const SEED: u64 = 0x9E37_79B9_7F4A_7C15;
/// Generated cases with a GET or HEAD request.
const GENERATED: usize = 2400;
/// Generated cases whose answer comes before the request body was read.
const EARLY: usize = 200;
/// Cases run at once.
const IN_FLIGHT: usize = 16;

// ----- cases -------------------------------------------------------------------------

/// One upstream byte stream and the request it answers.
#[derive(Clone, Debug)]
struct Case {
    name: String,
    method: Method,
    /// A POST body: its declared length and how many of its bytes the client sent (the
    /// rest never comes). The upstream answers without reading it.
    upload: Option<(u64, usize)>,
    /// Sent once the request head has been read; then the upstream closes, unless...
    first: Vec<u8>,
    /// ...this is sent once a second request head has come on the same connection.
    second: Option<Vec<u8>>,
    /// Offsets at which `first` is split into separate writes.
    cuts: Vec<usize>,
}

impl Case {
    fn new(name: impl Into<String>, first: impl AsRef<[u8]>) -> Self {
        Case {
            name: name.into(),
            method: Method::GET,
            upload: None,
            first: first.as_ref().to_vec(),
            second: None,
            cuts: Vec::new(),
        }
    }

    fn head(mut self) -> Self {
        self.method = Method::HEAD;
        self
    }

    fn then(mut self, second: impl AsRef<[u8]>) -> Self {
        self.second = Some(second.as_ref().to_vec());
        self
    }

    fn early(mut self, declared: u64, sent: usize) -> Self {
        self.method = Method::POST;
        self.upload = Some((declared, sent));
        self
    }
}

/// What a client made of a case.
#[derive(Clone, Debug, PartialEq)]
enum Outcome {
    /// No response: the head was refused, or never came.
    Refused,
    /// The failure guard ran out.
    Hung,
    /// A response.
    Answered(Answer),
}

#[derive(Clone, Debug, PartialEq)]
struct Answer {
    status: u16,
    version: Version,
    reason: Option<Bytes>,
    /// Sorted; without the fields in `NOT_COMPARED`.
    headers: Vec<(String, Bytes)>,
    /// `None`: the body failed.
    body: Option<Bytes>,
    next: Next,
}

/// What became of the connection after a complete answer, when the stream holds a
/// second one.
#[derive(Clone, Debug, PartialEq)]
enum Next {
    NotAsked,
    /// A second request went on a new connection.
    Closed,
    /// A second request went on the same connection, which closed before answering; it
    /// was sent again on a new one, with this outcome.
    Retried(Box<Outcome>),
    /// A second request went on the same connection, with this outcome.
    Reused(Box<Outcome>),
}

/// Hop-by-hop and framing fields: each client handles them in its own way.
const NOT_COMPARED: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

fn answer<B>(resp: &Response<B>, body: Option<Bytes>, next: Next) -> Outcome {
    Outcome::Answered(Answer {
        status: resp.status().as_u16(),
        version: resp.version(),
        reason: resp
            .extensions()
            .get::<ReasonPhrase>()
            .map(|r| Bytes::copy_from_slice(r.as_bytes())),
        headers: compared(resp.headers()),
        body,
        next,
    })
}

fn compared(headers: &HeaderMap) -> Vec<(String, Bytes)> {
    let mut out: Vec<_> = headers
        .iter()
        .filter(|(k, _)| !NOT_COMPARED.contains(&k.as_str()))
        .map(|(k, v)| (k.as_str().to_owned(), Bytes::copy_from_slice(v.as_bytes())))
        .collect();
    out.sort();
    out
}

// ----- the upstream ------------------------------------------------------------------

/// The answer on every connection after the first: a second request sent there shows
/// the first connection was not reused.
const FRESH: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nfresh";

/// A raw upstream playing one case on its first connection.
struct Upstream {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    /// A second request came on the first connection.
    asked_again: Arc<AtomicBool>,
    accept: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn upstream(case: &Arc<Case>) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let asked_again = Arc::new(AtomicBool::new(false));
    let (count, asked, case) = (accepted.clone(), asked_again.clone(), case.clone());
    let accept = tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let _ = s.set_nodelay(true);
            let first = count.fetch_add(1, Ordering::SeqCst) == 0;
            let (case, asked) = (case.clone(), asked.clone());
            tokio::spawn(async move {
                if first {
                    play(s, &case, &asked).await;
                } else {
                    fresh(s).await;
                }
            });
        }
    });
    Upstream {
        addr,
        accepted,
        asked_again,
        accept,
    }
}

async fn play(mut s: TcpStream, case: &Case, asked_again: &AtomicBool) {
    let mut seen = Vec::new();
    if !request_head(&mut s, &mut seen).await {
        return;
    }
    let mut at = 0;
    for &cut in case.cuts.iter().chain([case.first.len()].iter()) {
        if s.write_all(&case.first[at..cut]).await.is_err() {
            return;
        }
        at = cut;
        tokio::task::yield_now().await;
    }
    if let Some(second) = &case.second {
        if !request_head(&mut s, &mut seen).await {
            return;
        }
        asked_again.store(true, Ordering::SeqCst);
        if s.write_all(second).await.is_err() {
            return;
        }
    }
    close(s).await;
}

async fn fresh(mut s: TcpStream) {
    let mut seen = Vec::new();
    if request_head(&mut s, &mut seen).await && s.write_all(FRESH).await.is_ok() {
        close(s).await;
    }
}

/// Sends FIN, then reads until the client closes: closing with unread bytes would send
/// a reset, which may destroy the answer before the client has read it.
async fn close(mut s: TcpStream) {
    let _ = s.shutdown().await;
    let mut buf = [0u8; 4096];
    while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
}

/// Reads past the end of the next request head; false if the client closed first.
async fn request_head(s: &mut TcpStream, seen: &mut Vec<u8>) -> bool {
    loop {
        if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            seen.drain(..end + 4);
            return true;
        }
        let mut buf = [0u8; 4096];
        match s.read(&mut buf).await {
            Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
            _ => return false,
        }
    }
}

/// Aborts a task when dropped.
struct Abort<T>(JoinHandle<T>);

impl<T> Drop for Abort<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A request body as the gateway gets it from a client: `declared` bytes announced,
/// `sent` of them arrived, the rest never does. The second value keeps the client open.
async fn client_body(declared: u64, sent: usize) -> (Incoming, (DuplexStream, Abort<()>)) {
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = Mutex::new(Some(tx));
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        if let Some(tx) = tx.lock().unwrap().take() {
            let _ = tx.send(req.into_body());
        }
        std::future::pending::<Result<Response<Empty<Bytes>>, Infallible>>()
    });
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(server), service);
    let task = Abort(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let mut wire = format!("POST / HTTP/1.1\r\nhost: client\r\ncontent-length: {declared}\r\n\r\n")
        .into_bytes();
    wire.resize(wire.len() + sent, b'u');
    client.write_all(&wire).await.unwrap();
    (rx.await.unwrap(), (client, task))
}

// ----- the two clients ---------------------------------------------------------------

fn request<B>(method: Method, upload: Option<(u64, usize)>, body: B) -> Request<B> {
    let mut req = Request::builder().method(method).uri("/");
    if let Some((declared, _)) = upload {
        req = req.header(CONTENT_LENGTH, declared);
    }
    req.body(body).unwrap()
}

async fn via_portcullis(case: Arc<Case>, dialer: &Dialer) -> Outcome {
    let up = upstream(&case).await;
    let addr = up.addr.to_string();
    let host = HeaderValue::from_str(&addr).unwrap();
    let pool = Arc::new(Pool::default());
    let ep = Endpoint {
        addr: &addr,
        tls_name: None,
        host: &host,
        pool: &pool,
        dialer,
        timeout: GUARD,
    };
    let (body, _client) = match case.upload {
        Some((declared, sent)) => {
            let (body, client) = client_body(declared, sent).await;
            (ReqBody::limited(body, u64::MAX, GUARD), Some(client))
        }
        None => (ReqBody::Empty, None),
    };
    let Ok(resp) = ep
        .send(request(case.method.clone(), case.upload, body))
        .await
    else {
        return Outcome::Refused;
    };
    let (parts, body) = resp.into_parts();
    let resp = Response::from_parts(parts, ());
    let body = body.collect().await.ok().map(|c| c.to_bytes());
    let mut next = Next::NotAsked;
    if case.second.is_some() && body.is_some() {
        let before = up.accepted.load(Ordering::SeqCst);
        let second = match ep.send(request(Method::GET, None, ReqBody::Empty)).await {
            Ok(resp) => {
                let (parts, body) = resp.into_parts();
                let body = body.collect().await.ok().map(|c| c.to_bytes());
                answer(&Response::from_parts(parts, ()), body, Next::NotAsked)
            }
            Err(_) => Outcome::Refused,
        };
        next = if up.accepted.load(Ordering::SeqCst) == before {
            Next::Reused(Box::new(second))
        } else if up.asked_again.load(Ordering::SeqCst) {
            Next::Retried(Box::new(second))
        } else {
            Next::Closed
        };
    }
    answer(&resp, body, next)
}

type HyperBody = BoxBody<Bytes, BoxError>;

fn empty() -> HyperBody {
    Empty::<Bytes>::new()
        .map_err(|never: Infallible| match never {})
        .boxed()
}

async fn via_hyper(case: Arc<Case>) -> Outcome {
    let up = upstream(&case).await;
    let tcp = TcpStream::connect(up.addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, HyperBody>(TokioIo::new(tcp))
            .await
            .unwrap();
    let _conn = Abort(tokio::spawn(conn));
    let (body, _client) = match case.upload {
        Some((declared, sent)) => {
            let (body, client) = client_body(declared, sent).await;
            (body.map_err(BoxError::from).boxed(), Some(client))
        }
        None => (empty(), None),
    };
    let host = HeaderValue::from_str(&up.addr.to_string()).unwrap();
    let mut req = request(case.method.clone(), case.upload, body);
    req.headers_mut().insert(HOST, host.clone());
    let Ok(resp) = sender.send_request(req).await else {
        return Outcome::Refused;
    };
    let (parts, body) = resp.into_parts();
    let resp = Response::from_parts(parts, ());
    let body = body.collect().await.ok().map(|c| c.to_bytes());
    let mut next = Next::NotAsked;
    if case.second.is_some() && body.is_some() {
        next = match sender.ready().await {
            Err(_) => Next::Closed,
            Ok(()) => {
                let mut req = request(Method::GET, None, empty());
                req.headers_mut().insert(HOST, host);
                Next::Reused(Box::new(match sender.send_request(req).await {
                    Ok(resp) => {
                        let (parts, body) = resp.into_parts();
                        let body = body.collect().await.ok().map(|c| c.to_bytes());
                        answer(&Response::from_parts(parts, ()), body, Next::NotAsked)
                    }
                    Err(_) => Outcome::Refused,
                }))
            }
        };
    }
    answer(&resp, body, next)
}

async fn guarded(run: impl Future<Output = Outcome>) -> Outcome {
    tokio::time::timeout(GUARD, run)
        .await
        .unwrap_or(Outcome::Hung)
}

// ----- comparison --------------------------------------------------------------------

/// How our outcome differs from hyper's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum How {
    /// No response where hyper has one.
    Head,
    /// The body failed where hyper read it.
    Body,
    /// The connection was not reused where hyper reused it.
    Reuse,
    /// A reused connection closed before answering: ours sent the request again on a new
    /// one, hyper reports the error.
    Retry,
    /// The body was read where hyper failed it (ours is laxer).
    LaxBody,
    /// Anything else: always a failure.
    Other,
}

/// `None` when the outcomes are equal; else how they differ, and in which answer of the
/// stream (0: the first, 1: the one after it on a reused connection).
fn verdict(ours: &Outcome, theirs: &Outcome, level: usize) -> Option<(How, usize)> {
    if ours == theirs && *ours != Outcome::Hung {
        return None;
    }
    let (a, b) = match (ours, theirs) {
        (Outcome::Refused, Outcome::Answered(_)) => return Some((How::Head, level)),
        (Outcome::Answered(a), Outcome::Answered(b)) => (a, b),
        _ => return Some((How::Other, level)),
    };
    let head = |x: &Answer| (x.status, x.version, x.reason.clone(), x.headers.clone());
    if head(a) != head(b) {
        return Some((How::Other, level));
    }
    if a.body != b.body {
        let how = match (&a.body, &b.body) {
            (None, Some(_)) => How::Body,
            (Some(_), None) => How::LaxBody,
            _ => How::Other,
        };
        return Some((how, level));
    }
    match (&a.next, &b.next) {
        (Next::Closed, Next::Reused(_)) => Some((How::Reuse, level)),
        (Next::Retried(_), Next::Reused(x)) if **x == Outcome::Refused => Some((How::Retry, level)),
        (Next::Reused(x), Next::Reused(y)) => verdict(x, y, level + 1),
        _ => Some((How::Other, level)),
    }
}

/// A head read leniently out of a case's bytes: enough to tell which listed difference
/// explains an outcome.
struct Scanned {
    status: u16,
    /// Its length, terminator included (all that came, if it never ended).
    len: usize,
    /// Lower-cased names, values trimmed.
    fields: Vec<(String, Vec<u8>)>,
}

impl Scanned {
    fn interim(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }

    fn values(&self, name: &str) -> impl Iterator<Item = &[u8]> {
        self.fields
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    fn has(&self, name: &str) -> bool {
        self.values(name).next().is_some()
    }

    /// Content-Length as hyper and ours both take it: fields and list items all one
    /// number of digits, at most `MAX_LENGTH`. `None` if there is none.
    fn length_ok(&self) -> Option<bool> {
        let mut found: Option<Option<u64>> = None;
        for part in self
            .values("content-length")
            .flat_map(|v| v.split(|&b| b == b','))
        {
            let part = part.trim_ascii();
            let n = (!part.is_empty() && part.iter().all(u8::is_ascii_digit))
                .then(|| std::str::from_utf8(part).ok()?.parse::<u64>().ok())
                .flatten()
                .filter(|n| *n <= u64::MAX - 2);
            found = Some(match found {
                None => n,
                Some(prev) => prev.filter(|p| Some(*p) == n),
            });
        }
        found.map(|n| n.is_some())
    }

    fn not_visible_ascii(&self, name: &str) -> bool {
        self.values(name)
            .any(|v| v.iter().any(|&b| b != b'\t' && !(b' '..=b'~').contains(&b)))
    }
}

/// The heads at the start of `wire`: interim ones, then the final one (or what came of
/// it).
fn scan(wire: &[u8]) -> Vec<Scanned> {
    let mut heads = Vec::new();
    let mut at = 0;
    while at < wire.len() {
        let rest = &wire[at..];
        let end = (0..rest.len())
            .find_map(|i| {
                if rest[i..].starts_with(b"\r\n\r\n") {
                    Some(i + 4)
                } else if rest[i..].starts_with(b"\n\n") {
                    Some(i + 2)
                } else {
                    None
                }
            })
            .unwrap_or(rest.len());
        let mut lines = rest[..end]
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .get(9..12)
            .and_then(|s| std::str::from_utf8(s).ok()?.parse().ok())
            .unwrap_or(0);
        let fields = lines
            .filter_map(|l| {
                let colon = l.iter().position(|&b| b == b':')?;
                let name = String::from_utf8_lossy(&l[..colon])
                    .trim()
                    .to_ascii_lowercase();
                Some((name, l[colon + 1..].trim_ascii().to_vec()))
            })
            .collect();
        let head = Scanned {
            status,
            len: end,
            fields,
        };
        let interim = head.interim();
        heads.push(head);
        at += end;
        if !interim {
            break;
        }
    }
    heads
}

/// The answer a difference was seen in.
struct Seen<'a> {
    heads: Vec<Scanned>,
    head_request: bool,
    /// What the upstream sent after a second request on the same connection.
    next: Option<&'a [u8]>,
}

impl Seen<'_> {
    fn last(&self) -> Option<&Scanned> {
        self.heads.last().filter(|h| !h.interim())
    }

    fn bodiless(&self, h: &Scanned) -> bool {
        h.interim() || h.status == 204 || h.status == 304 || self.head_request
    }
}

/// A difference from hyper that is intended: ours stricter, with a reason.
struct Listed {
    id: &'static str,
    how: How,
    applies: fn(&Seen<'_>) -> bool,
}

/// Every known difference. Each must still be seen, or it is stale: remove it (and its
/// row in the module docs and `docs/h1-differences.md`).
const LISTED: &[Listed] = &[
    Listed {
        id: "D1 head over 64 KiB",
        how: How::Head,
        applies: |s| s.heads.iter().any(|h| h.len > super::h1::MAX_HEAD_BYTES),
    },
    Listed {
        id: "D2 Transfer-Encoding with Content-Length: not reused",
        how: How::Reuse,
        applies: |s| {
            s.last()
                .is_some_and(|h| h.has("transfer-encoding") && h.has("content-length"))
        },
    },
    Listed {
        id: "D3 Transfer-Encoding with a bad Content-Length",
        how: How::Head,
        applies: |s| {
            s.last()
                .is_some_and(|h| h.has("transfer-encoding") && h.length_ok() == Some(false))
        },
    },
    Listed {
        id: "D4 bad Content-Length on an answer without a body",
        how: How::Head,
        applies: |s| {
            s.heads
                .iter()
                .any(|h| s.bodiless(h) && h.length_ok() == Some(false))
        },
    },
    Listed {
        id: "D5 Transfer-Encoding not visible ASCII",
        how: How::Head,
        applies: |s| {
            s.last()
                .is_some_and(|h| h.not_visible_ascii("transfer-encoding"))
        },
    },
    Listed {
        id: "D6 Connection not visible ASCII: not reused",
        how: How::Reuse,
        applies: |s| s.last().is_some_and(|h| h.not_visible_ascii("connection")),
    },
    Listed {
        id: "D7 reused connection closed unanswered: sent again",
        how: How::Retry,
        applies: |s| s.next.is_some_and(<[u8]>::is_empty),
    },
];

/// The listed difference that explains `how` in this answer of `case`, if any.
fn explain(case: &Case, how: How, level: usize) -> Option<&'static Listed> {
    let (wire, next, head_request) = match level {
        0 => (
            &case.first[..],
            case.second.as_deref(),
            case.method == Method::HEAD,
        ),
        _ => (case.second.as_deref().unwrap_or_default(), None, false),
    };
    let seen = Seen {
        heads: scan(wire),
        head_request,
        next,
    };
    LISTED.iter().find(|l| l.how == how && (l.applies)(&seen))
}

// ----- the generator -----------------------------------------------------------------

/// xorshift64: deterministic, and no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn percent(&mut self, p: u64) -> bool {
        self.next() % 100 < p
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

const INTERIM: &[&[u8]] = &[
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 103 Early Hints\r\nlink: </s.css>; rel=preload\r\n\r\n",
    b"HTTP/1.1 102 Processing\r\n\r\n",
    b"HTTP/1.0 100 Continue\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\ncontent-length: 5\r\n\r\n",
    b"HTTP/1.1 199 Odd\r\ntransfer-encoding: chunked\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\ncontent-length: x\r\n\r\n",
];

const VERSIONS: &[&str] = &["HTTP/2.0", "http/1.1", "HTTP/1.2", "HTTP/1", "HTTP/1.1 "];
const STATUSES: &[u16] = &[
    200, 200, 200, 200, 201, 202, 204, 206, 301, 304, 400, 404, 413, 500, 502, 503,
];
const ODD_STATUSES: &[&str] = &["2000", "20", "099", "600", "999", "abc", "0200"];
const REASONS: &[&[u8]] = &[
    b"",
    b"Custom Reason",
    b"\xe9t\xe9",
    b"a\tb",
    b"OK OK",
    b"x\x7f",
];

/// `{n}`: the body's length; `{m}`: another.
const CL_FORMS: &[&str] = &[
    "{n}, {n}",
    "{n},{n}",
    "{n} ,{n}",
    "0{n}",
    "+{n}",
    "-{n}",
    "",
    "{n} {n}",
    "0x{n}",
    "{n}.0",
    "{n};",
    "{n},",
    ",{n}",
    "{n}, {m}",
    "{n},,{n}",
    "18446744073709551615",
    "18446744073709551616",
    "18446744073709551614",
    "18446744073709551613",
    "99999999999999999999999",
];

const TE_FORMS: &[&[&str]] = &[
    &["Chunked"],
    &["CHUNKED"],
    &["gzip, chunked"],
    &["chunked, gzip"],
    &["identity"],
    &["gzip"],
    &["chunked, chunked"],
    &["chunked,"],
    &[""],
    &[",chunked"],
    &["chunked;q=1"],
    &["x\u{e9}, chunked"],
    &["gzip", "chunked"],
    &["chunked", "gzip"],
    &["chunked", "chunked"],
    &["chunked", ""],
];

const CONNECTION: &[&[&str]] = &[
    &["close"],
    &["keep-alive"],
    &["Keep-Alive"],
    &["CLOSE"],
    &["close, keep-alive"],
    &["keep-alive, close"],
    &["close", "keep-alive"],
    &["keep-alive", "close"],
    &["upgrade"],
    &["x-token"],
    &["keep-alive, x\u{e9}"],
    &["close\u{e9}"],
];

const BAD_NAMES: &[&[u8]] = &[
    b"x@y: v",
    b"x y: v",
    b": v",
    b"x\x01: v",
    b"\xffx: v",
    b"x(y): v",
    b"x-sp : v",
    b"x-sp\t: v",
];
const ODD_VALUES: &[&[u8]] = &[
    b"x-v: a\x00b",
    b"x-v: a\x7fb",
    b"x-v: a\rb",
    b"x-v: a\x01b",
    b"x-v: \xff\xfe",
    b"x-v:",
    b"x-v:  \t",
    b"x-v: a\tb",
    b"x-v:no-space",
];
const HUGE: &[usize] = &[16_000, 63_000, 65_400, 65_600, 70_000, 200_000, 420_000];

/// Bytes a body might hold.
fn payload(rng: &mut Rng) -> Vec<u8> {
    let n = rng.pick(&[0, 1, 2, 5, 13, 40, 300]);
    (0..n)
        .map(|_| rng.pick(b"abcdefghij0123456789 \r\n\x00\xff;:"))
        .collect()
}

fn fill(form: &str, n: usize) -> String {
    form.replace("{n}", &n.to_string())
        .replace("{m}", &(n + 1).to_string())
}

/// Pieces of a chunked body, so that one can be broken.
#[derive(Clone, Copy, PartialEq)]
enum Piece {
    Size,
    Data,
    DataEnd,
    Last,
    Trailer,
    End,
}

/// A chunked body carrying `data`; broken in one place if `break_it`. Returns the wire
/// and whether it is certainly well-formed.
fn chunked(rng: &mut Rng, data: &[u8], break_it: bool) -> (Vec<u8>, bool) {
    let mut pieces: Vec<(Piece, Vec<u8>)> = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let n = 1 + rng.below(rest.len().min(20));
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        let size = match rng.below(4) {
            0 => format!("{n:X}"),
            1 => format!("{n:04x}"),
            _ => format!("{n:x}"),
        };
        let ext = rng.pick(&["", "", "", ";a=b", "; a=\"q;\"", " ;x", ";", "\t;e"]);
        pieces.push((Piece::Size, format!("{size}{ext}\r\n").into_bytes()));
        pieces.push((Piece::Data, chunk.to_vec()));
        pieces.push((Piece::DataEnd, b"\r\n".to_vec()));
    }
    let ext = rng.pick(&["", "", ";last", " "]);
    pieces.push((Piece::Last, format!("0{ext}\r\n").into_bytes()));
    for i in 0..rng.pick(&[0, 0, 1, 2]) {
        pieces.push((Piece::Trailer, format!("x-t{i}: v{i}\r\n").into_bytes()));
    }
    pieces.push((Piece::End, b"\r\n".to_vec()));
    if break_it {
        let at = rng.below(pieces.len());
        let (piece, bytes) = &mut pieces[at];
        let line = String::from_utf8_lossy(bytes).into_owned();
        let size = line.trim_end_matches(['\r', '\n']).to_owned();
        *bytes = match piece {
            Piece::Size => match rng.below(14) {
                0 => format!("{size}\n").into_bytes(),
                1 => format!(" {size}\r\n").into_bytes(),
                2 => format!("{size} x\r\n").into_bytes(),
                3 => format!("0x{size}\r\n").into_bytes(),
                4 => format!("+{size}\r\n").into_bytes(),
                5 => format!("{size};a\nb\r\n").into_bytes(),
                6 => format!("{size};{}\r\n", "e".repeat(16_400)).into_bytes(),
                7 => format!("0000000000000000000{size}\r\n").into_bytes(),
                8 => format!("{size}\t \r\n").into_bytes(),
                9 => format!("{size}\r\r\n").into_bytes(),
                10 => b"g\r\n".to_vec(),
                11 => b"\r\n".to_vec(),
                12 => b"10000000000000000\r\n".to_vec(),
                _ => format!("{size};a=\x01\r\n").into_bytes(),
            },
            Piece::Data => {
                let mut d = bytes.clone();
                if rng.percent(50) || d.is_empty() {
                    d.push(b'x');
                } else {
                    d.pop();
                }
                d
            }
            Piece::DataEnd => rng
                .pick(&[&b"\n"[..], b"\r", b"", b"x\r\n", b"\r\r\n", b"\r\n\r\n"])
                .to_vec(),
            Piece::Last => rng
                .pick(&[&b"0\n"[..], b"00\r\n", b"0;x\r\n", b"0\r", b"0 \r\n", b"0"])
                .to_vec(),
            Piece::Trailer => match rng.below(10) {
                0 => b"bad trailer\r\n".to_vec(),
                1 => b"x : v\r\n".to_vec(),
                2 => b" x: v\r\n".to_vec(),
                3 => b"x: v\n".to_vec(),
                4 => b": v\r\n".to_vec(),
                5 => b"x: \x01\r\n".to_vec(),
                6 => b"x: a\rb\r\n".to_vec(),
                7 => b"x\xff: v\r\n".to_vec(),
                8 => format!("x-big: {}\r\n", "t".repeat(16_400)).into_bytes(),
                _ => (0..101)
                    .flat_map(|i| format!("x-{i}: v\r\n").into_bytes())
                    .collect(),
            },
            Piece::End => rng
                .pick(&[&b"\n"[..], b"", b"\r", b"\r\nJUNK", b"\r\n\r\n"])
                .to_vec(),
        };
    }
    let wire = pieces.into_iter().flat_map(|(_, b)| b).collect();
    (wire, !break_it)
}

/// Many chunks whose extensions add up past 16 KiB, each line far below it.
fn long_extensions(chunks: usize, ext: usize) -> Vec<u8> {
    let mut wire = Vec::new();
    for _ in 0..chunks {
        wire.extend_from_slice(format!("1;{}\r\nx\r\n", "e".repeat(ext)).as_bytes());
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    wire
}

/// A generated answer: its bytes, and whether its end is known from them and its
/// connection left clean (so a second answer can follow without a deadlock).
fn answer_wire(rng: &mut Rng, head_request: bool, label: &mut Vec<String>) -> (Vec<u8>, bool) {
    let mut wire = Vec::new();
    if rng.percent(10) {
        for _ in 0..=rng.below(2) {
            wire.extend_from_slice(rng.pick(INTERIM));
        }
        label.push("1xx".into());
    }
    let version = if rng.percent(85) {
        "HTTP/1.1"
    } else if rng.percent(85) {
        label.push("1.0".into());
        "HTTP/1.0"
    } else {
        rng.pick(VERSIONS)
    };
    let status = rng.pick(STATUSES);
    let code = if rng.percent(97) {
        status.to_string()
    } else {
        rng.pick(ODD_STATUSES).to_owned()
    };
    wire.extend_from_slice(format!("{version} {code}").as_bytes());
    if rng.percent(97) {
        wire.push(b' ');
        let canonical = http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        if rng.percent(85) {
            wire.extend_from_slice(canonical.as_bytes());
        } else {
            wire.extend_from_slice(rng.pick(REASONS));
        }
    }
    wire.extend_from_slice(if rng.percent(98) { b"\r\n" } else { b"\n" });
    let bodiless = head_request || status == 204 || status == 304;
    let mut fields: Vec<Vec<u8>> = Vec::new();
    for i in 0..rng.below(4) {
        fields.push(format!("x-h{i}: v{}", rng.below(3)).into_bytes());
    }
    if rng.percent(10) {
        fields.push(format!("x-h0: w{}", rng.below(3)).into_bytes());
    }
    let data = payload(rng);
    let (mut body, mut delimited) = match rng.below(10) {
        0 | 1 => {
            label.push("cl".into());
            fields.push(format!("content-length: {}", data.len()).into_bytes());
            (data, true)
        }
        2 => {
            let n = data.len();
            let declared = if rng.percent(50) || n == 0 {
                n + 1 + rng.below(5)
            } else {
                n - 1 - rng.below(n.min(5))
            };
            label.push("cl-mismatch".into());
            fields.push(format!("content-length: {declared}").into_bytes());
            (data, false)
        }
        3 => {
            let form = rng.pick(CL_FORMS);
            label.push(format!("cl={form:?}"));
            fields.push(format!("content-length: {}", fill(form, data.len())).into_bytes());
            if rng.percent(30) {
                let other = rng.pick(&["{n}", "{m}", "{n}, {n}"]);
                label.push(format!("cl2={other:?}"));
                fields.push(format!("content-length: {}", fill(other, data.len())).into_bytes());
            }
            (data, false)
        }
        4 | 5 => {
            let break_it = rng.percent(40);
            label.push(
                if break_it {
                    "chunked-broken"
                } else {
                    "chunked"
                }
                .into(),
            );
            fields.push(b"transfer-encoding: chunked".to_vec());
            if rng.percent(3) {
                label.push("long-extensions".into());
                (long_extensions(12, 1_500), false)
            } else {
                chunked(rng, &data, break_it)
            }
        }
        6 => {
            let te = rng.pick(TE_FORMS);
            label.push(format!("te={te:?}"));
            for v in te {
                fields.push(format!("transfer-encoding: {v}").into_bytes());
            }
            let body = if rng.percent(60) {
                chunked(rng, &data, false).0
            } else {
                data
            };
            (body, false)
        }
        7 => {
            let break_it = rng.percent(20);
            let (wire, ok) = chunked(rng, &data, break_it);
            let cl = match rng.below(4) {
                0 => wire.len().to_string(),
                1 => data.len().to_string(),
                2 => "abc".into(),
                _ => fill("{n}, {m}", data.len()),
            };
            label.push(format!("te+cl={cl}"));
            fields.push(b"transfer-encoding: chunked".to_vec());
            fields.push(format!("content-length: {cl}").into_bytes());
            (wire, ok)
        }
        _ => {
            label.push("until-close".into());
            (data, false)
        }
    };
    if bodiless {
        label.push(if head_request { "HEAD" } else { "bodiless" }.into());
        if rng.percent(50) {
            body.clear();
        }
        delimited = body.is_empty();
    }
    if rng.percent(35) {
        let conn = rng.pick(CONNECTION);
        label.push(format!("connection={conn:?}"));
        for v in conn {
            fields.push(format!("connection: {v}").into_bytes());
        }
    }
    for i in (1..fields.len()).rev() {
        fields.swap(i, rng.below(i + 1));
    }
    let mut bare_lf = None;
    if rng.percent(15) {
        match rng.below(7) {
            0 => {
                label.push("obs-fold".into());
                fields.push(b"x-fold: a".to_vec());
                fields.push(b" b".to_vec());
            }
            1 => {
                label.push("bad-name".into());
                fields.push(rng.pick(BAD_NAMES).to_vec());
            }
            2 => {
                label.push("odd-value".into());
                fields.push(rng.pick(ODD_VALUES).to_vec());
            }
            3 if !fields.is_empty() => {
                label.push("bare-lf".into());
                bare_lf = Some(rng.below(fields.len()));
            }
            4 => {
                let n = rng.pick(&[95, 97, 98, 99, 100, 101, 105]);
                label.push(format!("{n}-more-fields"));
                for i in 0..n {
                    fields.push(format!("x-m{i}: v").into_bytes());
                }
            }
            5 => {
                let n = rng.pick(HUGE);
                label.push(format!("huge-field-{n}"));
                fields.push(format!("x-big: {}", "a".repeat(n)).into_bytes());
            }
            _ => {
                label.push("leading-space-field".into());
                fields.insert(0, b" x-lead: v".to_vec());
            }
        }
    }
    for (i, f) in fields.iter().enumerate() {
        wire.extend_from_slice(f);
        wire.extend_from_slice(if bare_lf == Some(i) { b"\n" } else { b"\r\n" });
    }
    wire.extend_from_slice(b"\r\n");
    wire.extend_from_slice(&body);
    (wire, delimited)
}

fn generated(rng: &mut Rng, i: usize) -> Case {
    let head_request = rng.percent(15);
    let mut label = Vec::new();
    let (first, delimited) = answer_wire(rng, head_request, &mut label);
    let mut case = Case::new(String::new(), first);
    if head_request {
        case = case.head();
    }
    if delimited && rng.percent(50) {
        let mut second = Vec::new();
        let (wire, _) = answer_wire(rng, false, &mut second);
        label.push(format!("then[{}]", second.join(" ")));
        case = case.then(wire);
    }
    for _ in 0..rng.below(3) {
        case.cuts.push(rng.below(case.first.len() + 1));
    }
    case.cuts.sort_unstable();
    case.name = format!("generated #{i}: {}", label.join(" "));
    case
}

/// An answer sent before the request body was read (a 413, a 401, a 2xx that reads on).
fn early(rng: &mut Rng, i: usize) -> Case {
    let status = rng.pick(&[200, 201, 202, 400, 401, 403, 413, 500]);
    let mut wire = Vec::new();
    if rng.percent(20) {
        wire.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    wire.extend_from_slice(format!("HTTP/1.1 {status} Early\r\n").as_bytes());
    let close = rng.percent(50);
    if close {
        wire.extend_from_slice(b"connection: close\r\n");
    }
    let data = payload(rng);
    let framing = rng.below(3);
    match framing {
        0 => {
            wire.extend_from_slice(format!("content-length: {}\r\n\r\n", data.len()).as_bytes());
            wire.extend_from_slice(&data);
        }
        1 => {
            wire.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
            wire.extend_from_slice(&chunked(rng, &data, false).0);
        }
        _ => {
            wire.extend_from_slice(b"\r\n");
            wire.extend_from_slice(&data);
        }
    }
    let sent = rng.pick(&[0, 10, 100]);
    let name =
        format!("early #{i}: {status} framing={framing} close={close} sent={sent}/100 of the body");
    Case::new(name, wire).early(100, sent)
}

/// Streams cut short at every byte offset: (name, HEAD request, first, second).
const TRUNCATED: &[(&str, bool, &[u8], &[u8])] = &[
    (
        "length",
        false,
        b"HTTP/1.1 200 OK\r\nx-a: 1\r\ncontent-length: 5\r\n\r\nhello",
        b"",
    ),
    (
        "1xx then chunked with extensions and trailers",
        false,
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;e=1\r\nhello\r\n0\r\nx-t: 1\r\n\r\n",
        b"",
    ),
    (
        "HTTP/1.0 until close",
        false,
        b"HTTP/1.0 200 OK\r\nx-a: 1\r\n\r\nhello",
        b"",
    ),
    (
        "keep-alive pair",
        false,
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        b"HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    ),
    (
        "HEAD then GET",
        true,
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
    ),
    (
        "204 then chunked",
        false,
        b"HTTP/1.1 204 No Content\r\nx: y\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    ),
    (
        "HTTP/1.0 keep-alive pair",
        false,
        b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 1\r\n\r\na",
        b"HTTP/1.0 200 OK\r\n\r\nb",
    ),
];

fn truncated() -> Vec<Case> {
    let mut cases = Vec::new();
    for &(name, head_request, first, second) in TRUNCATED {
        let whole = [first, second].concat();
        for cut in 0..whole.len() {
            let mut case = if cut < first.len() {
                Case::new("", &first[..cut])
            } else {
                Case::new("", first).then(&whole[first.len()..cut])
            };
            if head_request {
                case = case.head();
            }
            case.name = format!("{name} cut at byte {cut}");
            cases.push(case);
        }
    }
    cases
}

/// Hand-picked streams.
fn table() -> Vec<Case> {
    let ok = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    let big = |n: usize| {
        format!(
            "HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: 2\r\n\r\nok",
            "a".repeat(n)
        )
    };
    let fields = |n: usize| {
        let f: String = (0..n).map(|i| format!("x-{i}: v\r\n")).collect();
        format!("HTTP/1.1 200 OK\r\n{f}\r\n")
    };
    let mut chunks_ext = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    chunks_ext.extend_from_slice(&long_extensions(12, 1_500));
    let mut trailers = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n".to_vec();
    for i in 0..101 {
        trailers.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
    }
    trailers.extend_from_slice(b"\r\n");
    vec![
        Case::new("plain keep-alive", ok).then(ok),
        Case::new(
            "HTTP/1.0 with chunked",
            "HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        ),
        Case::new(
            "HTTP/1.0 with a coding other than chunked",
            "HTTP/1.0 200 OK\r\ntransfer-encoding: gzip\r\n\r\nok",
        ),
        Case::new(
            "HTTP/1.0 keep-alive",
            "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok",
        )
        .then(ok),
        Case::new(
            "HTTP/1.0 close, keep-alive in one field",
            "HTTP/1.0 200 OK\r\nconnection: close, keep-alive\r\ncontent-length: 2\r\n\r\nok",
        )
        .then(ok),
        Case::new(
            "HTTP/1.0 close then keep-alive in two fields",
            "HTTP/1.0 200 OK\r\nconnection: close\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok",
        )
        .then(ok),
        Case::new(
            "HTTP/1.1 keep-alive then close in two fields",
            "HTTP/1.1 200 OK\r\nconnection: keep-alive\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
        )
        .then(ok),
        Case::new(
            "a length list of one value",
            "HTTP/1.1 200 OK\r\ncontent-length: 2, 2\r\n\r\nok",
        )
        .then(ok),
        Case::new(
            "a length twice",
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\nok",
        )
        .then(ok),
        Case::new(
            "conflicting lengths",
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok!",
        ),
        Case::new(
            "the largest length",
            "HTTP/1.1 200 OK\r\ncontent-length: 18446744073709551615\r\n\r\nok",
        ),
        Case::new(
            "the largest length but one",
            "HTTP/1.1 200 OK\r\ncontent-length: 18446744073709551614\r\n\r\nok",
        ),
        Case::new(
            "chunked with an unreadable length",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: abc\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        ),
        Case::new(
            "chunked with a length",
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        )
        .then(ok),
        Case::new(
            "204 with a body",
            "HTTP/1.1 204 No Content\r\n\r\nhello",
        ),
        Case::new(
            "304 with a length",
            "HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\n",
        )
        .then(ok),
        Case::new(
            "304 with an unreadable length",
            "HTTP/1.1 304 Not Modified\r\ncontent-length: x\r\n\r\n",
        )
        .then(ok),
        Case::new(
            "HEAD with a length",
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
        )
        .head()
        .then(ok),
        Case::new(
            "HEAD with chunked",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
        )
        .head()
        .then(ok),
        Case::new(
            "101 unasked",
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
        ),
        Case::new(
            "interim answers",
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        )
        .then(ok),
        Case::new(
            "an interim answer with a bad length",
            "HTTP/1.1 100 Continue\r\ncontent-length: x\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        ),
        Case::new(
            "obs-fold",
            "HTTP/1.1 200 OK\r\nx-a: 1\r\n 2\r\ncontent-length: 2\r\n\r\nok",
        ),
        Case::new("100 fields", fields(100)),
        Case::new("101 fields", fields(101)),
        Case::new("a head just under 64 KiB", big(65_400)),
        Case::new("a head just over 64 KiB", big(65_600)),
        Case::new("a 300 KiB head", big(300_000)),
        Case::new("a 500 KiB head", big(500_000)),
        Case::new("chunk extensions over 16 KiB in all", chunks_ext),
        Case::new("101 trailer fields", trailers),
        Case::new(
            "a trailer that is not a field",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nbad trailer\r\n\r\n",
        ),
        Case::new(
            "a trailer with a bare LF",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nx: 1\ny: 2\r\n\r\n",
        ),
        Case::new(
            "a coding with obs-text before chunked",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: x\xe9, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        ),
        Case::new(
            "HTTP/1.0 keep-alive next to obs-text",
            b"HTTP/1.0 200 OK\r\nconnection: keep-alive, x\xe9\r\ncontent-length: 2\r\n\r\nok",
        )
        .then(ok),
        Case::new(
            "an answer past the length",
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokJUNK",
        ),
        Case::new(
            "a chunked body with data past its end",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\nJUNK",
        ),
        Case::new(
            "an early 413 while the body is still coming",
            "HTTP/1.1 413 Payload Too Large\r\nconnection: close\r\ncontent-length: 4\r\n\r\nbig!",
        )
        .early(100, 10),
        Case::new(
            "an early 200 while the body is still coming",
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        )
        .early(100, 10),
    ]
}

fn cases() -> Vec<Case> {
    let mut rng = Rng(SEED);
    let mut cases = table();
    cases.extend(truncated());
    cases.extend((0..GENERATED).map(|i| generated(&mut rng, i)));
    cases.extend((0..EARLY).map(|i| early(&mut rng, i)));
    cases
}

fn show(bytes: &[u8]) -> String {
    let s: String = bytes.escape_ascii().to_string();
    if s.len() > 400 {
        format!("{}... ({} bytes)", &s[..400], bytes.len())
    } else {
        s
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stream_gets_hypers_outcome_or_a_listed_stricter_one() {
    let cases = cases();
    let total = cases.len();
    let tls = crate::tls::client_config(None).unwrap();
    let dialer = Arc::new(Dialer {
        tls: TlsConnector::from(Arc::new(tls)),
        connect_timeout: GUARD,
    });
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut running = JoinSet::new();
    for case in cases {
        let slot = slots.clone().acquire_owned().await.unwrap();
        let dialer = dialer.clone();
        running.spawn(async move {
            let case = Arc::new(case);
            let ours = guarded(via_portcullis(case.clone(), &dialer)).await;
            let theirs = guarded(via_hyper(case.clone())).await;
            drop(slot);
            (case, ours, theirs)
        });
    }
    let mut failures = Vec::new();
    let mut seen: BTreeMap<&str, usize> = LISTED.iter().map(|l| (l.id, 0)).collect();
    while let Some(done) = running.join_next().await {
        let (case, ours, theirs) = done.unwrap();
        let Some((how, level)) = verdict(&ours, &theirs, 0) else {
            continue;
        };
        if let Some(listed) = explain(&case, how, level) {
            *seen.entry(listed.id).or_default() += 1;
            continue;
        }
        failures.push(format!(
            "{how:?} in answer {level} of {}\n  first:  {}\n  second: {}\n  ours:   {ours:?}\n  hyper:  {theirs:?}",
            case.name,
            show(&case.first),
            case.second.as_deref().map_or_else(|| "-".into(), show),
        ));
    }
    failures.sort();
    let known: usize = seen.values().sum();
    println!(
        "{total} cases: {} equal, {known} listed differences",
        total - known - failures.len()
    );
    for l in LISTED {
        println!("  {:5}  {}", seen[l.id], l.id);
    }
    let stale: Vec<_> = seen
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(id, _)| id)
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {total} streams differ from hyper in a way not listed:\n{}",
        failures.len(),
        failures
            .iter()
            .take(12)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        stale.is_empty(),
        "listed differences no longer seen: {stale:?}"
    );
}
