//! The proxy's own HTTP/1.1 client (the forwarder's default): response
//! framing (chunked with extensions and trailers, close-delimited, bodiless
//! responses that carry a Content-Length), interim responses, keep-alive
//! reuse and its limits, requests resent after a reused connection turned
//! out closed, bodies cut short, malformed responses, and large bodies both
//! ways. Most backends here are raw TCP servers written in the test, so
//! every byte and every connection is the test's own.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use lb_core::{Backend, Pool};
use lb_proxy::http::ForwardConfig;
use lb_proxy::BalanceLayer;
use lb_sched::Balancer;
use support::scripted::{answering, raw, Raw};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn proxy_to_addr(addr: SocketAddr) -> TestProxy {
    let pool = Pool::new();
    pool.add(Backend::new("raw", addr)).unwrap();
    let lb = Balancer::new(pool, lb_sched::build("rr").unwrap());
    start_proxy("127.0.0.1", BalanceLayer::new(lb), ForwardConfig::default()).await
}

async fn request(
    c: &TestClient,
    req: Request<http_body_util::combinators::BoxBody<Bytes, Infallible>>,
) -> (StatusCode, Result<Bytes, String>) {
    let resp = tokio::time::timeout(STEP, c.request(req))
        .await
        .expect("response in time")
        .expect("response");
    let status = resp.status();
    let body = tokio::time::timeout(STEP, resp.into_body().collect())
        .await
        .expect("the body ends or fails in time, never hangs")
        .map(|b| b.to_bytes())
        .map_err(|e| e.to_string());
    (status, body)
}

fn empty(
    method: &str,
    addr: SocketAddr,
    path: &str,
) -> Request<http_body_util::combinators::BoxBody<Bytes, Infallible>> {
    Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .body(http_body_util::Full::new(Bytes::new()).boxed())
        .unwrap()
}

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
async fn chunked_responses_with_extensions_and_trailers_are_decoded_and_reused() {
    let b = answering(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
          5;name=value\r\nhello\r\n6 ; x\r\n world\r\n0\r\nx-sum: 42\r\n\r\n",
    )
    .await;
    let p = proxy_to_addr(b.addr).await;
    let c = client();
    for _ in 0..5 {
        let (status, body) = request(&c, empty("GET", p.addr, "/")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.unwrap(), "hello world");
    }
    assert_eq!(
        b.accepted.load(Ordering::SeqCst),
        1,
        "one connection for all"
    );
}

#[tokio::test]
async fn a_close_delimited_response_is_read_to_the_end_and_not_reused() {
    let b = raw(|mut c| async move {
        if c.request().await.is_some() {
            c.send(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the ")
                .await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            c.send(b"close").await;
        }
    })
    .await;
    let p = proxy_to_addr(b.addr).await;
    let c = client();
    for _ in 0..3 {
        let (status, body) = request(&c, empty("GET", p.addr, "/")).await;
        assert_eq!(
            (status, body.unwrap()),
            (StatusCode::OK, Bytes::from("until the close"))
        );
    }
    assert_eq!(b.accepted.load(Ordering::SeqCst), 3, "a connection each");
}

#[tokio::test]
async fn head_204_and_304_bodies_are_not_read_whatever_their_length() {
    let b = raw(|mut c| async move {
        while let Some((head, _)) = c.request().await {
            let answer: &[u8] = if head.starts_with("HEAD") {
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"
            } else if head.contains("/204") {
                b"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n"
            } else if head.contains("/304") {
                b"HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\n"
            } else {
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
            };
            if !c.send(answer).await {
                return;
            }
        }
    })
    .await;
    let p = proxy_to_addr(b.addr).await;
    let c = client();
    for round in 0..3 {
        let (status, body) = request(&c, empty("HEAD", p.addr, "/")).await;
        assert_eq!(
            (status, body.unwrap()),
            (StatusCode::OK, Bytes::new()),
            "round {round}"
        );
        let (status, body) = request(&c, empty("GET", p.addr, "/204")).await;
        assert_eq!(
            (status, body.unwrap()),
            (StatusCode::NO_CONTENT, Bytes::new())
        );
        let (status, body) = request(&c, empty("GET", p.addr, "/304")).await;
        assert_eq!(
            (status, body.unwrap()),
            (StatusCode::NOT_MODIFIED, Bytes::new())
        );
        let (status, body) = request(&c, empty("GET", p.addr, "/")).await;
        assert_eq!((status, body.unwrap()), (StatusCode::OK, Bytes::from("ok")));
    }
    assert_eq!(
        b.accepted.load(Ordering::SeqCst),
        1,
        "nothing was misread as a body, so the connection stayed in step"
    );
}

#[tokio::test]
async fn interim_responses_are_skipped() {
    let b = answering(
        b"HTTP/1.1 100 Continue\r\n\r\n\
          HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n\
          HTTP/1.1 102 Processing\r\n\r\n\
          HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\ndone",
    )
    .await;
    let p = proxy_to_addr(b.addr).await;
    let c = client();
    for _ in 0..2 {
        let (status, body) = request(&c, empty("GET", p.addr, "/")).await;
        assert_eq!(
            (status, body.unwrap()),
            (StatusCode::OK, Bytes::from("done"))
        );
    }
    assert_eq!(b.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn keep_alive_serves_many_requests_on_one_connection() {
    let b = raw(|mut c| async move {
        let mut i = 0u32;
        while c.request().await.is_some() {
            i += 1;
            let answer = if i % 2 == 0 {
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{i}",
                    i.to_string().len()
                )
            } else {
                let s = i.to_string();
                format!(
                    "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{s}\r\n0\r\n\r\n",
                    s.len()
                )
            };
            if !c.send(answer.as_bytes()).await {
                return;
            }
        }
    })
    .await;
    let p = proxy_to_addr(b.addr).await;
    let c = client();
    for i in 1..=50u32 {
        let (status, body) = request(&c, empty("GET", p.addr, "/")).await;
        assert_eq!(
            (status, body.unwrap()),
            (StatusCode::OK, Bytes::from(i.to_string()))
        );
    }
    assert_eq!(b.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(b.eofs.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_streamed_sized_body_leaves_its_connection_reusable() {
    // The body comes after the head, in pieces: read as it streams, and
    // the connection is reused once its last byte is read.
    let b = raw(|mut c| async move {
        while c.request().await.is_some() {
            let head = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n";
            if !c.send(head).await {
                return;
            }
            for piece in [&b"01234"[..], b"56789"] {
                tokio::time::sleep(Duration::from_millis(20)).await;
                if !c.send(piece).await {
                    return;
                }
            }
        }
    })
    .await;
    let p = proxy_to_addr(b.addr).await;
    let c = client();
    for _ in 0..3 {
        let (status, body) = request(&c, empty("GET", p.addr, "/")).await;
        assert_eq!(
            (status, body.unwrap()),
            (StatusCode::OK, Bytes::from("0123456789"))
        );
    }
    assert_eq!(
        b.accepted.load(Ordering::SeqCst),
        1,
        "one connection for all"
    );
}

#[tokio::test]
async fn connection_close_from_the_backend_is_honoured() {
    // The backend says `Connection: close` but leaves the socket open: the
    // proxy must neither reuse it nor keep it.
    let b = answering(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok").await;
    let p = proxy_to_addr(b.addr).await;
    let c = client();
    for _ in 0..3 {
        let (status, body) = request(&c, empty("GET", p.addr, "/")).await;
        assert_eq!((status, body.unwrap()), (StatusCode::OK, Bytes::from("ok")));
    }
    assert_eq!(b.accepted.load(Ordering::SeqCst), 3, "a connection each");
    reaches(&b.eofs, 3).await;
}

#[tokio::test]
async fn http_10_responses_are_not_reused() {
    let b = answering(b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
    let p = proxy_to_addr(b.addr).await;
    let c = client();
    for _ in 0..2 {
        let (status, body) = request(&c, empty("GET", p.addr, "/")).await;
        assert_eq!((status, body.unwrap()), (StatusCode::OK, Bytes::from("ok")));
    }
    assert_eq!(b.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_connection_the_backend_closed_while_idle_is_not_used() {
    let b = raw(|mut c| async move {
        if c.request().await.is_some() {
            c.send(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await;
        }
        // Closed at once, without saying so.
    })
    .await;
    let p = proxy_to_addr(b.addr).await;
    let c = client();
    for i in 1..=4 {
        let (status, body) = request(&c, empty("POST", p.addr, "/")).await;
        assert_eq!((status, body.unwrap()), (StatusCode::OK, Bytes::from("ok")));
        // Let the close arrive before the next request.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(b.accepted.load(Ordering::SeqCst), i);
    }
}

#[tokio::test]
async fn an_idle_connection_the_backend_wrote_on_is_not_used() {
    // As some servers do at their keep-alive timeout: a 408 on the idle
    // connection, left open. It answers no request of the proxy's.
    let b = raw(|mut c| async move {
        if c.request().await.is_some() {
            c.send(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await;
            tokio::time::sleep(Duration::from_millis(10)).await;
            c.send(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n\r\n")
                .await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
    })
    .await;
    let p = proxy_to_addr(b.addr).await;
    let c = client();
    for i in 1..=3 {
        let (status, body) = request(&c, empty("POST", p.addr, "/")).await;
        assert_eq!((status, body.unwrap()), (StatusCode::OK, Bytes::from("ok")));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(b.accepted.load(Ordering::SeqCst), i);
    }
}

/// A backend whose first connection answers one request, then reads the
/// next and closes without a word (its keep-alive timeout racing the
/// request); later connections answer everything.
async fn closes_on_the_second_request() -> Raw {
    raw(|mut c| async move {
        let mut served = 0;
        while c.request().await.is_some() {
            if c.n == 0 && served == 1 {
                return;
            }
            served += 1;
            if !c
                .send(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
            {
                return;
            }
        }
    })
    .await
}

#[tokio::test]
async fn a_get_that_a_reused_connection_dropped_unanswered_is_sent_again() {
    let b = closes_on_the_second_request().await;
    let recorder = Arc::new(Recorder::default());
    let pool = Pool::new();
    pool.add(Backend::new("raw", b.addr)).unwrap();
    let lb = Balancer::new(pool, lb_sched::build("rr").unwrap());
    let layer = BalanceLayer::new(lb)
        .observer(recorder.clone())
        .retry(lb_proxy::Retry::default().tries(1));
    let p = start_proxy("127.0.0.1", layer, ForwardConfig::default()).await;
    let c = client();
    for _ in 0..2 {
        let (status, body) = request(&c, empty("GET", p.addr, "/")).await;
        assert_eq!((status, body.unwrap()), (StatusCode::OK, Bytes::from("ok")));
    }
    assert_eq!(b.accepted.load(Ordering::SeqCst), 2);
    assert!(
        recorder.outcomes().iter().all(|(_, o)| o.is_success()),
        "no failure reported: {:?}",
        recorder.outcomes()
    );
}

#[tokio::test]
async fn a_post_that_a_reused_connection_dropped_unanswered_is_not_sent_again() {
    let b = closes_on_the_second_request().await;
    let p = proxy_to_addr(b.addr).await;
    let c = client();
    let (status, _) = request(&c, empty("POST", p.addr, "/")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = request(&c, empty("POST", p.addr, "/")).await;
    assert_eq!(
        status,
        StatusCode::BAD_GATEWAY,
        "the backend may have acted on it"
    );
    assert_eq!(b.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_backend_that_closes_mid_body_cuts_the_response() {
    for answer in [
        &b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten b"[..],
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n64\r\nonly ten b",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
    ] {
        let b = raw(move |mut c| async move {
            if c.request().await.is_some() {
                c.send(answer).await;
            }
        })
        .await;
        let p = proxy_to_addr(b.addr).await;
        let c = client();
        // The head may be out before the cut or not (hyper's server may
        // hold it back with the first piece): either way the client sees
        // an error, never a whole response, and never waits for ever.
        let resp = tokio::time::timeout(STEP, c.request(empty("GET", p.addr, "/")))
            .await
            .expect("an answer or an error in time");
        if let Ok(resp) = resp {
            assert_eq!(resp.status(), StatusCode::OK);
            let body = tokio::time::timeout(STEP, resp.into_body().collect())
                .await
                .expect("the body ends or fails in time, never hangs");
            assert!(body.is_err(), "the client sees the cut");
        }
    }
}

#[tokio::test]
async fn malformed_responses_are_502() {
    let big = format!(
        "HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: 0\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let big: &'static [u8] = Box::leak(big.into_bytes().into_boxed_slice());
    for answer in [
        &b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\ncontent-length: two\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\ncontent-length: 0\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\nconnection: upgrade\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
        big,
    ] {
        let b = answering(answer).await;
        let p = proxy_to_addr(b.addr).await;
        let c = client();
        let (status, _) = request(&c, empty("GET", p.addr, "/")).await;
        assert_eq!(
            status,
            StatusCode::BAD_GATEWAY,
            "{:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(80)])
        );
    }
}

/// A body of `total` bytes with no size known ahead: sent chunked.
struct Unsized(Generated);

impl Body for Unsized {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.0).poll_frame(cx)
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

const TEN_MB: u64 = 10 * 1024 * 1024 + 12345;

fn pattern_sum(total: u64) -> u64 {
    let mut want = Fnv::new();
    let mut off = 0;
    while off < total {
        let len = (total - off).min(64 * 1024) as usize;
        want.update(&pattern_chunk(off, len));
        off += len as u64;
    }
    want.0
}

#[tokio::test]
async fn ten_megabytes_stream_up_chunked_and_down_chunked() {
    // Up: a body of no known size goes to the backend chunked.
    let a = backend("a", "127.0.0.1").await;
    let p = start_proxy(
        "127.0.0.1",
        BalanceLayer::new(balancer(&[(&a, 1)], "rr")),
        ForwardConfig::default(),
    )
    .await;
    let c = client();
    let req = Request::post(format!("http://{}/upload", p.addr))
        .body(Unsized(Generated::new(TEN_MB)).boxed())
        .unwrap();
    let (status, body) = request(&c, req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        String::from_utf8_lossy(&body.unwrap()),
        format!("{TEN_MB} {:016x}", pattern_sum(TEN_MB))
    );

    // Down: a raw backend sends it chunked, in chunks of varied sizes.
    let b = raw(|mut c| async move {
        while c.request().await.is_some() {
            if !c
                .send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                .await
            {
                return;
            }
            let mut off = 0u64;
            let mut size = 1usize;
            while off < TEN_MB {
                let len = ((TEN_MB - off) as usize).min(size);
                let mut wire = format!("{len:x};n={off}\r\n").into_bytes();
                wire.extend_from_slice(&pattern_chunk(off, len));
                wire.extend_from_slice(b"\r\n");
                if !c.send(&wire).await {
                    return;
                }
                off += len as u64;
                size = (size * 7 + 13) % (200 * 1024) + 1;
            }
            if !c.send(b"0\r\nx-done: yes\r\n\r\n").await {
                return;
            }
        }
    })
    .await;
    let p = proxy_to_addr(b.addr).await;
    for _ in 0..2 {
        let resp = c.request(empty("GET", p.addr, "/")).await.unwrap();
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
        assert_eq!((n, got.0), (TEN_MB, pattern_sum(TEN_MB)));
    }
    assert_eq!(
        b.accepted.load(Ordering::SeqCst),
        1,
        "reused after a whole chunked body"
    );
}

#[tokio::test]
async fn an_early_answer_to_an_upload_reaches_the_client() {
    // The backend answers before reading the body (as a 413 would), then
    // closes: the client gets the answer.
    let b = raw(|mut c| async move {
        if c.head().await.is_some() {
            c.send(b"HTTP/1.1 413 Payload Too Large\r\nconnection: close\r\ncontent-length: 3\r\n\r\nbig")
                .await;
            // Not closed at once: a close with unread bytes resets.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await;
    let p = proxy_to_addr(b.addr).await;
    let c = client();
    let req = Request::post(format!("http://{}/", p.addr))
        .body(Unsized(Generated::new(TEN_MB)).boxed())
        .unwrap();
    let resp = tokio::time::timeout(STEP, c.request(req)).await.unwrap();
    // The client may see the answer, or its own upload cut when the proxy
    // closes the connection: never a hang, never a 502.
    if let Ok(resp) = resp {
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
}

#[tokio::test]
async fn expect_continue_and_upgrades_still_go_through() {
    // Expect: 100-continue goes through hyper's client; so do WebSockets
    // (see http.rs); both against a hyper backend.
    let a = backend("a", "127.0.0.1").await;
    let p = start_proxy(
        "127.0.0.1",
        BalanceLayer::new(balancer(&[(&a, 1)], "rr")),
        ForwardConfig::default(),
    )
    .await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(
        b"POST /upload HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut sent_body = false;
    let done = tokio::time::timeout(STEP, async {
        loop {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&got).into_owned();
            if !sent_body && text.contains("100 Continue") {
                s.write_all(b"hello").await.unwrap();
                sent_body = true;
            }
            if text.contains("HTTP/1.1 200")
                && text.ends_with(&format!("5 {:016x}", {
                    let mut f = Fnv::new();
                    f.update(b"hello");
                    f.0
                }))
            {
                return;
            }
        }
    })
    .await;
    assert!(done.is_ok(), "{:?}", String::from_utf8_lossy(&got));
}

#[tokio::test]
async fn the_hyper_client_can_still_be_chosen() {
    let b = answering(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
    let pool = Pool::new();
    pool.add(Backend::new("raw", b.addr)).unwrap();
    let lb = Balancer::new(pool, lb_sched::build("rr").unwrap());
    let forward = ForwardConfig {
        h1_client: false,
        ..ForwardConfig::default()
    };
    let p = start_proxy("127.0.0.1", BalanceLayer::new(lb), forward).await;
    let c = client();
    for _ in 0..3 {
        let (status, body) = request(&c, empty("GET", p.addr, "/")).await;
        assert_eq!((status, body.unwrap()), (StatusCode::OK, Bytes::from("ok")));
    }
    assert_eq!(b.accepted.load(Ordering::SeqCst), 1);
}
