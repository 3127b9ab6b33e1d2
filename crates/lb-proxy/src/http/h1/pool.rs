//! Idle keep-alive connections to backends, per backend address, for the
//! [HTTP/1.1 client](super).
//!
//! The idle lists are the same as for hyper's client in
//! [`Forward`](crate::http::Forward) (`IdlePool`: most recently pooled
//! first, idle expiry with a sweep, at most `max_idle` per backend). With
//! no task reading an idle connection, a checkout tries a
//! one-byte read (no system call while the runtime has seen nothing come
//! on it): an end of stream means the backend closed it, a byte means it
//! sent something unasked; either way it is dropped.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::TcpStream;

use crate::http::pool::{connect, Dial, IdlePool, Reusable};
use crate::http::readsize::ReadSize;
use crate::pick::BoxError;

/// The read buffer a new connection starts with.
const READ_BUF: usize = 8 * 1024;

/// One connection to a backend and what was read from it but not used.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) io: TcpStream,
    pub(crate) buf: BytesMut,
    /// How much the next read takes.
    pub(crate) read_size: ReadSize,
}

/// Idle connections, shared by every clone of a `Forward`.
#[derive(Clone, Debug)]
pub(crate) struct H1Pool {
    idle: IdlePool<Conn>,
}

impl Reusable for Conn {
    fn usable(&self) -> bool {
        alive(&self.io)
    }
}

impl H1Pool {
    /// An empty pool.
    pub(crate) fn new(max_idle: usize, idle_timeout: Option<Duration>, dial: Dial) -> Self {
        H1Pool {
            idle: IdlePool::new(max_idle, idle_timeout, dial),
        }
    }

    /// The most recently pooled live connection to `addr`; expired and
    /// closed ones met on the way are dropped (closed).
    pub(crate) fn take(&self, addr: SocketAddr) -> Option<Conn> {
        self.idle.take(addr)
    }

    /// Keep `conn` for the next request to `addr`, if there is room; its
    /// read buffer must be empty (what is in it belongs to no request).
    pub(crate) fn put(&self, addr: SocketAddr, conn: Conn) {
        if conn.buf.is_empty() {
            self.idle.put(addr, conn);
        }
    }

    /// A new connection to `addr`, within the connect timeout.
    pub(crate) async fn connect(self, addr: SocketAddr) -> Result<Conn, BoxError> {
        let io = connect(addr, self.idle.dial()).await?;
        self.idle.start_sweep();
        Ok(Conn {
            io,
            buf: BytesMut::with_capacity(READ_BUF),
            read_size: ReadSize::default(),
        })
    }
}

/// Whether an idle connection can take a request: nothing to read on it
/// (an end-of-file means the backend closed it; bytes mean it sent
/// something no request asked for). The runtime's readiness decides first,
/// so a quiet connection costs no system call; a close the runtime has not
/// yet seen is caught when the request is sent (see `exchange`), as hyper's
/// connection task would have seen it no sooner.
fn alive(io: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    match io.try_read(&mut probe) {
        Err(e) => e.kind() == io::ErrorKind::WouldBlock,
        Ok(_) => false,
    }
}
