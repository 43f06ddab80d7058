//! `path`: the request-path canonicaliser (`path::canonicalize`).

use std::borrow::Cow;

use crate::path::canonicalize;

/// Arbitrary text (invalid UTF-8 replaced, as only a `&str` reaches the canonicaliser) as
/// a request path.
///
/// Invariants: nothing panics; the verdict equals that of an independent reading of the
/// path rules (decode every `%XX` once; refuse malformed escapes, an encoded `/`, `\` or
/// `%`, then NUL, control bytes, `\`, `#`, `;`, `.` and `..` segments, empty interior
/// segments and non-UTF-8); an accepted path starts with `/`, is borrowed when nothing
/// was decoded, and is its own canonical form.
pub fn path(data: &[u8]) {
    let raw = String::from_utf8_lossy(data);
    let got = canonicalize(&raw);
    let want = reference(raw.as_bytes());
    assert_eq!(
        got.as_deref().ok(),
        want.as_deref(),
        "canonicalize({raw:?}) = {got:?}"
    );
    let Ok(canonical) = got else {
        return;
    };
    assert!(canonical.starts_with('/'));
    if !raw.contains('%') {
        assert!(
            matches!(canonical, Cow::Borrowed(_)),
            "copied without decoding"
        );
    }
    assert!(
        matches!(canonicalize(&canonical), Ok(Cow::Borrowed(again)) if again == canonical),
        "{canonical:?} is not its own canonical form"
    );
}

/// The path rules of `path.rs` written out again, one byte class at a time.
fn reference(raw: &[u8]) -> Option<String> {
    if raw.first() != Some(&b'/') {
        return None;
    }
    let mut decoded = Vec::with_capacity(raw.len());
    let mut rest = raw;
    while let Some((&b, tail)) = rest.split_first() {
        if b != b'%' {
            decoded.push(b);
            rest = tail;
            continue;
        }
        let [h, l, tail @ ..] = tail else {
            return None;
        };
        let v = u8::from_str_radix(std::str::from_utf8(&[*h, *l]).ok()?, 16).ok()?;
        if !h.is_ascii_hexdigit() || !l.is_ascii_hexdigit() || matches!(v, b'/' | b'\\' | b'%') {
            return None;
        }
        decoded.push(v);
        rest = tail;
    }
    let forbidden = |b: u8| b < 0x20 || b == 0x7f || matches!(b, b'\\' | b'#' | b';');
    if decoded.iter().any(|&b| forbidden(b)) {
        return None;
    }
    let text = String::from_utf8(decoded).ok()?;
    let segments: Vec<&str> = text.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (i, seg) in segments.iter().enumerate() {
        if *seg == "." || *seg == ".." || (seg.is_empty() && i != last) {
            return None;
        }
    }
    Some(text)
}
