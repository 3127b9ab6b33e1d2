//! The LVS least-connection family, fo, ovf, twos, lblc and lblcr against
//! the vectors of `reference/vectors.md` sections 7, 8 and 12.
//!
//! vectors.md lists servers in kernel list order, where the first in the
//! list wins ties; pool order plays that part here, so "list A, B, C" is a
//! pool built by adding A, B, C in that order.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use lb_core::{Backend, BackendId, ConnGuard, Ctx, Health, Pool};
use lb_sched::{build, Balancer, Explain};

/// A server of a vector: name, active, inactive, weight.
type Dest = (&'static str, u32, u32, u64);

/// A pool of `dests` in order, with their connections open (and kept open
/// by the returned guards).
fn pool_of(dests: &[Dest]) -> (Pool, Vec<ConnGuard>) {
    let pool = Pool::new();
    let mut guards = Vec::new();
    for (i, &(name, active, inactive, weight)) in dests.iter().enumerate() {
        let addr: SocketAddr = format!("10.0.0.{}:80", i + 1).parse().unwrap();
        let id = pool
            .add(Backend::new(name, addr).with_weight(weight))
            .unwrap();
        let snap = pool.load();
        let m = snap.get(id).unwrap();
        guards.extend((0..active).map(|_| m.connect()));
        for _ in 0..inactive {
            let mut g = m.connect();
            g.idle();
            guards.push(g);
        }
    }
    (pool, guards)
}

fn client() -> SocketAddr {
    "198.51.100.1:40000".parse().unwrap()
}

/// What `sched` picks now, without opening a connection ("-" for none).
fn pick_with(pool: &Pool, sched: &str, ctx: &Ctx<'_>) -> String {
    let lb = Balancer::new(pool.clone(), build(sched).unwrap());
    let snap = lb.pool().load();
    let pick = lb.scheduler().pick(&snap, ctx);
    pick.map_or("-".to_owned(), |p| p.member().name().to_owned())
}

fn pick(pool: &Pool, sched: &str) -> String {
    pick_with(pool, sched, &Ctx::at(client(), Duration::ZERO))
}

const COLUMNS: [&str; 6] = ["lc", "wlc", "sed", "nq", "fo", "ovf"];

/// vectors.md section 7: one row per vector, the expected pick of lc, wlc,
/// sed, nq, fo and ovf ("-" = none).
const SECTION_7: &[(&str, &[Dest], [&str; 6])] = &[
    (
        "LVS-LC-1",
        &[("A", 10, 0, 1), ("B", 10, 0, 2), ("C", 20, 0, 3)],
        ["A", "B", "B", "B", "C", "-"],
    ),
    (
        "LVS-LC-2",
        &[("A", 1, 50, 1), ("B", 1, 100, 2), ("C", 0, 900, 1)],
        ["A", "B", "B", "C", "B", "B"],
    ),
    (
        "LVS-LC-3",
        &[("A", 1, 0, 5), ("B", 0, 0, 1)],
        ["B", "B", "A", "B", "A", "A"],
    ),
    (
        "LVS-LC-4",
        &[("A", 0, 0, 1), ("B", 0, 0, 10)],
        ["A", "A", "B", "A", "B", "B"],
    ),
    (
        "LVS-LC-5",
        &[("A", 2, 0, 1), ("B", 6, 0, 3)],
        ["A", "A", "B", "B", "B", "-"],
    ),
    (
        "LVS-LC-6",
        &[("A", 3, 0, 4), ("B", 2, 0, 2), ("C", 0, 0, 1)],
        ["C", "C", "A", "C", "A", "A"],
    ),
    (
        "LVS-LC-7",
        &[("A", 4, 0, 3), ("B", 2, 0, 2), ("C", 0, 0, 1)],
        ["C", "C", "C", "C", "A", "B"],
    ),
    (
        "LVS-LC-8",
        &[("A", 5, 0, 0), ("B", 3, 0, 2)],
        ["B", "B", "B", "B", "B", "-"],
    ),
];

#[test]
fn section_7_least_connection_family() {
    for &(id, dests, want) in SECTION_7 {
        let (pool, _guards) = pool_of(dests);
        for (sched, want) in COLUMNS.iter().zip(want) {
            assert_eq!(pick(&pool, sched), want, "{id}, {sched}");
        }
    }
}

/// LVS-LC-9: A(0,0,2), B(0,0,1) with B OVERLOAD -> A for all. OVERLOAD is a
/// full connection limit here (or B down): B is skipped by all of them.
#[test]
fn lvs_lc_9_an_ineligible_backend_is_skipped_by_all() {
    let (pool, _guards) = pool_of(&[("A", 0, 0, 2), ("B", 0, 0, 1)]);
    let b = pool.find("B").unwrap();
    pool.set_health(b, Health::Down).unwrap();
    for sched in COLUMNS {
        assert_eq!(pick(&pool, sched), "A", "{sched}");
    }

    // B would win every least-connection rule if eligible: A(3,0,2), B(0,1,1).
    let (pool, _guards) = pool_of(&[("A", 3, 0, 2), ("B", 0, 1, 1)]);
    let want_if_b = ["B", "B", "B", "B", "A", "B"];
    for (sched, want) in COLUMNS.iter().zip(want_if_b) {
        assert_eq!(pick(&pool, sched), want, "{sched}, B eligible");
    }
    let b = pool.find("B").unwrap();
    let without_b = ["A", "A", "A", "A", "A", "-"];
    let tried = [b];
    let ctx = Ctx::at(client(), Duration::ZERO).with_tried(&tried);
    for (sched, want) in COLUMNS.iter().zip(without_b) {
        assert_eq!(
            pick_with(&pool, sched, &ctx),
            want,
            "{sched}, B already tried"
        );
    }
    pool.set_max_conns(b, 1).unwrap();
    for (sched, want) in COLUMNS.iter().zip(without_b) {
        assert_eq!(pick(&pool, sched), want, "{sched}, B at max_conns");
    }
}

/// LVS-UDP-1: with UDP every connection is inactive.
#[test]
fn lvs_udp_1() {
    let (pool, _g) = pool_of(&[("A", 0, 40, 1), ("B", 0, 10, 1)]);
    assert_eq!(pick(&pool, "nq"), "A", "first idle");
    assert_eq!(pick(&pool, "wlc"), "B", "overhead 40 vs 10");
    assert_eq!(pick(&pool, "sed"), "A", "tie 1/1 = 1/1, first wins");
    let (pool, _g) = pool_of(&[("A", 0, 0, 1), ("B", 0, 0, 5)]);
    assert_eq!(pick(&pool, "sed"), "B");
    assert_eq!(pick(&pool, "nq"), "A");
}

#[test]
fn nothing_eligible_gives_none() {
    let pool = Pool::new();
    for sched in COLUMNS.iter().chain(&["twos"]) {
        assert_eq!(pick(&pool, sched), "-", "{sched}, empty pool");
    }
    let (pool, _g) = pool_of(&[("A", 0, 0, 0), ("B", 0, 0, 3)]);
    pool.set_health(pool.find("B").unwrap(), Health::Down)
        .unwrap();
    for sched in COLUMNS.iter().chain(&["twos"]) {
        assert_eq!(pick(&pool, sched), "-", "{sched}, weight 0 and down");
    }
}

#[test]
fn explanations_show_loads_and_the_rule() {
    let (pool, _g) = pool_of(&[("A", 10, 0, 1), ("B", 10, 0, 2), ("C", 20, 0, 3)]);
    let lb = Balancer::new(pool, build("wlc").unwrap());
    let mut why = Explain::new();
    let conn = lb
        .explain(&Ctx::at(client(), Duration::ZERO), &mut why)
        .unwrap();
    assert_eq!(&*conn.name, "B");
    let text = why.to_string();
    assert!(text.contains("replaces A, 2560*2 > 2560*1"), "{text}");
    assert!(text.contains("keeps B, 2560*3 <= 5120*2"), "{text}");
    assert!(
        text.contains("rule: wlc") && text.ends_with("-> B\n"),
        "{text}"
    );
}

// === twos ===

/// An independent SplitMix64 (Steele, Lea, Flood 2014), to predict the
/// draws of `twos seed=N`: each draw is the high 32 bits of one output.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn draw(&mut self, total: u64) -> u64 {
        (self.next() >> 32) % (total + 1)
    }
}

/// vectors.md 8: list A(2), B(3), C(5), W = 10: r 0..=2 -> A, 3..=5 -> B,
/// 6..=10 -> C.
fn twos_map(r: u64) -> usize {
    match r {
        0..=2 => 0,
        3..=5 => 1,
        _ => 2,
    }
}

#[test]
fn twos_draws_map_to_backends_and_ties_go_to_the_first_choice() {
    assert_eq!(
        SplitMix64(0).next(),
        0xE220_A839_7B1D_CDAF,
        "the reference SplitMix64"
    );
    let names = ["A", "B", "C"];
    // All idle: every comparison is a tie, so the first draw decides alone.
    let (pool, _g) = pool_of(&[("A", 0, 0, 2), ("B", 0, 0, 3), ("C", 0, 0, 5)]);
    let lb = Balancer::new(pool, build("twos seed=7").unwrap());
    let mut rng = SplitMix64(7);
    let ctx = Ctx::at(client(), Duration::ZERO);
    let mut seen = [0; 3];
    for k in 0..300 {
        let (r1, _r2) = (rng.draw(10), rng.draw(10));
        let snap = lb.pool().load();
        let got = lb.scheduler().pick(&snap, &ctx).unwrap();
        assert_eq!(
            got.member().name(),
            names[twos_map(r1)],
            "pick {k}, r1 = {r1}"
        );
        seen[twos_map(r1)] += 1;
    }
    assert!(seen.iter().all(|&n| n > 0), "every backend drawn: {seen:?}");
}

#[test]
fn twos_second_choice_wins_only_when_strictly_less_loaded() {
    // A oh 512, B oh 2560, C oh 1280 (vectors.md 8: A vs C is a tie -> A).
    let dests = [("A", 2, 0, 2), ("B", 10, 0, 3), ("C", 5, 0, 5)];
    let (pool, _g) = pool_of(&dests);
    let lb = Balancer::new(pool, build("twos seed=42").unwrap());
    let mut rng = SplitMix64(42);
    let ctx = Ctx::at(client(), Duration::ZERO);
    let oh = |i: usize| 256 * u64::from(dests[i].1);
    let mut a_then_c = 0;
    for k in 0..500 {
        let (c1, c2) = (twos_map(rng.draw(10)), twos_map(rng.draw(10)));
        let want = if dests[c2].3 * oh(c1) > dests[c1].3 * oh(c2) {
            c2
        } else {
            c1
        };
        let snap = lb.pool().load();
        let got = lb.scheduler().pick(&snap, &ctx).unwrap();
        assert_eq!(
            got.member().name(),
            dests[want].0,
            "pick {k}: choices {c1} {c2}"
        );
        if (c1, c2) == (0, 2) {
            assert_eq!(got.member().name(), "A", "5*512 > 2*1280 is false");
            a_then_c += 1;
        }
    }
    assert!(a_then_c > 0, "the vector's draw pair occurred");
}

// === lblc / lblcr ===

/// A replay-like driver: picks at a virtual time for a destination, opening
/// connections that stay open until closed by id.
struct Run {
    lb: Balancer,
    now: Duration,
    conns: HashMap<u32, ConnGuard>,
}

impl Run {
    fn new(sched: &str, backends: &[(&str, u64)]) -> Self {
        let pool = Pool::new();
        for (i, &(name, w)) in backends.iter().enumerate() {
            let addr = format!("10.0.0.{}:80", i + 1).parse().unwrap();
            pool.add(Backend::new(name, addr).with_weight(w)).unwrap();
        }
        Run {
            lb: Balancer::new(pool, build(sched).unwrap()),
            now: Duration::ZERO,
            conns: HashMap::new(),
        }
    }

    fn at(&mut self, secs: u64) {
        self.now = Duration::from_secs(secs);
    }

    fn ctx(&self, dest: &str) -> Ctx<'static> {
        let dest: SocketAddr = dest.parse().unwrap();
        Ctx::at(client(), self.now).with_dest(dest)
    }

    /// `conn ID CLIENT DEST`: the chosen backend's name, or "-".
    fn conn(&mut self, id: u32, dest: &str) -> String {
        match self.lb.connect(&self.ctx(dest)) {
            Ok(c) => {
                self.conns.insert(id, c.guard);
                c.name.to_string()
            }
            Err(_) => "-".to_owned(),
        }
    }

    fn conns(&mut self, ids: std::ops::RangeInclusive<u32>, dest: &str) -> String {
        ids.map(|id| self.conn(id, dest))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn close(&mut self, ids: &[u32]) {
        for id in ids {
            self.conns.remove(id).expect("an open connection");
        }
    }

    fn id(&self, name: &str) -> BackendId {
        self.lb.pool().find(name).unwrap()
    }
}

const X: &str = "192.0.2.1:80";
const Y: &str = "192.0.2.2:80";

/// LVS-LBLC-1: cache X -> A, A.act = 3 > 2 and B.act = 1 (2*1 < 4): A is
/// overloaded, wlc picks B and the entry becomes X -> B.
#[test]
fn lvs_lblc_1a_overloaded_cached_backend_is_replaced() {
    let mut r = Run::new("lblc", &[("a", 2), ("b", 4)]);
    assert_eq!(r.conns(1..=3, X), "a a a");
    assert_eq!(r.conn(4, Y), "b");
    assert_eq!(r.conn(5, X), "b", "768*4 > 256*2");
    assert_eq!(
        r.conn(6, "192.0.2.1:81"),
        "b",
        "the port is not part of the key"
    );
}

/// LVS-LBLC-1, second case: B.act = 2, nobody under half load: keep A.
#[test]
fn lvs_lblc_1b_over_weight_but_nobody_under_half_load_keeps_the_entry() {
    let mut r = Run::new("lblc", &[("a", 2), ("b", 4)]);
    assert_eq!(r.conns(1..=3, X), "a a a");
    assert_eq!(r.conns(4..=5, Y), "b b");
    assert_eq!(r.conn(6, X), "a");
}

/// LVS-LBLC-2: a cached backend of weight 0 -> reselect, and the entry now
/// names the new backend. (The kernel returns a cached dest flagged
/// OVERLOAD; here a cached backend must be eligible, which includes being
/// under its connection limit.)
#[test]
fn lvs_lblc_2_ineligible_cached_backend_is_replaced() {
    let mut r = Run::new("lblc", &[("a", 2), ("b", 4)]);
    assert_eq!(r.conn(1, X), "a");
    r.lb.pool().set_weight(r.id("a"), 0).unwrap();
    assert_eq!(r.conn(2, X), "b");
    r.lb.pool().set_weight(r.id("a"), 2).unwrap();
    assert_eq!(r.conn(3, X), "b");
    r.lb.pool().set_max_conns(r.id("b"), 2).unwrap();
    assert_eq!(r.conn(4, X), "a", "b is at max_conns");
    r.lb.pool().set_health(r.id("a"), Health::Down).unwrap();
    r.lb.pool().set_max_conns(r.id("b"), 0).unwrap();
    assert_eq!(r.conn(5, X), "b", "a is down");
}

/// "Overloaded" needs an *eligible* backend under half load (a declared
/// departure: the kernel counts every dest). Here only b, which is down, is
/// under half load, so a (3 active > weight 2) is kept; by the kernel's rule
/// wlc would move X to c.
#[test]
fn overloaded_looks_for_an_eligible_backend_under_half_load() {
    for sched in ["lblc", "lblcr"] {
        let mut r = Run::new(sched, &[("a", 2), ("b", 4), ("c", 2)]);
        assert_eq!(r.conns(1..=3, X), "a a a", "{sched}");
        assert_eq!(r.conn(4, Y), "b", "{sched}");
        assert_eq!(r.conn(5, "192.0.2.3:80"), "c", "{sched}");
        r.lb.pool().set_health(r.id("b"), Health::Down).unwrap();
        assert_eq!(r.conn(6, X), "a", "{sched}");
        r.lb.pool().set_health(r.id("b"), Health::Up).unwrap();
        assert_eq!(r.conn(7, X), "b", "{sched}: b is under half load again");
    }
}

/// replay/lblc-expiry-boundary: valid while now - last_use < expire.
#[test]
fn lblc_entry_expires_exactly_at_expire() {
    let mut r = Run::new("lblc expire=30", &[("a", 2), ("b", 4)]);
    assert_eq!(r.conn(1, X), "a");
    assert_eq!(r.conn(2, Y), "b");
    r.at(29);
    assert_eq!(r.conn(3, X), "a", "29 < 30: valid");
    r.at(58);
    assert_eq!(r.conn(4, X), "a", "refreshed at 29: 58 - 29 < 30");
    r.at(88);
    assert_eq!(r.conn(5, X), "b", "88 - 58 = 30: expired, wlc");
}

#[test]
fn lblc_and_lblcr_need_a_destination() {
    for sched in ["lblc", "lblcr"] {
        let r = Run::new(sched, &[("a", 1)]);
        let ctx = Ctx::at(client(), Duration::ZERO);
        assert!(r.lb.pick(&ctx).is_none(), "{sched} without a destination");
        assert!(r.lb.pick(&r.ctx(X)).is_some(), "{sched} with one");
    }
}

/// LVS-LBLCR-1 up to the set {c, a} changed at t = 10 (expire = 100).
fn lblcr_1_setup() -> Run {
    let mut r = Run::new("lblcr expire=100", &[("a", 2), ("b", 2), ("c", 2)]);
    assert_eq!(r.conns(1..=3, X), "a a a");
    assert_eq!(r.conn(4, Y), "b");
    r.at(10);
    assert_eq!(
        r.conn(5, X),
        "c",
        "a overloaded, c under half load: wlc -> c joins"
    );
    r.at(60);
    assert_eq!(r.conn(6, X), "c", "the set's min");
    r
}

/// LVS-LBLCR-1 (replay/lvs-lblcr-1): unchanged for longer than expire, the
/// set loses its most loaded member, A.
#[test]
fn lvs_lblcr_1_shrink_removes_the_most_loaded_member() {
    let mut r = lblcr_1_setup();
    r.at(111);
    assert_eq!(r.conn(7, X), "c", "min computed before the shrink");
    r.close(&[1, 2, 3, 7]);
    assert_eq!(r.conn(8, X), "c", "a left the set though it is now idle");
}

/// replay/lblcr-shrink-boundary: at exactly last_change + expire, no shrink.
#[test]
fn lblcr_shrink_needs_strictly_more_than_expire() {
    let mut r = lblcr_1_setup();
    r.at(110);
    assert_eq!(r.conn(7, X), "c");
    r.close(&[1, 2, 3, 7]);
    assert_eq!(r.conn(8, X), "a", "a is still a member, and least loaded");
}

/// The shrink happens even if the pick then ends with none, and it looks at
/// weight only, not health.
#[test]
fn lblcr_shrink_happens_even_when_the_pick_gives_none() {
    let mut r = lblcr_1_setup();
    r.at(111);
    let pool = r.lb.pool().clone();
    for name in ["a", "b", "c"] {
        pool.set_health(r.id(name), Health::Down).unwrap();
    }
    assert_eq!(r.conn(7, X), "-");
    for name in ["a", "b", "c"] {
        pool.set_health(r.id(name), Health::Up).unwrap();
    }
    r.close(&[1, 2, 3]);
    r.at(112);
    assert_eq!(
        r.conn(8, X),
        "c",
        "a (then the most loaded, though down) was removed"
    );
}

/// A shrink that finds no member of weight > 0 removes nothing and leaves
/// the change time alone, so the next lookup shrinks.
#[test]
fn lblcr_shrink_without_weighted_members_keeps_the_change_time() {
    let mut r = lblcr_1_setup();
    r.at(111);
    let pool = r.lb.pool().clone();
    for name in ["a", "b", "c"] {
        pool.set_weight(r.id(name), 0).unwrap();
    }
    assert_eq!(r.conn(7, X), "-");
    for name in ["a", "b", "c"] {
        pool.set_weight(r.id(name), 2).unwrap();
    }
    r.close(&[1, 2, 3, 6]);
    r.at(112);
    // a is idle, c has one active: the min is a; the shrink (the change time
    // is still 10) removes c, the most loaded.
    assert_eq!(r.conn(8, X), "a");
    // Now a and c both have one active: {c, a} would give c (newest first).
    assert_eq!(r.conn(9, X), "a", "the set is {{a}}");
}

#[test]
fn lblcr_expired_entry_starts_a_new_set() {
    let mut r = lblcr_1_setup();
    r.at(160);
    // 160 - 60 = 100: expired. Valid, the set {c, a} would give c; wlc over
    // the pool (a 768, b 256, c 512) gives b.
    assert_eq!(r.conn(7, X), "b");
    assert_eq!(r.conn(8, X), "b", "the set is {{b}}");
}

#[test]
fn locality_schedulers_never_return_a_removed_backend() {
    for sched in ["lblc", "lblcr"] {
        let mut r = Run::new(sched, &[("a", 1), ("b", 1)]);
        assert_eq!(r.conn(1, X), "a", "{sched}");
        r.lb.pool().remove(r.id("a")).unwrap();
        assert_eq!(r.conn(2, X), "b", "{sched}");
        assert_eq!(r.conn(3, X), "b", "{sched}");
    }
}

#[test]
fn options_are_checked() {
    assert!(build("lblc expire=0").is_err());
    assert!(build("lblcr expire=x").is_err());
    assert!(build("twos seed=-1").is_err());
    assert!(build("wlc expire=5").is_err());
    assert_eq!(build("lblcr expire=5").unwrap().name(), "lblcr");
    assert_eq!(
        build("twos seed=18446744073709551615").unwrap().name(),
        "twos"
    );
}
