//! A client connection's byte stream, and the two waits every connection shares.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// A client connection's byte stream: TLS over TCP, or TCP alone with `insecure_plaintext`.
pub(super) trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The TCP socket underneath, to wait for the next request without a buffer.
    fn tcp(&self) -> &TcpStream;
    /// Whether bytes already taken off the socket wait in this layer (decrypted records).
    fn has_buffered(&mut self) -> bool;
}

impl Transport for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
    fn has_buffered(&mut self) -> bool {
        false
    }
}

impl<T: Transport> Transport for Box<T> {
    fn tcp(&self) -> &TcpStream {
        (**self).tcp()
    }
    fn has_buffered(&mut self) -> bool {
        (**self).has_buffered()
    }
}

impl Transport for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
    fn has_buffered(&mut self) -> bool {
        // Records that arrived with the handshake, or with the last read, may already be
        // decrypted; an error is left for hyper to meet (and report) on its first read.
        self.get_mut()
            .1
            .process_new_packets()
            .map_or(true, |s| s.plaintext_bytes_to_read() > 0)
    }
}

/// Resolves once the server is shutting down.
pub(super) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Closes a stream politely (TLS close_notify, then FIN), bounded so a peer that stopped
/// reading cannot hold the task.
pub(super) async fn shutdown<S: Transport>(mut io: S) {
    use tokio::io::AsyncWriteExt;
    let _ = tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
}
