//! Passive checks fed by outcomes, on tokio's paused clock.

#[path = "../support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use lb_core::{Backend, BackendId, Ctx, Observer, Outcome, Pool};
use lb_health::{Outlier, PassiveHealth, Reason, State, Supervisor};
use support::{next_event, settle};
use tokio::time::{advance, Instant};

const MS: Duration = Duration::from_millis(1);

fn pool_of(weights: &[u64]) -> (Pool, Vec<BackendId>) {
    let pool = Pool::new();
    let ids = weights
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let addr = format!("10.0.0.{}:80", i + 1).parse().unwrap();
            pool.add(Backend::new(format!("b{i}"), addr).with_weight(*w))
                .unwrap()
        })
        .collect();
    (pool, ids)
}

/// Advance the paused clock to `t` seconds after `t0`.
async fn at(t0: Instant, t: u64) {
    let target = t0 + Duration::from_secs(t);
    let now = Instant::now();
    if target > now {
        advance(target - now).await;
    }
    settle().await;
}

fn is_up(pool: &Pool, id: BackendId) -> bool {
    pool.load().get(id).unwrap().is_up()
}

fn weight(pool: &Pool, id: BackendId) -> u32 {
    pool.load().get(id).unwrap().weight()
}

/// NGX-FAIL-1 on a pool: P(weight 6), max_fails 3, fail_timeout 10 s.
async fn ngx_fail_1(probe_succeeds: bool) {
    let (pool, ids) = pool_of(&[6, 6]);
    let p = ids[0];
    let sup = Supervisor::new(pool.clone());
    sup.set_panic_threshold(0);
    let t0 = Instant::now();
    let passive = PassiveHealth::builder(sup.clone())
        .max_fails(3, Duration::from_secs(10))
        .build();
    let mut events = sup.events();

    at(t0, 100).await;
    passive.observe(p, Outcome::ConnectFailed, MS);
    at(t0, 105).await;
    passive.observe(p, Outcome::Success, MS);
    at(t0, 106).await;
    passive.observe(p, Outcome::Timeout, MS);
    settle().await;
    assert!(is_up(&pool, p), "two failures: still usable");
    at(t0, 107).await;
    passive.observe(p, Outcome::BadStatus(502), MS);
    let ev = next_event(&mut events, 1).await;
    assert_eq!(
        ev.reason,
        Reason::MaxFails {
            fails: 3,
            fail_timeout: Duration::from_secs(10)
        },
        "the success at 105 did not reset the count"
    );
    assert_eq!(Instant::now(), t0 + Duration::from_secs(107));
    assert!(!is_up(&pool, p));
    for t in 108..=117 {
        at(t0, t).await;
        assert!(!is_up(&pool, p), "t={t}: out until fail_timeout has passed");
    }
    at(t0, 118).await;
    let ev = next_event(&mut events, 1).await;
    assert_eq!((ev.new, ev.reason), (State::Up, Reason::FailTimeoutElapsed));
    assert!(is_up(&pool, p), "t=118: usable again");

    if probe_succeeds {
        // (a) The probe succeeds: fails reset, so one failure is not enough.
        passive.observe(p, Outcome::Success, MS);
        at(t0, 119).await;
        passive.observe(p, Outcome::ConnectFailed, MS);
        settle().await;
        assert!(is_up(&pool, p), "fails was reset to 0 by the probe");
    } else {
        // (b) The probe fails: out again, through 128, usable at 129.
        passive.observe(p, Outcome::ConnectFailed, MS);
        let ev = next_event(&mut events, 1).await;
        assert!(
            matches!(ev.reason, Reason::MaxFails { fails: 4, .. }),
            "{ev}"
        );
        at(t0, 128).await;
        assert!(!is_up(&pool, p));
        at(t0, 129).await;
        assert!(is_up(&pool, p));
    }
}

#[tokio::test(start_paused = true)]
async fn ngx_fail_1_probe_succeeds() {
    ngx_fail_1(true).await;
}

#[tokio::test(start_paused = true)]
async fn ngx_fail_1_probe_fails() {
    ngx_fail_1(false).await;
}

#[tokio::test(start_paused = true)]
async fn ngx_single_1_a_lone_backend_ignores_max_fails() {
    let (pool, ids) = pool_of(&[5]);
    let passive = PassiveHealth::builder(pool.clone())
        .max_fails(1, Duration::from_secs(10))
        .build();
    passive.supervisor().set_panic_threshold(0);
    for _ in 0..20 {
        passive.observe(ids[0], Outcome::ConnectFailed, MS);
        advance(Duration::from_millis(500)).await;
    }
    settle().await;
    assert!(is_up(&pool, ids[0]));
    assert_eq!(weight(&pool, ids[0]), 5, "no weight drop either");
}

#[tokio::test(start_paused = true)]
async fn effective_weight_drops_by_weight_over_max_fails_and_recovers_per_attempt() {
    // NGX-SWRR-4's setup: a=5, b=1, c=1, max_fails 1.
    let (pool, ids) = pool_of(&[5, 1, 1]);
    let (a, b) = (ids[0], ids[1]);
    let sup = Supervisor::new(pool.clone());
    sup.set_panic_threshold(0);
    let passive = PassiveHealth::builder(sup.clone())
        .max_fails(1, Duration::from_secs(10))
        .build();
    passive.observe(a, Outcome::ConnectFailed, MS);
    settle().await;
    assert_eq!(weight(&pool, a), 0, "5 - 5/1 = 0");
    assert!(!is_up(&pool, a));
    // Traffic while a is out does not raise its weight (it is not scanned).
    passive.observe(b, Outcome::Success, MS);
    settle().await;
    assert_eq!(weight(&pool, a), 0);
    advance(Duration::from_secs(11)).await;
    settle().await;
    assert!(is_up(&pool, a));
    // Each attempt the pool serves stands for one scan: +1 each.
    let mut seen = Vec::new();
    for _ in 0..6 {
        passive.observe(b, Outcome::Success, MS);
        settle().await;
        seen.push(weight(&pool, a));
    }
    assert_eq!(seen, [1, 2, 3, 4, 5, 5]);
    assert_eq!(pool.load().get(a).unwrap().configured_weight(), 5);
}

#[tokio::test(start_paused = true)]
async fn max_fails_above_weight_does_not_lower_it() {
    let (pool, ids) = pool_of(&[1, 1]);
    let passive = PassiveHealth::builder(pool.clone())
        .max_fails(3, Duration::from_secs(10))
        .build();
    passive.observe(ids[0], Outcome::ConnectFailed, MS);
    settle().await;
    assert_eq!(weight(&pool, ids[0]), 1, "1 - 1/3 = 1 (integer division)");
}

#[tokio::test(start_paused = true)]
async fn outlier_ejection_grows_and_returns_by_itself() {
    let (pool, ids) = pool_of(&[1; 10]);
    let sup = Supervisor::new(pool.clone());
    sup.set_panic_threshold(0);
    let outlier = Outlier::default()
        .consecutive(3)
        .base_time(Duration::from_secs(30));
    let passive = PassiveHealth::builder(sup.clone()).outlier(outlier).build();
    let observer: Arc<dyn Observer> = passive.clone();
    let mut events = sup.events();
    let a = ids[0];

    observer.observe(a, Outcome::BadStatus(503), MS);
    observer.observe(a, Outcome::Success, MS);
    observer.observe(a, Outcome::BadStatus(503), MS);
    observer.observe(a, Outcome::Broken, MS);
    settle().await;
    assert!(is_up(&pool, a), "the success broke the run");
    let t0 = Instant::now();
    observer.observe(a, Outcome::Timeout, MS);
    let ev = next_event(&mut events, 1).await;
    assert_eq!(
        ev.reason,
        Reason::Ejected {
            consecutive: 3,
            ejections: 1,
            duration: Duration::from_secs(30)
        }
    );
    assert!(!is_up(&pool, a));
    let back = next_event(&mut events, 60).await;
    assert_eq!((back.new, back.reason), (State::Up, Reason::EjectionEnded));
    assert_eq!(Instant::now() - t0, Duration::from_secs(30));
    assert!(is_up(&pool, a));

    for _ in 0..3 {
        observer.observe(a, Outcome::ConnectFailed, MS);
    }
    let ev = next_event(&mut events, 1).await;
    assert!(
        matches!(ev.reason, Reason::Ejected { ejections: 2, duration, .. } if duration == Duration::from_secs(60)),
        "{ev}"
    );
    let t1 = Instant::now();
    next_event(&mut events, 120).await;
    assert_eq!(Instant::now() - t1, Duration::from_secs(60));
}

#[tokio::test(start_paused = true)]
async fn outlier_ejection_is_capped_by_max_ejection_percent() {
    let (pool, ids) = pool_of(&[1; 10]);
    let sup = Supervisor::new(pool.clone());
    sup.set_panic_threshold(0);
    let passive = PassiveHealth::builder(sup.clone())
        .outlier(Outlier::default().consecutive(2).max_ejection_percent(20))
        .build();
    for &id in &ids[..4] {
        passive.observe(id, Outcome::ConnectFailed, MS);
        passive.observe(id, Outcome::ConnectFailed, MS);
    }
    settle().await;
    let out: Vec<bool> = ids.iter().map(|&id| !is_up(&pool, id)).collect();
    assert_eq!(out.iter().filter(|o| **o).count(), 2, "20 % of 10: {out:?}");
    assert!(out[0] && out[1] && !out[2] && !out[3]);
}

#[tokio::test(start_paused = true)]
async fn schedulers_stop_picking_a_failed_backend() {
    let (pool, ids) = pool_of(&[1, 1]);
    let lb = lb_sched::Balancer::new(pool.clone(), lb_sched::build("rr").unwrap());
    let passive = PassiveHealth::builder(pool.clone())
        .max_fails(1, Duration::from_secs(10))
        .build();
    passive.supervisor().set_panic_threshold(0);
    passive.observe(ids[0], Outcome::ConnectFailed, MS);
    settle().await;
    let ctx = Ctx::new("192.0.2.1:1000".parse().unwrap());
    for _ in 0..4 {
        assert_eq!(lb.connect(&ctx).unwrap().backend, ids[1]);
    }
}

#[tokio::test(start_paused = true)]
async fn outcomes_for_unknown_backends_are_ignored() {
    let (pool, ids) = pool_of(&[1, 1]);
    let passive = PassiveHealth::builder(pool.clone())
        .max_fails(1, Duration::from_secs(10))
        .outlier(Outlier::default().consecutive(1))
        .build();
    let version = pool.load().version();
    for _ in 0..10 {
        passive.observe(BackendId::from_raw(999), Outcome::ConnectFailed, MS);
    }
    settle().await;
    assert_eq!(pool.load().version(), version, "no write");
    assert!(ids.iter().all(|&id| is_up(&pool, id)));
}
