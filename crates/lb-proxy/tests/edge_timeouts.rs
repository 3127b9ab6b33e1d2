//! The edge's body read timeout, and its counters. Real sockets on
//! loopback; outcomes are asserted, never speed.

mod support;

use std::time::Duration;

use http::StatusCode;
use lb_core::{Backend, Pool};
use lb_proxy::http::{ForwardConfig, Limits, Server};
use lb_proxy::BalanceLayer;
use lb_sched::Balancer;
use support::probe::{probe, until, BodyEnd, Probe};
use support::raw::{closed_silently, read_answer, Answer};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn proxy_with(p: &Probe, server: Server) -> TestProxy {
    let pool = Pool::new();
    pool.add(Backend::new("probe", p.addr)).unwrap();
    let lb = Balancer::new(pool, lb_sched::build("rr").unwrap());
    start_proxy_with(
        "127.0.0.1",
        BalanceLayer::new(lb),
        ForwardConfig::default(),
        server,
    )
    .await
}

fn body_timeout(limit: Duration) -> Server {
    let server = Server::new();
    let limits = Limits {
        client_body_timeout: Some(limit),
        ..*server.limits()
    };
    server.with_limits(limits)
}

#[tokio::test]
async fn a_body_that_stops_midway_gets_408_and_the_backend_sees_it_end_early() {
    let p = probe().await;
    let server = body_timeout(Duration::from_millis(300));
    let stats = server.stats();
    let proxy = proxy_with(&p, server).await;

    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
        .await
        .unwrap();
    assert_eq!(
        read_answer(&mut s, 1, STEP).await,
        Answer::Statuses(vec![408], false)
    );
    assert!(closed_silently(&mut s, STEP).await, "closed after the 408");
    let seen = p.seen.clone();
    assert!(
        until(STEP, || !seen.bodies.lock().is_empty()).await,
        "the backend's request ended"
    );
    assert_eq!(
        *p.seen.bodies.lock(),
        vec![("/up".to_owned(), BodyEnd::Failed(3))],
        "the exchange with the backend was aborted"
    );
    assert_eq!(stats.body_timeouts(), 1);
    assert_eq!(stats.rejected(StatusCode::REQUEST_TIMEOUT), 1);
    assert_eq!(stats.header_timeouts(), 0, "not a header timeout");
}

#[tokio::test]
async fn a_slow_body_whose_pieces_come_in_time_is_served() {
    let p = probe().await;
    let server = body_timeout(Duration::from_millis(400));
    let stats = server.stats();
    let proxy = proxy_with(&p, server).await;

    // Six pieces 100 ms apart: longer in all than the limit, which is on
    // the gap between two reads.
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"POST /slow HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.write_all(b"2\r\nab\r\n").await.unwrap();
    }
    s.write_all(b"0\r\n\r\n").await.unwrap();
    assert_eq!(
        read_answer(&mut s, 1, STEP).await,
        Answer::Statuses(vec![200], false)
    );
    assert_eq!(
        *p.seen.bodies.lock(),
        vec![("/slow".to_owned(), BodyEnd::Complete(12))]
    );
    assert_eq!(stats.body_timeouts(), 0);
}

#[tokio::test]
async fn a_body_that_stops_after_the_response_began_is_cut() {
    let p = probe().await;
    let server = body_timeout(Duration::from_millis(300));
    let stats = server.stats();
    let proxy = proxy_with(&p, server).await;

    // /big answers at once, with an endless body, never reading ours.
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nab")
        .await
        .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200 "), "the response began");
    // Read on: the connection ends (EOF or reset) instead of streaming on.
    let read_on = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    assert!(
        tokio::time::timeout(STEP, read_on).await.is_ok(),
        "the connection was cut"
    );
    assert_eq!(stats.body_timeouts(), 1);
    assert_eq!(
        stats.rejected(StatusCode::REQUEST_TIMEOUT),
        0,
        "no 408 then"
    );
}
