//! Write coalescing for HTTP/2 client connections.
//!
//! The h2 crate flushes once per DATA frame bigger than 256 bytes: it keeps at most one
//! such frame queued and writes it out before it encodes the next. A connection that
//! finishes 20 responses in one pass of the scheduler therefore makes 20 `writev` calls,
//! each its own TLS record and its own trip through the loopback or NIC stack, where
//! HAProxy makes one. [`Coalesced`] sits between hyper and the client stream: it takes
//! writes into a buffer and answers a flush that finds bytes waiting by waking its task
//! and reporting success; the bytes go out on the task's next poll, by which time the
//! stream handlers woken in the same pass have queued their frames too.
//!
//! Nothing is held past that next poll: h2's connection reads on every poll before it
//! writes (it waits on nothing else that this layer does not complete at once), and that
//! read sends what is held first; so does a shutdown. Writes of
//! [`PASS_THROUGH`] bytes or more (large DATA frames) are not copied: what is held goes
//! out first, then the write itself, unchanged.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Writes this large go straight to the stream (after what is held): copying them would
/// cost more than the call it saves.
pub(crate) const PASS_THROUGH: usize = 8 * 1024;

/// At most this much is held; a write that finds the buffer this full sends it first.
pub(crate) const MAX_HELD: usize = 64 * 1024;

/// A stream whose writes are held until the task's next poll (see the module docs).
pub(crate) struct Coalesced<S> {
    io: S,
    held: Vec<u8>,
    /// How much of `held` has already been written (a partial write).
    sent: usize,
    /// A flush found bytes held and was answered early; the next poll must send them.
    owed: bool,
}

impl<S> Coalesced<S> {
    pub(crate) fn new(io: S) -> Self {
        Coalesced {
            io,
            held: Vec::new(),
            sent: 0,
            owed: false,
        }
    }

    #[cfg(test)]
    fn get_ref(&self) -> &S {
        &self.io
    }

    fn is_empty(&self) -> bool {
        self.sent == self.held.len()
    }
}

impl<S: AsyncWrite + Unpin> Coalesced<S> {
    /// Writes out everything held; `Pending` until the stream took all of it.
    fn poll_send_held(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.held[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.held.clear();
        self.sent = 0;
        self.owed = false;
        Poll::Ready(Ok(()))
    }

    /// Takes `len` bytes into the buffer, or says how the caller must write them instead.
    fn poll_make_room(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<bool>> {
        if len >= PASS_THROUGH || self.held.len() + len > MAX_HELD {
            ready!(self.poll_send_held(cx))?;
        }
        Poll::Ready(Ok(len < PASS_THROUGH))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Coalesced<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.owed {
            // Pending means the socket is full: the waker is registered for write
            // readiness and the next flush will find the bytes still owed.
            if let Poll::Ready(Err(e)) = this.poll_send_held(cx) {
                return Poll::Ready(Err(e));
            }
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesced<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let len = bufs.iter().map(|b| b.len()).sum();
        if !ready!(this.poll_make_room(cx, len))? {
            return Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        }
        for b in bufs {
            this.held.extend_from_slice(b);
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.is_empty() {
            return Pin::new(&mut this.io).poll_flush(cx);
        }
        // h2 flushes after every large DATA frame, so a second flush in the same poll is
        // no sign that the poll is over: only the next read (the next poll) sends.
        if !this.owed {
            // Waking itself while running puts the task at the back of the run queue: the
            // tasks already woken run first and their frames join these bytes.
            this.owed = true;
            cx.waker().wake_by_ref();
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_held(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Counts the writes that reach the stream underneath.
    struct Counting {
        writes: usize,
        data: Vec<u8>,
    }

    impl AsyncRead for Counting {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Counting {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            this.writes += 1;
            this.data.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    struct WakeCount(AtomicUsize);
    impl Wake for WakeCount {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting() -> Coalesced<Counting> {
        Coalesced::new(Counting {
            writes: 0,
            data: Vec::new(),
        })
    }

    #[test]
    fn first_flush_holds_the_bytes_and_wakes_the_task() {
        let wakes = Arc::new(WakeCount(AtomicUsize::new(0)));
        let waker = wakes.clone().into();
        let mut cx = Context::from_waker(&waker);
        let mut c = counting();
        for frame in [&b"one"[..], b"two", b"three"] {
            assert!(matches!(
                Pin::new(&mut c).poll_write(&mut cx, frame),
                Poll::Ready(Ok(_))
            ));
            assert!(matches!(
                Pin::new(&mut c).poll_flush(&mut cx),
                Poll::Ready(Ok(()))
            ));
        }
        assert_eq!(
            c.get_ref().writes,
            0,
            "nothing written before the next poll"
        );
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            1,
            "one wake-up owed, not one per flush"
        );
        // The next poll reads first: what is held goes out, in one write.
        let mut b = [0u8; 8];
        let mut rb = ReadBuf::new(&mut b);
        assert!(Pin::new(&mut c).poll_read(&mut cx, &mut rb).is_ready());
        assert_eq!(c.get_ref().writes, 1);
        assert_eq!(c.get_ref().data, b"onetwothree");
        assert!(!c.owed);
    }

    #[test]
    fn flushes_in_the_same_poll_keep_holding_until_the_next_read() {
        let wakes = Arc::new(WakeCount(AtomicUsize::new(0)));
        let waker = wakes.clone().into();
        let mut cx = Context::from_waker(&waker);
        let mut c = counting();
        let _ = Pin::new(&mut c).poll_write(&mut cx, b"head");
        let _ = Pin::new(&mut c).poll_flush(&mut cx);
        let _ = Pin::new(&mut c).poll_write(&mut cx, b"more");
        assert!(matches!(
            Pin::new(&mut c).poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(c.get_ref().writes, 0);
        let mut b = [0u8; 8];
        let _ = Pin::new(&mut c).poll_read(&mut cx, &mut ReadBuf::new(&mut b));
        assert_eq!(
            (c.get_ref().writes, &c.get_ref().data[..]),
            (1, &b"headmore"[..])
        );
        // Nothing held: flushes and reads owe nothing and wake nobody.
        let _ = Pin::new(&mut c).poll_flush(&mut cx);
        let _ = Pin::new(&mut c).poll_read(&mut cx, &mut ReadBuf::new(&mut b));
        assert_eq!(c.get_ref().writes, 1);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn large_writes_pass_through_after_what_is_held() {
        let wakes = Arc::new(WakeCount(AtomicUsize::new(0)));
        let waker = wakes.into();
        let mut cx = Context::from_waker(&waker);
        let mut c = counting();
        let _ = Pin::new(&mut c).poll_write(&mut cx, b"small");
        let big = vec![7u8; PASS_THROUGH];
        let bufs = [IoSlice::new(b"hd"), IoSlice::new(&big)];
        let n = Pin::new(&mut c).poll_write_vectored(&mut cx, &bufs);
        assert!(matches!(n, Poll::Ready(Ok(n)) if n > 0));
        let d = &c.get_ref().data;
        assert_eq!(&d[..7], b"smallhd", "order kept");
        assert_eq!(
            c.get_ref().writes,
            2,
            "held bytes, then the big write itself"
        );
        assert!(c.held.is_empty());
    }

    #[test]
    fn the_buffer_is_bounded() {
        let wakes = Arc::new(WakeCount(AtomicUsize::new(0)));
        let waker = wakes.into();
        let mut cx = Context::from_waker(&waker);
        let mut c = counting();
        let chunk = vec![1u8; PASS_THROUGH - 1];
        for _ in 0..20 {
            let _ = Pin::new(&mut c).poll_write(&mut cx, &chunk);
            assert!(c.held.len() <= MAX_HELD);
        }
        assert_eq!(c.get_ref().data.len() + c.held.len(), 20 * chunk.len());
    }

    #[tokio::test]
    async fn shutdown_sends_what_is_held_over_a_real_socket() {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let mut c = Coalesced::new(a);
        c.write_all(b"frame").await.unwrap();
        poll_fn(|cx| Pin::new(&mut c).poll_flush(cx)).await.unwrap();
        c.shutdown().await.unwrap();
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"frame");
    }
}
