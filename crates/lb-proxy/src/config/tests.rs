use super::*;

const GOOD: &str = r#"
listen = "127.0.0.1:8080"
admin = "[::1]:8081"
scheduler = "wrr"
hash_key = "$remote_addr"
host = "backend"
upstream_send_buffer_kib = 512

[persistence]
timeout = "300s"
netmask = "255.255.255.0"

[timeouts]
connect = "500ms"
response = 30
idle = "2m"

[retry]
tries = 4
timeout = "10s"
on_status = [502, 504]

[health]
interval = "1s"
path = "/healthz"
max_fails = 3

[[backend]]
name = "web1"
addr = "127.0.0.1:9001"
weight = 2

[[backend]]
addr = "[::1]:9002"
backup = true
down = true
max_conns = 10

[limits]
max_connections = 500
max_header_bytes = 16384
max_body_mib = 8
"#;

#[test]
fn a_full_config_parses() {
    let c = Config::from_toml(GOOD).unwrap();
    assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(c.admin, Some("[::1]:8081".parse().unwrap()));
    assert_eq!(
        c.hash_key.as_ref().map(|k| k.as_str()),
        Some("$remote_addr")
    );
    assert_eq!(c.host, HostHeader::Backend);
    let p = c.persistence.unwrap();
    assert_eq!(p.spec(), "persist 300 netmask=255.255.255.0");
    assert_eq!(c.timeouts.connect, Duration::from_millis(500));
    assert_eq!(c.timeouts.response, Duration::from_secs(30));
    assert_eq!(c.timeouts.idle, Duration::from_secs(120));
    assert_eq!(
        c.timeouts.client_header,
        Duration::from_secs(10),
        "default kept"
    );
    assert_eq!(c.limits.max_connections, 500);
    assert_eq!(c.limits.max_header_bytes, 16384);
    assert_eq!(c.limits.max_uri_bytes, 8192, "default kept");
    assert_eq!(c.limits.max_headers, 100, "default kept");
    let server = c.server();
    let l = server.limits();
    assert_eq!(l.header_read_timeout, Some(Duration::from_secs(10)));
    assert_eq!(l.max_connections, Some(500));
    assert_eq!(
        (l.max_uri_bytes, l.max_header_bytes, l.max_headers),
        (8192, 16384, 100)
    );
    assert_eq!(c.upstream_send_buffer_kib, 512);
    assert_eq!(c.forward_config().upstream_send_buffer, Some(512 << 10));
    assert_eq!(c.limits.max_body_mib, 8);
    assert_eq!(l.max_body_bytes, Some(8 << 20));
    let unlimited =
        Config::from_toml("listen = \"127.0.0.1:1\"\n[[backend]]\naddr = \"127.0.0.1:2\"\n")
            .unwrap()
            .server();
    assert_eq!(
        unlimited.limits().max_body_bytes,
        None,
        "no limit by default"
    );
    let defaults =
        Config::from_toml("listen = \"127.0.0.1:1\"\n[[backend]]\naddr = \"127.0.0.1:2\"\n")
            .unwrap();
    assert_eq!(
        defaults.forward_config().upstream_send_buffer,
        Some(1 << 20)
    );
    let autotuned = Config::from_toml(
        "listen = \"127.0.0.1:1\"\nupstream_send_buffer_kib = 0\n[[backend]]\naddr = \"127.0.0.1:2\"\n",
    )
    .unwrap();
    assert_eq!(
        autotuned.forward_config().upstream_send_buffer,
        None,
        "0: the kernel's autotuning"
    );
    assert_eq!(c.retry.max_tries(), 4);
    assert_eq!(c.retry.statuses().collect::<Vec<_>>(), vec![502, 504]);
    assert!(c.health.enabled);
    assert_eq!(c.health.max_fails, 3);
    assert_eq!(c.health.path.as_deref(), Some("/healthz"));
    assert_eq!(
        (
            c.health.fastinter,
            c.health.downinter,
            c.health.slow_response
        ),
        (None, None, None),
        "defaults: interval / 4, interval, the probe timeout"
    );
    assert_eq!(c.backends.len(), 2);
    assert_eq!(
        c.backends[1].name, "[::1]:9002",
        "the name defaults to the address"
    );
    assert!(c.backends[1].backup && c.backends[1].down);
    let lb = c.balancer().unwrap();
    let snap = lb.pool().load();
    assert_eq!(snap.members()[0].weight(), 2);
    assert!(!snap.members()[1].is_up());
}

/// `GOOD` with `from` replaced by `to` must fail on the line holding
/// `at`, with a message holding every one of `words`.
fn mistake(from: &str, to: &str, at: &str, words: &[&str]) {
    assert!(GOOD.contains(from), "{from}");
    let text = GOOD.replacen(from, to, 1);
    let line = text
        .lines()
        .position(|l| l.contains(at))
        .expect("marker line")
        + 1;
    let e = Config::from_toml(&text).unwrap_err();
    let shown = e.to_string();
    assert_eq!(e.line, Some(line), "{shown}");
    for w in words {
        assert!(shown.contains(w), "{shown:?} should mention {w:?}");
    }
}

#[test]
fn each_kind_of_mistake_names_the_key_and_the_problem() {
    mistake(
        "admin =",
        "admn =",
        "admn",
        &["unknown field `admn`", "listen"],
    );
    mistake(
        "idle = \"2m\"",
        "idle = \"2m\"\nidel = 3",
        "idel",
        &["unknown field `idel`"],
    );
    mistake(
        "127.0.0.1:9001",
        "127.0.0.1",
        "\"127.0.0.1\"",
        &["backend[0].addr: \"127.0.0.1\" is not an IP:PORT address"],
    );
    mistake(
        "127.0.0.1:8080",
        "localhost:8080",
        "localhost",
        &["listen: ", "not an IP:PORT"],
    );
    mistake(
        "\"wrr\"",
        "\"wlcx\"",
        "wlcx",
        &["scheduler: unknown scheduler \"wlcx\""],
    );
    mistake(
        "\"wrr\"",
        "\"rr port\"",
        "rr port",
        &["scheduler: ", "\"port\""],
    );
    mistake(
        "weight = 2",
        "weight = 70000",
        "70000",
        &["backend[0].weight: 70000 is out of range (0..=65535)"],
    );
    mistake(
        "weight = 2",
        "weight = -1",
        "-1",
        &["backend[0].weight: -1 is out of range"],
    );
    mistake("weight = 2", "weight = \"two\"", "two", &["invalid type"]);
    mistake(
        "addr = \"[::1]:9002\"",
        "name = \"web1\"\naddr = \"[::1]:9002\"",
        "[::1]:9002",
        &["backend[1].name: duplicate backend name \"web1\""],
    );
    mistake(
        "$remote_addr",
        "$remote",
        "$remote",
        &["hash_key: ", "unknown variable $remote"],
    );
    mistake(
        "\"500ms\"",
        "\"5 parsecs\"",
        "parsecs",
        &["timeouts.connect: ", "unknown unit"],
    );
    mistake(
        "[502, 504]",
        "[501]",
        "[501]",
        &["retry.on_status: ", "501"],
    );
    mistake(
        "upstream_send_buffer_kib = 512",
        "upstream_send_buffer_kib = 70000",
        "upstream_send_buffer_kib",
        &["upstream_send_buffer_kib: 70000 is out of range (0..=65536)"],
    );
    mistake(
        "max_body_mib = 8",
        "max_body_mib = -8",
        "max_body_mib",
        &["limits.max_body_mib: -8 is out of range (0..=1048576)"],
    );
    mistake(
        "max_connections = 500",
        "max_connections = -1",
        "max_connections",
        &["limits.max_connections: -1 is out of range (0..=10000000)"],
    );
    mistake(
        "max_header_bytes = 16384",
        "max_header_bytes = 100",
        "max_header_bytes",
        &["limits.max_header_bytes: 100 is out of range (1024..=262144)"],
    );
    mistake(
        "max_connections = 500",
        "max_conections = 500",
        "max_conections",
        &["unknown field `max_conections`", "max_connections"],
    );
    mistake(
        "tries = 4",
        "tries = 0",
        "tries",
        &["retry.tries: 0 is out of range (1..=16)"],
    );
    mistake(
        "\"255.255.255.0\"",
        "\"255.0.255.0\"",
        "255.0.255.0",
        &["persistence.netmask: "],
    );
    mistake(
        "\"wrr\"",
        "\"rr\"",
        "\"[::1]:9002\"",
        &["backend[1].backup: scheduler rr does not support backup"],
    );
}

#[test]
fn health_intervals_and_slow_response() {
    let text = GOOD.replacen(
        "max_fails = 3",
        "max_fails = 3\nfastinter = \"250ms\"\ndowninter = \"5s\"\nslow_response = \"800ms\"",
        1,
    );
    let h = Config::from_toml(&text).unwrap().health;
    assert_eq!(h.fastinter, Some(Duration::from_millis(250)));
    assert_eq!(h.downinter, Some(Duration::from_secs(5)));
    assert_eq!(h.slow_response, Some(Duration::from_millis(800)));
    let off = GOOD.replacen("max_fails = 3", "slow_response = 0", 1);
    let h = Config::from_toml(&off).unwrap().health;
    assert_eq!(h.slow_response, Some(Duration::ZERO), "0 turns it off");
    mistake(
        "max_fails = 3",
        "fastinter = \"0ms\"",
        "fastinter",
        &["health.fastinter: ", "too short"],
    );
    mistake(
        "max_fails = 3",
        "downinter = \"soon\"",
        "downinter",
        &["health.downinter: ", "not a duration"],
    );
    mistake(
        "max_fails = 3",
        "slow_response = \"1 fortnight\"",
        "slow_response",
        &["health.slow_response: ", "unknown unit"],
    );
    mistake(
        "max_fails = 3",
        "fast_inter = \"1s\"",
        "fast_inter",
        &["unknown field `fast_inter`", "fastinter"],
    );
}

#[test]
fn client_body_and_tunnel_timeouts() {
    let c = Config::from_toml(GOOD).unwrap();
    assert_eq!(
        c.timeouts.client_body,
        Duration::from_secs(60),
        "nginx's default"
    );
    assert_eq!(c.timeouts.tunnel, Duration::from_secs(3600));
    let text = GOOD.replacen(
        "idle = \"2m\"",
        "idle = \"2m\"\nclient_body = \"15s\"\ntunnel = \"10m\"",
        1,
    );
    let t = Config::from_toml(&text).unwrap().timeouts;
    assert_eq!(t.client_body, Duration::from_secs(15));
    assert_eq!(t.tunnel, Duration::from_secs(600));
    mistake(
        "idle = \"2m\"",
        "client_body = \"slowly\"",
        "client_body",
        &["timeouts.client_body: ", "not a duration"],
    );
    mistake(
        "idle = \"2m\"",
        "tunnel = -1",
        "tunnel",
        &["timeouts.tunnel: "],
    );
}

#[test]
fn cross_field_mistakes_are_caught() {
    let e = Config::from_toml("listen = \"127.0.0.1:1\"\n").unwrap_err();
    assert!(e.to_string().contains("no backend configured"), "{e}");
    let e = Config::from_toml("[[backend]]\naddr = \"127.0.0.1:1\"\n").unwrap_err();
    assert!(e.to_string().contains("listen: missing"), "{e}");
    let e = Config::from_toml("listen = [\n").unwrap_err();
    assert!(e.line.is_some(), "{e}");
}

#[test]
fn load_names_the_file() {
    let dir = std::env::temp_dir().join(format!("lb-proxy-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(&path, GOOD.replacen("weight = 2", "weight = 70000", 1)).unwrap();
    let e = Config::load(&path).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{}:31: backend[0].weight", path.display())),
        "{e}"
    );
    let e = Config::load(&dir.join("missing.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.toml: cannot read"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn command_line_backend_specs() {
    let b: BackendConfig = "127.0.0.1:9002,weight=2,name=b,backup,down,max_conns=7"
        .parse()
        .unwrap();
    assert_eq!(
        (b.name.as_str(), b.weight, b.backup, b.down, b.max_conns),
        ("b", 2, true, true, 7)
    );
    let b: BackendConfig = "[::1]:80".parse().unwrap();
    assert_eq!((b.name.as_str(), b.weight), ("[::1]:80", 1));
    for (spec, why) in [
        ("nope", "not an IP:PORT"),
        (
            "127.0.0.1:1,weight=70000",
            "weight needs a number in 0..=65535",
        ),
        ("127.0.0.1:1,heavy", "unknown option \"heavy\""),
        ("127.0.0.1:1,weight", "unknown option"),
    ] {
        let e = spec.parse::<BackendConfig>().unwrap_err().to_string();
        assert!(e.contains(why), "{spec}: {e}");
    }
    let dup = vec![
        "127.0.0.1:1".parse().unwrap(),
        "127.0.0.1:1".parse().unwrap(),
    ];
    let e = Config::simple("127.0.0.1:0".parse().unwrap(), dup, "rr").unwrap_err();
    assert!(e.to_string().contains("duplicate backend name"), "{e}");
}

#[test]
fn durations() {
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
    assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    assert!(parse_duration("s").is_err());
    assert!(parse_duration("-1s").is_err());
    assert!(parse_duration("1.5s").is_err());
}

#[test]
fn nginx_upstream_maps_to_a_config() {
    let conf = crate::nginx_conf::parse(
        "upstream u {\n  hash $request_uri consistent;\n  server 127.0.0.1:9001 max_fails=3 fail_timeout=30s;\n  server 127.0.0.1:9002 weight=2;\n  keepalive 16;\n}\n",
    )
    .unwrap();
    let c = Config::from_nginx(
        conf.upstream(None).unwrap(),
        "127.0.0.1:8080".parse().unwrap(),
    )
    .unwrap();
    assert_eq!(c.scheduler, "hash consistent");
    assert!(c.hash_key.is_some());
    assert_eq!(
        (c.health.max_fails, c.health.fail_timeout.as_secs()),
        (3, 30)
    );
    assert_eq!(c.forward_config().max_idle_per_backend, 16);
    assert_eq!(c.backends[1].weight, 2);
    assert_eq!(c.backends[0].server_text.as_deref(), Some("127.0.0.1:9001"));
    c.balancer().unwrap();
}
