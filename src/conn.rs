//! Per-connection facts, computed once when the connection is accepted (after the TLS
//! handshake) and shared by every request on it, HTTP/1.1 and HTTP/2 alike: the peer
//! address, whether TLS is used, and the verified client certificate parsed once,
//! including its precomputed `X-Forwarded-Client-Cert` value.

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use http::HeaderValue;
use sha2::{Digest, Sha256};

/// Facts about one accepted connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// Whether the connection is TLS (`X-Forwarded-Proto`).
    pub tls: bool,
    /// The verified client certificate, if one was presented (mTLS).
    pub client_cert: Option<Arc<ClientCert>>,
}

impl ConnInfo {
    /// A plain connection from `peer`.
    pub fn plain(peer: SocketAddr) -> Self {
        ConnInfo {
            peer,
            tls: false,
            client_cert: None,
        }
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
        let subject = cert.subject().to_string();
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .map(str::to_string);
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

    /// Envoy's XFCC element: `Hash=..;Subject="..";URI=..;DNS=..`. Values containing
    /// `,`, `;`, `=` or `"` are quoted, with `"` and `\` escaped.
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
