//! The HTTP proxy on real loopback sockets, with real backends and clients.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use lb_core::{Health, Outcome};
use lb_proxy::http::{ForwardConfig, HostHeader};
use lb_proxy::{BalanceLayer, Retry};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn names(c: &TestClient, addr: std::net::SocketAddr, n: usize) -> String {
    let mut out = String::new();
    for _ in 0..n {
        let (status, body) = get(c, addr, "/").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        out.push_str(&body);
    }
    out
}

#[tokio::test]
async fn rr_takes_exact_turns() {
    let (a, b, c) = (
        backend("a", "127.0.0.1").await,
        backend("b", "127.0.0.1").await,
        backend("c", "127.0.0.1").await,
    );
    let lb = balancer(&[(&a, 1), (&b, 1), (&c, 1)], "rr");
    let p = start_proxy("127.0.0.1", BalanceLayer::new(lb), ForwardConfig::default()).await;
    assert_eq!(names(&client(), p.addr, 9).await, "abcabcabc");
}

#[tokio::test]
async fn wrr_weights_two_to_one_exact_over_each_cycle() {
    let (a, b) = (
        backend("a", "127.0.0.1").await,
        backend("b", "127.0.0.1").await,
    );
    let lb = balancer(&[(&a, 2), (&b, 1)], "wrr");
    let p = start_proxy(
        "127.0.0.1",
        BalanceLayer::new(lb.clone()),
        ForwardConfig::default(),
    )
    .await;
    // nginx's smooth order for weights 2, 1.
    assert_eq!(names(&client(), p.addr, 9).await, "abaabaaba");
    let snap = lb.pool().load();
    assert!(
        snap.members().iter().all(|m| m.conns() == 0),
        "every request closed its lease"
    );
    assert_eq!(snap.members()[0].counters().total(), 6);
    assert_eq!(snap.members()[0].counters().successes(), 6);
}

#[tokio::test]
async fn killed_backend_is_retried_invisibly_and_reported() {
    let (a, mut b, c) = (
        backend("a", "127.0.0.1").await,
        backend("b", "127.0.0.1").await,
        backend("c", "127.0.0.1").await,
    );
    let lb = balancer(&[(&a, 1), (&b, 1), (&c, 1)], "rr");
    let dead = lb.pool().find("b").unwrap();
    let rec = Arc::new(Recorder::default());
    let layer = BalanceLayer::new(lb.clone()).observer(rec.clone());
    let p = start_proxy("127.0.0.1", layer, ForwardConfig::default()).await;
    let cl = client();
    assert_eq!(names(&cl, p.addr, 3).await, "abc");
    b.kill().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    for i in 0..30 {
        let (status, body) = get(&cl, p.addr, "/").await;
        assert_eq!(status, StatusCode::OK, "request {i}: {body}");
        assert_ne!(body, "b", "request {i}");
    }
    let failures: Vec<_> = rec
        .outcomes()
        .into_iter()
        .filter(|(_, o)| !o.is_success())
        .collect();
    assert!(
        !failures.is_empty(),
        "the dead backend's failures reach the observer"
    );
    assert!(failures.iter().all(|(id, _)| *id == dead), "{failures:?}");
    assert!(
        failures
            .iter()
            .all(|(_, o)| matches!(o, Outcome::ConnectFailed | Outcome::Broken)),
        "{failures:?}"
    );
    let m = lb.pool().load().get(dead).unwrap().clone();
    assert_eq!(m.counters().failures() as usize, failures.len());
}

#[tokio::test]
async fn all_backends_down_or_refusing_answers_503() {
    let (mut a, mut b) = (
        backend("a", "127.0.0.1").await,
        backend("b", "127.0.0.1").await,
    );
    let lb = balancer(&[(&a, 1), (&b, 1)], "wrr");
    for m in lb.pool().load().members() {
        lb.pool().set_health(m.id(), Health::Down).unwrap();
    }
    let p = start_proxy(
        "127.0.0.1",
        BalanceLayer::new(lb.clone()),
        ForwardConfig::default(),
    )
    .await;
    let cl = client();
    let (status, body) = get(&cl, p.addr, "/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("no backend"), "{body}");
    // Up again but not listening: every try fails to connect, and the
    // answer is 503 too (as HAProxy's when it cannot connect to any server).
    for m in lb.pool().load().members() {
        lb.pool().set_health(m.id(), Health::Up).unwrap();
    }
    a.kill().await;
    b.kill().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (status, body) = get(&cl, p.addr, "/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
}

#[tokio::test]
async fn slow_backend_answers_504_at_the_timeout() {
    let a = backend("a", "127.0.0.1").await;
    let lb = balancer(&[(&a, 1)], "rr");
    let fwd = ForwardConfig {
        response_timeout: Some(Duration::from_millis(300)),
        ..ForwardConfig::default()
    };
    let rec = Arc::new(Recorder::default());
    let p = start_proxy(
        "127.0.0.1",
        BalanceLayer::new(lb).observer(rec.clone()),
        fwd,
    )
    .await;
    let (status, body) = get(&client(), p.addr, "/slow?ms=10000").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(rec.outcomes().last().map(|o| o.1), Some(Outcome::Timeout));
    let (status, _) = get(&client(), p.addr, "/slow?ms=10").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn malformed_request_gets_400_and_the_proxy_keeps_serving() {
    let a = backend("a", "127.0.0.1").await;
    let p = start_proxy(
        "127.0.0.1",
        BalanceLayer::new(balancer(&[(&a, 1)], "rr")),
        ForwardConfig::default(),
    )
    .await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"\x16\x03 GARBAGE \r\n\x00\x01 not http at all\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(STEP, s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&buf);
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert_eq!(
        get(&client(), p.addr, "/").await,
        (StatusCode::OK, "a".to_owned())
    );
    assert_eq!(
        a.hits.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "garbage never reached the backend"
    );
}

#[tokio::test]
async fn forwarded_headers_and_hop_by_hop_rules() {
    let a = backend("a", "127.0.0.1").await;
    let p = start_proxy(
        "127.0.0.1",
        BalanceLayer::new(balancer(&[(&a, 1)], "rr")),
        ForwardConfig::default(),
    )
    .await;
    let req = Request::get(format!("http://{}/headers", p.addr))
        .header("x-forwarded-for", "203.0.113.9")
        .header("connection", "x-private")
        .header("x-private", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic eA==")
        .header("x-public", "2")
        .body(http_body_util::Full::new(Bytes::new()).boxed())
        .unwrap();
    let resp = tokio::time::timeout(STEP, client().request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.headers()["x-backend-public"], "a");
    assert!(
        resp.headers().get("x-backend-private").is_none(),
        "named in the backend's Connection"
    );
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let seen = String::from_utf8_lossy(&body);
    assert!(
        seen.contains("x-forwarded-for: 203.0.113.9, 127.0.0.1\n"),
        "{seen}"
    );
    assert!(seen.contains("x-forwarded-proto: http\n"), "{seen}");
    assert!(
        seen.contains(&format!(
            "forwarded: for=127.0.0.1;proto=http;host=\"{}\"\n",
            p.addr
        )),
        "{seen}"
    );
    assert!(
        seen.contains(&format!("host: {}\n", p.addr)),
        "Host passes through: {seen}"
    );
    assert!(seen.contains("x-public: 2\n"), "{seen}");
    for gone in ["x-private", "keep-alive", "proxy-authorization"] {
        assert!(
            !seen.contains(&format!("{gone}:")),
            "{gone} must not reach the backend: {seen}"
        );
    }
}

#[tokio::test]
async fn host_is_rewritten_when_asked() {
    let a = backend("a", "127.0.0.1").await;
    let lb = balancer(&[(&a, 1)], "rr");
    let fwd = ForwardConfig {
        host: HostHeader::Backend,
        ..ForwardConfig::default()
    };
    let p = start_proxy("127.0.0.1", BalanceLayer::new(lb.clone()), fwd).await;
    let (_, seen) = get(&client(), p.addr, "/headers").await;
    assert!(seen.contains(&format!("host: {}\n", a.addr)), "{seen}");
    let fwd = ForwardConfig {
        host: HostHeader::Fixed("api.example".parse().unwrap()),
        ..ForwardConfig::default()
    };
    let p = start_proxy("127.0.0.1", BalanceLayer::new(lb), fwd).await;
    let (_, seen) = get(&client(), p.addr, "/headers").await;
    assert!(seen.contains("host: api.example\n"), "{seen}");
}

#[tokio::test]
async fn retries_never_repeat_a_tried_backend() {
    let (a, b, c) = (
        backend("a", "127.0.0.1").await,
        backend("b", "127.0.0.1").await,
        backend("c", "127.0.0.1").await,
    );
    let lb = balancer(&[(&a, 1), (&b, 1), (&c, 1)], "rr");
    let rec = Arc::new(Recorder::default());
    let retry = Retry::default().tries(5).on_status(&[502]).unwrap();
    let layer = BalanceLayer::new(lb.clone())
        .observer(rec.clone())
        .retry(retry);
    let p = start_proxy("127.0.0.1", layer, ForwardConfig::default()).await;
    // Every backend answers 502: each is tried once, then the last 502 is passed on.
    let (status, _) = get(&client(), p.addr, "/status?code=502").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let hits: Vec<u64> = [&a, &b, &c]
        .iter()
        .map(|x| x.hits.load(std::sync::atomic::Ordering::SeqCst))
        .collect();
    assert_eq!(hits, vec![1, 1, 1], "three tries, three different backends");
    let outcomes = rec.outcomes();
    assert_eq!(outcomes.len(), 3);
    assert!(
        outcomes.iter().all(|(_, o)| *o == Outcome::BadStatus(502)),
        "{outcomes:?}"
    );
    // POST is not idempotent: one try only.
    let req = Request::post(format!("http://{}/status?code=502", p.addr))
        .body(http_body_util::Full::new(Bytes::new()).boxed())
        .unwrap();
    let resp = tokio::time::timeout(STEP, client().request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(rec.outcomes().len(), 4);
}

#[tokio::test]
async fn ipv6_loopback_end_to_end() {
    let (a, b) = (backend("a", "::1").await, backend("b", "::1").await);
    let p = start_proxy(
        "::1",
        BalanceLayer::new(balancer(&[(&a, 1), (&b, 1)], "rr")),
        ForwardConfig::default(),
    )
    .await;
    let cl = client();
    assert_eq!(names(&cl, p.addr, 4).await, "abab");
    let (_, seen) = get(&cl, p.addr, "/headers").await;
    assert!(seen.contains("x-forwarded-for: ::1\n"), "{seen}");
    assert!(
        seen.contains("forwarded: for=\"[::1]\";proto=http"),
        "{seen}"
    );
}

const BIG: u64 = 100 * 1024 * 1024;

#[tokio::test]
async fn hundred_megabytes_stream_up_and_down() {
    let a = backend("a", "127.0.0.1").await;
    let p = start_proxy(
        "127.0.0.1",
        BalanceLayer::new(balancer(&[(&a, 1)], "rr")),
        ForwardConfig::default(),
    )
    .await;
    let cl = client();
    let mut want = Fnv::new();
    let mut off = 0;
    while off < BIG {
        let len = (BIG - off).min(64 * 1024) as usize;
        want.update(&pattern_chunk(off, len));
        off += len as u64;
    }
    let req = Request::post(format!("http://{}/upload", p.addr))
        .body(Generated::new(BIG).boxed())
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(120), cl.request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        String::from_utf8_lossy(&body),
        format!("{BIG} {:016x}", want.0)
    );

    let uri = format!("http://{}/download?bytes={BIG}", p.addr);
    let req = Request::get(uri)
        .body(http_body_util::Full::new(Bytes::new()).boxed())
        .unwrap();
    let resp = tokio::time::timeout(STEP, cl.request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let (mut n, mut got) = (0u64, Fnv::new());
    let all = async {
        while let Some(frame) = body.frame().await {
            if let Ok(d) = frame.unwrap().into_data() {
                n += d.len() as u64;
                got.update(&d);
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), all)
        .await
        .unwrap();
    assert_eq!((n, got.0), (BIG, want.0));
}

#[tokio::test]
async fn websocket_upgrade_passes_through() {
    let a = backend("a", "127.0.0.1").await;
    let lb = balancer(&[(&a, 1)], "rr");
    let p = start_proxy(
        "127.0.0.1",
        BalanceLayer::new(lb.clone()),
        ForwardConfig::default(),
    )
    .await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    let handshake = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        p.addr
    );
    s.write_all(handshake.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tokio::time::timeout(STEP, s.read_exact(&mut byte))
            .await
            .unwrap()
            .unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    // One masked text frame, "hello", as RFC 6455 section 5.2 lays it out.
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x81, 0x80 | 5];
    frame.extend_from_slice(&mask);
    frame.extend(b"hello".iter().enumerate().map(|(i, c)| c ^ mask[i % 4]));
    s.write_all(&frame).await.unwrap();
    let mut echo = vec![0u8; frame.len()];
    tokio::time::timeout(STEP, s.read_exact(&mut echo))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(echo[0], 0x81, "FIN + text");
    let payload: Vec<u8> = echo[6..]
        .iter()
        .enumerate()
        .map(|(i, c)| c ^ echo[2 + i % 4])
        .collect();
    assert_eq!(payload, b"hello");
    let m = lb.pool().load().members()[0].clone();
    assert_eq!(m.active(), 1, "the open tunnel is counted on its backend");
    drop(s);
    let closed = async {
        while m.conns() != 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(STEP, closed)
        .await
        .expect("the tunnel's lease ends with it");
}

#[tokio::test]
async fn http2_prior_knowledge_clients_are_served() {
    use hyper_util::client::legacy::{connect::HttpConnector, Client};
    let (a, b) = (
        backend("a", "127.0.0.1").await,
        backend("b", "127.0.0.1").await,
    );
    let p = start_proxy(
        "127.0.0.1",
        BalanceLayer::new(balancer(&[(&a, 1), (&b, 1)], "rr")),
        ForwardConfig::default(),
    )
    .await;
    let h2: Client<HttpConnector, http_body_util::Full<Bytes>> =
        Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build(HttpConnector::new());
    let mut seen = String::new();
    for path in ["/", "/", "/headers"] {
        let resp = tokio::time::timeout(
            STEP,
            h2.get(format!("http://{}{path}", p.addr).parse().unwrap()),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(resp.version(), http::Version::HTTP_2);
        assert_eq!(resp.status(), StatusCode::OK);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        seen.push_str(&String::from_utf8_lossy(&body));
        seen.push('|');
    }
    assert!(seen.starts_with("a|b|"), "{seen}");
    assert!(
        seen.contains(&format!("host: {}\n", p.addr)),
        "the HTTP/2 authority becomes Host: {seen}"
    );
}

#[tokio::test]
async fn a_request_with_a_body_is_never_sent_twice() {
    let (mut a, b) = (
        backend("a", "127.0.0.1").await,
        backend("b", "127.0.0.1").await,
    );
    let lb = balancer(&[(&a, 1), (&b, 1)], "rr");
    let rec = Arc::new(Recorder::default());
    let layer = BalanceLayer::new(lb)
        .observer(rec.clone())
        .retry(Retry::default().tries(3));
    let p = start_proxy("127.0.0.1", layer, ForwardConfig::default()).await;
    a.kill().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    // PUT is idempotent, but its body is gone once sent: a's refusal is the
    // answer (503: a could not be connected to).
    let req = Request::put(format!("http://{}/upload", p.addr))
        .body(http_body_util::Full::new(Bytes::from_static(b"payload")).boxed())
        .unwrap();
    let resp = tokio::time::timeout(STEP, client().request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(rec.outcomes().len(), 1, "one attempt only");
    assert_eq!(b.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    // The same PUT with an empty body is retried on b (rr sends one of
    // these two to a first).
    for _ in 0..2 {
        let req = Request::put(format!("http://{}/upload", p.addr))
            .body(http_body_util::Full::new(Bytes::new()).boxed())
            .unwrap();
        let resp = tokio::time::timeout(STEP, client().request(req))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let failed = rec
        .outcomes()
        .iter()
        .filter(|(_, o)| !o.is_success())
        .count();
    assert_eq!(
        (rec.outcomes().len(), failed),
        (4, 2),
        "{:?}",
        rec.outcomes()
    );
}

/// The response timeout runs from the last request byte sent, as nginx's
/// `proxy_read_timeout` starts once the request is sent: an upload that
/// takes longer than the timeout, but never pauses that long, goes through;
/// one that stops for longer gets 504.
#[tokio::test]
async fn a_slow_upload_is_not_cut_by_the_response_timeout() {
    let a = backend("a", "127.0.0.1").await;
    let fwd = ForwardConfig {
        response_timeout: Some(Duration::from_millis(300)),
        ..ForwardConfig::default()
    };
    let p = start_proxy(
        "127.0.0.1",
        BalanceLayer::new(balancer(&[(&a, 1)], "rr")),
        fwd,
    )
    .await;
    let upload = |pause: Duration| async move {
        let mut s = TcpStream::connect(p.addr).await.unwrap();
        let head =
            "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n";
        s.write_all(head.as_bytes()).await.unwrap();
        for i in 0..10 {
            if i > 0 {
                tokio::time::sleep(pause).await;
            }
            // A write may fail once the proxy has answered early.
            if s.write_all(&[b'x'; 100]).await.is_err() {
                break;
            }
        }
        let mut out = String::new();
        tokio::time::timeout(STEP, s.read_to_string(&mut out))
            .await
            .unwrap()
            .ok();
        out
    };
    // Ten pieces 100 ms apart: a second in all, past the 300 ms timeout.
    let out = upload(Duration::from_millis(100)).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        out.contains("\r\n\r\n1000 "),
        "the whole body arrived: {out}"
    );
    // A pause longer than the timeout while the body is going on: 504.
    let out = upload(Duration::from_millis(700)).await;
    assert!(out.starts_with("HTTP/1.1 504"), "{out}");
}
