//! Client certificates: the handshake (optional / required, CRLs, expiry, wrong CA, wrong
//! usage), the `mtls` allow-list in every form, the XFCC header the upstream sees,
//! combinations with other methods, HTTP/2, and certificate rotation by reload.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis::certs::{Ca, ClientSpec, Issued};
use time::OffsetDateTime;

use crate::support::{Gateway, PUBLIC, Pki, eventually, gateway};

const OPTIONAL: &str = "[server.tls.client_auth]\nca = \"{dir}/ca.crt\"\nmode = \"optional\"";
const REQUIRED: &str = "[server.tls.client_auth]\nca = \"{dir}/ca.crt\"\nmode = \"required\"";

/// The allow-list forms: the authenticator, its one allow-list entry, and the route
/// (name, path prefix) it guards.
const FORMS: [(&str, &str, &str, &str); 8] = [
    ("by_cn", "CN=billing", "cn", "/cn"),
    ("by_dns", "DNS:reports.internal", "dns", "/dns"),
    (
        "by_dns_wildcard",
        "DNS:*.svc.internal",
        "dns-wildcard",
        "/dnswild",
    ),
    ("by_uri", "URI:spiffe://example.org/billing", "uri", "/uri"),
    (
        "by_uri_wildcard",
        "URI:spiffe://example.org/ns/prod/*",
        "uri-wildcard",
        "/uriwild",
    ),
    ("by_email", "EMAIL:ops@example.org", "email", "/email"),
    ("by_pin", "SHA256:{pin}", "pin", "/pin"),
    ("any_cert", "*", "any-cert", "/anycert"),
];

/// The public route, one route per allow-list form (`pin` is the fingerprint `by_pin`
/// allows), and `all` and `either` over `by_uri` and `public`.
fn allow_config(pin: &str) -> String {
    let mut body = PUBLIC.to_string();
    for (authenticator, allow, route, prefix) in FORMS {
        let allow = allow.replace("{pin}", pin);
        body.push_str(&format!(
            r#"
[authenticators.{authenticator}]
kind = "mtls"
allow = ["{allow}"]

[[routes]]
name = "{route}"
match = {{ path_prefix = "{prefix}" }}
upstream = "echo"
auth = "{authenticator}"
"#
        ));
    }
    body.push_str(
        r#"
[[routes]]
name = "all"
match = { path_prefix = "/all" }
upstream = "echo"
auth = { all = ["by_uri", "public"] }

[[routes]]
name = "either"
match = { path_prefix = "/either" }
upstream = "echo"
auth = { any = ["by_uri", "public"] }
"#,
    );
    body
}

fn spec(cn: &str) -> ClientSpec {
    ClientSpec::new(cn)
}

fn issue(pki: &Pki, f: impl FnOnce(&mut ClientSpec)) -> Issued {
    let mut s = spec("client");
    f(&mut s);
    pki.ca.client(&s).unwrap()
}

fn fingerprint(id: &Issued) -> String {
    use sha2::Digest;
    // Upper case with colons, as `openssl x509 -fingerprint -sha256` prints it.
    sha2::Sha256::digest(&id.cert_der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A gateway with the allow-list routes, an optional listener and a pinned certificate.
async fn allow_gateway() -> (Gateway, Issued) {
    let pki = Pki::new();
    let pinned = issue(&pki, |s| s.common_name = "pinned".into());
    let body = allow_config(&fingerprint(&pinned));
    let gw = gateway(&body).tls_extra(OPTIONAL).pki(pki).start().await;
    (gw, pinned)
}

async fn status(gw: &Gateway, id: &Issued, path: &str) -> StatusCode {
    gw.mtls_client(id, false).get(path).await.status
}

async fn handshake_errors(gw: &Gateway, reason: &str) -> f64 {
    gw.metric(&format!(
        "portcullis_tls_handshake_errors_total{{reason=\"{reason}\"}}"
    ))
    .await
}

/// The request fails at the TLS layer (no HTTP response) and the failure is counted
/// under `reason`.
async fn assert_handshake_refused(gw: &Gateway, id: Option<&Issued>, reason: &str) {
    let before = handshake_errors(gw, reason).await;
    let client = match id {
        Some(id) => gw.mtls_client(id, false),
        None => gw.client(),
    };
    let r = client
        .try_send(http::Method::GET, "/anycert", &[], Bytes::new())
        .await;
    assert!(
        r.is_err(),
        "expected a failed handshake, got {:?}",
        r.map(|r| r.status)
    );
    eventually(&format!("handshake error {reason} counted"), async || {
        handshake_errors(gw, reason).await > before
    })
    .await;
}

// ---------------------------------------------------------------- handshake

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admits_valid_certificate_on_optional_listener() {
    let (gw, _) = allow_gateway().await;
    let id = gw.pki.client("billing");
    let r = gw.mtls_client(&id, false).get("/anycert/x").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-auth-method").as_deref(), Some("mtls"));
    assert_eq!(
        r.upstream_header("x-auth-subject").as_deref(),
        Some("billing")
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_401_without_certificate_on_optional_listener() {
    let (gw, _) = allow_gateway().await;
    let r = gw.client().get("/anycert/x").await;
    assert_eq!(r.status, 401);
    assert!(r.headers.get("www-authenticate").is_none());
    // Public routes on the same listener still work without a certificate.
    assert_eq!(gw.client().get("/public").await.status, 200);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admits_valid_certificate_on_required_listener() {
    let gw = gateway(&allow_config(&"ab".repeat(32)))
        .tls_extra(REQUIRED)
        .start()
        .await;
    let id = gw.pki.client("billing");
    let r = gw.mtls_client(&id, false).get("/cn").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.upstream_header("x-auth-subject").as_deref(),
        Some("billing")
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_handshake_without_certificate_on_required_listener() {
    let gw = gateway(&allow_config(&"ab".repeat(32)))
        .tls_extra(REQUIRED)
        .start()
        .await;
    assert_handshake_refused(&gw, None, "no_client_cert").await;
    // Even the public route is unreachable: the handshake is the gate.
    assert!(
        gw.client()
            .try_send(http::Method::GET, "/public", &[], Bytes::new())
            .await
            .is_err()
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_admits_certificate_from_untrusted_ca() {
    let (gw, _) = allow_gateway().await;
    let other = Ca::new("someone else's CA").unwrap();
    let id = other.client(&spec("billing")).unwrap();
    assert_handshake_refused(&gw, Some(&id), "client_cert_untrusted").await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_admits_expired_certificate() {
    let (gw, _) = allow_gateway().await;
    let now = OffsetDateTime::now_utc();
    let id = issue(&gw.pki, |s| {
        s.common_name = "billing".into();
        s.not_before = now - time::Duration::days(30);
        s.not_after = now - time::Duration::days(1);
    });
    assert_handshake_refused(&gw, Some(&id), "client_cert_expired").await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_admits_not_yet_valid_certificate() {
    let (gw, _) = allow_gateway().await;
    let now = OffsetDateTime::now_utc();
    let id = issue(&gw.pki, |s| {
        s.common_name = "billing".into();
        s.not_before = now + time::Duration::days(1);
        s.not_after = now + time::Duration::days(30);
    });
    assert_handshake_refused(&gw, Some(&id), "client_cert_not_yet_valid").await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_admits_certificate_without_client_auth_usage() {
    let (gw, _) = allow_gateway().await;
    let id = issue(&gw.pki, |s| {
        s.common_name = "billing".into();
        s.client_auth_usage = false;
    });
    assert_handshake_refused(&gw, Some(&id), "client_cert_wrong_usage").await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_admits_revoked_certificate() {
    let pki = Pki::new();
    let revoked = issue(&pki, |s| {
        s.common_name = "billing".into();
        s.serial = Some(4242);
    });
    let good = issue(&pki, |s| {
        s.common_name = "billing".into();
        s.serial = Some(4243);
    });
    let crl_dir = tempfile::tempdir().unwrap();
    let crl = crl_dir.path().join("ca.crl");
    std::fs::write(&crl, pki.ca.crl(&[4242]).unwrap()).unwrap();
    let tls = format!("{OPTIONAL}\ncrls = [\"{}\"]", crl.display());
    let gw = gateway(&allow_config(&"ab".repeat(32)))
        .tls_extra(&tls)
        .pki(pki)
        .start()
        .await;
    assert_eq!(status(&gw, &good, "/cn").await, 200);
    assert_handshake_refused(&gw, Some(&revoked), "client_cert_revoked").await;
    // The client CA's expiry and the CRL's next update are exported for alerting.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for cert in ["client_ca:portcullis test CA", "crl:portcullis test CA"] {
        let at = gw
            .metric(&format!(
                "portcullis_certificate_expiry_timestamp_seconds{{cert=\"{cert}\"}}"
            ))
            .await;
        assert!(at > now, "{cert}: {at}");
    }
    gw.shutdown().await;
}

// ---------------------------------------------------------------- allow-list

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admits_listed_common_name() {
    let (gw, _) = allow_gateway().await;
    assert_eq!(status(&gw, &gw.pki.client("billing"), "/cn").await, 200);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_unlisted_common_name() {
    let (gw, _) = allow_gateway().await;
    let r = gw
        .mtls_client(&gw.pki.client("Billing"), false)
        .get("/cn")
        .await;
    assert_eq!(r.status, 403);
    assert!(r.headers.get("www-authenticate").is_none());
    assert_eq!(status(&gw, &gw.pki.client("billing2"), "/cn").await, 403);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admits_listed_dns_name() {
    let (gw, _) = allow_gateway().await;
    let id = issue(&gw.pki, |s| s.dns = vec!["Reports.Internal".into()]);
    let r = gw.mtls_client(&id, false).get("/dns").await;
    assert_eq!(r.status, 200);
    // No URI SAN: the subject is the CN.
    assert_eq!(
        r.upstream_header("x-auth-subject").as_deref(),
        Some("client")
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_unlisted_dns_name() {
    let (gw, _) = allow_gateway().await;
    let id = issue(&gw.pki, |s| s.dns = vec!["reports.internal.evil".into()]);
    assert_eq!(status(&gw, &id, "/dns").await, 403);
    // A CN that looks like the DNS name is not a DNS SAN.
    assert_eq!(
        status(&gw, &gw.pki.client("reports.internal"), "/dns").await,
        403
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admits_dns_wildcard_with_one_extra_label() {
    let (gw, _) = allow_gateway().await;
    let id = issue(&gw.pki, |s| s.dns = vec!["orders.svc.internal".into()]);
    assert_eq!(status(&gw, &id, "/dnswild").await, 200);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_dns_wildcard_with_two_extra_labels_or_none() {
    let (gw, _) = allow_gateway().await;
    let deep = issue(&gw.pki, |s| s.dns = vec!["a.orders.svc.internal".into()]);
    assert_eq!(status(&gw, &deep, "/dnswild").await, 403);
    let bare = issue(&gw.pki, |s| s.dns = vec!["svc.internal".into()]);
    assert_eq!(status(&gw, &bare, "/dnswild").await, 403);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admits_listed_spiffe_uri() {
    let (gw, _) = allow_gateway().await;
    let id = issue(&gw.pki, |s| {
        s.common_name = "ignored-cn".into();
        s.uris = vec![
            "spiffe://example.org/billing".into(),
            "spiffe://example.org/other".into(),
        ];
    });
    let r = gw.mtls_client(&id, false).get("/uri").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.upstream_header("x-auth-subject").as_deref(),
        Some("spiffe://example.org/billing")
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_unlisted_spiffe_uri() {
    let (gw, _) = allow_gateway().await;
    let id = issue(&gw.pki, |s| {
        s.common_name = "billing".into();
        s.uris = vec!["spiffe://example.org/billing-admin".into()];
    });
    assert_eq!(status(&gw, &id, "/uri").await, 403);
    let other_domain = issue(&gw.pki, |s| {
        s.uris = vec!["spiffe://evil.org/billing".into()]
    });
    assert_eq!(status(&gw, &other_domain, "/uri").await, 403);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admits_spiffe_uri_under_wildcard_path() {
    let (gw, _) = allow_gateway().await;
    for uri in [
        "spiffe://example.org/ns/prod/sa/orders",
        "spiffe://example.org/ns/prod/billing",
    ] {
        let id = issue(&gw.pki, |s| s.uris = vec![uri.into()]);
        let r = gw.mtls_client(&id, false).get("/uriwild").await;
        assert_eq!(r.status, 200, "{uri}");
        assert_eq!(r.upstream_header("x-auth-subject").as_deref(), Some(uri));
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_spiffe_uri_outside_wildcard_path() {
    let (gw, _) = allow_gateway().await;
    for uri in [
        "spiffe://example.org/ns/prod",
        "spiffe://example.org/ns/prod/",
        "spiffe://example.org/ns/production/a",
        "spiffe://example.org/ns/prod/../admin",
        "spiffe://example.org/ns/staging/a",
    ] {
        let id = issue(&gw.pki, |s| s.uris = vec![uri.into()]);
        assert_eq!(status(&gw, &id, "/uriwild").await, 403, "{uri}");
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admits_listed_email() {
    let (gw, _) = allow_gateway().await;
    let id = issue(&gw.pki, |s| s.emails = vec!["ops@Example.org".into()]);
    assert_eq!(status(&gw, &id, "/email").await, 200);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_unlisted_email() {
    let (gw, _) = allow_gateway().await;
    let id = issue(&gw.pki, |s| s.emails = vec!["dev@example.org".into()]);
    assert_eq!(status(&gw, &id, "/email").await, 403);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admits_pinned_fingerprint() {
    let (gw, pinned) = allow_gateway().await;
    let r = gw.mtls_client(&pinned, false).get("/pin").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.upstream_header("x-auth-subject").as_deref(),
        Some("pinned")
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_other_certificate_with_same_name_on_pin() {
    let (gw, _) = allow_gateway().await;
    // Same CA, same CN, different key: not the pinned certificate.
    let twin = issue(&gw.pki, |s| s.common_name = "pinned".into());
    assert_eq!(status(&gw, &twin, "/pin").await, 403);
    gw.shutdown().await;
}

// ---------------------------------------------------------------- XFCC and spoofing

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_envoy_xfcc_with_escaped_subject() {
    let (gw, _) = allow_gateway().await;
    let id = issue(&gw.pki, |s| {
        s.common_name = r#"Smith, "Bob""#.into();
        s.uris = vec![
            "spiffe://example.org/billing".into(),
            "spiffe://example.org/billing-v2".into(),
        ];
        s.dns = vec!["a.internal".into(), "b.internal".into()];
    });
    let hash = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&id.cert_der))
    };
    let r = gw.mtls_client(&id, false).get("/uri").await;
    assert_eq!(r.status, 200);
    let expected = format!(
        r#"Hash={hash};Subject="CN=Smith\\, \\\"Bob\\\"";URI=spiffe://example.org/billing;URI=spiffe://example.org/billing-v2;DNS=a.internal;DNS=b.internal"#
    );
    assert_eq!(
        r.upstream_headers("x-forwarded-client-cert"),
        vec![expected]
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaces_spoofed_xfcc_and_identity_headers() {
    let (gw, _) = allow_gateway().await;
    let id = issue(&gw.pki, |s| {
        s.common_name = "billing".into();
        s.uris = vec!["spiffe://example.org/billing".into()];
    });
    let spoof = [
        (
            "x-forwarded-client-cert",
            "Hash=00;Subject=\"CN=admin\";URI=spiffe://example.org/admin",
        ),
        ("x-auth-subject", "admin"),
        ("x-auth-method", "basic"),
    ];
    let r = gw.mtls_client(&id, false).get_with("/uri", &spoof).await;
    assert_eq!(r.status, 200);
    let xfcc = r.upstream_headers("x-forwarded-client-cert");
    assert_eq!(xfcc.len(), 1);
    assert!(
        xfcc[0].starts_with("Hash=") && !xfcc[0].contains("admin"),
        "{xfcc:?}"
    );
    assert_eq!(
        r.upstream_headers("x-auth-subject"),
        vec!["spiffe://example.org/billing".to_string()]
    );
    assert_eq!(
        r.upstream_headers("x-auth-method"),
        vec!["mtls".to_string()]
    );
    // Without a certificate, a spoofed XFCC never reaches the upstream.
    let r = gw.client().get_with("/public", &spoof).await;
    assert_eq!(r.status, 200);
    assert!(r.upstream_headers("x-forwarded-client-cert").is_empty());
    assert!(r.upstream_headers("x-auth-subject").is_empty());
    gw.shutdown().await;
}

// ---------------------------------------------------------------- combinations

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_of_mtls_and_none_lists_both_methods() {
    let (gw, _) = allow_gateway().await;
    let id = issue(&gw.pki, |s| {
        s.uris = vec!["spiffe://example.org/billing".into()]
    });
    let r = gw.mtls_client(&id, false).get("/all").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.upstream_header("x-auth-method").as_deref(),
        Some("mtls,none")
    );
    assert_eq!(
        r.upstream_header("x-auth-subject").as_deref(),
        Some("spiffe://example.org/billing")
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_of_refuses_missing_or_unlisted_certificate() {
    let (gw, _) = allow_gateway().await;
    assert_eq!(gw.client().get("/all").await.status, 401);
    let id = issue(&gw.pki, |s| {
        s.uris = vec!["spiffe://example.org/other".into()]
    });
    assert_eq!(status(&gw, &id, "/all").await, 403);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_of_uses_certificate_first_then_falls_back() {
    let (gw, _) = allow_gateway().await;
    let id = issue(&gw.pki, |s| {
        s.uris = vec!["spiffe://example.org/billing".into()]
    });
    let r = gw.mtls_client(&id, false).get("/either").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-auth-method").as_deref(), Some("mtls"));
    let r = gw.client().get("/either").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-auth-method").as_deref(), Some("none"));
    assert!(r.upstream_header("x-auth-subject").is_none());
    gw.shutdown().await;
}

// ---------------------------------------------------------------- HTTP/2

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_http2_requests_on_mtls_connection() {
    let (gw, _) = allow_gateway().await;
    let id = issue(&gw.pki, |s| {
        s.uris = vec!["spiffe://example.org/billing".into()]
    });
    let mut conn = H2Conn::connect(&gw, &gw.pki.ca, &id).await;
    for _ in 0..3 {
        let (status, body) = conn.get("/uri").await;
        assert_eq!(status, 200);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let subject = v["headers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p[0] == "x-auth-subject")
            .map(|p| p[1].clone());
        assert_eq!(subject, Some("spiffe://example.org/billing".into()));
    }
    assert_eq!(conn.get("/cn").await.0, 403);
    gw.shutdown().await;
}

// ---------------------------------------------------------------- reload

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotates_certificates_on_reload_while_keepalive_connection_stays_up() {
    let (gw, _) = allow_gateway().await;
    let old_id = gw.pki.client("billing");
    let mut old_conn = H1Conn::connect(&gw, &gw.pki.ca, Some(&old_id))
        .await
        .unwrap();
    assert_eq!(old_conn.get("/cn").await.0, 200);

    // New CA for both the server certificate and client certificates.
    let next = Pki::new();
    let new_id = next.client("billing");
    let dir = gw.dir.path();
    std::fs::write(dir.join("server.crt"), &next.server.cert_pem).unwrap();
    std::fs::write(dir.join("server.key"), &next.server.key_pem).unwrap();
    std::fs::write(dir.join("ca.crt"), next.ca.cert_pem()).unwrap();
    gw.reload().await.unwrap();

    // The existing connection keeps working.
    assert_eq!(old_conn.get("/cn").await.0, 200);
    // New handshakes present the new server certificate and trust only the new CA.
    let mut fresh = H1Conn::connect(&gw, &next.ca, Some(&new_id)).await.unwrap();
    assert_eq!(fresh.get("/cn").await.0, 200);
    assert!(
        H1Conn::connect(&gw, &gw.pki.ca, Some(&old_id))
            .await
            .is_err(),
        "the old server certificate is no longer served"
    );
    // A client certificate from the old CA is refused (with TLS 1.3 the client learns it
    // on its first read, with TLS 1.2 during the handshake).
    if let Ok(mut stale) = H1Conn::connect(&gw, &next.ca, Some(&old_id)).await {
        assert!(
            stale.try_get("/cn").await.is_err(),
            "old client CA still trusted"
        );
    }

    // A broken certificate file rejects the reload and keeps the new material.
    std::fs::write(
        dir.join("server.crt"),
        "-----BEGIN CERTIFICATE-----\nnot base64\n",
    )
    .unwrap();
    assert!(gw.reload().await.is_err());
    assert_eq!(
        gw.metric("portcullis_config_reloads_total{result=\"failure\"}")
            .await,
        1.0
    );
    let mut after = H1Conn::connect(&gw, &next.ca, Some(&new_id)).await.unwrap();
    assert_eq!(after.get("/cn").await.0, 200);
    assert_eq!(old_conn.get("/cn").await.0, 200);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_picks_up_new_crl() {
    let pki = Pki::new();
    let id = issue(&pki, |s| {
        s.common_name = "billing".into();
        s.serial = Some(77);
    });
    let crl_dir = tempfile::tempdir().unwrap();
    let crl = crl_dir.path().join("ca.crl");
    std::fs::write(&crl, pki.ca.crl(&[]).unwrap()).unwrap();
    let tls = format!("{OPTIONAL}\ncrls = [\"{}\"]", crl.display());
    let gw = gateway(&allow_config(&"ab".repeat(32)))
        .tls_extra(&tls)
        .pki(pki)
        .start()
        .await;
    let mut kept = H1Conn::connect(&gw, &gw.pki.ca, Some(&id)).await.unwrap();
    assert_eq!(kept.get("/cn").await.0, 200);
    std::fs::write(&crl, gw.pki.ca.crl(&[77]).unwrap()).unwrap();
    gw.reload().await.unwrap();
    assert_handshake_refused(&gw, Some(&id), "client_cert_revoked").await;
    // Connections established before the revocation are not torn down by a reload.
    assert_eq!(kept.get("/cn").await.0, 200);
    gw.shutdown().await;
}

// ---------------------------------------------------------------- config

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_mtls_authenticator_without_client_auth() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    std::fs::write(dir.path().join("s.crt"), &pki.server.cert_pem).unwrap();
    std::fs::write(dir.path().join("s.key"), &pki.server.key_pem).unwrap();
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n\n[server.tls]\ncert = \"{d}/s.crt\"\nkey = \"{d}/s.key\"\n\n\
         [upstreams.echo]\ntargets = [\"http://127.0.0.1:1\"]\n\n\
         [authenticators.svc]\nkind = \"mtls\"\nallow = [\"CN=a\", \"IP:10.0.0.1\"]\n\n\
         [authenticators.empty]\nkind = \"mtls\"\nallow = []\n\n\
         [[routes]]\nname = \"r\"\nmatch = {{ path_prefix = \"/\" }}\nupstream = \"echo\"\nauth = \"svc\"\n",
        d = dir.path().display()
    );
    let path = dir.path().join("p.toml");
    std::fs::write(&path, &text).unwrap();
    let err = portcullis::config::load(&path).err().unwrap().to_string();
    assert!(
        err.contains("authenticators.svc.kind: kind \"mtls\" needs client certificates"),
        "{err}"
    );
    assert!(
        err.contains(":13: authenticators.svc.allow[1]: unknown allow entry \"IP:10.0.0.1\""),
        "{err}"
    );
    assert!(
        err.contains("authenticators.empty.allow: an mtls authenticator needs a non-empty"),
        "{err}"
    );
}

// ---------------------------------------------------------------- helpers

/// One HTTP/1.1 keep-alive connection over TLS, so tests can prove connection reuse.
struct H1Conn {
    send: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    host: String,
}

impl H1Conn {
    async fn connect(gw: &Gateway, trust: &Ca, id: Option<&Issued>) -> Result<Self, String> {
        let tls = gw
            .tls_connect(trust, id, &[b"http/1.1"])
            .await
            .map_err(|e| e.to_string())?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        Ok(H1Conn {
            send,
            host: format!("localhost:{}", gw.addr.port()),
        })
    }

    async fn try_get(&mut self, path: &str) -> Result<(StatusCode, Bytes), String> {
        let req = Request::get(path)
            .header("host", &self.host)
            .body(Empty::new())
            .unwrap();
        self.send.ready().await.map_err(|e| e.to_string())?;
        let resp = self
            .send
            .send_request(req)
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok((status, body.to_bytes()))
    }

    async fn get(&mut self, path: &str) -> (StatusCode, Bytes) {
        self.try_get(path).await.unwrap()
    }
}

/// One HTTP/2 connection (ALPN h2) over TLS.
struct H2Conn {
    send: hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    authority: String,
}

impl H2Conn {
    async fn connect(gw: &Gateway, trust: &Ca, id: &Issued) -> Self {
        let tls = gw.tls_connect(trust, Some(id), &[b"h2"]).await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        H2Conn {
            send,
            authority: format!("localhost:{}", gw.addr.port()),
        }
    }

    async fn get(&mut self, path: &str) -> (StatusCode, Bytes) {
        let req = Request::get(format!("https://{}{path}", self.authority))
            .version(http::Version::HTTP_2)
            .body(Empty::new())
            .unwrap();
        self.send.ready().await.unwrap();
        let resp = self.send.send_request(req).await.unwrap();
        assert_eq!(resp.version(), http::Version::HTTP_2);
        let status = resp.status();
        (status, resp.into_body().collect().await.unwrap().to_bytes())
    }
}
