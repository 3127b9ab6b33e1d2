//! Configuration of an HTTP load balancer, nginx-upstream-like, from TOML
//! or command-line backend specs.
//!
//! ```toml
//! listen = "127.0.0.1:8080"
//! admin = "127.0.0.1:8081"          # status, metrics and runtime changes
//! scheduler = "wrr"                 # a registry spec: "rr", "sh port fallback"...
//! hash_key = "$remote_addr"         # the key hashing schedulers use (optional)
//! host = "preserve"                 # "preserve", "backend", or a fixed Host value
//! forwarded_headers = true          # X-Forwarded-For, X-Forwarded-Proto, Forwarded
//! upstream_send_buffer_kib = 1024   # SO_SNDBUF of backend connections (0 = kernel autotuning)
//!
//! [persistence]                     # LVS -p (optional)
//! timeout = "300s"
//! netmask = "255.255.255.255"
//!
//! [timeouts]
//! connect = "5s"                    # proxy_connect_timeout
//! response = "60s"                  # until the response head
//! idle = "60s"                      # between body pieces; idle keep-alive
//! client_header = "10s"             # a client's request head (408 after)
//! client_body = "60s"               # between two reads of a request body (408 after)
//! tunnel = "1h"                     # a WebSocket/Upgrade tunnel silent both ways is closed
//!
//! [limits]                          # on clients, checked before hyper reads
//! max_connections = 10000           # open at once; beyond, accepting pauses (0 = no limit)
//! max_uri_bytes = 8192              # the request target: 414 beyond
//! max_header_bytes = 32768          # the header block: 431 beyond
//! max_headers = 100                 # header fields: 431 beyond
//! max_body_mib = 0                  # a request body, MiB (client_max_body_size): 413 beyond (0 = no limit)
//!
//! [retry]                           # proxy_next_upstream*
//! tries = 3
//! timeout = "10s"
//! on_error = true
//! on_status = [502, 503, 504]
//!
//! [health]                          # active and passive checks
//! interval = "2s"
//! timeout = "1s"
//! rise = 2
//! fall = 3
//! fastinter = "500ms"               # in transition; default interval / 4
//! downinter = "2s"                  # while down; default interval
//! path = "/health"
//! max_fails = 1
//! fail_timeout = "10s"
//! slow_response = "1s"              # eject on a late response head; default timeout, 0 = off
//!
//! [[backend]]
//! name = "web1"                     # defaults to the address
//! addr = "127.0.0.1:9001"
//! weight = 2                        # 0..=65535, default 1
//! backup = false                    # used only when no primary is usable
//! down = false                      # starts down
//! max_conns = 0                     # 0 = no limit
//! ```
//!
//! Durations are numbers with a unit (`500ms`, `5s`, `2m`, `1h`) or plain
//! integers (seconds). Every mistake is an error naming the file, the line,
//! the key and the problem; unknown keys are refused.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use lb_core::{Backend, Health, Pool, PoolError};
use lb_sched::Balancer;

use crate::http::{ForwardConfig, HostHeader, Limits, Server};
use crate::key::KeyTemplate;
use crate::pick::{BalanceLayer, Retry};

mod health;
mod parse;
#[cfg(test)]
mod tests;

pub use health::RunningHealth;
pub use parse::parse_duration;

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where clients connect.
    pub listen: SocketAddr,
    /// Where the admin API listens, if anywhere.
    pub admin: Option<SocketAddr>,
    /// The scheduler spec, as the `lb_sched` registry takes it (checked).
    pub scheduler: String,
    /// The hash key template, if any.
    pub hash_key: Option<KeyTemplate>,
    /// The Host header sent to backends.
    pub host: HostHeader,
    /// Whether to add `X-Forwarded-*` and `Forwarded`.
    pub forwarded_headers: bool,
    /// The send buffer of connections to backends in KiB (0: the kernel's
    /// autotuning); see [`ForwardConfig::upstream_send_buffer`].
    pub upstream_send_buffer_kib: u32,
    /// LVS-style persistence, if asked for.
    pub persistence: Option<Persistence>,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Limits on clients.
    pub limits: ClientLimits,
    /// When to try the next backend.
    pub retry: Retry,
    /// Health checking settings.
    pub health: HealthSettings,
    /// The backends, in pool order.
    pub backends: Vec<BackendConfig>,
    /// Idle keep-alive connections kept per backend (nginx `keepalive N`);
    /// the forwarder's default when absent.
    pub keepalive: Option<usize>,
}

/// The default of [`Config::upstream_send_buffer_kib`]: [`ForwardConfig`]'s.
pub const DEFAULT_SEND_BUFFER_KIB: u32 = 1024;

/// LVS persistence (`ipvsadm -p TIMEOUT -M NETMASK`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Persistence {
    /// How long a client's template outlives its last connection.
    pub timeout: Duration,
    /// The client netmask templates key on.
    pub netmask: Ipv4Addr,
    /// Drop templates pointing at a quiesced (weight 0) backend.
    pub expire_quiescent: bool,
}

impl Persistence {
    /// The `persist` line of the scheduler replay format for these settings.
    pub fn spec(&self) -> String {
        let mut s = format!(
            "persist {} netmask={}",
            self.timeout.as_secs(),
            self.netmask
        );
        if self.expire_quiescent {
            s.push_str(" expire_quiescent");
        }
        s
    }
}

/// Timeouts of the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Connecting to a backend.
    pub connect: Duration,
    /// Waiting for a backend's response head.
    pub response: Duration,
    /// Silence inside a response body; idle keep-alive to backends.
    pub idle: Duration,
    /// Waiting for a client's request head (408 when it runs out).
    pub client_header: Duration,
    /// Waiting for the next piece of a client's request body (nginx
    /// `client_body_timeout`; 408 when it runs out).
    pub client_body: Duration,
    /// Silence both ways on an upgraded (WebSocket) tunnel before it is
    /// closed (HAProxy `timeout tunnel`).
    pub tunnel: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            response: Duration::from_secs(60),
            idle: Duration::from_secs(60),
            client_header: Duration::from_secs(10),
            client_body: Duration::from_secs(60),
            tunnel: Duration::from_secs(3600),
        }
    }
}

/// Limits on clients, as [`Limits`] (whose header read timeout is
/// [`Timeouts::client_header`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientLimits {
    /// Client connections open at once (0 = no limit).
    pub max_connections: u32,
    /// The longest request target, `64..=65534` bytes.
    pub max_uri_bytes: u32,
    /// The longest header block, `1024..=262144` bytes.
    pub max_header_bytes: u32,
    /// The most header fields, `1..=1000`.
    pub max_headers: u32,
    /// The largest request body in MiB, as nginx's `client_max_body_size`
    /// (0 = no limit, the default).
    pub max_body_mib: u32,
}

impl Default for ClientLimits {
    fn default() -> Self {
        let l = Limits::default();
        let int = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        ClientLimits {
            max_connections: l.max_connections.map_or(0, int),
            max_uri_bytes: int(l.max_uri_bytes),
            max_header_bytes: int(l.max_header_bytes),
            max_headers: int(l.max_headers),
            max_body_mib: 0,
        }
    }
}

/// Health checking settings: active probes (`interval`, `timeout`, `rise`,
/// `fall`, `fastinter`, `downinter`, `path`) as keepalived and HAProxy,
/// passive ones (`max_fails` within `fail_timeout`) as nginx.
///
/// With active checks, the checks decide when a passively ejected backend
/// returns (as HAProxy): it is probed at `fastinter` and back after `rise`
/// successes, without waiting for `fail_timeout` (which governs only
/// without active checks, as in nginx); and a request still waiting for
/// its response head after `slow_response` ejects its backend at once, for
/// the checks to confirm or undo (see
/// [`PassiveHealth`](lb_health::PassiveHealth)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthSettings {
    /// Whether active checks run (true when a `[health]` section is given).
    pub enabled: bool,
    /// Time between probes.
    pub interval: Duration,
    /// Limit on one probe.
    pub timeout: Duration,
    /// Successes in a row that bring a backend up.
    pub rise: u32,
    /// Failures in a row that take a backend down.
    pub fall: u32,
    /// Time between probes of a backend in transition (HAProxy
    /// `fastinter`); a quarter of `interval` when unset.
    pub fastinter: Option<Duration>,
    /// Time between probes of a backend that is down (HAProxy
    /// `downinter`); `interval` when unset.
    pub downinter: Option<Duration>,
    /// With active checks: how long a request may wait for its response
    /// head before its backend is ejected (the probe `timeout` when unset;
    /// zero turns it off). Only effective below the response timeout.
    /// Set it above your longest legitimate wait (long polling).
    pub slow_response: Option<Duration>,
    /// The path an HTTP probe GETs; none means a TCP connect probe.
    pub path: Option<String>,
    /// Failed requests within `fail_timeout` that take a backend out (0 = never).
    pub max_fails: u32,
    /// The window for `max_fails`, and how long the backend stays out.
    pub fail_timeout: Duration,
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            enabled: false,
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 3,
            fastinter: None,
            downinter: None,
            slow_response: None,
            path: None,
            max_fails: 1,
            fail_timeout: Duration::from_secs(10),
        }
    }
}

/// One backend of the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendConfig {
    /// The name (defaults to the address).
    pub name: String,
    /// The address.
    pub addr: SocketAddr,
    /// The weight, `0..=65535`.
    pub weight: u32,
    /// A backup server.
    pub backup: bool,
    /// Starts down.
    pub down: bool,
    /// Connection limit (0 = none).
    pub max_conns: u32,
    /// The server text consistent hashing hashes (nginx's `server`
    /// argument as written); the address when absent.
    pub server_text: Option<String>,
}

impl BackendConfig {
    /// The backend as the pool takes it.
    pub fn to_backend(&self) -> Backend {
        let health = if self.down { Health::Down } else { Health::Up };
        let b = Backend::new(self.name.as_str(), self.addr)
            .with_weight(u64::from(self.weight))
            .with_backup(self.backup)
            .with_health(health)
            .with_max_conns(u64::from(self.max_conns));
        match &self.server_text {
            Some(t) => b.with_server_text(t.as_str()),
            None => b,
        }
    }
}

/// A configuration mistake: where it is and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, when the configuration came from one.
    pub file: Option<String>,
    /// The line (1-based), when known.
    pub line: Option<usize>,
    /// The key (`backend[1].weight`), when the mistake is in one value.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            file: None,
            line: None,
            key: Some(key.into()),
            message: message.into(),
        }
    }

    fn in_file(mut self, file: Option<&Path>) -> Self {
        self.file = file.map(|f| f.display().to_string());
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{file}:{line}: ")?,
            (Some(file), None) => write!(f, "{file}: ")?,
            (None, Some(line)) => write!(f, "line {line}: ")?,
            (None, None) => {}
        }
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Read and check a TOML file; errors name the file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: Some(path.display().to_string()),
            line: None,
            key: None,
            message: format!("cannot read: {e}"),
        })?;
        Self::from_toml(&text).map_err(|e| e.in_file(Some(path)))
    }

    /// Parse and check TOML text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        parse::from_toml(text)
    }

    /// A configuration for the simple case: a listener, backends, a scheduler.
    pub fn simple(
        listen: SocketAddr,
        backends: Vec<BackendConfig>,
        scheduler: &str,
    ) -> Result<Config, ConfigError> {
        let mut c = Config::simple_unchecked(listen);
        c.scheduler = scheduler.trim().to_owned();
        c.backends = backends;
        parse::check(&c, None)?;
        Ok(c)
    }

    /// A pool holding the backends, in order.
    pub fn pool(&self) -> Result<Pool, PoolError> {
        let pool = Pool::new();
        pool.batch(|b| {
            for be in &self.backends {
                b.add(be.to_backend())?;
            }
            Ok(())
        })?;
        Ok(pool)
    }

    /// A configuration serving an nginx `upstream { ... }` block on
    /// `listen`: its servers, method, hash key and passive health settings
    /// (`max_fails` / `fail_timeout` of its first server; nginx keeps them per
    /// server, this toolkit per pool).
    pub fn from_nginx(
        up: &crate::nginx_conf::Upstream,
        listen: SocketAddr,
    ) -> Result<Config, ConfigError> {
        let mut c = Config::simple_unchecked(listen);
        c.scheduler = up.sched_spec().to_owned();
        if let Some(k) = up.hash_key() {
            c.hash_key = Some(
                KeyTemplate::parse(k)
                    .map_err(|e| ConfigError::new("hash", format!("{k:?}: {e}")))?,
            );
        }
        let pool = up
            .to_pool()
            .map_err(|e| ConfigError::new(format!("upstream {}", up.name), e.to_string()))?;
        c.backends = pool
            .load()
            .members()
            .iter()
            .map(|m| BackendConfig {
                name: m.name().to_owned(),
                addr: m.addr(),
                weight: m.configured_weight(),
                backup: m.is_backup(),
                down: !m.is_up(),
                max_conns: m.max_conns(),
                server_text: Some(m.server_text().to_owned()),
            })
            .collect();
        if let Some(first) = up.servers.first() {
            c.health.max_fails = first.max_fails;
            c.health.fail_timeout = first.fail_timeout;
        }
        // nginx tries every server of the upstream once per request at most.
        c.retry = c.retry.tries(up.servers.len());
        c.keepalive = up.keepalive.map(|n| n as usize);
        parse::check(&c, None)?;
        Ok(c)
    }

    /// The pool with its scheduler attached (wrapped in LVS persistence
    /// when [`persistence`](Self::persistence) is set).
    pub fn balancer(&self) -> Result<Balancer, ConfigError> {
        let mut sched = lb_sched::build(&self.scheduler)
            .map_err(|e| ConfigError::new("scheduler", e.to_string()))?;
        if let Some(p) = &self.persistence {
            sched = Box::new(
                lb_sched::Persist::new(sched, p.timeout)
                    .with_netmask(p.netmask)
                    .with_expire_quiescent(p.expire_quiescent),
            );
        }
        let pool = self
            .pool()
            .map_err(|e| ConfigError::new("backend", e.to_string()))?;
        Ok(Balancer::new(pool, sched))
    }

    /// The balancing layer: key, retry policy (add an observer yourself).
    pub fn balance_layer(&self, lb: Balancer) -> BalanceLayer {
        let layer = BalanceLayer::new(lb).retry(self.retry);
        match &self.hash_key {
            Some(k) => layer.key(k.clone()),
            None => layer,
        }
    }

    /// The server for clients, with the client limits and header timeout.
    pub fn server(&self) -> Server {
        let l = &self.limits;
        Server::new().with_limits(Limits {
            header_read_timeout: Some(self.timeouts.client_header),
            client_body_timeout: Some(self.timeouts.client_body),
            max_uri_bytes: l.max_uri_bytes as usize,
            max_header_bytes: l.max_header_bytes as usize,
            max_headers: l.max_headers as usize,
            max_connections: (l.max_connections > 0).then_some(l.max_connections as usize),
            max_body_bytes: (l.max_body_mib > 0).then_some(u64::from(l.max_body_mib) << 20),
        })
    }

    /// The forwarding settings.
    pub fn forward_config(&self) -> ForwardConfig {
        ForwardConfig {
            connect_timeout: Some(self.timeouts.connect),
            response_timeout: Some(self.timeouts.response),
            idle_timeout: Some(self.timeouts.idle),
            tunnel_timeout: Some(self.timeouts.tunnel),
            host: self.host.clone(),
            forwarded_headers: self.forwarded_headers,
            max_idle_per_backend: self
                .keepalive
                .unwrap_or(ForwardConfig::default().max_idle_per_backend),
            slow_response: None,
            h1_client: true,
            upstream_send_buffer: (self.upstream_send_buffer_kib > 0)
                .then_some(self.upstream_send_buffer_kib << 10),
        }
    }
}
