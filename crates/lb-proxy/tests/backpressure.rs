//! Back-pressure: a client that never reads, or a backend that never reads,
//! never makes the proxy hold more than a bounded window. The bound is the
//! kernel's socket buffers on the path plus a small allowance for hyper's
//! buffers; an endless body is offered, so a proxy that buffered would run
//! past it.

mod support;

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use lb_core::{Backend, Pool};
use lb_proxy::http::{ForwardConfig, Server};
use lb_proxy::BalanceLayer;
use lb_sched::Balancer;
use support::probe::{probe, settle, Probe};
use support::raw::{read_answer, Answer};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

/// The largest value of the third field of a Linux `tcp_rmem`/`tcp_wmem`
/// file (the most one socket buffer can grow to), or 8 MiB elsewhere.
fn socket_buffer_max(file: &str) -> u64 {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(8 << 20)
}

/// What may sit in buffers between the two ends: a receive and a send
/// buffer on each of the two connections, and hyper's buffers.
fn window() -> u64 {
    let r = socket_buffer_max("/proc/sys/net/ipv4/tcp_rmem");
    let w = socket_buffer_max("/proc/sys/net/ipv4/tcp_wmem");
    2 * (r + w) + (16 << 20)
}

async fn proxy_to(p: &Probe) -> TestProxy {
    let pool = Pool::new();
    pool.add(Backend::new("probe", p.addr)).unwrap();
    let lb = Balancer::new(pool, lb_sched::build("rr").unwrap());
    let layer = BalanceLayer::new(lb);
    start_proxy_with("127.0.0.1", layer, ForwardConfig::default(), Server::new()).await
}

async fn still_serves(addr: std::net::SocketAddr) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        read_answer(&mut s, 1, STEP).await,
        Answer::Statuses(vec![200], false)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_holds_back_the_backend() {
    let p = probe().await;
    let proxy = proxy_to(&p).await;
    let sock = TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(64 * 1024).unwrap();
    let mut s = sock.connect(proxy.addr).await.unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    // Never read: the backend can only write what fits on the way.
    let bound = window();
    let produced = settle(Duration::from_millis(100), 5, bound, || {
        p.seen.produced.load(SeqCst)
    })
    .await;
    eprintln!("produced {produced} of window {bound}");
    assert!(produced > 0, "the response started");
    assert!(
        produced <= bound,
        "{produced} bytes left the backend; window {bound}"
    );
    still_serves(proxy.addr).await;
    drop(s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_never_reads_holds_back_the_client() {
    let p = probe().await;
    let proxy = proxy_to(&p).await;
    let sock = TcpSocket::new_v4().unwrap();
    sock.set_send_buffer_size(64 * 1024).unwrap();
    let mut s = sock.connect(proxy.addr).await.unwrap();
    let head = b"POST /hold HTTP/1.1\r\nHost: t\r\nContent-Length: 1099511627776\r\n\r\n";
    s.write_all(head).await.unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    let writer = tokio::spawn(async move {
        let chunk = vec![0u8; 64 * 1024];
        while s.write_all(&chunk).await.is_ok() {
            counter.fetch_add(chunk.len() as u64, SeqCst);
        }
    });
    let bound = window();
    let sent = settle(Duration::from_millis(100), 5, bound, || sent.load(SeqCst)).await;
    writer.abort();
    eprintln!("sent {sent} of window {bound}");
    assert!(sent > 0, "the upload started");
    assert!(
        sent <= bound,
        "the client got {sent} bytes out; window {bound}"
    );
    assert_eq!(*p.seen.started.lock(), vec!["/hold".to_owned()]);
    still_serves(proxy.addr).await;
}
