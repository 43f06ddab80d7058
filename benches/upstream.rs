//! A fast loopback upstream for `benches/compare.sh`: HTTP/1.1 keep-alive on one
//! current-thread runtime, answering `GET /big...` with a fixed 256 KiB body and every
//! other request with a fixed 4 KiB body. Not a criterion benchmark (`harness = false`).
//!
//! Usage: `upstream ADDR` (e.g. `127.0.0.1:18080`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

fn main() {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .filter(|a| a != "--bench")
        .unwrap_or_else(|| "127.0.0.1:18080".into())
        .parse()
        .expect("usage: upstream ADDR");
    let small = Bytes::from(vec![b'a'; 4096]);
    let big = Bytes::from(vec![b'b'; 256 * 1024]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener = TcpListener::bind(addr).await.expect("bind");
        eprintln!("upstream listening on {addr}");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (small, big) = (small.clone(), big.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let body = if req.uri().path().starts_with("/big") {
                        big.clone()
                    } else {
                        small.clone()
                    };
                    async move {
                        Ok::<_, Infallible>(
                            Response::builder()
                                .header("content-type", "application/octet-stream")
                                .body(Full::new(body))
                                .expect("response"),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}
