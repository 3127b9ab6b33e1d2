//! An nginx-upstream-like HTTP load balancer built from lb's tower Layers.
//!
//! ```text
//! cargo run --release --example http_proxy -- --demo
//! cargo run --release --example http_proxy -- --listen 127.0.0.1:8080 \
//!     --backend 127.0.0.1:9001 --backend 127.0.0.1:9002,weight=2 --sched wrr \
//!     --admin 127.0.0.1:8081
//! cargo run --release --example http_proxy -- --config proxy.toml
//! ```
//!
//! The configuration file is described in `lb_proxy::config`. The admin
//! listener serves `GET /status` (an `ipvsadm -Ln`-like table; JSON with
//! `?format=json`), `GET /metrics` (Prometheus) and runtime changes:
//! `POST /backends/NAME/weight?value=N`, `/down`, `/up`, `/drain`,
//! `POST /backends?name=..&addr=..&weight=..`, `DELETE /backends/NAME`.

#[path = "support/runtime.rs"]
mod runtime;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use lb_proxy::admin::Admin;
use lb_proxy::config::{BackendConfig, Config};
use lb_proxy::http::{proxy, Server};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// An HTTP load balancer with LVS and nginx schedulers.
#[derive(Parser, Debug)]
#[command(name = "http_proxy", version)]
struct Args {
    /// Run a self-contained demonstration (three in-process backends,
    /// real requests through the proxy) and exit.
    #[arg(long, conflicts_with_all = ["config", "listen", "backend"])]
    demo: bool,
    /// A TOML configuration file (see lb_proxy::config).
    #[arg(long, short, conflicts_with_all = ["listen", "backend", "sched", "nginx_conf"])]
    config: Option<PathBuf>,
    /// Serve an nginx `upstream { ... }` block: a file of upstream blocks,
    /// or a whole nginx.conf. Needs --listen.
    #[arg(long, conflicts_with_all = ["backend", "sched", "hash_key"])]
    nginx_conf: Option<PathBuf>,
    /// Which upstream block of --nginx-conf (needed when it has several).
    #[arg(long, requires = "nginx_conf")]
    upstream: Option<String>,
    /// Where clients connect.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// A backend: ADDR[,weight=N][,name=NAME][,backup][,down][,max_conns=N]. Repeat for more.
    #[arg(long)]
    backend: Vec<String>,
    /// The scheduler spec, e.g. "wrr", "rr", "sh port fallback".
    #[arg(long, default_value = "wrr")]
    sched: String,
    /// The hash key template for hashing schedulers, e.g. "$remote_addr".
    #[arg(long)]
    hash_key: Option<String>,
    /// Where the admin API listens (status, metrics, runtime changes).
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// Close a request whose body the client stops sending for this long,
    /// with 408 (nginx client_body_timeout; overrides [timeouts]
    /// client_body; default 60s).
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    client_body_timeout: Option<std::time::Duration>,
    /// Close a WebSocket/Upgrade tunnel silent both ways for this long
    /// (HAProxy timeout tunnel; overrides [timeouts] tunnel; default 1h).
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    tunnel_timeout: Option<std::time::Duration>,
    /// Runtime worker threads (default: one per CPU). With 1, everything
    /// runs on the main thread (tokio's current-thread runtime).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match runtime::build(args.threads) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("http_proxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = if args.demo {
        rt.block_on(demo())
    } else {
        match config_from(&args) {
            Ok(config) => rt.block_on(run(config)),
            Err(e) => Err(e),
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("http_proxy: {e}");
            ExitCode::from(2)
        }
    }
}

fn duration(s: &str) -> Result<std::time::Duration, String> {
    lb_proxy::config::parse_duration(s)
}

fn config_from(args: &Args) -> Result<Config, String> {
    let mut config = config_of(args)?;
    if let Some(t) = args.client_body_timeout {
        config.timeouts.client_body = t;
    }
    if let Some(t) = args.tunnel_timeout {
        config.timeouts.tunnel = t;
    }
    Ok(config)
}

fn config_of(args: &Args) -> Result<Config, String> {
    if let Some(path) = &args.config {
        return Config::load(path).map_err(|e| e.to_string());
    }
    if let Some(path) = &args.nginx_conf {
        return nginx_config(args, path);
    }
    let listen = args
        .listen
        .ok_or("give --listen ADDR and --backend ADDR (or --config FILE, or --demo)")?;
    if args.backend.is_empty() {
        return Err("give at least one --backend ADDR[,weight=N]".into());
    }
    let backends = args
        .backend
        .iter()
        .map(|b| b.parse::<BackendConfig>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let mut config = Config::simple(listen, backends, &args.sched).map_err(|e| e.to_string())?;
    config.admin = args.admin;
    if let Some(k) = &args.hash_key {
        config.hash_key = Some(k.parse().map_err(|e| format!("--hash-key: {e}"))?);
    }
    Ok(config)
}

/// A configuration from an nginx `upstream` block (warnings are printed).
fn nginx_config(args: &Args, path: &std::path::Path) -> Result<Config, String> {
    let listen = args
        .listen
        .ok_or("--nginx-conf needs --listen ADDR (nginx's `listen` is not read)")?;
    let file = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{file}: {e}"))?;
    let conf = lb_proxy::nginx_conf::parse(&text).map_err(|e| format!("{file}: {e}"))?;
    for w in &conf.warnings {
        eprintln!(
            "http_proxy: {file}: line {}: warning: {}",
            w.line, w.message
        );
    }
    let up = conf
        .upstream(args.upstream.as_deref())
        .map_err(|e| format!("{file}: {e}"))?;
    let mut config = Config::from_nginx(up, listen).map_err(|e| format!("{file}: {e}"))?;
    config.admin = args.admin;
    Ok(config)
}

/// The running balancer: its address, its admin address, its tasks.
struct Running {
    /// Kept alive while the proxy runs.
    _health: lb_proxy::config::RunningHealth,
    listen: SocketAddr,
    admin: Option<SocketAddr>,
    tasks: Vec<JoinHandle<std::io::Error>>,
}

/// Bind the listeners and serve, in the background.
async fn start(config: &Config) -> Result<Running, String> {
    let lb = config.balancer().map_err(|e| e.to_string())?;

    // Passive health (nginx max_fails) always; active checks when [health]
    // asks; every outcome also reaches the scheduler.
    let health = config
        .health
        .start(&lb)
        .map_err(|e| format!("cannot start health checks: {e}"))?;
    let observer = health.observer.clone();

    // The forwarder reports late response heads to passive health.
    let svc = proxy(
        config.balance_layer(lb.clone()).observer(observer),
        health.forward_config(config),
    );
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let listen = listener.local_addr().map_err(|e| e.to_string())?;
    // Strict HTTP/1.1 parsing, the header timeout (408) and client limits.
    // LB_HYPER_SERVER=1 in the environment serves plain HTTP/1 requests
    // with hyper's server rather than the proxy's own (to compare the two,
    // e.g. with benches/callgrind_http.sh).
    let own = std::env::var_os("LB_HYPER_SERVER").is_none_or(|v| v != "1");
    let server = config.server().h1_server(own);
    let mut tasks = vec![tokio::spawn(server.clone().serve(listener, svc))];
    let mut admin = None;
    if let Some(addr) = config.admin {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr} (admin): {e}"))?;
        admin = Some(l.local_addr().map_err(|e| e.to_string())?);
        // The edge's counters show in /status and /metrics; the admin
        // listener has a server of its own, so its clients are not counted.
        let api = Admin::new(lb, "HTTP", listen, &config.scheduler).with_edge(server.stats());
        let admin_server = Server::new().with_limits(*server.limits());
        tasks.push(tokio::spawn(admin_server.serve(l, api)));
    }
    Ok(Running {
        _health: health,
        listen,
        admin,
        tasks,
    })
}

async fn run(config: Config) -> Result<(), String> {
    let running = start(&config).await?;
    println!(
        "http_proxy: {} backend(s), scheduler {}, listening on {}",
        config.backends.len(),
        config.scheduler,
        running.listen
    );
    if let Some(a) = running.admin {
        println!("http_proxy: admin API on http://{a}/status");
    }
    // Each listener runs until it fails for good; stop at the first that does.
    let mut listeners = JoinSet::new();
    for task in running.tasks {
        listeners.spawn(task);
    }
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {
            println!("http_proxy: interrupted, stopping");
            Ok(())
        }
        Some(ended) = listeners.join_next() => {
            let why = match ended {
                Ok(Ok(e)) => e.to_string(),
                Ok(Err(e)) | Err(e) => e.to_string(),
            };
            Err(format!("a listener stopped: {why}"))
        }
    }
}

// === the demo ===

/// A demo backend that answers every request with its name.
async fn demo_backend(name: &'static str) -> Result<(SocketAddr, JoinHandle<()>), String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let task = tokio::spawn(async move {
        // Connections live in the set, so aborting this task closes them all.
        let mut conns = JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            conns.spawn(async move {
                let svc = hyper::service::service_fn(move |_req| async move {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(name))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok((addr, task))
}

type DemoClient = Client<HttpConnector, Empty<Bytes>>;

/// GET / through the proxy: the backend's name, or the error status.
async fn fetch(client: &DemoClient, url: &str) -> Result<String, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let limit = std::time::Duration::from_secs(10);
    let resp = tokio::time::timeout(limit, client.get(uri))
        .await
        .map_err(|_| "no answer in 10 s".to_owned())?
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let text = String::from_utf8_lossy(&body).into_owned();
    if status.is_success() {
        Ok(text)
    } else {
        Err(format!("{status}: {}", text.trim()))
    }
}

/// Send `n` requests; count answers per backend name.
async fn send(
    client: &DemoClient,
    proxy: SocketAddr,
    n: usize,
    names: &[&str],
) -> (Vec<usize>, usize) {
    let mut counts = vec![0; names.len()];
    let mut errors = 0;
    for _ in 0..n {
        match fetch(client, &format!("http://{proxy}/")).await {
            Ok(name) => match names.iter().position(|n| *n == name) {
                Some(i) => counts[i] += 1,
                None => errors += 1,
            },
            Err(e) => {
                eprintln!("  request failed: {e}");
                errors += 1;
            }
        }
    }
    (counts, errors)
}

async fn demo() -> Result<(), String> {
    const NAMES: [&str; 3] = ["alpha", "beta", "gamma"];
    const WEIGHTS: [u32; 3] = [1, 2, 3];
    let mut backends = Vec::new();
    let mut tasks = Vec::new();
    for (name, weight) in NAMES.iter().zip(WEIGHTS) {
        let (addr, task) = demo_backend(name).await?;
        let spec = format!("{addr},name={name},weight={weight}");
        backends.push(spec.parse::<BackendConfig>().map_err(|e| e.to_string())?);
        tasks.push(task);
    }
    let localhost = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut config = Config::simple(localhost, backends, "wrr").map_err(|e| e.to_string())?;
    config.admin = Some(localhost);
    let running = start(&config).await?;
    let admin = running.admin.ok_or("the admin listener did not start")?;
    println!(
        "lb http_proxy demo: backends alpha, beta, gamma (weights 1, 2, 3), scheduler wrr,\n\
         proxy on http://{}, admin on http://{admin}\n",
        running.listen
    );

    let client: DemoClient = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let (counts, mut errors) = send(&client, running.listen, 30, &NAMES).await;
    println!("30 requests through the proxy:");
    for ((name, weight), n) in NAMES.iter().zip(WEIGHTS).zip(&counts) {
        println!("  {name:<6} weight {weight}  {n:>3}  {}", "#".repeat(*n));
    }

    tasks[2].abort();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let (after, failed) = send(&client, running.listen, 12, &NAMES).await;
    errors += failed;
    println!(
        "\ngamma stopped; 12 more requests: alpha {}, beta {}, gamma {}, {} error(s) seen by the client\n\
         (each request gamma refused was retried on the next backend)\n",
        after[0], after[1], after[2], failed
    );

    println!("GET http://{admin}/status");
    print!(
        "{}",
        fetch(&client, &format!("http://{admin}/status")).await?
    );

    running.tasks.iter().for_each(JoinHandle::abort);
    tasks.iter().for_each(JoinHandle::abort);
    let expected = [5, 10, 15];
    if errors > 0 || counts != expected || after[2] != 0 {
        return Err(format!(
            "demo check failed: distribution {counts:?} (expected {expected:?}), {errors} error(s)"
        ));
    }
    Ok(())
}
