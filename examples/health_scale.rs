//! Health checking at scale: N backends on loopback, each checked every
//! interval by one `HealthChecker` on a current-thread tokio runtime (one
//! core). Prints the checks run, the CPU time of the checking thread, and
//! how late checks started (p50/p99/max lateness: from when a check was
//! due to when it began, permit wait included).
//!
//! ```text
//! cargo run --release --example health_scale -- --backends 10000 --seconds 10
//! cargo run --release --example health_scale -- --backends 10000 --seconds 10 --check http
//! ```
//!
//! The backends are N listeners on 127.0.0.1, served by a second thread
//! with its own runtime (its CPU is reported apart). Everything the run
//! starts is stopped before it exits. Linux: CPU times come from
//! `/proc/thread-self/stat`; the open-file limit is raised (by re-running
//! under `sh -c 'ulimit -n ...'`) when the soft limit is too low.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lb_core::{Backend, Pool};
use lb_health::{Check, CheckFuture, Checker, HealthChecker, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;

struct Args {
    backends: usize,
    seconds: u64,
    interval: Duration,
    concurrency: usize,
    http: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        backends: 10_000,
        seconds: 10,
        interval: Duration::from_secs(1),
        concurrency: 512,
        http: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        let num = |s: String, name: &str| {
            s.parse::<u64>()
                .map_err(|_| format!("{name}: not a number: {s:?}"))
        };
        match flag.as_str() {
            "--backends" => a.backends = num(value("--backends")?, "--backends")? as usize,
            "--seconds" => a.seconds = num(value("--seconds")?, "--seconds")?,
            "--interval-ms" => a.interval = Duration::from_millis(num(value("--interval-ms")?, "--interval-ms")?),
            "--concurrency" => a.concurrency = num(value("--concurrency")?, "--concurrency")? as usize,
            "--check" => match value("--check")?.as_str() {
                "tcp" => a.http = false,
                "http" => a.http = true,
                other => return Err(format!("--check: tcp or http, not {other:?}")),
            },
            "-h" | "--help" => {
                return Err("usage: health_scale [--backends N] [--seconds S] [--interval-ms MS] [--concurrency C] [--check tcp|http]".into())
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    if a.backends == 0 || a.seconds == 0 || a.interval.is_zero() {
        return Err("--backends, --seconds and --interval-ms must be above 0".into());
    }
    Ok(a)
}

/// Wraps the real check and records how late each check started.
#[derive(Debug)]
struct Recorder {
    inner: Check,
    lateness_us: Mutex<Vec<u32>>,
    ok: AtomicU64,
    failed: AtomicU64,
}

impl Checker for Recorder {
    fn check<'a>(&'a self, target: &'a Target) -> CheckFuture<'a> {
        let late = Instant::now().saturating_duration_since(target.due());
        self.lateness_us
            .lock()
            .unwrap()
            .push(late.as_micros().min(u128::from(u32::MAX)) as u32);
        Box::pin(async move {
            let r = self.inner.check(target).await;
            let c = if r.is_ok() { &self.ok } else { &self.failed };
            c.fetch_add(1, Ordering::Relaxed);
            r
        })
    }
    fn name(&self) -> &str {
        self.inner.name()
    }
}

/// CPU seconds (user + system) of the calling thread, or the process.
fn cpu_seconds(path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields after the command: state is [0], utime [11], stime [12].
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0) // USER_HZ
}

fn open_file_limit() -> Option<(u64, u64)> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let f: Vec<&str> = line.split_whitespace().collect();
    let parse = |s: &str| {
        if s == "unlimited" {
            Some(u64::MAX)
        } else {
            s.parse().ok()
        }
    };
    Some((parse(f.get(3)?)?, parse(f.get(4)?)?))
}

/// Re-run under a higher soft open-file limit when needed; returns false
/// when the caller should carry on in this process.
fn reexec_with_more_files(needed: u64) -> bool {
    let Some((soft, hard)) = open_file_limit() else {
        return false;
    };
    if soft >= needed || std::env::var_os("LB_HEALTH_SCALE_REEXEC").is_some() {
        return false;
    }
    if hard < needed {
        eprintln!(
            "warning: the open-file limit is {hard} (hard), below the {needed} this run needs"
        );
        return false;
    }
    let exe = std::env::current_exe().expect("current executable");
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n {needed} && exec \"$0\" \"$@\""))
        .arg(exe)
        .args(std::env::args().skip(1))
        .env("LB_HEALTH_SCALE_REEXEC", "1")
        .status()
        .expect("re-run under sh");
    std::process::exit(status.code().unwrap_or(1));
}

/// N listeners on 127.0.0.1 served by a thread of their own, until `stop`.
fn start_backends(
    n: usize,
    http: bool,
) -> (
    Vec<SocketAddr>,
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<f64>,
) {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut addrs = Vec::with_capacity(n);
            for _ in 0..n {
                let l = match TcpListener::bind("127.0.0.1:0").await {
                    Ok(l) => l,
                    Err(e) => panic!(
                        "bind listener {} of {n}: {e} (raise ulimit -n?)",
                        addrs.len() + 1
                    ),
                };
                addrs.push(l.local_addr().unwrap());
                tokio::spawn(async move {
                    while let Ok((mut conn, _)) = l.accept().await {
                        if http {
                            tokio::spawn(async move {
                                let mut buf = [0u8; 1024];
                                let _ = conn.read(&mut buf).await;
                                let _ = conn
                                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                                    .await;
                            });
                        }
                    }
                });
            }
            addr_tx.send(addrs).unwrap();
            let _ = stop_rx.await;
        });
        cpu_seconds("/proc/thread-self/stat").unwrap_or(f64::NAN)
    });
    let addrs = addr_rx.recv().expect("backends started");
    (addrs, stop_tx, thread)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    reexec_with_more_files(args.backends as u64 + 4 * args.concurrency as u64 + 256);
    let (addrs, stop_backends, backend_thread) = start_backends(args.backends, args.http);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let pool = Pool::new();
        for (i, addr) in addrs.iter().enumerate() {
            pool.add(Backend::new(format!("b{i}"), *addr)).unwrap();
        }
        let inner: Check = if args.http { Check::http("/").body_contains("ok").into() } else { Check::tcp() };
        let recorder = Arc::new(Recorder {
            inner,
            lateness_us: Mutex::new(Vec::new()),
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        });
        let checker = HealthChecker::new(pool.clone(), Check::custom(recorder.clone()))
            .interval(args.interval)
            .timeout(Duration::from_secs(1))
            .concurrency(args.concurrency)
            .spawn()
            .expect("inside a runtime");
        let mut events = checker.events();

        // The first interval spreads the checks; measure after it.
        tokio::time::sleep(args.interval).await;
        recorder.lateness_us.lock().unwrap().clear();
        let (ok0, failed0) = (recorder.ok.load(Ordering::Relaxed), recorder.failed.load(Ordering::Relaxed));
        let cpu0 = cpu_seconds("/proc/thread-self/stat");
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(args.seconds)).await;
        let wall = t0.elapsed().as_secs_f64();
        let cpu = cpu_seconds("/proc/thread-self/stat").zip(cpu0).map(|(b, a)| b - a);
        let ok = recorder.ok.load(Ordering::Relaxed) - ok0;
        let failed = recorder.failed.load(Ordering::Relaxed) - failed0;
        checker.stop();

        let mut late = std::mem::take(&mut *recorder.lateness_us.lock().unwrap());
        late.sort_unstable();
        let mut transitions = 0;
        while events.try_recv().is_ok() {
            transitions += 1;
        }
        println!(
            "health_scale: {} backends, {} check, interval {} ms, concurrency {}, one current-thread runtime",
            args.backends,
            if args.http { "http" } else { "tcp" },
            args.interval.as_millis(),
            args.concurrency
        );
        println!(
            "measured over {wall:.2} s after a {} ms warm-up: {} checks ({:.0}/s), {ok} ok, {failed} failed, {transitions} state changes",
            args.interval.as_millis(),
            ok + failed,
            (ok + failed) as f64 / wall
        );
        match cpu {
            Some(c) => println!(
                "checker thread CPU: {c:.2} s = {:.1} % of one core ({:.1} us per check)",
                100.0 * c / wall,
                1e6 * c / (ok + failed).max(1) as f64
            ),
            None => println!("checker thread CPU: n/a (no /proc/thread-self/stat)"),
        }
        println!(
            "lateness (due -> start, ms): p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}  ({} samples)",
            percentile(&late, 0.50),
            percentile(&late, 0.90),
            percentile(&late, 0.99),
            late.last().map_or(f64::NAN, |m| f64::from(*m) / 1000.0),
            late.len()
        );
    });
    let _ = stop_backends.send(());
    let backend_cpu = backend_thread.join().unwrap_or(f64::NAN);
    println!("backend thread CPU (listeners, not part of the checker): {backend_cpu:.2} s");
}
