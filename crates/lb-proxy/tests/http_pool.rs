//! Keep-alive connections from the proxy to its backends: reuse, the idle
//! timeout, the per-backend idle limit, backends that close idle
//! connections, and bodies that stall. The backends here are scripted raw
//! TCP servers, so every connection they accept and every close they see
//! is counted.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use lb_core::{Backend, Pool};
use lb_proxy::http::ForwardConfig;
use lb_proxy::BalanceLayer;
use lb_sched::Balancer;
use parking_lot::Mutex;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What a scripted backend does after each response.
#[derive(Clone, Copy)]
enum Script {
    /// Keep the connection open for the next request.
    KeepAlive,
    /// Close the connection this long after each response, without saying
    /// so (no `Connection: close`): a backend's own keep-alive timeout.
    CloseIdleAfter(Duration),
    /// Answer `Content-Length: 10` with 3 bytes, then say nothing more.
    Stall,
}

/// A raw HTTP/1.1 backend that counts connections and closes.
struct Scripted {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    /// Connections the proxy closed (the backend read end-of-file).
    closed_by_proxy: Arc<AtomicUsize>,
    /// The request bodies received, in order.
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn scripted(script: Script, delay: Duration) -> Scripted {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let closed_by_proxy = Arc::new(AtomicUsize::new(0));
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let (a, c, b) = (accepted.clone(), closed_by_proxy.clone(), bodies.clone());
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            a.fetch_add(1, Ordering::SeqCst);
            conns.spawn(serve(stream, script, delay, c.clone(), b.clone()));
        }
    });
    Scripted {
        addr,
        accepted,
        closed_by_proxy,
        bodies,
        task,
    }
}

/// One request head and its `Content-Length` body; `None` at end-of-file.
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let mut chunk = [0u8; 4096];
                let n = s.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = buf[end + 4..end + 4 + len].to_vec();
            buf.drain(..end + 4 + len);
            return Some(body);
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn serve(
    mut s: TcpStream,
    script: Script,
    delay: Duration,
    closed_by_proxy: Arc<AtomicUsize>,
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
) {
    let mut buf = Vec::new();
    loop {
        let read = match script {
            Script::CloseIdleAfter(idle) => {
                match tokio::time::timeout(idle, read_request(&mut s, &mut buf)).await {
                    Ok(r) => r,
                    Err(_) => return, // idle too long: close, unannounced
                }
            }
            _ => read_request(&mut s, &mut buf).await,
        };
        let Some(body) = read else {
            closed_by_proxy.fetch_add(1, Ordering::SeqCst);
            return;
        };
        bodies.lock().push(body);
        tokio::time::sleep(delay).await;
        if let Script::Stall = script {
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
                .await;
            tokio::time::sleep(STEP).await;
            return;
        }
        let resp = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        if s.write_all(resp).await.is_err() {
            return;
        }
    }
}

async fn proxy_to(b: &Scripted, fwd: ForwardConfig) -> TestProxy {
    let pool = Pool::new();
    pool.add(Backend::new("s", b.addr)).unwrap();
    let lb = Balancer::new(pool, lb_sched::build("rr").unwrap());
    start_proxy("127.0.0.1", BalanceLayer::new(lb), fwd).await
}

async fn post(c: &TestClient, addr: SocketAddr, body: &'static [u8]) -> (StatusCode, String) {
    let req = Request::post(format!("http://{addr}/"))
        .body(http_body_util::Full::new(Bytes::from_static(body)).boxed())
        .unwrap();
    let resp = tokio::time::timeout(STEP, c.request(req))
        .await
        .unwrap()
        .unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Wait until `n` reaches `want`.
async fn reaches(n: &AtomicUsize, want: usize) {
    tokio::time::timeout(STEP, async {
        while n.load(Ordering::SeqCst) < want {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("stuck at {} of {want}", n.load(Ordering::SeqCst)));
}

#[tokio::test]
async fn backend_connections_are_kept_alive_and_reused() {
    let b = scripted(Script::KeepAlive, Duration::ZERO).await;
    let p = proxy_to(&b, ForwardConfig::default()).await;
    let c = client();
    for _ in 0..20 {
        let (status, body) = get(&c, p.addr, "/").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    }
    assert_eq!(
        b.accepted.load(Ordering::SeqCst),
        1,
        "one connection for all"
    );
    assert_eq!(b.closed_by_proxy.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_post_after_the_backend_closed_its_idle_connection_goes_out_once_on_a_new_one() {
    let b = scripted(
        Script::CloseIdleAfter(Duration::from_millis(50)),
        Duration::ZERO,
    )
    .await;
    let p = proxy_to(&b, ForwardConfig::default()).await;
    let c = client();
    assert_eq!(post(&c, p.addr, b"one").await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The pooled connection is closed: POST is not retried by Balance, so
    // only a fresh connection makes this succeed.
    assert_eq!(post(&c, p.addr, b"two").await.0, StatusCode::OK);
    assert_eq!(*b.bodies.lock(), vec![b"one".to_vec(), b"two".to_vec()]);
    assert_eq!(b.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn idle_backend_connections_close_after_the_idle_timeout() {
    let b = scripted(Script::KeepAlive, Duration::ZERO).await;
    let fwd = ForwardConfig {
        idle_timeout: Some(Duration::from_millis(200)),
        ..ForwardConfig::default()
    };
    let p = proxy_to(&b, fwd).await;
    let c = client();
    assert_eq!(get(&c, p.addr, "/").await.0, StatusCode::OK);
    assert_eq!(get(&c, p.addr, "/").await.0, StatusCode::OK);
    assert_eq!(b.accepted.load(Ordering::SeqCst), 1, "reused while fresh");
    reaches(&b.closed_by_proxy, 1).await;
    // The next request opens a new connection.
    assert_eq!(get(&c, p.addr, "/").await.0, StatusCode::OK);
    assert_eq!(b.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn at_most_max_idle_connections_per_backend_stay_open() {
    let b = scripted(Script::KeepAlive, Duration::from_millis(200)).await;
    let fwd = ForwardConfig {
        max_idle_per_backend: 1,
        ..ForwardConfig::default()
    };
    let p = proxy_to(&b, fwd).await;
    let c = client();
    let all = futures_join(&c, p.addr, 3).await;
    assert!(all.iter().all(|s| *s == StatusCode::OK), "{all:?}");
    assert_eq!(b.accepted.load(Ordering::SeqCst), 3, "three at once");
    reaches(&b.closed_by_proxy, 2).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(b.closed_by_proxy.load(Ordering::SeqCst), 2, "one kept");
    assert_eq!(get(&c, p.addr, "/").await.0, StatusCode::OK);
    assert_eq!(
        b.accepted.load(Ordering::SeqCst),
        3,
        "the kept one is reused"
    );
}

async fn futures_join(c: &TestClient, addr: SocketAddr, n: usize) -> Vec<StatusCode> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let c = c.clone();
        set.spawn(async move { get(&c, addr, "/").await.0 });
    }
    let mut out = Vec::new();
    while let Some(s) = set.join_next().await {
        out.push(s.unwrap());
    }
    out
}

#[tokio::test]
async fn a_body_that_stalls_is_cut_at_the_idle_timeout() {
    let b = scripted(Script::Stall, Duration::ZERO).await;
    let fwd = ForwardConfig {
        idle_timeout: Some(Duration::from_millis(300)),
        ..ForwardConfig::default()
    };
    let p = proxy_to(&b, fwd).await;
    let req = Request::get(format!("http://{}/", p.addr))
        .body(http_body_util::Full::new(Bytes::new()).boxed())
        .unwrap();
    let started = std::time::Instant::now();
    let resp = tokio::time::timeout(STEP, client().request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "the head went through");
    let body = tokio::time::timeout(STEP, resp.into_body().collect()).await;
    assert!(matches!(body, Ok(Err(_))), "the body is cut short");
    assert!(started.elapsed() >= Duration::from_millis(300));
}
