//! The balancing layers on real loopback sockets: redirects, draining,
//! hash keys, and the services' thread-safety.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use lb_proxy::http::ForwardConfig;
use lb_proxy::BalanceLayer;
use support::*;

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
async fn redirect_layer_points_clients_at_backends() {
    use lb_proxy::http::{RedirectLayer, Server, Unavailable};
    use tower::Layer;
    let (a, b) = (
        backend("a", "127.0.0.1").await,
        backend("b", "127.0.0.1").await,
    );
    let lb = balancer(&[(&a, 1), (&b, 1)], "rr");
    let svc = RedirectLayer::new(lb.clone()).layer(Unavailable);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(Server::new().serve(listener, svc));
    let cl = client();
    let mut seen = Vec::new();
    for _ in 0..2 {
        let req = Request::get(format!("http://{addr}/x/y?z=1"))
            .body(http_body_util::Full::new(Bytes::new()).boxed())
            .unwrap();
        let resp = tokio::time::timeout(STEP, cl.request(req))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FOUND);
        seen.push(resp.headers()["location"].to_str().unwrap().to_owned());
    }
    assert_eq!(
        seen,
        vec![
            format!("http://{}/x/y?z=1", a.addr),
            format!("http://{}/x/y?z=1", b.addr)
        ]
    );
    assert_eq!(
        a.hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "redirects never touch backends"
    );
    for m in lb.pool().load().members() {
        lb.pool().set_weight(m.id(), 0).unwrap();
    }
    let (status, body) = get(&cl, addr, "/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    task.abort();
}

#[tokio::test]
async fn drain_waits_for_requests_in_flight_then_completes() {
    let (a, b) = (
        backend("a", "127.0.0.1").await,
        backend("b", "127.0.0.1").await,
    );
    let lb = balancer(&[(&a, 1), (&b, 1)], "rr");
    let p = start_proxy(
        "127.0.0.1",
        BalanceLayer::new(lb.clone()),
        ForwardConfig::default(),
    )
    .await;
    let id = lb.pool().find("a").unwrap();
    let cl = client();
    // A slow request lands on a (rr starts there) and stays in flight.
    let slow = tokio::spawn({
        let cl = cl.clone();
        let addr = p.addr;
        async move { get(&cl, addr, "/slow?ms=400").await }
    });
    let m = lb.pool().load().get(id).unwrap().clone();
    let started = async {
        while m.active() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(STEP, started).await.unwrap();
    let drain = tokio::spawn(lb_proxy::drain(
        lb.pool().clone(),
        id,
        Duration::from_secs(20),
    ));
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Quiesced: new requests all go to b while a finishes.
    assert_eq!(names(&cl, p.addr, 4).await, "bbbb");
    assert_eq!(slow.await.unwrap(), (StatusCode::OK, "a".to_owned()));
    let done = tokio::time::timeout(STEP, drain)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(done.is_complete(), "{done}");
    assert_eq!(done.previous_weight, 1);
    // A short deadline with a request still in flight reports it.
    lb.pool().set_weight(id, 1).unwrap();
    let slow = tokio::spawn({
        let cl = cl.clone();
        let addr = p.addr;
        async move { get(&cl, addr, "/slow?ms=1000").await }
    });
    let started = async {
        while lb.pool().load().members().iter().all(|m| m.active() == 0) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(STEP, started).await.unwrap();
    let busy = lb
        .pool()
        .load()
        .members()
        .iter()
        .find(|m| m.active() > 0)
        .unwrap()
        .id();
    let cut = lb_proxy::drain(lb.pool().clone(), busy, Duration::from_millis(100))
        .await
        .unwrap();
    assert_eq!(cut.left, 1, "{cut}");
    assert_eq!(
        slow.await.unwrap().0,
        StatusCode::OK,
        "the request in flight is not cut"
    );
}

/// A test scheduler that picks backend `key[0] % n`: shows which key a pick got.
#[derive(Debug)]
struct FirstByte;

impl lb_sched::Scheduler for FirstByte {
    fn name(&self) -> &'static str {
        "first-byte"
    }
    fn pick<'s>(
        &self,
        snap: &'s lb_core::Snapshot,
        ctx: &lb_core::Ctx<'_>,
    ) -> Option<lb_core::Pick<'s>> {
        let members = snap.members();
        let key = ctx.key()?;
        let start = usize::from(*key.first()?) % members.len();
        (0..members.len())
            .map(|i| &members[(start + i) % members.len()])
            .find(|m| ctx.usable(m))
            .map(lb_core::Pick::new)
    }
    fn explain<'s>(
        &self,
        snap: &'s lb_core::Snapshot,
        ctx: &lb_core::Ctx<'_>,
        _: &mut lb_sched::Explain,
    ) -> Option<lb_core::Pick<'s>> {
        self.pick(snap, ctx)
    }
}

#[tokio::test]
async fn the_hash_key_template_reaches_the_scheduler() {
    let (a, b, c) = (
        backend("a", "127.0.0.1").await,
        backend("b", "127.0.0.1").await,
        backend("c", "127.0.0.1").await,
    );
    let pool = lb_core::Pool::new();
    for x in [&a, &b, &c] {
        pool.add(lb_core::Backend::new(x.name, x.addr)).unwrap();
    }
    let lb = lb_sched::Balancer::new(pool, Box::new(FirstByte));
    let layer =
        BalanceLayer::new(lb).key("$arg_u$cookie_k".parse::<lb_proxy::KeyTemplate>().unwrap());
    let p = start_proxy("127.0.0.1", layer, ForwardConfig::default()).await;
    let cl = client();
    // '0' = 48 -> 48 % 3 = 0 (a); '1' -> b; '2' -> c.
    for (q, want) in [("0", "a"), ("1", "b"), ("2", "c"), ("3", "a")] {
        assert_eq!(
            get(&cl, p.addr, &format!("/?u={q}")).await,
            (StatusCode::OK, want.to_owned())
        );
    }
    let req = Request::get(format!("http://{}/", p.addr))
        .header("cookie", "k=2x")
        .body(http_body_util::Full::new(Bytes::new()).boxed())
        .unwrap();
    let resp = tokio::time::timeout(STEP, cl.request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "c");
    // No key at all: this scheduler then gives no backend.
    assert_eq!(
        get(&cl, p.addr, "/").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[test]
fn services_and_futures_are_shareable() {
    fn shareable<T: Clone + Send + Sync + 'static>() {}
    fn sendable<T: Send + 'static>() {}
    shareable::<lb_proxy::http::Proxy>();
    shareable::<lb_proxy::Balance<lb_proxy::http::Forward>>();
    shareable::<lb_proxy::BalanceLayer>();
    sendable::<lb_proxy::ResponseFuture<lb_proxy::http::Forward, lb_proxy::http::ClientBody>>();
}

/// Read `s` until the end of a response head; the head.
async fn read_head(s: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tokio::time::timeout(STEP, s.read_exact(&mut byte))
            .await
            .expect("a response head in time")
            .unwrap();
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).to_ascii_lowercase()
}

/// Read `s` to its end (EOF or reset); false if it went on past `STEP`.
async fn read_to_close(s: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 64 * 1024];
    let drained = async {
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    tokio::time::timeout(STEP, drained).await.is_ok()
}

#[tokio::test]
async fn a_drain_closes_slow_requests_and_cuts_started_responses_at_its_deadline() {
    use lb_core::{Backend, Pool};
    use support::probe::probe;
    use tokio::io::AsyncWriteExt;
    let p = probe().await;
    let pool = Pool::new();
    let id = pool.add(Backend::new("probe", p.addr)).unwrap();
    let lb = lb_sched::Balancer::new(pool.clone(), lb_sched::build("rr").unwrap());
    let proxy = start_proxy("127.0.0.1", BalanceLayer::new(lb), ForwardConfig::default()).await;

    // A request the backend never answers, and a response that never ends.
    let mut slow = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    slow.write_all(b"POST /hold HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
        .await
        .unwrap();
    let mut endless = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    endless
        .write_all(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    assert!(read_head(&mut endless).await.starts_with("http/1.1 200"));
    let seen = p.seen.clone();
    assert!(support::probe::until(STEP, || seen.started.lock().len() == 2).await);

    let drained = tokio::time::timeout(
        STEP,
        lb_proxy::drain(pool.clone(), id, Duration::from_millis(300)),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!((drained.left, drained.closed), (2, 2), "{drained}");
    let head = read_head(&mut slow).await;
    assert!(head.starts_with("http/1.1 502"), "{head}");
    assert!(
        read_to_close(&mut endless).await,
        "the endless response was cut"
    );
    let m = pool.load().get(id).unwrap().clone();
    assert!(
        support::probe::until(STEP, || m.conns() == 0).await,
        "off the counters"
    );
}

#[tokio::test]
async fn a_silent_websocket_tunnel_is_closed_after_the_tunnel_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = backend("a", "127.0.0.1").await;
    let lb = balancer(&[(&a, 1)], "rr");
    let forward = ForwardConfig {
        tunnel_timeout: Some(Duration::from_millis(300)),
        ..ForwardConfig::default()
    };
    let p = start_proxy("127.0.0.1", BalanceLayer::new(lb.clone()), forward).await;
    let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    assert!(read_head(&mut s).await.starts_with("http/1.1 101"));
    // Traffic every 100 ms keeps it open past the timeout...
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.write_all(b"ping").await.unwrap();
        let mut echo = [0u8; 4];
        tokio::time::timeout(STEP, s.read_exact(&mut echo))
            .await
            .expect("echoed")
            .unwrap();
        assert_eq!(&echo, b"ping");
    }
    // ...silence closes it, and its backend counts it no more.
    assert!(read_to_close(&mut s).await, "closed after the silence");
    let m = lb.pool().load().members()[0].clone();
    assert!(support::probe::until(STEP, || m.conns() == 0).await);
}
