//! The nginx methods against the worked examples: vectors.md sections 1-5
//! (NGX-SWRR, NGX-IPH, NGX-HASH, NGX-CHASH, NGX-LC; the NGX-R2 draw rules
//! are unit tests in `src/nginx/random.rs`, since they need scripted draws)
//! in `vectors.rs`, and every `reference/replay/nginx-*.trace`, re-expressed
//! through `Balancer`, in `replay.rs` with the registry's rules.

use std::net::SocketAddr;

use lb_core::{Backend, ConnGuard, Ctx, Health, Pool};
use lb_sched::{Balancer, Conn};

mod replay;
mod vectors;

pub(crate) fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Backends `a`, `b`, `c`, ... at 10.0.0.1:80, 10.0.0.2:80, ... with these
/// weights, under scheduler `spec`.
pub(crate) fn balancer(spec: &str, weights: &[u64]) -> Balancer {
    let pool = Pool::new();
    for (i, &w) in weights.iter().enumerate() {
        let name = ((b'a' + i as u8) as char).to_string();
        pool.add(Backend::new(name, addr(&format!("10.0.0.{}:80", i + 1))).with_weight(w))
            .unwrap();
    }
    Balancer::new(pool, lb_sched::build(spec).unwrap())
}

pub(crate) fn ctx(client: &str) -> Ctx<'static> {
    Ctx::new(addr(client))
}

/// The scheduler's choice without opening a connection (loads unchanged).
pub(crate) fn pick(lb: &Balancer, ctx: &Ctx<'_>) -> String {
    let snap = lb.pool().load();
    lb.scheduler()
        .pick(&snap, ctx)
        .map_or("-".to_owned(), |p| p.member().name().to_owned())
}

/// `n` picks that each open a connection, as one string of names.
pub(crate) fn connect_n(lb: &Balancer, n: usize, open: &mut Vec<Conn>) -> String {
    (0..n)
        .map(|_| {
            let c = lb.connect(&ctx("1.1.1.1:1000")).unwrap();
            let name = c.name.to_string();
            open.push(c);
            name
        })
        .collect()
}

pub(crate) fn set_health(lb: &Balancer, name: &str, health: Health) {
    let id = lb.pool().find(name).unwrap();
    lb.pool().set_health(id, health).unwrap();
}

/// Open `n` connections on backend `name` outside the scheduler.
pub(crate) fn load(lb: &Balancer, name: &str, n: usize, guards: &mut Vec<ConnGuard>) {
    let m = lb.pool().load().by_name(name).unwrap().clone();
    guards.extend((0..n).map(|_| m.connect()));
}
