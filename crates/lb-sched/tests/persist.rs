//! Persistence (`Persist`), against SCHEDULERS.md "Persistence", its edge
//! cases, and the LVS-PERS vectors of reference/vectors.md.

use std::time::Duration;

use lb_core::{Backend, BackendId, Ctx, Health, Pool};
use lb_sched::{Balancer, Conn, Explain, Persist, Scheduler};

/// A pool a, b, c (weight 1, in that order) behind rr with persistence.
fn setup(timeout: u64, netmask: &str, expire_quiescent: bool) -> (Balancer, [BackendId; 3]) {
    let pool = Pool::new();
    let ids = ["a", "b", "c"].map(|n| {
        let addr = format!("10.0.0.{}:80", n.as_bytes()[0] - b'a' + 1);
        pool.add(Backend::new(n, addr.parse().unwrap())).unwrap()
    });
    let sched = Persist::new(lb_sched::build("rr").unwrap(), Duration::from_secs(timeout))
        .with_netmask(netmask.parse().unwrap())
        .with_expire_quiescent(expire_quiescent);
    (Balancer::new(pool, Box::new(sched)), ids)
}

fn ctx(client: &str, at: u64) -> Ctx<'static> {
    Ctx::at(client.parse().unwrap(), Duration::from_secs(at))
}

/// Connect and return the connection (kept open by the caller).
fn conn(lb: &Balancer, client: &str, at: u64) -> Conn {
    lb.connect(&ctx(client, at))
        .unwrap_or_else(|_| panic!("{client} at {at}s found no backend"))
}

/// Connect, close at once, and return the backend's name.
fn once(lb: &Balancer, client: &str, at: u64) -> String {
    conn(lb, client, at).name.to_string()
}

#[test]
fn lvs_pers_1_netmask_groups_clients_on_one_template() {
    let (lb, _) = setup(360, "255.255.255.0", false);
    let names: Vec<String> = [
        "10.1.2.3:1000",
        "10.1.2.200:1000",
        "10.9.9.9:1000",
        "10.1.3.1:1000",
    ]
    .iter()
    .map(|c| once(&lb, c, 0))
    .collect();
    assert_eq!(
        names,
        ["a", "a", "b", "c"],
        "10.1.2.0/24 shares a's template; others go on by rr"
    );
}

#[test]
fn lvs_pers_2_weight_0_keeps_templates_by_default() {
    let (lb, [a, ..]) = setup(360, "255.255.255.0", false);
    assert_eq!(once(&lb, "10.1.2.3:1000", 0), "a");
    assert_eq!(once(&lb, "10.9.9.9:1000", 0), "b");
    lb.pool().set_weight(a, 0).unwrap();
    assert_eq!(
        once(&lb, "10.1.2.7:1000", 0),
        "a",
        "a quiesced backend keeps its template"
    );
    assert_eq!(
        once(&lb, "10.8.8.8:1000", 0),
        "c",
        "but gets nothing new from rr"
    );
}

#[test]
fn lvs_pers_2_expire_quiescent_drops_templates_of_weight_0() {
    let (lb, [a, ..]) = setup(360, "255.255.255.0", true);
    assert_eq!(once(&lb, "10.1.2.3:1000", 0), "a");
    assert_eq!(once(&lb, "10.9.9.9:1000", 0), "b");
    lb.pool().set_weight(a, 0).unwrap();
    assert_eq!(
        once(&lb, "10.1.2.7:1000", 0),
        "c",
        "the template is dropped and rr chooses"
    );
    assert_eq!(
        once(&lb, "10.1.2.8:1000", 0),
        "c",
        "the new template points at c"
    );
}

#[test]
fn draining_counts_like_weight_0() {
    for (eq, want) in [(false, "a"), (true, "b")] {
        let (lb, [a, ..]) = setup(360, "255.255.255.255", eq);
        assert_eq!(once(&lb, "10.1.2.3:1000", 0), "a");
        lb.pool().set_health(a, Health::Draining).unwrap();
        assert_eq!(once(&lb, "10.1.2.3:1001", 0), want, "expire_quiescent={eq}");
    }
}

#[test]
fn template_is_kept_while_a_connection_it_placed_is_open() {
    let (lb, _) = setup(10, "255.255.255.255", false);
    let mut first = conn(&lb, "10.1.2.3:1000", 0);
    first.guard.idle(); // idle still counts as open
    let second = conn(&lb, "10.1.2.3:1001", 50);
    assert_eq!(&*second.name, "a", "50s > timeout, but conn 1 is open");
    drop((first, second));
    assert_eq!(once(&lb, "10.1.2.3:1002", 59), "a", "last use 50: 59 < 60");
    assert_eq!(
        once(&lb, "10.1.2.3:1003", 69),
        "b",
        "last use 59: 69 is not < 69"
    );
}

#[test]
fn template_expires_exactly_at_last_use_plus_timeout() {
    let (lb, _) = setup(10, "255.255.255.255", false);
    assert_eq!(once(&lb, "10.1.2.3:1000", 0), "a");
    assert_eq!(once(&lb, "10.1.2.3:1001", 9), "a", "9 < 0 + 10");
    assert_eq!(
        once(&lb, "10.1.2.3:1002", 18),
        "a",
        "18 < 9 + 10: refreshed by the use at 9"
    );
    assert_eq!(
        once(&lb, "10.1.2.3:1003", 28),
        "b",
        "28 = 18 + 10: expired at lookup"
    );
    assert_eq!(
        once(&lb, "10.1.2.3:1004", 37),
        "b",
        "the new template, created at 28"
    );
}

#[test]
fn down_backend_drops_its_template_for_good() {
    let (lb, [a, ..]) = setup(300, "255.255.255.255", false);
    assert_eq!(once(&lb, "10.1.2.3:1000", 0), "a");
    lb.pool().set_health(a, Health::Down).unwrap();
    assert_eq!(once(&lb, "10.1.2.3:1001", 1), "b");
    lb.pool().set_health(a, Health::Up).unwrap();
    assert_eq!(
        once(&lb, "10.1.2.3:1002", 2),
        "b",
        "the template now points at b"
    );
}

#[test]
fn removed_backend_drops_its_template() {
    let (lb, [a, ..]) = setup(300, "255.255.255.255", false);
    let open = conn(&lb, "10.1.2.3:1000", 0);
    lb.pool().remove(a).unwrap();
    assert_eq!(
        once(&lb, "10.1.2.3:1001", 1),
        "b",
        "open conns do not keep a removed backend"
    );
    drop(open);
}

#[test]
fn no_template_when_the_inner_scheduler_finds_nothing() {
    // rr needs no tables, so the wrapper can be driven without a Balancer
    // and its template count read directly.
    let pool = Pool::new();
    let a = pool
        .add(Backend::new("a", "10.0.0.1:80".parse().unwrap()))
        .unwrap();
    let p = Persist::new(lb_sched::build("rr").unwrap(), Duration::from_secs(60));
    pool.set_health(a, Health::Down).unwrap();
    assert!(p.pick(&pool.load(), &ctx("10.1.2.3:1", 0)).is_none());
    assert_eq!(p.templates(), 0, "nothing chosen, nothing remembered");
    pool.set_health(a, Health::Up).unwrap();
    let pick = p
        .pick(&pool.load(), &ctx("10.1.2.3:1", 0))
        .map(|p| p.member().id());
    assert_eq!((pick, p.templates()), (Some(a), 1));
}

#[test]
fn unusable_template_is_dropped_even_when_nothing_replaces_it() {
    let (lb, [a, b, _]) = setup(300, "255.255.255.255", false);
    let c = lb.pool().find("c").unwrap();
    assert_eq!(once(&lb, "10.1.2.3:1000", 0), "a");
    for id in [a, b, c] {
        lb.pool().set_health(id, Health::Down).unwrap();
    }
    assert!(lb.connect(&ctx("10.1.2.3:1001", 1)).is_err());
    for id in [a, b, c] {
        lb.pool().set_health(id, Health::Up).unwrap();
    }
    assert_eq!(
        once(&lb, "10.1.2.3:1002", 2),
        "b",
        "a's template went with the down lookup; rr goes on after a"
    );
}

#[test]
fn ipv6_clients_are_keyed_on_the_full_address() {
    let (lb, _) = setup(360, "255.255.255.0", false);
    assert_eq!(once(&lb, "[2001:db8::1]:1000", 0), "a");
    assert_eq!(
        once(&lb, "[2001:db8::2]:1000", 0),
        "b",
        "the netmask does not apply to IPv6"
    );
    assert_eq!(
        once(&lb, "[2001:db8::1]:2000", 0),
        "a",
        "the port is not in the key"
    );
}

#[test]
fn tried_backend_is_passed_over_without_losing_the_template() {
    let (lb, [a, ..]) = setup(360, "255.255.255.255", false);
    assert_eq!(once(&lb, "10.1.2.3:1000", 0), "a");
    let tried = [a];
    let retry = lb
        .connect(&ctx("10.1.2.3:1001", 0).with_tried(&tried))
        .unwrap();
    assert_eq!(&*retry.name, "b");
    assert_eq!(
        once(&lb, "10.1.2.3:1002", 0),
        "a",
        "the template survives a retry"
    );
}

#[test]
fn explain_says_what_happened_to_the_template() {
    let (lb, [a, ..]) = setup(10, "255.255.255.255", false);
    let explain = |at: u64| {
        let mut why = Explain::new();
        let c = lb.explain(&ctx("10.1.2.3:1000", at), &mut why).unwrap();
        (c.name.to_string(), why.to_string())
    };
    let (name, why) = explain(0);
    assert_eq!(name, "a");
    assert!(
        why.contains("no template") && why.contains("created"),
        "{why}"
    );
    let (_, why) = explain(5);
    assert!(why.contains("used"), "{why}");
    let (name, why) = explain(15);
    assert_eq!(
        name, "b",
        "last use 5: 15 is not < 15, so rr chooses after a"
    );
    assert!(why.contains("dropped") && why.contains("expired"), "{why}");
    lb.pool().set_health(a, Health::Down).unwrap();
    let (_, why) = explain(16);
    assert!(why.contains("used"), "the template points at b now: {why}");
}

#[test]
fn name_and_features_are_the_inner_schedulers() {
    let p = Persist::new(lb_sched::build("wrr").unwrap(), Duration::from_secs(1));
    let inner = lb_sched::build("wrr").unwrap();
    assert_eq!(p.name(), "wrr");
    assert_eq!(p.features(), inner.features());
}
