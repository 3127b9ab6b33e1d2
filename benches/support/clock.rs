//! The clock the benchmarks read: wall time (criterion's default), or with
//! `LB_BENCH_CLOCK=thread` the CPU time of the measuring thread, which does
//! not count the time the thread spends descheduled. On a machine shared with
//! other work the thread clock gives steadier figures; it still counts the
//! cache misses and contention that other work causes.

use std::time::{Duration, Instant};

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::Criterion;

/// Wall time or thread CPU time, chosen once from `LB_BENCH_CLOCK`.
pub struct Clock {
    thread: bool,
    wall: WallTime,
}

impl Clock {
    /// The clock `LB_BENCH_CLOCK` asks for (`thread`, or wall time).
    pub fn from_env() -> Self {
        Clock {
            thread: std::env::var("LB_BENCH_CLOCK").is_ok_and(|v| v == "thread"),
            wall: WallTime,
        }
    }

    /// A reading of this clock, for timing a span by hand.
    pub fn now(&self) -> Reading {
        if self.thread {
            Reading::Thread(thread_cpu_time())
        } else {
            Reading::Wall(Instant::now())
        }
    }

    /// A short name for output.
    pub fn name(&self) -> &'static str {
        if self.thread {
            "thread CPU time"
        } else {
            "wall time"
        }
    }
}

/// A reading of a [`Clock`].
#[derive(Clone, Copy)]
pub enum Reading {
    Wall(Instant),
    Thread(Duration),
}

impl Reading {
    /// The time since this reading, on the same clock.
    pub fn elapsed(self) -> Duration {
        match self {
            Reading::Wall(t) => t.elapsed(),
            Reading::Thread(t) => thread_cpu_time().saturating_sub(t),
        }
    }
}

/// CPU time consumed by the calling thread.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

impl Measurement for Clock {
    type Intermediate = Reading;
    type Value = Duration;

    fn start(&self) -> Reading {
        self.now()
    }
    fn end(&self, r: Reading) -> Duration {
        r.elapsed()
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, v: &Duration) -> f64 {
        v.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        self.wall.formatter()
    }
}

/// Whether `LB_BENCH_QUICK` asks for short runs.
pub fn quick() -> bool {
    std::env::var_os("LB_BENCH_QUICK").is_some()
}

/// The criterion settings every benchmark here uses: the clock of
/// `LB_BENCH_CLOCK`, short runs with `LB_BENCH_QUICK`.
pub fn config() -> Criterion<Clock> {
    let clock = Clock::from_env();
    eprintln!("measuring {}", clock.name());
    let c = Criterion::default()
        .with_measurement(clock)
        .configure_from_args();
    if quick() {
        c.warm_up_time(Duration::from_millis(200))
            .measurement_time(Duration::from_millis(500))
            .sample_size(10)
    } else {
        c.warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(1))
            .sample_size(20)
    }
}
