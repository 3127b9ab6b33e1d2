//! Health checking wired into the HTTP proxy as the engines wire it
//! (`HealthSettings::start`): a killed backend is ejected by passive health
//! at its first refused connect while clients see no error, and active
//! checks bring it back once it listens again.

mod support;

use std::time::{Duration, Instant};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_backend_is_ejected_passively_and_restored_actively() {
    let a = backend("a", "127.0.0.1").await;
    let b = backend("b", "127.0.0.1").await;
    let c = backend("c", "127.0.0.1").await;
    let lb = balancer(&[(&a, 1), (&b, 1), (&c, 1)], "rr");
    let pool = lb.pool().clone();
    let c_id = pool.find("c").unwrap();
    let settings = HealthSettings {
        enabled: true,
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(300),
        rise: 2,
        fall: 2,
        max_fails: 1,
        fail_timeout: Duration::from_millis(500),
        ..HealthSettings::default()
    };
    let health = settings.start(&lb).unwrap();
    let mut events = health.supervisor.events();
    let proxy = start_proxy(
        "127.0.0.1",
        BalanceLayer::new(lb).observer(health.observer.clone()),
        ForwardConfig::default(),
    )
    .await;
    let client = client();

    for _ in 0..6 {
        assert_eq!(get(&client, proxy.addr, "/").await.0, 200);
    }
    let c_addr = c.addr;
    c.kill();
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
