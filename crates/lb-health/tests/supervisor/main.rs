//! The per-backend state machine, slow start, the panic valve and the
//! operator, on tokio's paused clock with a scripted checker.

#[path = "../support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lb_core::{Backend, BackendId, Health, Observer, Outcome, Pool};
use lb_health::{
    Check, CheckerHandle, HealthChecker, Outlier, PassiveHealth, Reason, State, Supervisor,
};
use support::{next_event, settle, Scripted};
use tokio::time::{advance, Instant};

const SEC: Duration = Duration::from_secs(1);

fn addr(i: usize) -> SocketAddr {
    format!("10.0.0.{}:80", i + 1).parse().unwrap()
}

fn pool_of(weights: &[u64]) -> (Pool, Vec<BackendId>) {
    let pool = Pool::new();
    let ids = weights
        .iter()
        .enumerate()
        .map(|(i, w)| {
            pool.add(Backend::new(format!("b{i}"), addr(i)).with_weight(*w))
                .unwrap()
        })
        .collect();
    (pool, ids)
}

fn spawn(sup: &Supervisor, script: &Arc<Scripted>) -> CheckerHandle {
    HealthChecker::new(sup.clone(), Check::custom(script.clone()))
        .interval(SEC)
        .rise(2)
        .fall(3)
        .spawn()
        .unwrap()
}

fn member_weight(pool: &Pool, id: BackendId) -> u32 {
    pool.load().get(id).unwrap().weight()
}

#[tokio::test(start_paused = true)]
async fn scripted_checks_go_down_after_exactly_fall_and_up_after_exactly_rise() {
    let (pool, ids) = pool_of(&[1, 1]);
    let sup = Supervisor::new(pool.clone());
    sup.set_panic_threshold(0);
    let script = Scripted::new();
    let checker = spawn(&sup, &script);
    let mut events = sup.events();
    tokio::time::sleep(5 * SEC).await;
    let before = script.results(addr(0)).len();
    assert!(before >= 4, "checked every second");
    script.set(addr(0), false);
    let ev = next_event(&mut events, 10).await;
    assert_eq!(ev.backend, ids[0]);
    let fails = &script.results(addr(0))[before..];
    assert_eq!(fails, [false, false, false], "down at the third failure");
    assert_eq!(pool.load().get(ids[0]).unwrap().health(), Health::Down);
    let before = script.results(addr(0)).len();
    script.set(addr(0), true);
    let ev = next_event(&mut events, 10).await;
    assert_eq!(ev.new, State::Up);
    assert_eq!(&script.results(addr(0))[before..], [true, true]);
    assert_eq!(
        sup.state(ids[1]),
        Some(State::Up),
        "the other backend never moved"
    );
    checker.stop();
}

#[tokio::test(start_paused = true)]
async fn slow_start_ramps_the_pool_weight_linearly_after_a_return() {
    // HAP-SS-1 scaled to the pool: weight 32, slowstart 10 s: ceil(32 * w / 16).
    let (pool, ids) = pool_of(&[32, 32]);
    let a = ids[0];
    let sup = Supervisor::new(pool.clone());
    sup.set_panic_threshold(0);
    sup.set_slow_start(Some(Duration::from_secs(10)));
    let script = Scripted::new();
    let checker = spawn(&sup, &script);
    let mut events = sup.events();
    tokio::time::sleep(3 * SEC).await;
    assert_eq!(member_weight(&pool, a), 32, "no slow start at start-up");
    assert_eq!(sup.state(a), Some(State::Up));

    script.set(addr(0), false);
    assert!(next_event(&mut events, 10).await.new.is_failed());
    script.set(addr(0), true);
    let ev = next_event(&mut events, 10).await;
    assert_eq!(ev.new, State::SlowStart { progress: 0 });
    let t0 = Instant::now();
    let mut ramp = Vec::new();
    for e in 0..=10 {
        let target = t0 + Duration::from_secs(e);
        if target > Instant::now() {
            advance(target - Instant::now()).await;
        }
        settle().await;
        ramp.push(member_weight(&pool, a));
    }
    // HAProxy's eweight 10, 20, 40, ... 160 for weight 10 is the step
    // 1, 2, 4, 5, 7, 9, 10, 12, 13, 15, 16: here weight 32 * step / 16.
    assert_eq!(ramp, [2, 4, 8, 10, 14, 18, 20, 24, 26, 30, 32]);
    let done = next_event(&mut events, 1).await;
    assert_eq!((done.new, done.reason), (State::Up, Reason::SlowStartDone));
    assert_eq!(sup.state(a), Some(State::Up));
    assert_eq!(
        member_weight(&pool, ids[1]),
        32,
        "the other backend kept its weight"
    );
    checker.stop();
}

#[tokio::test(start_paused = true)]
async fn slow_start_is_visible_to_a_weighted_scheduler() {
    let (pool, ids) = pool_of(&[16, 16]);
    let lb = lb_sched::Balancer::new(pool.clone(), lb_sched::build("wrr").unwrap());
    let sup = Supervisor::new(pool.clone());
    sup.set_panic_threshold(0);
    sup.set_slow_start(Some(Duration::from_secs(16)));
    let passive = PassiveHealth::builder(sup.clone())
        .outlier(
            Outlier::default()
                .consecutive(1)
                .base_time(SEC)
                .max_ejection_percent(50),
        )
        .build();
    passive.observe(ids[0], Outcome::ConnectFailed, Duration::ZERO);
    advance(SEC).await;
    settle().await;
    assert_eq!(sup.state(ids[0]), Some(State::SlowStart { progress: 0 }));
    // Weight 1 against 16: 1 pick in 17.
    let ctx = lb_core::Ctx::new("192.0.2.1:1000".parse().unwrap());
    let picks = (0..17)
        .filter(|_| lb.connect(&ctx).unwrap().backend == ids[0])
        .count();
    assert_eq!(picks, 1);
}

#[tokio::test(start_paused = true)]
async fn panic_keeps_failed_backends_in_the_pool_when_too_few_serve() {
    let (pool, ids) = pool_of(&[1, 1, 1, 1]);
    let sup = Supervisor::new(pool.clone());
    let script = Scripted::new();
    let checker = spawn(&sup, &script);
    let mut events = sup.events();
    let health = |i: usize| pool.load().get(ids[i]).unwrap().health();
    script.set(addr(0), false);
    script.set(addr(1), false);
    next_event(&mut events, 10).await;
    next_event(&mut events, 10).await;
    assert!(!sup.in_panic(), "2 of 4 serving is not below 50 %");
    assert_eq!((health(0), health(1)), (Health::Down, Health::Down));

    script.set(addr(2), false);
    let ev = next_event(&mut events, 10).await;
    assert_eq!(ev.backend, ids[2]);
    assert!(sup.in_panic(), "1 of 4 serving is below 50 %");
    assert!(
        (0..4).all(|i| health(i) == Health::Up),
        "panic: balance over all"
    );
    assert!(
        sup.state(ids[2]).unwrap().is_failed(),
        "the state machine still says down"
    );

    script.set(addr(0), true);
    next_event(&mut events, 10).await;
    assert!(!sup.in_panic());
    assert_eq!(
        (health(0), health(1), health(2), health(3)),
        (Health::Up, Health::Down, Health::Down, Health::Up)
    );
    checker.stop();
}

#[tokio::test(start_paused = true)]
async fn operator_drain_maintenance_and_ready() {
    let (pool, ids) = pool_of(&[4, 4]);
    let a = ids[0];
    let sup = Supervisor::new(pool.clone());
    sup.set_slow_start(Some(Duration::from_secs(4)));
    let mut events = sup.events();
    sup.drain(a).unwrap();
    let ev = next_event(&mut events, 1).await;
    assert_eq!(
        (ev.old, ev.new, ev.reason),
        (State::Up, State::Draining, Reason::Operator)
    );
    assert_eq!(pool.load().get(a).unwrap().health(), Health::Draining);
    sup.ready(a).unwrap();
    assert_eq!(
        next_event(&mut events, 1).await.new,
        State::Up,
        "no slow start after a drain"
    );
    sup.maintenance(a).unwrap();
    assert_eq!(next_event(&mut events, 1).await.new, State::Maintenance);
    assert_eq!(pool.load().get(a).unwrap().health(), Health::Down);
    sup.ready(a).unwrap();
    let ev = next_event(&mut events, 1).await;
    assert_eq!(
        ev.new,
        State::SlowStart { progress: 0 },
        "leaving maintenance ramps up"
    );
    assert_eq!(pool.load().get(a).unwrap().weight(), 1);
    assert!(sup.drain(BackendId::from_raw(99)).is_err());
}

#[tokio::test(start_paused = true)]
async fn a_backend_added_down_is_in_maintenance_until_readied() {
    let pool = Pool::new();
    let a = pool
        .add(Backend::new("a", addr(0)).with_health(Health::Down))
        .unwrap();
    pool.add(Backend::new("b", addr(1))).unwrap();
    let sup = Supervisor::new(pool.clone());
    let script = Scripted::new();
    let checker = spawn(&sup, &script);
    tokio::time::sleep(5 * SEC).await;
    assert_eq!(
        sup.state(a),
        Some(State::Maintenance),
        "passing checks do not override it"
    );
    assert_eq!(pool.load().get(a).unwrap().health(), Health::Down);
    sup.ready(a).unwrap();
    settle().await;
    assert!(pool.load().get(a).unwrap().is_up());
    checker.stop();
}

#[tokio::test(start_paused = true)]
async fn every_signal_meets_in_one_state_machine() {
    let (pool, ids) = pool_of(&[1, 1]);
    let a = ids[0];
    let sup = Supervisor::new(pool.clone());
    sup.set_panic_threshold(0);
    let script = Scripted::new();
    let checker = spawn(&sup, &script);
    let passive = PassiveHealth::builder(sup.clone())
        .outlier(
            Outlier::default()
                .consecutive(1)
                .base_time(10 * SEC)
                .max_ejection_percent(50),
        )
        .build();
    let mut events = sup.events();
    script.set(addr(0), false);
    assert!(next_event(&mut events, 10).await.new.is_failed());
    // Ejected too while the checks fail: still down, no new event.
    passive.observe(a, Outcome::ConnectFailed, Duration::ZERO);
    script.set(addr(0), true);
    tokio::time::sleep(3 * SEC).await;
    assert!(
        sup.state(a).unwrap().is_failed(),
        "the ejection still holds it down"
    );
    let ev = next_event(&mut events, 20).await;
    assert_eq!((ev.new, ev.reason), (State::Up, Reason::EjectionEnded));
    checker.stop();
}

/// A check that takes 100 ms and records how many run at once.
#[derive(Debug, Default)]
struct Slow {
    running: std::sync::atomic::AtomicUsize,
    peak: std::sync::atomic::AtomicUsize,
    done: std::sync::atomic::AtomicUsize,
}

impl lb_health::Checker for Slow {
    fn check<'a>(&'a self, _: &'a lb_health::Target) -> lb_health::CheckFuture<'a> {
        use std::sync::atomic::Ordering::SeqCst;
        Box::pin(async move {
            let now = self.running.fetch_add(1, SeqCst) + 1;
            self.peak.fetch_max(now, SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            self.running.fetch_sub(1, SeqCst);
            self.done.fetch_add(1, SeqCst);
            Ok(())
        })
    }
}

#[tokio::test(start_paused = true)]
async fn checks_in_flight_are_bounded() {
    use std::sync::atomic::Ordering::SeqCst;
    let (pool, _) = pool_of(&[1; 10]);
    let slow = Arc::new(Slow::default());
    let checker = HealthChecker::new(pool, Check::custom(slow.clone()))
        .interval(Duration::from_millis(50))
        .concurrency(2)
        .spawn()
        .unwrap();
    tokio::time::sleep(2 * SEC).await;
    assert_eq!(
        slow.peak.load(SeqCst),
        2,
        "never more than the bound, and the bound is used"
    );
    // Two at a time, 100 ms each: 20 per second.
    let done = slow.done.load(SeqCst);
    assert!((36..=40).contains(&done), "{done} checks in 2 s");
    checker.stop();
}

/// Three backends, passive `max_fails` and a scripted checker (interval
/// 1 s, so a fast interval of 250 ms, rise 2, fall 2).
fn ejection_setup(
    max_fails: u32,
    weight: u64,
) -> (
    Pool,
    Vec<BackendId>,
    Supervisor,
    Arc<Scripted>,
    Arc<PassiveHealth>,
) {
    let (pool, ids) = pool_of(&[weight; 3]);
    let sup = Supervisor::new(pool.clone());
    sup.set_panic_threshold(0);
    let script = Scripted::new();
    let passive = PassiveHealth::builder(sup.clone())
        .max_fails(max_fails, 10 * SEC)
        .build();
    (pool, ids, sup, script, passive)
}

fn spawn_rise2_fall2(sup: &Supervisor, script: &Arc<Scripted>) -> CheckerHandle {
    HealthChecker::new(sup.clone(), Check::custom(script.clone()))
        .interval(SEC)
        .rise(2)
        .fall(2)
        .spawn()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_passive_ejection_ends_by_rise_checks_before_fail_timeout() {
    let (pool, ids, sup, script, passive) = ejection_setup(2, 2);
    let a = ids[0];
    let checker = spawn_rise2_fall2(&sup, &script);
    let mut events = sup.events();
    tokio::time::sleep(3 * SEC).await;
    // The backend dies: two failed requests eject it (nginx max_fails 2).
    script.set(addr(0), false);
    passive.observe(a, Outcome::ConnectFailed, Duration::ZERO);
    passive.observe(a, Outcome::ConnectFailed, Duration::ZERO);
    let ev = next_event(&mut events, 1).await;
    assert!(
        matches!(ev.reason, Reason::MaxFails { fails: 2, .. }),
        "{ev}"
    );
    assert!(!pool.load().get(a).unwrap().is_up());
    let ejected = Instant::now();
    let before = script.results(addr(0)).len();
    // Restarted a second later: rise (2) passing checks bring it back, long
    // before the 10 s fail_timeout, and the checks after the ejection come
    // at the fast interval (a quarter of the interval).
    tokio::time::sleep(SEC).await;
    let checks_while_dead = script.results(addr(0)).len() - before;
    assert!(
        checks_while_dead >= 3,
        "{checks_while_dead} checks in the second after the ejection"
    );
    script.set(addr(0), true);
    let restarted = script.results(addr(0)).len();
    let ev = next_event(&mut events, 5).await;
    assert_eq!(ev.backend, a);
    assert_eq!(ev.new, State::Up);
    assert!(matches!(ev.reason, Reason::CheckPassed { .. }), "{ev}");
    assert_eq!(&script.results(addr(0))[restarted..], [true, true]);
    assert!(Instant::now() - ejected < 10 * SEC / 5);
    settle().await;
    let m = pool.load().get(a).unwrap().clone();
    assert!(m.is_up());
    assert_eq!(m.weight(), 2, "nginx's weight drop is forgotten");
    // Its failures too: one failure no longer reaches max_fails 2.
    passive.observe(a, Outcome::ConnectFailed, Duration::ZERO);
    settle().await;
    assert!(pool.load().get(a).unwrap().is_up());
    assert!(sup.state(a).unwrap().is_serving());
    checker.stop();
}

#[tokio::test(start_paused = true)]
async fn a_check_just_after_the_ejection_counts() {
    // The backend failed one request but is fine (restarted at once): the
    // first checks after the ejection count, and rise of them bring it back.
    let (pool, ids, sup, script, passive) = ejection_setup(1, 1);
    let a = ids[0];
    let checker = spawn_rise2_fall2(&sup, &script);
    let mut events = sup.events();
    tokio::time::sleep(3 * SEC).await;
    let before = script.results(addr(0)).len();
    passive.observe(a, Outcome::ConnectFailed, Duration::ZERO);
    assert!(next_event(&mut events, 1).await.new.is_failed());
    let ev = next_event(&mut events, 5).await;
    assert_eq!((ev.backend, ev.new), (a, State::Up));
    assert_eq!(&script.results(addr(0))[before..], [true, true]);
    settle().await;
    assert!(pool.load().get(a).unwrap().is_up());
    checker.stop();
}

#[tokio::test(start_paused = true)]
async fn fail_timeout_still_ends_the_ejection_once_the_checker_stops() {
    let (pool, ids, sup, script, passive) = ejection_setup(1, 1);
    let a = ids[0];
    let checker = spawn_rise2_fall2(&sup, &script);
    let mut events = sup.events();
    tokio::time::sleep(2 * SEC).await;
    script.set(addr(0), false);
    passive.observe(a, Outcome::ConnectFailed, Duration::ZERO);
    assert!(next_event(&mut events, 1).await.new.is_failed());
    tokio::time::sleep(2 * SEC).await;
    checker.stop();
    settle().await;
    assert!(
        !pool.load().get(a).unwrap().is_up(),
        "the passive ejection holds without the checker"
    );
    let ev = next_event(&mut events, 12).await;
    assert_eq!((ev.new, ev.reason), (State::Up, Reason::FailTimeoutElapsed));
}

#[tokio::test(start_paused = true)]
async fn a_slow_response_ejects_at_once_only_under_active_checks() {
    let (pool, ids, sup, script, passive) = ejection_setup(1, 1);
    let a = ids[0];
    // No active checks: nginx behaviour, the slow signal changes nothing.
    passive.slow(a, SEC);
    settle().await;
    assert_eq!(sup.state(a), Some(State::Up));
    assert!(pool.load().get(a).unwrap().is_up());

    let checker = spawn_rise2_fall2(&sup, &script);
    let mut events = sup.events();
    tokio::time::sleep(3 * SEC).await;
    // The backend hangs: its health checks fail, and a request waits.
    script.set(addr(0), false);
    passive.slow(a, SEC);
    let ev = next_event(&mut events, 1).await;
    assert_eq!(ev.backend, a);
    assert_eq!(ev.reason, Reason::SlowResponse { waited: SEC });
    assert!(!pool.load().get(a).unwrap().is_up(), "out of new picks");
    // It stays out while its checks fail, past the 10 s window.
    tokio::time::sleep(12 * SEC).await;
    assert!(sup.state(a).unwrap().is_failed());
    // Alive again: rise checks bring it back.
    let before = script.results(addr(0)).len();
    script.set(addr(0), true);
    let ev = next_event(&mut events, 5).await;
    assert_eq!((ev.backend, ev.new), (a, State::Up));
    assert_eq!(&script.results(addr(0))[before..], [true, true]);
    // A slow-but-alive backend: ejected, then back after rise fast checks.
    passive.slow(a, SEC);
    assert!(next_event(&mut events, 1).await.new.is_failed());
    let t = Instant::now();
    let ev = next_event(&mut events, 5).await;
    assert_eq!((ev.backend, ev.new), (a, State::Up));
    assert!(
        Instant::now() - t <= SEC,
        "back within a few fast intervals"
    );
    checker.stop();
}
