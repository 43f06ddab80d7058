//! Development and test certificates: a throw-away CA, server and client
//! certificates, and CRLs, all generated with rcgen.
//!
//! This module sits outside the request path. It feeds `portcullis certs`,
//! `portcullis demo` and every test that needs a real TLS handshake or a real
//! client certificate. Nothing here is meant for production PKI.
//!
//! Invariants it keeps:
//! - private keys never appear in `Debug` output ([`Ca`] and [`Issued`] redact
//!   them), and key files are written with mode `0600` on unix;
//! - every certificate is ECDSA P-256, carries the CA's authority key
//!   identifier, and has an explicit extended key usage, so rustls/webpki
//!   verify them exactly as they would verify a real deployment's
//!   certificates;
//! - file names derived from user input ([`write_client`]) cannot escape the
//!   output directory.

use std::fmt;
use std::fs;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    PublicKeyData as _, RevokedCertParams, SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use time::{Duration, OffsetDateTime};

/// How long a development CA stays valid.
pub const CA_VALIDITY: Duration = Duration::days(5 * 365);
/// How long a development server certificate stays valid.
pub const SERVER_VALIDITY: Duration = Duration::days(365);
/// How long a client certificate from [`ClientSpec::new`] stays valid.
pub const CLIENT_VALIDITY: Duration = Duration::days(30);
/// Back-dating of `not_before`, so small clock skew between processes is harmless.
const BACKDATE: Duration = Duration::hours(1);
/// How long a CRL from [`Ca::crl`] stays current (its `nextUpdate`).
const CRL_VALIDITY: Duration = Duration::days(1);

/// Everything that can go wrong while generating, loading or writing certificates.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen refused the parameters or failed to sign.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A subject alternative name is not a valid IA5 (ASCII) string.
    #[error(
        "invalid {kind} subject alternative name {value:?}: {source}; use ASCII (punycode for IDNs)"
    )]
    InvalidSan {
        /// `dns`, `uri` or `email`.
        kind: &'static str,
        /// The rejected value.
        value: String,
        /// Why rcgen rejected it.
        source: rcgen::Error,
    },
    /// A server certificate was requested without any host name.
    #[error("a server certificate needs at least one host name or IP address")]
    NoHosts,
    /// A client certificate serial number of zero was requested.
    #[error("certificate serial number 0 is not allowed; use a positive serial")]
    ZeroSerial,
    /// A client name cannot be used as a file name.
    #[error(
        "invalid client name {0:?}: use 1-64 characters from A-Z a-z 0-9 . _ - , not starting with '.'"
    )]
    InvalidName(String),
    /// The PEM given to [`Ca::load`] is not a usable CA certificate.
    #[error("cannot load CA certificate: {0}")]
    BadCaCert(String),
    /// The PEM given to [`Ca::load`] is not a usable private key.
    #[error("cannot load CA private key: {0}")]
    BadCaKey(String),
    /// Freshly generated PEM did not parse back (a bug, not a user error).
    #[error("generated {0} does not parse: {1}")]
    BadPem(&'static str, String),
    /// The CA certificate and the CA key do not belong together.
    #[error("the CA private key does not match the CA certificate's public key")]
    KeyMismatch,
    /// Reading or writing a file failed.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// A certificate issued by a [`Ca`], with its private key.
///
/// `Debug` redacts the private key.
#[derive(Clone)]
pub struct Issued {
    /// The certificate, PEM encoded.
    pub cert_pem: String,
    /// The private key, PKCS#8 PEM encoded.
    pub key_pem: String,
    /// The certificate, DER encoded.
    pub cert_der: Vec<u8>,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"[redacted]")
            .finish_non_exhaustive()
    }
}

impl Issued {
    /// The certificate as a rustls chain (leaf only; the CA is the trust anchor).
    pub fn cert_chain(&self) -> Vec<CertificateDer<'static>> {
        vec![CertificateDer::from(self.cert_der.clone())]
    }

    /// The private key as rustls wants it.
    pub fn private_key(&self) -> Result<PrivateKeyDer<'static>, CertError> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| CertError::BadPem("private key", e.to_string()))
    }

    /// Writes `STEM.crt` and `STEM.key` (mode 0600 on unix) into `dir`, which must exist.
    pub fn write(&self, dir: &Path, stem: &str) -> Result<(), CertError> {
        write_public(&dir.join(format!("{stem}.crt")), &self.cert_pem)?;
        write_private(&dir.join(format!("{stem}.key")), &self.key_pem)
    }
}

/// What to put into a client certificate issued by [`Ca::client`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSpec {
    /// Subject common name.
    pub common_name: String,
    /// URI subject alternative names (e.g. SPIFFE IDs).
    pub uris: Vec<String>,
    /// DNS subject alternative names.
    pub dns: Vec<String>,
    /// Email (RFC 822) subject alternative names.
    pub emails: Vec<String>,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// `true`: EKU clientAuth. `false`: EKU serverAuth only, i.e. a certificate
    /// with the wrong usage that a client verifier must refuse.
    pub client_auth_usage: bool,
    /// Serial number; `None` lets rcgen derive one from the public key.
    /// Set it when a test wants to revoke the certificate with [`Ca::crl`].
    pub serial: Option<u64>,
}

impl ClientSpec {
    /// A client certificate for `cn`: valid from one hour ago for 30 days, EKU
    /// clientAuth, no SANs, serial derived from the key.
    pub fn new(cn: &str) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            common_name: cn.to_owned(),
            uris: Vec::new(),
            dns: Vec::new(),
            emails: Vec::new(),
            not_before: now - BACKDATE,
            not_after: now + CLIENT_VALIDITY,
            client_auth_usage: true,
            serial: None,
        }
    }
}

/// A certificate authority that can issue server and client certificates and CRLs.
///
/// `Debug` redacts the private key.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    key_id: KeyIdMethod,
    cert_pem: String,
    cert_der: Vec<u8>,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("cert_pem", &self.cert_pem)
            .field("key", &"[redacted]")
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Creates a fresh self-signed CA named `common_name`, valid for five years,
    /// with key usages keyCertSign and cRLSign.
    pub fn new(common_name: &str) -> Result<Ca, CertError> {
        let key = KeyPair::generate()?;
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = now - BACKDATE;
        params.not_after = now + CA_VALIDITY;
        let cert = params.self_signed(&key)?;
        let key_id = params.key_identifier_method.clone();
        Ok(Ca {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
            key_id,
        })
    }

    /// Reuses an existing CA from its PEM certificate and PEM (PKCS#8, SEC1 or
    /// PKCS#1) private key. The certificate must be a CA and match the key.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Ca, CertError> {
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| CertError::BadCaCert(format!("no PEM certificate found: {e}")))?;
        let (_, x509) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| CertError::BadCaCert(format!("not an X.509 certificate: {e}")))?;
        if !x509.is_ca() {
            return Err(CertError::BadCaCert(
                "basicConstraints does not mark it as a CA".to_owned(),
            ));
        }
        let key = KeyPair::from_pem(key_pem).map_err(|e| CertError::BadCaKey(e.to_string()))?;
        if key.subject_public_key_info() != x509.tbs_certificate.subject_pki.raw {
            return Err(CertError::KeyMismatch);
        }
        let key_id = x509
            .iter_extensions()
            .find_map(|ext| match ext.parsed_extension() {
                x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(id) => {
                    Some(KeyIdMethod::PreSpecified(id.0.to_vec()))
                }
                _ => None,
            })
            .unwrap_or(KeyIdMethod::Sha256);
        let issuer = Issuer::from_ca_cert_der(&der, key)?;
        Ok(Ca {
            issuer,
            key_id,
            cert_pem: pem_encode("CERTIFICATE", &der),
            cert_der: der.to_vec(),
        })
    }

    /// The CA certificate, PEM encoded.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PKCS#8 PEM encoded.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// The CA certificate, DER encoded.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// A rustls root store holding only this CA.
    pub fn root_store(&self) -> Result<rustls::RootCertStore, CertError> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.cert_der.clone()))
            .map_err(|e| CertError::BadCaCert(e.to_string()))?;
        Ok(roots)
    }

    /// Issues a server certificate: each host becomes an IP SAN if it parses as
    /// an IP address, a DNS SAN otherwise; CN is the first host; EKU serverAuth;
    /// valid from one hour ago for one year.
    pub fn server(&self, hosts: &[String]) -> Result<Issued, CertError> {
        self.server_for(hosts, SERVER_VALIDITY)
    }

    /// [`Ca::server`] valid for `validity` (from one hour ago).
    pub fn server_for(&self, hosts: &[String], validity: Duration) -> Result<Issued, CertError> {
        let first = hosts.first().ok_or(CertError::NoHosts)?;
        let mut sans = Vec::with_capacity(hosts.len());
        for host in hosts {
            sans.push(match host.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(ia5("dns", host)?),
            });
        }
        let now = OffsetDateTime::now_utc();
        let mut params = leaf_params(first, now - BACKDATE, now + validity);
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(&params)
    }

    /// Issues a client certificate as described by `spec`.
    pub fn client(&self, spec: &ClientSpec) -> Result<Issued, CertError> {
        let mut params = leaf_params(&spec.common_name, spec.not_before, spec.not_after);
        for uri in &spec.uris {
            params
                .subject_alt_names
                .push(SanType::URI(ia5("uri", uri)?));
        }
        for dns in &spec.dns {
            params
                .subject_alt_names
                .push(SanType::DnsName(ia5("dns", dns)?));
        }
        for email in &spec.emails {
            params
                .subject_alt_names
                .push(SanType::Rfc822Name(ia5("email", email)?));
        }
        params.extended_key_usages = if spec.client_auth_usage {
            vec![ExtendedKeyUsagePurpose::ClientAuth]
        } else {
            vec![ExtendedKeyUsagePurpose::ServerAuth]
        };
        if let Some(serial) = spec.serial {
            if serial == 0 {
                return Err(CertError::ZeroSerial);
            }
            params.serial_number = Some(SerialNumber::from(serial));
        }
        self.sign(&params)
    }

    /// A PEM CRL signed by this CA that revokes `revoked_serials`; `thisUpdate`
    /// is now, `nextUpdate` one day later, and the CRL number is the current
    /// Unix time so that later CRLs supersede earlier ones.
    pub fn crl(&self, revoked_serials: &[u64]) -> Result<String, CertError> {
        let now = OffsetDateTime::now_utc();
        let crl_number = u64::try_from(now.unix_timestamp()).unwrap_or(1);
        let params = CertificateRevocationListParams {
            this_update: now,
            next_update: now + CRL_VALIDITY,
            crl_number: SerialNumber::from(crl_number),
            issuing_distribution_point: None,
            revoked_certs: revoked_serials
                .iter()
                .map(|&serial| RevokedCertParams {
                    serial_number: SerialNumber::from(serial),
                    revocation_time: now,
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: self.key_id.clone(),
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }

    /// Like [`Ca::crl`], but DER encoded for rustls.
    pub fn crl_der(
        &self,
        revoked_serials: &[u64],
    ) -> Result<CertificateRevocationListDer<'static>, CertError> {
        let pem = self.crl(revoked_serials)?;
        CertificateRevocationListDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| CertError::BadPem("CRL", e.to_string()))
    }

    /// Writes `ca.crt` and `ca.key` (mode 0600 on unix) into `dir`, which must exist.
    pub fn write(&self, dir: &Path) -> Result<(), CertError> {
        write_public(&dir.join("ca.crt"), &self.cert_pem)?;
        write_private(&dir.join("ca.key"), &self.key_pem())
    }

    fn sign(&self, params: &CertificateParams) -> Result<Issued, CertError> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().to_vec(),
        })
    }
}

/// Creates `out` (and parents) and writes a complete development set into it:
/// `ca.crt`, `ca.key`, `server.crt`, `server.key` (SANs = `hosts`),
/// `client.crt`, `client.key` (CN = `client_cn`, URI SANs = `client_uris`).
/// Existing files are overwritten; key files get mode 0600 on unix.
pub fn write_dev_set(
    out: &Path,
    hosts: &[String],
    client_cn: &str,
    client_uris: &[String],
) -> Result<(), CertError> {
    fs::create_dir_all(out).map_err(|source| CertError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let ca = Ca::new("portcullis development CA")?;
    let server = ca.server(hosts)?;
    let mut spec = ClientSpec::new(client_cn);
    spec.uris = client_uris.to_vec();
    let client = ca.client(&spec)?;
    ca.write(out)?;
    server.write(out, "server")?;
    client.write(out, "client")
}

/// Issues a client certificate with CN `name` and URI SANs `uris` from `ca`
/// and writes `NAME.crt` and `NAME.key` (mode 0600 on unix) into `out`, which
/// is created if missing. `name` must be a plain file name (see
/// [`CertError::InvalidName`]).
pub fn write_client(out: &Path, ca: &Ca, name: &str, uris: &[String]) -> Result<(), CertError> {
    write_client_for(out, ca, name, uris, CLIENT_VALIDITY)
}

/// [`write_client`] with a certificate valid for `validity` (from one hour ago).
pub fn write_client_for(
    out: &Path,
    ca: &Ca,
    name: &str,
    uris: &[String],
    validity: Duration,
) -> Result<(), CertError> {
    if !is_safe_file_stem(name) {
        return Err(CertError::InvalidName(name.to_owned()));
    }
    fs::create_dir_all(out).map_err(|source| CertError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let mut spec = ClientSpec::new(name);
    spec.uris = uris.to_vec();
    spec.not_after = spec.not_before + BACKDATE + validity;
    ca.client(&spec)?.write(out, name)
}

fn is_safe_file_stem(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn leaf_params(
    common_name: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(common_name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.not_before = not_before;
    params.not_after = not_after;
    params
}

fn ia5(kind: &'static str, value: &str) -> Result<Ia5String, CertError> {
    Ia5String::try_from(value).map_err(|source| CertError::InvalidSan {
        kind,
        value: value.to_owned(),
        source,
    })
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    let mut rest = b64.as_str();
    while !rest.is_empty() {
        let (line, tail) = rest.split_at(rest.len().min(64));
        out.push_str(line);
        out.push('\n');
        rest = tail;
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

fn write_public(path: &Path, contents: &str) -> Result<(), CertError> {
    fs::write(path, contents).map_err(|source| CertError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn write_private(path: &Path, contents: &str) -> Result<(), CertError> {
    let io_err = |source| CertError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        options.mode(0o600);
        let mut file = options.open(path).map_err(io_err)?;
        // `mode` only applies when the file is created; tighten an existing one too.
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(io_err)?;
        file.write_all(contents.as_bytes()).map_err(io_err)?;
        file.sync_all().map_err(io_err)
    }
    #[cfg(not(unix))]
    {
        let mut file = options.open(path).map_err(io_err)?;
        file.write_all(contents.as_bytes()).map_err(io_err)?;
        file.sync_all().map_err(io_err)
    }
}

#[cfg(test)]
mod tests;
