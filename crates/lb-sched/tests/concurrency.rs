//! Several threads pick and open/close connections while another changes
//! weights, health and membership: nothing panics, no ineligible backend is
//! ever chosen from the snapshot it was picked in, and every counter returns
//! to zero once all guards are dropped.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lb_core::{Backend, Counters, Ctx, Health, Pool};
use lb_sched::Balancer;

fn addr(i: usize) -> std::net::SocketAddr {
    format!("10.0.{}.{}:80", i / 250, i % 250 + 1)
        .parse()
        .unwrap()
}

fn churn(name: &str) {
    let pool = Pool::new();
    for i in 0..16 {
        pool.add(Backend::new(format!("b{i}"), addr(i)).with_weight((i % 4) as u64))
            .unwrap();
    }
    let lb = Balancer::new(pool.clone(), lb_sched::build(name).unwrap());
    let stop = AtomicBool::new(false);
    let picks = AtomicU64::new(0);
    // Counters of every backend ever added, to check them at the end.
    let all: parking_lot::Mutex<Vec<Arc<Counters>>> = parking_lot::Mutex::new(
        pool.load()
            .members()
            .iter()
            .map(|m| m.counters().clone())
            .collect(),
    );

    std::thread::scope(|s| {
        for t in 0..3u32 {
            let (lb, stop, picks) = (&lb, &stop, &picks);
            s.spawn(move || {
                let mut open = Vec::new();
                let mut n = 0u32;
                while !stop.load(Ordering::Relaxed) && n < 30_000 {
                    n += 1;
                    let client = format!("192.0.{}.{}:{}", t, n % 200, 1024 + n % 5000);
                    let client = client.parse().unwrap();
                    let key = n.to_le_bytes();
                    let ctx = Ctx::at(client, Duration::from_secs(u64::from(n / 1000)))
                        .with_dest(addr((n % 7) as usize))
                        .with_key(&key);
                    let snap = lb.pool().load();
                    if let Some(p) = lb.scheduler().pick(&snap, &ctx) {
                        // Persistence-free schedulers only pick what the
                        // snapshot calls eligible.
                        assert!(
                            p.member().weight() > 0 && p.member().is_up(),
                            "{name} picked an ineligible backend"
                        );
                        let mut g = p.connect();
                        if n % 3 == 0 {
                            g.idle();
                        }
                        open.push(g);
                        picks.fetch_add(1, Ordering::Relaxed);
                    }
                    if open.len() > 64 {
                        open.drain(..32);
                    }
                }
            });
        }
        let (pool, stop, all) = (&pool, &stop, &all);
        s.spawn(move || {
            for round in 0..300u64 {
                let snap = pool.load();
                let ids: Vec<_> = snap.members().iter().map(|m| m.id()).collect();
                drop(snap);
                let id = ids[(round as usize * 7) % ids.len()];
                match round % 5 {
                    0 => pool.set_weight(id, round % 5).unwrap(),
                    1 => pool
                        .set_health(
                            id,
                            if round % 2 == 0 {
                                Health::Up
                            } else {
                                Health::Down
                            },
                        )
                        .unwrap(),
                    2 if ids.len() > 4 => {
                        pool.remove(id).unwrap();
                    }
                    _ => {
                        let b = Backend::new(format!("n{round}"), addr(100 + round as usize));
                        let nid = pool.add(b.with_weight(1 + round % 3)).unwrap();
                        all.lock()
                            .push(pool.load().get(nid).unwrap().counters().clone());
                    }
                }
                std::thread::yield_now();
            }
            stop.store(true, Ordering::Relaxed);
        });
    });

    assert!(
        picks.load(Ordering::Relaxed) > 0,
        "{name}: some picks succeeded"
    );
    for c in all.lock().iter() {
        assert_eq!(c.load(), (0, 0), "{name}: counters return to zero");
    }
}

#[test]
fn every_scheduler_survives_concurrent_churn() {
    for name in lb_sched::NAMES {
        churn(name);
    }
}
