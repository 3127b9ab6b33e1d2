//! Active checks: the [`Checker`] trait and the built-in TCP, HTTP and
//! command checks.

mod command;
mod http;
mod response;
mod tcp;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use tokio::time::Instant;

pub use command::CommandCheck;
pub use http::HttpCheck;
pub use tcp::TcpCheck;

/// The future a [`Checker`] returns.
pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = Result<(), CheckError>> + Send + 'a>>;

/// One kind of active check: probe a backend once, say whether it is healthy.
///
/// Object-safe (checks are stored as `Arc<dyn Checker>`), async through a
/// boxed future. The runner applies the timeout (dropping the future), the
/// rise/fall counting and the schedule; a checker only probes.
///
/// ```
/// use lb_health::{CheckError, CheckFuture, Checker, Target};
///
/// /// Healthy when the backend's port is even (a stand-in for a real probe).
/// #[derive(Debug)]
/// struct EvenPort;
///
/// impl Checker for EvenPort {
///     fn check<'a>(&'a self, target: &'a Target) -> CheckFuture<'a> {
///         Box::pin(async move {
///             if target.addr().port() % 2 == 0 {
///                 Ok(())
///             } else {
///                 Err(CheckError::other("odd port"))
///             }
///         })
///     }
///     fn name(&self) -> &str {
///         "even-port"
///     }
/// }
/// ```
pub trait Checker: Send + Sync + fmt::Debug {
    /// Probe `target` once: `Ok` when healthy.
    fn check<'a>(&'a self, target: &'a Target) -> CheckFuture<'a>;

    /// A short name for logs and events (`"tcp"`, `"http"`, ...).
    fn name(&self) -> &str {
        "custom"
    }

    /// What makes two checks the same probe. A shared [`Prober`](crate::Prober)
    /// runs one probe per `(address, key)`, whatever the number of pools
    /// that check that address; `None` (the default) never shares.
    fn key(&self) -> Option<String> {
        None
    }
}

/// What a check probes: a backend's address and name, and when the check
/// was due.
#[derive(Clone, Debug)]
pub struct Target {
    addr: SocketAddr,
    name: Arc<str>,
    due: Instant,
}

impl Target {
    /// A target due now.
    pub fn new(addr: SocketAddr, name: impl Into<Arc<str>>) -> Self {
        Target {
            addr,
            name: name.into(),
            due: Instant::now(),
        }
    }

    pub(crate) fn with_due(mut self, due: Instant) -> Self {
        self.due = due;
        self
    }

    /// The backend's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The backend's name (of the first pool that asked, when a probe is shared).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// When the check was due: `Instant::now() - due()` at the start of
    /// `check` is how late the check runs.
    pub fn due(&self) -> Instant {
        self.due
    }
}

/// What kind of failure a check met.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureKind {
    /// The TCP connection could not be made.
    Connect,
    /// The check took longer than its timeout.
    Timeout,
    /// The answer was not valid (HTTP syntax, early close, I/O error).
    Protocol,
    /// The HTTP status was outside the expected range.
    Status,
    /// The HTTP body did not contain the expected text.
    Body,
    /// The command exited with a non-zero status, was killed, or could not start.
    Exit,
    /// Anything else (custom checks).
    Other,
}

/// Why a check failed, in words a person understands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckError {
    kind: FailureKind,
    message: Arc<str>,
}

impl CheckError {
    /// A failure of `kind` saying `message`.
    pub fn new(kind: FailureKind, message: impl Into<Arc<str>>) -> Self {
        CheckError {
            kind,
            message: message.into(),
        }
    }

    /// A failure of kind [`FailureKind::Other`].
    pub fn other(message: impl Into<Arc<str>>) -> Self {
        Self::new(FailureKind::Other, message)
    }

    /// The kind of failure.
    pub fn kind(&self) -> FailureKind {
        self.kind
    }

    /// What happened.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn message_arc(&self) -> Arc<str> {
        self.message.clone()
    }
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CheckError {}

/// A check to run: one of the built-in kinds or any [`Checker`].
///
/// ```
/// use lb_health::Check;
/// let tcp = Check::tcp();
/// let http: Check = Check::http("/healthz").status(200..=299).body_contains("ok").into();
/// let script: Check = Check::command("test -f /etc/ready").into();
/// assert_eq!((tcp.name(), http.name(), script.name()), ("tcp", "http", "command"));
/// ```
#[derive(Clone, Debug)]
pub struct Check(Arc<dyn Checker>);

impl Check {
    /// A TCP connect to the backend's address (a port check).
    pub fn tcp() -> Check {
        Check(Arc::new(TcpCheck))
    }

    /// An HTTP/1.1 `GET path`; configure it further on the returned
    /// [`HttpCheck`] (host, status range, body text).
    pub fn http(path: impl Into<Arc<str>>) -> HttpCheck {
        HttpCheck::new(path)
    }

    /// A shell command (`sh -c`) whose exit status decides; see [`CommandCheck`].
    pub fn command(command: impl Into<Arc<str>>) -> CommandCheck {
        CommandCheck::new(command)
    }

    /// Any checker.
    pub fn custom(checker: impl Checker + 'static) -> Check {
        Check(Arc::new(checker))
    }

    /// The check's name.
    pub fn name(&self) -> &str {
        self.0.name()
    }

    pub(crate) fn inner(&self) -> Arc<dyn Checker> {
        self.0.clone()
    }
}

impl Checker for Check {
    fn check<'a>(&'a self, target: &'a Target) -> CheckFuture<'a> {
        self.0.check(target)
    }

    fn name(&self) -> &str {
        self.0.name()
    }

    fn key(&self) -> Option<String> {
        self.0.key()
    }
}

/// A shared checker is a checker (so a test or an application can keep a
/// handle on the checker it gives away).
impl<C: Checker + ?Sized> Checker for Arc<C> {
    fn check<'a>(&'a self, target: &'a Target) -> CheckFuture<'a> {
        (**self).check(target)
    }

    fn name(&self) -> &str {
        (**self).name()
    }

    fn key(&self) -> Option<String> {
        (**self).key()
    }
}

impl From<Arc<dyn Checker>> for Check {
    fn from(c: Arc<dyn Checker>) -> Self {
        Check(c)
    }
}

impl From<TcpCheck> for Check {
    fn from(c: TcpCheck) -> Self {
        Check(Arc::new(c))
    }
}

impl From<HttpCheck> for Check {
    fn from(c: HttpCheck) -> Self {
        Check(Arc::new(c))
    }
}

impl From<CommandCheck> for Check {
    fn from(c: CommandCheck) -> Self {
        Check(Arc::new(c))
    }
}
