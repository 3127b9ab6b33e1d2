//! The proxy under fire: header timeouts, limits, connection caps, checked
//! keep-alive and protocol switches, immediate 503s. Real sockets on
//! loopback; outcomes are asserted, never speed.

mod support;

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use lb_core::{Backend, BackendId, Health, Observer, Outcome, Pool};
use lb_proxy::http::{ForwardConfig, Server};
use lb_proxy::BalanceLayer;
use lb_sched::Balancer;
use support::probe::{probe, until, BodyEnd, Probe};
use support::raw::{closed_silently, exchange, read_answer, Answer};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";

fn probe_balancer(p: &Probe) -> Balancer {
    let pool = Pool::new();
    pool.add(Backend::new("probe", p.addr)).unwrap();
    Balancer::new(pool, lb_sched::build("rr").unwrap())
}

async fn proxy_with(p: &Probe, server: Server) -> TestProxy {
    let layer = BalanceLayer::new(probe_balancer(p));
    start_proxy_with("127.0.0.1", layer, ForwardConfig::default(), server).await
}

fn short_timeout() -> Server {
    Server::new().header_read_timeout(Duration::from_millis(300))
}

#[tokio::test]
async fn no_request_head_in_time_is_answered_408_then_closed() {
    let p = probe().await;
    let server = short_timeout();
    let stats = server.stats();
    let proxy = proxy_with(&p, server).await;

    // Silent from the start.
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    assert_eq!(
        read_answer(&mut s, 1, STEP).await,
        Answer::Statuses(vec![408], false)
    );
    assert!(closed_silently(&mut s, STEP).await, "closed after the 408");

    // Half a head.
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").await.unwrap();
    assert_eq!(
        read_answer(&mut s, 1, STEP).await,
        Answer::Statuses(vec![408], false)
    );
    assert!(closed_silently(&mut s, STEP).await);

    // A byte at a time, each well within the limit: the limit is on the
    // whole head, not on the gaps.
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let mut answer = None;
    for b in b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: "
        .iter()
        .cycle()
        .take(2000)
    {
        if s.write_all(&[*b]).await.is_err() {
            break;
        }
        if let Ok(a) =
            tokio::time::timeout(Duration::from_millis(20), read_answer(&mut s, 1, STEP)).await
        {
            answer = Some(a);
            break;
        }
    }
    assert_eq!(
        answer,
        Some(Answer::Statuses(vec![408], false)),
        "slowloris"
    );

    assert_eq!(stats.rejected(StatusCode::REQUEST_TIMEOUT), 3);
    assert!(p.seen.started.lock().is_empty(), "the backend saw nothing");
}

#[tokio::test]
async fn idle_keep_alive_closes_unanswered_and_slow_responses_do_not_count() {
    let p = probe().await;
    let server = short_timeout();
    let stats = server.stats();
    let proxy = proxy_with(&p, server).await;

    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(GET).await.unwrap();
    assert_eq!(
        read_answer(&mut s, 1, STEP).await,
        Answer::Statuses(vec![200], false)
    );
    // Nothing more: closed without a 408.
    assert!(
        closed_silently(&mut s, STEP).await,
        "idle connection closed"
    );
    assert_eq!(stats.idle_closed(), 1);
    assert_eq!(stats.rejected(StatusCode::REQUEST_TIMEOUT), 0);

    // The clock does not run while a body comes, nor while a response is
    // owed: a body, then a response, each slower than the header timeout,
    // then the next request on the same connection.
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let slow = b"POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n01234";
    s.write_all(slow).await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    s.write_all(b"56789").await.unwrap();
    assert_eq!(
        read_answer(&mut s, 1, STEP).await,
        Answer::Statuses(vec![200], false)
    );
    s.write_all(b"GET /sleep HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        read_answer(&mut s, 1, STEP).await,
        Answer::Statuses(vec![200], false)
    );
    s.write_all(GET).await.unwrap();
    assert_eq!(
        read_answer(&mut s, 1, STEP).await,
        Answer::Statuses(vec![200], false)
    );
    assert_eq!(p.seen.bodies.lock().len(), 4);
    assert_eq!(stats.rejected_total(), 0);
}

#[tokio::test]
async fn configured_limits_answer_414_and_431() {
    let p = probe().await;
    let server = Server::new()
        .max_uri_bytes(100)
        .max_header_bytes(1024)
        .max_headers(5);
    let stats = server.stats();
    let proxy = proxy_with(&p, server).await;
    let go = |raw: Vec<u8>| async move { exchange(proxy.addr, &raw, 1, STEP).await };

    let uri = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "u".repeat(100));
    assert_eq!(
        go(uri.into_bytes()).await,
        Answer::Statuses(vec![414], true)
    );
    let uri = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "u".repeat(99));
    assert_eq!(
        go(uri.into_bytes()).await,
        Answer::Statuses(vec![200], false)
    );

    let big = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX: {}\r\n\r\n",
        "v".repeat(1020)
    );
    assert_eq!(
        go(big.into_bytes()).await,
        Answer::Statuses(vec![431], true)
    );
    let fits = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX: {}\r\n\r\n",
        "v".repeat(1000)
    );
    assert_eq!(
        go(fits.into_bytes()).await,
        Answer::Statuses(vec![200], false)
    );

    let many = b"GET / HTTP/1.1\r\nHost: t\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n";
    assert_eq!(go(many.to_vec()).await, Answer::Statuses(vec![431], true));
    let five = b"GET / HTTP/1.1\r\nHost: t\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n";
    assert_eq!(go(five.to_vec()).await, Answer::Statuses(vec![200], false));

    assert_eq!(stats.rejected(StatusCode::URI_TOO_LONG), 1);
    assert_eq!(
        stats.rejected(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        2
    );
    assert_eq!(p.seen.started.lock().len(), 3, "only the three that fit");
}

#[tokio::test]
async fn a_body_over_max_body_bytes_is_answered_413_and_never_forwarded() {
    let p = probe().await;
    let server = Server::new().with_limits(lb_proxy::http::Limits {
        max_body_bytes: Some(100),
        ..Default::default()
    });
    let stats = server.stats();
    let proxy = proxy_with(&p, server).await;
    let go = |raw: Vec<u8>| async move { exchange(proxy.addr, &raw, 1, STEP).await };
    let sized = |n: usize| {
        let mut r =
            format!("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: {n}\r\n\r\n").into_bytes();
        r.extend(std::iter::repeat_n(b'x', n));
        r
    };
    let chunked = |n: usize| {
        let mut r =
            format!("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n{n:x}\r\n")
                .into_bytes();
        r.extend(std::iter::repeat_n(b'x', n));
        r.extend_from_slice(b"\r\n0\r\n\r\n");
        r
    };
    assert_eq!(go(sized(101)).await, Answer::Statuses(vec![413], true));
    assert_eq!(go(sized(100)).await, Answer::Statuses(vec![200], false));
    assert_eq!(go(chunked(101)).await, Answer::Statuses(vec![413], true));
    assert_eq!(go(chunked(100)).await, Answer::Statuses(vec![200], false));
    assert_eq!(stats.rejected(StatusCode::PAYLOAD_TOO_LARGE), 2);
    assert_eq!(p.seen.started.lock().len(), 2, "only the two that fit");
}

#[tokio::test]
async fn beyond_max_connections_clients_wait_for_a_slot() {
    let p = probe().await;
    let server = Server::new().max_connections(2);
    let stats = server.stats();
    let proxy = proxy_with(&p, server).await;

    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(GET).await.unwrap();
        assert_eq!(
            read_answer(&mut s, 1, STEP).await,
            Answer::Statuses(vec![200], false)
        );
        held.push(s);
    }
    assert_eq!(stats.open(), 2);
    // The kernel completes the handshake; the proxy does not take it on.
    let mut third = TcpStream::connect(proxy.addr).await.unwrap();
    third.write_all(GET).await.unwrap();
    let waiting = read_answer(&mut third, 1, Duration::from_millis(300)).await;
    assert_eq!(
        waiting,
        Answer::Stalled(vec![]),
        "not served while two are open"
    );
    assert_eq!(stats.accepted(), 2);
    assert_eq!(stats.limit_waits(), 1, "accepting paused at the limit");

    drop(held.pop());
    assert_eq!(
        read_answer(&mut third, 1, STEP).await,
        Answer::Statuses(vec![200], false)
    );
    assert_eq!(stats.accepted(), 3);
    assert!(until(STEP, || stats.open() == 2).await);
    assert_eq!(stats.limit_waits(), 2, "and again with the third one in");
}

#[tokio::test]
async fn keep_alive_requests_after_the_first_are_checked_too() {
    let p = probe().await;
    let proxy = proxy_with(&p, Server::new()).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let post =
        b"POST /a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    s.write_all(post).await.unwrap();
    assert_eq!(
        read_answer(&mut s, 1, STEP).await,
        Answer::Statuses(vec![200], false)
    );
    let smuggle = b"POST /b HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    s.write_all(smuggle).await.unwrap();
    assert_eq!(
        read_answer(&mut s, 1, STEP).await,
        Answer::Statuses(vec![400], false)
    );
    assert!(closed_silently(&mut s, STEP).await);
    assert_eq!(*p.seen.started.lock(), vec!["/a".to_owned()]);
}

#[tokio::test]
async fn a_refused_switch_goes_back_to_checking() {
    let p = probe().await;
    let proxy = proxy_with(&p, Server::new()).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    // The probe answers 200, not 101: the connection stays HTTP/1.1.
    let up = b"GET /up HTTP/1.1\r\nHost: t\r\nConnection: upgrade\r\nUpgrade: x-test\r\n\r\n";
    s.write_all(up).await.unwrap();
    assert_eq!(
        read_answer(&mut s, 1, STEP).await,
        Answer::Statuses(vec![200], false)
    );
    s.write_all(b"GET /nul HTTP/1.1\r\nHost: t\r\nX: \0\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        read_answer(&mut s, 1, STEP).await,
        Answer::Statuses(vec![400], false)
    );
    assert_eq!(*p.seen.started.lock(), vec!["/up".to_owned()]);
}

#[tokio::test]
async fn expect_continue_passes_the_head_on_before_the_body() {
    let p = probe().await;
    let proxy = proxy_with(&p, Server::new()).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let head = b"PUT /e HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n";
    s.write_all(head).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(STEP, tokio::io::AsyncReadExt::read(&mut s, &mut buf))
        .await
        .expect("100 in time")
        .unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 100 "),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    s.write_all(b"hello").await.unwrap();
    assert_eq!(
        read_answer(&mut s, 1, STEP).await,
        Answer::Statuses(vec![200], false)
    );
    assert_eq!(
        *p.seen.bodies.lock(),
        vec![("/e".to_owned(), BodyEnd::Complete(5))]
    );
}

#[tokio::test]
async fn an_unknown_expectation_is_answered_417_and_never_forwarded() {
    let p = probe().await;
    let server = Server::new();
    let stats = server.stats();
    let proxy = proxy_with(&p, server).await;

    // No body: 417, and the same connection serves the next request (a
    // HEAD one's 417 has no body, or the next answer would be misread).
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"HEAD /x HTTP/1.1\r\nHost: t\r\nExpect: x-y\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(STEP, tokio::io::AsyncReadExt::read(&mut s, &mut buf))
        .await
        .expect("417 in time")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(text.starts_with("HTTP/1.1 417 "), "{text:?}");
    assert!(text.ends_with("\r\n\r\n"), "no body after a HEAD: {text:?}");
    s.write_all(
        b"GET /y HTTP/1.1\r\nHost: t\r\nExpect: foo\r\n\r\nGET /ok HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(
        read_answer(&mut s, 2, STEP).await,
        Answer::Statuses(vec![417, 200], false)
    );

    // With a body: 417, then closed.
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(
        b"PUT /z HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue, more\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(
        read_answer(&mut s, 1, STEP).await,
        Answer::Statuses(vec![417], false)
    );
    assert!(closed_silently(&mut s, STEP).await, "closed after the 417");

    assert_eq!(
        *p.seen.started.lock(),
        vec!["/ok".to_owned()],
        "only the good one went on"
    );
    assert_eq!(stats.rejected(StatusCode::EXPECTATION_FAILED), 3);
    assert_eq!(stats.rejected_total(), 3);
}

#[tokio::test]
async fn requests_split_into_single_bytes_are_served() {
    let p = probe().await;
    let proxy = proxy_with(&p, Server::new()).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let two = b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
        4;x=y\r\nabcd\r\n0\r\nT: 1\r\n\r\nGET /d HTTP/1.1\r\nHost: t\r\n\r\n";
    for b in two {
        s.write_all(&[*b]).await.unwrap();
    }
    assert_eq!(
        read_answer(&mut s, 2, STEP).await,
        Answer::Statuses(vec![200, 200], false)
    );
    let bodies = p.seen.bodies.lock().clone();
    assert_eq!(
        bodies,
        vec![
            ("/c".to_owned(), BodyEnd::Complete(4)),
            ("/d".to_owned(), BodyEnd::Complete(0))
        ]
    );
}

#[tokio::test]
async fn a_chunked_body_gone_bad_midway_is_cut_off_and_not_blamed_on_the_backend() {
    let p = probe().await;
    let server = Server::new();
    let stats = server.stats();
    let rec = Arc::new(Recorder::default());
    let layer = BalanceLayer::new(probe_balancer(&p)).observer(rec.clone());
    let proxy = start_proxy_with("127.0.0.1", layer, ForwardConfig::default(), server).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"POST /m HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        .await
        .unwrap();
    // The head went on (nothing wrong was known): wait for the first chunk.
    assert!(
        until(STEP, || p
            .seen
            .received
            .load(std::sync::atomic::Ordering::SeqCst)
            == 5)
        .await
    );
    s.write_all(b"zz\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    // An answer may still get out (400: the client's fault), then the end.
    match read_answer(&mut s, 2, STEP).await {
        Answer::Statuses(st, true) => assert!(st.iter().all(|s| *s == 400), "{st:?}"),
        other => panic!("expected the connection closed, got {other:?}"),
    }
    assert!(until(STEP, || !p.seen.bodies.lock().is_empty()).await);
    assert_eq!(
        *p.seen.bodies.lock(),
        vec![("/m".to_owned(), BodyEnd::Failed(5))]
    );
    assert_eq!(
        *p.seen.started.lock(),
        vec!["/m".to_owned()],
        "nothing smuggled"
    );
    assert_eq!(stats.bad_bodies(), 1);
    assert!(
        rec.outcomes().is_empty(),
        "no outcome blamed on the backend: {:?}",
        rec.outcomes()
    );
}

/// Marks a backend down on its first failure, as passive health checking
/// (lb-health) does through the same two interfaces.
#[derive(Debug)]
struct EjectOnFailure(Pool, parking_lot::Mutex<Vec<(BackendId, Outcome)>>);

impl Observer for EjectOnFailure {
    fn observe(&self, backend: BackendId, outcome: Outcome, _: Duration) {
        self.1.lock().push((backend, outcome));
        if !outcome.is_success() {
            let _ = self.0.set_health(backend, Health::Down);
        }
    }
}

#[tokio::test]
async fn nothing_eligible_is_an_immediate_503() {
    let mut a = backend("a", "127.0.0.1").await;
    let lb = balancer(&[(&a, 1)], "rr");
    let eject = Arc::new(EjectOnFailure(lb.pool().clone(), Default::default()));
    // Timeouts far beyond the test's: a 503 cannot come from waiting.
    let forward = ForwardConfig {
        connect_timeout: Some(Duration::from_secs(3600)),
        response_timeout: Some(Duration::from_secs(3600)),
        ..ForwardConfig::default()
    };
    let layer = BalanceLayer::new(lb.clone()).observer(eject.clone());
    let proxy = start_proxy_with("127.0.0.1", layer, forward, Server::new()).await;
    let go = || async {
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(GET).await.unwrap();
        read_answer(&mut s, 1, STEP).await
    };

    assert_eq!(go().await, Answer::Statuses(vec![200], false));
    // Full: every backend at its max_conns.
    let id = lb.pool().find("a").unwrap();
    lb.pool().set_max_conns(id, 1).unwrap();
    let lease = lb.pool().load().get(id).unwrap().connect();
    assert_eq!(go().await, Answer::Statuses(vec![503], false));
    drop(lease);
    assert_eq!(go().await, Answer::Statuses(vec![200], false));
    // Dead: one refused attempt ejects it (503: it could not be connected
    // to), then 503 at once, with no further attempt and no wait for a
    // check round.
    a.kill().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(go().await, Answer::Statuses(vec![503], false));
    assert_eq!(lb.pool().load().get(id).unwrap().health(), Health::Down);
    for _ in 0..3 {
        assert_eq!(go().await, Answer::Statuses(vec![503], false));
    }
    let failures = eject
        .1
        .lock()
        .iter()
        .filter(|(_, o)| !o.is_success())
        .count();
    assert_eq!(failures, 1, "no attempt after the ejection");
    assert_eq!(a.hits.load(std::sync::atomic::Ordering::SeqCst), 2);
}
