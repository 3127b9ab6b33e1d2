//! TOML parsing and checking; every error names its line and key.

use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::str::FromStr;
use std::time::Duration;

use lb_core::{MAX_CONNS, MAX_WEIGHT};
use serde::Deserialize;
use toml::{Spanned, Value};

use super::{
    BackendConfig, ClientLimits, Config, ConfigError, HealthSettings, Persistence, Timeouts,
};
use crate::http::HostHeader;
use crate::key::KeyTemplate;
use crate::pick::{Retry, MAX_TRIES};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    listen: Option<Spanned<String>>,
    admin: Option<Spanned<String>>,
    scheduler: Option<Spanned<String>>,
    hash_key: Option<Spanned<String>>,
    host: Option<Spanned<String>>,
    forwarded_headers: Option<bool>,
    upstream_send_buffer_kib: Option<Spanned<i64>>,
    persistence: Option<RawPersistence>,
    timeouts: Option<RawTimeouts>,
    limits: Option<RawLimits>,
    retry: Option<RawRetry>,
    health: Option<RawHealth>,
    #[serde(default)]
    backend: Vec<RawBackend>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    name: Option<Spanned<String>>,
    addr: Spanned<String>,
    weight: Option<Spanned<i64>>,
    backup: Option<bool>,
    down: Option<bool>,
    max_conns: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPersistence {
    timeout: Spanned<Value>,
    netmask: Option<Spanned<String>>,
    expire_quiescent: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    connect: Option<Spanned<Value>>,
    response: Option<Spanned<Value>>,
    idle: Option<Spanned<Value>>,
    client_header: Option<Spanned<Value>>,
    client_body: Option<Spanned<Value>>,
    tunnel: Option<Spanned<Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_connections: Option<Spanned<i64>>,
    max_uri_bytes: Option<Spanned<i64>>,
    max_header_bytes: Option<Spanned<i64>>,
    max_headers: Option<Spanned<i64>>,
    max_body_mib: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    tries: Option<Spanned<i64>>,
    timeout: Option<Spanned<Value>>,
    on_error: Option<bool>,
    on_status: Option<Spanned<Vec<i64>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    interval: Option<Spanned<Value>>,
    timeout: Option<Spanned<Value>>,
    rise: Option<Spanned<i64>>,
    fall: Option<Spanned<i64>>,
    fastinter: Option<Spanned<Value>>,
    downinter: Option<Spanned<Value>>,
    path: Option<Spanned<String>>,
    max_fails: Option<Spanned<i64>>,
    fail_timeout: Option<Spanned<Value>>,
    slow_response: Option<Spanned<Value>>,
}

/// Turns byte spans into line numbers.
struct Src<'a>(&'a str);

impl Src<'_> {
    fn line(&self, span: Range<usize>) -> usize {
        let end = span.start.min(self.0.len());
        self.0.as_bytes()[..end]
            .iter()
            .filter(|c| **c == b'\n')
            .count()
            + 1
    }

    fn err<T>(
        &self,
        key: &str,
        span: Range<usize>,
        message: impl Into<String>,
    ) -> Result<T, ConfigError> {
        Err(ConfigError {
            line: Some(self.line(span)),
            ..ConfigError::new(key, message)
        })
    }

    fn duration(
        &self,
        key: &str,
        v: &Spanned<Value>,
        min: Duration,
    ) -> Result<Duration, ConfigError> {
        let d = match v.get_ref() {
            Value::Integer(n) if *n >= 0 => Duration::from_secs(*n as u64),
            Value::String(s) => match parse_duration(s) {
                Ok(d) => d,
                Err(e) => return self.err(key, v.span(), e),
            },
            other => {
                return self.err(
                    key,
                    v.span(),
                    format!("expected a duration such as \"5s\", found {other}"),
                );
            }
        };
        if d < min {
            return self.err(
                key,
                v.span(),
                format!("{d:?} is too short (at least {min:?})"),
            );
        }
        Ok(d)
    }

    fn int(&self, key: &str, v: &Spanned<i64>, range: Range<i64>) -> Result<u32, ConfigError> {
        let n = *v.get_ref();
        if !range.contains(&n) {
            let (lo, hi) = (range.start, range.end - 1);
            return self.err(key, v.span(), format!("{n} is out of range ({lo}..={hi})"));
        }
        Ok(n as u32)
    }

    fn addr(&self, key: &str, v: &Spanned<String>) -> Result<SocketAddr, ConfigError> {
        v.get_ref().parse().or_else(|_| {
            self.err(
                key,
                v.span(),
                format!(
                    "{:?} is not an IP:PORT address (IPv6 as [::1]:80)",
                    v.get_ref()
                ),
            )
        })
    }
}

/// A duration: an integer and a unit, `ms`, `s`, `m` or `h` (`"500ms"`,
/// `"30s"`, `"2m"`); a bare integer is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = s.split_at(digits);
    let n: u64 = num.parse().map_err(|_| {
        format!("{s:?} is not a duration (expected e.g. \"500ms\", \"5s\", \"2m\")")
    })?;
    let d = match unit.trim() {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        u => {
            return Err(format!(
                "{s:?} has an unknown unit {u:?} (use ms, s, m or h)"
            ))
        }
    };
    Ok(d)
}

pub(super) fn from_toml(text: &str) -> Result<Config, ConfigError> {
    let raw: Raw = toml::from_str(text).map_err(|e| ConfigError {
        file: None,
        line: e.span().map(|s| Src(text).line(s)),
        key: None,
        message: e.message().trim().to_owned(),
    })?;
    let src = Src(text);
    let Some(listen) = &raw.listen else {
        return Err(ConfigError::new(
            "listen",
            "missing: the address clients connect to",
        ));
    };
    let mut c = Config::simple_unchecked(src.addr("listen", listen)?);
    if let Some(a) = &raw.admin {
        c.admin = Some(src.addr("admin", a)?);
    }
    if let Some(s) = &raw.scheduler {
        c.scheduler = s.get_ref().trim().to_owned();
    }
    if let Some(k) = &raw.hash_key {
        match KeyTemplate::parse(k.get_ref()) {
            Ok(t) => c.hash_key = Some(t),
            Err(e) => return src.err("hash_key", k.span(), e.to_string()),
        }
    }
    if let Some(h) = &raw.host {
        c.host = match h.get_ref().as_str() {
            "preserve" => HostHeader::Preserve,
            "backend" => HostHeader::Backend,
            v => match v.parse() {
                Ok(v) if !h.get_ref().is_empty() => HostHeader::Fixed(v),
                _ => return src.err("host", h.span(), format!("{v:?} is not a valid Host value")),
            },
        };
    }
    c.forwarded_headers = raw.forwarded_headers.unwrap_or(true);
    if let Some(k) = &raw.upstream_send_buffer_kib {
        c.upstream_send_buffer_kib = src.int("upstream_send_buffer_kib", k, 0..65_537)?;
    }
    if let Some(p) = &raw.persistence {
        c.persistence = Some(persistence(&src, p)?);
    }
    if let Some(t) = &raw.timeouts {
        c.timeouts = timeouts(&src, t)?;
    }
    if let Some(l) = &raw.limits {
        c.limits = limits(&src, l)?;
    }
    if let Some(r) = &raw.retry {
        c.retry = retry(&src, r)?;
    }
    if let Some(h) = &raw.health {
        c.health = health(&src, h)?;
    }
    let mut lines = Lines {
        scheduler: raw.scheduler.as_ref().map(|s| src.line(s.span())),
        backends: Vec::new(),
    };
    for (i, b) in raw.backend.iter().enumerate() {
        lines.backends.push(src.line(b.addr.span()));
        c.backends.push(backend(&src, i, b)?);
    }
    check(&c, Some(&lines))?;
    Ok(c)
}

fn backend(src: &Src<'_>, i: usize, b: &RawBackend) -> Result<BackendConfig, ConfigError> {
    let key = |k: &str| format!("backend[{i}].{k}");
    let addr = src.addr(&key("addr"), &b.addr)?;
    let name = match &b.name {
        Some(n) if n.get_ref().trim().is_empty() => {
            return src.err(&key("name"), n.span(), "empty name")
        }
        Some(n) => n.get_ref().clone(),
        None => addr.to_string(),
    };
    let weight = match &b.weight {
        Some(w) => src.int(&key("weight"), w, 0..i64::from(MAX_WEIGHT) + 1)?,
        None => 1,
    };
    let max_conns = match &b.max_conns {
        Some(m) => src.int(&key("max_conns"), m, 0..i64::from(MAX_CONNS) + 1)?,
        None => 0,
    };
    Ok(BackendConfig {
        name,
        addr,
        weight,
        backup: b.backup.unwrap_or(false),
        down: b.down.unwrap_or(false),
        max_conns,
        server_text: None,
    })
}

fn persistence(src: &Src<'_>, p: &RawPersistence) -> Result<Persistence, ConfigError> {
    let timeout = src.duration("persistence.timeout", &p.timeout, Duration::from_secs(1))?;
    let netmask = match &p.netmask {
        None => Ipv4Addr::BROADCAST,
        Some(m) => match m.get_ref().parse::<Ipv4Addr>() {
            Ok(ip) if u32::from(ip).leading_ones() + u32::from(ip).trailing_zeros() == 32 => ip,
            _ => {
                let msg = format!(
                    "{:?} is not an IPv4 netmask such as 255.255.255.0",
                    m.get_ref()
                );
                return src.err("persistence.netmask", m.span(), msg);
            }
        },
    };
    Ok(Persistence {
        timeout,
        netmask,
        expire_quiescent: p.expire_quiescent.unwrap_or(false),
    })
}

fn timeouts(src: &Src<'_>, t: &RawTimeouts) -> Result<Timeouts, ConfigError> {
    let mut out = Timeouts::default();
    let min = Duration::from_millis(1);
    let fields = [
        ("timeouts.connect", &t.connect, &mut out.connect),
        ("timeouts.response", &t.response, &mut out.response),
        ("timeouts.idle", &t.idle, &mut out.idle),
        (
            "timeouts.client_header",
            &t.client_header,
            &mut out.client_header,
        ),
        ("timeouts.client_body", &t.client_body, &mut out.client_body),
        ("timeouts.tunnel", &t.tunnel, &mut out.tunnel),
    ];
    for (key, raw, slot) in fields {
        if let Some(v) = raw {
            *slot = src.duration(key, v, min)?;
        }
    }
    Ok(out)
}

fn limits(src: &Src<'_>, l: &RawLimits) -> Result<ClientLimits, ConfigError> {
    let mut out = ClientLimits::default();
    let fields = [
        (
            "limits.max_connections",
            &l.max_connections,
            &mut out.max_connections,
            0..10_000_001,
        ),
        (
            "limits.max_uri_bytes",
            &l.max_uri_bytes,
            &mut out.max_uri_bytes,
            64..65_535,
        ),
        (
            "limits.max_header_bytes",
            &l.max_header_bytes,
            &mut out.max_header_bytes,
            1024..262_145,
        ),
        (
            "limits.max_headers",
            &l.max_headers,
            &mut out.max_headers,
            1..1001,
        ),
        (
            "limits.max_body_mib",
            &l.max_body_mib,
            &mut out.max_body_mib,
            0..1_048_577,
        ),
    ];
    for (key, raw, slot, range) in fields {
        if let Some(v) = raw {
            *slot = src.int(key, v, range)?;
        }
    }
    Ok(out)
}

fn retry(src: &Src<'_>, r: &RawRetry) -> Result<Retry, ConfigError> {
    let mut out = Retry::default();
    if let Some(t) = &r.tries {
        out = out.tries(src.int("retry.tries", t, 1..MAX_TRIES as i64 + 1)? as usize);
    }
    if let Some(t) = &r.timeout {
        out = out.timeout(src.duration("retry.timeout", t, Duration::from_millis(1))?);
    }
    out = out.on_error(r.on_error.unwrap_or(true));
    if let Some(s) = &r.on_status {
        let codes: Vec<u16> = s
            .get_ref()
            .iter()
            .map(|c| u16::try_from(*c).unwrap_or(0))
            .collect();
        out = match out.on_status(&codes) {
            Ok(o) => o,
            Err(e) => return src.err("retry.on_status", s.span(), e),
        };
    }
    Ok(out)
}

fn health(src: &Src<'_>, h: &RawHealth) -> Result<HealthSettings, ConfigError> {
    let mut out = HealthSettings {
        enabled: true,
        ..HealthSettings::default()
    };
    let min = Duration::from_millis(1);
    if let Some(v) = &h.interval {
        out.interval = src.duration("health.interval", v, min)?;
    }
    if let Some(v) = &h.timeout {
        out.timeout = src.duration("health.timeout", v, min)?;
    }
    if let Some(v) = &h.rise {
        out.rise = src.int("health.rise", v, 1..1001)?;
    }
    if let Some(v) = &h.fall {
        out.fall = src.int("health.fall", v, 1..1001)?;
    }
    if let Some(v) = &h.fastinter {
        out.fastinter = Some(src.duration("health.fastinter", v, min)?);
    }
    if let Some(v) = &h.downinter {
        out.downinter = Some(src.duration("health.downinter", v, min)?);
    }
    if let Some(v) = &h.slow_response {
        out.slow_response = Some(src.duration("health.slow_response", v, Duration::ZERO)?);
    }
    if let Some(p) = &h.path {
        if !p.get_ref().starts_with('/') {
            return src.err(
                "health.path",
                p.span(),
                format!("{:?} must start with /", p.get_ref()),
            );
        }
        out.path = Some(p.get_ref().clone());
    }
    if let Some(v) = &h.max_fails {
        out.max_fails = src.int("health.max_fails", v, 0..1_000_001)?;
    }
    if let Some(v) = &h.fail_timeout {
        out.fail_timeout = src.duration("health.fail_timeout", v, min)?;
    }
    Ok(out)
}

/// Lines of the values checked across fields.
pub(super) struct Lines {
    scheduler: Option<usize>,
    backends: Vec<usize>,
}

/// Checks across fields: the scheduler builds, backend names are unique,
/// backup servers and connection limits only with schedulers that honour
/// them, at least one backend.
pub(super) fn check(c: &Config, lines: Option<&Lines>) -> Result<(), ConfigError> {
    let line_of = |i: usize| lines.and_then(|l| l.backends.get(i).copied());
    let sched = lb_sched::build(&c.scheduler).map_err(|e| ConfigError {
        line: lines.and_then(|l| l.scheduler),
        ..ConfigError::new("scheduler", e.to_string())
    })?;
    if c.backends.is_empty() {
        return Err(ConfigError::new(
            "backend",
            "no backend configured (add a [[backend]] table)",
        ));
    }
    for (i, b) in c.backends.iter().enumerate() {
        let at = |key: &str, message: String| ConfigError {
            line: line_of(i),
            ..ConfigError::new(format!("backend[{i}].{key}"), message)
        };
        if let Some(first) = c.backends[..i].iter().position(|o| o.name == b.name) {
            let msg = format!(
                "duplicate backend name {:?} (also backend[{first}])",
                b.name
            );
            return Err(at("name", msg));
        }
        let features = sched.features();
        if b.backup && !features.backup {
            let msg = format!("scheduler {} does not support backup servers", sched.name());
            return Err(at("backup", msg));
        }
        if b.max_conns > 0 && !features.max_conns {
            let msg = format!("scheduler {} does not support max_conns", sched.name());
            return Err(at("max_conns", msg));
        }
    }
    Ok(())
}

impl Config {
    pub(super) fn simple_unchecked(listen: SocketAddr) -> Config {
        Config {
            listen,
            admin: None,
            scheduler: "wrr".to_owned(),
            hash_key: None,
            host: HostHeader::Preserve,
            forwarded_headers: true,
            upstream_send_buffer_kib: super::DEFAULT_SEND_BUFFER_KIB,
            persistence: None,
            timeouts: Timeouts::default(),
            limits: ClientLimits::default(),
            retry: Retry::default(),
            health: HealthSettings::default(),
            backends: Vec::new(),
            keepalive: None,
        }
    }
}

/// A backend on the command line: `ADDR[,weight=N][,name=NAME][,backup]
/// [,down][,max_conns=N]`.
impl FromStr for BackendConfig {
    type Err = ConfigError;

    fn from_str(spec: &str) -> Result<Self, ConfigError> {
        let bad = |msg: String| ConfigError::new(format!("backend {spec:?}"), msg);
        let mut items = spec.split(',').map(str::trim);
        let addr_text = items.next().unwrap_or("");
        let addr: SocketAddr = addr_text
            .parse()
            .map_err(|_| bad(format!("{addr_text:?} is not an IP:PORT address")))?;
        let mut b = BackendConfig {
            name: addr.to_string(),
            addr,
            weight: 1,
            backup: false,
            down: false,
            max_conns: 0,
            server_text: None,
        };
        for item in items {
            let (k, v) = match item.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim())),
                None => (item, None),
            };
            let num = |max: u32| -> Result<u32, ConfigError> {
                v.and_then(|v| v.parse::<u32>().ok())
                    .filter(|n| *n <= max)
                    .ok_or_else(|| bad(format!("{k} needs a number in 0..={max}, got {item:?}")))
            };
            match (k, v) {
                ("weight", Some(_)) => b.weight = num(MAX_WEIGHT)?,
                ("max_conns", Some(_)) => b.max_conns = num(MAX_CONNS)?,
                ("name", Some(n)) if !n.is_empty() => b.name = n.to_owned(),
                ("backup", None) => b.backup = true,
                ("down", None) => b.down = true,
                _ => {
                    let msg = format!(
                        "unknown option {item:?} (known: weight=N, name=NAME, backup, down, max_conns=N)"
                    );
                    return Err(bad(msg));
                }
            }
        }
        Ok(b)
    }
}
