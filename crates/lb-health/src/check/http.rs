//! The HTTP GET check (keepalived `HTTP_GET`, HAProxy `option httpchk`): a
//! tiny HTTP/1.1 client on a tokio `TcpStream`.

use std::fmt::Write as _;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::response::{self, Parsed, Response, HEAD_MAX};
use super::{CheckError, CheckFuture, Checker, FailureKind, Target};

/// The default body limit searched for the expected text.
const DEFAULT_MAX_BODY: usize = 64 * 1024;

/// Healthy when `GET path` answers with a status in the expected range
/// (HAProxy's default: 200 to 399) and, when asked, a body that contains
/// the expected text.
///
/// The request is HTTP/1.1 with `Host` set to the configured host, or the
/// backend's `IP:port`, and `Connection: close`. Responses are read with
/// limits (a 16 KiB head, a body up to [`max_body`](Self::max_body)
/// bytes, 64 KiB by default), content-length, chunked and read-until-close
/// bodies are understood, and malformed answers fail the check with a
/// message instead of panicking. The connection is closed with a reset.
///
/// ```
/// use lb_health::{Check, HttpCheck};
/// let check: HttpCheck = Check::http("/healthz")
///     .host("api.example.com")
///     .status(200..300)
///     .body_contains("\"status\":\"ok\"");
/// ```
#[derive(Clone, Debug)]
pub struct HttpCheck {
    path: Arc<str>,
    host: Option<Arc<str>>,
    status: (u16, u16),
    body: Option<Arc<[u8]>>,
    max_body: usize,
}

impl HttpCheck {
    /// `GET path` (it should start with `/`), expecting 200 to 399.
    pub fn new(path: impl Into<Arc<str>>) -> Self {
        HttpCheck {
            path: path.into(),
            host: None,
            status: (200, 399),
            body: None,
            max_body: DEFAULT_MAX_BODY,
        }
    }

    /// The `Host` header (default: the backend's `IP:port`).
    pub fn host(mut self, host: impl Into<Arc<str>>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// The statuses that mean healthy, e.g. `200..=299` or `200..300`.
    pub fn status(mut self, range: impl RangeBounds<u16>) -> Self {
        let lo = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let hi = match range.end_bound() {
            Bound::Included(&e) => e,
            Bound::Excluded(&e) => e.saturating_sub(1),
            Bound::Unbounded => u16::MAX,
        };
        self.status = (lo, hi);
        self
    }

    /// Require the body to contain `text` (searched in the first
    /// [`max_body`](Self::max_body) bytes).
    pub fn body_contains(mut self, text: impl AsRef<[u8]>) -> Self {
        self.body = Some(Arc::from(text.as_ref()));
        self
    }

    /// How many body bytes to read at most when looking for the text.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    fn request(&self, target: &Target) -> Result<String, CheckError> {
        let host = match &self.host {
            Some(h) => h.to_string(),
            None => target.addr().to_string(),
        };
        let unsafe_char = |s: &str| s.chars().any(|c| c.is_control() || c == ' ');
        if unsafe_char(&self.path) || !self.path.starts_with('/') {
            return Err(CheckError::new(
                FailureKind::Protocol,
                format!("invalid check path {:?}: it must start with '/' and hold no spaces or control characters", self.path),
            ));
        }
        if unsafe_char(&host) {
            return Err(CheckError::new(
                FailureKind::Protocol,
                format!("invalid Host {host:?}: no spaces or control characters"),
            ));
        }
        let mut req = String::with_capacity(128);
        let _ = write!(
            req,
            "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: lb-health\r\nAccept: */*\r\nConnection: close\r\n\r\n",
            self.path
        );
        Ok(req)
    }

    async fn fetch(&self, target: &Target) -> Result<Response, CheckError> {
        let req = self.request(target)?;
        let io = |what: &str, e: std::io::Error| {
            CheckError::new(
                FailureKind::Protocol,
                format!("{what} {}: {e}", target.addr()),
            )
        };
        let mut stream = TcpStream::connect(target.addr()).await.map_err(|e| {
            CheckError::new(
                FailureKind::Connect,
                format!("connect to {}: {e}", target.addr()),
            )
        })?;
        let _ = stream.set_nodelay(true);
        stream
            .write_all(req.as_bytes())
            .await
            .map_err(|e| io("write to", e))?;
        let want_body = self.body.is_some();
        let limit = HEAD_MAX + self.max_body.saturating_mul(2) + 4096;
        let mut buf = Vec::with_capacity(4096);
        let mut chunk = [0u8; 4096];
        let result = loop {
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|e| io("read from", e))?;
            buf.extend_from_slice(&chunk[..n]);
            match response::parse(&buf, want_body, self.max_body, n == 0)? {
                Parsed::Done(r) => break r,
                Parsed::More if buf.len() > limit => {
                    return Err(CheckError::new(FailureKind::Protocol, "response too large"));
                }
                Parsed::More => {}
            }
        };
        let _ = stream.set_zero_linger();
        Ok(result)
    }

    fn judge(&self, r: &Response) -> Result<(), CheckError> {
        let (lo, hi) = self.status;
        if !(lo..=hi).contains(&r.status) {
            return Err(CheckError::new(
                FailureKind::Status,
                format!("status {} outside {lo}..={hi}", r.status),
            ));
        }
        if let Some(needle) = &self.body {
            if !contains(&r.body, needle) {
                return Err(CheckError::new(
                    FailureKind::Body,
                    format!(
                        "body does not contain {:?} (searched {} bytes)",
                        String::from_utf8_lossy(needle),
                        r.body.len()
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

impl Checker for HttpCheck {
    fn check<'a>(&'a self, target: &'a Target) -> CheckFuture<'a> {
        Box::pin(async move {
            let r = self.fetch(target).await?;
            self.judge(&r)
        })
    }

    fn name(&self) -> &str {
        "http"
    }

    fn key(&self) -> Option<String> {
        Some(format!(
            "http GET {} host={:?} status={}..={} body={:?} max_body={}",
            self.path, self.host, self.status.0, self.status.1, self.body, self.max_body
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_request() {
        let c = HttpCheck::new("/h").status(200..300);
        assert_eq!(c.status, (200, 299));
        let t = Target::new("127.0.0.1:8080".parse().unwrap(), "a");
        let req = c.request(&t).unwrap();
        assert!(
            req.starts_with("GET /h HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"),
            "{req}"
        );
        assert!(req.ends_with("Connection: close\r\n\r\n"));
        assert!(HttpCheck::new("/a b").request(&t).is_err());
        assert!(HttpCheck::new("x").request(&t).is_err());
        assert!(HttpCheck::new("/").host("a\r\nX: y").request(&t).is_err());
    }

    #[test]
    fn judging() {
        let c = HttpCheck::new("/").status(200..=200).body_contains("ok");
        let r = |status, body: &[u8]| Response {
            status,
            body: body.to_vec(),
        };
        assert!(c.judge(&r(200, b"all ok")).is_ok());
        assert_eq!(
            c.judge(&r(500, b"ok")).unwrap_err().kind(),
            FailureKind::Status
        );
        assert_eq!(
            c.judge(&r(200, b"nope")).unwrap_err().kind(),
            FailureKind::Body
        );
    }
}
