//! Protocol switches (WebSocket) passed through: the client's and the
//! backend's upgraded connections joined byte for byte, with half-close,
//! until both close, nothing moves either way for the tunnel timeout
//! (HAProxy `timeout tunnel`), or a [drain](crate::drain())'s deadline.

use std::sync::Arc;
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::pick::Lease;
use crate::tcp::copy;

/// Wait for both sides to switch, then copy both ways until both close, one
/// fails, nothing moves for `idle`, or a drain cuts it. The lease keeps the
/// tunnel counted on its backend until then; the bytes moved are added to
/// the backend's counters as they go.
pub(crate) async fn tunnel(
    client: OnUpgrade,
    backend: OnUpgrade,
    lease: Lease,
    name: Arc<str>,
    idle: Option<Duration>,
) {
    let (client, backend) = match tokio::try_join!(client, backend) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(backend = %name, error = %e, "protocol switch failed");
            return;
        }
    };
    let client = tokio::io::split(TokioIo::new(client));
    let backend = tokio::io::split(TokioIo::new(backend));
    let moved = copy::join(client, backend, lease.counters(), idle, false, || {}).await;
    tracing::debug!(
        backend = %name, to_backend = moved.to_backend, from_backend = moved.from_backend,
        end = ?moved.end, "upgraded connection ended"
    );
    drop(lease);
}
