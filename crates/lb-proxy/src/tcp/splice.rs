//! `splice(2)` between two TCP sockets through a pipe: the bytes of a bulk
//! transfer go from one socket's receive queue to the other's send queue
//! by page reference, never through a user-space buffer (HAProxy's
//! `option splice-auto`).

use std::io;
use std::os::fd::OwnedFd;

use rustix::pipe::{fcntl_setpipe_size, pipe_with, splice, PipeFlags, SpliceFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// The pipe between the two sockets of one direction.
#[derive(Debug)]
pub(crate) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Its capacity: the most a fill asks for, so that the pipe, emptied
    /// before every fill, always has room for it.
    room: usize,
}

/// The capacity asked for a pipe: fewer, larger batches than the default
/// 64 KiB (16 pages), within the unprivileged `fs.pipe-max-size` (1 MiB).
const PIPE_BYTES: usize = 256 * 1024;

/// A pipe's capacity when it cannot be changed.
const DEFAULT_PIPE_BYTES: usize = 64 * 1024;

/// Both ends non-blocking: a splice that would wait returns `EAGAIN`.
const FLAGS: SpliceFlags = SpliceFlags::MOVE.union(SpliceFlags::NONBLOCK);

impl Pipe {
    /// A new pipe, or `None` if the process cannot have one (out of file
    /// descriptors): the caller copies through its buffer instead.
    pub(crate) fn new() -> Option<Pipe> {
        let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK).ok()?;
        // Past the per-user soft limit on pipe pages the kernel refuses:
        // the default capacity stays.
        let room = fcntl_setpipe_size(&write, PIPE_BYTES).unwrap_or(DEFAULT_PIPE_BYTES);
        Some(Pipe { read, write, room })
    }

    /// Move bytes from `from` to `to` until `from` reaches end of stream
    /// (`Ok`), or a socket fails. `moved` is told each batch once it has
    /// been handed to `to`.
    ///
    /// The pipe is empty between batches, so a fill that finds nothing to
    /// move (`EAGAIN`) means the socket has nothing: its readiness is
    /// cleared and waited for again, as a plain read would.
    pub(crate) async fn carry(
        &self,
        from: &TcpStream,
        to: &TcpStream,
        mut moved: impl FnMut(u64),
    ) -> io::Result<()> {
        loop {
            let n = loop {
                from.readable().await?;
                match from.try_io(Interest::READABLE, || {
                    splice(from, None, &self.write, None, self.room, FLAGS).map_err(io::Error::from)
                }) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            };
            if n == 0 {
                return Ok(());
            }
            let mut left = n;
            while left > 0 {
                to.writable().await?;
                match to.try_io(Interest::WRITABLE, || {
                    splice(&self.read, None, to, None, left, FLAGS).map_err(io::Error::from)
                }) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(m) => left -= m,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            }
            moved(n as u64);
        }
    }
}
