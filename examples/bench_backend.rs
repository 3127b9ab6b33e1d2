//! A fast backend for the benchmark scripts (`benches/proxy_compare.sh`,
//! `benches/chaos_compare.sh`): one process per backend, so a script can
//! kill one and start it again.
//!
//! ```text
//! cargo run --release --example bench_backend -- --listen 127.0.0.1:9001 --name b1
//! cargo run --release --example bench_backend -- --listen 127.0.0.1:9002 --mode echo
//! cargo run --release --example bench_backend -- --listen 127.0.0.1:9003 --mode blackhole
//! ```
//!
//! Modes:
//! - `http` (the default): HTTP/1.1 with keep-alive. Every response carries
//!   `x-backend: NAME`. `GET /size/N` answers N zero bytes (streamed, with a
//!   Content-Length); a request with a body (`POST`/`PUT` anything) is read
//!   to the end and discarded, and the answer is the byte count; anything
//!   else (`GET /`, `GET /health`) answers `NAME\n`.
//! - `echo`: TCP, every byte read is written back until EOF.
//! - `blackhole`: accepts connections and never reads nor answers (a hung
//!   server); holds at most `--max-conns` of them, dropping the oldest.
//!
//! `kill -USR1 PID` hangs a running HTTP backend at once, without closing
//! its listener: from then on no request gets an answer, on kept-alive
//! connections or new ones (which are accepted and held, as a blackhole).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

/// A benchmark backend: HTTP, TCP echo, or a blackhole.
#[derive(Parser, Debug)]
#[command(name = "bench_backend", about)]
struct Args {
    /// Where to listen.
    #[arg(long)]
    listen: SocketAddr,
    /// The name sent in `x-backend` and in small bodies.
    #[arg(long, default_value = "backend")]
    name: String,
    /// What to serve.
    #[arg(long, value_enum, default_value_t = Mode::Http)]
    mode: Mode,
    /// Runtime worker threads (1 = a single-threaded runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Blackhole mode (or hung): connections held at most.
    #[arg(long, default_value_t = 10_000)]
    max_conns: usize,
}

/// What the backend serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// HTTP/1.1.
    Http,
    /// TCP echo.
    Echo,
    /// Accept, never answer.
    Blackhole,
}

/// Set by SIGUSR1: answer nothing from now on.
static HUNG: AtomicBool = AtomicBool::new(false);

/// Zero bytes that `/size/N` bodies are cut from.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// A body of `left` zero bytes, sent in 64 KiB frames.
#[derive(Debug)]
struct Zeros {
    left: u64,
}

impl Body for Zeros {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(ZEROS.len() as u64);
        self.left -= n;
        // n <= ZEROS.len(), so the cast cannot truncate.
        let chunk = Bytes::from_static(&ZEROS[..n as usize]);
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

type Reply = Response<Either<Full<Bytes>, Zeros>>;

/// Answer one request (see the module docs).
async fn handle(name: Bytes, req: Request<Incoming>) -> Result<Reply, Infallible> {
    if HUNG.load(Ordering::Relaxed) {
        std::future::pending::<()>().await;
    }
    let path = req.uri().path().to_owned();
    let has_body = !req.body().is_end_stream();
    let body = if has_body {
        // Read the upload to the end, keeping only its length.
        let mut body = req.into_body();
        let mut n: u64 = 0;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => n += f.data_ref().map_or(0, |d| d.len() as u64),
                Err(_) => break,
            }
        }
        Either::Left(Full::new(Bytes::from(format!("{n}\n"))))
    } else if let Some(size) = path.strip_prefix("/size/") {
        match size.parse::<u64>() {
            Ok(left) => Either::Right(Zeros { left }),
            Err(_) => {
                let mut r =
                    Response::new(Either::Left(Full::new(Bytes::from_static(b"bad size\n"))));
                *r.status_mut() = hyper::StatusCode::BAD_REQUEST;
                return Ok(r);
            }
        }
    } else {
        Either::Left(Full::new(name.clone()))
    };
    let mut resp = Response::new(body);
    if let Ok(v) = hyper::header::HeaderValue::from_bytes(name.trim_ascii_end()) {
        resp.headers_mut().insert("x-backend", v);
    }
    Ok(resp)
}

/// The next connection (nodelay set); on an error such as too many open
/// files, a short pause and `None`.
async fn accept(listener: &TcpListener) -> Option<TcpStream> {
    match listener.accept().await {
        Ok((stream, _)) => {
            let _ = stream.set_nodelay(true);
            Some(stream)
        }
        Err(_) => {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            None
        }
    }
}

async fn serve_http(listener: TcpListener, name: Bytes, max: usize) {
    let mut held = VecDeque::new();
    loop {
        let Some(stream) = accept(&listener).await else {
            continue;
        };
        if HUNG.load(Ordering::Relaxed) {
            hold(&mut held, stream, max);
            continue;
        }
        let name = name.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(name.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn serve_echo(listener: TcpListener) {
    loop {
        let Some(mut stream) = accept(&listener).await else {
            continue;
        };
        tokio::spawn(async move {
            let (mut r, mut w) = stream.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
    }
}

async fn serve_blackhole(listener: TcpListener, max: usize) {
    let mut held = VecDeque::new();
    loop {
        let Some(stream) = accept(&listener).await else {
            continue;
        };
        hold(&mut held, stream, max);
    }
}

/// Keep a connection open without reading it (at most `max`, oldest dropped).
fn hold(held: &mut VecDeque<TcpStream>, stream: TcpStream, max: usize) {
    if held.len() >= max.max(1) {
        held.pop_front();
    }
    held.push_back(stream);
}

/// Hang the backend on SIGUSR1.
async fn hang_on_usr1() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
        return std::future::pending().await;
    };
    while usr1.recv().await.is_some() {
        HUNG.store(true, Ordering::Relaxed);
        eprintln!("bench_backend: SIGUSR1: hung, answering nothing from now on");
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench_backend: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        let listener = match TcpListener::bind(args.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("bench_backend: cannot listen on {}: {e}", args.listen);
                return ExitCode::FAILURE;
            }
        };
        let name = Bytes::from(format!("{}\n", args.name));
        let serve = async {
            match args.mode {
                Mode::Http => serve_http(listener, name, args.max_conns).await,
                Mode::Echo => serve_echo(listener).await,
                Mode::Blackhole => serve_blackhole(listener, args.max_conns).await,
            }
        };
        tokio::select! {
            _ = serve => ExitCode::FAILURE,
            _ = hang_on_usr1() => ExitCode::FAILURE,
            _ = tokio::signal::ctrl_c() => ExitCode::SUCCESS,
        }
    })
}
