//! Protocol switches (WebSocket) passed through: the client's and the
//! backend's upgraded connections joined byte for byte.

use std::sync::Arc;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::pick::Lease;

/// Wait for both sides to switch, then copy both ways until either closes.
/// The lease keeps the tunnel counted on its backend until then; the bytes
/// moved are added to the backend's counters.
pub(crate) async fn tunnel(client: OnUpgrade, backend: OnUpgrade, lease: Lease, name: Arc<str>) {
    let (client, backend) = match tokio::try_join!(client, backend) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(backend = %name, error = %e, "protocol switch failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut backend = TokioIo::new(backend);
    match tokio::io::copy_bidirectional(&mut client, &mut backend).await {
        Ok((to_backend, from_backend)) => lease.counters().add_bytes(to_backend, from_backend),
        Err(e) => tracing::debug!(backend = %name, error = %e, "upgraded connection ended"),
    }
    drop(lease);
}
