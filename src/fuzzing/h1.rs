//! `h1_response` and `h1_request_head`: the hand-written HTTP/1.1 upstream client
//! (`proxy::h1`).

use bytes::BytesMut;
use http::{HeaderMap, Method, Request, StatusCode, Uri};

use crate::proxy::body::ReqBody;
use crate::proxy::h1::{
    Decoder, MAX_HEAD_BYTES, ReqFraming, RespFraming, chunked_step, encode_head, parse_head,
};
use crate::proxy::headers::strip_hop_by_hop;

/// Longest stream also fed one byte at a time (each read re-parses the head so far, so
/// the cost is quadratic in the head's length).
const BYTEWISE_MAX: usize = 512;

/// Upstream answers fed as a byte stream, split into reads at arbitrary points.
///
/// Input: one flag byte (bit 0: the request was a HEAD), four bytes that choose the read
/// sizes, then the bytes the upstream sends. The stream is decoded the way
/// `Conn::exchange` and `Decoder::poll_data` read a connection — interim 1xx answers
/// skipped, each keep-alive answer followed by the next — once as a single read, once
/// in reads of the chosen sizes and, when short, one byte per read.
///
/// Invariants: nothing panics; every split gives the same answers (status, version,
/// headers, framing, reuse, reason, body bytes) and the same end (error, close, tunnel
/// bytes after a 101); a framed body has exactly its announced length; an answer with a
/// body that carries `Transfer-Encoding` never also passes on `Content-Length`; a body
/// read to the close never leaves the connection reusable.
pub fn h1_response(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let head_request = flags & 1 == 1;
    let (sizes, stream) = rest.split_at(rest.len().min(4));
    let whole = decode(stream, Reads::Whole, head_request);
    check_exchange(&whole);
    let split = decode(stream, Reads::Sizes(sizes), head_request);
    assert_eq!(whole, split, "reads of sizes {sizes:?} decode differently");
    if stream.len() <= BYTEWISE_MAX {
        let bytewise = decode(stream, Reads::Sizes(&[0]), head_request);
        assert_eq!(whole, bytewise, "one byte per read decodes differently");
    }
}

/// How the stream is cut into reads.
#[derive(Clone, Copy)]
enum Reads<'a> {
    /// One read with everything.
    Whole,
    /// Reads of `1 + byte % 61` bytes, cycling through the bytes (`[0]`: one byte each).
    Sizes(&'a [u8]),
}

/// An upstream connection replayed from a byte slice.
struct Wire<'a> {
    rest: &'a [u8],
    reads: Reads<'a>,
    turn: usize,
}

impl Wire<'_> {
    /// Appends the next read to `buf`; 0 once the upstream has closed.
    fn read(&mut self, buf: &mut BytesMut) -> usize {
        let want = match self.reads {
            Reads::Whole => self.rest.len(),
            Reads::Sizes([]) => self.rest.len(),
            Reads::Sizes(s) => 1 + usize::from(s[self.turn % s.len()] % 61),
        };
        self.turn += 1;
        let (now, later) = self.rest.split_at(want.min(self.rest.len()));
        buf.extend_from_slice(now);
        self.rest = later;
        now.len()
    }
}

/// Everything a client of the connection can observe.
#[derive(Debug, PartialEq)]
struct Exchange {
    answers: Vec<Answer>,
    end: End,
}

/// One final answer and the interim ones before it.
#[derive(Debug, PartialEq)]
struct Answer {
    interim: Vec<StatusCode>,
    status: StatusCode,
    version: http::Version,
    headers: HeaderMap,
    framing: RespFraming,
    keep_alive: bool,
    reason: Option<Vec<u8>>,
    body: Vec<u8>,
}

/// How the connection's story ends.
#[derive(Debug, PartialEq)]
enum End {
    /// Closed before a byte of an answer (a stale pooled connection, or after the last
    /// keep-alive answer).
    Closed,
    /// An answer after which the connection is not reused: what follows is ignored.
    NotReused,
    /// A 101: what follows belongs to the tunnel.
    Tunnel(Vec<u8>),
    /// Invalid HTTP, or closed inside a head or a framed body.
    Error,
}

/// Reads answers off the stream until it ends, fails or cannot be reused.
fn decode(stream: &[u8], reads: Reads<'_>, head_request: bool) -> Exchange {
    let mut wire = Wire {
        rest: stream,
        reads,
        turn: 0,
    };
    let mut buf = BytesMut::new();
    let mut answers = Vec::new();
    let end = loop {
        match answer(&mut wire, &mut buf, head_request) {
            Ok(Some(a)) => {
                let status = a.status;
                let keep_alive = a.keep_alive;
                answers.push(a);
                if status == StatusCode::SWITCHING_PROTOCOLS {
                    let mut tunnel = buf.to_vec();
                    tunnel.extend_from_slice(wire.rest);
                    break End::Tunnel(tunnel);
                }
                if !keep_alive {
                    break End::NotReused;
                }
            }
            Ok(None) => break End::Closed,
            Err(()) => break End::Error,
        }
    };
    Exchange { answers, end }
}

/// One answer, as `Conn::exchange` and then `Decoder::poll_data` read it. `None`: the
/// upstream closed before sending a byte of it.
fn answer(
    wire: &mut Wire<'_>,
    buf: &mut BytesMut,
    head_request: bool,
) -> Result<Option<Answer>, ()> {
    let mut interim = Vec::new();
    let mut answered = false;
    let head = loop {
        if !buf.is_empty() {
            answered = true;
            match parse_head(buf, head_request).map_err(drop)? {
                Some(h)
                    if h.status.is_informational()
                        && h.status != StatusCode::SWITCHING_PROTOCOLS =>
                {
                    interim.push(h.status);
                    continue;
                }
                Some(h) => break h,
                None if buf.len() > MAX_HEAD_BYTES => return Err(()),
                None => {}
            }
        }
        if wire.read(buf) == 0 {
            return if answered { Err(()) } else { Ok(None) };
        }
    };
    let mut body = Vec::new();
    let mut decoder = Decoder::new(head.framing);
    loop {
        match &mut decoder {
            Decoder::Done => break,
            Decoder::Length(left) if !buf.is_empty() => {
                let n = (*left).min(buf.len() as u64);
                *left -= n;
                body.extend_from_slice(&buf.split_to(n as usize));
                if *left == 0 {
                    decoder = Decoder::Done;
                }
                continue;
            }
            Decoder::Eof if !buf.is_empty() => {
                body.extend_from_slice(&buf.split());
                continue;
            }
            Decoder::Chunked(state) if !buf.is_empty() => {
                if let Some(data) = chunked_step(state, buf).map_err(drop)? {
                    assert!(!data.is_empty(), "an empty chunk of data");
                    body.extend_from_slice(&data);
                    continue;
                }
                if state.is_end() {
                    decoder = Decoder::Done;
                    continue;
                }
                assert!(buf.is_empty(), "chunked_step stopped early");
            }
            _ => {}
        }
        if wire.read(buf) == 0 {
            if let Decoder::Eof = decoder {
                break;
            }
            return Err(());
        }
    }
    Ok(Some(Answer {
        interim,
        status: head.status,
        version: head.version,
        headers: head.headers,
        framing: head.framing,
        keep_alive: head.keep_alive,
        reason: head.reason.map(|r| r.as_bytes().to_vec()),
        body,
    }))
}

/// What holds for any decoding, however it was split.
fn check_exchange(x: &Exchange) {
    for a in &x.answers {
        if let RespFraming::Length(n) = a.framing {
            assert_eq!(
                a.body.len() as u64,
                n,
                "body shorter or longer than its length"
            );
        }
        if a.framing == RespFraming::Empty {
            assert!(a.body.is_empty(), "a body where none is allowed");
        }
        if a.framing == RespFraming::Eof {
            assert!(
                !a.keep_alive,
                "a body read to the close on a reused connection"
            );
        }
        // (An answer that has no body by its status or the request's method may carry
        // both: neither delimits anything.)
        if a.framing != RespFraming::Empty
            && a.headers.contains_key(http::header::TRANSFER_ENCODING)
        {
            assert!(
                !a.headers.contains_key(http::header::CONTENT_LENGTH),
                "Content-Length passed on beside Transfer-Encoding"
            );
        }
        assert!(!a.status.is_informational() || a.status == StatusCode::SWITCHING_PROTOCOLS);
    }
}

/// A request head built from arbitrary method, target and header fields, serialized by
/// `encode_head` after the gateway's own preparation (hop-by-hop fields removed, `Host`
/// set).
///
/// Input: lines separated by LF. The first is `METHOD TARGET`; each further line is
/// `NAME:VALUE` (split at the first `:`, the value taken byte for byte). Whatever the
/// `http` constructors refuse is dropped, as the server side would have refused it.
///
/// Invariants: `httparse` reads the output back as exactly one complete request head with
/// nothing after it, with the same method, target and fields (values up to surrounding
/// whitespace); no CR or LF occurs except as a line's CRLF; the target is origin-form or
/// `*`; the framing returned is the framing the upstream reads from the head.
pub fn h1_request_head(data: &[u8]) {
    let mut lines = data.split(|&b| b == b'\n');
    let first = lines.next().unwrap_or_default();
    let (method, target) = match first.iter().position(|&b| b == b' ') {
        Some(i) => (&first[..i], &first[i + 1..]),
        None => (first, &b"/"[..]),
    };
    let Ok(method) = Method::from_bytes(method) else {
        return;
    };
    let Ok(uri) = Uri::try_from(target) else {
        return;
    };
    let mut req = Request::builder().method(method).uri(uri);
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name),
            http::HeaderValue::from_bytes(value),
        ) else {
            continue;
        };
        req = req.header(name, value);
    }
    let Ok(req) = req.body(()) else {
        return;
    };
    let (mut parts, ()) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    if !parts.headers.contains_key(http::header::HOST) {
        parts
            .headers
            .insert(http::header::HOST, http::HeaderValue::from_static("up"));
    }
    let (wire, framing) = encode_head(&mut parts, &ReqBody::Empty);
    check_request_head(&wire, framing, &parts);
}

/// Reads a serialized head back and compares it with what was meant to be sent.
fn check_request_head(wire: &[u8], framing: ReqFraming, parts: &http::request::Parts) {
    // CR and LF only as line ends.
    for (i, &b) in wire.iter().enumerate() {
        match b {
            b'\r' => assert_eq!(wire.get(i + 1), Some(&b'\n'), "bare CR at {i}"),
            b'\n' => assert_eq!(wire.get(i.wrapping_sub(1)), Some(&b'\r'), "bare LF at {i}"),
            _ => {}
        }
    }
    let lines = wire.windows(2).filter(|w| w == b"\r\n").count();
    assert_eq!(lines, parts.headers.len() + 2, "one line per field");

    let mut fields = vec![httparse::EMPTY_HEADER; parts.headers.len() + 1];
    let mut req = httparse::Request::new(&mut fields);
    let parsed = req.parse(wire);
    assert!(
        matches!(parsed, Ok(httparse::Status::Complete(n)) if n == wire.len()),
        "not exactly one request head: {parsed:?} of {} bytes: {:?}",
        wire.len(),
        String::from_utf8_lossy(wire)
    );
    assert_eq!(req.method, Some(parts.method.as_str()));
    let target = req.path.unwrap_or_default();
    assert!(
        target.starts_with('/') || target == "*",
        "request target {target:?} is neither origin-form nor *"
    );
    let sent = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    // An empty path goes out as `/` (origin form).
    let sent_as = if sent.starts_with('/') || sent == "*" {
        sent.to_string()
    } else {
        format!("/{sent}")
    };
    assert_eq!(target, sent_as);
    assert_eq!(req.version, Some(1));
    assert_eq!(req.headers.len(), parts.headers.len());
    for (got, (name, value)) in req.headers.iter().zip(parts.headers.iter()) {
        assert_eq!(got.name, name.as_str());
        assert_eq!(got.value, value.as_bytes().trim_ascii());
    }

    // The upstream's view of the framing (RFC 9112 §6.3).
    let te = req
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"));
    let lengths: Vec<&[u8]> = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
        .map(|h| h.value)
        .collect();
    assert!(!te, "Transfer-Encoding sent with an empty body");
    let numbers: Vec<Option<u64>> = lengths.iter().map(|v| decimal(v)).collect();
    if let Some(first) = numbers.first() {
        // An unreadable first one is removed by `encode_head`.
        assert!(first.is_some(), "an unreadable Content-Length was sent");
    }
    // Differing lengths never get here: the server side refuses them (hyper, h2).
    if numbers.windows(2).all(|w| w[0] == w[1]) {
        let upstream = match numbers.first().copied().flatten() {
            None | Some(0) => ReqFraming::Empty,
            Some(n) => ReqFraming::Length(n),
        };
        assert_eq!(framing, upstream, "framing differs from the head's");
    }
}

/// A `Content-Length` value as an upstream reads it: digits only.
fn decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |n, &b| {
        let d = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        n.checked_mul(10)?.checked_add(u64::from(d))
    })
}
