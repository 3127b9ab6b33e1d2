//! How much a connection reads at a time: small for heads and interactive
//! exchanges, growing through a bulk body (as hyper's adaptive reads).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, BytesMut};
use tokio::io::AsyncRead;

/// The room for a connection's next read. It starts at [`START`](Self::START),
/// doubles (up to [`MAX`](Self::MAX)) after each read that fills the room
/// it had, and falls back to the start after a read that fills less than
/// half: a bulk transfer is read in a few large pieces, a connection that
/// trickles keeps a small buffer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReadSize {
    next: usize,
}

impl Default for ReadSize {
    fn default() -> Self {
        ReadSize { next: Self::START }
    }
}

impl ReadSize {
    /// The first read's room.
    pub(crate) const START: usize = 16 * 1024;
    /// The largest room.
    pub(crate) const MAX: usize = 256 * 1024;

    /// Read from `io` into `buf`, with room for the next read made first
    /// (a new allocation only when the buffer lacks a quarter of it): the
    /// count, 0 at the end of the stream. Through `AsyncRead`, so that a
    /// short read marks the socket drained.
    pub(crate) fn poll_fill<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
        buf: &mut BytesMut,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        if buf.capacity() - buf.len() < self.next / 4 {
            buf.reserve(self.next);
        }
        // At most `next`, even where the buffer has more room: a read is a
        // frame passed on, and frames stay within MAX.
        let room = (buf.capacity() - buf.len()).min(self.next);
        let mut limited = (&mut *buf).limit(room);
        let n = std::task::ready!(tokio_util::io::poll_read_buf(
            Pin::new(io),
            cx,
            &mut limited
        ))?;
        if n >= room {
            self.next = (self.next * 2).min(Self::MAX);
        } else if n < room / 2 {
            self.next = Self::START;
        }
        Poll::Ready(Ok(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn grows_while_reads_fill_and_falls_back_after_a_short_one() {
        let data = vec![7u8; 4 << 20];
        let mut src: &[u8] = &data;
        let mut size = ReadSize::default();
        let mut buf = BytesMut::new();
        let mut seen = Vec::new();
        for _ in 0..6 {
            let n = std::future::poll_fn(|cx| size.poll_fill(&mut src, &mut buf, cx))
                .await
                .unwrap();
            seen.push(n);
            buf.clear();
        }
        // Each read filled the room it had: the room doubles up to MAX.
        assert!(seen[0] >= ReadSize::START, "{seen:?}");
        assert!(seen.windows(2).all(|w| w[1] >= w[0]), "{seen:?}");
        assert_eq!(size.next, ReadSize::MAX);
        // A short read (the source nearly dry) brings it back.
        let mut tail: &[u8] = &data[..100];
        let n = std::future::poll_fn(|cx| size.poll_fill(&mut tail, &mut buf, cx))
            .await
            .unwrap();
        assert_eq!(n, 100);
        assert_eq!(size.next, ReadSize::START);
    }
}
