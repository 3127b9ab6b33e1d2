//! The LVS hashing schedulers sh, dh and mh against the vectors of
//! `reference/vectors.md` sections 10 and 11 and the replay fixtures
//! `lvs-sh-*`, `lvs-dh-1` and `lvs-mh-1`.
//!
//! The kernel lists its servers newest first; the vectors are given in
//! kernel list order, which is our pool order: to reproduce a kernel list
//! "A, B, C", A, B and C are added to the pool in that order.

use std::collections::HashMap;
use std::net::SocketAddr;

use lb_core::{Backend, Ctx, Health, Pool, Snapshot};
use lb_sched::{Balancer, DestHash, Explain, Maglev, SourceHash};

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// A balancer over `(name, address, weight)` backends, added in order.
fn balancer(spec: &str, backends: &[(&str, &str, u64)]) -> Balancer {
    let pool = Pool::new();
    for (name, addr, w) in backends {
        pool.add(Backend::new(*name, sa(addr)).with_weight(*w))
            .unwrap();
    }
    Balancer::new(pool, lb_sched::build(spec).unwrap())
}

/// `a`, `b`, `c` at 10.1.0.1-3:80 with the given weights (lvs-sh-* fixtures).
fn abc(spec: &str, weights: [u64; 3]) -> Balancer {
    balancer(
        spec,
        &[
            ("a", "10.1.0.1:80", weights[0]),
            ("b", "10.1.0.2:80", weights[1]),
            ("c", "10.1.0.3:80", weights[2]),
        ],
    )
}

/// 256 backends `s0..s255` of weight 1: sh's and dh's bucket `i` is `si`.
fn one_per_bucket(spec: &str) -> Balancer {
    let pool = Pool::new();
    for i in 0..256u32 {
        let addr = SocketAddr::from(([10, 2, (i / 256) as u8, (i % 256) as u8], 80));
        pool.add(Backend::new(format!("s{i}"), addr)).unwrap();
    }
    Balancer::new(pool, lb_sched::build(spec).unwrap())
}

fn name_of(lb: &Balancer, ctx: &Ctx<'_>) -> Option<String> {
    let (id, _) = lb.pick(ctx)?;
    Some(lb.pool().load().get(id)?.name().to_owned())
}

fn client(lb: &Balancer, addr: &str) -> Option<String> {
    name_of(lb, &Ctx::new(sa(addr)))
}

fn to_dest(lb: &Balancer, dest: &str) -> Option<String> {
    name_of(lb, &Ctx::new(sa("198.51.100.1:1001")).with_dest(sa(dest)))
}

fn set_health(lb: &Balancer, name: &str, h: Health) {
    let id = lb.pool().find(name).unwrap();
    lb.pool().set_health(id, h).unwrap();
}

fn set_weight(lb: &Balancer, name: &str, w: u64) {
    let id = lb.pool().find(name).unwrap();
    lb.pool().set_weight(id, w).unwrap();
}

/// Slot owners by name ("-" for empty) of a table prepared for `snap`.
fn owner_names<'s>(owners: impl Iterator<Item = Option<&'s lb_core::Member>>) -> Vec<String> {
    owners
        .map(|o| o.map_or("-".to_owned(), |m| m.name().to_owned()))
        .collect()
}

fn counts(names: &[String]) -> HashMap<String, usize> {
    let mut c = HashMap::new();
    for n in names {
        *c.entry(n.clone()).or_default() += 1;
    }
    c
}

fn mh_owners(mh: &Maglev, snap: &Snapshot) -> Vec<String> {
    owner_names(mh.owners(snap).expect("an mh table"))
}

// ---- section 10: hash_32, sh, dh ----

const HASH_32_VECTORS: [(&str, usize); 4] = [
    ("10.0.0.1", 39),
    ("192.168.1.10", 248),
    ("172.16.5.4", 138),
    ("0.0.0.1", 97),
];

#[test]
fn hash_32_buckets_of_the_vectors() {
    let sh = SourceHash::new();
    let dh = DestHash::new();
    let lb = one_per_bucket("sh");
    let lb_dh = one_per_bucket("dh");
    for (ip, bucket) in HASH_32_VECTORS {
        assert_eq!(sh.bucket(sa(&format!("{ip}:1234"))), bucket, "sh {ip}");
        assert_eq!(dh.bucket(ip.parse().unwrap()), bucket, "dh {ip}");
        // And as picks: with one backend per bucket, the bucket names the backend.
        assert_eq!(
            client(&lb, &format!("{ip}:1234")),
            Some(format!("s{bucket}")),
            "sh {ip}"
        );
        assert_eq!(
            to_dest(&lb_dh, &format!("{ip}:80")),
            Some(format!("s{bucket}")),
            "dh {ip}"
        );
    }
    // LVS-LBLC-HASH: hash_32(10.0.0.1, 10) = 159, as a 2^10-bucket sh sees it.
    let sh10 = SourceHash::new().with_bits(10).unwrap();
    assert_eq!(sh10.bucket(sa("10.0.0.1:1")), 159);
}

#[test]
fn lvs_sh_1_one_bucket_per_backend_in_turn() {
    let lb = abc("sh", [1, 1, 1]);
    let snap = lb.pool().load();
    let owners = owner_names(SourceHash::new().owners(&snap).unwrap());
    assert_eq!(owners.len(), 256);
    for (i, o) in owners.iter().enumerate() {
        assert_eq!(o, ["a", "b", "c"][i % 3], "bucket {i}");
    }
    // lvs-sh-1
    assert_eq!(client(&lb, "10.0.0.1:1001").as_deref(), Some("a"));
    assert_eq!(client(&lb, "192.168.1.10:1002").as_deref(), Some("c"));
    assert_eq!(client(&lb, "172.16.5.4:1003").as_deref(), Some("a"));
    assert_eq!(client(&lb, "0.0.0.1:1004").as_deref(), Some("b"));
}

#[test]
fn lvs_sh_1_dh_column_keys_on_the_destination() {
    // lvs-dh-1: the same answers for the addresses used as destinations.
    // Weights do not shape dh's table.
    for weights in [[1, 1, 1], [5, 1, 3]] {
        let lb = abc("dh", weights);
        assert_eq!(to_dest(&lb, "10.0.0.1:80").as_deref(), Some("a"));
        assert_eq!(to_dest(&lb, "192.168.1.10:80").as_deref(), Some("c"));
        assert_eq!(to_dest(&lb, "172.16.5.4:80").as_deref(), Some("a"));
        assert_eq!(to_dest(&lb, "0.0.0.1:80").as_deref(), Some("b"));
    }
}

#[test]
fn lvs_sh_2_weighted_table_and_weight_zero_bucket() {
    let lb = abc("sh", [2, 1, 0]);
    let snap = lb.pool().load();
    let owners = owner_names(SourceHash::new().owners(&snap).unwrap());
    for (i, o) in owners.iter().enumerate() {
        assert_eq!(o, ["a", "a", "b", "c"][i % 4], "bucket {i}");
    }
    // lvs-sh-2: 10.0.0.1 hashes to bucket 39, c's: none without fallback.
    assert_eq!(client(&lb, "10.0.0.1:1001"), None);
    assert_eq!(client(&lb, "192.168.1.10:1002").as_deref(), Some("a"));
    assert_eq!(client(&lb, "172.16.5.4:1003").as_deref(), Some("b"));
    assert_eq!(client(&lb, "0.0.0.1:1004").as_deref(), Some("a"));

    // lvs-sh-2-fallback: bucket 39 -> probe 78 (b).
    let lb = abc("sh fallback", [2, 1, 0]);
    assert_eq!(client(&lb, "10.0.0.1:1001").as_deref(), Some("b"));
    assert_eq!(client(&lb, "192.168.1.10:1002").as_deref(), Some("a"));
    assert_eq!(client(&lb, "172.16.5.4:1003").as_deref(), Some("b"));
    assert_eq!(client(&lb, "0.0.0.1:1004").as_deref(), Some("a"));
}

#[test]
fn lvs_sh_3_port_flag_hashes_the_source_port() {
    let sh = SourceHash::new().with_port(true);
    assert_eq!(sh.bucket(sa("10.0.0.1:12345")), 134);
    assert_eq!(SourceHash::new().bucket(sa("10.0.0.1:12345")), 39);
    let lb = abc("sh port", [1, 1, 1]);
    assert_eq!(client(&lb, "10.0.0.1:12345").as_deref(), Some("c"));
    assert_eq!(client(&lb, "10.0.0.1:12345").as_deref(), Some("c"));
    // Without the flag the port is ignored.
    let lb = abc("sh", [1, 1, 1]);
    assert_eq!(client(&lb, "10.0.0.1:12345").as_deref(), Some("a"));
}

#[test]
fn lvs_sh_4_fallback_probes_2h_plus_k() {
    // lvs-sh-4-fallback and -nofallback.
    for (spec, after) in [("sh fallback", Some("b")), ("sh", None)] {
        let lb = abc(spec, [1, 1, 1]);
        assert_eq!(client(&lb, "10.0.0.1:1000").as_deref(), Some("a"));
        set_health(&lb, "a", Health::Down);
        assert_eq!(client(&lb, "10.0.0.1:1001").as_deref(), after, "{spec}");
        // down/up keeps the table: the client is back on a.
        set_health(&lb, "a", Health::Up);
        assert_eq!(client(&lb, "10.0.0.1:1002").as_deref(), Some("a"), "{spec}");
    }
    // The probe order, bucket by bucket: h = 39, then 78, 79, 80, ...
    let lb = one_per_bucket("sh fallback");
    for (down, next) in [("s39", "s78"), ("s78", "s79"), ("s79", "s80")] {
        set_health(&lb, down, Health::Down);
        assert_eq!(client(&lb, "10.0.0.1:1").as_deref(), Some(next));
    }
    // Probes wrap: h = 248 probes 496 mod 256 = 240 first.
    set_health(&lb, "s248", Health::Down);
    assert_eq!(client(&lb, "192.168.1.10:1").as_deref(), Some("s240"));
}

#[test]
fn sh_fallback_gives_none_when_nothing_is_usable_and_skips_tried() {
    let lb = abc("sh fallback", [1, 1, 1]);
    for n in ["a", "b", "c"] {
        set_health(&lb, n, Health::Down);
    }
    assert_eq!(client(&lb, "10.0.0.1:1"), None);
    set_health(&lb, "c", Health::Up);
    assert_eq!(client(&lb, "10.0.0.1:1").as_deref(), Some("c"));
    // A retry that already tried c finds nothing else.
    let c = lb.pool().find("c").unwrap();
    let tried = [c];
    let ctx = Ctx::new(sa("10.0.0.1:1")).with_tried(&tried);
    assert_eq!(name_of(&lb, &ctx), None);
}

#[test]
fn sh_explains_bucket_owner_and_probes() {
    let lb = abc("sh fallback", [1, 1, 1]);
    set_health(&lb, "a", Health::Down);
    let mut why = Explain::new();
    let conn = lb.explain(&Ctx::new(sa("10.0.0.1:1")), &mut why).unwrap();
    assert_eq!(&*conn.name, "b");
    let text = why.to_string();
    assert!(text.contains("bucket 39 of 256"), "{text}");
    assert!(
        text.contains("bucket 39: a") && text.contains("not usable"),
        "{text}"
    );
    assert!(text.contains("bucket 78: a"), "{text}");
    assert!(
        text.contains("bucket 79: b") && text.contains("-> b"),
        "{text}"
    );
}

#[test]
fn sh_table_size_follows_bits() {
    let lb = abc("sh bits=4", [1, 1, 1]);
    let sh = SourceHash::new().with_bits(4).unwrap();
    let snap = lb.pool().load();
    assert_eq!(sh.owners(&snap).unwrap().count(), 16);
    // hash_32(10.0.0.1, 4) = 0x27C88647 >> 28 = 2 -> c.
    assert_eq!(sh.bucket(sa("10.0.0.1:1")), 2);
    assert_eq!(client(&lb, "10.0.0.1:1").as_deref(), Some("c"));
    // A table of another size is not this scheduler's.
    assert!(SourceHash::new().owners(&snap).is_none());
    let lb = abc("sh bits=20", [1, 1, 1]);
    assert_eq!(
        SourceHash::new()
            .with_bits(20)
            .unwrap()
            .owners(&lb.pool().load())
            .unwrap()
            .count(),
        1 << 20
    );
}

#[test]
fn sh_weights_beyond_the_table_starve_late_backends() {
    // 16 buckets, a holds 20 of them per turn: b gets none.
    let lb = abc("sh bits=4 fallback", [20, 1, 1]);
    let snap = lb.pool().load();
    let owners = owner_names(
        SourceHash::new()
            .with_bits(4)
            .unwrap()
            .owners(&snap)
            .unwrap(),
    );
    assert!(owners.iter().all(|o| o == "a"), "{owners:?}");
    set_health(&lb, "a", Health::Down);
    assert_eq!(client(&lb, "10.0.0.1:1"), None, "b and c own no bucket");
}

#[test]
fn sh_rebuilds_on_weight_and_membership_changes() {
    let lb = abc("sh", [1, 1, 1]);
    assert_eq!(client(&lb, "0.0.0.1:1").as_deref(), Some("b")); // bucket 97 = 1 mod 3
    set_weight(&lb, "a", 2); // a a b c: 97 mod 4 = 1 -> a
    assert_eq!(client(&lb, "0.0.0.1:1").as_deref(), Some("a"));
    lb.pool().remove(lb.pool().find("a").unwrap()).unwrap(); // b c: 97 mod 2 = 1 -> c
    assert_eq!(client(&lb, "0.0.0.1:1").as_deref(), Some("c"));
    lb.pool().add(Backend::new("d", sa("10.1.0.4:80"))).unwrap(); // b c d
    assert_eq!(client(&lb, "192.168.1.10:1").as_deref(), Some("d")); // 248 mod 3 = 2
}

#[test]
fn sh_and_dh_with_an_empty_pool_give_none() {
    for spec in ["sh", "sh fallback", "dh", "mh", "mh fallback"] {
        let lb = balancer(spec, &[]);
        let ctx = Ctx::new(sa("10.0.0.1:1")).with_dest(sa("10.9.9.9:80"));
        assert_eq!(name_of(&lb, &ctx), None, "{spec}");
    }
}

#[test]
fn sh_hashes_ipv6_by_folding_its_words() {
    // 2001:db8::1:2 folds to 0x20010db8 ^ 0x00010002 = 0x20000dba.
    let x: u32 = 0x2000_0dba;
    let bucket = (x.wrapping_mul(0x61C8_8647) >> 24) as usize;
    assert_eq!(SourceHash::new().bucket(sa("[2001:db8::1:2]:1")), bucket);
    let lb = one_per_bucket("sh");
    assert_eq!(client(&lb, "[2001:db8::1:2]:1"), Some(format!("s{bucket}")));
    let lb = one_per_bucket("dh");
    assert_eq!(
        to_dest(&lb, "[2001:db8::1:2]:443"),
        Some(format!("s{bucket}"))
    );
}

#[test]
fn dh_needs_a_destination_and_has_no_fallback() {
    let lb = abc("dh", [1, 1, 1]);
    assert_eq!(client(&lb, "10.0.0.1:1"), None, "no destination");
    set_health(&lb, "a", Health::Down);
    assert_eq!(to_dest(&lb, "10.0.0.1:80"), None);
    assert_eq!(to_dest(&lb, "0.0.0.1:80").as_deref(), Some("b"));
    set_health(&lb, "a", Health::Up);
    set_weight(&lb, "a", 0);
    assert_eq!(to_dest(&lb, "10.0.0.1:80"), None, "quiesced");
    // dh's destination port is ignored.
    assert_eq!(to_dest(&lb, "0.0.0.1:9999").as_deref(), Some("b"));
}

#[test]
fn registry_validates_hash_options() {
    for ok in [
        "sh",
        "sh port",
        "sh fallback port bits=4",
        "sh bits=20",
        "dh",
        "mh",
        "mh port fallback table=251",
    ] {
        lb_sched::build(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for m in Maglev::SIZES {
        lb_sched::build(&format!("mh table={m}")).unwrap();
    }
    for bad in [
        "sh bits=3",
        "sh bits=21",
        "sh bits=x",
        "sh bits=",
        "mh table=4096",
        "mh table=0",
        "dh port",
        "dh fallback",
        "sh table=251",
        "mh bits=8",
    ] {
        let e = lb_sched::build(bad)
            .err()
            .unwrap_or_else(|| panic!("{bad} accepted"));
        assert!(!e.to_string().is_empty());
    }
    let e = lb_sched::build("sh bits=3").err().unwrap().to_string();
    assert!(e.contains("bits") && e.contains("4 to 20"), "{e}");
    let e = lb_sched::build("mh table=4096").err().unwrap().to_string();
    assert!(e.contains("table") && e.contains("4093"), "{e}");
    assert!(SourceHash::new().with_bits(21).is_err());
    assert!(Maglev::new().with_size(4099).is_err());
    let names: Vec<_> = lb_sched::catalogue().map(|(n, _, _)| n).collect();
    for n in ["sh", "dh", "mh"] {
        assert!(names.contains(&n) && lb_sched::NAMES.contains(&n), "{n}");
    }
}

// ---- section 11: mh ----

const MH_ABC: [(&str, &str, u64); 3] = [
    ("a", "10.0.0.1:80", 1),
    ("b", "10.0.0.2:80", 1),
    ("c", "10.0.0.3:80", 1),
];

const MH_LOOKUPS: [(&str, u32, &str); 7] = [
    ("192.168.1.10", 3323, "a"),
    ("192.168.1.12", 3491, "c"),
    ("192.168.1.13", 2846, "c"),
    ("192.168.1.14", 1562, "b"),
    ("8.8.8.8", 502, "b"),
    ("1.2.3.4", 2197, "b"),
    ("10.1.2.3", 1263, "a"),
];

#[test]
fn lvs_mh_1_permutations() {
    let mh = Maglev::new();
    assert_eq!(mh.size(), 4093);
    assert_eq!(mh.permutation(sa("10.0.0.1:80")), (3167, 700));
    assert_eq!(mh.permutation(sa("10.0.0.2:80")), (1231, 3544));
    assert_eq!(mh.permutation(sa("10.0.0.3:80")), (1631, 3453));
}

#[test]
fn lvs_mh_1_table_and_lookups() {
    let lb = balancer("mh", &MH_ABC);
    let mh = Maglev::new();
    let owners = mh_owners(&mh, &lb.pool().load());
    assert_eq!(owners.len(), 4093);
    let c = counts(&owners);
    assert_eq!((c["a"], c["b"], c["c"]), (1365, 1364, 1364));
    assert_eq!(owners[..10].join(" "), "a b b c c a b c c a");
    for (ip, slot, name) in MH_LOOKUPS {
        let addr = format!("{ip}:2001");
        assert_eq!(mh.slot(sa(&addr)), slot, "{ip}");
        assert_eq!(owners[slot as usize], name, "{ip}");
        assert_eq!(client(&lb, &addr).as_deref(), Some(name), "{ip}");
    }
    // mh-port with source port 5000.
    assert_eq!(
        Maglev::new().with_port(true).slot(sa("192.168.1.10:5000")),
        3111
    );
    let lb = balancer("mh port", &MH_ABC);
    assert_eq!(
        client(&lb, "192.168.1.10:5000").as_deref(),
        Some(owners[3111].as_str())
    );
}

#[test]
fn lvs_mh_2_turns_follow_last_weight() {
    let lb = balancer(
        "mh",
        &[
            ("a", "10.0.0.1:80", 2),
            ("b", "10.0.0.2:80", 1),
            ("c", "10.0.0.3:80", 1),
        ],
    );
    let c = counts(&mh_owners(&Maglev::new(), &lb.pool().load()));
    assert_eq!((c["a"], c["b"], c["c"]), (2047, 1023, 1023));
    // The same shares from a gcd of 2: weights 4, 2, 2.
    let lb = balancer(
        "mh",
        &[
            ("a", "10.0.0.1:80", 4),
            ("b", "10.0.0.2:80", 2),
            ("c", "10.0.0.3:80", 2),
        ],
    );
    let c = counts(&mh_owners(&Maglev::new(), &lb.pool().load()));
    assert_eq!((c["a"], c["b"], c["c"]), (2047, 1023, 1023));
}

#[test]
fn lvs_mh_3_removing_c_moves_two_slots_of_a_and_b() {
    let lb = balancer("mh", &MH_ABC);
    let mh = Maglev::new();
    let before = mh_owners(&mh, &lb.pool().load());
    lb.pool().remove(lb.pool().find("c").unwrap()).unwrap();
    let after = mh_owners(&mh, &lb.pool().load());
    let c = counts(&after);
    assert_eq!((c["a"], c["b"], c.len()), (2047, 2046, 2));
    let kept: Vec<usize> = (0..4093).filter(|&i| before[i] != "c").collect();
    let moved = kept.iter().filter(|&&i| before[i] != after[i]).count();
    println!("LVS-MH-3: {moved} of {} slots of a and b moved", kept.len());
    assert_eq!((moved, kept.len()), (2, 2729));
}

#[test]
fn lvs_mh_4_quiescing_keeps_the_table() {
    // The lvs-mh-1 fixture: weight c 0, then 1.
    let lb = balancer("mh", &MH_ABC);
    let fb = balancer("mh fallback", &MH_ABC);
    let mh = Maglev::new();
    let before = mh_owners(&mh, &lb.pool().load());
    for l in [&lb, &fb] {
        set_weight(l, "c", 0);
    }
    assert_eq!(
        mh_owners(&mh, &lb.pool().load()),
        before,
        "built from last_weight"
    );
    for (ip, _, name) in MH_LOOKUPS {
        let addr = format!("{ip}:2008");
        let got = client(&lb, &addr);
        let with_fallback = client(&fb, &addr);
        if name == "c" {
            assert_eq!(got, None, "{ip}");
            assert!(
                matches!(with_fallback.as_deref(), Some("a" | "b")),
                "{ip}: {with_fallback:?}"
            );
        } else {
            assert_eq!(got.as_deref(), Some(name), "{ip}");
            assert_eq!(with_fallback.as_deref(), Some(name), "{ip}");
        }
    }
    set_weight(&lb, "c", 1);
    assert_eq!(mh_owners(&mh, &lb.pool().load()), before);
    for (ip, _, name) in MH_LOOKUPS {
        assert_eq!(
            client(&lb, &format!("{ip}:2015")).as_deref(),
            Some(name),
            "{ip}"
        );
    }
}

#[test]
fn mh_health_changes_keep_the_table() {
    let lb = balancer("mh", &MH_ABC);
    let mh = Maglev::new();
    let before = mh_owners(&mh, &lb.pool().load());
    set_health(&lb, "c", Health::Down);
    assert_eq!(mh_owners(&mh, &lb.pool().load()), before);
    assert_eq!(client(&lb, "192.168.1.12:1"), None);
    set_health(&lb, "c", Health::Up);
    assert_eq!(client(&lb, "192.168.1.12:1").as_deref(), Some("c"));
}

#[test]
fn mh_fallback_rehashes_with_offsets_and_explains() {
    let lb = balancer("mh fallback", &MH_ABC);
    set_health(&lb, "c", Health::Down);
    let mut why = Explain::new();
    let conn = lb
        .explain(&Ctx::new(sa("192.168.1.12:1")), &mut why)
        .unwrap();
    assert_ne!(&*conn.name, "c");
    let text = why.to_string();
    assert!(text.contains("slot 3491 of 4093"), "{text}");
    assert!(
        text.contains("slot 3491: c") && text.contains("not usable"),
        "{text}"
    );
    assert!(text.contains("fallback"), "{text}");
    // The first probe is hash1 with offset 3491 + 0; the answer is the
    // first usable owner along that sequence.
    let all_down_but = |keep: &str| {
        for n in ["a", "b", "c"] {
            set_health(&lb, n, if n == keep { Health::Up } else { Health::Down });
        }
        client(&lb, "192.168.1.12:1")
    };
    assert_eq!(all_down_but("a").as_deref(), Some("a"));
    assert_eq!(all_down_but("b").as_deref(), Some("b"));
    for n in ["a", "b"] {
        set_health(&lb, n, Health::Down);
    }
    assert_eq!(client(&lb, "192.168.1.12:1"), None);
}

#[test]
fn mh_weight_zero_backends_get_no_slots() {
    let lb = balancer(
        "mh fallback",
        &[("a", "10.0.0.1:80", 1), ("z", "10.0.0.9:80", 0)],
    );
    let owners = mh_owners(&Maglev::new(), &lb.pool().load());
    assert!(owners.iter().all(|o| o == "a"));
    // Every last weight 0: an empty table, every pick none.
    let lb = balancer(
        "mh fallback",
        &[("y", "10.0.0.8:80", 0), ("z", "10.0.0.9:80", 0)],
    );
    let owners = mh_owners(&Maglev::new(), &lb.pool().load());
    assert!(owners.iter().all(|o| o == "-"));
    assert_eq!(client(&lb, "192.168.1.10:1"), None);
    // Raising z's weight gives it the whole table.
    set_weight(&lb, "z", 3);
    assert_eq!(client(&lb, "192.168.1.10:1").as_deref(), Some("z"));
}

#[test]
fn mh_with_more_backends_than_slots_has_an_empty_table() {
    let pool = Pool::new();
    for i in 0..252u32 {
        pool.add(Backend::new(
            format!("s{i}"),
            SocketAddr::from(([10, 3, 0, i as u8], 80)),
        ))
        .unwrap();
    }
    let lb = Balancer::new(pool, lb_sched::build("mh fallback table=251").unwrap());
    let mh = Maglev::new().with_size(251).unwrap();
    assert!(mh_owners(&mh, &lb.pool().load()).iter().all(|o| o == "-"));
    assert_eq!(client(&lb, "192.168.1.10:1"), None);
    // Back to 251 backends: a full table again.
    lb.pool().remove(lb.pool().find("s0").unwrap()).unwrap();
    let owners = mh_owners(&mh, &lb.pool().load());
    assert!(owners.iter().all(|o| o != "-"));
    assert!(client(&lb, "192.168.1.10:1").is_some());
}

#[test]
fn mh_large_weights_are_shifted_to_six_bits() {
    // max / g = 1000 -> fls = 10 -> rshift 4: turns 62 and 1 (1000 >> 4,
    // and 1 >> 4 = 0 raised to 1), so a holds about 62 of every 63 slots.
    let lb = balancer("mh", &[("a", "10.0.0.1:80", 1000), ("b", "10.0.0.2:80", 1)]);
    let c = counts(&mh_owners(&Maglev::new(), &lb.pool().load()));
    assert_eq!(c["a"] + c["b"], 4093);
    // 64 full rounds of 63 fill 4032 slots; a takes the last 61.
    assert_eq!(c["b"], 64, "{c:?}");
}
