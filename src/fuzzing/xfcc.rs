//! `xfcc`: the RFC 4514 subject and the Envoy-format `X-Forwarded-Client-Cert` value that
//! `conn::ClientCert` computes once per mTLS connection.
//!
//! A certificate cannot be signed per input at fuzzing speed, and need not be: rustls
//! verified it before `ClientCert::parse` sees it, and the parser does not check the
//! signature. So each input is written as the DER of an unsigned certificate whose subject
//! and SANs come from the input.

use sha2::{Digest, Sha256};

use crate::conn::ClientCert;

/// Subject attribute types: input letter, DER of the OID, RFC 4514 short name.
const TYPES: [(u8, &[u8], Option<&str>); 11] = [
    (b'C', &[0x55, 0x04, 0x03], Some("CN")),
    (b'O', &[0x55, 0x04, 0x0a], Some("O")),
    (b'u', &[0x55, 0x04, 0x0b], Some("OU")),
    (b'c', &[0x55, 0x04, 0x06], Some("C")),
    (b'L', &[0x55, 0x04, 0x07], Some("L")),
    (b'S', &[0x55, 0x04, 0x08], Some("ST")),
    (b'T', &[0x55, 0x04, 0x09], Some("STREET")),
    (
        b'd',
        &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19],
        Some("DC"),
    ),
    (
        b'i',
        &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01],
        Some("UID"),
    ),
    // emailAddress and serialNumber have no RFC 4514 short name: `OID=#hex`.
    (
        b'm',
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01],
        None,
    ),
    (b'n', &[0x55, 0x04, 0x05], None),
];

/// Value tags: input letter and ASN.1 tag.
const TAGS: [(u8, u8); 9] = [
    (b'u', 0x0c), // UTF8String
    (b'p', 0x13), // PrintableString
    (b'i', 0x16), // IA5String
    (b't', 0x14), // TeletexString (T61), read as Latin-1
    (b'b', 0x1e), // BMPString
    (b'U', 0x1c), // UniversalString
    (b'n', 0x12), // NumericString
    (b'v', 0x1a), // VisibleString
    (b'o', 0x04), // OCTET STRING: not text
];

/// One subject attribute as written.
struct Attr {
    oid: &'static [u8],
    short: Option<&'static str>,
    tag: u8,
    value: Vec<u8>,
}

/// A certificate's subject and SANs.
///
/// Input: lines separated by LF. `U`, `D` or `E` and the rest of the line: a URI, DNS or
/// email SAN. `+` first: the attribute that follows joins the previous RDN. Otherwise
/// the first byte chooses the attribute type (`C`N, `O`, o`u`, `c`ountry, `L`, `S`T,
/// s`T`reet, `d`c, u`i`d, e`m`ail, serial`n`umber), the second its string type (`u`tf8,
/// `p`rintable, `i`a5, `t`61, `b`mp, `U`niversal, `n`umeric, `v`isible, `o`ctets) and the
/// rest is the value. The whole input is also tried as a DER certificate.
///
/// Invariants: nothing panics; the subject and the XFCC value are valid header values;
/// reading the subject back as RFC 4514 (split at unescaped `,` and `+`, unescaped)
/// gives every attribute in order — its text, or `#` and its DER in hex for a type
/// without a short name or a value that is not text; the CN is the first CN's text;
/// reading the XFCC value back with a quoted-pair parser gives exactly one element with
/// the certificate's hash, subject, URI and DNS SANs; every SAN that is UTF-8 is kept, in
/// order; XFCC is absent only when a SAN cannot be sent in a header.
pub fn xfcc(data: &[u8]) {
    if let Some(c) = ClientCert::parse(data) {
        check_cert(&c, data);
    }
    let mut rdns: Vec<Vec<Attr>> = Vec::new();
    let (mut uris, mut dns, mut emails) = (Vec::new(), Vec::new(), Vec::new());
    for line in data.split(|&b| b == b'\n') {
        let (join, line) = match line.split_first() {
            Some((b'+', rest)) => (true, rest),
            _ => (false, line),
        };
        match line {
            [b'U', v @ ..] => uris.push(v.to_vec()),
            [b'D', v @ ..] => dns.push(v.to_vec()),
            [b'E', v @ ..] => emails.push(v.to_vec()),
            [k, t, v @ ..] => {
                let (_, oid, short) = TYPES
                    .iter()
                    .find(|(c, ..)| c == k)
                    .copied()
                    .unwrap_or(TYPES[usize::from(*k) % TYPES.len()]);
                let tag = TAGS
                    .iter()
                    .find(|(c, _)| c == t)
                    .map_or(TAGS[usize::from(*t) % TAGS.len()].1, |(_, tag)| *tag);
                let attr = Attr {
                    oid,
                    short,
                    tag,
                    value: v.to_vec(),
                };
                match rdns.last_mut() {
                    Some(rdn) if join => rdn.push(attr),
                    _ => rdns.push(vec![attr]),
                }
            }
            _ => {}
        }
    }
    let der = certificate(&rdns, &uris, &dns, &emails);
    let Some(c) = ClientCert::parse(&der) else {
        return;
    };
    check_cert(&c, &der);

    // The subject read back, most specific RDN first.
    let mut read: Vec<Vec<(String, String)>> = split_unescaped(&c.subject, b',')
        .iter()
        .map(|rdn| {
            split_unescaped(rdn, b'+')
                .iter()
                .map(|atv| match atv.split_once('=') {
                    Some((t, v)) => (t.to_string(), v.to_string()),
                    None => (atv.to_string(), String::new()),
                })
                .collect()
        })
        .collect();
    if c.subject.is_empty() {
        read.clear();
    }
    read.reverse();
    assert_eq!(
        read.iter().map(Vec::len).collect::<Vec<_>>(),
        rdns.iter().map(Vec::len).collect::<Vec<_>>(),
        "RDNs in {:?}",
        c.subject
    );
    for (got, want) in read.iter().flatten().zip(rdns.iter().flatten()) {
        match (want.short, text(want.tag, &want.value)) {
            (Some(short), Some(text)) => {
                assert_eq!(got.0, short);
                assert_eq!(
                    unescape(&got.1).as_deref(),
                    Some(text.as_str()),
                    "{:?}",
                    got.1
                );
            }
            _ => {
                assert!(got.0.bytes().all(|b| b.is_ascii_digit() || b == b'.'));
                assert_eq!(
                    got.1,
                    format!("#{}", hex::encode_upper(tlv(want.tag, &want.value)))
                );
            }
        }
    }
    let first_cn = rdns
        .iter()
        .flatten()
        .find(|a| a.short == Some("CN"))
        .and_then(|a| text(a.tag, &a.value));
    assert_eq!(c.cn, first_cn);
    // x509-parser reads an IA5String SAN as UTF-8 and skips one that is not.
    let strings = |v: &[Vec<u8>]| -> Vec<String> {
        v.iter()
            .filter_map(|b| String::from_utf8(b.clone()).ok())
            .collect()
    };
    assert_eq!(c.uris, strings(&uris));
    assert_eq!(c.dns, strings(&dns));
    assert_eq!(c.emails, strings(&emails));
}

/// What holds for any certificate `ClientCert::parse` accepts.
fn check_cert(c: &ClientCert, der: &[u8]) {
    let digest = Sha256::digest(der);
    assert_eq!(c.sha256_hex, hex::encode(digest));
    assert!(
        http::HeaderValue::from_str(&c.subject).is_ok()
            && c.subject.bytes().all(|b| b.is_ascii_graphic() || b == b' '),
        "subject {:?} is not printable ASCII",
        c.subject
    );
    let sendable = |s: &String| http::HeaderValue::from_str(s).is_ok();
    let Some(value) = &c.xfcc else {
        assert!(
            !(c.uris.iter().all(sendable) && c.dns.iter().all(sendable)),
            "XFCC missing though every field can be sent"
        );
        return;
    };
    let elements = parse_xfcc(value.as_bytes());
    assert_eq!(elements.len(), 1, "XFCC elements in {value:?}");
    let Some(element) = elements.first() else {
        return;
    };
    let mut want = vec![
        ("Hash".to_string(), c.sha256_hex.clone()),
        ("Subject".to_string(), c.subject.clone()),
    ];
    want.extend(c.uris.iter().map(|u| ("URI".to_string(), u.clone())));
    want.extend(c.dns.iter().map(|d| ("DNS".to_string(), d.clone())));
    assert_eq!(*element, want, "XFCC {value:?}");
}

/// An XFCC header read as Envoy documents it: elements split at `,`, pairs at `;`, key
/// `=` value, a value in double quotes with `\` escaping the next character.
fn parse_xfcc(v: &[u8]) -> Vec<Vec<(String, String)>> {
    let mut elements = vec![Vec::new()];
    let (mut key, mut value) = (Vec::new(), Vec::new());
    let (mut in_value, mut quoted, mut escaped) = (false, false, false);
    type Elements = Vec<Vec<(String, String)>>;
    fn finish(key: &mut Vec<u8>, value: &mut Vec<u8>, elements: &mut Elements) {
        if let Some(e) = elements.last_mut() {
            e.push((
                String::from_utf8_lossy(key).into_owned(),
                String::from_utf8_lossy(value).into_owned(),
            ));
        }
        key.clear();
        value.clear();
    }
    for &b in v {
        match (in_value, quoted, escaped, b) {
            (_, true, true, b) => {
                value.push(b);
                escaped = false;
            }
            (_, true, false, b'\\') => escaped = true,
            (_, true, false, b'"') => quoted = false,
            (_, true, false, b) => value.push(b),
            (true, false, _, b'"') if value.is_empty() => quoted = true,
            (true, false, _, b';') => {
                finish(&mut key, &mut value, &mut elements);
                in_value = false;
            }
            (true, false, _, b',') => {
                finish(&mut key, &mut value, &mut elements);
                in_value = false;
                elements.push(Vec::new());
            }
            (true, false, _, b) => value.push(b),
            (false, false, _, b'=') => in_value = true,
            (false, false, _, b) => key.push(b),
        }
    }
    finish(&mut key, &mut value, &mut elements);
    elements
}

/// Splits RFC 4514 text at `sep` where it is not escaped by a backslash.
fn split_unescaped(s: &str, sep: u8) -> Vec<String> {
    let mut parts = vec![Vec::new()];
    let mut escaped = false;
    for &b in s.as_bytes() {
        let part = parts.len() - 1;
        if !escaped && b == sep {
            parts.push(Vec::new());
            continue;
        }
        escaped = !escaped && b == b'\\';
        if let Some(p) = parts.get_mut(part) {
            p.push(b);
        }
    }
    parts
        .into_iter()
        .map(|p| String::from_utf8_lossy(&p).into_owned())
        .collect()
}

/// An RFC 4514 attribute value unescaped; `None` when a character that must be escaped
/// is not, or an escape is malformed.
fn unescape(v: &str) -> Option<String> {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match c {
            b'\\' => {
                let next = *b.get(i + 1)?;
                if b"\"+,;<>\\ #=".contains(&next) {
                    out.push(next);
                    i += 2;
                } else {
                    let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                    if !hex.bytes().all(|h| h.is_ascii_hexdigit()) {
                        return None;
                    }
                    out.push(u8::from_str_radix(hex, 16).ok()?);
                    i += 3;
                }
            }
            b'"' | b'+' | b',' | b';' | b'<' | b'>' => return None,
            b'#' if i == 0 => return None,
            b' ' if i == 0 || i + 1 == b.len() => return None,
            c if c.is_ascii_control() || !c.is_ascii() => return None,
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The text of a value as RFC 5280 directory strings are read; `None` when not text.
fn text(tag: u8, v: &[u8]) -> Option<String> {
    match tag {
        0x0c | 0x13 | 0x16 | 0x12 | 0x1a => String::from_utf8(v.to_vec()).ok(),
        0x14 => Some(v.iter().map(|&b| char::from(b)).collect()),
        0x1e if v.len() % 2 == 0 => {
            char::decode_utf16(v.chunks_exact(2).map(|p| u16::from_be_bytes([p[0], p[1]])))
                .collect::<Result<String, _>>()
                .ok()
        }
        0x1c if v.len() % 4 == 0 => v
            .chunks_exact(4)
            .map(|p| char::from_u32(u32::from_be_bytes([p[0], p[1], p[2], p[3]])))
            .collect(),
        _ => None,
    }
}

/// One DER element.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes = n.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

fn seq(parts: &[&[u8]]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

/// An unsigned X.509 v3 certificate (ECDSA P-256 shapes, a dummy key and signature).
fn certificate(
    rdns: &[Vec<Attr>],
    uris: &[Vec<u8>],
    dns: &[Vec<u8>],
    emails: &[Vec<u8>],
) -> Vec<u8> {
    const ECDSA_SHA256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
    let alg = seq(&[ECDSA_SHA256]);
    let subject = seq(&rdns
        .iter()
        .map(|rdn| {
            let atvs: Vec<Vec<u8>> = rdn
                .iter()
                .map(|a| seq(&[&tlv(0x06, a.oid), &tlv(a.tag, &a.value)]))
                .collect();
            tlv(0x31, &atvs.concat())
        })
        .collect::<Vec<_>>()
        .iter()
        .map(Vec::as_slice)
        .collect::<Vec<_>>());
    let issuer = seq(&[&tlv(
        0x31,
        &seq(&[&tlv(0x06, &[0x55, 0x04, 0x03]), &tlv(0x0c, b"fuzz ca")]),
    )]);
    let validity = seq(&[&tlv(0x17, b"250101000000Z"), &tlv(0x17, b"350101000000Z")]);
    let mut point = vec![0x00, 0x04];
    point.extend_from_slice(&[0x11; 64]);
    let spki = seq(&[
        &seq(&[
            &tlv(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]),
            &tlv(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]),
        ]),
        &tlv(0x03, &point),
    ]);
    let mut names = Vec::new();
    for (tag, list) in [(0x81, emails), (0x82, dns), (0x86, uris)] {
        for v in list {
            names.extend_from_slice(&tlv(tag, v));
        }
    }
    let mut tbs = vec![
        tlv(0xa0, &tlv(0x02, &[0x02])),
        tlv(0x02, &[0x01]),
        alg.clone(),
        issuer,
        validity,
        subject,
        spki,
    ];
    if !names.is_empty() {
        let san = seq(&[
            &tlv(0x06, &[0x55, 0x1d, 0x11]),
            &tlv(0x04, &tlv(0x30, &names)),
        ]);
        tbs.push(tlv(0xa3, &seq(&[&san])));
    }
    let tbs = tlv(0x30, &tbs.concat());
    let signature = tlv(
        0x03,
        &[0x00, 0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01],
    );
    seq(&[&tbs, &alg, &signature])
}
