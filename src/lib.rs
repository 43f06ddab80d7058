//! portcullis: an authenticating TLS-terminating reverse proxy.
//!
//! Reading order follows the life of the process and of one request:
//! `cli` -> `config` -> `snapshot` -> `server` (and `reload`) -> `conn` -> `gateway`
//! (path, route, auth, proxy) -> `error` -> `admin`/`metrics`/`telemetry`. The development
//! tooling (dev certificates, the echo upstream, the demo) lives apart in `devkit`.
//!
//! `config` turns the file into checked plain data (each authenticator kind reads its own
//! table into its `Settings`, beside the kind in `auth/`); `snapshot` builds everything
//! that runs from it (authenticators, rustls configs, upstream clients), and `check` runs
//! both, so it refuses exactly what a start or a reload would.

#![forbid(unsafe_code)]

pub(crate) mod admin;
pub mod auth;
pub mod cli;
pub(crate) mod coalesce;
pub mod config;
pub mod conn;
pub mod credentials;
#[cfg(test)]
mod deploy_tests;
pub mod devkit;
pub(crate) mod error;
pub(crate) mod gateway;
pub mod metrics;
pub mod path;
pub mod proxy;
pub(crate) mod query;
pub(crate) mod raw_target;
pub(crate) mod reload;
pub mod route;
pub mod server;
pub(crate) mod snapshot;
pub mod telemetry;
pub(crate) mod tls;

#[doc(hidden)]
pub mod fuzzing;

// The development tooling under its old paths, for the tests, benches and examples.
pub use devkit::{certs, demo, echo};
