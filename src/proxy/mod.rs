//! Forwarding to upstreams: our HTTP/1.1 client (`h1`), pooled connections (`pool`) and
//! target choice (`upstream`), header
//! rewriting (`headers`) and limited streaming bodies (`body`), WebSocket tunnels (`upgrade`). The phase order lives in
//! `gateway.rs`.

pub mod body;
#[cfg(test)]
mod differential;
pub mod h1;
pub mod headers;
pub mod pool;
pub mod upgrade;
pub mod upstream;
