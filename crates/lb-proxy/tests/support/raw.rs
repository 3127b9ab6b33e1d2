//! Raw HTTP/1.1 exchanges over a TcpStream, and reading responses back.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What came back on one connection.
#[derive(Debug, PartialEq)]
pub enum Answer {
    /// These response statuses, then the connection was closed (`true`) or
    /// left open.
    Statuses(Vec<u16>, bool),
    /// Nothing came back within the limit.
    Stalled(Vec<u16>),
}

/// The statuses of the complete responses at the front of `buf`, and how
/// many bytes they used.
pub fn parse_responses(buf: &[u8]) -> (Vec<u16>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let rest = &buf[at..];
        let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") else {
            return (out, at);
        };
        let head = String::from_utf8_lossy(&rest[..end]).into_owned();
        let status: u16 = head
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line: {head:?}"));
        let mut len = 0usize;
        let mut chunked = false;
        for line in head.lines().skip(1) {
            let (k, v) = line.split_once(':').expect("header line");
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().expect("content-length");
            }
            if k.eq_ignore_ascii_case("transfer-encoding") {
                chunked = true;
            }
        }
        let body = &rest[end + 4..];
        let used = if chunked {
            match body.windows(5).position(|w| w == b"0\r\n\r\n") {
                Some(p) => p + 5,
                None => return (out, at),
            }
        } else if body.len() >= len {
            len
        } else {
            return (out, at);
        };
        if (100..200).contains(&status) {
            at += end + 4 + used;
            continue;
        }
        out.push(status);
        at += end + 4 + used;
    }
}

/// Send `bytes` on a fresh connection and collect the answers: until
/// `want` responses came and (after an error status) the connection closed.
pub async fn exchange(addr: SocketAddr, bytes: &[u8], want: usize, limit: Duration) -> Answer {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("send");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let (statuses, _) = parse_responses(&buf);
        let errored = statuses.iter().any(|s| *s >= 400);
        if statuses.len() >= want && !errored && want > 0 {
            return Answer::Statuses(statuses, false);
        }
        match tokio::time::timeout(limit, s.read(&mut chunk)).await {
            Err(_) => return Answer::Stalled(statuses),
            Ok(Ok(0)) | Ok(Err(_)) => return Answer::Statuses(statuses, true),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Read from `s` until `want` complete responses came, the connection
/// closed, or nothing came for `limit`.
pub async fn read_answer(s: &mut TcpStream, want: usize, limit: Duration) -> Answer {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let (statuses, _) = parse_responses(&buf);
        if statuses.len() >= want && want > 0 {
            return Answer::Statuses(statuses, false);
        }
        match tokio::time::timeout(limit, s.read(&mut chunk)).await {
            Err(_) => return Answer::Stalled(statuses),
            Ok(Ok(0)) | Ok(Err(_)) => return Answer::Statuses(statuses, true),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Whether the peer closed `s` (EOF or reset) without sending anything
/// more, within `limit`.
pub async fn closed_silently(s: &mut TcpStream, limit: Duration) -> bool {
    let mut b = [0u8; 64];
    matches!(
        tokio::time::timeout(limit, s.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}
