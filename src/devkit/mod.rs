//! Development tooling, kept apart from the request path (nothing in `server`, `gateway`,
//! `auth` or `proxy` imports it): a throw-away CA and certificates (`certs`, also behind
//! `portcullis certs`), the built-in echo upstream the demo and the tests run against
//! (`echo`), and the self-contained tour (`demo`).

pub mod certs;
pub mod demo;
pub mod echo;
