//! Building schedulers by name, as `ipvsadm -s NAME -b FLAGS` and nginx's
//! upstream methods name them.

use std::str::FromStr;
use std::time::Duration;

use crate::error::SchedError;
use crate::BoxScheduler;

/// One scheduler the registry can build.
struct Entry {
    name: &'static str,
    /// The flags and parameters it takes, for error messages and `--help`.
    accepted: &'static str,
    /// One line for tables and `--help`.
    summary: &'static str,
    make: fn(&mut Args<'_>) -> Result<BoxScheduler, SchedError>,
}

static REGISTRY: &[Entry] = &[
    Entry {
        name: "rr",
        accepted: "nothing",
        summary: "round robin: the next eligible backend in pool order (LVS rr)",
        make: |_| Ok(Box::new(crate::rr::RoundRobin::new())),
    },
    Entry {
        name: "wrr",
        accepted: "nothing",
        summary: "smooth weighted round robin, nginx's default (honours backup, max_conns)",
        make: |_| Ok(Box::new(crate::wrr::SmoothWrr::new())),
    },
    Entry {
        name: "sh",
        accepted: "port, fallback, bits=4..20 (default 8)",
        summary: "source hashing: the client IP (and port) picks a bucket of a weighted table (LVS sh)",
        make: |args| {
            let bits = args.value::<u32>("bits", "an integer from 4 to 20 (a table of 2^bits buckets)", |b| {
                crate::SourceHash::BITS.contains(b)
            })?;
            let sched = crate::SourceHash::new()
                .with_bits(bits.unwrap_or(crate::SourceHash::DEFAULT_BITS))?
                .with_port(args.flag("port"))
                .with_fallback(args.flag("fallback"));
            Ok(Box::new(sched))
        },
    },
    Entry {
        name: "dh",
        accepted: "nothing",
        summary: "destination hashing: the destination IP picks one of 256 buckets, one per backend in turn (LVS dh)",
        make: |_| Ok(Box::new(crate::DestHash::new())),
    },
    Entry {
        name: "mh",
        accepted: "port, fallback, table=251|509|1021|2039|4093|8191|16381|32749|65521|131071 (default 4093)",
        summary: "Maglev hashing: consistent, a pool change moves only the slots it must (LVS mh)",
        make: |args| {
            let size = args.value::<u32>(
                "table",
                "one of the primes 251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071",
                |m| crate::Maglev::SIZES.contains(m),
            )?;
            let sched = crate::Maglev::new()
                .with_size(size.unwrap_or(crate::Maglev::DEFAULT_SIZE))?
                .with_port(args.flag("port"))
                .with_fallback(args.flag("fallback"));
            Ok(Box::new(sched))
        },
    },
    Entry {
        name: "lc",
        accepted: "nothing",
        summary: "least connection: the least 256*active+inactive (LVS lc)",
        make: |_| Ok(Box::new(crate::lc::LeastConn::new())),
    },
    Entry {
        name: "wlc",
        accepted: "nothing",
        summary: "weighted least connection: the least (256*active+inactive)/weight (LVS wlc, ipvsadm's default)",
        make: |_| Ok(Box::new(crate::lc::WeightedLeastConn::new())),
    },
    Entry {
        name: "sed",
        accepted: "nothing",
        summary: "shortest expected delay: the least (active+1)/weight (LVS sed)",
        make: |_| Ok(Box::new(crate::lc::ShortestExpectedDelay::new())),
    },
    Entry {
        name: "nq",
        accepted: "nothing",
        summary: "never queue: the first backend with no active connection, else as sed (LVS nq)",
        make: |_| Ok(Box::new(crate::lc::NeverQueue::new())),
    },
    Entry {
        name: "lblc",
        accepted: "expire=SECONDS",
        summary: "locality-based least connection: one backend per destination IP, else wlc (LVS lblc)",
        make: |args| {
            let expire = expire(args)?;
            Ok(Box::new(crate::lblc::LocalityLeastConn::with_expire(expire)))
        },
    },
    Entry {
        name: "lblcr",
        accepted: "expire=SECONDS",
        summary: "lblc with replication: a set of backends per destination IP, else wlc (LVS lblcr)",
        make: |args| {
            let expire = expire(args)?;
            Ok(Box::new(crate::lblc::LocalityReplicated::with_expire(expire)))
        },
    },
    Entry {
        name: "fo",
        accepted: "nothing",
        summary: "weighted failover: the eligible backend of highest weight (LVS fo)",
        make: |_| Ok(Box::new(crate::fo::WeightedFailover::new())),
    },
    Entry {
        name: "ovf",
        accepted: "nothing",
        summary: "weighted overflow: the highest weight among backends with active <= weight (LVS ovf)",
        make: |_| Ok(Box::new(crate::fo::WeightedOverflow::new())),
    },
    Entry {
        name: "twos",
        accepted: "seed=N",
        summary: "power of two choices: two weighted random draws, the less loaded wins (LVS twos)",
        make: |args| {
            let seed = args.value::<u64>("seed", "an integer, 0..2^64", |_| true)?;
            let seed = seed.unwrap_or(crate::rng::DEFAULT_SEED);
            Ok(Box::new(crate::twos::TwoChoices::with_seed(seed)))
        },
    },
    Entry {
        name: "least_conn",
        accepted: "nothing",
        summary: "nginx least_conn: least conns/weight, ties by smooth wrr (honours backup, max_conns)",
        make: |_| Ok(Box::new(crate::nginx::NginxLeastConn::new())),
    },
    Entry {
        name: "ip_hash",
        accepted: "nothing",
        summary: "nginx ip_hash: the client's /24 (IPv6: whole address) picks by weight (honours max_conns)",
        make: |_| Ok(Box::new(crate::nginx::IpHash::new())),
    },
    Entry {
        name: "hash",
        accepted: "the flag consistent",
        summary: "nginx hash $key; with consistent, the ketama ring (honours max_conns)",
        make: |args| {
            Ok(if args.flag("consistent") {
                Box::new(crate::nginx::ConsistentHash::new())
            } else {
                Box::new(crate::nginx::KeyHash::new())
            })
        },
    },
    Entry {
        name: "random",
        accepted: RANDOM_ACCEPTS,
        summary: "nginx random, or random two [least_conn]: two draws, the less loaded (honours max_conns)",
        make: make_random,
    },
    Entry {
        name: "p2c",
        accepted: "seed=N",
        summary: "weighted power of two choices: of two drawn by weight, fewer conns/weight wins",
        make: |a| Ok(Box::new(crate::p2c::P2c::with_seed(seed(a)?))),
    },
    Entry {
        name: "peak_ewma",
        accepted: "decay=SECONDS, default_rtt=MS, seed=N",
        summary: "peak-EWMA latency * (in-flight + 1), by power of two choices (tower, Finagle)",
        make: |a| {
            let decay = a.value::<f64>("decay", "seconds, > 0 and at most 86400", |v| {
                *v > 0.0 && *v <= 86_400.0
            })?;
            let rtt = a.value::<u64>("default_rtt", "milliseconds, 1..=3600000", |v| {
                (1..=3_600_000).contains(v)
            })?;
            Ok(Box::new(crate::ewma::PeakEwma::with_seed(
                Duration::from_secs_f64(decay.unwrap_or(10.0)),
                Duration::from_millis(rtt.unwrap_or(30)),
                seed(a)?,
            )))
        },
    },
];

/// The `expire=SECONDS` parameter of lblc and lblcr (default 24 h).
fn expire(args: &mut Args<'_>) -> Result<std::time::Duration, SchedError> {
    let secs = args.value::<u64>("expire", "seconds, 1..", |v| *v > 0)?;
    Ok(secs.map_or(crate::lblc::DEFAULT_EXPIRE, std::time::Duration::from_secs))
}

const RANDOM_ACCEPTS: &str = "the flag two, then optionally least_conn; seed=N";
const SEED_RANGE: &str = "a decimal integer 0..=18446744073709551615";

fn make_random(args: &mut Args<'_>) -> Result<BoxScheduler, SchedError> {
    let two = args.flag("two");
    if args.flag("least_conn") && !two {
        return Err(SchedError::UnknownOption {
            sched: args.sched(),
            option: "least_conn".to_owned(),
            accepted: "least_conn only after two (random two least_conn); two; seed=N",
        });
    }
    let seed = args.value::<u64>("seed", SEED_RANGE, |_| true)?;
    let sched = if two {
        crate::nginx::NginxRandom::two()
    } else {
        crate::nginx::NginxRandom::new()
    };
    Ok(Box::new(match seed {
        Some(seed) => sched.with_seed(seed),
        None => sched,
    }))
}

/// The names the registry knows, in the order of its table.
pub const NAMES: &[&str] = &[
    "rr",
    "wrr",
    "lc",
    "wlc",
    "sed",
    "nq",
    "lblc",
    "lblcr",
    "sh",
    "dh",
    "mh",
    "fo",
    "ovf",
    "twos",
    "least_conn",
    "ip_hash",
    "hash",
    "random",
    "p2c",
    "peak_ewma",
];

/// The `seed=N` of a randomised scheduler, or the default seed.
fn seed(args: &mut Args<'_>) -> Result<u64, SchedError> {
    Ok(args
        .value::<u64>("seed", SEED_RANGE, |_| true)?
        .unwrap_or(crate::rng::DEFAULT_SEED))
}

/// `(name, accepted options, one-line summary)` of every scheduler.
pub fn catalogue() -> impl Iterator<Item = (&'static str, &'static str, &'static str)> {
    REGISTRY.iter().map(|e| (e.name, e.accepted, e.summary))
}

/// Build a scheduler from a spec: its name, then flags and `key=value`
/// parameters, separated by whitespace.
///
/// ```
/// let s = lb_sched::build("rr").unwrap();
/// assert_eq!(s.name(), "rr");
/// let e = lb_sched::build("wlcx").unwrap_err();
/// assert!(e.to_string().contains("unknown scheduler"));
/// ```
pub fn build(spec: &str) -> Result<BoxScheduler, SchedError> {
    let mut words = spec.split_whitespace();
    let name = words.next().unwrap_or("");
    let options: Vec<&str> = words.collect();
    build_with(name, &options)
}

/// Build a scheduler from its name and options (`"port"`, `"expire=600"`).
pub fn build_with(name: &str, options: &[&str]) -> Result<BoxScheduler, SchedError> {
    let entry =
        REGISTRY
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| SchedError::UnknownScheduler {
                name: name.to_owned(),
            })?;
    let mut args = Args::new(entry.name, entry.accepted, options)?;
    let sched = (entry.make)(&mut args)?;
    args.finish()?;
    Ok(sched)
}

/// The options given to one scheduler, consumed by its constructor.
#[derive(Debug)]
pub struct Args<'a> {
    sched: &'static str,
    accepted: &'static str,
    items: Vec<(&'a str, Option<&'a str>, bool)>,
}

impl<'a> Args<'a> {
    fn new(
        sched: &'static str,
        accepted: &'static str,
        options: &[&'a str],
    ) -> Result<Self, SchedError> {
        let mut items: Vec<(&'a str, Option<&'a str>, bool)> = Vec::new();
        for opt in options {
            let (key, value) = match opt.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (*opt, None),
            };
            if items.iter().any(|(k, _, _)| *k == key) {
                return Err(SchedError::Repeated {
                    sched,
                    option: (*opt).to_owned(),
                });
            }
            items.push((key, value, false));
        }
        Ok(Args {
            sched,
            accepted,
            items,
        })
    }

    /// The scheduler's name.
    pub fn sched(&self) -> &'static str {
        self.sched
    }

    /// Whether the flag `name` was given (a bare word).
    pub fn flag(&mut self, name: &str) -> bool {
        for item in &mut self.items {
            if item.0 == name && item.1.is_none() {
                item.2 = true;
                return true;
            }
        }
        false
    }

    /// The value of parameter `key`, parsed and checked by `ok`.
    pub fn value<T: FromStr>(
        &mut self,
        key: &'static str,
        expected: &'static str,
        ok: impl Fn(&T) -> bool,
    ) -> Result<Option<T>, SchedError> {
        let sched = self.sched;
        for item in &mut self.items {
            if item.0 == key {
                if let Some(v) = item.1 {
                    item.2 = true;
                    return match v.parse::<T>() {
                        Ok(t) if ok(&t) => Ok(Some(t)),
                        _ => Err(SchedError::BadValue {
                            sched,
                            key,
                            value: v.to_owned(),
                            expected,
                        }),
                    };
                }
            }
        }
        Ok(None)
    }

    /// Fail on the first option no one consumed.
    fn finish(self) -> Result<(), SchedError> {
        match self.items.iter().find(|i| !i.2) {
            None => Ok(()),
            Some((k, v, _)) => Err(SchedError::UnknownOption {
                sched: self.sched,
                option: match v {
                    Some(v) => format!("{k}={v}"),
                    None => (*k).to_owned(),
                },
                accepted: self.accepted,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_builds_and_reports_its_name() {
        for name in NAMES {
            let s = build(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(s.name(), *name);
        }
        assert_eq!(NAMES.len(), REGISTRY.len());
    }

    #[test]
    fn unknown_names_and_options_are_refused_clearly() {
        let e = build("nope").unwrap_err();
        assert!(matches!(e, SchedError::UnknownScheduler { .. }));
        let e = build("rr port").unwrap_err();
        assert!(e.to_string().contains("\"port\""), "{e}");
        let e = build("").unwrap_err();
        assert!(matches!(e, SchedError::UnknownScheduler { .. }));
    }
}
