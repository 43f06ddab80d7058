//! End-to-end tests: one binary, a real gateway on loopback behind real TLS clients.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    unreachable_pub
)]

mod support;

mod cli;
mod config;
mod credentials;
mod examples;
mod hardening;
mod mtls;
mod proxy;
mod tokens;
