//! Active checks against real servers on loopback that each test starts
//! and stops.

#[path = "../support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use lb_core::{Backend, BackendId, Pool};
use lb_health::{Check, HealthChecker, Prober, Reason, State};
use support::{next_event, HttpBackend, Mode, TcpBackend};
use tokio::net::TcpListener;

fn pool_of(backends: &[(&str, SocketAddr)]) -> (Pool, Vec<BackendId>) {
    let pool = Pool::new();
    let ids = backends
        .iter()
        .map(|(name, addr)| pool.add(Backend::new(*name, *addr)).unwrap())
        .collect();
    (pool, ids)
}

async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// Poll `f` every 10 ms for up to 5 s.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

fn detail(ev: &lb_health::Event) -> String {
    match &ev.reason {
        Reason::CheckFailed { detail, .. } => detail.to_string(),
        other => panic!("expected a check failure, got {other:?}"),
    }
}

#[tokio::test]
async fn tcp_check_follows_a_listener_that_closes_and_reopens() {
    let mut server = TcpBackend::start().await;
    let (pool, ids) = pool_of(&[("a", server.addr)]);
    let checker = HealthChecker::new(pool.clone(), Check::tcp())
        .interval(Duration::from_millis(50))
        .rise(2)
        .fall(3)
        .panic_threshold(0)
        .spawn()
        .unwrap();
    let mut events = checker.events();
    server.close().await;
    let down = next_event(&mut events, 5).await;
    assert_eq!((down.backend, down.old.clone()), (ids[0], State::Up));
    assert!(detail(&down).contains("connect to"), "{down}");
    assert!(!pool.load().get(ids[0]).unwrap().is_up());
    server.open();
    let up = next_event(&mut events, 5).await;
    assert_eq!(up.new, State::Up);
    assert_eq!(
        up.reason,
        Reason::CheckPassed {
            check: "tcp".into()
        }
    );
    assert!(pool.load().get(ids[0]).unwrap().is_up());
    checker.stop();
}

#[tokio::test]
async fn http_transitions_after_exactly_fall_failures_and_rise_successes() {
    let server = HttpBackend::start(Mode::Healthy).await;
    let (pool, ids) = pool_of(&[("web", server.addr)]);
    let checker = HealthChecker::new(pool.clone(), Check::http("/health").body_contains("ok"))
        .interval(Duration::from_millis(100))
        .rise(2)
        .fall(3)
        .panic_threshold(0)
        .spawn()
        .unwrap();
    let mut events = checker.events();
    // One success from the initial health (rise) reaches full health.
    eventually("full health", || server.served(Mode::Healthy) >= 2).await;

    server.set(Mode::Error);
    let down = next_event(&mut events, 5).await;
    assert_eq!(down.backend, ids[0]);
    assert!(down.new.is_failed());
    assert_eq!(
        server.served(Mode::Error),
        3,
        "down after exactly fall = 3 failures"
    );
    assert!(
        detail(&down).contains("status 500 outside 200..=399"),
        "{down}"
    );

    let healthy_before = server.served(Mode::Healthy);
    server.set(Mode::Healthy);
    let up = next_event(&mut events, 5).await;
    assert_eq!(up.new, State::Up);
    assert_eq!(
        server.served(Mode::Healthy) - healthy_before,
        2,
        "up after exactly rise = 2 successes"
    );
    checker.stop();
}

#[tokio::test]
async fn http_check_fails_on_a_wrong_body_or_status() {
    let wrong_body = HttpBackend::start(Mode::WrongBody).await;
    let plain = HttpBackend::start(Mode::Healthy).await;
    let (pool, ids) = pool_of(&[("body", wrong_body.addr), ("status", plain.addr)]);
    let check = Check::http("/").status(200..=200).body_contains("ok");
    let checker = HealthChecker::new(pool.clone(), check)
        .interval(Duration::from_millis(50))
        .fall(1)
        .panic_threshold(0)
        .spawn()
        .unwrap();
    let mut events = checker.events();
    let ev = next_event(&mut events, 5).await;
    assert_eq!(ev.backend, ids[0]);
    assert!(detail(&ev).contains("body does not contain \"ok\""), "{ev}");
    checker.stop();

    let checker = HealthChecker::new(pool.clone(), Check::http("/").status(201..300))
        .interval(Duration::from_millis(50))
        .fall(1)
        .panic_threshold(0)
        .spawn()
        .unwrap();
    let mut events = checker.events();
    let ev = loop {
        let ev = next_event(&mut events, 5).await;
        if ev.backend == ids[1] && ev.new.is_failed() {
            break ev;
        }
    };
    assert!(detail(&ev).contains("status 200 outside 201..=299"), "{ev}");
    checker.stop();
}

#[tokio::test]
async fn a_hanging_backend_times_out_without_stalling_the_others() {
    let hang = HttpBackend::start(Mode::Hang).await;
    let healthy = HttpBackend::start(Mode::Healthy).await;
    let (pool, ids) = pool_of(&[("hang", hang.addr), ("healthy", healthy.addr)]);
    let checker = HealthChecker::new(pool.clone(), Check::http("/"))
        .interval(Duration::from_millis(100))
        .timeout(Duration::from_millis(500))
        .fall(1)
        .concurrency(4)
        .spawn()
        .unwrap();
    let mut events = checker.events();
    let ev = next_event(&mut events, 5).await;
    assert_eq!(ev.backend, ids[0]);
    assert!(detail(&ev).contains("no answer within 500ms"), "{ev}");
    let before = healthy.total();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Every 100 ms while the hanging backend keeps timing out: about ten
    // checks; serialised behind the hang it would get two at most.
    assert!(
        healthy.total() - before >= 5,
        "the healthy backend was checked {} times in 1 s",
        healthy.total() - before
    );
    assert_eq!(checker.supervisor().state(ids[1]), Some(State::Up));
    checker.stop();
}

#[tokio::test]
async fn command_check_exit_status_decides() {
    let (pool, ids) = pool_of(&[("ok", "127.0.0.1:1".parse().unwrap())]);
    let checker = HealthChecker::new(pool.clone(), Check::command("exit 1"))
        .interval(Duration::from_millis(50))
        .fall(2)
        .panic_threshold(0)
        .spawn()
        .unwrap();
    let mut events = checker.events();
    let ev = next_event(&mut events, 5).await;
    assert_eq!(ev.backend, ids[0]);
    assert_eq!(detail(&ev), "command exited with status 1");
    checker.stop();
    assert_eq!(next_event(&mut events, 5).await.reason, Reason::Withdrawn);

    let checker = HealthChecker::new(pool.clone(), Check::command("exit 0"))
        .interval(Duration::from_millis(50))
        .fall(1)
        .panic_threshold(0)
        .spawn()
        .unwrap();
    let mut events = checker.events();
    let quiet = tokio::time::timeout(Duration::from_millis(500), events.recv()).await;
    assert!(
        quiet.is_err(),
        "exit 0 keeps it up: no event, got {quiet:?}"
    );
    assert_eq!(checker.supervisor().state(ids[0]), Some(State::Up));
    checker.stop();
}

#[tokio::test]
async fn command_check_sees_the_backend_in_its_environment() {
    let (pool, ids) = pool_of(&[
        ("web1", "127.0.0.1:8080".parse().unwrap()),
        ("web2", "127.0.0.1:8081".parse().unwrap()),
    ]);
    let script = r#"test "$LB_BACKEND_ADDR" = 127.0.0.1:8080 && test "$LB_BACKEND_IP" = 127.0.0.1 && test "$LB_BACKEND_PORT" = 8080 && test "$LB_BACKEND_NAME" = web1 && test "$EXTRA" = yes"#;
    let check = Check::command(script).env("EXTRA", "yes");
    let checker = HealthChecker::new(pool.clone(), check)
        .interval(Duration::from_millis(50))
        .fall(1)
        .panic_threshold(0)
        .spawn()
        .unwrap();
    let mut events = checker.events();
    let ev = next_event(&mut events, 5).await;
    assert_eq!(ev.backend, ids[1], "only web2 fails: {ev}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(checker.supervisor().state(ids[0]), Some(State::Up));
    checker.stop();
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn command_timeout_kills_the_command_and_its_children() {
    let dir = std::env::temp_dir().join(format!("lb-health-cmd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pid_file = dir.join("sleep.pid");
    let _ = std::fs::remove_file(&pid_file);
    let script = format!("sleep 10 & echo $! > '{}'; wait", pid_file.display());
    let (pool, ids) = pool_of(&[("slow", "127.0.0.1:1".parse().unwrap())]);
    let started = std::time::Instant::now();
    let checker = HealthChecker::new(pool.clone(), Check::command(script))
        .interval(Duration::from_secs(5))
        .timeout(Duration::from_millis(300))
        .fall(1)
        .panic_threshold(0)
        .spawn()
        .unwrap();
    let mut events = checker.events();
    let ev = next_event(&mut events, 5).await;
    assert_eq!(ev.backend, ids[0]);
    assert_eq!(detail(&ev), "no answer within 300ms");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the timeout, not sleep 10, ended the check"
    );
    checker.stop();
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let stat = format!("/proc/{pid}/stat");
    let gone = || match std::fs::read_to_string(&stat) {
        Err(_) => true,
        Ok(s) => s
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    };
    eventually("the command's child to be killed", gone).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_shared_prober_probes_a_shared_backend_once() {
    let server = HttpBackend::start(Mode::Healthy).await;
    let (pool_a, a) = pool_of(&[("x", server.addr)]);
    let (pool_b, b) = pool_of(&[("y", server.addr)]);
    let prober = Prober::new(16);
    let spawn = |pool: &Pool| {
        HealthChecker::new(pool.clone(), Check::http("/"))
            .interval(Duration::from_millis(50))
            .fall(1)
            .panic_threshold(0)
            .prober(&prober)
            .spawn()
            .unwrap()
    };
    let (ca, cb) = (spawn(&pool_a), spawn(&pool_b));
    let (mut ea, mut eb) = (ca.events(), cb.events());
    eventually("both checkers to subscribe", || {
        ca.checking() == 1 && cb.checking() == 1
    })
    .await;
    assert_eq!(prober.probes(), 1, "one probe for one address and check");
    server.set(Mode::Error);
    assert_eq!(next_event(&mut ea, 5).await.backend, a[0]);
    assert_eq!(next_event(&mut eb, 5).await.backend, b[0]);
    ca.stop();
    assert_eq!(prober.probes(), 1, "still probed for the other pool");
    cb.stop();
    assert_eq!(prober.probes(), 0);
}

#[tokio::test]
async fn the_checker_follows_the_pool_and_stop_withdraws_its_verdicts() {
    let server = TcpBackend::start().await;
    let (pool, _) = pool_of(&[("live", server.addr)]);
    let checker = HealthChecker::new(pool.clone(), Check::tcp())
        .interval(Duration::from_millis(50))
        .fall(1)
        .spawn()
        .unwrap();
    let mut events = checker.events();
    let late = pool.add(Backend::new("late", closed_port().await)).unwrap();
    let ev = next_event(&mut events, 5).await;
    assert_eq!((ev.backend, ev.new.is_failed()), (late, true));
    assert!(!pool.load().get(late).unwrap().is_up());
    assert_eq!(checker.checking(), 2);
    checker.stop();
    let ev = next_event(&mut events, 5).await;
    assert_eq!(
        (ev.backend, ev.new, ev.reason),
        (late, State::Up, Reason::Withdrawn)
    );
    assert!(pool.load().get(late).unwrap().is_up());
}
