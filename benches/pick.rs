//! ns per pick for every registered scheduler at 3, 100 and 10,000 backends,
//! single-threaded and with two threads picking at once.
//!
//! `cargo bench --bench pick` (all), or e.g. `cargo bench --bench pick -- wlc/`
//! for one scheduler. `LB_BENCH_QUICK=1` shortens the runs;
//! `LB_BENCH_CLOCK=thread` measures thread CPU time instead of wall time
//! (steadier on a shared machine; see `support/clock.rs`).

use std::cell::OnceCell;
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use lb_core::{Backend, Change, ConnGuard, Ctx, Pool};
use lb_sched::{Balancer, Persist};

#[path = "support/clock.rs"]
mod clock;
use clock::{config, quick, Clock};

const SIZES: [usize; 3] = [3, 100, 10_000];
/// Distinct clients, destinations and keys cycled through by the picks.
const CLIENTS: usize = 1024;

struct Fixture {
    lb: Balancer,
    clients: Vec<SocketAddr>,
    dests: Vec<SocketAddr>,
    keys: Vec<String>,
    _load: Vec<ConnGuard>,
}

fn fixture(sched: &str, n: usize) -> Fixture {
    let pool = Pool::new();
    // One batch: one snapshot, instead of n writes each copying the pool.
    pool.batch(|b| {
        for i in 0..n {
            let addr = SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 80));
            b.add(Backend::new(format!("b{i}"), addr).with_weight(1 + (i % 4) as u64))?;
        }
        Ok(())
    })
    .expect("valid backends");
    // Some standing load so least-connection schedulers compare real numbers.
    let mut load = Vec::new();
    for (i, m) in pool.load().members().iter().enumerate() {
        for k in 0..(i * 7 % 5) {
            let mut g = m.connect();
            if k % 2 == 1 {
                g.idle();
            }
            load.push(g);
        }
    }
    let lb = Balancer::new(pool, lb_sched::build(sched).expect("registered scheduler"));
    let clients = (0..CLIENTS)
        .map(|i| SocketAddr::from(([192, 0, (i >> 8) as u8, i as u8], 1024 + i as u16)))
        .collect();
    let dests = (0..CLIENTS)
        .map(|i| SocketAddr::from(([172, 16, (i >> 8) as u8, i as u8], 80)))
        .collect();
    let keys = (0..CLIENTS).map(|i| format!("/item/{i}")).collect();
    Fixture {
        lb,
        clients,
        dests,
        keys,
        _load: load,
    }
}

impl Fixture {
    /// The `Ctx` of the `i`th pick: the clients, destinations and keys in
    /// turn.
    #[inline]
    fn ctx(&self, i: usize) -> Ctx<'_> {
        let k = i % CLIENTS;
        Ctx::at(self.clients[k], Duration::from_secs(1))
            .with_dest(self.dests[k])
            .with_key(self.keys[k].as_bytes())
    }

    /// One pick as `Balancer::connect` makes it, without the connection:
    /// the snapshot through `Pool::with_snapshot`, then the scheduler.
    #[inline]
    fn pick(&self, i: usize) -> bool {
        let ctx = self.ctx(i);
        self.lb
            .pool()
            .with_snapshot(|snap| self.lb.scheduler().pick(snap, &ctx).is_some())
    }
}

fn bench_single(c: &mut Criterion<Clock>) {
    let mut g = c.benchmark_group("pick");
    for name in lb_sched::NAMES {
        for n in SIZES {
            // Built on first use: criterion runs only the benchmarks the filter selects.
            let cell = OnceCell::new();
            g.bench_function(BenchmarkId::new(*name, n), |b| {
                let f = cell.get_or_init(|| fixture(name, n));
                let mut i = 0usize;
                b.iter(|| {
                    i = i.wrapping_add(1);
                    black_box(f.pick(i))
                })
            });
        }
    }
    g.finish();
}

/// What every pick above pays before the scheduler runs: reaching the
/// snapshot (`with_snapshot`, as the picks do, or a plain `load`) and
/// building the `Ctx` (also measured alone). Subtract it to see a
/// scheduler's own cost.
fn bench_overhead(c: &mut Criterion<Clock>) {
    let mut g = c.benchmark_group("overhead");
    let cell = OnceCell::new();
    g.bench_function("with_snapshot+ctx", |b| {
        let f = cell.get_or_init(|| fixture("rr", 3));
        let mut i = 0usize;
        b.iter(|| {
            i = i.wrapping_add(1);
            let ctx = f.ctx(i);
            f.lb.pool()
                .with_snapshot(|snap| black_box((snap, &ctx)).0.len())
        })
    });
    g.bench_function("ctx", |b| {
        let f = cell.get_or_init(|| fixture("rr", 3));
        let mut i = 0usize;
        b.iter(|| {
            i = i.wrapping_add(1);
            black_box(&f.ctx(i));
        })
    });
    g.bench_function("load+ctx", |b| {
        let f = cell.get_or_init(|| fixture("rr", 3));
        let mut i = 0usize;
        b.iter(|| {
            i = i.wrapping_add(1);
            let snap = f.lb.pool().load();
            let ctx = f.ctx(i);
            black_box((&*snap, &ctx));
        })
    });
    g.finish();
}

/// Persistence around rr: every client has a template after its first pick,
/// so the measured picks are template hits.
fn bench_persist(c: &mut Criterion<Clock>) {
    let mut g = c.benchmark_group("pick");
    for n in SIZES {
        let cell = OnceCell::new();
        g.bench_function(BenchmarkId::new("persist", n), |b| {
            let f = cell.get_or_init(|| {
                let f = fixture("rr", n);
                let sched =
                    Persist::new(lb_sched::build("rr").expect("rr"), Duration::from_secs(300));
                let lb = Balancer::new(f.lb.pool().clone(), Box::new(sched));
                let f = Fixture { lb, ..f };
                for i in 0..CLIENTS {
                    f.pick(i);
                }
                f
            });
            let mut i = 0usize;
            b.iter(|| {
                i = i.wrapping_add(1);
                black_box(f.pick(i))
            })
        });
    }
    g.finish();
}

/// wrr at 10,000 backends after a health change that kept the `current`s
/// mid-sequence: weight classes left out of their cursor form are served
/// by their trees, O(log n) per pick instead of O(1).
fn bench_wrr_after_health(c: &mut Criterion<Clock>) {
    let mut g = c.benchmark_group("pick");
    let cell = OnceCell::new();
    g.bench_function(BenchmarkId::new("wrr_after_health", 10_000), |b| {
        let f = cell.get_or_init(|| {
            let f = fixture("wrr", 10_000);
            for i in 0..12_345 {
                f.pick(i);
            }
            let pool = f.lb.pool();
            let id = pool.load().members()[77].id();
            pool.set_health(id, lb_core::Health::Down)
                .expect("known backend");
            f
        });
        let mut i = 0usize;
        b.iter(|| {
            i = i.wrapping_add(1);
            black_box(f.pick(i))
        })
    });
    g.finish();
}

/// lblc and lblcr at 10,000 backends with 100,000 destinations in their
/// tables: every measured pick is a table hit on a table far larger than
/// the CPU's first caches.
fn bench_locality(c: &mut Criterion<Clock>) {
    const DESTS: usize = 100_000;
    // Computed, not read from a table: a real pick has its destination at hand.
    let dest =
        |i: usize| SocketAddr::from(([172, 16 + (i >> 16) as u8, (i >> 8) as u8, i as u8], 80));
    let mut g = c.benchmark_group("pick_100k_dests");
    for name in ["lblc", "lblcr"] {
        let cell = OnceCell::new();
        g.bench_function(BenchmarkId::new(name, 10_000), |b| {
            let f = cell.get_or_init(|| {
                let f = fixture(name, 10_000);
                let snap = f.lb.pool().load();
                for i in 0..DESTS {
                    let ctx = Ctx::at(f.clients[0], Duration::from_secs(1)).with_dest(dest(i));
                    f.lb.scheduler().pick(&snap, &ctx);
                }
                f
            });
            // A stride through the destinations, so consecutive picks do
            // not share cache lines.
            let mut i = 0usize;
            b.iter(|| {
                i = (i + 7919) % DESTS;
                let ctx =
                    Ctx::at(f.clients[i % CLIENTS], Duration::from_secs(1)).with_dest(dest(i));
                let sched = f.lb.scheduler();
                black_box(f.lb.pool().with_snapshot(|s| sched.pick(s, &ctx).is_some()))
            })
        });
    }
    g.finish();
}

/// Opening and closing one connection on a backend (the counter updates the
/// least-connection schedulers read), with each scheduler attached.
fn bench_open_close(c: &mut Criterion<Clock>) {
    let mut g = c.benchmark_group("open_close");
    for name in ["rr", "wlc", "fo", "ovf", "least_conn"] {
        for n in SIZES {
            let cell = OnceCell::new();
            g.bench_function(BenchmarkId::new(name, n), |b| {
                let f = cell.get_or_init(|| fixture(name, n));
                let snap = f.lb.pool().load();
                let members = snap.members();
                let mut i = 0usize;
                b.iter(|| {
                    i = (i + 7) % members.len();
                    let mut g = members[i].connect();
                    g.idle();
                    drop(black_box(g));
                })
            });
        }
    }
    g.finish();
}

/// A pool write at 10,000 backends: the whole write (copy of the member
/// list, the scheduler's `prepare`, publication), and `prepare` alone.
fn bench_rebuild(c: &mut Criterion<Clock>) {
    let mut g = c.benchmark_group("rebuild");
    let n = 10_000;
    for name in ["rr", "wrr", "wlc", "sh", "dh", "mh"] {
        let cell = OnceCell::new();
        g.bench_function(BenchmarkId::new(format!("{name}/write"), n), |b| {
            let f = cell.get_or_init(|| fixture(name, n));
            let pool = f.lb.pool();
            let id = pool.load().members()[n / 2].id();
            let mut w = 1;
            b.iter(|| {
                w = w % 4 + 1;
                pool.set_weight(id, w).expect("valid weight");
            })
        });
        g.bench_function(BenchmarkId::new(format!("{name}/prepare"), n), |b| {
            let f = cell.get_or_init(|| fixture(name, n));
            let snap = f.lb.pool().snapshot();
            let id = snap.members()[n / 2].id();
            b.iter(|| {
                black_box(
                    f.lb.scheduler()
                        .prepare(&snap, Some(&snap), Change::Weight(id)),
                );
            })
        });
    }
    g.finish();
}

/// The time `threads` threads picking at once through `f` (`picks` each)
/// take, on the clock of `LB_BENCH_CLOCK`: the slowest thread's; and how
/// much of the run all of them were really picking at once (1.0: all the
/// time): the share of the wall time during which every thread was between
/// its start and its end, times the least share of its own wall time that a
/// thread spent on a CPU (on a busy machine threads are descheduled, and
/// the thread clock would show two threads taking turns as no contention).
/// The threads start together behind a barrier.
fn per_thread(f: &Fixture, threads: usize, picks: usize) -> (Duration, f64) {
    let clock = Clock::from_env();
    let start = std::sync::Barrier::new(threads);
    let runs: Vec<(Duration, Instant, Instant, f64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (clock, start) = (&clock, &start);
                s.spawn(move || {
                    start.wait();
                    let (began, at) = (Instant::now(), clock.now());
                    let cpu = clock::thread_cpu_time();
                    for i in 0..picks {
                        black_box(f.pick(i.wrapping_mul(threads).wrapping_add(t)));
                    }
                    let wall = began.elapsed().as_secs_f64();
                    let on_cpu = (clock::thread_cpu_time() - cpu).as_secs_f64() / wall.max(1e-9);
                    (at.elapsed(), began, Instant::now(), on_cpu.min(1.0))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread"))
            .collect()
    });
    let slowest = runs.iter().map(|r| r.0).max().unwrap_or_default();
    let first = runs.iter().map(|r| r.1).min();
    let last_start = runs.iter().map(|r| r.1).max();
    let first_end = runs.iter().map(|r| r.2).min();
    let last = runs.iter().map(|r| r.2).max();
    let overlap = match (first, last_start, first_end, last) {
        (Some(a), Some(b), Some(c), Some(d)) if d > a => {
            c.saturating_duration_since(b).as_secs_f64() / (d - a).as_secs_f64()
        }
        _ => 1.0,
    };
    let on_cpu = runs.iter().map(|r| r.3).fold(1.0, f64::min);
    (slowest, overlap * on_cpu)
}

/// Two threads picking at once: criterion times each pick as the slower of
/// the two threads sees it, and before that a line compares the per-thread
/// throughput with one thread alone (best of five runs each), so that
/// contention on shared lines shows as a ratio below 1 (0.5: the second
/// thread bought nothing).
fn bench_two_threads(c: &mut Criterion<Clock>) {
    let mut g = c.benchmark_group("pick_2threads");
    for name in lb_sched::NAMES {
        for n in SIZES {
            let cell = OnceCell::new();
            g.bench_function(BenchmarkId::new(*name, n), |b| {
                let f: &Fixture = cell.get_or_init(|| {
                    let f = fixture(name, n);
                    let picks = if quick() { 300_000 } else { 1_000_000 };
                    // The best of five runs; with two threads only runs in
                    // which they picked at the same time for 80 % of it
                    // count (see `per_thread`; threads taking turns on one
                    // CPU show about 50 %).
                    let runs = |threads| -> Vec<(f64, f64)> {
                        (0..5)
                            .map(|_| {
                                let (t, at_once) = per_thread(&f, threads, picks);
                                (t.as_nanos() as f64 / picks as f64, at_once)
                            })
                            .collect()
                    };
                    let best = |runs: &[(f64, f64)]| {
                        runs.iter()
                            .filter(|(_, at_once)| *at_once >= 0.8)
                            .map(|(ns, _)| *ns)
                            .fold(f64::INFINITY, f64::min)
                    };
                    let (one, two) = (runs(1), runs(2));
                    let at_once = two.iter().map(|r| r.1).fold(0.0, f64::max);
                    let (one, two) = (best(&one), best(&two));
                    if two.is_finite() {
                        eprintln!(
                            "pick_2threads/{name}/{n}: 1 thread {one:.1} ns/pick, 2 threads {two:.1} \
                             ns/pick each: per-thread throughput x{:.2} of one thread's",
                            one / two
                        );
                    } else {
                        eprintln!(
                            "pick_2threads/{name}/{n}: not measured: the two threads picked at \
                             the same time for at most {:.0} % of a run (a busy machine)",
                            100.0 * at_once
                        );
                    }
                    f
                });
                // Time per pick as each of two threads sees it while both pick.
                // Each thread times its own picks; the slower one counts.
                b.iter_custom(|iters| per_thread(f, 2, iters as usize).0)
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_overhead, bench_single, bench_persist, bench_wrr_after_health, bench_locality, bench_open_close, bench_rebuild, bench_two_threads
}
criterion_main!(benches);
