//! The engine of `sched_replay`: scripted scenarios run through the real
//! schedulers of `lb-sched`, one decision printed per connection.
//!
//! The format is the contract of `SCHEDULERS.md` ("The replay format") and
//! `SCHEDULERS-NGINX.md` (section 2); [`FORMAT`] summarises it. Schedulers
//! are built only through [`lb_sched::build_with`] and wrapped in
//! [`lb_sched::Persist`] for `persist`: this module holds no scheduling
//! logic. It drives a [`Pool`] exactly as a proxy would: every `conn` builds
//! a [`Ctx`], asks the scheduler for a pick on the current snapshot and
//! opens a counted connection whose guard lives until `close`.
//!
//! ```
//! let trace = "sched wrr\nbackend a 10.0.0.1:80 weight=2\nbackend b 10.0.0.2:80\n\
//!              conn 1 192.0.2.1:1000\nconn 2 192.0.2.1:1001\nconn 3 192.0.2.1:1002\nstats\n";
//! let (mut out, mut err) = (Vec::new(), Vec::new());
//! let status = lb_examples::replay::run(trace, false, &mut out, &mut err);
//! assert_eq!(status, 0);
//! assert_eq!(
//!     String::from_utf8(out).unwrap(),
//!     "1 a\n2 b\n3 a\n\
//!      stats a active=2 inactive=0 weight=2 up\n\
//!      stats b active=1 inactive=0 weight=1 up\n"
//! );
//! ```

use std::collections::HashMap;
use std::fmt;
use std::io::{self, BufRead, Write};
use std::net::Ipv4Addr;
use std::time::Duration;

use lb_core::{Backend, ConnGuard, Ctx, Health, Pool};
use lb_sched::{Balancer, BoxScheduler, Explain, Features, Persist};

mod parse;

use parse::{BackendSpec, Command, ConnSpec, PersistSpec};

/// Exit status of a run that replayed every line.
pub const EXIT_OK: i32 = 0;
/// Exit status when the input could not be read or the output written.
pub const EXIT_IO: i32 = 1;
/// Exit status of a line that breaks the format (reported on stderr).
pub const EXIT_BAD_LINE: i32 = 2;

/// The schedulers whose `conn` lines must carry a destination: they key on it.
const NEEDS_DEST: &[&str] = &["dh", "lblc", "lblcr"];

/// The replay format, as `sched_replay --help` shows it.
pub const FORMAT: &str = "\
THE REPLAY FORMAT
  One command a line; '#' starts a comment; blank lines are ignored.
  Numbers are plain decimal integers; IPv6 endpoints are written [addr]:port.

  sched NAME [FLAG ...] [KEY=VALUE ...]   once, before the first conn
        e.g. sched wlc | sched sh port fallback | sched lblc expire=600
             | sched mh table=251 | sched twos seed=7 | sched hash consistent
  persist SECONDS [netmask=A.B.C.D] [expire_quiescent]
                                  LVS -p: at most once, before the first conn
  backend NAME IP:PORT [weight=N] [backup] [max_conns=N]
                                  add a backend at the end of the pool (weight
                                  0..=65535, default 1; backup only with wrr and
                                  least_conn; max_conns only with the nginx
                                  schedulers); may come after conns too
  conn ID CLIENT_IP:PORT [DEST_IP:PORT] [key=STRING]
                                  a new connection: prints \"ID NAME\", or \"ID -\"
                                  when no backend is eligible; the backend's
                                  active += 1. dh, lblc and lblcr need DEST;
                                  key= (last, at most once) is what hash hashes
  idle ID                         that connection: active -> inactive
  close ID                        that connection ends
  weight NAME N                   change a weight (0 quiesces)
  down NAME | up NAME             change health
  remove NAME                     take a backend out (its conns stay open)
  at SECONDS                      set the clock (starts at 0, never goes back)
  stats                           print \"stats NAME active=A inactive=I weight=W
                                  up|down\" for each backend in pool order

  A bad line (malformed, unknown name or id, a clock going back...) is
  reported on stderr with its line number; the run stops there with exit
  status 2, after the output of the lines before it.

EXAMPLE
  $ cat wlc.trace
  sched wlc
  backend a 10.0.0.1:80 weight=2
  backend b 10.0.0.2:80
  conn 1 192.0.2.1:1000
  conn 2 192.0.2.2:1000
  conn 3 192.0.2.3:1000
  idle 1
  conn 4 192.0.2.4:1000
  stats
  $ sched_replay wlc.trace
  1 a
  2 b
  3 a
  4 a
  stats a active=2 inactive=1 weight=2 up
  stats b active=1 inactive=0 weight=1 up
";

/// A line of the input that breaks the format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// The line number, from 1.
    pub line: usize,
    /// What is wrong, in words.
    pub message: String,
    /// The line as written (without its end of line).
    pub text: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)?;
        if !self.text.trim().is_empty() {
            write!(f, "\n  {:>4} | {}", self.line, self.text)?;
        }
        Ok(())
    }
}

impl std::error::Error for LineError {}

/// Why a replay stopped.
#[derive(Debug)]
pub enum Error {
    /// A line breaks the format.
    Line(LineError),
    /// The input could not be read or the output written.
    Io(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Line(e) => e.fmt(f),
            Error::Io(e) => write!(f, "I/O error: {e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

impl Error {
    /// The exit status this error ends a run with.
    pub fn exit_status(&self) -> i32 {
        match self {
            Error::Line(_) => EXIT_BAD_LINE,
            Error::Io(_) => EXIT_IO,
        }
    }
}

/// How a replay prints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// After each decision, print its explanation (`  # ...` lines).
    pub explain: bool,
    /// Before its output, print each command as `> COMMAND` (comment and
    /// surrounding blanks removed), so that decisions read in context.
    pub echo: bool,
}

/// Replay `input` (the whole text of a trace), writing decisions to `out`
/// and an error, if any, to `err`. Returns the exit status: 0, or 2 for a
/// bad line (whose number `err` names), or 1 for an I/O error.
pub fn run(input: &str, explain: bool, out: &mut impl Write, err: &mut impl Write) -> i32 {
    let options = Options {
        explain,
        echo: false,
    };
    run_reader(input.as_bytes(), None, options, out, err)
}

/// As [`run`], streaming from a reader: each line is replayed (and its
/// output flushed) before the next is read, so an interactive session on
/// stdin answers line by line. `label` (a file name) prefixes error messages.
pub fn run_reader(
    input: impl BufRead,
    label: Option<&str>,
    options: Options,
    out: &mut impl Write,
    err: &mut impl Write,
) -> i32 {
    match Replay::new(options).feed(input, out) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            let status = e.exit_status();
            let broken_pipe = matches!(&e, Error::Io(io) if io.kind() == io::ErrorKind::BrokenPipe);
            if !broken_pipe {
                let _ = match label {
                    Some(l) => writeln!(err, "{l}: {e}"),
                    None => writeln!(err, "{e}"),
                };
            }
            status
        }
    }
}

/// The state of one replay: the pool, the scheduler, the open connections
/// and the clock.
pub struct Replay {
    pool: Pool,
    options: Options,
    why: Explain,
    /// The scheduler from `sched`, built but not yet attached to the pool.
    pending: Option<BoxScheduler>,
    sched: Option<SchedInfo>,
    persist: Option<(usize, PersistSpec)>,
    /// Set at the first `conn`: the scheduler (wrapped by persistence) on the pool.
    balancer: Option<Balancer>,
    conns: HashMap<u64, ConnGuard>,
    now: u64,
    line: usize,
}

#[derive(Clone, Copy)]
struct SchedInfo {
    name: &'static str,
    line: usize,
    features: Features,
    needs_dest: bool,
}

impl fmt::Debug for Replay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replay")
            .field("line", &self.line)
            .field("sched", &self.sched.map(|s| s.name))
            .field("backends", &self.pool.load().len())
            .field("open_conns", &self.conns.len())
            .field("now", &self.now)
            .finish()
    }
}

impl Default for Replay {
    fn default() -> Self {
        Self::new(Options::default())
    }
}

impl Replay {
    /// A fresh replay: empty pool, no scheduler, clock at 0.
    pub fn new(options: Options) -> Self {
        Replay {
            pool: Pool::new(),
            options,
            why: Explain::new(),
            pending: None,
            sched: None,
            persist: None,
            balancer: None,
            conns: HashMap::new(),
            now: 0,
            line: 0,
        }
    }

    /// Replay every line of `input`, flushing `out` after each one.
    pub fn feed(&mut self, mut input: impl BufRead, out: &mut impl Write) -> Result<(), Error> {
        let mut buf = Vec::new();
        loop {
            buf.clear();
            if input.read_until(b'\n', &mut buf)? == 0 {
                return Ok(());
            }
            let number = self.line + 1;
            let text = std::str::from_utf8(&buf).map_err(|_| {
                Error::Line(LineError {
                    line: number,
                    message: "not valid UTF-8".into(),
                    text: String::new(),
                })
            })?;
            self.step(text, out)?;
            out.flush()?;
        }
    }

    /// Replay the next line (numbered one more than the previous).
    pub fn step(&mut self, text: &str, out: &mut impl Write) -> Result<(), Error> {
        self.line += 1;
        let line = self.line;
        let fail = |message: String| {
            Error::Line(LineError {
                line,
                message,
                text: text.trim_end_matches(['\n', '\r']).to_owned(),
            })
        };
        if self.options.echo {
            let command = text.split_once('#').map_or(text, |(c, _)| c).trim();
            if !command.is_empty() {
                writeln!(out, "> {command}")?;
            }
        }
        match parse::parse(text) {
            Ok(None) => Ok(()),
            Ok(Some(cmd)) => match self.apply(cmd, out) {
                Ok(()) => Ok(()),
                Err(Step::Bad(m)) => Err(fail(m)),
                Err(Step::Io(e)) => Err(Error::Io(e)),
            },
            Err(m) => Err(fail(m)),
        }
    }

    fn apply(&mut self, cmd: Command<'_>, out: &mut impl Write) -> Result<(), Step> {
        match cmd {
            Command::Sched { name, options } => self.sched(name, &options)?,
            Command::Persist(spec) => self.persist(spec)?,
            Command::Backend(spec) => self.backend(spec)?,
            Command::Conn(spec) => self.conn(spec, out)?,
            Command::Idle(id) => self.open_conn(id)?.idle(),
            Command::Close(id) => {
                self.open_conn(id)?;
                self.conns.remove(&id);
            }
            Command::Weight(name, w) => {
                let id = self.backend_id(name)?;
                self.pool.set_weight(id, w).map_err(bad)?;
            }
            Command::Down(name) => self.health(name, Health::Down)?,
            Command::Up(name) => self.health(name, Health::Up)?,
            Command::Remove(name) => {
                let id = self.backend_id(name)?;
                self.pool.remove(id).map_err(bad)?;
            }
            Command::At(t) => {
                if t < self.now {
                    return Err(Step::Bad(format!(
                        "the clock cannot go back: at {t} after at {}",
                        self.now
                    )));
                }
                self.now = t;
            }
            Command::Stats => self.stats(out)?,
        }
        Ok(())
    }

    fn sched(&mut self, name: &str, options: &[&str]) -> Result<(), Step> {
        if let Some(s) = self.sched {
            let late = if self.balancer.is_some() {
                ", after the first conn"
            } else {
                ""
            };
            return Err(Step::Bad(format!(
                "sched given twice (first on line {}){late}: sched comes once, before the first conn",
                s.line
            )));
        }
        let sched = lb_sched::build_with(name, options).map_err(bad)?;
        let info = SchedInfo {
            name: sched.name(),
            line: self.line,
            features: sched.features(),
            needs_dest: NEEDS_DEST.contains(&sched.name()),
        };
        for m in self.pool.load().members() {
            check_features(info, m.name(), m.is_backup(), m.max_conns().into())?;
        }
        self.pending = Some(sched);
        self.sched = Some(info);
        Ok(())
    }

    fn persist(&mut self, spec: PersistSpec) -> Result<(), Step> {
        if let Some((line, _)) = self.persist {
            return Err(Step::Bad(format!(
                "persist given twice (first on line {line})"
            )));
        }
        if self.balancer.is_some() {
            return Err(Step::Bad("persist must come before the first conn".into()));
        }
        self.persist = Some((self.line, spec));
        Ok(())
    }

    fn backend(&mut self, spec: BackendSpec<'_>) -> Result<(), Step> {
        if self.pool.find(spec.name).is_some() {
            return Err(Step::Bad(format!(
                "a backend named {:?} is already in the pool",
                spec.name
            )));
        }
        if let Some(info) = self.sched {
            check_features(info, spec.name, spec.backup, spec.max_conns)?;
        }
        let backend = Backend::new(spec.name, spec.addr)
            .with_server_text(spec.text)
            .with_weight(spec.weight)
            .with_backup(spec.backup)
            .with_max_conns(spec.max_conns);
        self.pool.add(backend).map_err(bad)?;
        Ok(())
    }

    fn conn(&mut self, spec: ConnSpec<'_>, out: &mut impl Write) -> Result<(), Step> {
        let info = self
            .sched
            .ok_or_else(|| Step::Bad("conn before any sched line".into()))?;
        if info.needs_dest && spec.dest.is_none() {
            return Err(Step::Bad(format!(
                "scheduler {} keys on the destination: conn ID CLIENT_IP:PORT DEST_IP:PORT",
                info.name
            )));
        }
        if self.conns.contains_key(&spec.id) {
            return Err(Step::Bad(format!("connection {} is still open", spec.id)));
        }
        let balancer = self.attached()?.clone();
        let mut ctx = Ctx::at(spec.client, Duration::from_secs(self.now))
            .with_key(spec.key.unwrap_or("").as_bytes());
        if let Some(dest) = spec.dest {
            ctx = ctx.with_dest(dest);
        }
        let snap = self.pool.load();
        let sched = balancer.scheduler();
        self.why.clear();
        let pick = if self.options.explain {
            sched.explain(&snap, &ctx, &mut self.why)
        } else {
            sched.pick(&snap, &ctx)
        };
        match pick {
            Some(pick) => {
                writeln!(out, "{} {}", spec.id, pick.member().name())?;
                self.conns.insert(spec.id, pick.connect());
            }
            None => writeln!(out, "{} -", spec.id)?,
        }
        for line in self.why.lines() {
            writeln!(out, "  # {line}")?;
        }
        Ok(())
    }

    /// The scheduler on the pool, attached at the first `conn` (so that a
    /// `persist` line may follow `sched`).
    fn attached(&mut self) -> Result<&Balancer, Step> {
        if let Some(inner) = self.pending.take() {
            let sched: BoxScheduler = match self.persist {
                Some((_, p)) => Box::new(
                    Persist::new(inner, Duration::from_secs(p.seconds))
                        .with_netmask(p.netmask.unwrap_or(Ipv4Addr::BROADCAST))
                        .with_expire_quiescent(p.expire_quiescent),
                ),
                None => inner,
            };
            self.balancer = Some(Balancer::new(self.pool.clone(), sched));
        }
        self.balancer
            .as_ref()
            .ok_or_else(|| Step::Bad("conn before any sched line".into()))
    }

    fn open_conn(&mut self, id: u64) -> Result<&mut ConnGuard, Step> {
        self.conns
            .get_mut(&id)
            .ok_or_else(|| Step::Bad(format!("no open connection {id}")))
    }

    fn backend_id(&self, name: &str) -> Result<lb_core::BackendId, Step> {
        self.pool
            .find(name)
            .ok_or_else(|| Step::Bad(format!("no backend named {name:?} in the pool")))
    }

    fn health(&mut self, name: &str, health: Health) -> Result<(), Step> {
        let id = self.backend_id(name)?;
        self.pool.set_health(id, health).map_err(bad)
    }

    fn stats(&self, out: &mut impl Write) -> Result<(), Step> {
        for m in self.pool.load().members() {
            writeln!(
                out,
                "stats {} active={} inactive={} weight={} {}",
                m.name(),
                m.active(),
                m.inactive(),
                m.configured_weight(),
                m.health()
            )?;
        }
        Ok(())
    }
}

/// A step that failed: a bad line, or output that could not be written.
enum Step {
    Bad(String),
    Io(io::Error),
}

impl From<io::Error> for Step {
    fn from(e: io::Error) -> Self {
        Step::Io(e)
    }
}

fn bad(e: impl fmt::Display) -> Step {
    Step::Bad(e.to_string())
}

/// `backup` and `max_conns > 0` only with a scheduler that honours them.
fn check_features(
    info: SchedInfo,
    backend: &str,
    backup: bool,
    max_conns: u64,
) -> Result<(), Step> {
    let (refused, allows): (_, fn(Features) -> bool) = if backup && !info.features.backup {
        ("backup servers", |f| f.backup)
    } else if max_conns > 0 && !info.features.max_conns {
        ("max_conns", |f| f.max_conns)
    } else {
        return Ok(());
    };
    // Name the schedulers that do allow it, as the registry builds them.
    let allowed: Vec<&str> = lb_sched::NAMES
        .iter()
        .copied()
        .filter(|n| lb_sched::build(n).is_ok_and(|s| allows(s.features())))
        .collect();
    Err(Step::Bad(format!(
        "scheduler {} does not allow {refused} (backend {backend:?}); schedulers that do: {}",
        info.name,
        allowed.join(", ")
    )))
}
