//! Shared test support: loopback backends the tests start and stop, a
//! scripted checker for paused-clock tests, and event helpers.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lb_health::{CheckError, CheckFuture, Checker, Event, Target};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

/// How an [`HttpBackend`] answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// `200 OK` with body `ok`.
    Healthy = 0,
    /// `500 Internal Server Error` with body `ok`.
    Error = 1,
    /// `200 OK` with body `nope`.
    WrongBody = 2,
    /// Accepts, reads the request, never answers.
    Hang = 3,
}

const MODES: usize = 4;

/// A tiny HTTP responder on 127.0.0.1 that counts the requests it answers
/// in each mode.
pub struct HttpBackend {
    pub addr: SocketAddr,
    mode: Arc<AtomicU8>,
    served: Arc<[AtomicUsize; MODES]>,
    task: JoinHandle<()>,
}

impl HttpBackend {
    pub async fn start(mode: Mode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mode_cell = Arc::new(AtomicU8::new(mode as u8));
        let served: Arc<[AtomicUsize; MODES]> = Arc::new(Default::default());
        let (m, s) = (mode_cell.clone(), served.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(answer(conn, m.clone(), s.clone()));
            }
        });
        HttpBackend {
            addr,
            mode: mode_cell,
            served,
            task,
        }
    }

    pub fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    pub fn served(&self, mode: Mode) -> usize {
        self.served[mode as usize].load(Ordering::SeqCst)
    }

    pub fn total(&self) -> usize {
        self.served.iter().map(|c| c.load(Ordering::SeqCst)).sum()
    }
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(mut conn: TcpStream, mode: Arc<AtomicU8>, served: Arc<[AtomicUsize; MODES]>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let m = mode.load(Ordering::SeqCst);
    served[usize::from(m)].fetch_add(1, Ordering::SeqCst);
    let reply: &[u8] = match m {
        0 => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        1 => b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 2\r\n\r\nok",
        2 => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nnope\r\n0\r\n\r\n",
        _ => {
            // Hang: hold the connection open, never answer.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return;
        }
    };
    let _ = conn.write_all(reply).await;
}

/// A TCP listener on 127.0.0.1 that can be closed and reopened on the same port.
pub struct TcpBackend {
    pub addr: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl TcpBackend {
    pub async fn start() -> Self {
        let mut b = TcpBackend {
            addr: "127.0.0.1:0".parse().unwrap(),
            task: None,
        };
        b.open();
        b
    }

    /// Listen (again) on the same address.
    pub fn open(&mut self) {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(self.addr).unwrap();
        let listener = socket.listen(64).unwrap();
        self.addr = listener.local_addr().unwrap();
        self.task = Some(tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                drop(conn);
            }
        }));
    }

    /// Stop listening: connections are refused.
    pub async fn close(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }
}

impl Drop for TcpBackend {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// A checker whose verdict per address the test sets, and which records
/// every result it gave.
#[derive(Debug, Default)]
pub struct Scripted {
    healthy: Mutex<HashMap<SocketAddr, bool>>,
    log: Mutex<Vec<(SocketAddr, bool)>>,
}

impl Scripted {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn set(&self, addr: SocketAddr, ok: bool) {
        self.healthy.lock().insert(addr, ok);
    }

    /// Results given for `addr`, oldest first.
    pub fn results(&self, addr: SocketAddr) -> Vec<bool> {
        self.log
            .lock()
            .iter()
            .filter(|(a, _)| *a == addr)
            .map(|(_, ok)| *ok)
            .collect()
    }
}

impl Checker for Scripted {
    fn check<'a>(&'a self, target: &'a Target) -> CheckFuture<'a> {
        let ok = *self.healthy.lock().get(&target.addr()).unwrap_or(&true);
        self.log.lock().push((target.addr(), ok));
        Box::pin(async move {
            if ok {
                Ok(())
            } else {
                Err(CheckError::other("scripted failure"))
            }
        })
    }

    fn name(&self) -> &str {
        "scripted"
    }
}

/// The next event, or a panic after `secs` seconds (of tokio time).
pub async fn next_event(rx: &mut broadcast::Receiver<Event>, secs: u64) -> Event {
    match tokio::time::timeout(Duration::from_secs(secs), rx.recv()).await {
        Ok(Ok(ev)) => ev,
        Ok(Err(e)) => panic!("event stream failed: {e}"),
        Err(_) => panic!("no event within {secs}s"),
    }
}

/// Let spawned tasks (the supervisor's writer) run.
pub async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}
