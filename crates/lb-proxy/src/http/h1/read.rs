//! Reading a response head with `httparse`, and deciding how its body is
//! delimited (RFC 9112 §6.3).

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode, Version};
use lb_core::Outcome;

use super::{MAX_HEAD, MAX_HEADERS};
use crate::pick::{BoxError, OutcomeError};

/// How a response body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// No body: a response to HEAD, a 204 or a 304.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// The chunked coding.
    Chunked,
    /// Everything until the backend closes the connection.
    Close,
}

/// A final response head.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) response: Response<()>,
    pub(crate) kind: Kind,
    /// Whether the connection can take another request once the body is
    /// read (HTTP/1.1, no `Connection: close`, not delimited by the close).
    pub(crate) reusable: bool,
}

/// What the front of the read buffer holds.
#[derive(Debug)]
pub(crate) enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// An interim (1xx) response, now removed from the buffer.
    Interim,
    /// The final response head, removed from the buffer.
    Final(Head),
}

/// A response the client cannot be given.
pub(crate) fn broken(why: impl Into<BoxError>) -> BoxError {
    OutcomeError::new(Outcome::Broken, why).into()
}

/// Parse the response head at the front of `buf` (the answer to a HEAD
/// request when `head_request`).
pub(crate) fn parse(buf: &mut BytesMut, head_request: bool) -> Result<Parsed, BoxError> {
    // Left uninitialised: zeroing room for every possible field would cost
    // more than parsing a usual head.
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut fields,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Err(broken("response head over 64 KiB"));
        }
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(e) => return Err(broken(format!("invalid response head: {e}"))),
    };
    if len > MAX_HEAD {
        return Err(broken("response head over 64 KiB"));
    }
    let code = resp.code.unwrap_or(0);
    let status = StatusCode::from_u16(code)
        .map_err(|_| broken(format!("invalid response status {code}")))?;
    let version = match resp.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    // Where each field sits in the buffer, so names and values can be
    // taken from the shared head bytes without copying.
    // On the stack for the usual few fields, else on the heap.
    let base = buf.as_ptr() as usize;
    let count = resp.headers.len();
    let mut few = [(0, 0, 0, 0); FEW];
    let mut many = Vec::new();
    let spans: &mut [Span] = if count <= FEW {
        &mut few[..count]
    } else {
        many.resize(count, (0, 0, 0, 0));
        &mut many
    };
    let mut delim = Delimiters::default();
    for (span, f) in spans.iter_mut().zip(resp.headers.iter()) {
        delim.note(f.name, f.value);
        let name = f.name.as_ptr() as usize - base;
        let value = f.value.as_ptr() as usize - base;
        *span = (name, name + f.name.len(), value, value + f.value.len());
    }
    let head = buf.split_to(len).freeze();
    if status.is_informational() {
        if status == StatusCode::SWITCHING_PROTOCOLS {
            let msg = "the backend switched protocols on a request that asked for no switch";
            return Err(broken(msg));
        }
        return Ok(Parsed::Interim);
    }
    let kind = delim.kind(status, head_request)?;
    let headers = fields_of(&head, spans)?;
    let reusable = version == Version::HTTP_11 && kind != Kind::Close && !delim.close;
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = headers;
    Ok(Parsed::Final(Head {
        response,
        kind,
        reusable,
    }))
}

/// Where a field's name and value sit in a head: name start and end,
/// value start and end.
type Span = (usize, usize, usize, usize);

/// Fields most heads stay within.
const FEW: usize = 16;

/// The header map of a head, values sharing its bytes.
fn fields_of(head: &Bytes, spans: &[Span]) -> Result<HeaderMap, BoxError> {
    let mut map = HeaderMap::with_capacity(spans.len());
    for &(ns, ne, vs, ve) in spans {
        let name = head.get(ns..ne).unwrap_or_default();
        let name = HeaderName::from_bytes(name)
            .map_err(|_| broken("invalid header name in the response"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(vs..ve))
            .map_err(|_| broken("invalid header value in the response"))?;
        map.append(name, value);
    }
    Ok(map)
}

/// What a response's framing and reuse hang on, noted from its raw fields
/// as they are parsed (no header map lookups).
#[derive(Debug, Default)]
struct Delimiters {
    /// The Content-Length, when every value (comma lists included) is the
    /// same number.
    length: Option<u64>,
    /// A Content-Length value that is not a number, or differs from another.
    bad_length: bool,
    /// With a Transfer-Encoding: whether the last coding is chunked.
    chunked: Option<bool>,
    /// Whether Connection lists `close`.
    close: bool,
}

impl Delimiters {
    fn note(&mut self, name: &str, value: &[u8]) {
        if name.eq_ignore_ascii_case("content-length") {
            for part in value.split(|b| *b == b',') {
                match number(part.trim_ascii()) {
                    Some(n) if self.length.is_none_or(|l| l == n) => self.length = Some(n),
                    _ => self.bad_length = true,
                }
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            let last = value.rsplit(|b| *b == b',').next().unwrap_or_default();
            self.chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case("connection") {
            self.close |= value
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
    }

    /// How the body is delimited (RFC 9112 §6.3).
    fn kind(&self, status: StatusCode, head_request: bool) -> Result<Kind, BoxError> {
        if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            return Ok(Kind::Empty);
        }
        if self.bad_length {
            return Err(broken("invalid Content-Length in the response"));
        }
        match (self.chunked, self.length) {
            (Some(_), Some(_)) => Err(broken(
                "response with both Transfer-Encoding and Content-Length",
            )),
            (Some(true), None) => Ok(Kind::Chunked),
            (Some(false), None) | (None, None) => Ok(Kind::Close),
            (None, Some(0)) => Ok(Kind::Empty),
            (None, Some(n)) => Ok(Kind::Length(n)),
        }
    }
}

/// A decimal number of digits only (no sign, no blanks).
fn number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str, head_request: bool) -> Result<Parsed, BoxError> {
        parse(&mut BytesMut::from(text.as_bytes()), head_request)
    }

    fn kind(text: &str) -> Kind {
        match head(text, false) {
            Ok(Parsed::Final(h)) => h.kind,
            other => panic!("{text:?}: {other:?}"),
        }
    }

    #[test]
    fn framing_follows_rfc_9112() {
        assert_eq!(
            kind("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"),
            Kind::Length(5)
        );
        assert_eq!(
            kind("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n"),
            Kind::Length(5)
        );
        assert_eq!(
            kind("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            Kind::Chunked
        );
        assert_eq!(
            kind("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"),
            Kind::Close
        );
        assert_eq!(kind("HTTP/1.1 200 OK\r\n\r\n"), Kind::Close);
        assert_eq!(
            kind("HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n"),
            Kind::Empty
        );
        assert_eq!(
            kind("HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\n"),
            Kind::Empty
        );
        match head("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", true) {
            Ok(Parsed::Final(h)) => assert_eq!(h.kind, Kind::Empty),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            head("HTTP/1.1 100 Continue\r\n\r\n", false),
            Ok(Parsed::Interim)
        ));
        assert!(matches!(
            head("HTTP/1.1 200 OK\r\ncontent-le", false),
            Ok(Parsed::Partial)
        ));
    }

    #[test]
    fn reuse_needs_http_11_and_no_close() {
        let reusable = |t: &str| match head(t, false) {
            Ok(Parsed::Final(h)) => h.reusable,
            other => panic!("{other:?}"),
        };
        assert!(reusable("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"));
        assert!(!reusable(
            "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
        ));
        assert!(!reusable("HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n"));
        assert!(!reusable("HTTP/1.1 200 OK\r\n\r\n"));
    }

    #[test]
    fn bad_heads_are_errors() {
        for t in [
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999999\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTX/1.1 200 OK\r\n\r\n",
        ] {
            assert!(head(t, false).is_err(), "{t:?}");
        }
        let big = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD));
        assert!(head(&big, false).is_err(), "oversize head");
    }
}
