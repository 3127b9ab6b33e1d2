//! The response head in one buffer, framed as hyper's server frames it
//! (RFC 9112 §6): `Content-Length` when the body's length is known,
//! chunked to an HTTP/1.1 client otherwise, close-delimited to an HTTP/1.0
//! one; no body for HEAD, 1xx, 204 and 304; a `Date` field; keep-alive
//! decided as hyper decides it.

use std::cell::RefCell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderValue};
use http::response::Parts;
use http::{Method, StatusCode, Version};

/// How the body goes out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body bytes at all (HEAD, 204, 304, 1xx, or an empty body).
    Empty,
    /// This many bytes.
    Length(u64),
    /// Chunked.
    Chunked,
    /// Until the connection closes.
    Close,
}

/// What the request says about its response.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Asked {
    pub(crate) version: Version,
    pub(crate) head_method: bool,
    pub(crate) keep_alive: bool,
}

/// The body as the head announces it: none (ended already), a known
/// length, or unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BodyLen {
    None,
    Known(u64),
    Unknown,
}

/// Write the head of `parts` into `out`: its framing, and whether the
/// connection goes on after it.
pub(crate) fn head(
    out: &mut Vec<u8>,
    parts: &Parts,
    asked: Asked,
    body: BodyLen,
) -> (Framing, bool) {
    let status = parts.status;
    let http10 = asked.version == Version::HTTP_10;
    let version10 = http10 || parts.version == Version::HTTP_10;
    out.reserve(64 + parts.headers.len() * 32);
    if !version10 && status == StatusCode::OK {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        out.extend_from_slice(if version10 {
            b"HTTP/1.0 "
        } else {
            b"HTTP/1.1 "
        });
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let head_method = asked.head_method;
    let can_chunk = !head_method && can_have_length(status);
    let mut framing = None;
    let mut wrote_date = false;
    let mut says = Tokens::default();
    for (name, value) in &parts.headers {
        match *name {
            header::CONTENT_LENGTH => {
                if body == BodyLen::None && !head_method || framing.is_some() {
                    continue;
                }
                let len = match body {
                    BodyLen::Known(n) => n,
                    _ => match digits(value.as_bytes()) {
                        Some(n) => n,
                        None => continue,
                    },
                };
                framing = Some(Framing::Length(len));
            }
            header::TRANSFER_ENCODING => {
                if version10 || !can_chunk || framing.is_some() {
                    continue;
                }
                framing = Some(Framing::Chunked);
                out.extend_from_slice(b"transfer-encoding: ");
                out.extend_from_slice(value.as_bytes());
                if !ends_chunked(value) {
                    out.extend_from_slice(b", chunked");
                }
                out.extend_from_slice(b"\r\n");
                continue;
            }
            header::CONNECTION => says.note(value),
            header::DATE => wrote_date = true,
            _ => {}
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let mut keep_alive = asked.keep_alive;
    if http10 {
        // hyper's `fix_keep_alive`: an HTTP/1.0 client is answered in
        // HTTP/1.0, keep-alive only when said.
        if !says.keep_alive {
            if parts.version == Version::HTTP_10 {
                keep_alive = false;
            } else if keep_alive {
                out.extend_from_slice(b"connection: keep-alive\r\n");
            }
        }
    } else if !keep_alive && !says.close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    if says.close || status.is_informational() {
        // A 1xx is never a final answer here (protocol switches go through
        // hyper): the connection cannot go on after one.
        keep_alive = false;
    }
    let framing = match framing {
        Some(f) => f,
        None => match body {
            BodyLen::Unknown if version10 || !can_chunk => Framing::Close,
            BodyLen::Unknown => {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
                Framing::Chunked
            }
            BodyLen::None | BodyLen::Known(0) => {
                if can_have_length(status) && !head_method {
                    out.extend_from_slice(b"content-length: 0\r\n");
                }
                Framing::Length(0)
            }
            BodyLen::Known(n) => {
                if can_have_length(status) {
                    out.extend_from_slice(b"content-length: ");
                    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
                Framing::Length(n)
            }
        },
    };
    if !wrote_date {
        out.extend_from_slice(b"date: ");
        extend_date(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    let framing = match framing {
        _ if head_method || !can_have_length(status) => Framing::Empty,
        Framing::Length(0) => Framing::Empty,
        Framing::Close => {
            keep_alive = false;
            Framing::Close
        }
        f => f,
    };
    (framing, keep_alive)
}

/// Whether the request may be answered in this server at all (hyper
/// answers 1xx from a service with 500; they never come from ours).
fn can_have_length(status: StatusCode) -> bool {
    !status.is_informational()
        && status != StatusCode::NO_CONTENT
        && status != StatusCode::NOT_MODIFIED
}

/// The tokens of the response's `Connection` fields that matter here.
#[derive(Default)]
struct Tokens {
    close: bool,
    keep_alive: bool,
}

impl Tokens {
    fn note(&mut self, v: &HeaderValue) {
        for token in v.as_bytes().split(|b| *b == b',').map(<[u8]>::trim_ascii) {
            self.close |= token.eq_ignore_ascii_case(b"close");
            self.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
        }
    }
}

fn ends_chunked(v: &HeaderValue) -> bool {
    v.as_bytes()
        .rsplit(|b| *b == b',')
        .next()
        .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

fn digits(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for b in v {
        n = n
            .checked_mul(10)?
            .checked_add(u64::from(b.checked_sub(b'0').filter(|d| *d < 10)?))?;
    }
    Some(n)
}

/// Whether a request method asks for a response without a body.
pub(crate) fn is_head(m: &Method) -> bool {
    m == Method::HEAD
}

/// The length of an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
const DATE_LEN: usize = 29;

thread_local! {
    /// The `Date` value of the current second, per thread.
    static DATE: RefCell<(u64, [u8; DATE_LEN])> = const { RefCell::new((u64::MAX, [0; DATE_LEN])) };
}

/// Append the current date, formatted once a second.
fn extend_date(out: &mut Vec<u8>) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let secs = now.as_secs();
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs {
            let text = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
            if text.len() == DATE_LEN {
                d.1.copy_from_slice(text.as_bytes());
                d.0 = secs;
            }
        }
        out.extend_from_slice(&d.1);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Response;

    fn wrote(resp: Response<()>, asked: Asked, body: BodyLen) -> (String, Framing, bool) {
        let (parts, ()) = resp.into_parts();
        let mut out = Vec::new();
        let (f, ka) = head(&mut out, &parts, asked, body);
        let text = String::from_utf8(out).unwrap();
        let date = text.find("date: ").unwrap();
        let text = format!("{}{}", &text[..date], &text[date + 6 + DATE_LEN + 2..]);
        (text, f, ka)
    }

    const GET11: Asked = Asked {
        version: Version::HTTP_11,
        head_method: false,
        keep_alive: true,
    };

    #[test]
    fn sized_and_chunked_and_close_delimited() {
        let (t, f, ka) = wrote(Response::new(()), GET11, BodyLen::Known(3));
        assert_eq!(t, "HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n");
        assert_eq!((f, ka), (Framing::Length(3), true));
        let (t, f, _) = wrote(Response::new(()), GET11, BodyLen::Unknown);
        assert_eq!(t, "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
        assert_eq!(f, Framing::Chunked);
        let asked = Asked {
            version: Version::HTTP_10,
            ..GET11
        };
        let (t, f, ka) = wrote(Response::new(()), asked, BodyLen::Unknown);
        assert_eq!(t, "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\n\r\n");
        assert_eq!((f, ka), (Framing::Close, false));
    }

    #[test]
    fn no_body_for_head_204_304() {
        let asked = Asked {
            head_method: true,
            ..GET11
        };
        let (t, f, _) = wrote(Response::new(()), asked, BodyLen::Known(5));
        assert_eq!(t, "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n");
        assert_eq!(f, Framing::Empty);
        let mut r = Response::new(());
        *r.status_mut() = StatusCode::NO_CONTENT;
        let (t, f, _) = wrote(r, GET11, BodyLen::None);
        assert_eq!(t, "HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!(f, Framing::Empty);
        let mut r = Response::new(());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        let (t, f, _) = wrote(r, GET11, BodyLen::Unknown);
        assert_eq!(t, "HTTP/1.1 304 Not Modified\r\n\r\n");
        assert_eq!(f, Framing::Empty);
    }

    #[test]
    fn keep_alive_as_hyper_decides() {
        let asked = Asked {
            keep_alive: false,
            ..GET11
        };
        let (t, _, ka) = wrote(Response::new(()), asked, BodyLen::None);
        assert_eq!(
            t,
            "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
        );
        assert!(!ka);
        let r = Response::builder()
            .header("connection", "close")
            .body(())
            .unwrap();
        let (t, _, ka) = wrote(r, GET11, BodyLen::None);
        // The service's fields first, then the framing hyper adds.
        assert_eq!(
            t,
            "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
        );
        assert!(!ka);
        let asked = Asked {
            version: Version::HTTP_10,
            keep_alive: false,
            ..GET11
        };
        let (t, _, ka) = wrote(Response::new(()), asked, BodyLen::Known(1));
        assert_eq!(t, "HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n");
        assert!(!ka);
    }
}
