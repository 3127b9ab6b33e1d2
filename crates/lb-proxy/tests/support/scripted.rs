//! Scripted raw HTTP/1.1 backends: each accepted connection runs a test's
//! own script over the bare socket, so every byte and every connection is
//! the test's; connections accepted and ends of stream read are counted.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A raw backend: each accepted connection runs the script with its
/// number (0 for the first).
pub struct Raw {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
    /// Connections on which the backend read an end-of-file.
    pub eofs: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Raw {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Script = Arc<dyn Fn(Conn) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// One backend connection as a script sees it.
pub struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
    /// The connection's number, 0 for the first.
    pub n: usize,
    eofs: Arc<AtomicUsize>,
}

impl Conn {
    /// The next request's head (its body, if any, left in the buffer), or
    /// `None` at the end of the stream.
    pub async fn head(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 4);
                return Some(head);
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 64 * 1024];
        match self.s.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                self.eofs.fetch_add(1, Ordering::SeqCst);
                false
            }
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// A request head and its `Content-Length` body.
    pub async fn request(&mut self) -> Option<(String, Vec<u8>)> {
        let head = self.head().await?;
        let len = header(&head, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0usize);
        while self.buf.len() < len {
            if !self.fill().await {
                return None;
            }
        }
        let body = self.buf.drain(..len).collect();
        Some((head, body))
    }

    pub async fn send(&mut self, bytes: &[u8]) -> bool {
        self.s.write_all(bytes).await.is_ok()
    }
}

/// The value of header `name` in a request head.
pub fn header(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

/// Start a raw backend running `script` on each connection.
pub async fn raw<F, Fut>(script: F) -> Raw
where
    F: Fn(Conn) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let script: Script = Arc::new(move |c| Box::pin(script(c)));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let eofs = Arc::new(AtomicUsize::new(0));
    let (a, e) = (accepted.clone(), eofs.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            let n = a.fetch_add(1, Ordering::SeqCst);
            let conn = Conn {
                s,
                buf: Vec::new(),
                n,
                eofs: e.clone(),
            };
            tokio::spawn(script(conn));
        }
    });
    Raw {
        addr,
        accepted,
        eofs,
        task,
    }
}

/// A backend that answers every request on a connection with `answer`.
pub async fn answering(answer: &'static [u8]) -> Raw {
    raw(move |mut c| async move {
        while c.request().await.is_some() {
            if !c.send(answer).await {
                return;
            }
        }
    })
    .await
}
