//! A backend that records what reached it: each request's path and how its
//! body ended, and how many response bytes it managed to produce.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// How a request's body ended at the backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodyEnd {
    /// Complete, this many bytes.
    Complete(u64),
    /// Cut short after this many bytes.
    Failed(u64),
}

/// What the probe saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Requests whose handler started, by path.
    pub started: Mutex<Vec<String>>,
    /// Requests whose body was read to its end (or failure).
    pub bodies: Mutex<Vec<(String, BodyEnd)>>,
    /// Body bytes received so far, over all requests.
    pub received: AtomicU64,
    /// Response bytes handed to hyper by `/big`.
    pub produced: AtomicU64,
}

/// A running probe backend.
pub struct Probe {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
    task: JoinHandle<()>,
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// An endless body of zeros that counts what it gave out.
struct Counted(Arc<Seen>);

impl hyper::body::Body for Counted {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .produced
            .fetch_add(ZEROS.len() as u64, Ordering::SeqCst);
        std::task::Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&ZEROS)))))
    }
}

type RespBody = BoxBody<Bytes, Infallible>;

async fn handle(seen: Arc<Seen>, req: Request<Incoming>) -> Result<Response<RespBody>, Infallible> {
    let path = req.uri().path().to_owned();
    seen.started.lock().push(path.clone());
    match path.as_str() {
        "/big" => return Ok(Response::new(Counted(seen).boxed())),
        "/sleep" => tokio::time::sleep(Duration::from_millis(700)).await,
        "/hold" => {
            // Never read the body, never answer (within any test).
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        _ => {}
    }
    let mut body = req.into_body();
    let mut n = 0u64;
    let end = loop {
        match body.frame().await {
            None => break BodyEnd::Complete(n),
            Some(Err(_)) => break BodyEnd::Failed(n),
            Some(Ok(f)) => {
                if let Ok(d) = f.into_data() {
                    n += d.len() as u64;
                    seen.received.fetch_add(d.len() as u64, Ordering::SeqCst);
                }
            }
        }
    };
    seen.bodies.lock().push((path, end.clone()));
    Ok(Response::new(
        Full::new(Bytes::from(format!("{end:?}"))).boxed(),
    ))
}

/// Start a probe on loopback.
pub async fn probe() -> Probe {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind probe");
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    let task = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            let s = s.clone();
            conns.spawn(async move {
                let svc = hyper::service::service_fn(move |req| handle(s.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Probe { addr, seen, task }
}

/// Wait (up to `limit`) until `f` holds.
pub async fn until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

/// Sample `value` every `every` until it stops changing for `quiet`
/// samples in a row, or exceeds `ceiling`: its last value.
pub async fn settle(every: Duration, quiet: u32, ceiling: u64, value: impl Fn() -> u64) -> u64 {
    let mut last = value();
    let mut same = 0;
    while same < quiet && last <= ceiling {
        tokio::time::sleep(every).await;
        let now = value();
        same = if now == last { same + 1 } else { 0 };
        last = now;
    }
    last
}
