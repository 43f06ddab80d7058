//! WebSocket tunnels: after a 101, bytes are copied both ways between the client and the
//! upstream connection until either side closes or nothing moves for
//! `server.limits.tunnel_idle_timeout`. A tunnel keeps its client connection's place under
//! `server.limits.max_connections` and its upstream connection's place under
//! `upstreams.X.max_connections`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::oneshot;

use super::h1::Conn;
use crate::conn::Upgraded;

/// Runs one tunnel: `client` resolves once hyper has written the 101, `upstream` is the
/// connection that answered it.
pub async fn tunnel(
    client: oneshot::Receiver<Upgraded>,
    upstream: Option<Box<Conn>>,
    idle: Duration,
) {
    let Ok(Upgraded {
        io,
        read_ahead,
        permit: _permit,
    }) = client.await
    else {
        return;
    };
    let Some(upstream) = upstream else {
        // The client saw a 101 but the upstream stream is gone: close politely.
        let mut io = io;
        let _ = tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
        return;
    };
    let Conn {
        io: upstream_io,
        buf,
        permit: _upstream_permit,
    } = *upstream;
    let moved = Arc::new(AtomicU64::new(0));
    let mut client = Counted {
        inner: io,
        moved: moved.clone(),
    };
    let mut upstream = Counted {
        inner: upstream_io,
        moved: moved.clone(),
    };
    if !read_ahead.is_empty() && upstream.write_all(&read_ahead).await.is_err() {
        return;
    }
    if !buf.is_empty() && client.write_all(&buf).await.is_err() {
        return;
    }
    let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    tokio::pin!(copy);
    let tick = (idle / 4).max(Duration::from_millis(10));
    let mut seen = 0;
    let mut last_move = Instant::now();
    loop {
        tokio::select! {
            _ = &mut copy => return,
            () = tokio::time::sleep(tick) => {
                let now = moved.load(Ordering::Relaxed);
                if now != seen {
                    seen = now;
                    last_move = Instant::now();
                } else if last_move.elapsed() >= idle {
                    tracing::debug!("websocket tunnel idle; closing it");
                    return;
                }
            }
        }
    }
}

/// A stream that counts the reads and writes that moved bytes, so the tunnel can tell an
/// idle one.
struct Counted<S> {
    inner: S,
    moved: Arc<AtomicU64>,
}

impl<S> Counted<S> {
    fn note(&self, n: usize) {
        if n > 0 {
            self.moved.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.note(buf.filled().len() - before);
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.note(*n);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
