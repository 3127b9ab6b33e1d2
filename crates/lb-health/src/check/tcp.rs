//! The TCP connect check (keepalived `TCP_CHECK`, HAProxy's default check).

use tokio::net::TcpStream;

use super::{CheckError, CheckFuture, Checker, FailureKind, Target};

/// Healthy when a TCP connection to the backend's address succeeds.
///
/// The connection is closed with a reset, as HAProxy closes its check
/// connections, so checks leave no `TIME_WAIT` sockets behind.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpCheck;

impl Checker for TcpCheck {
    fn check<'a>(&'a self, target: &'a Target) -> CheckFuture<'a> {
        Box::pin(async move {
            let stream = TcpStream::connect(target.addr()).await.map_err(|e| {
                CheckError::new(
                    FailureKind::Connect,
                    format!("connect to {}: {e}", target.addr()),
                )
            })?;
            let _ = stream.set_zero_linger();
            Ok(())
        })
    }

    fn name(&self) -> &str {
        "tcp"
    }

    fn key(&self) -> Option<String> {
        Some("tcp".to_owned())
    }
}
