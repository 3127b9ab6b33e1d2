//! The TCP proxy on loopback, with real backends the tests start.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lb_core::{Backend, BackendId, Health, Observer, Outcome, Pool};
use lb_proxy::tcp::{End, TcpProxy};
use lb_sched::Balancer;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{sleep, timeout, Instant};

const PATIENCE: Duration = Duration::from_secs(10);

/// Every outcome reported, in order.
#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<(BackendId, Outcome)>>);

impl Observer for Recorder {
    fn observe(&self, backend: BackendId, outcome: Outcome, _: Duration) {
        self.0.lock().unwrap().push((backend, outcome));
    }
}

impl Recorder {
    fn outcomes(&self) -> Vec<(BackendId, Outcome)> {
        self.0.lock().unwrap().clone()
    }
}

/// A backend that sends its name and a newline, then echoes until EOF.
async fn echo_backend(name: &'static str, bind: &str) -> SocketAddr {
    let listener = TcpListener::bind(bind).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                s.write_all(format!("{name}\n").as_bytes()).await?;
                let (mut r, mut w) = s.split();
                tokio::io::copy(&mut r, &mut w).await?;
                w.shutdown().await
            });
        }
    });
    addr
}

/// An address on which nothing listens: a port bound, then released.
async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

fn pool_of(backends: &[(&str, SocketAddr)]) -> Pool {
    let pool = Pool::new();
    for (name, addr) in backends {
        pool.add(Backend::new(*name, *addr)).unwrap();
    }
    pool
}

async fn start(proxy: TcpProxy, bind: &str) -> SocketAddr {
    let listener = TcpListener::bind(bind).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { proxy.serve(listener).await });
    addr
}

/// Connect through the proxy and read the serving backend's name.
async fn hello(proxy: SocketAddr) -> (String, BufReader<TcpStream>) {
    let s = TcpStream::connect(proxy).await.unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    timeout(PATIENCE, r.read_line(&mut line))
        .await
        .unwrap()
        .unwrap();
    (line.trim_end().to_owned(), r)
}

/// Wait until every backend's counters show no open connection.
async fn all_closed(pool: &Pool) {
    let deadline = Instant::now() + PATIENCE;
    while pool.load().members().iter().any(|m| m.conns() > 0) {
        assert!(
            Instant::now() < deadline,
            "connections still counted open: {:?}",
            pool.load()
        );
        sleep(Duration::from_millis(5)).await;
    }
}

/// Echo `len` bytes through a proxy with splice on or off, and check the
/// echo and the backend's byte counters.
async fn echo_and_count(splice: bool, len: u32) {
    let pool = pool_of(&[("a", echo_backend("a", "127.0.0.1:0").await)]);
    let lb = Balancer::new(pool.clone(), lb_sched::build("rr").unwrap());
    let proxy = start(TcpProxy::new(lb).with_splice(splice), "127.0.0.1:0").await;
    let (name, mut s) = hello(proxy).await;
    assert_eq!(name, "a");
    let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let (mut r, mut w) = s.get_mut().split();
    let (sent, echoed) = tokio::join!(
        async {
            w.write_all(&payload).await.unwrap();
            w.shutdown().await.unwrap();
        },
        async {
            let mut back = Vec::new();
            timeout(PATIENCE, r.read_to_end(&mut back))
                .await
                .unwrap()
                .unwrap();
            back
        }
    );
    let () = sent;
    assert!(echoed == payload, "the echo comes back whole and in order");
    drop(s);
    all_closed(&pool).await;
    let snap = pool.load();
    let m = &snap.members()[0];
    assert_eq!(m.counters().bytes_in(), payload.len() as u64);
    assert_eq!(
        m.counters().bytes_out(),
        payload.len() as u64 + 2,
        "name line + echo"
    );
    assert_eq!((m.counters().total(), m.counters().successes()), (1, 1));
    assert!(
        m.counters().latency_ewma_us() > 0,
        "the connect latency is recorded"
    );
}

#[tokio::test]
async fn bytes_are_echoed_through_the_proxy_and_counted() {
    echo_and_count(true, 200_000).await;
}

#[tokio::test]
async fn a_bulk_echo_is_whole_and_counted_with_splice_and_without() {
    // 24 MiB each way: the reads fill the copy buffer, so with splice on
    // both directions move on to splice(2) (Linux) after the first read.
    for splice in [true, false] {
        echo_and_count(splice, 24 << 20).await;
    }
}

/// A backend that reads the whole request (until the client's FIN), then
/// answers with a large reply and closes.
async fn answer_after_eof_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut req = Vec::new();
                s.read_to_end(&mut req).await?;
                let mut reply = format!("got {} bytes\n", req.len()).into_bytes();
                reply.extend(std::iter::repeat_n(b'x', 1 << 20));
                s.write_all(&reply).await?;
                s.shutdown().await
            });
        }
    });
    addr
}

#[tokio::test]
async fn half_close_passes_the_fin_and_the_reply_still_arrives_whole() {
    for splice in [true, false] {
        half_close(splice).await;
    }
}

async fn half_close(splice: bool) {
    let pool = pool_of(&[("a", answer_after_eof_backend().await)]);
    let lb = Balancer::new(pool.clone(), lb_sched::build("rr").unwrap());
    let proxy = start(TcpProxy::new(lb).with_splice(splice), "127.0.0.1:0").await;
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(&[7u8; 5000]).await.unwrap();
    s.shutdown().await.unwrap(); // client -> proxy FIN; proxy must pass it on
    let mut reply = Vec::new();
    timeout(PATIENCE, s.read_to_end(&mut reply))
        .await
        .unwrap()
        .unwrap();
    let head = b"got 5000 bytes\n";
    assert_eq!(&reply[..head.len()], head);
    assert_eq!(
        reply.len(),
        head.len() + (1 << 20),
        "the full reply after the half-close"
    );
    drop(s);
    all_closed(&pool).await;
}

#[tokio::test]
async fn rr_spreads_connections_exactly() {
    let names = ["a", "b", "c"];
    let mut backends = Vec::new();
    for n in names {
        backends.push((n, echo_backend(n, "127.0.0.1:0").await));
    }
    let pool = pool_of(&backends);
    let proxy = start(
        TcpProxy::new(Balancer::new(pool.clone(), lb_sched::build("rr").unwrap())),
        "127.0.0.1:0",
    )
    .await;
    let mut seen = Vec::new();
    for _ in 0..30 {
        seen.push(hello(proxy).await.0);
    }
    let expect: Vec<String> = (0..30).map(|i| names[i % 3].to_owned()).collect();
    assert_eq!(seen, expect, "rr takes a, b, c in turn");
    all_closed(&pool).await;
    for m in pool.load().members() {
        assert_eq!(m.counters().total(), 10, "{}", m.name());
    }
}

#[tokio::test]
async fn a_refused_backend_is_skipped_and_reported() {
    let dead = dead_addr().await;
    let pool = pool_of(&[
        ("dead", dead),
        ("b", echo_backend("b", "127.0.0.1:0").await),
        ("c", echo_backend("c", "127.0.0.1:0").await),
    ]);
    let dead_id = pool.find("dead").unwrap();
    let rec = Arc::new(Recorder::default());
    let lb = Balancer::new(pool.clone(), lb_sched::build("rr").unwrap());
    let proxy = start(TcpProxy::new(lb).with_observer(rec.clone()), "127.0.0.1:0").await;
    for _ in 0..12 {
        let (name, _) = hello(proxy).await;
        assert!(name == "b" || name == "c", "served by {name}");
    }
    let outcomes = rec.outcomes();
    let failures: Vec<_> = outcomes.iter().filter(|(_, o)| !o.is_success()).collect();
    assert!(!failures.is_empty(), "rr tried the dead backend");
    assert!(
        failures
            .iter()
            .all(|f| **f == (dead_id, Outcome::ConnectFailed)),
        "{failures:?}"
    );
    assert_eq!(
        outcomes.len() - failures.len(),
        12,
        "one success per client connection"
    );
    let dead_counters = pool.load().members()[0].counters().clone();
    assert_eq!(dead_counters.failures(), failures.len() as u64);
    all_closed(&pool).await;
}

/// Read from a connection the proxy should close: EOF or a reset.
async fn assert_closed_promptly(proxy: SocketAddr) {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let mut buf = [0u8; 16];
    match timeout(Duration::from_secs(3), s.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!("got {n} bytes from a proxy with no backend"),
        Err(_) => panic!("the client connection was left open"),
    }
}

#[tokio::test]
async fn with_every_backend_down_the_client_is_closed_at_once() {
    let pool = pool_of(&[("x", dead_addr().await), ("y", dead_addr().await)]);
    let rec = Arc::new(Recorder::default());
    let lb = Balancer::new(pool.clone(), lb_sched::build("rr").unwrap());
    let proxy = start(TcpProxy::new(lb).with_observer(rec.clone()), "127.0.0.1:0").await;
    assert_closed_promptly(proxy).await;
    let outcomes = rec.outcomes();
    assert_eq!(outcomes.len(), 2, "each backend tried once: {outcomes:?}");
    assert!(outcomes.iter().all(|(_, o)| *o == Outcome::ConnectFailed));

    // Marked down: nothing is even tried.
    for m in pool.load().members() {
        pool.set_health(m.id(), Health::Down).unwrap();
    }
    assert_closed_promptly(proxy).await;
    assert_eq!(
        rec.outcomes().len(),
        2,
        "no attempt on backends that are down"
    );
    all_closed(&pool).await;
}

#[tokio::test]
async fn attempts_per_client_connection_are_bounded() {
    let mut dead = Vec::new();
    for name in ["w", "x", "y", "z"] {
        dead.push((name, dead_addr().await));
    }
    let pool = pool_of(&dead);
    let rec = Arc::new(Recorder::default());
    let lb = Balancer::new(pool.clone(), lb_sched::build("rr").unwrap());
    let proxy = TcpProxy::new(lb)
        .with_observer(rec.clone())
        .with_max_tries(2);
    let proxy = start(proxy, "127.0.0.1:0").await;
    assert_closed_promptly(proxy).await;
    let tried: Vec<BackendId> = rec.outcomes().iter().map(|(id, _)| *id).collect();
    let ids: Vec<BackendId> = pool.load().members().iter().map(|m| m.id()).collect();
    assert_eq!(tried, ids[..2], "two attempts, on two different backends");
}

#[tokio::test]
async fn the_proxy_is_a_tower_service_over_accepted_connections() {
    use tower_service::Service;
    let pool = pool_of(&[("a", echo_backend("a", "127.0.0.1:0").await)]);
    let mut proxy = TcpProxy::new(Balancer::new(pool.clone(), lb_sched::build("rr").unwrap()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap());
    let (accepted, client) = tokio::join!(listener.accept(), client);
    let mut client = client.unwrap();
    std::future::poll_fn(|cx| proxy.poll_ready(cx))
        .await
        .unwrap();
    let session = tokio::spawn(proxy.call(accepted.unwrap()));
    client.write_all(b"ping").await.unwrap();
    client.shutdown().await.unwrap();
    let mut got = Vec::new();
    timeout(PATIENCE, client.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, b"a\nping");
    let session = timeout(PATIENCE, session).await.unwrap().unwrap().unwrap();
    assert_eq!((&*session.name, session.attempts), ("a", 1));
    assert_eq!(
        (session.moved.to_backend, session.moved.from_backend),
        (4, 6)
    );
    assert_eq!(session.moved.end, End::Closed);
}

#[tokio::test]
async fn counters_count_open_connections_and_return_to_zero() {
    let pool = pool_of(&[
        ("a", echo_backend("a", "127.0.0.1:0").await),
        ("b", echo_backend("b", "127.0.0.1:0").await),
    ]);
    let proxy = start(
        TcpProxy::new(Balancer::new(pool.clone(), lb_sched::build("rr").unwrap())),
        "127.0.0.1:0",
    )
    .await;
    let mut open = Vec::new();
    for _ in 0..10 {
        open.push(hello(proxy).await.1);
    }
    let snap = pool.load();
    let active: Vec<u32> = snap.members().iter().map(|m| m.active()).collect();
    assert_eq!(active, [5, 5], "every open connection counted active");
    // Half-close five of them: the echo backends then close their side too.
    for s in open.iter_mut().take(5) {
        s.get_mut().shutdown().await.unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap(); // the backend closes after its echo
    }
    drop(open);
    all_closed(&pool).await;
    for m in pool.load().members() {
        assert_eq!(
            (m.active(), m.inactive(), m.counters().total()),
            (0, 0, 5),
            "{}",
            m.name()
        );
    }
}

#[tokio::test]
async fn a_half_closed_connection_counts_inactive_until_it_closes() {
    // The backend answers after the client's FIN, then keeps its side open
    // until told to close.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let release = Arc::new(tokio::sync::Notify::new());
    let r2 = release.clone();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut req = Vec::new();
        s.read_to_end(&mut req).await.unwrap();
        s.write_all(b"bye").await.unwrap();
        r2.notified().await;
    });
    let pool = pool_of(&[("a", addr)]);
    let proxy = start(
        TcpProxy::new(Balancer::new(pool.clone(), lb_sched::build("rr").unwrap())),
        "127.0.0.1:0",
    )
    .await;
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(b"hi").await.unwrap();
    s.shutdown().await.unwrap();
    let mut bye = [0u8; 3];
    timeout(PATIENCE, s.read_exact(&mut bye))
        .await
        .unwrap()
        .unwrap();
    let counters = pool.load().members()[0].counters().clone();
    assert_eq!(
        counters.load(),
        (0, 1),
        "half-closed: inactive, as LVS counts FIN_WAIT"
    );
    release.notify_one();
    let mut rest = Vec::new();
    timeout(PATIENCE, s.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    all_closed(&pool).await;
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let pool = pool_of(&[("a", echo_backend("a", "127.0.0.1:0").await)]);
    let lb = Balancer::new(pool.clone(), lb_sched::build("rr").unwrap());
    let proxy = TcpProxy::new(lb).with_idle_timeout(Duration::from_millis(200));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = TcpStream::connect(addr);
    let ((accepted, peer), client) =
        tokio::join!(async { listener.accept().await.unwrap() }, client);
    let mut client = client.unwrap();
    let session = tokio::spawn(async move { proxy.handle(accepted, peer).await });
    let mut line = [0u8; 2];
    client.read_exact(&mut line).await.unwrap();
    // Silence: the proxy closes the connection after the idle timeout.
    let session = timeout(PATIENCE, session).await.unwrap().unwrap().unwrap();
    assert_eq!(session.moved.end, End::Idle);
    assert_eq!(
        (session.moved.from_backend, session.moved.to_backend),
        (2, 0)
    );
    let mut rest = Vec::new();
    timeout(PATIENCE, client.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    all_closed(&pool).await;
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_backend_that_never_answers_times_out_and_the_next_is_used() {
    // A listener that never accepts, with its accept queue full: Linux drops
    // further SYNs, so a connect to it hangs.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let stuck = sock.listen(0).unwrap();
    let stuck_addr = stuck.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) = timeout(Duration::from_millis(200), TcpStream::connect(stuck_addr)).await
        {
            fillers.push(s);
        }
    }
    let pool = pool_of(&[
        ("stuck", stuck_addr),
        ("b", echo_backend("b", "127.0.0.1:0").await),
    ]);
    let rec = Arc::new(Recorder::default());
    let lb = Balancer::new(pool.clone(), lb_sched::build("rr").unwrap());
    let proxy = TcpProxy::new(lb)
        .with_observer(rec.clone())
        .with_connect_timeout(Duration::from_millis(300));
    let proxy = start(proxy, "127.0.0.1:0").await;
    assert_eq!(hello(proxy).await.0, "b");
    let stuck_id = pool.find("stuck").unwrap();
    assert_eq!(rec.outcomes()[0], (stuck_id, Outcome::Timeout));
    drop((stuck, fillers));
}

#[tokio::test]
async fn ipv6_loopback_works_end_to_end() {
    let Ok(probe) = TcpListener::bind("[::1]:0").await else {
        eprintln!("skipped: this host has no IPv6 loopback ([::1] cannot be bound)");
        return;
    };
    drop(probe);
    let pool = pool_of(&[
        ("a6", echo_backend("a6", "[::1]:0").await),
        ("b6", echo_backend("b6", "[::1]:0").await),
    ]);
    let proxy = start(
        TcpProxy::new(Balancer::new(pool.clone(), lb_sched::build("rr").unwrap())),
        "[::1]:0",
    )
    .await;
    assert!(proxy.is_ipv6());
    let (first, mut s) = hello(proxy).await;
    assert_eq!(first, "a6");
    s.get_mut().write_all(b"over v6\n").await.unwrap();
    let mut line = String::new();
    s.read_line(&mut line).await.unwrap();
    assert_eq!(line, "over v6\n");
    assert_eq!(hello(proxy).await.0, "b6");
    drop(s);
    all_closed(&pool).await;
}

#[tokio::test]
async fn a_drain_closes_long_connections_at_its_deadline() {
    let pool = pool_of(&[
        ("a", echo_backend("a", "127.0.0.1:0").await),
        ("b", echo_backend("b", "127.0.0.1:0").await),
    ]);
    let lb = Balancer::new(pool.clone(), lb_sched::build("rr").unwrap());
    let proxy = start(TcpProxy::new(lb), "127.0.0.1:0").await;
    let (first, mut on_a) = hello(proxy).await;
    let (second, mut on_b) = hello(proxy).await;
    assert_eq!((first.as_str(), second.as_str()), ("a", "b"));
    let a = pool.load().members()[0].id();

    let drained = timeout(
        PATIENCE,
        lb_proxy::drain(pool.clone(), a, Duration::from_millis(300)),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!((drained.left, drained.closed), (1, 1), "{drained}");
    // The client on a sees its connection closed; the one on b carries on.
    let mut rest = Vec::new();
    timeout(PATIENCE, on_a.read_to_end(&mut rest))
        .await
        .expect("closed at the deadline")
        .unwrap();
    assert!(rest.is_empty());
    on_b.get_mut().write_all(b"ping\n").await.unwrap();
    let mut line = String::new();
    timeout(PATIENCE, on_b.read_line(&mut line))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        line, "ping\n",
        "the other backend's connection is untouched"
    );
    let m = pool.load().get(a).unwrap().clone();
    let deadline = Instant::now() + PATIENCE;
    while m.conns() > 0 && Instant::now() < deadline {
        sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(m.conns(), 0, "off the counters");
}

#[tokio::test]
async fn a_drain_with_nothing_in_flight_resolves_at_once() {
    let pool = pool_of(&[("a", echo_backend("a", "127.0.0.1:0").await)]);
    let a = pool.load().members()[0].id();
    // An hour's deadline: only an empty backend lets this test finish.
    let drained = timeout(
        PATIENCE,
        lb_proxy::drain(pool.clone(), a, Duration::from_secs(3600)),
    )
    .await
    .expect("resolved without waiting for the deadline")
    .unwrap();
    assert!(drained.is_complete());
    assert_eq!((drained.left, drained.closed), (0, 0));
}
