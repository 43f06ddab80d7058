//! rustls configuration. Server side: certificate chain and key, TLS 1.2+ (or 1.3 only),
//! ALPN h2 + http/1.1, and for mTLS a webpki client verifier over the configured CAs and
//! CRLs (optional or required). Client side (upstreams, JWKS, introspection): webpki roots
//! or a configured CA. Everything is built at load time so a broken file fails the load.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use crate::config::{Problems, raw, resolve_path};

/// Reads every certificate from a PEM file.
pub(crate) fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let data = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("invalid PEM certificate in {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate found in {}", path.display()));
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) from a PEM file.
pub(crate) fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let data = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&data)
        .map_err(|e| format!("no usable private key in {}: {e}", path.display()))
}

/// Reads every CRL from a PEM file.
pub(crate) fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let data = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let crls: Vec<_> = CertificateRevocationListDer::pem_slice_iter(&data)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("invalid PEM CRL in {}: {e}", path.display()))?;
    if crls.is_empty() {
        return Err(format!("no CRL found in {}", path.display()));
    }
    Ok(crls)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Builds the public listener's rustls config from `[server.tls]`.
pub(crate) fn server_config_from_raw(
    problems: &mut Problems,
    dir: &Path,
    t: &raw::Tls,
) -> Option<rustls::ServerConfig> {
    let before = problems.len();
    let certs = match &t.cert {
        Some(c) => load_certs(&resolve_path(dir, c))
            .map_err(|e| problems.push("server.tls.cert", e))
            .ok(),
        None => {
            problems.push("server.tls.cert", "missing `cert` (PEM certificate chain)");
            None
        }
    };
    let key = match &t.key {
        Some(k) => load_key(&resolve_path(dir, k))
            .map_err(|e| problems.push("server.tls.key", e))
            .ok(),
        None => {
            problems.push("server.tls.key", "missing `key` (PEM private key)");
            None
        }
    };
    let versions: &[&'static rustls::SupportedProtocolVersion] = match t.min_version.as_deref() {
        None | Some("1.2") => &[&rustls::version::TLS13, &rustls::version::TLS12],
        Some("1.3") => &[&rustls::version::TLS13],
        Some(v) => {
            problems.push(
                "server.tls.min_version",
                format!("unsupported version \"{v}\": expected \"1.2\" or \"1.3\""),
            );
            &[&rustls::version::TLS13]
        }
    };
    let verifier = match &t.client_auth {
        None => None,
        Some(ca) => client_verifier(problems, dir, ca),
    };
    if problems.len() != before {
        return None;
    }
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .map_err(|e| problems.push("server.tls", format!("tls setup failed: {e}")))
        .ok()?;
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder
        .with_single_cert(certs?, key?)
        .map_err(|e| {
            problems.push(
                "server.tls.key",
                format!("certificate and key do not form a usable pair: {e}"),
            )
        })
        .ok()?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Some(cfg)
}

fn client_verifier(
    problems: &mut Problems,
    dir: &Path,
    ca: &raw::ClientAuth,
) -> Option<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
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
    let mut roots = RootCertStore::empty();
    for (i, f) in files.iter().enumerate() {
        let key = if matches!(ca.ca, Some(toml::Value::Array(_))) {
            format!("server.tls.client_auth.ca[{i}]")
        } else {
            "server.tls.client_auth.ca".to_string()
        };
        match load_certs(&resolve_path(dir, f)) {
            Ok(certs) => {
                for c in certs {
                    if let Err(e) = roots.add(c) {
                        problems.push(key.clone(), format!("unusable CA certificate in {f}: {e}"));
                    }
                }
            }
            Err(e) => problems.push(key, e),
        }
    }
    let mut crls = Vec::new();
    for (i, f) in ca.crls.iter().flatten().enumerate() {
        match load_crls(&resolve_path(dir, f)) {
            Ok(c) => crls.extend(c),
            Err(e) => problems.push(format!("server.tls.client_auth.crls[{i}]"), e),
        }
    }
    let builder =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider()).with_crls(crls);
    let builder = if ca.mode.as_deref() == Some("required") {
        builder
    } else {
        builder.allow_unauthenticated()
    };
    builder
        .build()
        .map_err(|e| {
            problems.push(
                "server.tls.client_auth",
                format!("cannot build client verifier: {e}"),
            )
        })
        .ok()
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
