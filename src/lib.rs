//! portcullis: an authenticating TLS-terminating reverse proxy.
//!
//! Reading order follows the life of the process and of one request:
//! `cli` -> `config` -> `snapshot` -> `server` -> `conn` -> `gateway` (path, route, auth,
//! proxy) -> `error` -> `admin`/`metrics`/`telemetry`.

#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod certs;
pub mod cli;
pub mod coalesce;
pub mod config;
pub mod conn;
pub mod credentials;
pub mod demo;
pub mod echo;
pub mod error;
pub mod gateway;
pub mod metrics;
pub mod path;
pub mod proxy;
pub mod query;
pub mod raw_target;
pub mod reload;
pub mod route;
pub mod server;
pub mod snapshot;
pub mod telemetry;
pub mod tls;
