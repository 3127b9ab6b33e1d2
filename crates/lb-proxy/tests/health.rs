//! Health checking wired into the HTTP proxy as the engines wire it
//! (`HealthSettings::start`): a killed backend is ejected by passive health
//! at its first refused connect while clients see no error, and active
//! checks bring it back once it listens again, before `fail_timeout`; a
//! hung backend is ejected when a request has waited `slow_response`;
//! refusals everywhere give 503.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use lb_core::Health;
use lb_proxy::config::HealthSettings;
use lb_proxy::http::ForwardConfig;
use lb_proxy::BalanceLayer;
use support::*;

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + STEP;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Three backends a, b, c behind the proxy, round robin, with passive
/// health (max_fails 1) and active checks every `interval` (rise 2, fall 2).
struct Three {
    a: TestBackend,
    b: TestBackend,
    c: TestBackend,
    pool: lb_core::Pool,
    c_id: lb_core::BackendId,
    health: lb_proxy::config::RunningHealth,
    events: tokio::sync::broadcast::Receiver<lb_health::Event>,
    proxy: TestProxy,
    client: TestClient,
}

async fn three(interval: Duration, fail_timeout: Duration) -> Three {
    let a = backend("a", "127.0.0.1").await;
    let b = backend("b", "127.0.0.1").await;
    let c = backend("c", "127.0.0.1").await;
    let lb = balancer(&[(&a, 1), (&b, 1), (&c, 1)], "rr");
    let pool = lb.pool().clone();
    let c_id = pool.find("c").unwrap();
    let settings = HealthSettings {
        enabled: true,
        interval,
        timeout: Duration::from_millis(300),
        rise: 2,
        fall: 2,
        max_fails: 1,
        fail_timeout,
        ..HealthSettings::default()
    };
    let health = settings.start(&lb).unwrap();
    let events = health.supervisor.events();
    let proxy = start_proxy(
        "127.0.0.1",
        BalanceLayer::new(lb).observer(health.observer.clone()),
        ForwardConfig::default(),
    )
    .await;
    Three {
        a,
        b,
        c,
        pool,
        c_id,
        health,
        events,
        proxy,
        client: client(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_backend_is_ejected_passively_and_restored_actively() {
    let Three {
        a: _a,
        b: _b,
        mut c,
        pool,
        c_id,
        health,
        mut events,
        proxy,
        client,
    } = three(Duration::from_millis(100), Duration::from_millis(500)).await;

    for _ in 0..6 {
        assert_eq!(get(&client, proxy.addr, "/").await.0, 200);
    }
    let c_addr = c.addr;
    c.kill().await;
    drop(c);
    let mut served = Vec::new();
    for _ in 0..6 {
        let (status, body) = get(&client, proxy.addr, "/").await;
        assert_eq!(
            status, 200,
            "a refused connect is retried on the next backend"
        );
        served.push(body);
    }
    assert!(served.iter().all(|n| n != "c"));
    wait_for("c to be marked down", || {
        pool.load().get(c_id).unwrap().health() == Health::Down
    })
    .await;
    // The first change of c: ejected by passive health (nginx max_fails),
    // from the proxy's own failed attempt, not by a check round.
    let first = loop {
        let ev = tokio::time::timeout(STEP, events.recv())
            .await
            .unwrap()
            .unwrap();
        if ev.backend == c_id {
            break ev;
        }
    };
    assert!(
        matches!(first.reason, lb_health::Reason::MaxFails { fails: 1, .. }),
        "ejected by {:?}",
        first.reason
    );

    // Back: active checks see it listen again and restore it.
    let c = backend_on("c", c_addr).await;
    wait_for("c to come back up", || {
        pool.load().get(c_id).unwrap().health() == Health::Up
    })
    .await;
    let mut back = false;
    for _ in 0..12 {
        back |= get(&client, proxy.addr, "/").await.1 == "c";
    }
    assert!(back, "c serves again after it was restored");
    drop(c);
    if let Some(checker) = health.checker {
        checker.stop();
    }
}

/// A backend that answers every request with its name, or, once told to
/// hang, accepts and reads requests but never answers (health checks
/// included), as `bench_backend` after SIGUSR1. Counts the requests for
/// other paths than `/health`.
struct Hanger {
    addr: std::net::SocketAddr,
    hang: Arc<AtomicBool>,
    requests: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Hanger {
    async fn start(name: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hang = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU64::new(0));
        let (h, r) = (hang.clone(), requests.clone());
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((conn, _)) = listener.accept().await {
                conns.spawn(hanger_conn(conn, name, h.clone(), r.clone()));
            }
        });
        Hanger {
            addr,
            hang,
            requests,
            task,
        }
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Hanger {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn hanger_conn(
    mut conn: TcpStream,
    name: &str,
    hang: Arc<AtomicBool>,
    requests: Arc<AtomicU64>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    loop {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        if head.split(' ').nth(1) != Some("/health") {
            requests.fetch_add(1, Ordering::SeqCst);
        }
        if hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{name}",
            name.len()
        );
        if conn.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// The first event about `id` that satisfies `f`.
async fn event_for(
    events: &mut tokio::sync::broadcast::Receiver<lb_health::Event>,
    id: lb_core::BackendId,
) -> lb_health::Event {
    loop {
        let ev = tokio::time::timeout(STEP, events.recv())
            .await
            .expect("an event in time")
            .expect("events");
        if ev.backend == id {
            return ev;
        }
    }
}

/// `c` comes back by passing checks (not by fail_timeout: the event says
/// so), is eligible again, and serves again.
async fn readmitted_by_checks(
    events: &mut tokio::sync::broadcast::Receiver<lb_health::Event>,
    c_id: lb_core::BackendId,
    pool: &lb_core::Pool,
    client: &TestClient,
    addr: std::net::SocketAddr,
) {
    let ev = event_for(events, c_id).await;
    assert_eq!(ev.new, lb_health::State::Up, "{ev}");
    assert!(
        matches!(ev.reason, lb_health::Reason::CheckPassed { .. }),
        "back by the checks, not by fail_timeout: {ev}"
    );
    wait_for("c back in the pool", || {
        pool.load().get(c_id).unwrap().is_eligible()
    })
    .await;
    let mut back = false;
    for _ in 0..6 {
        back |= get(client, addr, "/").await.1 == "c";
    }
    assert!(back, "c serves again, at its full weight");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_backend_is_ejected_at_the_slow_signal_and_readmitted_by_checks() {
    let a = backend("a", "127.0.0.1").await;
    let b = backend("b", "127.0.0.1").await;
    let c = Hanger::start("c").await;
    let pool = lb_core::Pool::new();
    for (name, addr) in [("a", a.addr), ("b", b.addr), ("c", c.addr)] {
        pool.add(lb_core::Backend::new(name, addr)).unwrap();
    }
    let lb = lb_sched::Balancer::new(pool.clone(), lb_sched::build("rr").unwrap());
    let c_id = pool.find("c").unwrap();
    // Checks far apart (a hung backend's own checks would take seconds to
    // fail `fall` times) and a fast interval for the transition; the slow
    // signal after 200 ms, long before the 1.5 s response timeout and the
    // 60 s fail_timeout.
    let settings = HealthSettings {
        enabled: true,
        interval: Duration::from_secs(5),
        timeout: Duration::from_millis(500),
        fastinter: Some(Duration::from_millis(50)),
        slow_response: Some(Duration::from_millis(200)),
        rise: 2,
        fall: 2,
        path: Some("/health".into()),
        max_fails: 1,
        fail_timeout: Duration::from_secs(60),
        ..HealthSettings::default()
    };
    let health = settings.start(&lb).unwrap();
    let mut events = health.supervisor.events();
    let forward = ForwardConfig {
        response_timeout: Some(Duration::from_millis(1500)),
        slow_response: health.slow_response.clone(),
        ..ForwardConfig::default()
    };
    let layer = BalanceLayer::new(lb).observer(health.observer.clone());
    let proxy = start_proxy("127.0.0.1", layer, forward).await;
    let client = client();

    c.hang.store(true, Ordering::SeqCst);
    // Round robin: the third request goes to c and hangs; it is retried
    // on a at the response timeout. Every client gets its answer.
    let mut served = Vec::new();
    for _ in 0..3 {
        let (status, body) = get(&client, proxy.addr, "/").await;
        assert_eq!(status, 200);
        served.push(body);
    }
    assert_eq!(served, ["a", "b", "a"]);
    let ev = event_for(&mut events, c_id).await;
    assert!(ev.new.is_failed(), "{ev}");
    assert_eq!(
        ev.reason,
        lb_health::Reason::SlowResponse {
            waited: Duration::from_millis(200)
        },
        "ejected by the slow signal, before the response timeout"
    );
    assert_eq!(c.requests(), 1);
    for _ in 0..12 {
        let (status, body) = get(&client, proxy.addr, "/").await;
        assert_eq!(status, 200);
        assert_ne!(body, "c");
    }
    assert_eq!(c.requests(), 1, "no new request to the hung backend");

    // It answers again: fast checks see it, and rise of them bring it back
    // (not fail_timeout, 60 s away).
    c.hang.store(false, Ordering::SeqCst);
    readmitted_by_checks(&mut events, c_id, &pool, &client, proxy.addr).await;
    if let Some(checker) = health.checker {
        checker.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passive_ejection_ends_by_rise_checks_before_fail_timeout() {
    let Three {
        a: _a,
        b: _b,
        mut c,
        pool,
        c_id,
        health,
        mut events,
        proxy,
        client,
    } = three(Duration::from_millis(400), Duration::from_secs(60)).await;
    let c_addr = c.addr;
    c.kill().await;
    drop(c);
    for _ in 0..6 {
        let (status, body) = get(&client, proxy.addr, "/").await;
        assert_eq!(status, 200);
        assert_ne!(body, "c");
    }
    let ev = event_for(&mut events, c_id).await;
    assert!(
        matches!(ev.reason, lb_health::Reason::MaxFails { fails: 1, .. }),
        "{ev}"
    );
    let c = backend_on("c", c_addr).await;
    readmitted_by_checks(&mut events, c_id, &pool, &client, proxy.addr).await;
    drop(c);
    if let Some(checker) = health.checker {
        checker.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_backends_refusing_gives_only_503() {
    let mut a = backend("a", "127.0.0.1").await;
    let mut b = backend("b", "127.0.0.1").await;
    let mut c = backend("c", "127.0.0.1").await;
    let lb = balancer(&[(&a, 1), (&b, 1), (&c, 1)], "rr");
    let settings = HealthSettings {
        enabled: true,
        interval: Duration::from_millis(200),
        timeout: Duration::from_millis(200),
        rise: 2,
        fall: 2,
        max_fails: 1,
        fail_timeout: Duration::from_secs(5),
        ..HealthSettings::default()
    };
    let health = settings.start(&lb).unwrap();
    let proxy = start_proxy(
        "127.0.0.1",
        BalanceLayer::new(lb).observer(health.observer.clone()),
        ForwardConfig::default(),
    )
    .await;
    let client = client();
    assert_eq!(get(&client, proxy.addr, "/").await.0, 200);
    for be in [&mut a, &mut b, &mut c] {
        be.kill().await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Refused everywhere (tried, then ejected; in panic, tried again): 503
    // every time, never 502.
    let mut statuses = Vec::new();
    for _ in 0..30 {
        statuses.push(get(&client, proxy.addr, "/").await.0.as_u16());
    }
    assert!(statuses.iter().all(|s| *s == 503), "{statuses:?}");
    if let Some(checker) = health.checker {
        checker.stop();
    }
}
