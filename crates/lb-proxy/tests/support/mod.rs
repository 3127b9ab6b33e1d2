//! Real backends, a real proxy and small clients on loopback sockets.
#![allow(dead_code)]

pub mod probe;
pub mod raw;
pub mod scripted;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use lb_core::{Backend, BackendId, Observer, Outcome, Pool};
use lb_proxy::http::{proxy, ForwardConfig, Server};
use lb_proxy::BalanceLayer;
use lb_sched::Balancer;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// Every test's upper bound on one step.
pub const STEP: Duration = Duration::from_secs(20);

/// A backend server that answers with its name, plus test routes.
pub struct TestBackend {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub hits: Arc<AtomicU64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl TestBackend {
    /// Stop accepting and close every open connection; once this returns
    /// the port refuses and no connection of this backend answers again.
    pub async fn kill(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// FNV-1a over a byte stream, to compare streamed bodies.
#[derive(Clone, Copy)]
pub struct Fnv(pub u64);

impl Fnv {
    pub fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    pub fn update(&mut self, data: &[u8]) {
        for b in data {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The deterministic content of byte `i` of a generated body.
pub fn pattern_chunk(offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| ((offset + i) % 251) as u8)
        .collect()
}

fn query_u64(req: &Request<Incoming>, key: &str) -> Option<u64> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.parse().ok()).flatten()
    })
}

type RespBody = BoxBody<Bytes, Infallible>;

fn text(s: String) -> Response<RespBody> {
    Response::new(Full::new(Bytes::from(s)).boxed())
}

async fn handle(
    name: &'static str,
    hits: Arc<AtomicU64>,
    mut req: Request<Incoming>,
) -> Result<Response<RespBody>, Infallible> {
    hits.fetch_add(1, Ordering::SeqCst);
    let path = req.uri().path().to_owned();
    Ok(match path.as_str() {
        "/slow" => {
            let ms = query_u64(&req, "ms").unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            text(name.to_owned())
        }
        "/status" => {
            let code = query_u64(&req, "code").unwrap_or(200) as u16;
            let mut r = text(name.to_owned());
            *r.status_mut() = StatusCode::from_u16(code).unwrap();
            r
        }
        "/headers" => {
            let mut s = String::new();
            for (k, v) in req.headers() {
                s.push_str(&format!("{}: {}\n", k, v.to_str().unwrap_or("?")));
            }
            let mut r = text(s);
            r.headers_mut()
                .insert("connection", "x-backend-private".parse().unwrap());
            r.headers_mut()
                .insert("x-backend-private", "secret".parse().unwrap());
            r.headers_mut()
                .insert("x-backend-public", name.parse().unwrap());
            r
        }
        "/upload" => {
            let mut body = req.into_body();
            let (mut n, mut sum) = (0u64, Fnv::new());
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.expect("upload body").into_data() {
                    n += data.len() as u64;
                    sum.update(&data);
                }
            }
            text(format!("{n} {:016x}", sum.0))
        }
        "/download" => {
            let total = query_u64(&req, "bytes").unwrap_or(0);
            Response::new(Generated::new(total).boxed())
        }
        "/ws" => {
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(up) = on.await {
                    let mut io = TokioIo::new(up);
                    let mut buf = [0u8; 4096];
                    // Echo bytes back as they come.
                    while let Ok(n) = io.read(&mut buf).await {
                        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            });
            let mut r = Response::new(Full::new(Bytes::new()).boxed());
            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            r.headers_mut()
                .insert("connection", "upgrade".parse().unwrap());
            r.headers_mut()
                .insert("upgrade", "websocket".parse().unwrap());
            r
        }
        _ => text(name.to_owned()),
    })
}

/// A body of `total` bytes of [`pattern_chunk`], made 64 KiB at a time as
/// it is read: never held whole in memory.
pub struct Generated {
    off: u64,
    total: u64,
}

impl Generated {
    pub fn new(total: u64) -> Self {
        Generated { off: 0, total }
    }
}

impl hyper::body::Body for Generated {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.off >= self.total {
            return std::task::Poll::Ready(None);
        }
        let len = (self.total - self.off).min(64 * 1024) as usize;
        let chunk = Bytes::from(pattern_chunk(self.off, len));
        self.off += len as u64;
        std::task::Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.off >= self.total
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.total - self.off)
    }
}

/// Start a backend on `ip` (port chosen by the system).
pub async fn backend(name: &'static str, ip: &str) -> TestBackend {
    let listener = TcpListener::bind((ip, 0)).await.expect("bind backend");
    serve_backend(name, listener)
}

/// Start a backend on a given address (to bring a killed one back).
#[allow(dead_code)]
pub async fn backend_on(name: &'static str, addr: SocketAddr) -> TestBackend {
    let listener = TcpListener::bind(addr).await.expect("bind backend again");
    serve_backend(name, listener)
}

fn serve_backend(name: &'static str, listener: TcpListener) -> TestBackend {
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicU64::new(0));
    let h = hits.clone();
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            let accepted = tokio::select! {
                _ = &mut stopped => break,
                accepted = listener.accept() => accepted,
            };
            let Ok((stream, _)) = accepted else { break };
            let h = h.clone();
            conns.spawn(async move {
                let svc = hyper::service::service_fn(move |req| handle(name, h.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
        drop(listener);
        conns.shutdown().await;
    });
    TestBackend {
        name,
        addr,
        hits,
        stop: Some(stop),
        task,
    }
}

/// An observer that records every outcome.
#[derive(Debug, Default)]
pub struct Recorder(pub Mutex<Vec<(BackendId, Outcome)>>);

impl Observer for Recorder {
    fn observe(&self, backend: BackendId, outcome: Outcome, _: Duration) {
        self.0.lock().push((backend, outcome));
    }
}

impl Recorder {
    pub fn outcomes(&self) -> Vec<(BackendId, Outcome)> {
        self.0.lock().clone()
    }
}

/// A pool of the given backends (weight per backend) and a balancer.
pub fn balancer(backends: &[(&TestBackend, u64)], sched: &str) -> Balancer {
    let pool = Pool::new();
    for (b, w) in backends {
        pool.add(Backend::new(b.name, b.addr).with_weight(*w))
            .unwrap();
    }
    Balancer::new(pool, lb_sched::build(sched).unwrap())
}

/// A running proxy.
pub struct TestProxy {
    pub addr: SocketAddr,
    task: JoinHandle<std::io::Error>,
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Start the full HTTP proxy stack on `ip`.
pub async fn start_proxy(ip: &str, layer: BalanceLayer, forward: ForwardConfig) -> TestProxy {
    start_proxy_with(ip, layer, forward, Server::new()).await
}

/// Start the full HTTP proxy stack on `ip`, served by `server`.
pub async fn start_proxy_with(
    ip: &str,
    layer: BalanceLayer,
    forward: ForwardConfig,
    server: Server,
) -> TestProxy {
    let listener = TcpListener::bind((ip, 0)).await.expect("bind proxy");
    let addr = listener.local_addr().unwrap();
    let svc = proxy(layer, forward);
    let task = tokio::spawn(server.serve(listener, svc));
    TestProxy { addr, task }
}

pub type TestClient = Client<HttpConnector, BoxBody<Bytes, Infallible>>;

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// GET `path` through `addr`; the status and the body as text.
pub async fn get(c: &TestClient, addr: SocketAddr, path: &str) -> (StatusCode, String) {
    let uri = format!("http://{addr}{path}");
    let req = Request::get(uri)
        .body(Full::new(Bytes::new()).boxed())
        .unwrap();
    let fut = c.request(req);
    let resp = tokio::time::timeout(STEP, fut)
        .await
        .expect("response in time")
        .expect("response");
    let status = resp.status();
    let body = tokio::time::timeout(STEP, resp.into_body().collect())
        .await
        .expect("body in time")
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}
