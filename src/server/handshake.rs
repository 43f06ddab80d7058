//! The first bytes of a public connection: the TLS handshake's failures classified for
//! the metric (and a rate-limited log line), and on a plaintext listener the protocol
//! sniffed under a deadline.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpStream;

/// Classifies a failed handshake for `portcullis_tls_handshake_errors_total{reason}` by
/// the rustls error tokio-rustls wraps in the `io::Error` (never by message text).
/// The reasons are listed in `metrics::HANDSHAKE_REASONS`.
pub(super) fn handshake_reason(e: &std::io::Error) -> &'static str {
    use rustls::{CertificateError as C, Error as E};
    let Some(err) = e.get_ref().and_then(|i| i.downcast_ref::<E>()) else {
        return "handshake";
    };
    match err {
        E::NoCertificatesPresented => "no_client_cert",
        E::InvalidCertificate(c) => match c {
            C::Expired | C::ExpiredContext { .. } => "client_cert_expired",
            C::NotValidYet | C::NotValidYetContext { .. } => "client_cert_not_yet_valid",
            C::Revoked => "client_cert_revoked",
            C::UnknownIssuer => "client_cert_untrusted",
            C::InvalidPurpose | C::InvalidPurposeContext { .. } => "client_cert_wrong_usage",
            _ => "bad_client_cert",
        },
        E::InvalidCertRevocationList(_) => "bad_client_cert",
        E::AlertReceived(_) => "alert_received",
        _ => "handshake",
    }
}

/// Lets at most `HANDSHAKE_LOG_BURST` handshake-failure lines through per second, so a
/// scan or a misconfigured client fleet cannot flood the log; the metric counts them all.
pub(super) fn handshake_log_allowed() -> bool {
    const HANDSHAKE_LOG_BURST: u64 = 10;
    static WINDOW: AtomicU64 = AtomicU64::new(0);
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if WINDOW.swap(now, Ordering::Relaxed) != now {
        COUNT.store(0, Ordering::Relaxed);
    }
    COUNT.fetch_add(1, Ordering::Relaxed) < HANDSHAKE_LOG_BURST
}

/// Which HTTP version a connection speaks, decided before hyper sees it so no read happens
/// without a timer (hyper-util's version sniffing has none).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Proto {
    Http1,
    Http2,
}

/// Plaintext only: waits (bounded) for the first bytes and picks HTTP/2 for the
/// prior-knowledge preface (`PRI * HTTP/2.0`), else HTTP/1.1.
pub(super) async fn sniff_plaintext(stream: &TcpStream, timeout: Duration) -> Option<Proto> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = [0u8; 3];
    loop {
        let n = tokio::time::timeout_at(deadline, stream.peek(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        if n >= 3 || buf.first() != Some(&b'P') {
            return Some(if &buf == b"PRI" {
                Proto::Http2
            } else {
                Proto::Http1
            });
        }
        tokio::time::sleep_until(
            (tokio::time::Instant::now() + Duration::from_millis(5)).min(deadline),
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::{CertificateError, Error};

    fn wrapped(e: Error) -> std::io::Error {
        // What tokio-rustls returns for a failed handshake.
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }

    #[test]
    fn classifies_handshake_failures_by_rustls_error() {
        let cases = [
            (Error::NoCertificatesPresented, "no_client_cert"),
            (
                Error::InvalidCertificate(CertificateError::Expired),
                "client_cert_expired",
            ),
            (
                Error::InvalidCertificate(CertificateError::NotValidYet),
                "client_cert_not_yet_valid",
            ),
            (
                Error::InvalidCertificate(CertificateError::Revoked),
                "client_cert_revoked",
            ),
            (
                Error::InvalidCertificate(CertificateError::UnknownIssuer),
                "client_cert_untrusted",
            ),
            (
                Error::InvalidCertificate(CertificateError::InvalidPurpose),
                "client_cert_wrong_usage",
            ),
            (
                Error::InvalidCertificate(CertificateError::BadSignature),
                "bad_client_cert",
            ),
            (
                Error::AlertReceived(rustls::AlertDescription::UnknownCA),
                "alert_received",
            ),
            (Error::DecryptError, "handshake"),
        ];
        for (e, reason) in cases {
            let label = handshake_reason(&wrapped(e));
            assert_eq!(label, reason);
            assert!(crate::metrics::HANDSHAKE_REASONS.contains(&label));
        }
        let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        assert_eq!(handshake_reason(&eof), "handshake");
    }
}
