//! Unit tests of `h1`.

use super::*;

fn parse(raw: &str, head_request: bool) -> Result<Option<Head>, Error> {
    let mut buf = BytesMut::from(raw.as_bytes());
    parse_head(&mut buf, head_request)
}

fn head(raw: &str) -> Head {
    parse(raw, false).unwrap().unwrap()
}

#[test]
fn a_head_is_parsed_once_complete_and_split_off() {
    assert!(
        parse("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n", false)
            .unwrap()
            .is_none()
    );
    let mut buf = BytesMut::from(
        &b"HTTP/1.1 200 OK\r\nx-a: 1\r\nX-A: 2\r\ncontent-length: 2\r\n\r\nokNEXT"[..],
    );
    let h = parse_head(&mut buf, false).unwrap().unwrap();
    assert_eq!(&buf[..], b"okNEXT", "the body stays in the buffer");
    assert_eq!(h.status, StatusCode::OK);
    assert_eq!(h.version, Version::HTTP_11);
    assert_eq!(h.framing, RespFraming::Length(2));
    assert!(h.keep_alive);
    let xa: Vec<_> = h.headers.get_all("x-a").iter().collect();
    assert_eq!(xa, ["1", "2"]);
}

#[test]
fn framing_follows_rfc_9112() {
    let h = head("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
    assert_eq!((h.framing, h.keep_alive), (RespFraming::Chunked, true));
    // A length next to chunked: ignored, removed, and the connection not reused.
    let h = head("HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n");
    assert_eq!((h.framing, h.keep_alive), (RespFraming::Chunked, false));
    assert!(h.headers.get(CONTENT_LENGTH).is_none());
    // A coding that is not chunked last: the body runs to the close.
    let h = head("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n");
    assert_eq!((h.framing, h.keep_alive), (RespFraming::Eof, false));
    let h = head("HTTP/1.1 200 OK\r\n\r\n");
    assert_eq!((h.framing, h.keep_alive), (RespFraming::Eof, false));
    let h = head("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
    assert_eq!((h.framing, h.keep_alive), (RespFraming::Empty, true));
    for status in ["204 No Content", "304 Not Modified"] {
        let h = head(&format!("HTTP/1.1 {status}\r\ncontent-length: 7\r\n\r\n"));
        assert_eq!(
            (h.framing, h.keep_alive),
            (RespFraming::Empty, true),
            "{status}"
        );
    }
    let h = parse("HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n", true)
        .unwrap()
        .unwrap();
    assert_eq!(
        h.framing,
        RespFraming::Empty,
        "an answer to HEAD has no body"
    );
    assert_eq!(
        head("HTTP/1.1 103 Early Hints\r\n\r\n").framing,
        RespFraming::Empty
    );
}

#[test]
fn a_repeated_content_length_is_passed_on_as_one_value() {
    for raw in [
        "HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\n",
        "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\n",
        "HTTP/1.1 200 OK\r\ncontent-length: 005\r\n\r\n",
    ] {
        let h = head(raw);
        assert_eq!(h.framing, RespFraming::Length(5), "{raw:?}");
        let values: Vec<_> = h.headers.get_all(CONTENT_LENGTH).iter().collect();
        assert_eq!(values, ["5"], "{raw:?}");
    }
    let h = head("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n");
    assert_eq!(h.headers[CONTENT_LENGTH], "5");
}

#[test]
fn keep_alive_follows_version_and_connection() {
    assert!(!head("HTTP/1.1 200 OK\r\nconnection: Close\r\ncontent-length: 0\r\n\r\n").keep_alive);
    assert!(
        !head("HTTP/1.1 200 OK\r\nconnection: x, close\r\ncontent-length: 0\r\n\r\n").keep_alive
    );
    assert!(!head("HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n").keep_alive);
    let h = head("HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n");
    assert!(h.keep_alive);
    assert_eq!(h.version, Version::HTTP_10);
    assert!(
        parse(
            "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ntransfer-encoding: chunked\r\n\r\n",
            false
        )
        .is_err(),
        "a transfer coding from HTTP/1.0 is faulty framing"
    );
    assert!(
        parse(
            "HTTP/1.0 204 No Content\r\ntransfer-encoding: chunked\r\n\r\n",
            false
        )
        .is_ok(),
        "unless there is no body to frame"
    );
}

#[test]
fn a_close_is_not_undone_by_a_keep_alive() {
    for raw in [
        &b"HTTP/1.0 200 OK\r\nconnection: close, keep-alive\r\ncontent-length: 0\r\n\r\n"[..],
        b"HTTP/1.0 200 OK\r\nconnection: close\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nconnection: keep-alive\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
        // Not readable, so not trusted.
        b"HTTP/1.0 200 OK\r\nconnection: keep-alive, x\xe9\r\ncontent-length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nconnection: x\xe9\r\ncontent-length: 0\r\n\r\n",
    ] {
        let h = parse_head(&mut BytesMut::from(raw), false).unwrap().unwrap();
        assert!(!h.keep_alive, "{}", raw.escape_ascii());
    }
    let h = head("HTTP/1.0 200 OK\r\nconnection: x, keep-alive\r\ncontent-length: 0\r\n\r\n");
    assert!(h.keep_alive);
}

#[test]
fn an_unusual_reason_phrase_is_kept() {
    assert!(
        head("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .reason
            .is_none()
    );
    let h = head("HTTP/1.1 413 Too Large\r\ncontent-length: 0\r\n\r\n");
    assert_eq!(
        h.reason.as_ref().map(|r| r.as_bytes()),
        Some(&b"Too Large"[..])
    );
}

#[test]
fn malformed_heads_are_errors() {
    for raw in [
        "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
        "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
        "HTTP/1.1 200 OK\r\ncontent-length: 1x\r\n\r\n",
        "HTTP/1.1 200 OK\r\ncontent-length: +1\r\n\r\n",
        "HTTP/1.1 20 OK\r\n\r\n",
        "HTTX/1.1 200 OK\r\n\r\n",
        "HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
        "HTTP/1.1 200 OK\r\ncontent-length: 18446744073709551615\r\n\r\n",
        "HTTP/1.1 200 OK\r\ncontent-length: 18446744073709551614\r\n\r\n",
    ] {
        assert!(parse(raw, false).is_err(), "{raw:?}");
    }
    let h = head("HTTP/1.1 200 OK\r\ncontent-length: 18446744073709551613\r\n\r\n");
    assert_eq!(h.framing, RespFraming::Length(MAX_LENGTH));
    let raw = b"HTTP/1.1 200 OK\r\ntransfer-encoding: x\xe9, chunked\r\n\r\n";
    assert!(
        parse_head(&mut BytesMut::from(&raw[..]), false).is_err(),
        "a coding that is not a token"
    );
    // The same length twice, or as a list, is one length.
    let h = head("HTTP/1.1 200 OK\r\ncontent-length: 3, 3\r\n\r\n");
    assert_eq!(h.framing, RespFraming::Length(3));
    assert!(parse("HTTP/1.1 200 OK\r\ncontent-length: 3, 4\r\n\r\n", false).is_err());
    let h = head("HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 3\r\n\r\n");
    assert_eq!(h.framing, RespFraming::Length(3));
    let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
    assert!(parse(&format!("HTTP/1.1 200 OK\r\n{many}\r\n"), false).is_err());
}

/// Decodes a chunked body fed in the given pieces; `None` if it never ended.
fn dechunk(pieces: &[&[u8]]) -> Result<Option<Vec<u8>>, Error> {
    let mut state = Chunked::new();
    let (mut buf, mut out) = (BytesMut::new(), Vec::new());
    for p in pieces {
        buf.extend_from_slice(p);
        while let Some(data) = chunked_step(&mut state, &mut buf)? {
            out.extend_from_slice(&data);
        }
        if state.is_end() {
            return Ok(Some(out));
        }
    }
    Ok(None)
}

#[test]
fn chunked_bodies_decode_however_they_are_split() {
    let wire =
        b"5;name=value\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-trailer: t\r\n\r\n";
    let want = b"helloabcdefghijklmnopqrstuvwxyz".to_vec();
    assert_eq!(dechunk(&[wire]).unwrap(), Some(want.clone()));
    for cut in 1..wire.len() {
        let (a, b) = wire.split_at(cut);
        assert_eq!(
            dechunk(&[a, b]).unwrap(),
            Some(want.clone()),
            "cut at {cut}"
        );
    }
    let bytes: Vec<&[u8]> = wire.chunks(1).collect();
    assert_eq!(dechunk(&bytes).unwrap(), Some(want));
    assert_eq!(dechunk(&[b"0\r\n\r\n"]).unwrap(), Some(vec![]));
    assert_eq!(dechunk(&[b"3\r\nabc\r\n"]).unwrap(), None, "not over yet");
}

#[test]
fn malformed_chunked_bodies_are_errors() {
    for wire in [
        &b"\r\nabc\r\n0\r\n\r\n"[..],
        b"g\r\n",
        b"3\r\nabcX\r\n",
        b"3\nabc\r\n",
        b"11111111111111111\r\n",
        b"5 6\r\nhello\r\n0\r\n\r\n",
        b"5x\r\nhello\r\n0\r\n\r\n",
        b"0\r\n\n",
        b"0\r\nx: 1\n\r\n",
        // Trailer lines that are not fields.
        b"0\r\nbad trailer\r\n\r\n",
        b"0\r\n: v\r\n\r\n",
        b"0\r\nx : v\r\n\r\n",
        b"0\r\n x: v\r\n\r\n",
        b"0\r\nx: \x01\r\n\r\n",
        b"0\r\nx: a\x7f\r\n\r\n",
        b"0\r\nx\xff: v\r\n\r\n",
        b"0\r\nx: a\rb\r\n\r\n",
    ] {
        assert!(
            dechunk(&[wire]).is_err(),
            "{:?}",
            String::from_utf8_lossy(wire)
        );
    }
    let long = format!("0\r\nx: {}\r\n\r\n", "a".repeat(MAX_CHUNK_META));
    assert!(dechunk(&[long.as_bytes()]).is_err());
    let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
    assert!(dechunk(&[format!("0\r\n{many}\r\n").as_bytes()]).is_err());
    let long = format!("0;{}\r\n\r\n", "a".repeat(MAX_CHUNK_META + 1));
    assert!(dechunk(&[long.as_bytes()]).is_err(), "endless extensions");
    // The bound is on the whole body's extensions, not on each size line's (hyper's too).
    let ext = "a".repeat(MAX_CHUNK_META / 8);
    let lines = |n: usize| format!("{}0\r\n\r\n", format!("1;{ext}\r\nx\r\n").repeat(n));
    assert!(
        dechunk(&[lines(9).as_bytes()]).is_err(),
        "extensions summing over the bound"
    );
    assert_eq!(
        dechunk(&[lines(7).as_bytes()]).unwrap(),
        Some(b"xxxxxxx".to_vec())
    );
    // Trailer fields, up to MAX_HEADERS of them, are read and dropped.
    let many: String = (0..MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
    for wire in [
        format!("0\r\n{many}\r\n").into_bytes(),
        b"0\r\nx:\r\nY-2: a\tb \xff\r\n\r\n".to_vec(),
    ] {
        assert_eq!(
            dechunk(&[&wire]).unwrap(),
            Some(vec![]),
            "{}",
            wire.escape_ascii()
        );
    }
    // Whitespace before extensions is allowed.
    assert_eq!(
        dechunk(&[b"5 \t;a=b\r\nhello\r\n0 \r\n\r\n"]).unwrap(),
        Some(b"hello".to_vec())
    );
}

/// The head and framing `encode_head` makes for a bodiless request.
fn encode(method: Method, uri: &str, headers: &[(&str, &str)]) -> (String, ReqFraming) {
    let mut req = http::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let (mut parts, _) = req.body(()).unwrap().into_parts();
    let (wire, framing) = encode_head(&mut parts, &ReqBody::Empty);
    (String::from_utf8(wire).unwrap(), framing)
}

#[test]
fn request_heads_carry_the_framing() {
    // Method, request headers, the head sent, its framing, why.
    type Case = (
        Method,
        &'static [(&'static str, &'static str)],
        &'static str,
        ReqFraming,
        &'static str,
    );
    let cases: [Case; 7] = [
        (
            Method::POST,
            &[("host", "up"), ("x-a", "1")],
            "POST /p?q=1 HTTP/1.1\r\nhost: up\r\nx-a: 1\r\ncontent-length: 0\r\n\r\n",
            ReqFraming::Empty,
            "a POST without a body says so",
        ),
        (
            Method::GET,
            &[],
            "GET /p?q=1 HTTP/1.1\r\n\r\n",
            ReqFraming::Empty,
            "nothing added to a GET",
        ),
        (
            Method::PUT,
            &[("content-length", "12")],
            "PUT /p?q=1 HTTP/1.1\r\ncontent-length: 12\r\n\r\n",
            ReqFraming::Length(12),
            "the client's length",
        ),
        (
            Method::GET,
            &[("content-length", "x")],
            "GET /p?q=1 HTTP/1.1\r\n\r\n",
            ReqFraming::Empty,
            "an unreadable length is not sent",
        ),
        (
            Method::POST,
            &[("expect", "100-continue"), ("content-length", "5")],
            "POST /p?q=1 HTTP/1.1\r\ncontent-length: 5\r\n\r\n",
            ReqFraming::Length(5),
            "Expect is answered by the gateway",
        ),
        (
            Method::POST,
            &[("content-length", "+5")],
            "POST /p?q=1 HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
            ReqFraming::Empty,
            "a signed length is unreadable",
        ),
        (
            Method::GET,
            &[("content-length", "0")],
            "GET /p?q=1 HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
            ReqFraming::Empty,
            "a zero length is no body",
        ),
    ];
    for (method, headers, wire, framing, why) in cases {
        assert_eq!(
            encode(method, "/p?q=1", headers),
            (wire.to_owned(), framing),
            "{why}"
        );
    }
    for (v, n) in [
        ("0", Some(0)),
        ("007", Some(7)),
        ("18446744073709551615", Some(u64::MAX)),
    ] {
        assert_eq!(parse_length(v.as_bytes()), n, "{v}");
    }
    for v in ["", "18446744073709551616", "1 ", "-1", "0x1"] {
        assert_eq!(parse_length(v.as_bytes()), None, "{v:?}");
    }
}

#[test]
fn an_empty_path_goes_out_as_a_slash() {
    // Found by fuzzing (fuzz/regressions/h1_request_head/empty-path-sent-as-query-only).
    let (wire, _) = encode(Method::GET, "http://a?x=1", &[("host", "a")]);
    assert!(wire.starts_with("GET /?x=1 HTTP/1.1\r\n"), "{wire:?}");
    let (wire, _) = encode(Method::OPTIONS, "*", &[("host", "a")]);
    assert!(wire.starts_with("OPTIONS * HTTP/1.1\r\n"), "{wire:?}");
}
