//! # lb-proxy: tower Layers that balance and forward
//!
//! Put a pool of backends behind any of lb's LVS- and nginx-exact
//! schedulers, as tower middleware:
//!
//! | piece | what it does |
//! |---|---|
//! | [`BalanceLayer`] / [`Balance`] | picks a backend per request in `call` (lock-free, no queue), hands the request to an inner per-backend service with the choice in an [`Upstream`] extension, keeps it counted on the backend until the response body ends, reports every attempt's [`Outcome`](lb_core::Outcome) to an [`Observer`](lb_core::Observer) and the backend's counters, and retries on backends not yet tried when [`Retry`] allows |
//! | [`KeyTemplate`] | the hash key of a request in nginx's syntax (`$remote_addr`, `$request_uri`, `$http_NAME`, `$cookie_NAME`, `$arg_NAME`...) |
//! | [`http::Forward`] | forwards to the chosen backend with its own HTTP/1.1 client (hyper 1.x for protocol switches, `CONNECT`, `Expect: 100-continue`): pooled keep-alive, streaming bodies, hop-by-hop and `X-Forwarded-*` / `Forwarded` headers, Host policy, WebSocket pass-through, timeouts |
//! | [`http::ErrorPages`] | answers failures: 503 no backend or none could be connected to, 504 response timeout, 502 otherwise, 400 when the client's body broke off |
//! | [`http::Server`] | HTTP/1.1 and h2c clients on one listener, with client addresses, behind [the edge](http::edge): strict RFC 9112 parsing of every request (smuggling vectors refused), 408 header timeout, URI / header block / field count limits, a cap on open connections |
//! | [`http::RedirectLayer`] | balancing by `302` redirects to the chosen backend |
//! | [`drain()`] | quiesce a backend, wait for its connections to finish, close what is left at the deadline |
//! | [`tcp::TcpProxy`] | layer-4 forwarding (HAProxy `mode tcp`): a backend per client connection, refused connects retried on the next backend, both directions copied with half-close and an idle timeout |
//! | [`nginx_conf`] | nginx `upstream { ... }` blocks (or a whole `nginx.conf`) as configuration |
//! | [`config`], [`status`], [`admin`] | nginx-upstream-like TOML configuration, `ipvsadm -Ln`-like status, Prometheus metrics, and an HTTP admin API for runtime changes |
//!
//! A whole HTTP load balancer, end to end on loopback:
//!
//! ```
//! use std::convert::Infallible;
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Empty, Full};
//! use lb_core::{Backend, Pool};
//! use lb_proxy::http::{proxy, ForwardConfig, Server};
//! use lb_proxy::{BalanceLayer, KeyTemplate, Retry};
//! use lb_sched::Balancer;
//! use tokio::net::TcpListener;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Two backends that answer with their name.
//! let pool = Pool::new();
//! for name in ["a", "b"] {
//!     let listener = TcpListener::bind("127.0.0.1:0").await?;
//!     pool.add(Backend::new(name, listener.local_addr()?))?;
//!     let hello = tower::service_fn(move |_req: http::Request<lb_proxy::http::ClientBody>| async move {
//!         Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(name))))
//!     });
//!     tokio::spawn(Server::new().serve(listener, hello));
//! }
//!
//! // The balancer: round robin, two tries per request, keyed on the client.
//! let lb = Balancer::new(pool, lb_sched::build("rr")?);
//! let layer = BalanceLayer::new(lb)
//!     .key("$remote_addr".parse::<KeyTemplate>()?)
//!     .retry(Retry::default().tries(2));
//! let listener = TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! tokio::spawn(Server::new().serve(listener, proxy(layer, ForwardConfig::default())));
//!
//! // Clients see the backends take turns.
//! let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
//!     .build_http::<Empty<Bytes>>();
//! let mut seen = String::new();
//! for _ in 0..4 {
//!     let resp = client.get(format!("http://{addr}/").parse()?).await?;
//!     seen.push_str(std::str::from_utf8(&resp.into_body().collect().await?.to_bytes())?);
//! }
//! assert_eq!(seen, "abab");
//! # Ok(())
//! # }
//! ```
//!
//! The inner service of [`Balance`] is any
//! `Service<Request<UpstreamBody<B>>>`: wrap [`http::Forward`] in your own
//! tower layers (rate limits, tracing, header rules), or forward by other
//! means, reading the [`Upstream`] extension and reporting failures through
//! [`OutcomeError`].

pub mod admin;
pub mod config;
mod drain;
pub mod http;
mod key;
pub mod nginx_conf;
mod pick;
pub mod status;
pub mod tcp;

pub use drain::{drain, Drained};
pub use key::{KeyExtractor, KeyInput, KeyTemplate, KeyTemplateError};
pub use pick::{
    classify, is_idempotent, Balance, BalanceLayer, BoxError, ClientAddr, Error, Lease, LeasedBody,
    LocalAddr, OutcomeError, ResponseFuture, Retry, Upstream, UpstreamBody, MAX_TRIES,
    RETRYABLE_STATUSES,
};
