//! Bidirectional copy between a client and a backend, with half-close and
//! an idle timeout.
//!
//! Each direction reads into its own buffer and writes everything it read
//! before reading again. Between two TCP sockets on Linux, a direction
//! whose read fills its buffer (a bulk transfer) moves on to `splice(2)`
//! through a pipe of its own, when enabled: the bytes then go from socket to
//! socket inside the kernel (HAProxy's `option splice-auto`); short and
//! interactive exchanges keep the buffer and never pay for a pipe. When one
//! side reaches end of stream, the write half
//! of the other side is shut down (a FIN is sent) and the other direction
//! goes on until it ends too, as `tokio::io::copy_bidirectional` and
//! HAProxy's `mode tcp` do. The connection is idle when neither direction
//! moved a byte for the idle timeout; it is then closed. A
//! [drain](crate::drain)'s deadline closes it too.
//!
//! The same copy joins the two sides of an upgraded (WebSocket) HTTP
//! connection.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use lb_core::{ConnGuard, Counters};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::drain::Watch;
use tokio::time::{sleep_until, Instant};

/// Bytes a direction reads before writing them on (per direction and
/// connection), at first: what nginx's `proxy_buffer_size` and HAProxy's
/// `tune.bufsize` default to, so that idle and interactive connections stay
/// small.
const BUF_SIZE: usize = 16 * 1024;

/// What a direction's buffer grows to once a read fills it: a bulk
/// transfer then moves four times as much per read and write.
const BULK_BUF_SIZE: usize = 64 * 1024;

/// How a forwarded connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum End {
    /// Both directions reached end of stream: a clean close.
    Closed,
    /// Nothing moved in either direction for the idle timeout.
    Idle,
    /// A [drain](crate::drain()) of the backend reached its deadline.
    Drained,
    /// A read or write failed (a reset, a broken pipe).
    Broken(io::ErrorKind),
}

/// What moved through a connection, and how it ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Moved {
    /// Bytes read from the client and written to the backend.
    pub to_backend: u64,
    /// Bytes read from the backend and written to the client.
    pub from_backend: u64,
    /// How the connection ended.
    pub end: End,
}

/// When a byte last moved, in milliseconds since `start`.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Completes once nothing has moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = self.start + last + idle;
            if Instant::now() >= deadline {
                return;
            }
            sleep_until(deadline).await;
        }
    }
}

/// One half of a connection being copied: the TCP socket under it, if it
/// is one (what `splice(2)` needs).
pub(crate) trait Half {
    /// The socket, for a half of a plain TCP connection.
    fn tcp(&self) -> Option<&TcpStream> {
        None
    }
}

impl Half for OwnedReadHalf {
    fn tcp(&self) -> Option<&TcpStream> {
        Some(self.as_ref())
    }
}

impl Half for OwnedWriteHalf {
    fn tcp(&self) -> Option<&TcpStream> {
        Some(self.as_ref())
    }
}

impl<T> Half for ReadHalf<T> {}
impl<T> Half for WriteHalf<T> {}

/// Which way a direction copies, for the byte counters.
#[derive(Clone, Copy)]
enum Way {
    ToBackend,
    FromBackend,
}

/// Copy `from` into `to` until end of stream, then shut `to` down; through
/// `splice(2)` once a read fills the buffer, if `splice` and both are TCP
/// sockets.
async fn pipe<R, W>(
    mut from: R,
    mut to: W,
    way: Way,
    moved: &AtomicU64,
    activity: &Activity,
    counters: &Counters,
    splice: bool,
) -> io::Result<()>
where
    R: AsyncRead + Half + Unpin,
    W: AsyncWrite + Half + Unpin,
{
    let account = |n: u64| {
        moved.fetch_add(n, Ordering::Relaxed);
        match way {
            Way::ToBackend => counters.add_bytes(n, 0),
            Way::FromBackend => counters.add_bytes(0, n),
        }
        activity.touch();
    };
    // Not zeroed: a read fills what it returns (a short connection does not
    // pay for clearing 16 KiB it never uses).
    let mut buf = BytesMut::with_capacity(BUF_SIZE);
    loop {
        buf.clear();
        let room = buf.capacity();
        let n = from.read_buf(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        to.write_all(&buf[..n]).await?;
        account(n as u64);
        if n == room {
            #[cfg(target_os = "linux")]
            if splice {
                if let (Some(r), Some(w), Some(pipe)) =
                    (from.tcp(), to.tcp(), super::splice::Pipe::new())
                {
                    drop(buf);
                    pipe.carry(r, w, account).await?;
                    return to.shutdown().await;
                }
            }
            if room < BULK_BUF_SIZE {
                buf = BytesMut::with_capacity(BULK_BUF_SIZE);
            }
        }
    }
}

/// Forward between `client` and `backend` until both directions end, one
/// fails, or nothing moves for `idle`. Bytes are added to the backend's
/// counters as they move. The connection is counted active while both
/// directions are open and inactive once one side has closed (as LVS counts
/// a TCP connection past ESTABLISHED).
pub(crate) async fn forward(
    client: TcpStream,
    backend: TcpStream,
    guard: &mut ConnGuard,
    idle: Duration,
    splice: bool,
) -> Moved {
    let counters = guard.counters().clone();
    let (client_rd, client_wr) = client.into_split();
    let (backend_rd, backend_wr) = backend.into_split();
    let client = (client_rd, client_wr);
    let backend = (backend_rd, backend_wr);
    join(client, backend, &counters, Some(idle), splice, || {
        guard.idle()
    })
    .await
}

/// Copy both ways between the halves of `client` and `backend` until both
/// directions end, one fails, nothing moves for `idle`, or a drain of the
/// backend whose `counters` these are cuts it. `half_closed` is called when
/// the first direction ends. `splice`: bulk directions between TCP sockets
/// move on to `splice(2)`.
pub(crate) async fn join<CR, CW, BR, BW>(
    (client_rd, client_wr): (CR, CW),
    (backend_rd, backend_wr): (BR, BW),
    counters: &Arc<Counters>,
    idle: Option<Duration>,
    splice: bool,
    mut half_closed: impl FnMut(),
) -> Moved
where
    CR: AsyncRead + Half + Unpin,
    CW: AsyncWrite + Half + Unpin,
    BR: AsyncRead + Half + Unpin,
    BW: AsyncWrite + Half + Unpin,
{
    let mut watch = Watch::new(counters);
    let (up_bytes, down_bytes) = (AtomicU64::new(0), AtomicU64::new(0));
    let activity = Activity {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
    };
    let up = pipe(
        client_rd,
        backend_wr,
        Way::ToBackend,
        &up_bytes,
        &activity,
        counters,
        splice,
    );
    let down = pipe(
        backend_rd,
        client_wr,
        Way::FromBackend,
        &down_bytes,
        &activity,
        counters,
        splice,
    );
    let idle_out = async {
        match idle {
            Some(idle) => activity.idle_for(idle).await,
            None => std::future::pending().await,
        }
    };
    let cut = watch.cut();
    tokio::pin!(up, down, idle_out, cut);
    let (mut up_open, mut down_open) = (true, true);
    let end = loop {
        let done = tokio::select! {
            r = &mut up, if up_open => { up_open = false; r }
            r = &mut down, if down_open => { down_open = false; r }
            () = &mut idle_out => break End::Idle,
            () = &mut cut => break End::Drained,
        };
        if let Err(e) = done {
            break End::Broken(e.kind());
        }
        if !up_open && !down_open {
            break End::Closed;
        }
        half_closed();
    };
    Moved {
        to_backend: up_bytes.load(Ordering::Relaxed),
        from_backend: down_bytes.load(Ordering::Relaxed),
        end,
    }
}
