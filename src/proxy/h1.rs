//! HTTP/1.1 to upstreams, run by the task that serves the request.
//!
//! hyper's client runs every connection as a task of its own and passes it each request,
//! response and body chunk through channels: a hop between tasks per step and
//! per-connection state (task, channel block, buffers) that a pool of a thousand
//! connections keeps out of the CPU caches. Here the request's own task writes the head,
//! reads the answer and, when the whole body came with the head (most API responses), hands
//! it on as one buffer and returns the connection to the pool before the response leaves
//! `pool::Endpoint::send`. An idle connection is a socket and nothing else.
//!
//! What is parsed follows RFC 9112: 1xx answers other than 101 are skipped; HEAD, 204 and
//! 304 have no body; `Transfer-Encoding` (chunked, or read-until-close) wins over
//! `Content-Length`, which must be one number; anything else is an error (502).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, TRANSFER_ENCODING};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use http_body::Body;
use hyper::ext::ReasonPhrase;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_util::io::poll_read_buf;

use super::body::{BodyError, ReqBody};

/// Most response header fields accepted (hyper's default).
const MAX_HEADERS: usize = 100;
/// Largest response head; nginx's default `proxy_buffer_size` is 4 or 8 KiB.
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most bytes of chunk extensions, and of trailer section, in one chunked body (both are
/// dropped as they are read, so neither grows a buffer; the bound is on time spent, as
/// hyper's).
const MAX_CHUNK_META: usize = 16 * 1024;
/// Read size while waiting for a response head.
const HEAD_READ: usize = 8 * 1024;
/// Read size for the rest of a body that did not come with its head.
const BODY_READ: usize = 32 * 1024;
/// Largest `Content-Length` taken (hyper's client refuses more).
const MAX_LENGTH: u64 = u64::MAX - 2;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The connection was closed or reset before a byte of the answer came back: on a
    /// pooled connection, the upstream closed it just as it was taken.
    #[error("upstream closed the connection before answering")]
    Stale,
    /// Reading or writing the upstream connection failed.
    #[error("upstream i/o: {0}")]
    Io(#[from] io::Error),
    /// The upstream's answer is not valid HTTP/1.1.
    #[error("invalid response from upstream: {0}")]
    Invalid(&'static str),
    /// The client's body failed or went over its limit.
    #[error("request body: {0}")]
    Body(#[source] BodyError),
}

/// An upstream connection, TCP or TLS over TCP.
pub enum Io {
    /// `http` target.
    Plain(TcpStream),
    /// `https` target.
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// One upstream connection and the bytes read from it but not yet consumed. The buffer
/// holds no memory while the connection is idle.
pub struct Conn {
    /// The transport.
    pub io: Io,
    /// Read ahead of what has been parsed (after a 101: the first tunnel bytes).
    pub buf: BytesMut,
    /// The connection's place under `upstreams.X.max_connections` (none in tests).
    pub permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// How a request body goes on the wire.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ReqFraming {
    /// No body.
    Empty,
    /// `Content-Length` bytes as they come.
    Length(u64),
    /// `Transfer-Encoding: chunked`, one chunk per frame.
    Chunked,
}

/// How a response body is delimited.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RespFraming {
    /// No body (HEAD, 1xx, 204, 304, `Content-Length: 0`).
    Empty,
    /// This many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the upstream closes the connection.
    Eof,
}

/// A parsed response head.
pub struct Head {
    /// Status code.
    pub status: StatusCode,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// Header fields as received.
    pub headers: HeaderMap,
    /// How the body is delimited.
    pub framing: RespFraming,
    /// Whether the connection may carry another request once the body is read.
    pub keep_alive: bool,
    /// The upstream's reason phrase, when it is not the status code's usual one.
    pub reason: Option<ReasonPhrase>,
}

/// Serializes a request head (origin-form target, `Host` already set) and chooses the
/// body's framing as hyper's client does: the client's `Content-Length`; none for a body
/// that is already over, or on a GET or HEAD that did not announce one; else the body's
/// known size, or chunked. Hop-by-hop fields are the caller's to remove first; `Expect`
/// is removed from requests with a body, as the gateway answers it to the client itself.
pub fn encode_head(parts: &mut Parts, body: &ReqBody) -> (Vec<u8>, ReqFraming) {
    let h = &mut parts.headers;
    let (declared, unreadable) = match h.get(CONTENT_LENGTH) {
        None => (None, false),
        Some(v) => {
            let n = parse_length(v.as_bytes());
            (n, n.is_none())
        }
    };
    if unreadable {
        // The server side validates it, so never expected: not sent on.
        h.remove(CONTENT_LENGTH);
    }
    let framing = match declared {
        // Nothing to send (and a GET with `Content-Length: 0` may still be retried).
        Some(0) => ReqFraming::Empty,
        Some(n) => ReqFraming::Length(n),
        None if body.is_end_stream() || matches!(parts.method, Method::GET | Method::HEAD) => {
            // Upstreams may refuse a POST, PUT or PATCH without a length (411).
            if matches!(parts.method, Method::POST | Method::PUT | Method::PATCH) {
                h.insert(CONTENT_LENGTH, HeaderValue::from(0u64));
            }
            ReqFraming::Empty
        }
        None => match body.size_hint().exact() {
            Some(n) => {
                h.insert(CONTENT_LENGTH, HeaderValue::from(n));
                ReqFraming::Length(n)
            }
            None => {
                h.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
                ReqFraming::Chunked
            }
        },
    };
    if framing != ReqFraming::Empty && h.contains_key(EXPECT) {
        h.remove(EXPECT);
    }
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    // An absolute-form target with an empty path (`http://a?x`) goes out as `/?x`: the
    // origin form starts with `/` (RFC 9112 §3.2.1), and `GET ?x` is no request line.
    let slash = !target.starts_with('/') && target != "*";
    let mut size = parts.method.as_str().len() + target.len() + 17;
    for (k, v) in &parts.headers {
        size += k.as_str().len() + v.len() + 4;
    }
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    if slash {
        out.push(b'/');
    }
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (k, v) in &parts.headers {
        out.extend_from_slice(k.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    (out, framing)
}

/// A request body on its way to the upstream, framed as its head announced.
pub struct Upload {
    body: ReqBody,
    chunked: bool,
    /// Bytes `Content-Length` still allows.
    left: u64,
    /// Framed bytes not yet written.
    out: Bytes,
    /// The end is framed: nothing more to take from `body`.
    ended: bool,
}

/// Why an upload stopped.
pub enum UploadError {
    /// The client's body failed, or did not match its `Content-Length`.
    Body(Error),
    /// The upstream connection would not take more (it may have answered already).
    Write(io::Error),
}

impl Upload {
    /// The upload for a body with this framing (`None`: nothing to send).
    pub fn new(body: ReqBody, framing: ReqFraming) -> Option<Self> {
        let (chunked, left) = match framing {
            ReqFraming::Empty => return None,
            ReqFraming::Length(n) => (false, n),
            ReqFraming::Chunked => (true, u64::MAX),
        };
        Some(Upload {
            body,
            chunked,
            left,
            out: Bytes::new(),
            ended: false,
        })
    }

    /// Writes as much of the body as the client and the connection allow; ready once all
    /// of it is written and flushed. Registers for whichever of the two it waits on.
    pub fn poll_send(
        &mut self,
        io: &mut Io,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), UploadError>> {
        loop {
            while !self.out.is_empty() {
                let n = ready!(Pin::new(&mut *io).poll_write(cx, &self.out))
                    .map_err(UploadError::Write)?;
                if n == 0 {
                    return Poll::Ready(Err(UploadError::Write(io::ErrorKind::WriteZero.into())));
                }
                self.out.advance(n);
            }
            if self.ended {
                return Pin::new(&mut *io)
                    .poll_flush(cx)
                    .map_err(UploadError::Write);
            }
            // The end may be known before the client's last (empty) frame comes.
            let next = if self.body.is_end_stream() || (!self.chunked && self.left == 0) {
                Poll::Ready(None)
            } else {
                Pin::new(&mut self.body).poll_frame(cx)
            };
            let frame = match next {
                Poll::Pending => {
                    // Waiting on the client: nothing written may sit in a TLS buffer.
                    ready!(Pin::new(&mut *io).poll_flush(cx)).map_err(UploadError::Write)?;
                    return Poll::Pending;
                }
                Poll::Ready(None) => {
                    self.ended = true;
                    if self.chunked {
                        self.out = Bytes::from_static(b"0\r\n\r\n");
                    } else if self.left != 0 {
                        return Poll::Ready(Err(UploadError::Body(Error::Invalid(
                            "request body shorter than its Content-Length",
                        ))));
                    }
                    continue;
                }
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Err(UploadError::Body(Error::Body(e))));
                }
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            // Trailers are not forwarded.
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if data.is_empty() {
                continue;
            }
            self.out = if self.chunked {
                let mut chunk = Vec::with_capacity(data.len() + 20);
                chunk.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                chunk.extend_from_slice(&data);
                chunk.extend_from_slice(b"\r\n");
                Bytes::from(chunk)
            } else {
                let n = data.len() as u64;
                if n > self.left {
                    return Poll::Ready(Err(UploadError::Body(Error::Invalid(
                        "request body longer than its Content-Length",
                    ))));
                }
                self.left -= n;
                data
            };
        }
    }
}

impl Conn {
    /// A fresh connection.
    pub fn new(io: Io) -> Self {
        Conn {
            io,
            buf: BytesMut::new(),
            permit: None,
        }
    }

    /// Whether an idle connection can take a request: not closed by the upstream, nothing
    /// unexpected sent on it. Never waits.
    pub fn is_usable(&mut self) -> bool {
        let mut probe = [0u8; 1];
        match &mut self.io {
            // The reactor marks the socket readable when a FIN or data arrives; until
            // then this makes no system call.
            Io::Plain(s) => {
                matches!(s.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
            // Through TLS: a session ticket is consumed and is not application data.
            Io::Tls(s) => {
                let mut cx = Context::from_waker(Waker::noop());
                let mut rb = ReadBuf::new(&mut probe);
                Pin::new(s.as_mut())
                    .poll_read(&mut cx, &mut rb)
                    .is_pending()
            }
        }
    }

    /// Sends a request (its head from `encode_head`) and reads the answer's head, skipping
    /// interim 1xx answers other than 101. The body is sent while the answer is awaited
    /// (full duplex, as hyper's client does): an upstream may answer before it has read
    /// all of it (a 413, a 401), or answer and keep reading. An upload not finished when
    /// the head arrives is left in `upload`, to go on beside the response body; the
    /// connection is then not reused. The response body is read through `Decoder`.
    pub async fn exchange(
        &mut self,
        head: &[u8],
        upload: &mut Option<Upload>,
        head_request: bool,
    ) -> Result<Head, Error> {
        if self.io.write_all(head).await.is_err() || self.io.flush().await.is_err() {
            return Err(Error::Stale);
        }
        // The upstream stopped taking the body: kept to report if no answer comes.
        let mut refused: Option<io::Error> = None;
        let mut answered = false;
        let head = std::future::poll_fn(|cx| {
            loop {
                if let Some(up) = upload.as_mut() {
                    match up.poll_send(&mut self.io, cx) {
                        Poll::Ready(Ok(())) => *upload = None,
                        Poll::Ready(Err(UploadError::Body(e))) => return Poll::Ready(Err(e)),
                        Poll::Ready(Err(UploadError::Write(e))) => {
                            refused = Some(e);
                            *upload = None;
                        }
                        Poll::Pending => {}
                    }
                }
                if !self.buf.is_empty() {
                    answered = true;
                    match parse_head(&mut self.buf, head_request)? {
                        Some(h)
                            if h.status.is_informational()
                                && h.status != StatusCode::SWITCHING_PROTOCOLS =>
                        {
                            continue;
                        }
                        Some(h) => return Poll::Ready(Ok(h)),
                        None if self.buf.len() > MAX_HEAD_BYTES => {
                            return Poll::Ready(Err(Error::Invalid("response head too large")));
                        }
                        None => {}
                    }
                }
                self.buf.reserve(HEAD_READ);
                match ready!(poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)) {
                    Ok(n) if n > 0 => {}
                    Ok(_) if answered => {
                        return Poll::Ready(Err(Error::Invalid(
                            "connection closed inside the response head",
                        )));
                    }
                    Err(e) if answered => return Poll::Ready(Err(Error::Io(e))),
                    // Closed or reset before a byte of an answer.
                    _ => {
                        return Poll::Ready(Err(match refused.take() {
                            Some(e) => Error::Io(e),
                            None => Error::Stale,
                        }));
                    }
                }
            }
        })
        .await;
        let mut head = head?;
        head.keep_alive &= upload.is_none() && refused.is_none();
        Ok(head)
    }
}

/// A `Content-Length` value: digits only (`u64::from_str` would also take a `+`).
fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |n, &b| {
        let digit = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// Parses a complete head off the front of `buf` (None: not all of it is there yet).
/// Header values share the buffer's memory.
pub(crate) fn parse_head(buf: &mut BytesMut, head_request: bool) -> Result<Option<Head>, Error> {
    // Offsets into `buf` of each field's name and value, so the head can be split off
    // and shared once httparse's borrow of it ends.
    let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
    let (len, code, minor, count, reason) = {
        let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut raw);
        let len = match res.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(Error::Invalid("too many header fields"));
            }
            Err(_) => return Err(Error::Invalid("malformed response head")),
        };
        let base = buf.as_ptr() as usize;
        for (span, h) in spans.iter_mut().zip(res.headers.iter()) {
            let name = h.name.as_ptr() as usize - base;
            let value = h.value.as_ptr() as usize - base;
            // Bounded by MAX_HEAD_BYTES, so the casts cannot truncate.
            *span = (
                name as u32,
                h.name.len() as u32,
                value as u32,
                h.value.len() as u32,
            );
        }
        let code = res.code.unwrap_or(0);
        // Kept only when it is not the usual one: hyper's server writes it back out.
        let usual = StatusCode::from_u16(code)
            .ok()
            .and_then(|s| s.canonical_reason());
        let reason = res
            .reason
            .filter(|r| usual != Some(*r))
            .and_then(|r| ReasonPhrase::try_from(r.as_bytes()).ok());
        (
            len,
            code,
            res.version.unwrap_or(0),
            res.headers.len(),
            reason,
        )
    };
    if len > MAX_HEAD_BYTES {
        return Err(Error::Invalid("response head too large"));
    }
    let status = StatusCode::from_u16(code).map_err(|_| Error::Invalid("bad status code"))?;
    let head = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(count);
    let mut length: Option<u64> = None;
    let mut length_plain = true;
    let mut chunked = None;
    // A `close` anywhere wins; HTTP/1.0 is kept alive only when it asks to be.
    let (mut close_token, mut keep_alive_token) = (false, false);
    for &(n, nl, v, vl) in &spans[..count] {
        let name = HeaderName::from_bytes(&head[n as usize..(n + nl) as usize])
            .map_err(|_| Error::Invalid("bad header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(v as usize..(v + vl) as usize))
            .map_err(|_| Error::Invalid("bad header value"))?;
        if name == CONTENT_LENGTH {
            // A list of one value repeated is that value (RFC 9110 §8.6).
            for part in value.as_bytes().split(|&b| b == b',') {
                let n =
                    parse_length(part.trim_ascii()).ok_or(Error::Invalid("bad Content-Length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(Error::Invalid("conflicting Content-Length"));
                }
                // Passed on as one value: an HTTP/2 client refuses a list or a repeat.
                length_plain &=
                    length.is_none() && (part.len() == 1 || part.first() != Some(&b'0'));
                length = Some(n);
            }
        } else if name == TRANSFER_ENCODING {
            // Codings are tokens; a value that is not visible ASCII is refused (hyper
            // would read the body to the close, and we would have decoded it).
            if value.to_str().is_err() {
                return Err(Error::Invalid("bad Transfer-Encoding"));
            }
            // Only the last coding counts: chunked, or the body runs to the close.
            let last = value
                .as_bytes()
                .rsplit(|&b| b == b',')
                .next()
                .unwrap_or(b"");
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name == CONNECTION {
            // A value that is not visible ASCII cannot be read: no reuse on its word.
            close_token |= value.to_str().is_err();
            for token in super::headers::list_elements(value.as_bytes()) {
                close_token |= token.eq_ignore_ascii_case(b"close");
                keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
        headers.append(name, value);
    }
    let mut close = close_token || (minor == 0 && !keep_alive_token);
    if length.is_some_and(|n| n > MAX_LENGTH) {
        return Err(Error::Invalid("Content-Length too large"));
    }
    let no_body = head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if no_body {
        RespFraming::Empty
    } else if let Some(chunked) = chunked {
        // HTTP/1.0 has no transfer codings: the framing is faulty (RFC 9112 §6.1), and
        // refused, as hyper's client does.
        if minor == 0 {
            return Err(Error::Invalid("Transfer-Encoding in an HTTP/1.0 response"));
        }
        // A length next to a transfer coding is ignored and must not be passed on; the
        // sender is confused, so its connection is not used again (RFC 9112 §6.3).
        if length.is_some() {
            headers.remove(CONTENT_LENGTH);
            close = true;
        }
        if chunked {
            RespFraming::Chunked
        } else {
            RespFraming::Eof
        }
    } else {
        match length {
            Some(0) => RespFraming::Empty,
            Some(n) => RespFraming::Length(n),
            None => RespFraming::Eof,
        }
    };
    if let (Some(n), false, None) = (length, length_plain, chunked) {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(n));
    }
    let version = if minor == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    Ok(Some(Head {
        status,
        version,
        headers,
        keep_alive: !close && framing != RespFraming::Eof,
        framing,
        reason,
    }))
}

/// Reads a response body off a connection, frame by frame.
#[derive(Debug)]
pub enum Decoder {
    /// This many bytes to go.
    Length(u64),
    /// Inside a chunked body.
    Chunked(Chunked),
    /// Until the connection closes.
    Eof,
    /// All read.
    Done,
}

/// A chunked body's parse: where it stands, and the chunk-extension bytes skipped so far.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Chunked {
    /// Where the parse stands.
    pub at: Chunk,
    /// Extension bytes in all the size lines so far.
    extensions: usize,
}

impl Chunked {
    /// Before the first size line.
    pub fn new() -> Self {
        Chunked {
            at: Chunk::Size {
                size: 0,
                digits: false,
            },
            extensions: 0,
        }
    }

    /// Whether the body has ended (its last chunk and trailer section are read).
    pub fn is_end(&self) -> bool {
        self.at == Chunk::End
    }
}

impl Default for Chunked {
    fn default() -> Self {
        Self::new()
    }
}

/// Where a chunked body's parse stands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Chunk {
    /// Reading a chunk size: the size so far, and whether a digit was seen.
    Size { size: u64, digits: bool },
    /// Whitespace after the size; `;` (extensions) or CR next.
    SizeSpace(u64),
    /// Chunk extensions, skipped.
    SizeExt(u64),
    /// The size line's CR was seen; LF next.
    SizeLf(u64),
    /// This many data bytes to go.
    Data(u64),
    /// CRLF after a chunk's data: true once the CR was seen.
    DataEnd(bool),
    /// Trailer section: where the current line stands, the fields before it, and how
    /// many trailer bytes in all.
    Trailer {
        line: Line,
        fields: usize,
        total: usize,
    },
    /// A trailer line's CR was seen (`empty`: it ended an empty line); LF next.
    TrailerLf {
        empty: bool,
        fields: usize,
        total: usize,
    },
    /// The empty line after the trailers was read.
    End,
}

/// Where a trailer field line stands: `name ":" value`, as httparse reads a head's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Line {
    /// Nothing read yet.
    Empty,
    /// Inside the name (a token).
    Name,
    /// After the colon.
    Value,
}

impl Decoder {
    /// The decoder for a head's framing.
    pub fn new(framing: RespFraming) -> Self {
        match framing {
            RespFraming::Empty | RespFraming::Length(0) => Decoder::Done,
            RespFraming::Length(n) => Decoder::Length(n),
            RespFraming::Chunked => Decoder::Chunked(Chunked::new()),
            RespFraming::Eof => Decoder::Eof,
        }
    }

    /// Whether the body has been read to its end.
    pub fn is_done(&self) -> bool {
        matches!(self, Decoder::Done)
    }

    /// Bytes still to come, when known.
    pub fn remaining(&self) -> Option<u64> {
        match self {
            Decoder::Length(n) => Some(*n),
            Decoder::Done => Some(0),
            _ => None,
        }
    }

    /// The next piece of body from what `conn` has buffered, reading more when needed.
    /// `None` at the end.
    pub fn poll_data(
        &mut self,
        conn: &mut Conn,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Bytes>, Error>> {
        loop {
            match self {
                Decoder::Done => return Poll::Ready(Ok(None)),
                Decoder::Length(left) if !conn.buf.is_empty() => {
                    let n = (*left).min(conn.buf.len() as u64);
                    *left -= n;
                    let data = conn.buf.split_to(n as usize).freeze();
                    if *left == 0 {
                        *self = Decoder::Done;
                    }
                    return Poll::Ready(Ok(Some(data)));
                }
                Decoder::Eof if !conn.buf.is_empty() => {
                    return Poll::Ready(Ok(Some(conn.buf.split().freeze())));
                }
                Decoder::Chunked(state) if !conn.buf.is_empty() => {
                    if let Some(data) = chunked_step(state, &mut conn.buf)? {
                        return Poll::Ready(Ok(Some(data)));
                    }
                    if state.is_end() {
                        *self = Decoder::Done;
                        return Poll::Ready(Ok(None));
                    }
                }
                _ => {}
            }
            conn.buf.reserve(BODY_READ);
            let n = ready!(poll_read_buf(Pin::new(&mut conn.io), cx, &mut conn.buf))?;
            if n == 0 {
                if let Decoder::Eof = self {
                    *self = Decoder::Done;
                    return Poll::Ready(Ok(None));
                }
                return Poll::Ready(Err(Error::Invalid("connection closed inside the body")));
            }
        }
    }
}

/// Consumes chunked-coding bytes from the front of `buf`: returns data when some is
/// there, else advances `parse` over size lines, CRLFs and trailers until `buf` is empty
/// or the body ends (`Chunk::End`).
pub(crate) fn chunked_step(
    parse: &mut Chunked,
    buf: &mut BytesMut,
) -> Result<Option<Bytes>, Error> {
    let state = &mut parse.at;
    while !buf.is_empty() {
        match *state {
            Chunk::Data(left) => {
                let n = left.min(buf.len() as u64);
                *state = if n == left {
                    Chunk::DataEnd(false)
                } else {
                    Chunk::Data(left - n)
                };
                return Ok(Some(buf.split_to(n as usize).freeze()));
            }
            Chunk::End => return Ok(None),
            _ => {}
        }
        let b = buf[0];
        buf.advance(1);
        *state = match (*state, b) {
            (Chunk::Size { size, .. }, b) if b.is_ascii_hexdigit() => {
                let digit = (b as char).to_digit(16).unwrap_or(0) as u64;
                if size > (u64::MAX >> 4) {
                    return Err(Error::Invalid("chunk size too large"));
                }
                Chunk::Size {
                    size: size << 4 | digit,
                    digits: true,
                }
            }
            (Chunk::Size { size, digits: true } | Chunk::SizeSpace(size), b' ' | b'\t') => {
                Chunk::SizeSpace(size)
            }
            (Chunk::Size { size, digits: true } | Chunk::SizeSpace(size), b';') => {
                Chunk::SizeExt(size)
            }
            (
                Chunk::Size { size, digits: true } | Chunk::SizeSpace(size) | Chunk::SizeExt(size),
                b'\r',
            ) => Chunk::SizeLf(size),
            (Chunk::SizeExt(size), b) if b != b'\n' => {
                if parse.extensions >= MAX_CHUNK_META {
                    return Err(Error::Invalid("chunk extensions too long"));
                }
                parse.extensions += 1;
                Chunk::SizeExt(size)
            }
            (Chunk::SizeLf(0), b'\n') => Chunk::Trailer {
                line: Line::Empty,
                fields: 0,
                total: 0,
            },
            (Chunk::SizeLf(n), b'\n') => Chunk::Data(n),
            (Chunk::DataEnd(false), b'\r') => Chunk::DataEnd(true),
            (Chunk::DataEnd(true), b'\n') => Chunk::Size {
                size: 0,
                digits: false,
            },
            // Trailer fields are checked as hyper's client checks them (a token, a colon,
            // a value of visible bytes; at most MAX_HEADERS) and dropped; an empty line
            // ends the body.
            (
                Chunk::Trailer {
                    line,
                    fields,
                    total,
                },
                b,
            ) => {
                if total >= MAX_CHUNK_META {
                    return Err(Error::Invalid("chunked trailer section too long"));
                }
                let total = total + 1;
                let line = match (line, b) {
                    (Line::Empty | Line::Value, b'\r') => {
                        let empty = line == Line::Empty;
                        *state = Chunk::TrailerLf {
                            empty,
                            fields,
                            total,
                        };
                        continue;
                    }
                    (Line::Empty | Line::Name, b) if is_tchar(b) => Line::Name,
                    (Line::Name, b':') | (Line::Value, b'\t' | b' '..=b'~' | 0x80..) => Line::Value,
                    _ => return Err(Error::Invalid("malformed chunked trailer")),
                };
                Chunk::Trailer {
                    line,
                    fields,
                    total,
                }
            }
            (Chunk::TrailerLf { empty: true, .. }, b'\n') => Chunk::End,
            (Chunk::TrailerLf { fields, total, .. }, b'\n') => {
                if fields >= MAX_HEADERS {
                    return Err(Error::Invalid("too many chunked trailer fields"));
                }
                Chunk::Trailer {
                    line: Line::Empty,
                    fields: fields + 1,
                    total: total + 1,
                }
            }
            _ => return Err(Error::Invalid("malformed chunked body")),
        };
    }
    Ok(None)
}

/// A byte of a token (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests;
