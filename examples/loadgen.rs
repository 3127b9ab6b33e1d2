//! The load generator of `benches/chaos_compare.sh`: a fixed request rate
//! (open loop, like wrk2), slow clients (slowloris), and raw requests.
//!
//! ```text
//! loadgen rate --url http://127.0.0.1:8080/ --rate 400 --duration 20 --csv out.csv
//! loadgen slowloris --addr 127.0.0.1:8080 --conns 500 --duration 12
//! loadgen raw --addr 127.0.0.1:8080 corpus/*.http
//! ```
//!
//! `rate` sends request i at `start + i / rate` whatever the answers do, so a
//! slow backend shows up as latency, not as a lower rate (latency is timed
//! from the actual send; a warning says when the generator fell behind its
//! plan). Each answer's status and `x-backend` header (the backend that
//! served it) are recorded; `--csv` writes one line a request:
//! `unix_ms,latency_ms,status,backend` with status a code, `err`,
//! `timeout` or `drop` (more than `--max-inflight` requests were waiting).
//! Every mode is bounded in time and count and ends by itself.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// A bounded load generator for the benchmark scripts.
#[derive(Parser, Debug)]
#[command(name = "loadgen", about)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// GET a URL at a fixed rate; print status, backend and latency counts.
    Rate {
        /// The URL (http only).
        #[arg(long)]
        url: hyper::Uri,
        /// Requests per second (1..=100000).
        #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        rate: u32,
        /// Seconds to send for (at most 3600).
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Seconds one request may take.
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
        /// Requests in flight at most; a request due beyond it is dropped.
        #[arg(long, default_value_t = 20_000)]
        max_inflight: usize,
        /// Write one CSV line per request here.
        #[arg(long)]
        csv: Option<PathBuf>,
    },
    /// Open slow connections that send a header line now and then and never
    /// finish the request head; report what the server did to them.
    Slowloris {
        /// Where to connect.
        #[arg(long)]
        addr: SocketAddr,
        /// Connections (at most 10000).
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        conns: u32,
        /// Seconds to keep them.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Seconds between header lines.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
    },
    /// Send each file's bytes on a new connection; print the status codes
    /// of what came back (`close`: closed without an answer, `timeout`).
    Raw {
        /// Where to connect.
        #[arg(long)]
        addr: SocketAddr,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 2.0)]
        timeout: f64,
        /// The files of raw request bytes.
        files: Vec<PathBuf>,
    },
}

fn secs(s: f64, what: &str) -> Result<Duration, String> {
    if !(0.0..=3600.0).contains(&s) {
        return Err(format!("{what}: {s} is not within 0..=3600 seconds"));
    }
    Ok(Duration::from_secs_f64(s))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match args.cmd {
            Cmd::Rate {
                url,
                rate,
                duration,
                timeout,
                max_inflight,
                csv,
            } => {
                let plan = RatePlan {
                    rate,
                    duration: secs(duration, "--duration")?,
                    timeout: secs(timeout, "--timeout")?,
                    max_inflight,
                };
                rate_run(url, plan, csv).await
            }
            Cmd::Slowloris {
                addr,
                conns,
                duration,
                interval,
            } => {
                let interval = secs(interval, "--interval")?.max(Duration::from_millis(10));
                slowloris(addr, conns, secs(duration, "--duration")?, interval).await
            }
            Cmd::Raw {
                addr,
                timeout,
                files,
            } => raw(addr, secs(timeout, "--timeout")?, files).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

// === rate ===

struct RatePlan {
    rate: u32,
    duration: Duration,
    timeout: Duration,
    max_inflight: usize,
}

/// What became of one request.
#[derive(Clone, Debug)]
struct Record {
    /// Planned send time, from the start.
    at: Duration,
    latency: Duration,
    status: String,
    backend: String,
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

async fn one(client: HttpClient, url: hyper::Uri, limit: Duration) -> (String, String) {
    let work = async {
        let resp = client.get(url).await.map_err(|_| "err")?;
        let status = resp.status().as_u16().to_string();
        let backend = resp
            .headers()
            .get("x-backend")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        resp.into_body().collect().await.map_err(|_| "err")?;
        Ok::<_, &str>((status, backend))
    };
    match tokio::time::timeout(limit, work).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => (e.to_owned(), "-".to_owned()),
        Err(_) => ("timeout".to_owned(), "-".to_owned()),
    }
}

async fn rate_run(url: hyper::Uri, plan: RatePlan, csv: Option<PathBuf>) -> Result<(), String> {
    if url.scheme_str() != Some("http") {
        return Err(format!("{url}: only http:// URLs"));
    }
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(plan.timeout));
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(4096)
        .build(connector);
    let records = Arc::new(Mutex::new(Vec::new()));
    let inflight = Arc::new(AtomicUsize::new(0));
    let total = (plan.duration.as_secs_f64() * f64::from(plan.rate)).round() as u64;
    let period = Duration::from_secs_f64(1.0 / f64::from(plan.rate));
    let start = tokio::time::Instant::now();
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut tasks = JoinSet::new();
    let mut lag = Duration::ZERO;
    for i in 0..total {
        let due = start + period.mul_f64(i as f64);
        tokio::time::sleep_until(due).await;
        while tasks.try_join_next().is_some() {}
        let at = due - start;
        if inflight.load(Ordering::Relaxed) >= plan.max_inflight {
            let r = Record {
                at,
                latency: Duration::ZERO,
                status: "drop".into(),
                backend: "-".into(),
            };
            lock(&records).push(r);
            continue;
        }
        inflight.fetch_add(1, Ordering::Relaxed);
        let (client, url, records, inflight) = (
            client.clone(),
            url.clone(),
            records.clone(),
            inflight.clone(),
        );
        lag = lag.max(due.elapsed());
        tasks.spawn(async move {
            let sent = tokio::time::Instant::now();
            let (status, backend) = one(client, url, plan.timeout).await;
            let latency = sent.elapsed();
            inflight.fetch_sub(1, Ordering::Relaxed);
            lock(&records).push(Record {
                at,
                latency,
                status,
                backend,
            });
        });
    }
    // Each request ends by its own timeout; this bounds the wait anyway.
    let grace = plan.timeout + Duration::from_secs(2);
    let _ = tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    tasks.abort_all();
    let mut recs = lock(&records).clone();
    recs.sort_by_key(|r| r.at);
    if let Some(path) = csv {
        write_csv(&path, wall, &recs).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    summary(&recs, plan.duration);
    if lag > Duration::from_millis(20) {
        println!(
            "loadgen: warning: a request left {:.1} ms after its planned time (the generator lagged)",
            ms(lag)
        );
    }
    Ok(())
}

fn lock(m: &Mutex<Vec<Record>>) -> std::sync::MutexGuard<'_, Vec<Record>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn write_csv(path: &PathBuf, wall: Duration, recs: &[Record]) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(f, "unix_ms,latency_ms,status,backend")?;
    for r in recs {
        writeln!(
            f,
            "{:.1},{:.3},{},{}",
            ms(wall + r.at),
            ms(r.latency),
            r.status,
            r.backend
        )?;
    }
    f.flush()
}

/// The q-quantile (0..=1) of sorted values, nearest rank.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Counts of each distinct value, in first-seen order.
fn tally<'a>(it: impl Iterator<Item = &'a str>) -> Vec<(&'a str, usize)> {
    let mut out: Vec<(&str, usize)> = Vec::new();
    for v in it {
        match out.iter_mut().find(|(k, _)| *k == v) {
            Some((_, n)) => *n += 1,
            None => out.push((v, 1)),
        }
    }
    out.sort();
    out
}

fn summary(recs: &[Record], duration: Duration) {
    let ok = recs.iter().filter(|r| r.status.starts_with('2')).count();
    let count = |s: &str| recs.iter().filter(|r| r.status == s).count();
    let (err, timeout, drop) = (count("err"), count("timeout"), count("drop"));
    let bad = recs.len() - ok - err - timeout - drop;
    let mut lat: Vec<f64> = recs
        .iter()
        .filter(|r| r.status != "drop")
        .map(|r| ms(r.latency))
        .collect();
    lat.sort_by(f64::total_cmp);
    let q = |p| quantile(&lat, p);
    println!(
        "loadgen: {} requests in {:.1} s: {ok} 2xx, {bad} other status, {err} errors, {timeout} timeouts, {drop} dropped",
        recs.len(),
        duration.as_secs_f64()
    );
    let line = |v: Vec<(&str, usize)>| {
        v.iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "statuses: {}",
        line(tally(recs.iter().map(|r| r.status.as_str())))
    );
    println!(
        "backends: {}",
        line(tally(recs.iter().map(|r| r.backend.as_str())))
    );
    println!(
        "latency ms: p50={:.2} p90={:.2} p99={:.2} max={:.2}",
        q(0.5),
        q(0.9),
        q(0.99),
        q(1.0)
    );
    println!(
        "SUMMARY sent={} ok={ok} bad={bad} err={err} timeout={timeout} drop={drop} p50={:.3} p90={:.3} p99={:.3} max={:.3}",
        recs.len(),
        q(0.5),
        q(0.9),
        q(0.99),
        q(1.0)
    );
}

// === slowloris ===

/// What the server did to one slow connection.
enum Slow {
    ConnectFailed,
    /// An answer came; its status code (0 if unreadable) and when.
    Answered(u16, Duration),
    /// Closed or reset without an answer, and when.
    Closed(Duration),
    /// Still open at the end.
    Open,
}

async fn slow_one(addr: SocketAddr, end: Instant, interval: Duration) -> Slow {
    let started = Instant::now();
    let connect = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await;
    let Ok(Ok(mut s)) = connect else {
        return Slow::ConnectFailed;
    };
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let mut line = 0u64;
    let mut next = b"GET / HTTP/1.1\r\nHost: localhost\r\n".to_vec();
    loop {
        if s.write_all(&next).await.is_err() {
            return finish(&got, started);
        }
        line += 1;
        next = format!("X-Slow-{line}: {line}\r\n").into_bytes();
        let wake = (Instant::now() + interval).min(end);
        loop {
            let left = wake.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match tokio::time::timeout(left, s.read(&mut buf)).await {
                Err(_) => break,
                Ok(Ok(0)) | Ok(Err(_)) => return finish(&got, started),
                Ok(Ok(n)) => {
                    got.extend_from_slice(&buf[..n]);
                    if got.len() >= 12 {
                        return Slow::Answered(status_of(&got), started.elapsed());
                    }
                }
            }
        }
        if Instant::now() >= end {
            return Slow::Open;
        }
    }
}

fn finish(got: &[u8], started: Instant) -> Slow {
    if got.is_empty() {
        Slow::Closed(started.elapsed())
    } else {
        Slow::Answered(status_of(got), started.elapsed())
    }
}

/// The code of an `HTTP/1.x NNN` status line at the start, or 0.
fn status_of(got: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(&got[..got.len().min(64)]);
    match text.strip_prefix("HTTP/1.") {
        Some(rest) => rest
            .get(2..5)
            .and_then(|c| c.parse().ok())
            .unwrap_or_default(),
        None => 0,
    }
}

async fn slowloris(
    addr: SocketAddr,
    conns: u32,
    duration: Duration,
    interval: Duration,
) -> Result<(), String> {
    let end = Instant::now() + duration;
    let mut set = JoinSet::new();
    for _ in 0..conns {
        set.spawn(slow_one(addr, end, interval));
    }
    let (mut failed, mut open, mut statuses, mut closed, mut when) = (0, 0, Vec::new(), 0, vec![]);
    let bound = duration + Duration::from_secs(10);
    let _ = tokio::time::timeout(bound, async {
        while let Some(r) = set.join_next().await {
            match r {
                Ok(Slow::ConnectFailed) | Err(_) => failed += 1,
                Ok(Slow::Open) => open += 1,
                Ok(Slow::Answered(code, t)) => {
                    statuses.push(code.to_string());
                    when.push(t.as_secs_f64());
                }
                Ok(Slow::Closed(t)) => {
                    closed += 1;
                    when.push(t.as_secs_f64());
                }
            }
        }
    })
    .await;
    set.abort_all();
    when.sort_by(f64::total_cmp);
    let answers = tally(statuses.iter().map(String::as_str));
    let got408 = answers.iter().find(|(k, _)| *k == "408").map_or(0, |a| a.1);
    let listed: Vec<String> = answers.iter().map(|(k, n)| format!("{k}={n}")).collect();
    println!(
        "slowloris: {conns} connections for {:.1} s: {failed} failed to connect, {} answered ({}), {closed} closed without an answer, {open} still open",
        duration.as_secs_f64(),
        statuses.len(),
        listed.join(" ")
    );
    println!(
        "SLOW conns={conns} connect_failed={failed} answered={} got408={got408} closed={closed} open={open} median_end_s={:.2}",
        statuses.len(),
        quantile(&when, 0.5)
    );
    Ok(())
}

// === raw ===

/// What came back for one raw request: its status codes, `close` or `timeout`.
async fn raw_one(addr: SocketAddr, bytes: Vec<u8>, limit: Duration) -> String {
    let work = async {
        let mut s = TcpStream::connect(addr).await.map_err(|_| "refused")?;
        let mut got = Vec::new();
        if s.write_all(&bytes).await.is_ok() {
            let mut buf = [0u8; 8192];
            let end = tokio::time::Instant::now() + limit;
            while got.len() < 1 << 20 {
                match tokio::time::timeout_at(end, s.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                    Err(_) if got.is_empty() => return Err("timeout"),
                    Err(_) => break,
                }
            }
        }
        Ok::<_, &str>(got)
    };
    let got = match work.await {
        Ok(got) => got,
        Err(e) => return e.to_owned(),
    };
    if got.is_empty() {
        return "close".to_owned();
    }
    // Every status line at a line start, joined by '+'.
    let text = String::from_utf8_lossy(&got);
    let codes: Vec<String> = text
        .split("\r\n")
        .filter(|l| l.starts_with("HTTP/1."))
        .map(|l| status_of(l.as_bytes()).to_string())
        .collect();
    if codes.is_empty() {
        "garbage".to_owned()
    } else {
        codes.join("+")
    }
}

async fn raw(addr: SocketAddr, limit: Duration, files: Vec<PathBuf>) -> Result<(), String> {
    let mut out = vec![String::new(); files.len()];
    let mut set = JoinSet::new();
    let mut keep = |r: Result<(usize, String), _>| {
        if let Ok((i, s)) = r {
            out[i] = s;
        }
    };
    for (i, path) in files.iter().enumerate() {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        set.spawn(async move { (i, raw_one(addr, bytes, limit).await) });
        // At most 16 at once.
        while set.len() >= 16 {
            if let Some(r) = set.join_next().await {
                keep(r);
            }
        }
    }
    while let Some(r) = set.join_next().await {
        keep(r);
    }
    for (path, s) in files.iter().zip(&out) {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        println!("RAW {} {s}", name.unwrap_or_default());
    }
    Ok(())
}
