//! nginx `upstream { ... }` blocks as configuration.
//!
//! Reads a file of `upstream` blocks, or a whole `nginx.conf` (the upstream
//! blocks are picked out wherever they are nested), and maps each block to
//! what this toolkit runs: a [`Pool`] of backends, a scheduler spec for
//! [`lb_sched::build`], nginx's passive health settings (`max_fails`,
//! `fail_timeout`) and the upstream keep-alive pool size.
//!
//! ```
//! use lb_proxy::nginx_conf;
//! let conf = nginx_conf::parse(r#"
//!     upstream opslinux_com {
//!         ip_hash;
//!         server 192.168.1.102:80;
//!         server 192.168.1.103:80 weight=2 max_fails=3 fail_timeout=30s;
//!         server 192.168.1.104:80;
//!     }
//! "#).unwrap();
//! let up = conf.upstream(None).unwrap();
//! assert_eq!(up.sched_spec(), "ip_hash");
//! assert_eq!(up.servers[1].weight, 2);
//! assert_eq!(up.servers[1].fail_timeout.as_secs(), 30);
//! let pool = up.to_pool().unwrap();
//! assert_eq!(pool.load().len(), 3);
//! ```
//!
//! Directives this toolkit does not support (`sticky`, `ntlm`, `queue`,
//! server parameters such as `resolve` or `slow_start`, ...) are errors that
//! name the line and the directive; harmless ones (`zone`,
//! `keepalive_timeout`, ...) become warnings.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use lb_core::{Backend, Health, Pool, PoolError};

/// An error in an nginx configuration, with the line it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ConfError {}

fn err<T>(line: usize, message: impl Into<String>) -> Result<T, ConfError> {
    Err(ConfError {
        line,
        message: message.into(),
    })
}

/// A directive that was accepted but has no effect here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// 1-based line number.
    pub line: usize,
    /// What was ignored and why.
    pub message: String,
}

/// The balancing method of an upstream block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// No method directive: smooth weighted round robin.
    RoundRobin,
    /// `least_conn;`
    LeastConn,
    /// `ip_hash;`
    IpHash,
    /// `hash KEY [consistent];` with the key as written (`$request_uri`).
    Hash {
        /// The key template.
        key: String,
        /// Ketama ring.
        consistent: bool,
    },
    /// `random [two [least_conn]];`
    Random {
        /// Pick the less loaded of two draws.
        two: bool,
    },
}

/// One `server` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// The address text as written (what consistent hashing hashes).
    pub text: String,
    /// The address.
    pub addr: SocketAddr,
    /// `weight=N` (default 1).
    pub weight: u32,
    /// `max_conns=N` (default 0: no limit).
    pub max_conns: u32,
    /// `max_fails=N` (default 1; 0 disables failure accounting).
    pub max_fails: u32,
    /// `fail_timeout=T` (default 10 s).
    pub fail_timeout: Duration,
    /// `backup`.
    pub backup: bool,
    /// `down`.
    pub down: bool,
    /// The line of the directive.
    pub line: usize,
}

/// One `upstream NAME { ... }` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The block's name.
    pub name: String,
    /// Its servers, in order.
    pub servers: Vec<Server>,
    /// Its balancing method.
    pub method: Method,
    /// `keepalive N`: idle connections kept open to the servers.
    pub keepalive: Option<u32>,
    /// The line of `upstream`.
    pub line: usize,
}

impl Upstream {
    /// The scheduler spec for [`lb_sched::build`].
    pub fn sched_spec(&self) -> &'static str {
        match self.method {
            Method::RoundRobin => "wrr",
            Method::LeastConn => "least_conn",
            Method::IpHash => "ip_hash",
            Method::Hash {
                consistent: false, ..
            } => "hash",
            Method::Hash {
                consistent: true, ..
            } => "hash consistent",
            Method::Random { two: false } => "random",
            Method::Random { two: true } => "random two least_conn",
        }
    }

    /// The hash key template (`hash $request_uri;`), if the method has one.
    pub fn hash_key(&self) -> Option<&str> {
        match &self.method {
            Method::Hash { key, .. } => Some(key),
            _ => None,
        }
    }

    /// A pool of the block's servers, named by their address text (a
    /// repeated address gets `#2`, `#3`... appended), `down` ones down.
    pub fn to_pool(&self) -> Result<Pool, PoolError> {
        let pool = Pool::new();
        pool.batch(|b| {
            for s in &self.servers {
                let mut name = s.text.clone();
                let mut k = 1;
                while b.members().iter().any(|m| m.name() == name) {
                    k += 1;
                    name = format!("{}#{k}", s.text);
                }
                let health = if s.down { Health::Down } else { Health::Up };
                b.add(
                    Backend::new(name, s.addr)
                        .with_weight(u64::from(s.weight))
                        .with_max_conns(u64::from(s.max_conns))
                        .with_backup(s.backup)
                        .with_health(health)
                        .with_server_text(s.text.as_str()),
                )?;
            }
            Ok(())
        })?;
        Ok(pool)
    }
}

/// Every upstream block of a file, and the warnings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NginxConf {
    /// The blocks in file order.
    pub upstreams: Vec<Upstream>,
    /// Directives accepted without effect.
    pub warnings: Vec<Warning>,
}

impl NginxConf {
    /// The block named `name`, or the only block when `name` is `None`.
    pub fn upstream(&self, name: Option<&str>) -> Result<&Upstream, String> {
        match name {
            Some(n) => self
                .upstreams
                .iter()
                .find(|u| u.name == n)
                .ok_or_else(|| format!("no upstream named {n:?} (found: {})", self.names())),
            None => match self.upstreams.as_slice() {
                [one] => Ok(one),
                [] => Err("no upstream block found".to_owned()),
                _ => Err(format!(
                    "several upstream blocks ({}): choose one by name",
                    self.names()
                )),
            },
        }
    }

    fn names(&self) -> String {
        let names: Vec<&str> = self.upstreams.iter().map(|u| u.name.as_str()).collect();
        names.join(", ")
    }
}

// === tokens ===

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Word(String),
    Semi,
    Open,
    Close,
}

fn tokenize(text: &str) -> Result<Vec<(Tok, usize)>, ConfError> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while let Some(&c) = chars.peek() {
        match c {
            '\n' => {
                line += 1;
                chars.next();
            }
            c if c.is_whitespace() => {
                chars.next();
            }
            '#' => {
                while chars.peek().is_some_and(|&c| c != '\n') {
                    chars.next();
                }
            }
            ';' | '{' | '}' => {
                chars.next();
                let t = match c {
                    ';' => Tok::Semi,
                    '{' => Tok::Open,
                    _ => Tok::Close,
                };
                out.push((t, line));
            }
            '"' | '\'' => {
                let start = line;
                chars.next();
                let mut w = String::new();
                loop {
                    match chars.next() {
                        None => return err(start, "unterminated quoted string"),
                        Some('\\') => {
                            if let Some(n) = chars.next() {
                                w.push(n);
                            }
                        }
                        Some(q) if q == c => break,
                        Some(ch) => {
                            if ch == '\n' {
                                line += 1;
                            }
                            w.push(ch);
                        }
                    }
                }
                out.push((Tok::Word(w), start));
            }
            _ => {
                let mut w = String::new();
                while let Some(&ch) = chars.peek() {
                    if ch.is_whitespace() || matches!(ch, ';' | '{' | '}' | '#' | '"' | '\'') {
                        break;
                    }
                    w.push(ch);
                    chars.next();
                }
                out.push((Tok::Word(w), line));
            }
        }
    }
    Ok(out)
}

/// A directive: its words, the line it starts on, and its block if any.
struct Directive {
    words: Vec<String>,
    line: usize,
    block: Option<Vec<Directive>>,
}

fn parse_block(
    toks: &[(Tok, usize)],
    pos: &mut usize,
    nested: bool,
) -> Result<Vec<Directive>, ConfError> {
    let mut out = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut start = 0;
    while *pos < toks.len() {
        let (t, line) = &toks[*pos];
        *pos += 1;
        match t {
            Tok::Word(w) => {
                if words.is_empty() {
                    start = *line;
                }
                words.push(w.clone());
            }
            Tok::Semi => {
                if words.is_empty() {
                    return err(*line, "unexpected \";\"");
                }
                out.push(Directive {
                    words: std::mem::take(&mut words),
                    line: start,
                    block: None,
                });
            }
            Tok::Open => {
                if words.is_empty() {
                    return err(*line, "unexpected \"{\"");
                }
                let inner = parse_block(toks, pos, true)?;
                out.push(Directive {
                    words: std::mem::take(&mut words),
                    line: start,
                    block: Some(inner),
                });
            }
            Tok::Close => {
                if !words.is_empty() {
                    return err(
                        start,
                        format!("directive \"{}\" is not terminated by \";\"", words[0]),
                    );
                }
                if !nested {
                    return err(*line, "unexpected \"}\"");
                }
                return Ok(out);
            }
        }
    }
    if !words.is_empty() {
        return err(
            start,
            format!("directive \"{}\" is not terminated by \";\"", words[0]),
        );
    }
    if nested {
        let line = toks.last().map(|t| t.1).unwrap_or(1);
        return err(line, "unexpected end of file, expecting \"}\"");
    }
    Ok(out)
}

/// Parse a file of upstream blocks, or a whole nginx.conf.
pub fn parse(text: &str) -> Result<NginxConf, ConfError> {
    let toks = tokenize(text)?;
    let mut pos = 0;
    let top = parse_block(&toks, &mut pos, false)?;
    let mut conf = NginxConf::default();
    collect(&top, &mut conf)?;
    Ok(conf)
}

fn collect(dirs: &[Directive], conf: &mut NginxConf) -> Result<(), ConfError> {
    for d in dirs {
        match (d.words[0].as_str(), &d.block) {
            ("upstream", Some(body)) => {
                if d.words.len() != 2 {
                    return err(d.line, "\"upstream\" takes exactly one name");
                }
                if conf.upstreams.iter().any(|u| u.name == d.words[1]) {
                    return err(d.line, format!("duplicate upstream \"{}\"", d.words[1]));
                }
                let up = upstream(&d.words[1], d.line, body, &mut conf.warnings)?;
                conf.upstreams.push(up);
            }
            ("upstream", None) => return err(d.line, "\"upstream\" needs a { ... } block"),
            (_, Some(body)) => collect(body, conf)?,
            _ => {}
        }
    }
    Ok(())
}

const UNSUPPORTED: &[&str] = &[
    "sticky",
    "ntlm",
    "queue",
    "resolver",
    "resolver_timeout",
    "least_time",
    "state",
];
const HARMLESS: &[&str] = &[
    "zone",
    "keepalive_timeout",
    "keepalive_requests",
    "keepalive_time",
];

fn upstream(
    name: &str,
    line: usize,
    body: &[Directive],
    warnings: &mut Vec<Warning>,
) -> Result<Upstream, ConfError> {
    let mut up = Upstream {
        name: name.to_owned(),
        servers: Vec::new(),
        method: Method::RoundRobin,
        keepalive: None,
        line,
    };
    let mut method_line = None;
    for d in body {
        if d.block.is_some() {
            return err(
                d.line,
                format!("\"{}\" cannot have a block inside upstream", d.words[0]),
            );
        }
        let args = &d.words[1..];
        let dname = d.words[0].as_str();
        let set_method = |m: Method, up: &mut Upstream, seen: &mut Option<usize>| {
            if let Some(l) = *seen {
                return err(
                    d.line,
                    format!("\"{dname}\": a balancing method is already set on line {l}"),
                );
            }
            *seen = Some(d.line);
            up.method = m;
            Ok(())
        };
        match dname {
            "server" => up.servers.push(server(args, d.line)?),
            "least_conn" | "ip_hash" if !args.is_empty() => {
                return err(d.line, format!("\"{dname}\" takes no arguments"));
            }
            "least_conn" => set_method(Method::LeastConn, &mut up, &mut method_line)?,
            "ip_hash" => set_method(Method::IpHash, &mut up, &mut method_line)?,
            "hash" => {
                let m = match args {
                    [key] => Method::Hash {
                        key: key.clone(),
                        consistent: false,
                    },
                    [key, c] if c == "consistent" => Method::Hash {
                        key: key.clone(),
                        consistent: true,
                    },
                    _ => return err(d.line, "\"hash\" takes a key and optionally \"consistent\""),
                };
                set_method(m, &mut up, &mut method_line)?;
            }
            "random" => {
                let two = match args
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .as_slice()
                {
                    [] => false,
                    ["two"] | ["two", "least_conn"] => true,
                    _ => {
                        return err(
                            d.line,
                            "\"random\" takes nothing, \"two\" or \"two least_conn\"",
                        );
                    }
                };
                set_method(Method::Random { two }, &mut up, &mut method_line)?;
            }
            "keepalive" => match args {
                [n] => match n.parse::<u32>() {
                    Ok(v) if v > 0 => up.keepalive = Some(v),
                    _ => {
                        return err(
                            d.line,
                            format!("invalid keepalive \"{n}\": expected a positive number"),
                        )
                    }
                },
                _ => return err(d.line, "\"keepalive\" takes one number"),
            },
            n if HARMLESS.contains(&n) => warnings.push(Warning {
                line: d.line,
                message: format!(
                    "\"{n}\" in upstream \"{name}\" has no effect here and is ignored"
                ),
            }),
            n if UNSUPPORTED.contains(&n) => {
                return err(d.line, format!("directive \"{n}\" is not supported"));
            }
            n => {
                return err(
                    d.line,
                    format!("unknown directive \"{n}\" in upstream \"{name}\""),
                )
            }
        }
    }
    if up.servers.is_empty() {
        return err(
            line,
            format!("no servers are defined in upstream \"{name}\""),
        );
    }
    if !matches!(up.method, Method::RoundRobin | Method::LeastConn) {
        if let Some(s) = up.servers.iter().find(|s| s.backup) {
            return err(
                s.line,
                format!(
                    "\"backup\" cannot be used with \"{}\" (only round robin and least_conn)",
                    up.sched_spec()
                ),
            );
        }
    }
    Ok(up)
}

fn server(args: &[String], line: usize) -> Result<Server, ConfError> {
    let Some(text) = args.first() else {
        return err(line, "\"server\" needs an address");
    };
    let addr = parse_addr(text).map_err(|m| ConfError { line, message: m })?;
    let mut s = Server {
        text: text.clone(),
        addr,
        weight: 1,
        max_conns: 0,
        max_fails: 1,
        fail_timeout: Duration::from_secs(10),
        backup: false,
        down: false,
        line,
    };
    let mut seen: Vec<&str> = Vec::new();
    for p in &args[1..] {
        let (k, v) = p.split_once('=').unwrap_or((p.as_str(), ""));
        if seen.contains(&k) {
            return err(line, format!("server parameter \"{k}\" given twice"));
        }
        seen.push(k);
        let num = |max: u32| -> Result<u32, ConfError> {
            match v.parse::<u32>() {
                Ok(n) if n <= max => Ok(n),
                _ => err(
                    line,
                    format!("invalid value \"{v}\" for server parameter \"{k}\" (0..={max})"),
                ),
            }
        };
        match k {
            "weight" => {
                s.weight = num(65_535)?;
                if s.weight == 0 {
                    return err(
                        line,
                        "invalid parameter \"weight=0\": weight must be at least 1 (use \"down\")",
                    );
                }
            }
            "max_conns" => s.max_conns = num(65_535)?,
            "max_fails" => s.max_fails = num(u32::MAX)?,
            "fail_timeout" => {
                s.fail_timeout = parse_time(v).map_err(|m| ConfError { line, message: m })?
            }
            "backup" | "down" if !v.is_empty() || p.contains('=') => {
                return err(line, format!("server parameter \"{k}\" takes no value"));
            }
            "backup" => s.backup = true,
            "down" => s.down = true,
            "resolve" | "slow_start" | "route" | "service" | "drain" => {
                return err(line, format!("server parameter \"{k}\" is not supported"));
            }
            _ => return err(line, format!("invalid server parameter \"{p}\"")),
        }
    }
    Ok(s)
}

/// `IP`, `IP:PORT`, `[IPv6]`, `[IPv6]:PORT` (port 80 by default).
fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    if text.starts_with("unix:") {
        return Err(format!("unix socket server \"{text}\" is not supported"));
    }
    if let Ok(a) = text.parse::<SocketAddr>() {
        return Ok(a);
    }
    let host = text.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 80));
    }
    Err(format!(
        "server address \"{text}\" is not an IP address with an optional port (host names are not resolved)"
    ))
}

/// nginx time: `30s`, `1m`, `500ms`, `2h`, `1d`, or plain seconds; several
/// parts add up (`1m30s`).
pub fn parse_time(v: &str) -> Result<Duration, String> {
    let bad = || format!("invalid time \"{v}\" (examples: 10s, 500ms, 1m30s)");
    if v.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = v;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "" | "s" => Duration::from_secs(n),
            "ms" => Duration::from_millis(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "d" => Duration::from_secs(n.saturating_mul(86_400)),
            _ => return Err(bad()),
        };
        total = total.saturating_add(part);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Upstream {
        parse(text).unwrap().upstreams.remove(0)
    }

    fn fails(text: &str) -> ConfError {
        parse(text).unwrap_err()
    }

    #[test]
    fn whole_nginx_conf_with_several_blocks() {
        let conf = parse(
            "worker_processes 1;\nevents { worker_connections 64; }\nhttp {\n  upstream a { server 127.0.0.1:9001; }\n  # comment\n  upstream b {\n    hash $host$request_uri consistent;\n    server [::1]:9002 weight=3 max_conns=10;\n    keepalive 16;\n    zone b 64k;\n  }\n  server { listen 80; location / { proxy_pass http://a; } }\n}\n",
        )
        .unwrap();
        assert_eq!(conf.upstreams.len(), 2);
        let b = conf.upstream(Some("b")).unwrap();
        assert_eq!(b.sched_spec(), "hash consistent");
        assert_eq!(b.hash_key(), Some("$host$request_uri"));
        assert_eq!(b.keepalive, Some(16));
        assert_eq!(b.servers[0].addr, "[::1]:9002".parse().unwrap());
        assert_eq!((b.servers[0].weight, b.servers[0].max_conns), (3, 10));
        assert_eq!(conf.warnings.len(), 1);
        assert_eq!(conf.warnings[0].line, 10);
        assert!(conf.upstream(None).unwrap_err().contains("a, b"));
        assert!(conf.upstream(Some("c")).is_err());
    }

    #[test]
    fn defaults_and_flags() {
        let u = one("upstream u { least_conn; server 10.0.0.1; server 10.0.0.2:81 backup down max_fails=0 fail_timeout=1m30s; }");
        assert_eq!(u.sched_spec(), "least_conn");
        let (a, b) = (&u.servers[0], &u.servers[1]);
        assert_eq!(a.addr.port(), 80);
        assert_eq!(
            (a.weight, a.max_fails, a.fail_timeout),
            (1, 1, Duration::from_secs(10))
        );
        assert!(b.backup && b.down);
        assert_eq!((b.max_fails, b.fail_timeout), (0, Duration::from_secs(90)));
        let pool = u.to_pool().unwrap();
        let snap = pool.load();
        assert!(snap.members()[1].is_backup());
        assert!(!snap.members()[1].is_up());
        assert_eq!(snap.members()[0].server_text(), "10.0.0.1");
    }

    #[test]
    fn methods_map_to_scheduler_specs() {
        for (m, spec) in [
            ("", "wrr"),
            ("ip_hash;", "ip_hash"),
            ("hash $request_uri;", "hash"),
            ("random;", "random"),
            ("random two;", "random two least_conn"),
            ("random two least_conn;", "random two least_conn"),
        ] {
            let u = one(&format!("upstream u {{ {m} server 10.0.0.1:80; }}"));
            assert_eq!(u.sched_spec(), spec, "{m}");
            lb_sched_spec_is_known(spec);
        }
    }

    fn lb_sched_spec_is_known(spec: &str) {
        // Every spec names a scheduler of the contract (built by lb-sched).
        let name = spec.split_whitespace().next().unwrap();
        assert!(["wrr", "least_conn", "ip_hash", "hash", "random"].contains(&name));
    }

    #[test]
    fn mistakes_name_the_line_and_directive() {
        let cases = [
            (
                "upstream u {\n server 10.0.0.1;\n sticky cookie srv;\n}",
                3,
                "\"sticky\" is not supported",
            ),
            ("upstream u {\n ntlm;\n server 10.0.0.1;\n}", 2, "\"ntlm\""),
            (
                "upstream u {\n server 10.0.0.1 slow_start=30s;\n}",
                2,
                "\"slow_start\" is not supported",
            ),
            (
                "upstream u {\n server 10.0.0.1 resolve;\n}",
                2,
                "\"resolve\"",
            ),
            ("upstream u {\n server 10.0.0.1 weight=0;\n}", 2, "weight=0"),
            (
                "upstream u {\n server 10.0.0.1 weight=70000;\n}",
                2,
                "weight",
            ),
            ("upstream u {\n server 10.0.0.1 weight=x;\n}", 2, "\"x\""),
            (
                "upstream u {\n server 10.0.0.1 fail_timeout=10q;\n}",
                2,
                "invalid time",
            ),
            (
                "upstream u {\n server 10.0.0.1 frobnicate;\n}",
                2,
                "frobnicate",
            ),
            (
                "upstream u {\n server 10.0.0.1 weight=2 weight=3;\n}",
                2,
                "twice",
            ),
            ("upstream u {\n server web.example:80;\n}", 2, "not an IP"),
            ("upstream u {\n server unix:/tmp/s;\n}", 2, "unix"),
            (
                "upstream u {\n ip_hash;\n server 10.0.0.1;\n server 10.0.0.2 backup;\n}",
                4,
                "backup",
            ),
            (
                "upstream u {\n server 10.0.0.2 backup;\n hash $uri;\n}",
                2,
                "backup",
            ),
            (
                "upstream u {\n ip_hash;\n least_conn;\n server 10.0.0.1;\n}",
                3,
                "already set on line 2",
            ),
            ("upstream u {\n hash;\n server 10.0.0.1;\n}", 2, "\"hash\""),
            (
                "upstream u {\n random three;\n server 10.0.0.1;\n}",
                2,
                "\"random\"",
            ),
            (
                "upstream u {\n keepalive 0;\n server 10.0.0.1;\n}",
                2,
                "keepalive",
            ),
            ("upstream u {\n}", 1, "no servers"),
            ("upstream u {\n server 10.0.0.1\n}", 2, "not terminated"),
            ("upstream u {\n server 10.0.0.1;\n", 2, "end of file"),
            ("upstream u;\n", 1, "block"),
            ("}\n", 1, "unexpected"),
            ("upstream u { server \"10.0.0.1; }", 1, "unterminated"),
            (
                "upstream u { server 10.0.0.1; }\nupstream u { server 10.0.0.2; }",
                2,
                "duplicate",
            ),
        ];
        for (text, line, needle) in cases {
            let e = fails(text);
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.to_string().contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn duplicate_addresses_get_distinct_names() {
        let u = one("upstream u { server 10.0.0.1:80; server 10.0.0.1:80 weight=2; }");
        let pool = u.to_pool().unwrap();
        let names: Vec<String> = pool
            .load()
            .members()
            .iter()
            .map(|m| m.name().to_owned())
            .collect();
        assert_eq!(names, ["10.0.0.1:80", "10.0.0.1:80#2"]);
        assert_eq!(pool.load().members()[1].server_text(), "10.0.0.1:80");
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_time("7").unwrap(), Duration::from_secs(7));
        assert_eq!(parse_time("1h1s").unwrap(), Duration::from_secs(3601));
        assert!(parse_time("").is_err() && parse_time("s").is_err() && parse_time("1x").is_err());
    }
}
