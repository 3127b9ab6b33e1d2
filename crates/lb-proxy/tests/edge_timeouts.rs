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

#[tokio::test]
async fn the_admin_api_reports_what_the_edge_refused() {
    let p = probe().await;
    let server = Server::new()
        .header_read_timeout(Duration::from_millis(300))
        .max_uri_bytes(64);
    let stats = server.stats();
    let proxy = proxy_with(&p, server).await;

    let bad = b"GET / HTTP/1.1\r\nHost: t\r\nX: a\0b\r\n\r\n";
    let long = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(100));
    let unmet = b"GET / HTTP/1.1\r\nHost: t\r\nExpect: x\r\nConnection: close\r\n\r\n";
    for (req, status) in [
        (&bad[..], 400),
        (long.as_bytes(), 414),
        (&unmet[..], 417),
        (b"", 408),
    ] {
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(req).await.unwrap();
        assert_eq!(
            read_answer(&mut s, 1, STEP).await,
            Answer::Statuses(vec![status], false)
        );
    }
    let lb = Balancer::new(Pool::new(), lb_sched::build("rr").unwrap());
    let admin = lb_proxy::admin::Admin::new(lb, "HTTP", proxy.addr, "rr").with_edge(stats.clone());
    let get = |uri: &str| {
        let req = http::Request::get(uri).body(()).unwrap();
        let resp = admin.handle(&req);
        assert_eq!(resp.status(), StatusCode::OK);
        let body = resp.into_body();
        text_of(body)
    };
    let metrics = get("/metrics");
    for (status, n) in [(400, 1), (408, 1), (414, 1), (417, 1), (431, 0)] {
        let line = format!("\nlb_edge_rejected_total{{status=\"{status}\"}} {n}\n");
        assert!(metrics.contains(&line), "{line:?} in {metrics}");
    }
    assert!(
        metrics.contains("\nlb_edge_header_timeouts_total 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("\nlb_edge_connections_accepted_total 4\n"),
        "{metrics}"
    );
    let json = get("/status?format=json");
    assert!(
        json.contains("\"rejected\":{\"400\":1,\"408\":1,\"413\":0,\"414\":1,\"417\":1,"),
        "{json}"
    );
    let text = get("/status");
    assert!(
        text.contains("Edge rejected 400=1 408=1 413=0 414=1 417=1 431=0"),
        "{text}"
    );
    assert_eq!(stats.rejected_total(), 4);
}

/// The text of a ready `Full` body.
fn text_of(body: http_body_util::Full<bytes::Bytes>) -> String {
    use hyper::body::Body;
    let mut body = std::pin::pin!(body);
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut out = Vec::new();
    while let std::task::Poll::Ready(Some(Ok(f))) = body.as_mut().poll_frame(&mut cx) {
        out.extend_from_slice(&f.into_data().unwrap_or_default());
    }
    String::from_utf8(out).unwrap()
}
