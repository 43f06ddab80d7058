//! rustls configuration. Server side: certificate chain and key, TLS 1.2+ (or 1.3 only),
//! ALPN h2 + http/1.1, and for mTLS a webpki client verifier over the configured CAs and
//! CRLs (optional or required). Client side (upstreams, JWKS, introspection): webpki roots
//! or a configured CA. The config loader reads and parses the files (`read_server`), so a
//! broken file fails the load; the snapshot builds rustls' objects from what it read.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use crate::config::{ClientAuthMode, ClientCa, Problems, ServerTls, raw, resolve_path};

/// Why a PEM file (certificates, a private key or CRLs) could not be used. The text names
/// the file; it goes into config problems as it is.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PemError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A PEM section of the expected kind is malformed.
    #[error("invalid PEM {what} in {}: {source}", path.display())]
    Invalid {
        /// What the file should hold: `certificate` or `CRL`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        source: pem::Error,
    },
    /// The file holds no section of the expected kind.
    #[error("no {what} found in {}", path.display())]
    Empty {
        /// What the file should hold: `certificate` or `CRL`.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// The file holds no private key rustls can use.
    #[error("no usable private key in {}: {source}", path.display())]
    NoKey {
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        source: pem::Error,
    },
}

/// Reads a PEM file whole.
fn read_pem(path: &Path) -> Result<Vec<u8>, PemError> {
    std::fs::read(path).map_err(|source| PemError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads every section of one kind (`what`) from a PEM file; an empty file is an error.
fn load_all<T: PemObject>(path: &Path, what: &'static str) -> Result<Vec<T>, PemError> {
    let data = read_pem(path)?;
    let items: Vec<T> = T::pem_slice_iter(&data)
        .collect::<Result<_, _>>()
        .map_err(|source| PemError::Invalid {
            what,
            path: path.to_path_buf(),
            source,
        })?;
    if items.is_empty() {
        return Err(PemError::Empty {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(items)
}

/// Reads every certificate from a PEM file.
pub(crate) fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    load_all(path, "certificate")
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) from a PEM file.
pub(crate) fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    let data = read_pem(path)?;
    PrivateKeyDer::from_pem_slice(&data).map_err(|source| PemError::NoKey {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads every CRL from a PEM file.
pub(crate) fn load_crls(
    path: &Path,
) -> Result<Vec<CertificateRevocationListDer<'static>>, PemError> {
    load_all(path, "CRL")
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Reads `[server.tls]`: the PEM files loaded and parsed, the version and client-CA
/// settings checked. Problems go under `server.tls.*`; rustls objects are made later, from
/// the result, by `server_config`.
pub(crate) fn read_server(
    problems: &mut Problems,
    dir: &Path,
    t: &raw::Tls,
    client_auth: Option<ClientAuthMode>,
) -> Option<ServerTls> {
    let before = problems.len();
    let certs = match &t.cert {
        Some(c) => load_certs(&resolve_path(dir, c))
            .map_err(|e| problems.push("server.tls.cert", e.to_string()))
            .ok(),
        None => {
            problems.push("server.tls.cert", "missing `cert` (PEM certificate chain)");
            None
        }
    };
    let key = match &t.key {
        Some(k) => load_key(&resolve_path(dir, k))
            .map_err(|e| problems.push("server.tls.key", e.to_string()))
            .ok(),
        None => {
            problems.push("server.tls.key", "missing `key` (PEM private key)");
            None
        }
    };
    let tls13_only = match t.min_version.as_deref() {
        None | Some("1.2") => false,
        Some("1.3") => true,
        Some(v) => {
            problems.push(
                "server.tls.min_version",
                format!("unsupported version \"{v}\": expected \"1.2\" or \"1.3\""),
            );
            true
        }
    };
    // An unknown `mode` is already a problem; the files are still checked.
    let client_ca = t.client_auth.as_ref().and_then(|ca| {
        let mode = client_auth.unwrap_or(ClientAuthMode::Required);
        read_client_ca(problems, dir, ca, mode)
    });
    if problems.len() != before {
        return None;
    }
    Some(ServerTls {
        cert_chain: certs?,
        key: key?,
        tls13_only,
        client_ca,
    })
}

fn read_client_ca(
    problems: &mut Problems,
    dir: &Path,
    ca: &raw::ClientAuth,
    mode: ClientAuthMode,
) -> Option<ClientCa> {
    let files: Vec<String> = match &ca.ca {
        Some(toml::Value::String(s)) => vec![s.clone()],
        Some(toml::Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    };
    if files.is_empty() {
        problems.push(
            "server.tls.client_auth.ca",
            "missing `ca`: one PEM file or a list of them",
        );
        return None;
    }
    let mut roots = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let key = if matches!(ca.ca, Some(toml::Value::Array(_))) {
            format!("server.tls.client_auth.ca[{i}]")
        } else {
            "server.tls.client_auth.ca".to_string()
        };
        match load_certs(&resolve_path(dir, f)) {
            Ok(certs) => roots.extend(certs.into_iter().map(|c| (key.clone(), f.clone(), c))),
            Err(e) => problems.push(key, e.to_string()),
        }
    }
    let mut crls = Vec::new();
    for (i, f) in ca.crls.iter().flatten().enumerate() {
        match load_crls(&resolve_path(dir, f)) {
            Ok(c) => crls.extend(c),
            Err(e) => problems.push(format!("server.tls.client_auth.crls[{i}]"), e.to_string()),
        }
    }
    Some(ClientCa { mode, roots, crls })
}

/// Why the listener's rustls config could not be made from read settings: the key path
/// of the setting at fault, and what rustls said.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct ServerTlsError {
    /// E.g. `server.tls.key`.
    pub(crate) key: String,
    /// What went wrong.
    pub(crate) message: String,
}

/// The public listener's rustls config: TLS 1.2+ (or 1.3 only), ALPN h2 and http/1.1, and
/// for mTLS a webpki client verifier over the client CAs and CRLs.
pub(crate) fn server_config(t: &ServerTls) -> Result<rustls::ServerConfig, ServerTlsError> {
    let fail = |key: &str, message: String| ServerTlsError {
        key: key.to_string(),
        message,
    };
    let versions: &[&'static rustls::SupportedProtocolVersion] = if t.tls13_only {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .map_err(|e| fail("server.tls", format!("tls setup failed: {e}")))?;
    let builder = match &t.client_ca {
        Some(ca) => builder.with_client_cert_verifier(client_verifier(ca)?),
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder
        .with_single_cert(t.cert_chain.clone(), t.key.clone_key())
        .map_err(|e| {
            fail(
                "server.tls.key",
                format!("certificate and key do not form a usable pair: {e}"),
            )
        })?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

fn client_verifier(
    ca: &ClientCa,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, ServerTlsError> {
    let mut roots = RootCertStore::empty();
    for (key, file, cert) in &ca.roots {
        roots.add(cert.clone()).map_err(|e| ServerTlsError {
            key: key.clone(),
            message: format!("unusable CA certificate in {file}: {e}"),
        })?;
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .with_crls(ca.crls.clone());
    let builder = match ca.mode {
        ClientAuthMode::Required => builder,
        ClientAuthMode::Optional => builder.allow_unauthenticated(),
    };
    builder.build().map_err(|e| ServerTlsError {
        key: "server.tls.client_auth".into(),
        message: format!("cannot build client verifier: {e}"),
    })
}

/// When each certificate the listener relies on stops being usable, as Unix seconds:
/// `server` (the leaf), `client_ca:<CN>` for each client CA, and `crl:<issuer CN>` for each
/// CRL's next update. Certificates that do not parse are left out (rustls refused them
/// already); a CN-less one is named by its position.
pub(crate) fn expiry(t: &ServerTls) -> Vec<(String, i64)> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    use x509_parser::revocation_list::CertificateRevocationList;
    let cn = |name: &x509_parser::x509::X509Name<'_>, i: usize| {
        name.iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok())
            .map_or_else(|| i.to_string(), str::to_string)
    };
    let mut out = Vec::new();
    if let Some(Ok((_, leaf))) = t.cert_chain.first().map(|c| X509Certificate::from_der(c)) {
        out.push(("server".to_string(), leaf.validity().not_after.timestamp()));
    }
    for (i, (_, _, der)) in t
        .client_ca
        .iter()
        .flat_map(|ca| ca.roots.iter())
        .enumerate()
    {
        if let Ok((_, c)) = X509Certificate::from_der(der) {
            out.push((
                format!("client_ca:{}", cn(c.subject(), i)),
                c.validity().not_after.timestamp(),
            ));
        }
    }
    for (i, crl) in t.client_ca.iter().flat_map(|ca| ca.crls.iter()).enumerate() {
        if let Ok((_, l)) = CertificateRevocationList::from_der(crl) {
            if let Some(next) = l.next_update() {
                out.push((format!("crl:{}", cn(l.issuer(), i)), next.timestamp()));
            }
        }
    }
    out
}

/// Why a client TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientTlsError {
    /// A configured CA certificate is not one rustls can use as a root.
    #[error("unusable CA certificate: {0}")]
    Ca(#[source] rustls::Error),
    /// The crypto provider refused the protocol versions.
    #[error("tls setup failed: {0}")]
    Setup(#[source] rustls::Error),
}

/// Client TLS config for upstreams and IdPs: the given roots, else webpki roots.
pub(crate) fn client_config(
    ca: Option<&[CertificateDer<'static>]>,
) -> Result<rustls::ClientConfig, ClientTlsError> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(certs) => {
            for c in certs {
                roots.add(c.clone()).map_err(ClientTlsError::Ca)?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    // No ALPN here: hyper-rustls sets it from the enabled HTTP versions.
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(ClientTlsError::Setup)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The texts are config problems users read; each names the file.
    #[test]
    fn pem_errors_keep_their_text() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = load_certs(&missing).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("cannot read {}: ", missing.display())),
            "{e}"
        );

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let shown = empty.display();
        assert_eq!(
            load_certs(&empty).unwrap_err().to_string(),
            format!("no certificate found in {shown}")
        );
        assert_eq!(
            load_crls(&empty).unwrap_err().to_string(),
            format!("no CRL found in {shown}")
        );
        let e = load_key(&empty).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("no usable private key in {shown}: ")),
            "{e}"
        );

        let bad = dir.path().join("bad.pem");
        std::fs::write(
            &bad,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n\
             -----BEGIN X509 CRL-----\n!!!!\n-----END X509 CRL-----\n",
        )
        .unwrap();
        let shown = bad.display();
        let e = load_certs(&bad).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("invalid PEM certificate in {shown}: ")),
            "{e}"
        );
        let e = load_crls(&bad).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("invalid PEM CRL in {shown}: ")),
            "{e}"
        );
    }
}
