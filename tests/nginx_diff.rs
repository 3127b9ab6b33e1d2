//! Differential test against nginx itself: nginx (`worker_processes 1`,
//! loopback only) and our `http_proxy --nginx-conf` serve the same upstream
//! block over the same real backends; both get the same sequence of
//! requests, and must choose the same backend for every one.
//!
//! Skips with a printed reason where nginx is not installed, and fails
//! instead when `LB_REQUIRE_NETNS=1` (as in CI, which installs nginx).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod support;

const NAMES: [&str; 4] = ["alpha", "bravo", "charlie", "delta"];

fn nginx_binary() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn required() -> bool {
    std::env::var("LB_REQUIRE_NETNS").is_ok_and(|v| v == "1")
}

/// A backend that answers every request with its own name.
fn backend(name: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind backend");
    let addr = l.local_addr().expect("backend addr");
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = [0u8; 4096];
                let mut seen = Vec::new();
                // Serve keep-alive requests until the peer closes.
                loop {
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    let end = seen.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
                    seen.drain(..end);
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{name}",
                        name.len()
                    );
                    if s.write_all(resp.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn wait_listening(port: u16, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before listening: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on port {port} within 20 s");
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        // Stopped by its own PID only.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One request from source address `from`; returns the backend's name.
fn request(port: u16, from: std::net::Ipv4Addr, uri: &str) -> String {
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.bind(&SocketAddr::from((from, 0)).into())
        .expect("bind client source");
    sock.connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)).into(),
        Duration::from_secs(5),
    )
    .expect("connect");
    let mut s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET {uri} HTTP/1.1\r\nHost: diff.test\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "request {uri} from {from}: {head}"
    );
    body.to_owned()
}

fn upstream_block(kind: &str, backends: &[SocketAddr]) -> String {
    let s = |i: usize| backends[i];
    match kind {
        "rr" => format!(
            "upstream u {{\n  server {} weight=3;\n  server {} weight=2;\n  server {} down;\n  server {} backup;\n}}\n",
            s(0), s(1), s(2), s(3)
        ),
        "rr-backup" => format!(
            "upstream u {{\n  server {} down;\n  server {} weight=2 backup;\n  server {} backup;\n}}\n",
            s(0), s(1), s(2)
        ),
        "ip_hash" => format!(
            "upstream u {{\n  ip_hash;\n  server {};\n  server {} weight=2 max_fails=3 fail_timeout=30s;\n  server {};\n}}\n",
            s(0), s(1), s(2)
        ),
        "hash" => format!(
            "upstream u {{\n  hash $request_uri;\n  server {};\n  server {} weight=2;\n  server {};\n  server {};\n}}\n",
            s(0), s(1), s(2), s(3)
        ),
        "hash-consistent" => format!(
            "upstream u {{\n  hash $request_uri consistent;\n  server {};\n  server {} weight=2;\n  server {};\n  server {};\n}}\n",
            s(0), s(1), s(2), s(3)
        ),
        other => panic!("unknown case {other}"),
    }
}

fn start_nginx(nginx: &Path, dir: &Path, block: &str, port: u16) -> Killed {
    let conf = format!(
        "worker_processes 1;\ndaemon off;\n# One process: stopping it by its PID leaves no worker behind.\nmaster_process off;\nerror_log {dir}/error.log warn;\npid {dir}/nginx.pid;\n{user}\
         events {{ worker_connections 256; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {dir}/body;\n  proxy_temp_path {dir}/proxy;\n\
           fastcgi_temp_path {dir}/fcgi;\n  uwsgi_temp_path {dir}/uwsgi;\n  scgi_temp_path {dir}/scgi;\n\
           {block}\n  server {{\n    listen 127.0.0.1:{port};\n    location / {{ proxy_pass http://u; }}\n  }}\n}}\n",
        dir = dir.display(),
        user = if is_root() { "user root;\n" } else { "" },
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).expect("write nginx.conf");
    let mut child = Command::new(nginx)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start nginx");
    wait_listening(port, &mut child, "nginx");
    Killed(child)
}

fn is_root() -> bool {
    std::env::var("USER").is_ok_and(|u| u == "root")
        || Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0"))
}

fn http_proxy_binary() -> PathBuf {
    support::example_binary("http_proxy")
}

fn start_ours(dir: &Path, block: &str, port: u16) -> Killed {
    let path = dir.join("upstream.conf");
    std::fs::write(&path, block).expect("write upstream.conf");
    let mut child = Command::new(http_proxy_binary())
        .arg("--nginx-conf")
        .arg(&path)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start http_proxy");
    wait_listening(port, &mut child, "http_proxy");
    Killed(child)
}

/// The requests of one case: (source address, URI).
fn requests(kind: &str) -> Vec<(std::net::Ipv4Addr, String)> {
    (0..60u32)
        .map(|i| {
            let from = if kind == "ip_hash" {
                std::net::Ipv4Addr::new(
                    127,
                    (i * 37 % 250) as u8 + 1,
                    (i * 11 % 256) as u8,
                    (i % 7) as u8 + 1,
                )
            } else {
                std::net::Ipv4Addr::new(127, 0, 0, 1)
            };
            (from, format!("/item/{}?v={}", i * 7919 % 1000, i % 3))
        })
        .collect()
}

fn run_case(nginx: &Path, kind: &str) {
    let names: Vec<&'static str> = NAMES.to_vec();
    let backends: Vec<SocketAddr> = names.iter().map(|n| backend(n)).collect();
    let block = upstream_block(kind, &backends);
    let dir = std::env::temp_dir().join(format!("lb-nginx-diff-{}-{kind}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");

    let reqs = requests(kind);
    let theirs: Vec<String> = {
        let port = free_port();
        let _nginx = start_nginx(nginx, &dir, &block, port);
        reqs.iter()
            .map(|(from, uri)| request(port, *from, uri))
            .collect()
    };
    let ours: Vec<String> = {
        let port = free_port();
        let _ours = start_ours(&dir, &block, port);
        reqs.iter()
            .map(|(from, uri)| request(port, *from, uri))
            .collect()
    };
    let _ = std::fs::remove_dir_all(&dir);
    let differ: Vec<String> = reqs
        .iter()
        .zip(theirs.iter().zip(&ours))
        .enumerate()
        .filter(|(_, (_, (a, b)))| a != b)
        .map(|(i, ((from, uri), (a, b)))| format!("#{i} {from} {uri}: nginx {a}, ours {b}"))
        .collect();
    assert!(
        differ.is_empty(),
        "{kind}: {} of {} differ:\n{}",
        differ.len(),
        reqs.len(),
        differ.join("\n")
    );
    let distinct: std::collections::BTreeSet<&String> = theirs.iter().collect();
    assert!(
        distinct.len() >= 2,
        "{kind}: the case exercises several backends: {distinct:?}"
    );
}

#[test]
fn same_choices_as_nginx() {
    let Some(nginx) = nginx_binary() else {
        if required() {
            panic!(
                "nginx is not installed and LB_REQUIRE_NETNS=1: install it (apt-get install nginx)"
            );
        }
        eprintln!("SKIP same_choices_as_nginx: nginx is not installed (apt-get install nginx)");
        return;
    };
    for kind in ["rr", "rr-backup", "ip_hash", "hash", "hash-consistent"] {
        run_case(&nginx, kind);
    }
}
