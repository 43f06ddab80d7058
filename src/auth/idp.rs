//! The outbound HTTPS client identity providers are reached with (JWKS and token
//! introspection): hyper's pooled client over rustls, with the authenticator's own roots
//! (`ca`) or the webpki roots. Upstream traffic does not use it (see `proxy::h1`).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::CertificateDer;

/// The connector under an identity-provider client.
pub type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// An identity-provider client.
pub type IdpClient = Client<Connector, Full<Bytes>>;

/// A client trusting `ca` (`None`: the webpki roots), connecting within `connect_timeout`.
pub fn idp_client(
    ca: Option<&[CertificateDer<'static>]>,
    connect_timeout: Duration,
) -> Result<IdpClient, crate::tls::ClientTlsError> {
    let tls = crate::tls::client_config(ca)?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector))
}
