//! lb-proxy
//!
//! - [`tcp`]: layer-4 forwarding (HAProxy `mode tcp`): a [`tcp::TcpProxy`]
//!   picks a backend per client connection, retries refused connects on the
//!   next backend, copies both ways with half-close and an idle timeout, and
//!   keeps the live counters and passive health informed.

pub mod nginx_conf;
pub mod tcp;
