//! Our picks against peers' at 3, 100 and 10,000 backends, with the ratios
//! printed at the end (`peer ns / our ns`: above 1, ours is faster).
//!
//! - consistent hashing: `pingora-ketama` (Cloudflare's port of nginx's
//!   ketama, the ring `pingora-load-balancing`'s `Consistent` selection
//!   uses) against our `hash consistent` (nginx's ketama, exact) and `mh`;
//! - weighted round robin: `pingora-load-balancing`'s
//!   `LoadBalancer<RoundRobin>` (`select`, its per-request path: the
//!   weight-expanded table, a shared counter and its health lookup) against
//!   our `wrr` (nginx's smooth weighted round robin, exact);
//! - power of two choices: tower's `p2c::Balance` (`poll_ready` + `call`,
//!   its per-request path) against our `p2c`.
//!
//! Building `pingora-load-balancing` needs CMake (its `pingora-core` builds
//! zlib-ng); `.ci/run` installs it.
//!
//! `cargo bench --bench peers --features peers`; `LB_BENCH_QUICK=1` shortens the runs and
//! `LB_BENCH_CLOCK=thread` measures thread CPU time (see `support/clock.rs`).

use std::cell::OnceCell;
use std::collections::BTreeSet;
use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::net::SocketAddr;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use lb_core::{Backend, Ctx, Pool};
use lb_sched::Balancer;
use pingora_load_balancing::discovery::Static;
use pingora_load_balancing::selection::RoundRobin;
use pingora_load_balancing::{Backends, LoadBalancer};
use tower::balance::p2c::Balance;
use tower::discover::ServiceList;
use tower::load::Constant;
use tower::Service;

#[path = "support/clock.rs"]
mod clock;
use clock::{config, Clock};

const SIZES: [usize; 3] = [3, 100, 10_000];
const KEYS: usize = 1024;

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 80))
}

fn weight(i: usize) -> u64 {
    1 + (i % 4) as u64
}

fn keys() -> Vec<String> {
    (0..KEYS).map(|i| format!("/item/{i}")).collect()
}

/// Our balancer over `n` backends (weights 1..4, as `benches/pick.rs`).
fn ours(sched: &str, n: usize) -> Balancer {
    let pool = Pool::new();
    pool.batch(|b| {
        for i in 0..n {
            b.add(Backend::new(format!("b{i}"), addr(i)).with_weight(weight(i)))?;
        }
        Ok(())
    })
    .expect("valid backends");
    Balancer::new(pool, lb_sched::build(sched).expect("registered"))
}

/// One pick of ours for key `k`, as `Balancer::connect` makes it.
#[inline]
fn our_pick(lb: &Balancer, keys: &[String], k: usize) -> bool {
    let client = SocketAddr::from(([192, 0, (k >> 8) as u8, k as u8], 1024));
    let ctx = Ctx::at(client, Duration::from_secs(1)).with_key(keys[k].as_bytes());
    lb.pool()
        .with_snapshot(|s| lb.scheduler().pick(s, &ctx).is_some())
}

fn ketama(n: usize) -> pingora_ketama::Continuum {
    let buckets: Vec<_> = (0..n)
        .map(|i| pingora_ketama::Bucket::new(addr(i), weight(i) as u32))
        .collect();
    pingora_ketama::Continuum::new(&buckets)
}

/// pingora's weighted round robin over `n` backends (weights 1..4), its
/// static discovery already run.
fn pingora_wrr(n: usize) -> LoadBalancer<RoundRobin> {
    let set: BTreeSet<_> = (0..n)
        .map(|i| {
            pingora_load_balancing::Backend::new_with_weight(
                &addr(i).to_string(),
                weight(i) as usize,
            )
            .expect("a socket address")
        })
        .collect();
    let lb = LoadBalancer::from_backends(Backends::new(Static::new(set)));
    {
        // Static discovery completes at its first poll.
        let update = pin!(lb.update());
        match update.poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(r) => r.expect("static discovery"),
            Poll::Pending => panic!("static discovery did not complete at once"),
        }
    }
    lb
}

/// One pingora pick, as its proxies call it (`max_iterations` 256).
#[inline]
fn pingora_pick(lb: &LoadBalancer<RoundRobin>) -> bool {
    lb.select(b"", 256).is_some()
}

type Svc =
    Constant<tower::util::ServiceFn<fn(()) -> std::future::Ready<Result<(), Infallible>>>, usize>;

fn ready(_: ()) -> std::future::Ready<Result<(), Infallible>> {
    std::future::ready(Ok(()))
}

/// tower's p2c over `n` always-ready services with constant loads.
fn tower_p2c(n: usize) -> Balance<ServiceList<Vec<Svc>>, ()> {
    let f: fn(()) -> std::future::Ready<Result<(), Infallible>> = ready;
    let svcs: Vec<Svc> = (0..n)
        .map(|i| Constant::new(tower::service_fn(f), i * 7 % 5))
        .collect();
    Balance::new(ServiceList::new(svcs))
}

/// One tower dispatch: `poll_ready` then `call` (the future is dropped).
#[inline]
fn tower_pick(b: &mut Balance<ServiceList<Vec<Svc>>, ()>, cx: &mut Context<'_>) -> bool {
    match b.poll_ready(cx) {
        Poll::Ready(Ok(())) => {
            drop(b.call(()));
            true
        }
        _ => false,
    }
}

fn bench_hash(c: &mut Criterion<Clock>) {
    let keys = keys();
    let mut g = c.benchmark_group("peers_consistent_hash");
    for n in SIZES {
        let ring = OnceCell::new();
        g.bench_function(BenchmarkId::new("pingora-ketama", n), |b| {
            let ring = ring.get_or_init(|| ketama(n));
            let mut k = 0;
            b.iter(|| {
                k = (k + 1) % KEYS;
                black_box(ring.node(keys[k].as_bytes()))
            })
        });
        for sched in ["hash consistent", "mh"] {
            bench_ours(&mut g, sched, n, &keys);
        }
    }
    g.finish();
}

/// Our pick with `sched` over `n` backends, cycling through the keys.
fn bench_ours(
    g: &mut criterion::BenchmarkGroup<'_, Clock>,
    sched: &str,
    n: usize,
    keys: &[String],
) {
    let lb = OnceCell::new();
    g.bench_function(BenchmarkId::new(sched.replace(' ', "_"), n), |b| {
        let lb = lb.get_or_init(|| ours(sched, n));
        let mut k = 0;
        b.iter(|| {
            k = (k + 1) % KEYS;
            black_box(our_pick(lb, keys, k))
        })
    });
}

fn bench_wrr(c: &mut Criterion<Clock>) {
    let keys = keys();
    let mut g = c.benchmark_group("peers_wrr");
    for n in SIZES {
        let peer = OnceCell::new();
        g.bench_function(BenchmarkId::new("pingora-lb", n), |b| {
            let lb = peer.get_or_init(|| pingora_wrr(n));
            b.iter(|| black_box(pingora_pick(lb)))
        });
        bench_ours(&mut g, "wrr", n, &keys);
    }
    g.finish();
}

fn bench_p2c(c: &mut Criterion<Clock>) {
    let keys = keys();
    let mut g = c.benchmark_group("peers_p2c");
    for n in SIZES {
        g.bench_function(BenchmarkId::new("tower", n), |b| {
            let mut bal = tower_p2c(n);
            let mut cx = Context::from_waker(Waker::noop());
            b.iter(|| black_box(tower_pick(&mut bal, &mut cx)))
        });
        bench_ours(&mut g, "p2c", n, &keys);
    }
    g.finish();
}

/// ns per call of `f`, the best of a few rounds (for the ratio table).
fn ns_per(mut f: impl FnMut(usize)) -> f64 {
    let clock = Clock::from_env();
    let iters = if std::env::var_os("LB_BENCH_QUICK").is_some() {
        100_000
    } else {
        1_000_000
    };
    (0..5)
        .map(|_| {
            let start = clock.now();
            for i in 0..iters {
                f(i);
            }
            start.elapsed().as_nanos() as f64 / iters as f64
        })
        .fold(f64::INFINITY, f64::min)
}

/// The ratio table: every pair measured again, side by side.
fn ratios(_: &mut Criterion<Clock>) {
    let keys = keys();
    println!();
    println!(
        "peer ns/pick over ours ({}; best of 5 rounds):",
        Clock::from_env().name()
    );
    println!(
        "{:<28} {:>7} {:>12} {:>12} {:>8}",
        "comparison", "n", "peer ns", "ours ns", "ratio"
    );
    for n in SIZES {
        let ring = ketama(n);
        let peer = ns_per(|i| {
            black_box(ring.node(keys[i % KEYS].as_bytes()));
        });
        for sched in ["hash consistent", "mh"] {
            let lb = ours(sched, n);
            let mine = ns_per(|i| {
                black_box(our_pick(&lb, &keys, i % KEYS));
            });
            let label = format!("pingora-ketama / {sched}");
            println!(
                "{label:<28} {n:>7} {peer:>12.1} {mine:>12.1} {:>8.2}",
                peer / mine
            );
        }
        let peer_lb = pingora_wrr(n);
        let peer = ns_per(|_| {
            black_box(pingora_pick(&peer_lb));
        });
        let lb = ours("wrr", n);
        let mine = ns_per(|i| {
            black_box(our_pick(&lb, &keys, i % KEYS));
        });
        println!(
            "{:<28} {n:>7} {peer:>12.1} {mine:>12.1} {:>8.2}",
            "pingora-lb wrr / wrr",
            peer / mine
        );
        let mut bal = tower_p2c(n);
        let mut cx = Context::from_waker(Waker::noop());
        // Let tower discover its services before timing.
        let _ = tower_pick(&mut bal, &mut cx);
        let peer = ns_per(|_| {
            black_box(tower_pick(&mut bal, &mut cx));
        });
        let lb = ours("p2c", n);
        let mine = ns_per(|i| {
            black_box(our_pick(&lb, &keys, i % KEYS));
        });
        println!(
            "{:<28} {n:>7} {peer:>12.1} {mine:>12.1} {:>8.2}",
            "tower p2c / p2c",
            peer / mine
        );
    }
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_hash, bench_wrr, bench_p2c, ratios
}
criterion_main!(benches);
