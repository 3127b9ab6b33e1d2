//! A layer-4 load balancer, like HAProxy's `mode tcp` or an LVS virtual
//! service, in user space.
//!
//! ```text
//! cargo run --example tcp_proxy -- --listen 127.0.0.1:8080 \
//!     --backend 127.0.0.1:9001,weight=3 --backend 127.0.0.1:9002 --sched wrr
//! cargo run --example tcp_proxy -- --demo
//! ```
//!
//! `--demo` needs nothing else: it starts three TCP backends in this process
//! (each sends its name, then echoes), puts the proxy on a free loopback
//! port, makes real connections through it, prints where they went and an
//! `ipvsadm -Ln`-like status table, and exits.

#[path = "support/runtime.rs"]
mod runtime;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use lb_core::{Backend, Pool};
use lb_proxy::tcp::TcpProxy;
use lb_sched::Balancer;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// A TCP load balancer over LVS and nginx schedulers.
#[derive(Parser, Debug)]
#[command(name = "tcp_proxy", version, about)]
struct Args {
    /// Address to accept client connections on.
    #[arg(long, value_name = "ADDR", required_unless_present = "demo")]
    listen: Option<SocketAddr>,
    /// A backend: its address, optionally with a weight (repeat the flag).
    #[arg(long = "backend", value_name = "ADDR[,weight=N]", value_parser = parse_backend)]
    backends: Vec<(SocketAddr, u64)>,
    /// Scheduler and its options, e.g. "wrr", "rr", "p2c seed=7", "peak_ewma decay=5".
    #[arg(long, value_name = "SPEC", default_value = "wrr")]
    sched: String,
    /// How long a connect to a backend may take before the next is tried (ms, s or m).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    connect_timeout: Duration,
    /// Close a connection on which nothing moved either way for this long
    /// (ms, s or m): HAProxy's `timeout tunnel` (or `timeout client` /
    /// `timeout server`) in `mode tcp`.
    #[arg(long, value_name = "DURATION", default_value = "300s", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// Backends tried per client connection before it is reset.
    #[arg(long, value_name = "N", default_value_t = 3)]
    max_tries: usize,
    /// Passive health, as nginx's max_fails: failed connects within
    /// --fail-timeout that take a backend out for --fail-timeout (0 = off).
    #[arg(long, value_name = "N", default_value_t = 1)]
    max_fails: u32,
    /// The max_fails window, and how long a failed backend stays out.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    fail_timeout: Duration,
    /// Active health: a TCP connect check of every backend at this interval
    /// (HAProxy `check inter`), with rise 2 and fall 3. Off when absent.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    check_interval: Option<Duration>,
    /// Copy bulk transfers through user space instead of moving them with
    /// splice(2) (Linux), as HAProxy without `option splice-auto`.
    #[arg(long)]
    no_splice: bool,
    /// Run the self-contained demonstration and exit.
    #[arg(long)]
    demo: bool,
    /// Connections the demonstration makes.
    #[arg(long, value_name = "N", default_value_t = 30)]
    connections: usize,
    /// Runtime worker threads (default: one per CPU). With 1, everything
    /// runs on the main thread (tokio's current-thread runtime).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
}

fn parse_backend(s: &str) -> Result<(SocketAddr, u64), String> {
    let mut parts = s.split(',');
    let addr = parts.next().unwrap_or("");
    let addr: SocketAddr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IP:PORT address"))?;
    let mut weight = 1;
    for opt in parts {
        match opt.split_once('=') {
            Some(("weight", w)) => {
                weight = w
                    .parse()
                    .map_err(|_| format!("weight {w:?} is not a whole number"))?
            }
            _ => return Err(format!("unknown backend option {opt:?} (known: weight=N)")),
        }
    }
    Ok((addr, weight))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number and a unit (ms, s, m), e.g. 500ms"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s or m)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

/// An `ipvsadm -Ln`-like table of the virtual service and its backends.
fn status(listen: SocketAddr, lb: &Balancer) -> String {
    let snap = lb.pool().load();
    let names = snap
        .members()
        .iter()
        .map(|m| m.name().len())
        .max()
        .unwrap_or(0)
        .max(4);
    let mut out = String::from("Prot LocalAddress:Port Scheduler\n");
    out += &format!(
        "  -> {:<28} {:<names$} Weight ActiveConn InActConn Health   Total\n",
        "RemoteAddress:Port", "Name"
    );
    out += &format!("TCP  {listen} {}\n", lb.scheduler().name());
    for m in snap.members() {
        out += &format!(
            "  -> {:<28} {:<names$} {:<6} {:<10} {:<9} {:<8} {}\n",
            m.addr().to_string(),
            m.name(),
            m.weight(),
            m.active(),
            m.inactive(),
            m.health().as_str(),
            m.counters().total()
        );
    }
    out
}

fn build(args: &Args, backends: &[(String, SocketAddr, u64)]) -> Result<TcpProxy, String> {
    let pool = Pool::new();
    for (name, addr, weight) in backends {
        pool.add(Backend::new(name.as_str(), *addr).with_weight(*weight))
            .map_err(|e| e.to_string())?;
    }
    let sched = lb_sched::build(&args.sched).map_err(|e| format!("--sched: {e}"))?;
    let lb = Balancer::new(pool, sched);
    let settings = lb_proxy::config::HealthSettings {
        enabled: args.check_interval.is_some(),
        interval: args.check_interval.unwrap_or(Duration::from_secs(2)),
        max_fails: args.max_fails,
        fail_timeout: args.fail_timeout,
        ..Default::default()
    };
    // The checker keeps running after its handle is dropped; the observer
    // feeds passive health and the scheduler.
    let health = settings
        .start(&lb)
        .map_err(|e| format!("cannot start health checks: {e}"))?;
    Ok(TcpProxy::new(lb)
        .with_observer(health.observer)
        .with_connect_timeout(args.connect_timeout)
        .with_idle_timeout(args.idle_timeout)
        .with_max_tries(args.max_tries)
        .with_splice(!args.no_splice))
}

async fn run(args: Args) -> Result<(), String> {
    let Some(listen) = args.listen else {
        return Err("--listen is required".into());
    };
    if args.backends.is_empty() {
        return Err("give at least one --backend ADDR[,weight=N]".into());
    }
    let backends: Vec<_> = args
        .backends
        .iter()
        .map(|(addr, w)| (addr.to_string(), *addr, *w))
        .collect();
    let proxy = build(&args, &backends)?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let listen = listener.local_addr().map_err(|e| e.to_string())?;
    print!("{}", status(listen, proxy.balancer()));
    println!("forwarding connections to {listen}; Ctrl-C stops");
    proxy.serve(listener).await;
    Ok(())
}

// === demo ===

/// A backend that sends `name` and a newline, then echoes until EOF.
async fn demo_backend(name: &'static str) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                s.write_all(format!("{name}\n").as_bytes()).await?;
                let (mut r, mut w) = s.split();
                tokio::io::copy(&mut r, &mut w).await?;
                w.shutdown().await
            });
        }
    });
    Ok(addr)
}

/// One client: connect, read the backend's name, check an echo; the
/// connection is returned open.
async fn demo_client(
    proxy: SocketAddr,
    i: usize,
) -> Result<(String, BufReader<TcpStream>), String> {
    let s = TcpStream::connect(proxy).await.map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s);
    let mut name = String::new();
    r.read_line(&mut name).await.map_err(|e| e.to_string())?;
    let ping = format!("ping {i}\n");
    r.get_mut()
        .write_all(ping.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut echo = String::new();
    r.read_line(&mut echo).await.map_err(|e| e.to_string())?;
    if echo != ping {
        return Err(format!("connection {i}: sent {ping:?}, got back {echo:?}"));
    }
    Ok((name.trim_end().to_owned(), r))
}

async fn demo(args: Args) -> Result<(), String> {
    let io = |e: std::io::Error| e.to_string();
    let mut backends = Vec::new();
    for (name, weight) in [("web1", 3), ("web2", 2), ("web3", 1)] {
        backends.push((
            name.to_owned(),
            demo_backend(name).await.map_err(io)?,
            weight,
        ));
    }
    let proxy = build(&args, &backends)?;
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(io)?;
    let listen = listener.local_addr().map_err(io)?;
    let lb = proxy.balancer().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        proxy
            .serve_until(listener, async {
                let _ = stopped.await;
            })
            .await
    });
    println!(
        "demo: backends web1 (weight 3), web2 (weight 2), web3 (weight 1); scheduler {:?}; proxy on {listen}",
        args.sched
    );

    let mut open = Vec::new();
    for i in 0..args.connections {
        open.push(demo_client(listen, i).await?);
    }
    println!(
        "\n{} connections made, each greeted and echoed through the proxy:",
        open.len()
    );
    for (name, _, _) in &backends {
        let n = open.iter().filter(|(got, _)| got == name).count();
        println!("  {name:<6} {n:>4}  {}", "#".repeat(n));
    }
    println!("\nwhile they are open:\n{}", status(listen, &lb));

    drop(open);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while lb.pool().load().members().iter().any(|m| m.conns() > 0) {
        if tokio::time::Instant::now() > deadline {
            return Err("connections still open 10 s after the clients closed".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("after the clients closed:\n{}", status(listen, &lb));
    let _ = stop.send(());
    server.await.map_err(|e| e.to_string())?;
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match runtime::build(args.threads) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tcp_proxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        if args.demo {
            demo(args).await
        } else {
            run(args).await
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tcp_proxy: {e}");
            ExitCode::FAILURE
        }
    }
}
