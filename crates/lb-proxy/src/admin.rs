//! The admin API: status, metrics and runtime changes of a pool, over HTTP.
//!
//! | request | effect |
//! |---|---|
//! | `GET /status` | the [`crate::status::table`] as text |
//! | `GET /status?format=json` | the same as JSON |
//! | `GET /metrics` | Prometheus text metrics |
//! | `POST /backends/NAME/weight?value=N` | set the weight (0 quiesces) |
//! | `POST /backends/NAME/down`, `/up` | set the health |
//! | `POST /backends/NAME/drain[?deadline=30s]` | [`drain`](crate::drain) in the background |
//! | `POST /backends?name=N&addr=IP:PORT[&weight=W][&backup=1][&max_conns=M]` | add a backend |
//! | `DELETE /backends/NAME` | remove a backend |
//!
//! Every change publishes a new snapshot: requests and connections in
//! flight carry on untouched (a removed backend's keep their counters), new
//! ones see the change at once. Names and values in the URI may be
//! percent-encoded (`addr=%5B%3A%3A1%5D%3A80` for `[::1]:80`).
//!
//! With [`Admin::with_edge`], `/status` and `/metrics` also show the HTTP
//! server's edge counters (requests refused by status, header and body
//! timeouts, open connections, pauses at the connection limit).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use lb_core::{Backend, BackendId, Health};
use lb_sched::Balancer;
use tower_service::Service;

use crate::config::parse_duration;
use crate::http::EdgeStats;
use crate::status;

/// The admin API service (see the [module docs](self)).
#[derive(Clone, Debug)]
pub struct Admin {
    inner: Arc<Inner>,
}

#[derive(Clone, Debug)]
struct Inner {
    lb: Balancer,
    proto: &'static str,
    listen: SocketAddr,
    scheduler: String,
    drain_deadline: Duration,
    edge: Option<Arc<EdgeStats>>,
}

impl Admin {
    /// The admin API of `lb`'s pool, serving `proto` clients on `listen`
    /// with the scheduler named `scheduler` (for the status table).
    pub fn new(lb: Balancer, proto: &'static str, listen: SocketAddr, scheduler: &str) -> Self {
        Admin {
            inner: Arc::new(Inner {
                lb,
                proto,
                listen,
                scheduler: scheduler.to_owned(),
                drain_deadline: Duration::from_secs(30),
                edge: None,
            }),
        }
    }

    /// Show the counters of the HTTP server's edge
    /// ([`Server::stats`](crate::http::Server::stats)) in `/status` and
    /// `/metrics`.
    pub fn with_edge(mut self, stats: Arc<EdgeStats>) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.edge = Some(stats),
            None => {
                let mut inner = Inner::clone(&self.inner);
                inner.edge = Some(stats);
                self.inner = Arc::new(inner);
            }
        }
        self
    }

    /// Answer one request (the same as the service's `call`).
    pub fn handle<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        // Split first, decode each name after: a name may hold an encoded `/`.
        let path = req.uri().path();
        let query = req.uri().query().unwrap_or("");
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let r = match (req.method(), segs.as_slice()) {
            (&Method::GET, ["status"]) => Ok(self.status(query)),
            (&Method::GET, ["metrics"]) => Ok(self.metrics()),
            (&Method::POST, ["backends"]) => self.add(query),
            (&Method::POST, ["backends", name, action]) => self.change(name, action, query),
            (&Method::DELETE, ["backends", name]) => self.remove(name),
            _ => Err((
                StatusCode::NOT_FOUND,
                format!("no such admin request: {} {path}", req.method()),
            )),
        };
        r.unwrap_or_else(|(status, msg)| reply(status, msg + "\n"))
    }

    fn metrics(&self) -> Response<Full<Bytes>> {
        let snap = self.inner.lb.pool().snapshot();
        let mut r = reply(StatusCode::OK, status::prometheus(&self.service(&snap)));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        r
    }

    fn service<'a>(&'a self, snap: &'a lb_core::Snapshot) -> status::Service<'a> {
        status::Service {
            proto: self.inner.proto,
            listen: self.inner.listen,
            scheduler: &self.inner.scheduler,
            snapshot: snap,
            edge: self.inner.edge.as_deref(),
        }
    }

    fn status(&self, query: &str) -> Response<Full<Bytes>> {
        let snap = self.inner.lb.pool().snapshot();
        let s = self.service(&snap);
        if param(query, "format").as_deref() == Some("json") {
            let mut r = reply(StatusCode::OK, status::json(&s));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        } else {
            reply(StatusCode::OK, status::table(&s))
        }
    }

    fn find(&self, name: &str) -> Result<BackendId, (StatusCode, String)> {
        self.inner
            .lb
            .pool()
            .find(name)
            .ok_or_else(|| (StatusCode::NOT_FOUND, format!("no backend named {name:?}")))
    }

    fn change(
        &self,
        name: &str,
        action: &str,
        query: &str,
    ) -> Result<Response<Full<Bytes>>, (StatusCode, String)> {
        let name = percent_decode(name);
        let id = self.find(&name)?;
        let pool = self.inner.lb.pool();
        let bad = |e: lb_core::PoolError| (StatusCode::BAD_REQUEST, e.to_string());
        match action {
            "weight" => {
                let value = param(query, "value")
                    .ok_or((StatusCode::BAD_REQUEST, "weight needs ?value=N".into()))?;
                let w: u64 = value.parse().map_err(|_| {
                    (
                        StatusCode::BAD_REQUEST,
                        format!("weight {value:?} is not a number"),
                    )
                })?;
                pool.set_weight(id, w).map_err(bad)?;
                Ok(reply(StatusCode::OK, format!("{name}: weight {w}\n")))
            }
            "down" | "up" => {
                let h = if action == "up" {
                    Health::Up
                } else {
                    Health::Down
                };
                pool.set_health(id, h).map_err(bad)?;
                Ok(reply(StatusCode::OK, format!("{name}: {h}\n")))
            }
            "drain" => {
                let deadline = match param(query, "deadline") {
                    Some(d) => parse_duration(&d).map_err(|e| (StatusCode::BAD_REQUEST, e))?,
                    None => self.inner.drain_deadline,
                };
                let task = crate::drain(pool.clone(), id, deadline);
                tokio::spawn(async move {
                    if let Err(e) = task.await {
                        tracing::warn!(error = %e, "drain failed");
                    }
                });
                let msg = format!("{name}: draining (weight 0), deadline {deadline:?}\n");
                Ok(reply(StatusCode::ACCEPTED, msg))
            }
            _ => Err((
                StatusCode::NOT_FOUND,
                format!("unknown action {action:?} (weight, down, up, drain)"),
            )),
        }
    }

    fn add(&self, query: &str) -> Result<Response<Full<Bytes>>, (StatusCode, String)> {
        let need =
            |k: &str| param(query, k).ok_or((StatusCode::BAD_REQUEST, format!("missing ?{k}=")));
        let name = need("name")?;
        let addr_text = need("addr")?;
        let addr: SocketAddr = addr_text.parse().map_err(|_| {
            (
                StatusCode::BAD_REQUEST,
                format!("{addr_text:?} is not an IP:PORT address"),
            )
        })?;
        let num = |k: &str, default: u64| -> Result<u64, (StatusCode, String)> {
            match param(query, k) {
                None => Ok(default),
                Some(v) => v.parse().map_err(|_| {
                    (
                        StatusCode::BAD_REQUEST,
                        format!("{k} {v:?} is not a number"),
                    )
                }),
            }
        };
        let backend = Backend::new(name.as_str(), addr)
            .with_weight(num("weight", 1)?)
            .with_max_conns(num("max_conns", 0)?)
            .with_backup(matches!(
                param(query, "backup").as_deref(),
                Some("1" | "true")
            ));
        let id = self
            .inner
            .lb
            .pool()
            .add(backend)
            .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
        Ok(reply(
            StatusCode::CREATED,
            format!("{name}: added as {id}\n"),
        ))
    }

    fn remove(&self, name: &str) -> Result<Response<Full<Bytes>>, (StatusCode, String)> {
        let name = percent_decode(name);
        let id = self.find(&name)?;
        let counters = self
            .inner
            .lb
            .pool()
            .remove(id)
            .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
        let open = counters.conns();
        Ok(reply(
            StatusCode::OK,
            format!("{name}: removed ({open} connection(s) still open carry on)\n"),
        ))
    }
}

impl<B> Service<Request<B>> for Admin {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        std::future::ready(Ok(self.handle(&req)))
    }
}

fn reply(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The first value of `key` in a query string, percent-decoded.
fn param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then(|| percent_decode(v))
    })
}

/// Decode `%XX` escapes (and `+` as a space); invalid escapes stay as they are.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_core::Pool;

    fn admin() -> Admin {
        let pool = Pool::new();
        pool.add(Backend::new("a", "127.0.0.1:9001".parse().unwrap()))
            .unwrap();
        let lb = Balancer::new(pool, lb_sched::build("wrr").unwrap());
        Admin::new(lb, "HTTP", "127.0.0.1:8080".parse().unwrap(), "wrr")
    }

    fn call(a: &Admin, method: Method, uri: &str) -> (StatusCode, String) {
        let req = Request::builder().method(method).uri(uri).body(()).unwrap();
        let r = a.handle(&req);
        let body = r.body().clone();
        let bytes = futures_body(body);
        (r.status(), String::from_utf8(bytes).unwrap())
    }

    fn futures_body(b: Full<Bytes>) -> Vec<u8> {
        use http_body_util::BodyExt;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(b.collect()).unwrap().to_bytes().to_vec()
    }

    #[test]
    fn runtime_changes_show_in_the_status() {
        let a = admin();
        let pool = a.inner.lb.pool().clone();
        assert_eq!(
            call(&a, Method::POST, "/backends/a/weight?value=7").0,
            StatusCode::OK
        );
        assert_eq!(pool.load().members()[0].weight(), 7);
        assert_eq!(call(&a, Method::POST, "/backends/a/down").0, StatusCode::OK);
        assert!(!pool.load().members()[0].is_up());
        assert_eq!(call(&a, Method::POST, "/backends/a/up").0, StatusCode::OK);
        assert!(pool.load().members()[0].is_up());
        let (s, _) = call(
            &a,
            Method::POST,
            "/backends?name=b&addr=%5B%3A%3A1%5D%3A9002&weight=3&backup=1",
        );
        assert_eq!(s, StatusCode::CREATED);
        let b = pool.load().members()[1].clone();
        assert_eq!(
            (b.name(), b.addr().to_string(), b.weight(), b.is_backup()),
            ("b", "[::1]:9002".into(), 3, true)
        );
        let (s, t) = call(&a, Method::GET, "/status");
        assert_eq!(s, StatusCode::OK);
        assert!(t.contains("HTTP 127.0.0.1:8080 wrr"), "{t}");
        assert!(
            t.lines().any(|l| l
                .split_whitespace()
                .take(4)
                .eq(["->", "b", "[::1]:9002", "3"])),
            "{t}"
        );
        let (_, j) = call(&a, Method::GET, "/status?format=json");
        assert!(j.starts_with("{\"proto\":\"HTTP\""), "{j}");
        let (_, m) = call(&a, Method::GET, "/metrics");
        assert!(
            m.contains("lb_backend_weight{backend=\"a\",addr=\"127.0.0.1:9001\"} 7"),
            "{m}"
        );
        let (s, _) = call(
            &a,
            Method::POST,
            "/backends?name=x%2Fy%2541&addr=127.0.0.1:9",
        );
        assert_eq!(s, StatusCode::CREATED);
        assert_eq!(
            call(&a, Method::POST, "/backends/x%2Fy%2541/down").0,
            StatusCode::OK
        );
        assert_eq!(
            pool.load().members()[2].name(),
            "x/y%41",
            "decoded exactly once"
        );
        assert_eq!(
            call(&a, Method::DELETE, "/backends/x%2Fy%2541").0,
            StatusCode::OK
        );
        assert_eq!(call(&a, Method::DELETE, "/backends/b").0, StatusCode::OK);
        assert_eq!(pool.load().len(), 1);
    }

    #[test]
    fn mistakes_are_answered_clearly() {
        let a = admin();
        let cases = [
            (
                Method::POST,
                "/backends/zz/down",
                StatusCode::NOT_FOUND,
                "no backend named \"zz\"",
            ),
            (
                Method::POST,
                "/backends/a/weight?value=x",
                StatusCode::BAD_REQUEST,
                "not a number",
            ),
            (
                Method::POST,
                "/backends/a/weight?value=70000",
                StatusCode::BAD_REQUEST,
                "out of range",
            ),
            (
                Method::POST,
                "/backends/a/weight",
                StatusCode::BAD_REQUEST,
                "?value=N",
            ),
            (
                Method::POST,
                "/backends/a/explode",
                StatusCode::NOT_FOUND,
                "unknown action",
            ),
            (
                Method::POST,
                "/backends?name=a&addr=127.0.0.1:1",
                StatusCode::BAD_REQUEST,
                "already in the pool",
            ),
            (
                Method::POST,
                "/backends?name=c&addr=nowhere",
                StatusCode::BAD_REQUEST,
                "not an IP:PORT",
            ),
            (
                Method::GET,
                "/nothing",
                StatusCode::NOT_FOUND,
                "no such admin request",
            ),
        ];
        for (m, uri, status, words) in cases {
            let (s, t) = call(&a, m, uri);
            assert_eq!(s, status, "{uri}: {t}");
            assert!(t.contains(words), "{uri}: {t}");
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c%2"), "a b c%2");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
    }
}
