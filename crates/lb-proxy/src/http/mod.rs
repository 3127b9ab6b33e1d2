//! HTTP forwarding with hyper 1.x: [`Forward`] (the per-backend service
//! under [`Balance`]), [`ErrorPages`] (errors as 502 / 503 /
//! 504 responses), [`Server`] (HTTP/1.1 and h2c clients), [`Proxy`], the
//! three composed, and [`Redirect`] (balancing by redirecting clients).
//!
//! ```no_run
//! use lb_core::{Backend, Pool};
//! use lb_proxy::http::{proxy, ForwardConfig, Server};
//! use lb_proxy::BalanceLayer;
//! use lb_sched::Balancer;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = Pool::new();
//! pool.add(Backend::new("a", "127.0.0.1:9001".parse()?))?;
//! pool.add(Backend::new("b", "127.0.0.1:9002".parse()?).with_weight(2))?;
//! let lb = Balancer::new(pool, lb_sched::build("wrr")?);
//! let svc = proxy(BalanceLayer::new(lb), ForwardConfig::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let err = Server::new().serve(listener, svc).await;
//! # Err(err.into())
//! # }
//! ```

use tower_layer::Layer;

mod body;
mod deadline;
pub mod edge;
mod forward;
mod h1;
mod h1srv;
pub(crate) mod headers;
mod idle;
mod pages;
mod pool;
mod readsize;
mod redirect;
mod server;
mod upgrade;

pub use body::BackendBody;
pub use edge::{EdgeStats, Limits};
pub use forward::{Forward, ForwardConfig, ForwardFuture, HostHeader, SlowResponse};
pub use h1::H1Body;
pub use h1srv::ClientBody;
pub use headers::{X_FORWARDED_FOR, X_FORWARDED_PROTO};
pub use idle::IdleBody;
pub use pages::{error_text, text_response, ErrorPages, ErrorPagesLayer, PagesFuture, ProxyBody};
pub use redirect::{Redirect, RedirectFuture, RedirectLayer, Unavailable};
pub use server::Server;

use crate::pick::{Balance, BalanceLayer};

/// A whole HTTP load balancer as one service: errors answered, requests
/// balanced, forwarded to the chosen backend.
pub type Proxy = ErrorPages<Balance<Forward<ClientBody>>>;

/// Build a [`Proxy`] from a balancing layer and forwarding settings.
pub fn proxy(balance: BalanceLayer, forward: ForwardConfig) -> Proxy {
    ErrorPages::new(balance.layer(Forward::new(forward)))
}
