//! vectors.md sections 1-5.

use std::net::SocketAddr;

use lb_core::{Backend, Ctx, Health, Pool};
use lb_sched::{Balancer, ConsistentHash};

use crate::{addr, balancer, connect_n, ctx, load, pick, set_health};

// === NGX-SWRR (through the existing wrr) ===

#[test]
fn ngx_swrr_sequences() {
    for (weights, expected) in [
        (&[5, 1, 1][..], "aabacaa" /* NGX-SWRR-1 */),
        (&[4, 2, 1], "abacaba" /* NGX-SWRR-2 */),
        (&[1, 1, 1], "abcabc" /* NGX-SWRR-3 */),
        (&[2, 1], "abaaba"),
        (&[3, 2, 1], "abacbaabacba"),
    ] {
        let lb = balancer("wrr", weights);
        let mut open = Vec::new();
        assert_eq!(
            connect_n(&lb, expected.len(), &mut open),
            expected,
            "weights {weights:?}"
        );
    }
    // NGX-SWRR-4 and NGX-FAIL-1 need failures (max_fails), which the pool
    // model does not have.
}

#[test]
fn ngx_single_1_one_server_serves_until_down_or_full() {
    for spec in [
        "wrr",
        "least_conn",
        "ip_hash",
        "hash",
        "hash consistent",
        "random",
        "random two",
    ] {
        let lb = balancer(spec, &[1]);
        let id = lb.pool().find("a").unwrap();
        lb.pool().set_max_conns(id, 2).unwrap();
        let c = ctx("192.0.2.1:1").with_key(b"k");
        let (first, _second) = (lb.connect(&c).unwrap(), lb.connect(&c).unwrap());
        assert!(lb.connect(&c).is_err(), "{spec}: max_conns reached");
        drop(first);
        assert_eq!(pick(&lb, &c), "a", "{spec}: room again");
        set_health(&lb, "a", Health::Down);
        assert_eq!(pick(&lb, &c), "-", "{spec}: down");
    }
}

// === NGX-IPH ===

#[test]
fn ngx_iph_1_2_3_first_probe() {
    let cases: [(&str, [&str; 4]); 5] = [
        ("192.168.1.10:1", ["b", "a", "c", "a"]),
        ("192.168.1.200:9", ["b", "a", "c", "a"]), // the 4th octet is ignored
        ("10.0.0.1:1", ["a", "b", "b", "a"]),
        ("127.0.0.1:1", ["c", "a", "a", "a"]),
        ("[::ffff:10.0.0.1]:1", ["b", "-", "-", "-"]), // 16 bytes: h = 5875
    ];
    let pools: [&[u64]; 4] = [&[1, 1, 1], &[1, 1], &[1, 1, 1, 1], &[5, 1, 1]];
    for (client, expected) in cases {
        for (weights, want) in pools.iter().zip(expected) {
            if want != "-" {
                assert_eq!(
                    pick(&balancer("ip_hash", weights), &ctx(client)),
                    want,
                    "{client} over {weights:?}"
                );
            }
        }
    }
    // 127.0.0.1 over 5,1,1: 4040 % 7 = 1 < 5.
}

#[test]
fn ngx_iph_4_rehash_continues_from_the_previous_probe() {
    // 192.168.1.10 over 3 x w=1 probes 154, 5654, 1196, 723: b, c, c, a.
    let lb = balancer("ip_hash", &[1, 1, 1]);
    let c = ctx("192.168.1.10:1");
    set_health(&lb, "b", Health::Down);
    assert_eq!(pick(&lb, &c), "c");
    set_health(&lb, "c", Health::Down);
    assert_eq!(pick(&lb, &c), "a", "probes 1-3 rejected, the 4th gives a");
    // A full backend is rejected exactly like a down one.
    set_health(&lb, "b", Health::Up);
    set_health(&lb, "c", Health::Up);
    let b = lb.pool().find("b").unwrap();
    lb.pool().set_max_conns(b, 1).unwrap();
    let _held = lb.connect(&c).unwrap();
    assert_eq!(pick(&lb, &c), "c");
}

// NGX-IPH-5 (a unix-socket client hashes 3 zero bytes) is not expressible:
// a client is always an IP socket address here.

#[test]
fn ngx_iph_6_ipv6_hashes_all_16_bytes() {
    for (client, three, two) in [("[::1]:1", "c", "b"), ("[2001:db8::1]:5000", "c", "a")] {
        assert_eq!(
            pick(&balancer("ip_hash", &[1, 1, 1]), &ctx(client)),
            three,
            "{client}"
        );
        assert_eq!(
            pick(&balancer("ip_hash", &[1, 1]), &ctx(client)),
            two,
            "{client}"
        );
    }
}

// === NGX-HASH ===

#[test]
fn ngx_hash_1_first_probe_and_rehash() {
    for (key, three, two_one) in [
        ("abc", "c", "b"),
        ("/index.html", "c", "b"),
        ("user42", "a", "a"),
    ] {
        let c = ctx("1.1.1.1:1").with_key(key.as_bytes());
        assert_eq!(
            pick(&balancer("hash", &[1, 1, 1]), &c),
            three,
            "{key} over 1,1,1"
        );
        assert_eq!(
            pick(&balancer("hash", &[2, 1]), &c),
            two_one,
            "{key} over 2,1"
        );
    }
    // abc: acc 13604 -> c; "1abc" adds 9142 -> 22746 -> a; "2abc" adds
    // 12547 -> 35293 -> b.
    let lb = balancer("hash", &[1, 1, 1]);
    let c = ctx("1.1.1.1:1").with_key(b"abc");
    set_health(&lb, "c", Health::Down);
    assert_eq!(pick(&lb, &c), "a");
    set_health(&lb, "a", Health::Down);
    assert_eq!(pick(&lb, &c), "b");
}

#[test]
fn hash_ignores_the_client_and_ip_hash_ignores_the_key() {
    let lb = balancer("hash", &[1, 1, 1]);
    for client in ["1.1.1.1:1", "[2001:db8::7]:9", "203.0.113.5:5000"] {
        assert_eq!(pick(&lb, &ctx(client).with_key(b"abc")), "c");
    }
    let lb = balancer("ip_hash", &[1, 1, 1]);
    for key in [&b"abc"[..], b"", b"user42"] {
        assert_eq!(pick(&lb, &ctx("192.168.1.10:1").with_key(key)), "b");
    }
}

// === NGX-CHASH ===

#[test]
fn ngx_chash_1_points() {
    let a = ConsistentHash::points("10.0.0.1:80", 1);
    assert_eq!(a.len(), 160);
    assert_eq!(a[..3], [0xA2AD5D56, 0x0BDEB0AB, 0x75F00C5B]);
    let b = ConsistentHash::points("10.0.0.2:80", 2);
    assert_eq!(b.len(), 320);
    assert_eq!(b[..3], [0x2C225AB5, 0xF2CF65B8, 0xA5296DBA]);
    assert_eq!(
        b[..160],
        ConsistentHash::points("10.0.0.2:80", 1)[..],
        "weight extends the chain"
    );
    let bare = ConsistentHash::points("10.0.0.1", 1);
    assert_ne!(bare[0], a[0], "no port: port is empty, so other points");
    assert_eq!(
        ConsistentHash::points("10.0.0.1:", 1),
        bare,
        "an empty port is an empty port"
    );
    assert!(ConsistentHash::points("10.0.0.1:80", 0).is_empty());
}

#[test]
fn ngx_chash_2_lookups_and_ring_shares() {
    let lb = balancer("hash consistent", &[1, 1, 1]);
    for (key, want) in [
        ("abc", "b"),
        ("/index.html", "a"),
        ("user42", "c"),
        ("192.168.1.10", "b"),
    ] {
        assert_eq!(
            pick(&lb, &ctx("1.1.1.1:1").with_key(key.as_bytes())),
            want,
            "{key}"
        );
    }
    // Ownership of the ring: each point owns the arc that ends at it.
    let mut ring: Vec<(u32, usize)> = (0..3)
        .flat_map(|s| {
            ConsistentHash::points(&format!("10.0.0.{}:80", s + 1), 1)
                .into_iter()
                .map(move |h| (h, s))
        })
        .collect();
    ring.sort();
    assert_eq!(ring.len(), 480);
    let mut owned = [0u64; 3];
    let mut prev = i64::from(ring[ring.len() - 1].0) - (1i64 << 32);
    for &(h, s) in &ring {
        owned[s] += (i64::from(h) - prev) as u64;
        prev = i64::from(h);
    }
    let share = |s: usize| (owned[s] as f64 / (1u64 << 32) as f64 * 1000.0).round() / 10.0;
    assert_eq!([share(0), share(1), share(2)], [34.8, 30.0, 35.2]);
}

#[test]
fn chash_backends_sharing_a_server_text_share_its_points_by_swrr() {
    // a1 and a2 are both 10.0.0.1:80 (N13); user42 lands on its points.
    let pool = Pool::new();
    pool.add(Backend::new("a1", addr("10.0.0.1:80")).with_weight(2))
        .unwrap();
    pool.add(Backend::new("b", addr("10.0.0.2:80"))).unwrap();
    pool.add(Backend::new("a2", addr("10.0.0.1:80"))).unwrap();
    let lb = Balancer::new(pool, lb_sched::build("hash consistent").unwrap());
    let c = ctx("1.1.1.1:1").with_key(b"user42");
    let seq: Vec<String> = (0..6).map(|_| pick(&lb, &c)).collect();
    assert_eq!(seq, ["a1", "a2", "a1", "a1", "a2", "a1"]);
    set_health(&lb, "a1", Health::Down);
    assert_eq!(pick(&lb, &c), "a2");
    set_health(&lb, "a2", Health::Down);
    assert_eq!(
        pick(&lb, &c),
        "b",
        "the whole text unusable: the next point"
    );
}

/// The ring of servers `texts` with `weights`, as (hash, server index),
/// sorted, from the public point generator.
fn model_ring(texts: &[&str], weights: &[u32]) -> Vec<(u32, usize)> {
    let mut ring: Vec<(u32, usize)> = texts
        .iter()
        .zip(weights)
        .enumerate()
        .flat_map(|(s, (t, &w))| {
            ConsistentHash::points(t, w)
                .into_iter()
                .map(move |h| (h, s))
        })
        .collect();
    ring.sort();
    ring.dedup_by_key(|p| p.0);
    ring
}

#[test]
fn chash_gives_up_after_21_rejected_points() {
    // x (down) owns most points; y and z one unit each.
    let texts = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"];
    let ring = model_ring(&texts, &[60, 1, 1]);
    // The number of x points from a key's first point on.
    let run = |key: &str| {
        let k = crc32fast::hash(key.as_bytes());
        let i = ring.partition_point(|p| p.0 < k);
        (0..)
            .take_while(|r| ring[(i + r) % ring.len()].1 == 0)
            .count()
    };
    let key_with_run = |n: usize| {
        (0..)
            .map(|i| format!("k{i}"))
            .find(|k| run(k) == n)
            .unwrap()
    };
    let lb = balancer("hash consistent", &[60, 1, 1]);
    set_health(&lb, "a", Health::Down);
    // 20 rejected points: the 21st point decides, the same every time.
    let key = key_with_run(20);
    let c = ctx("1.1.1.1:1").with_key(key.as_bytes());
    let first = pick(&lb, &c);
    assert!(first == "b" || first == "c");
    assert!(
        (0..4).all(|_| pick(&lb, &c) == first),
        "{key}: decided by the ring"
    );
    // 21 rejected points: round robin over y and z, alternating.
    let key = key_with_run(21);
    let c = ctx("1.1.1.1:1").with_key(key.as_bytes());
    let seq: Vec<String> = (0..4).map(|_| pick(&lb, &c)).collect();
    assert_eq!(seq, ["b", "c", "b", "c"], "{key}: round robin");
}

#[test]
fn hash_and_ip_hash_give_up_after_21_rejected_probes() {
    // a (down) has weight 100 of T = 102: most probes land on it.
    let walk = |h: u64| match h % 102 {
        0..=99 => 0,
        100 => 1,
        _ => 2,
    };
    // The number of rejected first probes of the key hash and the IP hash.
    let key_run = |key: &[u8]| {
        let mut acc = 0u64;
        (0u32..)
            .take_while(|&i| {
                let mut h = crc32fast::Hasher::new();
                if i > 0 {
                    h.update(i.to_string().as_bytes());
                }
                h.update(key);
                acc += u64::from((h.finalize() >> 16) & 0x7fff);
                walk(acc) == 0
            })
            .count()
    };
    let ip_run = |ip: [u8; 3]| {
        let mut h = 89u64;
        (0..)
            .take_while(|_| {
                h = ip.iter().fold(h, |h, &x| (h * 113 + u64::from(x)) % 6271);
                walk(h) == 0
            })
            .take(100)
            .count()
    };
    for (run, want) in [(20, None), (21, Some(["b", "c", "b", "c"]))] {
        let key = (0..)
            .map(|i| format!("k{i}"))
            .find(|k| key_run(k.as_bytes()) == run)
            .unwrap();
        let ip = (0u32..1 << 24)
            .map(|i| [(i >> 16) as u8, (i >> 8) as u8, i as u8])
            .find(|&ip| ip_run(ip) == run)
            .unwrap();
        let by_key = ctx("1.1.1.1:1").with_key(key.as_bytes());
        let by_ip = Ctx::new(SocketAddr::from(([ip[0], ip[1], ip[2], 7], 1)));
        for (spec, c) in [("hash", by_key), ("ip_hash", by_ip)] {
            let lb = balancer(spec, &[100, 1, 1]);
            set_health(&lb, "a", Health::Down);
            let seq: Vec<String> = (0..4).map(|_| pick(&lb, &c)).collect();
            match want {
                Some(rr) => assert_eq!(seq, rr, "{spec}, {run} rejected: round robin"),
                None => assert!(
                    seq.iter().all(|s| *s == seq[0] && s != "a"),
                    "{spec}: the 21st probe {seq:?}"
                ),
            }
        }
    }
}

// === NGX-LC ===

#[test]
fn ngx_lc_1_single_decisions() {
    let mut g = Vec::new();
    let lb = balancer("least_conn", &[1, 2, 1]);
    for (name, n) in [("a", 2), ("b", 3), ("c", 1)] {
        load(&lb, name, n, &mut g);
    }
    assert_eq!(pick(&lb, &ctx("1.1.1.1:1")), "c", "ratios 2, 1.5, 1");

    let lb = balancer("least_conn", &[1, 2]);
    load(&lb, "a", 1, &mut g);
    load(&lb, "b", 2, &mut g);
    // Tie pass: a 1, b 2 -> b (a = 1, b = -1); then a 2, b 1 -> a (a = -1);
    // then a 0, b 3 -> b.
    let seq: Vec<String> = (0..3).map(|_| pick(&lb, &ctx("1.1.1.1:1"))).collect();
    assert_eq!(seq, ["b", "a", "b"]);

    let lb = balancer("least_conn", &[3, 1, 2]);
    for (name, n) in [("a", 3), ("b", 1), ("c", 2)] {
        load(&lb, name, n, &mut g);
    }
    // All ratios 1: a 3, b 1, c 2 -> a (a = -3); then a 0, b 2, c 4 -> c.
    let seq: Vec<String> = (0..2).map(|_| pick(&lb, &ctx("1.1.1.1:1"))).collect();
    assert_eq!(seq, ["a", "c"]);
}

#[test]
fn ngx_lc_2_and_lc_3_sequences() {
    let mut open = Vec::new();
    assert_eq!(
        connect_n(&balancer("least_conn", &[1, 2, 1]), 8, &mut open),
        "bacbcabb"
    );
    assert_eq!(
        connect_n(&balancer("least_conn", &[1, 1, 1]), 6, &mut open),
        "abccba"
    );
}

#[test]
fn least_conn_counts_idle_conns_and_keeps_currents_over_health_changes() {
    let lb = balancer("least_conn", &[1, 1, 1]);
    let mut open = Vec::new();
    assert_eq!(connect_n(&lb, 1, &mut open), "a");
    open[0].guard.idle();
    assert_eq!(
        connect_n(&lb, 2, &mut open),
        "bc",
        "a's idle conn still counts"
    );
    drop(open);
    // All at 0 again; currents a = -2, b = 0, c = 2 (see NGX-LC-3).
    set_health(&lb, "c", Health::Down);
    set_health(&lb, "c", Health::Up);
    assert_eq!(
        pick(&lb, &ctx("1.1.1.1:1")),
        "c",
        "down/up keep every current"
    );
    let a = lb.pool().find("a").unwrap();
    lb.pool().set_weight(a, 1).unwrap();
    assert_eq!(
        pick(&lb, &ctx("1.1.1.1:1")),
        "a",
        "a weight change resets them"
    );
}
