//! Strict request-path handling, run before routing so no route can be bypassed by an
//! encoding trick. The path is percent-decoded once; anything whose meaning could differ
//! between the gateway and an upstream is refused with 400: encoded `/` or `\`, a literal
//! `\`, NUL and control bytes, `#`, `.`/`..` segments (literal or encoded), empty interior
//! segments (`//`), `;` path parameters and malformed escapes. Routing and authentication
//! look only at the canonical (decoded) path, never at the query string.

use std::borrow::Cow;

/// Why a path was refused (for the 400 body; never echoes the path).
pub type PathError = &'static str;

/// Returns the canonical decoded path of a request target path, or why it is refused.
pub fn canonicalize(raw: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err("request path must start with /");
    }
    for escaped in crate::query::escapes(bytes) {
        match escaped {
            None => return Err("malformed percent-encoding in path"),
            Some(b'/') => return Err("encoded slash in path"),
            Some(b'\\') => return Err("encoded backslash in path"),
            Some(b'%') => return Err("double percent-encoding in path"),
            Some(_) => {}
        }
    }
    let decoded: Cow<'_, [u8]> = percent_encoding::percent_decode(bytes).into();
    for &b in decoded.iter() {
        match b {
            0 => return Err("NUL byte in path"),
            b'\\' => return Err("backslash in path"),
            b'#' => return Err("fragment marker in path"),
            b';' => return Err("path parameters (;) are not allowed"),
            c if c < 0x20 || c == 0x7f => return Err("control character in path"),
            _ => {}
        }
    }
    let mut segments = decoded.split(|&b| b == b'/').skip(1).peekable();
    while let Some(seg) = segments.next() {
        if seg == b"." || seg == b".." {
            return Err("dot segment in path");
        }
        if seg.is_empty() && segments.peek().is_some() {
            return Err("empty path segment (//) in path");
        }
    }
    match decoded {
        Cow::Borrowed(_) => Ok(Cow::Borrowed(raw)),
        Cow::Owned(v) => String::from_utf8(v)
            .map(Cow::Owned)
            .map_err(|_| "path is not valid UTF-8 after decoding"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_plain_paths_borrowed() {
        assert!(matches!(
            canonicalize("/orders/1"),
            Ok(Cow::Borrowed("/orders/1"))
        ));
        assert_eq!(canonicalize("/").unwrap(), "/");
        assert_eq!(canonicalize("/orders/").unwrap(), "/orders/");
    }

    #[test]
    fn decodes_unreserved_escapes() {
        assert_eq!(canonicalize("/%6Frders").unwrap(), "/orders");
        assert_eq!(canonicalize("/a%20b").unwrap(), "/a b");
        assert_eq!(canonicalize("/caf%C3%A9").unwrap(), "/café");
    }

    #[test]
    fn rejects_ambiguous_paths() {
        for p in [
            "/a%2Fb",
            "/a%2fb",
            "/a%5Cb",
            "/a\\b",
            "/a%00",
            "/a/./b",
            "/a/../b",
            "/..",
            "/.",
            "/a/%2e%2e/b",
            "/a/%2E/b",
            "/a/.%2e/b",
            "/a#b",
            "/a%23b",
            "/a//b",
            "/a;x",
            "/a%3Bx",
            "/a%zz",
            "/a%2",
            "/a%",
            "/a%250",
            "a",
            "*",
            "/a%0A",
            "/a%C3",
        ] {
            assert!(canonicalize(p).is_err(), "{p} must be refused");
        }
    }

    #[test]
    fn allows_dots_inside_names() {
        assert!(canonicalize("/a/.well-known/b").is_ok());
        assert!(canonicalize("/a/...").is_ok());
        assert!(canonicalize("/file.txt").is_ok());
    }
}
