//! # lb-proxy: tower Layers that balance and forward
//!
//! (crate docs are filled in below as the modules land)

pub mod admin;
pub mod config;
mod drain;
pub mod http;
mod key;
mod pick;
pub mod status;

pub use drain::{drain, Drained};
pub use key::{KeyExtractor, KeyInput, KeyTemplate, KeyTemplateError};
pub use pick::{
    classify, is_idempotent, Balance, BalanceLayer, BoxError, ClientAddr, Error, Lease, LeasedBody,
    LocalAddr, OutcomeError, ResponseFuture, Retry, Upstream, UpstreamBody, MAX_TRIES,
    RETRYABLE_STATUSES,
};
