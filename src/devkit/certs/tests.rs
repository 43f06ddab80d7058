//! Unit tests of `certs`.

use super::*;
use std::sync::Arc;

use rustls::pki_types::{ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use x509_parser::extensions::GeneralName;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn sans(der: &[u8]) -> Vec<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let Some(ext) = cert.subject_alternative_name().unwrap() else {
        return Vec::new();
    };
    ext.value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::DNSName(d) => format!("dns:{d}"),
            GeneralName::URI(u) => format!("uri:{u}"),
            GeneralName::RFC822Name(e) => format!("email:{e}"),
            GeneralName::IPAddress(ip) => format!("ip:{ip:?}"),
            other => format!("other:{other:?}"),
        })
        .collect()
}

fn eku(der: &[u8]) -> (bool, bool) {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let ext = cert.extended_key_usage().unwrap().unwrap();
    (ext.value.server_auth, ext.value.client_auth)
}

fn cn(der: &[u8]) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let cn = cert.subject().iter_common_name().next().unwrap();
    cn.as_str().unwrap().to_owned()
}

fn verifier(ca: &Ca, crl: &str) -> Arc<dyn rustls::server::danger::ClientCertVerifier> {
    let crl = CertificateRevocationListDer::from_pem_slice(crl.as_bytes()).unwrap();
    WebPkiClientVerifier::builder_with_provider(Arc::new(ca.root_store().unwrap()), provider())
        .with_crls([crl])
        .build()
        .unwrap()
}

fn verify_client(ca: &Ca, crl: &str, client: &Issued) -> Result<(), rustls::Error> {
    verifier(ca, crl)
        .verify_client_cert(
            &CertificateDer::from(client.cert_der.clone()),
            &[],
            UnixTime::now(),
        )
        .map(|_| ())
}

#[test]
fn server_cert_has_dns_and_ip_sans_and_server_auth() {
    let ca = Ca::new("test CA").unwrap();
    let hosts = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let server = ca.server(&hosts).unwrap();
    assert_eq!(
        sans(&server.cert_der),
        vec![
            "dns:localhost",
            "ip:[127, 0, 0, 1]",
            "ip:[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]"
        ]
    );
    assert_eq!(eku(&server.cert_der), (true, false));
    assert_eq!(cn(&server.cert_der), "localhost");
    let (_, cert) = x509_parser::parse_x509_certificate(&server.cert_der).unwrap();
    assert!(!cert.is_ca());
    assert!(cert.validity().is_valid());
}

#[test]
fn rejects_server_cert_without_hosts() {
    let ca = Ca::new("test CA").unwrap();
    assert!(matches!(ca.server(&[]), Err(CertError::NoHosts)));
}

#[test]
fn rejects_non_ascii_dns_name() {
    let ca = Ca::new("test CA").unwrap();
    let err = ca.server(&["bücher.example".to_owned()]).unwrap_err();
    assert!(
        err.to_string()
            .contains("invalid dns subject alternative name")
    );
}

#[test]
fn client_cert_has_requested_sans_validity_and_client_auth() {
    let ca = Ca::new("test CA").unwrap();
    let mut spec = ClientSpec::new("alice");
    spec.uris = vec!["spiffe://example.org/ns/prod/sa/alice".to_owned()];
    spec.dns = vec!["alice.internal".to_owned()];
    spec.emails = vec!["alice@example.org".to_owned()];
    spec.serial = Some(4242);
    let client = ca.client(&spec).unwrap();
    assert_eq!(
        sans(&client.cert_der),
        vec![
            "uri:spiffe://example.org/ns/prod/sa/alice",
            "dns:alice.internal",
            "email:alice@example.org"
        ]
    );
    assert_eq!(eku(&client.cert_der), (false, true));
    assert_eq!(cn(&client.cert_der), "alice");
    let (_, cert) = x509_parser::parse_x509_certificate(&client.cert_der).unwrap();
    assert_eq!(cert.raw_serial_as_string(), "10:92"); // 4242
    let validity = cert.validity();
    assert_eq!(
        validity.not_before.timestamp(),
        spec.not_before.unix_timestamp()
    );
    assert_eq!(
        validity.not_after.timestamp(),
        spec.not_after.unix_timestamp()
    );
}

#[test]
fn wrong_usage_client_cert_has_server_auth_only() {
    let ca = Ca::new("test CA").unwrap();
    let mut spec = ClientSpec::new("mallory");
    spec.client_auth_usage = false;
    let client = ca.client(&spec).unwrap();
    assert_eq!(eku(&client.cert_der), (true, false));
}

#[test]
fn rejects_zero_serial() {
    let ca = Ca::new("test CA").unwrap();
    let mut spec = ClientSpec::new("zero");
    spec.serial = Some(0);
    assert!(matches!(ca.client(&spec), Err(CertError::ZeroSerial)));
}

#[test]
fn ca_has_cert_sign_and_crl_sign_usage() {
    let ca = Ca::new("test CA").unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(ca.cert_der()).unwrap();
    assert!(cert.is_ca());
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.key_cert_sign());
    assert!(ku.crl_sign());
    assert_eq!(cn(ca.cert_der()), "test CA");
}

#[test]
fn verifier_admits_valid_client_cert() {
    let ca = Ca::new("test CA").unwrap();
    let client = ca.client(&ClientSpec::new("alice")).unwrap();
    let crl = ca.crl(&[]).unwrap();
    verify_client(&ca, &crl, &client).unwrap();
}

#[test]
fn verifier_rejects_revoked_client_cert() {
    let ca = Ca::new("test CA").unwrap();
    let mut spec = ClientSpec::new("revoked");
    spec.serial = Some(77);
    let revoked = ca.client(&spec).unwrap();
    spec.serial = Some(78);
    let fine = ca.client(&spec).unwrap();
    let crl = ca.crl(&[77]).unwrap();
    let err = verify_client(&ca, &crl, &revoked).unwrap_err();
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked)
        ),
        "{err:?}"
    );
    verify_client(&ca, &crl, &fine).unwrap();
}

#[test]
fn verifier_rejects_wrong_usage_client_cert() {
    let ca = Ca::new("test CA").unwrap();
    let mut spec = ClientSpec::new("server-ish");
    spec.client_auth_usage = false;
    let client = ca.client(&spec).unwrap();
    let crl = ca.crl(&[]).unwrap();
    assert!(verify_client(&ca, &crl, &client).is_err());
}

#[test]
fn verifier_rejects_expired_client_cert() {
    let ca = Ca::new("test CA").unwrap();
    let mut spec = ClientSpec::new("old");
    let now = OffsetDateTime::now_utc();
    spec.not_before = now - Duration::days(10);
    spec.not_after = now - Duration::days(1);
    let client = ca.client(&spec).unwrap();
    let crl = ca.crl(&[]).unwrap();
    let err = verify_client(&ca, &crl, &client).unwrap_err();
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(rustls::CertificateError::Expired)
                | rustls::Error::InvalidCertificate(
                    rustls::CertificateError::ExpiredContext { .. }
                )
        ),
        "{err:?}"
    );
}

#[test]
fn verifier_rejects_cert_from_other_ca() {
    let ca = Ca::new("test CA").unwrap();
    let other = Ca::new("other CA").unwrap();
    let client = other.client(&ClientSpec::new("alice")).unwrap();
    let crl = ca.crl(&[]).unwrap();
    assert!(verify_client(&ca, &crl, &client).is_err());
}

#[test]
fn loaded_ca_issues_certs_and_crls_that_verify() {
    let original = Ca::new("test CA").unwrap();
    let ca = Ca::load(original.cert_pem(), &original.key_pem()).unwrap();
    assert_eq!(ca.cert_der(), original.cert_der());
    let mut spec = ClientSpec::new("bob");
    spec.serial = Some(9);
    let client = ca.client(&spec).unwrap();
    // The original CA's trust anchor and the loaded CA's CRL work together.
    verify_client(&original, &ca.crl(&[]).unwrap(), &client).unwrap();
    assert!(verify_client(&original, &ca.crl(&[9]).unwrap(), &client).is_err());
}

#[test]
fn load_rejects_mismatched_key() {
    let a = Ca::new("a").unwrap();
    let b = Ca::new("b").unwrap();
    assert!(matches!(
        Ca::load(a.cert_pem(), &b.key_pem()),
        Err(CertError::KeyMismatch)
    ));
}

#[test]
fn load_rejects_leaf_certificate() {
    let ca = Ca::new("a").unwrap();
    let leaf = ca.server(&["localhost".to_owned()]).unwrap();
    assert!(matches!(
        Ca::load(&leaf.cert_pem, &leaf.key_pem),
        Err(CertError::BadCaCert(_))
    ));
}

#[test]
fn debug_redacts_keys() {
    let ca = Ca::new("a").unwrap();
    let leaf = ca.server(&["localhost".to_owned()]).unwrap();
    assert!(!format!("{ca:?}").contains("PRIVATE KEY"));
    assert!(!format!("{leaf:?}").contains("PRIVATE KEY"));
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "portcullis-certs-{tag}-{}-{}",
        std::process::id(),
        OffsetDateTime::now_utc().unix_timestamp_nanos()
    ));
    let _ = fs::remove_dir_all(&dir);
    dir
}

#[test]
fn write_dev_set_writes_all_files_with_private_keys_0600() {
    let dir = temp_dir("devset");
    let out = dir.join("nested");
    write_dev_set(
        &out,
        &["localhost".to_owned(), "127.0.0.1".to_owned()],
        "demo-client",
        &["spiffe://demo/client".to_owned()],
    )
    .unwrap();
    for file in [
        "ca.crt",
        "ca.key",
        "server.crt",
        "server.key",
        "client.crt",
        "client.key",
    ] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        for key in ["ca.key", "server.key", "client.key"] {
            let mode = fs::metadata(out.join(key)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
    }
    let ca = Ca::load(
        &fs::read_to_string(out.join("ca.crt")).unwrap(),
        &fs::read_to_string(out.join("ca.key")).unwrap(),
    )
    .unwrap();
    let client_der = CertificateDer::from_pem_file(out.join("client.crt")).unwrap();
    assert_eq!(sans(&client_der), vec!["uri:spiffe://demo/client"]);
    assert_eq!(cn(&client_der), "demo-client");
    let server_der = CertificateDer::from_pem_file(out.join("server.crt")).unwrap();
    assert_eq!(
        sans(&server_der),
        vec!["dns:localhost", "ip:[127, 0, 0, 1]"]
    );

    write_client(&out, &ca, "svc-b", &["spiffe://demo/b".to_owned()]).unwrap();
    let b = CertificateDer::from_pem_file(out.join("svc-b.crt")).unwrap();
    assert_eq!(sans(&b), vec!["uri:spiffe://demo/b"]);
    assert_eq!(cn(&b), "svc-b");
    assert!(out.join("svc-b.key").is_file());
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn write_client_rejects_path_like_names() {
    let ca = Ca::new("a").unwrap();
    let dir = temp_dir("badname");
    for bad in ["", "../x", "a/b", ".hidden", "a b", "..", "x\\y"] {
        assert!(
            matches!(
                write_client(&dir, &ca, bad, &[]),
                Err(CertError::InvalidName(_))
            ),
            "{bad:?}"
        );
    }
    assert!(!dir.exists());
}

#[tokio::test]
async fn mutual_tls_handshake_over_loopback() {
    let ca = Ca::new("test CA").unwrap();
    let server = ca.server(&["localhost".to_owned()]).unwrap();
    let mut spec = ClientSpec::new("alice");
    spec.uris = vec!["spiffe://example.org/alice".to_owned()];
    let client = ca.client(&spec).unwrap();

    let server_config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier(&ca, &ca.crl(&[]).unwrap()))
        .with_single_cert(server.cert_chain(), server.private_key().unwrap())
        .unwrap();
    let client_config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(ca.root_store().unwrap())
        .with_client_auth_cert(client.cert_chain(), client.private_key().unwrap())
        .unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.unwrap();
        let peer = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.unwrap();
        tls.write_all(&buf).await.unwrap();
        tls.shutdown().await.unwrap();
        peer
    });

    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(b"ping").await.unwrap();
    let mut back = Vec::new();
    tls.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"ping");
    let peer = server_task.await.unwrap();
    assert_eq!(peer, client.cert_der);
}
