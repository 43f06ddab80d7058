//! Query strings, split one way for everyone who reads them: the API-key authenticator
//! reads a parameter by its exact name, and the gateway strips every parameter that an
//! upstream framework would decode to that name, so a credential cannot reach the
//! upstream under another spelling. Percent-decoding is the `percent-encoding` crate's,
//! with malformed escapes refused (`escapes_well_formed`); `path` shares that check.

use std::borrow::Cow;

/// The `name=value` pairs of a raw query, split on `&` then on the first `=` (a pair
/// without `=` has an empty value). Nothing is decoded.
pub(crate) fn pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
}

/// Whether the raw parameter name `raw` reaches an upstream framework as `name`: after
/// percent-decoding and `+` as a space, with PHP's renaming of `.`, ` ` and `[` to `_`,
/// and with an array suffix (`api_key[]`, `api_key[0]`) dropped. `name` is plain text.
pub(crate) fn decodes_to(raw: &str, name: &str) -> bool {
    if raw == name {
        return true;
    }
    if !raw.bytes().any(|b| matches!(b, b'%' | b'+' | b'.' | b'[')) {
        return false;
    }
    let Some(decoded) = percent_decode(raw) else {
        return false;
    };
    let base = match decoded.iter().position(|&b| b == b'[') {
        Some(i) if i > 0 && decoded.last() == Some(&b']') => decoded.get(..i).unwrap_or(&[]),
        _ => &decoded[..],
    };
    let php = |b: u8| {
        if matches!(b, b'.' | b' ' | b'[') {
            b'_'
        } else {
            b
        }
    };
    base == name.as_bytes()
        || (base.len() == name.len()
            && base
                .iter()
                .zip(name.bytes())
                .all(|(&a, b)| php(a) == php(b)))
}

/// Decodes `%XX` escapes and `+` (as a space); `None` when an escape is malformed (a
/// credential spelled that way is refused, not guessed at).
pub(crate) fn percent_decode(v: &str) -> Option<Vec<u8>> {
    let b = v.as_bytes();
    if !escapes_well_formed(b) {
        return None;
    }
    let spaced: Cow<'_, [u8]> = if b.contains(&b'+') {
        Cow::Owned(
            b.iter()
                .map(|&c| if c == b'+' { b' ' } else { c })
                .collect(),
        )
    } else {
        Cow::Borrowed(b)
    };
    Some(percent_encoding::percent_decode(&spaced).collect())
}

/// Whether every `%` in `raw` starts a `%XX` escape. The `percent-encoding` crate passes a
/// malformed one through as it is; the gateway refuses it instead.
pub(crate) fn escapes_well_formed(raw: &[u8]) -> bool {
    escapes(raw).all(|e| e.is_some())
}

/// The byte each `%` of `raw` escapes, in order (`None`: not followed by two hex digits).
pub(crate) fn escapes(raw: &[u8]) -> impl Iterator<Item = Option<u8>> + '_ {
    raw.iter()
        .enumerate()
        .filter(|(_, b)| **b == b'%')
        .map(|(i, _)| {
            let pair = raw.get(i + 1..i + 3)?;
            if !pair.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
            Some(hex(pair[0]) << 4 | hex(pair[1]))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_pairs_without_decoding() {
        let got: Vec<_> = pairs("a=1&b&c=x=y&=z").collect();
        assert_eq!(got, [("a", "1"), ("b", ""), ("c", "x=y"), ("", "z")]);
    }

    #[test]
    fn names_that_frameworks_decode_to_the_same_parameter() {
        for raw in [
            "api_key",
            "api%5Fkey",
            "api%5fkey",
            "api_key[]",
            "api_key[0]",
            "api%5Fkey%5B%5D",
            "api.key",
            "api+key",
            "api%20key",
        ] {
            assert!(decodes_to(raw, "api_key"), "{raw}");
        }
        for raw in ["api_key2", "api", "xapi_key", "api%ZZkey", "[]", "api-key"] {
            assert!(!decodes_to(raw, "api_key"), "{raw}");
        }
        assert!(decodes_to("key", "key"));
        assert!(!decodes_to("ke%79x", "key"));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Bb+c").unwrap(), b"a+b c");
        assert!(percent_decode("a%2").is_none());
        assert!(percent_decode("a%zz").is_none());
    }
}
