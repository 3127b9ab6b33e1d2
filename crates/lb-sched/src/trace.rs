//! Optional explanations of a pick.

use std::fmt;

/// Where a scheduler writes why it decided as it did.
///
/// Schedulers are written once, generic over `Trace`: with [`NoTrace`] every
/// explanation compiles away and the pick path pays nothing; with
/// [`Explain`] the same code records the candidates' loads and weights and
/// the rule that decided.
pub trait Trace {
    /// Whether lines are recorded (constant, so unused branches vanish).
    const ON: bool;
    /// Record one line of explanation.
    fn line(&mut self, args: fmt::Arguments<'_>);
}

/// Records nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoTrace;

impl Trace for NoTrace {
    const ON: bool = false;
    #[inline(always)]
    fn line(&mut self, _: fmt::Arguments<'_>) {}
}

/// The explanation of one pick, line by line.
///
/// ```
/// use lb_core::{Backend, Ctx, Pool};
/// use lb_sched::{Balancer, Explain};
/// let pool = Pool::new();
/// pool.add(Backend::new("a", "10.0.0.1:80".parse().unwrap())).unwrap();
/// let lb = Balancer::new(pool, lb_sched::build("rr").unwrap());
/// let mut why = Explain::new();
/// let conn = lb.explain(&Ctx::new("192.0.2.1:1".parse().unwrap()), &mut why).unwrap();
/// assert!(why.lines().iter().any(|l| l.contains("rr")));
/// # drop(conn);
/// ```
#[derive(Debug, Default, Clone)]
pub struct Explain {
    lines: Vec<String>,
}

impl Explain {
    /// An empty explanation.
    pub fn new() -> Self {
        Self::default()
    }

    /// The recorded lines.
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// Forget the recorded lines, to reuse the buffer.
    pub fn clear(&mut self) {
        self.lines.clear();
    }
}

impl Trace for Explain {
    const ON: bool = true;
    fn line(&mut self, args: fmt::Arguments<'_>) {
        self.lines.push(args.to_string());
    }
}

impl fmt::Display for Explain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for l in &self.lines {
            writeln!(f, "{l}")?;
        }
        Ok(())
    }
}

/// Whether `t` records explanations.
#[inline(always)]
pub(crate) fn is_on<T: Trace>(_: &T) -> bool {
    T::ON
}

/// Record a line of explanation if the trace is on: `why!(t, "fmt", args..)`.
macro_rules! why {
    ($t:expr, $($arg:tt)*) => {
        if $crate::trace::is_on(&*$t) {
            $crate::trace::Trace::line($t, format_args!($($arg)*));
        }
    };
}
pub(crate) use why;

/// Implement [`Scheduler::pick`](crate::Scheduler::pick) and
/// [`Scheduler::explain`](crate::Scheduler::explain) through one generic
/// `fn select<T: Trace>(&self, snap, ctx, t: &mut T)`.
macro_rules! pick_via_select {
    () => {
        #[inline]
        fn pick<'s>(
            &self,
            snap: &'s lb_core::Snapshot,
            ctx: &lb_core::Ctx<'_>,
        ) -> Option<lb_core::Pick<'s>> {
            self.select(snap, ctx, &mut $crate::trace::NoTrace)
        }

        fn explain<'s>(
            &self,
            snap: &'s lb_core::Snapshot,
            ctx: &lb_core::Ctx<'_>,
            why: &mut $crate::trace::Explain,
        ) -> Option<lb_core::Pick<'s>> {
            self.select(snap, ctx, why)
        }
    };
}
pub(crate) use pick_via_select;

/// Describe a member's load for an explanation.
pub(crate) struct Load<'a>(pub(crate) &'a lb_core::Member);

impl fmt::Display for Load<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{} weight={} active={} inactive={} {}",
            m.name(),
            m.weight(),
            m.active(),
            m.inactive(),
            m.health()
        )?;
        if m.max_conns() > 0 {
            write!(f, " max_conns={}", m.max_conns())?;
        }
        if m.is_backup() {
            f.write_str(" backup")?;
        }
        Ok(())
    }
}
