//! Per-connection facts, computed once when the connection is accepted (after the TLS
//! handshake) and shared by every request on it, HTTP/1.1 and HTTP/2 alike: the peer
//! address, whether TLS is used, and the verified client certificate parsed once,
//! including its precomputed `X-Forwarded-Client-Cert` value.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine;
use bytes::Bytes;
use http::HeaderValue;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;

use crate::auth::memo::Memo;

/// Facts about one accepted connection.
#[derive(Debug)]
pub struct ConnInfo {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// The peer's address as an `X-Forwarded-For` element, written once per connection.
    pub peer_ip: HeaderValue,
    /// Whether the connection is TLS (`X-Forwarded-Proto`).
    pub tls: bool,
    /// The verified client certificate, if one was presented (mTLS).
    pub client_cert: Option<Arc<ClientCert>>,
    /// Where an HTTP/1.1 connection hands its stream to a WebSocket tunnel.
    pub upgrade: UpgradeSlot,
    /// The last credential (bearer token, Basic `Authorization`) admitted on this
    /// connection from an authenticator's cache.
    pub memo: Memo,
    /// HTTP/1.1 request targets that carried a `#` (see `raw_target`).
    pub fragments: crate::raw_target::Fragments,
}

impl ConnInfo {
    /// A connection from `peer`.
    pub fn new(peer: SocketAddr, tls: bool, client_cert: Option<Arc<ClientCert>>) -> Self {
        ConnInfo {
            peer,
            peer_ip: crate::proxy::headers::ip_value(peer.ip()),
            tls,
            client_cert,
            upgrade: UpgradeSlot::default(),
            memo: Memo::default(),
            fragments: crate::raw_target::Fragments::default(),
        }
    }

    /// A plain connection from `peer`.
    pub fn plain(peer: SocketAddr) -> Self {
        Self::new(peer, false, None)
    }
}

/// A client byte stream, as handed to a WebSocket tunnel.
pub trait ClientStream: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> ClientStream for T {}

/// The client side of an HTTP/1.1 connection after a 101 was written on it.
pub struct Upgraded {
    /// The transport (TLS stream, or TCP with `insecure_plaintext`).
    pub io: Box<dyn ClientStream>,
    /// Bytes the client sent after its request head that were already read off the stream.
    pub read_ahead: Bytes,
    /// The connection's place under `server.limits.max_connections`: a tunnel keeps it.
    pub permit: tokio::sync::OwnedSemaphorePermit,
}

/// Hand-over point for an upgrade. The connection task serves HTTP/1.1 with hyper's
/// low-level connection (so an idle connection can be parked without its buffers, see
/// `server`), which leaves upgrades to the caller: the gateway asks for the stream here
/// when the upstream agreed, and the connection task hands it over once hyper has written
/// the 101.
#[derive(Default)]
pub struct UpgradeSlot(Mutex<Option<oneshot::Sender<Upgraded>>>);

impl UpgradeSlot {
    /// Asks for the client stream once the 101 being returned has been written.
    pub fn claim(&self) -> oneshot::Receiver<Upgraded> {
        let (tx, rx) = oneshot::channel();
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(tx);
        rx
    }

    /// The waiting tunnel, if a request asked for the stream.
    pub(crate) fn take(&self) -> Option<oneshot::Sender<Upgraded>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

impl std::fmt::Debug for UpgradeSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpgradeSlot")
    }
}

/// A verified client certificate's fields, parsed once per connection.
#[derive(Debug)]
pub struct ClientCert {
    /// Lower-case hex SHA-256 of the DER certificate.
    pub sha256_hex: String,
    /// base64url (no padding) SHA-256 thumbprint, RFC 8705 `x5t#S256`.
    pub x5t_s256: String,
    /// Subject in RFC 4514 form.
    pub subject: String,
    /// Subject common name.
    pub cn: Option<String>,
    /// URI SANs.
    pub uris: Vec<String>,
    /// DNS SANs.
    pub dns: Vec<String>,
    /// Email SANs.
    pub emails: Vec<String>,
    /// Envoy-format `X-Forwarded-Client-Cert` value.
    pub xfcc: Option<HeaderValue>,
}

impl ClientCert {
    /// Parses a DER certificate already verified by rustls. `None` if it cannot be parsed.
    pub fn parse(der: &[u8]) -> Option<Self> {
        use x509_parser::prelude::*;
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let digest = Sha256::digest(der);
        let sha256_hex = hex::encode(digest);
        let x5t_s256 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest);
        let subject = rfc4514(cert.subject());
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|a| attr_text(a.attr_value()));
        let (mut uris, mut dns, mut emails) = (Vec::new(), Vec::new(), Vec::new());
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(u) => uris.push((*u).to_string()),
                    GeneralName::DNSName(d) => dns.push((*d).to_string()),
                    GeneralName::RFC822Name(e) => emails.push((*e).to_string()),
                    _ => {}
                }
            }
        }
        let mut c = ClientCert {
            sha256_hex,
            x5t_s256,
            subject,
            cn,
            uris,
            dns,
            emails,
            xfcc: None,
        };
        c.xfcc = HeaderValue::from_str(&c.xfcc_value()).ok();
        Some(c)
    }

    /// `X-Auth-Subject` for mTLS: the first URI SAN, else the CN.
    pub fn identity(&self) -> &str {
        self.uris
            .first()
            .or(self.cn.as_ref())
            .map_or("", String::as_str)
    }

    /// Envoy's XFCC element: `Hash=..;Subject="..";URI=..;DNS=..`, one `URI=` / `DNS=`
    /// pair per SAN. `Subject` is always quoted (as Envoy does); other values are quoted
    /// when they contain `,`, `;`, `=` or `"`. Inside quotes `"` and `\` are escaped with a
    /// backslash, so a quoted-pair parser (xfcc-parser, xfccparser) recovers the exact
    /// RFC 4514 subject, including its own backslash escapes.
    fn xfcc_value(&self) -> String {
        let mut s = format!("Hash={}", self.sha256_hex);
        s.push_str(";Subject=\"");
        s.push_str(&escape_quoted(&self.subject));
        s.push('"');
        for u in &self.uris {
            s.push_str(";URI=");
            s.push_str(&xfcc_field(u));
        }
        for d in &self.dns {
            s.push_str(";DNS=");
            s.push_str(&xfcc_field(d));
        }
        s
    }
}

/// Formats a distinguished name as RFC 4514 (like OpenSSL's `XN_FLAG_RFC2253`, which
/// Envoy uses): RDNs in reverse order (most specific first) joined by `,`, multi-valued
/// RDNs joined by `+`, the RFC 4514 short names, `"+,;<>\` escaped with a backslash, a
/// leading space or `#` and a trailing space escaped, and control or non-ASCII bytes as
/// `\XX` hex pairs so the result is always a valid header value. Attribute types without
/// a short name print as dotted OIDs with a `#` hex DER value.
fn rfc4514(name: &x509_parser::x509::X509Name<'_>) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let rdns: Vec<_> = name.iter_rdn().collect();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, attr) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            let oid = attr.attr_type().to_id_string();
            let short = short_name(&oid);
            match (short, attr_text(attr.attr_value())) {
                (Some(n), Some(text)) => {
                    out.push_str(n);
                    out.push('=');
                    escape_rfc4514(&text, &mut out);
                }
                _ => {
                    use x509_parser::asn1_rs::ToDer as _;
                    out.push_str(&oid);
                    out.push_str("=#");
                    let der = attr.attr_value().to_der_vec().unwrap_or_default();
                    for b in der {
                        let _ = write!(out, "{b:02X}");
                    }
                }
            }
        }
    }
    out
}

/// RFC 4514 section 3 short names.
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.6" => "C",
        "2.5.4.9" => "STREET",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

/// The text of a directory-string attribute value (UTF8, Printable, IA5, Numeric,
/// Visible, Teletex read as Latin-1, BMP, Universal); `None` for anything else.
fn attr_text(v: &x509_parser::asn1_rs::Any<'_>) -> Option<String> {
    use x509_parser::asn1_rs::Tag;
    let data = v.as_bytes();
    match v.tag() {
        Tag::Utf8String
        | Tag::PrintableString
        | Tag::Ia5String
        | Tag::NumericString
        | Tag::VisibleString => std::str::from_utf8(data).ok().map(str::to_string),
        Tag::T61String => Some(data.iter().map(|&b| char::from(b)).collect()),
        Tag::BmpString => {
            let units: Vec<u16> = data
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes(<[u8; 2]>::try_from(c).unwrap_or_default()))
                .collect();
            (data.len() % 2 == 0)
                .then(|| String::from_utf16(&units).ok())
                .flatten()
        }
        Tag::UniversalString => {
            if data.len() % 4 != 0 {
                return None;
            }
            data.chunks_exact(4)
                .map(|c| {
                    char::from_u32(u32::from_be_bytes(
                        <[u8; 4]>::try_from(c).unwrap_or_default(),
                    ))
                })
                .collect()
        }
        _ => None,
    }
}

/// Appends `v` escaped per RFC 4514 section 2.4.
fn escape_rfc4514(v: &str, out: &mut String) {
    use std::fmt::Write as _;
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '#' if i == 0 => out.push_str("\\#"),
            c if c.is_ascii_control() || !c.is_ascii() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\{b:02X}");
                }
            }
            c => out.push(c),
        }
    }
}

fn escape_quoted(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"")
}

fn xfcc_field(v: &str) -> String {
    if v.contains([',', ';', '=', '"']) {
        format!("\"{}\"", escape_quoted(v))
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

    fn cert_der(dn: &[(DnType, &str)], sans: Vec<SanType>) -> Vec<u8> {
        let mut p = CertificateParams::default();
        let mut name = DistinguishedName::new();
        for (t, v) in dn {
            name.push(t.clone(), *v);
        }
        p.distinguished_name = name;
        p.subject_alt_names = sans;
        let key = KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn subject_is_rfc4514_most_specific_first() {
        let der = cert_der(
            &[
                (DnType::CountryName, "DE"),
                (DnType::OrganizationName, "Example"),
                (DnType::CommonName, "billing"),
            ],
            vec![],
        );
        let c = ClientCert::parse(&der).unwrap();
        assert_eq!(c.subject, "CN=billing,O=Example,C=DE");
        assert_eq!(c.cn.as_deref(), Some("billing"));
    }

    #[test]
    fn subject_escapes_rfc4514_specials() {
        let der = cert_der(
            &[
                (DnType::OrganizationName, "Acme, Inc."),
                (DnType::CommonName, r#"#a "b"+c;d<e>f\g "#),
            ],
            vec![],
        );
        let c = ClientCert::parse(&der).unwrap();
        assert_eq!(c.subject, r#"CN=\#a \"b\"\+c\;d\<e\>f\\g\ ,O=Acme\, Inc."#);
    }

    #[test]
    fn subject_hex_escapes_non_ascii_so_xfcc_stays_a_header() {
        let der = cert_der(&[(DnType::CommonName, "Jürgen")], vec![]);
        let c = ClientCert::parse(&der).unwrap();
        assert_eq!(c.subject, r"CN=J\C3\BCrgen");
        assert_eq!(c.cn.as_deref(), Some("Jürgen"));
        assert!(c.xfcc.is_some());
    }

    #[test]
    fn xfcc_is_envoy_format_with_repeated_sans() {
        let der = cert_der(
            &[(DnType::CommonName, r#"Smith, "Bob""#)],
            vec![
                SanType::URI("spiffe://example.org/a".try_into().unwrap()),
                SanType::URI("https://x.example/p;q=1".try_into().unwrap()),
                SanType::DnsName("a.internal".try_into().unwrap()),
                SanType::DnsName("b.internal".try_into().unwrap()),
            ],
        );
        let c = ClientCert::parse(&der).unwrap();
        let hash = hex::encode(Sha256::digest(&der));
        assert_eq!(c.sha256_hex, hash);
        let expected = format!(
            r#"Hash={hash};Subject="CN=Smith\\, \\\"Bob\\\"";URI=spiffe://example.org/a;URI="https://x.example/p;q=1";DNS=a.internal;DNS=b.internal"#
        );
        assert_eq!(c.xfcc.as_ref().unwrap().to_str().unwrap(), expected);
        assert_eq!(c.identity(), "spiffe://example.org/a");
    }
}
