//! Forwarding to upstreams: pooled clients and target choice (`upstream`), header
//! rewriting (`headers`) and limited streaming bodies (`body`). The phase order lives in
//! `gateway.rs`.

pub mod body;
pub mod headers;
pub mod pool;
pub mod upstream;
