//! One line of the replay format, parsed.
//!
//! Parsing checks the shape of a line (its tokens and numbers); whether the
//! names it uses exist is the engine's business.

use std::net::{Ipv4Addr, SocketAddr};

use lb_core::{MAX_CONNS, MAX_WEIGHT};

/// The longest persistence timeout, as ipvsadm accepts it (31 days).
pub(crate) const MAX_PERSIST: u64 = 31 * 86_400;

/// A command of the replay format.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Command<'a> {
    Sched {
        name: &'a str,
        options: Vec<&'a str>,
    },
    Persist(PersistSpec),
    Backend(BackendSpec<'a>),
    Conn(ConnSpec<'a>),
    Idle(u64),
    Close(u64),
    Weight(&'a str, u64),
    Down(&'a str),
    Up(&'a str),
    Remove(&'a str),
    At(u64),
    Stats,
}

/// `persist SECONDS [netmask=A.B.C.D] [expire_quiescent]`.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub(crate) struct PersistSpec {
    pub(crate) seconds: u64,
    pub(crate) netmask: Option<Ipv4Addr>,
    pub(crate) expire_quiescent: bool,
}

/// `backend NAME IP:PORT [weight=N] [backup] [max_conns=N]`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BackendSpec<'a> {
    pub(crate) name: &'a str,
    pub(crate) addr: SocketAddr,
    /// The `IP:PORT` token as written (what consistent hashing hashes).
    pub(crate) text: &'a str,
    pub(crate) weight: u64,
    pub(crate) backup: bool,
    pub(crate) max_conns: u64,
}

/// `conn ID CLIENT_IP:PORT [DEST_IP:PORT] [key=STRING]`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ConnSpec<'a> {
    pub(crate) id: u64,
    pub(crate) client: SocketAddr,
    pub(crate) dest: Option<SocketAddr>,
    pub(crate) key: Option<&'a str>,
}

const USAGE: &[(&str, &str)] = &[
    ("sched", "sched NAME [FLAG ...] [KEY=VALUE ...]"),
    (
        "persist",
        "persist SECONDS [netmask=A.B.C.D] [expire_quiescent]",
    ),
    (
        "backend",
        "backend NAME IP:PORT [weight=N] [backup] [max_conns=N]",
    ),
    ("conn", "conn ID CLIENT_IP:PORT [DEST_IP:PORT] [key=STRING]"),
    ("idle", "idle ID"),
    ("close", "close ID"),
    ("weight", "weight NAME N"),
    ("down", "down NAME"),
    ("up", "up NAME"),
    ("remove", "remove NAME"),
    ("at", "at SECONDS"),
    ("stats", "stats"),
];

fn usage(cmd: &str) -> &'static str {
    USAGE.iter().find(|(c, _)| *c == cmd).map_or("", |(_, u)| u)
}

/// Parse one line. `Ok(None)` for a blank or comment-only line.
pub(crate) fn parse(line: &str) -> Result<Option<Command<'_>>, String> {
    let text = line.split_once('#').map_or(line, |(before, _)| before);
    let mut words = text.split_whitespace();
    let Some(cmd) = words.next() else {
        return Ok(None);
    };
    let args: Vec<&str> = words.collect();
    let command = match cmd {
        "sched" => {
            let (&name, options) = args
                .split_first()
                .ok_or_else(|| format!("sched needs a scheduler name: {}", usage(cmd)))?;
            Command::Sched {
                name,
                options: options.to_vec(),
            }
        }
        "persist" => Command::Persist(persist(&args)?),
        "backend" => Command::Backend(backend(&args)?),
        "conn" => Command::Conn(conn(&args)?),
        "idle" => Command::Idle(number("connection id", one(cmd, &args)?)?),
        "close" => Command::Close(number("connection id", one(cmd, &args)?)?),
        "weight" => {
            let [name, w] = exact::<2>(cmd, &args)?;
            Command::Weight(name, weight(w)?)
        }
        "down" => Command::Down(one(cmd, &args)?),
        "up" => Command::Up(one(cmd, &args)?),
        "remove" => Command::Remove(one(cmd, &args)?),
        "at" => Command::At(number("time", one(cmd, &args)?)?),
        "stats" => {
            exact::<0>(cmd, &args)?;
            Command::Stats
        }
        _ => {
            let known: Vec<&str> = USAGE.iter().map(|(c, _)| *c).collect();
            return Err(format!(
                "unknown command {cmd:?} (commands: {})",
                known.join(", ")
            ));
        }
    };
    Ok(Some(command))
}

/// Exactly `N` arguments.
fn exact<'a, const N: usize>(cmd: &str, args: &[&'a str]) -> Result<[&'a str; N], String> {
    <[&str; N]>::try_from(args).map_err(|_| {
        if args.len() > N {
            format!("unexpected {:?} after {cmd}: {}", args[N], usage(cmd))
        } else {
            format!("{cmd} is missing an argument: {}", usage(cmd))
        }
    })
}

fn one<'a>(cmd: &str, args: &[&'a str]) -> Result<&'a str, String> {
    exact::<1>(cmd, args).map(|[a]| a)
}

/// A plain decimal integer: ASCII digits only, no sign, no fraction.
pub(crate) fn number(what: &str, tok: &str) -> Result<u64, String> {
    if tok.is_empty() || !tok.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{what} {tok:?} is not a plain decimal integer"));
    }
    tok.parse::<u64>()
        .map_err(|_| format!("{what} {tok:?} is too large"))
}

fn ranged(what: &str, tok: &str, lo: u64, hi: u64) -> Result<u64, String> {
    let n = number(what, tok)?;
    if n < lo || n > hi {
        return Err(format!("{what} {n} is out of range ({lo}..={hi})"));
    }
    Ok(n)
}

fn weight(tok: &str) -> Result<u64, String> {
    ranged("weight", tok, 0, u64::from(MAX_WEIGHT))
}

fn endpoint(what: &str, tok: &str) -> Result<SocketAddr, String> {
    tok.parse::<SocketAddr>().map_err(|_| {
        format!("{what} {tok:?} is not an endpoint: expected IPv4:PORT or [IPv6]:PORT")
    })
}

fn persist(args: &[&str]) -> Result<PersistSpec, String> {
    let (&seconds, options) = args
        .split_first()
        .ok_or_else(|| format!("persist needs a timeout: {}", usage("persist")))?;
    let mut spec = PersistSpec {
        seconds: ranged("persistence timeout", seconds, 1, MAX_PERSIST)?,
        netmask: None,
        expire_quiescent: false,
    };
    for &opt in options {
        if opt == "expire_quiescent" {
            if spec.expire_quiescent {
                return Err("persist option expire_quiescent given twice".into());
            }
            spec.expire_quiescent = true;
        } else if let Some(mask) = opt.strip_prefix("netmask=") {
            if spec.netmask.is_some() {
                return Err("persist option netmask= given twice".into());
            }
            let mask = mask
                .parse::<Ipv4Addr>()
                .map_err(|_| format!("netmask {mask:?} is not an IPv4 netmask A.B.C.D"))?;
            spec.netmask = Some(mask);
        } else {
            return Err(format!(
                "unknown persist option {opt:?}: {}",
                usage("persist")
            ));
        }
    }
    Ok(spec)
}

fn backend<'a>(args: &[&'a str]) -> Result<BackendSpec<'a>, String> {
    let [name, text, options @ ..] = args else {
        return Err(format!(
            "backend needs a name and an address: {}",
            usage("backend")
        ));
    };
    if *name == "-" {
        return Err(
            "a backend cannot be named \"-\": conn prints \"ID -\" when nothing is eligible".into(),
        );
    }
    let mut spec = BackendSpec {
        name,
        addr: endpoint("backend address", text)?,
        text,
        weight: 1,
        backup: false,
        max_conns: 0,
    };
    let (mut seen_weight, mut seen_max) = (false, false);
    for &opt in options {
        let (key, value) = opt
            .split_once('=')
            .map_or((opt, None), |(k, v)| (k, Some(v)));
        let seen = match (key, value) {
            ("weight", Some(v)) => {
                spec.weight = weight(v)?;
                std::mem::replace(&mut seen_weight, true)
            }
            ("max_conns", Some(v)) => {
                spec.max_conns = ranged("max_conns", v, 0, u64::from(MAX_CONNS))?;
                std::mem::replace(&mut seen_max, true)
            }
            ("backup", None) => std::mem::replace(&mut spec.backup, true),
            _ => {
                return Err(format!(
                    "unknown backend option {opt:?}: {}",
                    usage("backend")
                ))
            }
        };
        if seen {
            return Err(format!("backend option {key} given twice"));
        }
    }
    Ok(spec)
}

fn conn<'a>(args: &[&'a str]) -> Result<ConnSpec<'a>, String> {
    let [id, client, rest @ ..] = args else {
        return Err(format!("conn needs an id and a client: {}", usage("conn")));
    };
    let mut spec = ConnSpec {
        id: number("connection id", id)?,
        client: endpoint("client", client)?,
        dest: None,
        key: None,
    };
    for &tok in rest {
        if let Some(key) = tok.strip_prefix("key=") {
            if spec.key.is_some() {
                return Err("key= given twice".into());
            }
            spec.key = Some(key);
        } else if spec.key.is_some() {
            return Err(format!(
                "unexpected {tok:?} after key=: key= must be the last token"
            ));
        } else if spec.dest.is_none() {
            spec.dest = Some(endpoint("destination", tok)?);
        } else {
            return Err(format!("unexpected {tok:?}: {}", usage("conn")));
        }
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_and_blank_lines_are_nothing() {
        assert_eq!(parse(""), Ok(None));
        assert_eq!(parse("   \t "), Ok(None));
        assert_eq!(parse("# a comment"), Ok(None));
        assert_eq!(parse("stats # trailing"), Ok(Some(Command::Stats)));
    }

    #[test]
    fn conn_takes_dest_then_key_last() {
        let c = parse("conn 7 [2001:db8::1]:80 10.0.0.1:443 key=a=b#c").unwrap();
        let Some(Command::Conn(c)) = c else {
            panic!("not a conn")
        };
        assert_eq!(c.id, 7);
        assert_eq!(c.client, "[2001:db8::1]:80".parse().unwrap());
        assert_eq!(c.dest, Some("10.0.0.1:443".parse().unwrap()));
        assert_eq!(c.key, Some("a=b"), "'=' is part of the key, '#' ends it");
        let Ok(Some(Command::Conn(c))) = parse("conn 1 1.1.1.1:1 key=") else {
            panic!()
        };
        assert_eq!(c.key, Some(""), "an empty key is a key");
        assert!(parse("conn 1 1.1.1.1:1 key=a key=b")
            .unwrap_err()
            .contains("twice"));
        assert!(parse("conn 1 1.1.1.1:1 key=a 2.2.2.2:2")
            .unwrap_err()
            .contains("last"));
        assert!(parse("conn 1 1.1.1.1:1 2.2.2.2:2 3.3.3.3:3").is_err());
    }

    #[test]
    fn numbers_are_plain_decimal() {
        for bad in [
            "-1",
            "+1",
            "1.0",
            "0x10",
            "1e3",
            "",
            "one",
            "18446744073709551616",
        ] {
            assert!(number("n", bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(number("n", "007"), Ok(7));
        assert_eq!(number("n", "18446744073709551615"), Ok(u64::MAX));
    }

    #[test]
    fn backend_options_in_any_order_once_each() {
        let Ok(Some(Command::Backend(b))) =
            parse("backend x [2001:DB8::1]:443 max_conns=3 backup weight=0")
        else {
            panic!()
        };
        assert_eq!((b.weight, b.backup, b.max_conns), (0, true, 3));
        assert_eq!(b.text, "[2001:DB8::1]:443", "the token as written");
        assert!(parse("backend x 1.1.1.1:1 backup backup").is_err());
        assert!(parse("backend x 1.1.1.1:1 weight=1 weight=2").is_err());
        assert!(parse("backend x 1.1.1.1:1 weight=65536").is_err());
        assert!(parse("backend x 1.1.1.1:1 max_conns=65536").is_err());
        assert!(parse("backend x 1.1.1.1:1 weight").is_err());
        assert!(parse("backend x 1.1.1.1:1 backup=1").is_err());
        assert!(parse("backend x 1.1.1.1").is_err(), "a port is required");
    }

    #[test]
    fn arity_is_exact() {
        for bad in [
            "stats x",
            "idle",
            "idle 1 2",
            "at",
            "at 1 2",
            "weight a",
            "weight a 1 2",
            "down",
            "up a b",
            "remove",
            "sched",
            "persist",
            "backend a",
            "conn 1",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse("frobnicate 1")
            .unwrap_err()
            .contains("unknown command"));
    }

    #[test]
    fn persist_options() {
        let Ok(Some(Command::Persist(p))) =
            parse("persist 360 expire_quiescent netmask=255.255.255.0")
        else {
            panic!()
        };
        assert_eq!(p.seconds, 360);
        assert_eq!(p.netmask, Some(Ipv4Addr::new(255, 255, 255, 0)));
        assert!(p.expire_quiescent);
        for bad in [
            "persist 0",
            "persist 2678401",
            "persist 10 netmask=255.255.0",
            "persist 10 port",
            "persist 10 expire_quiescent expire_quiescent",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
