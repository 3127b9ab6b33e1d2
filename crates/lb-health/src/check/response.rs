//! A small, defensive parser of HTTP/1.x responses, fed a growing buffer.
//!
//! It never panics and never trusts a length: the head is limited to
//! [`HEAD_MAX`] bytes, the body to the caller's limit, and every number is
//! checked.

use super::{CheckError, FailureKind};

/// The largest response head accepted.
pub(crate) const HEAD_MAX: usize = 16 * 1024;

/// The longest chunk-size line accepted.
const CHUNK_LINE_MAX: usize = 1024;

/// A parsed response: the final status and the (decoded, possibly
/// truncated) body.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
}

/// What the buffer holds so far.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// Not enough yet: read more.
    More,
    /// A complete answer (the body up to `max_body` bytes when asked for).
    Done(Response),
}

enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

fn bad(message: impl Into<std::sync::Arc<str>>) -> CheckError {
    CheckError::new(FailureKind::Protocol, message)
}

/// Parse the response in `buf`. `eof` says the peer closed the connection,
/// so no more bytes will come. Interim 1xx responses are skipped.
pub(crate) fn parse(
    buf: &[u8],
    want_body: bool,
    max_body: usize,
    eof: bool,
) -> Result<Parsed, CheckError> {
    let mut rest = buf;
    loop {
        let Some(head_len) = head_end(rest) else {
            if rest.len() > HEAD_MAX {
                return Err(bad("response head is longer than 16 KiB"));
            }
            if eof {
                return Err(bad(if rest.is_empty() {
                    "connection closed without a response"
                } else {
                    "connection closed inside the response head"
                }));
            }
            return Ok(Parsed::More);
        };
        if head_len > HEAD_MAX {
            return Err(bad("response head is longer than 16 KiB"));
        }
        let (status, framing) = parse_head(&rest[..head_len])?;
        let body = &rest[head_len..];
        if (100..200).contains(&status) && status != 101 {
            rest = body;
            continue;
        }
        if !want_body {
            return Ok(Parsed::Done(Response {
                status,
                body: Vec::new(),
            }));
        }
        let body = match framing {
            Framing::Length(n) => {
                let want = usize::try_from(n).unwrap_or(usize::MAX).min(max_body);
                if body.len() >= want {
                    Some(body[..want].to_vec())
                } else if eof {
                    return Err(bad(format!(
                        "connection closed after {} of {n} body bytes",
                        body.len()
                    )));
                } else {
                    None
                }
            }
            Framing::Chunked => match dechunk(body, max_body)? {
                Some(b) => Some(b),
                None if eof => return Err(bad("connection closed inside a chunked body")),
                None => None,
            },
            Framing::UntilClose => {
                (eof || body.len() >= max_body).then(|| body[..body.len().min(max_body)].to_vec())
            }
        };
        return Ok(match body {
            Some(body) => Parsed::Done(Response { status, body }),
            None => Parsed::More,
        });
    }
}

/// The length of the head including its blank line, if complete. Lines may
/// end in CRLF or a bare LF.
fn head_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < buf.len() {
        if buf[i] == b'\n' {
            match (buf.get(i + 1), buf.get(i + 2)) {
                (Some(b'\n'), _) => return Some(i + 2),
                (Some(b'\r'), Some(b'\n')) => return Some(i + 3),
                _ => {}
            }
        }
        i += 1;
    }
    None
}

fn lines(head: &[u8]) -> impl Iterator<Item = &[u8]> {
    head.split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.is_empty())
}

fn parse_head(head: &[u8]) -> Result<(u16, Framing), CheckError> {
    let mut lines = lines(head);
    let status = parse_status_line(lines.next().unwrap_or_default())?;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    for line in lines {
        let colon = line
            .iter()
            .position(|b| *b == b':')
            .ok_or_else(|| bad("malformed header line (no colon)"))?;
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_decimal(value).ok_or_else(|| bad("invalid Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(bad("conflicting Content-Length headers"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            let last = value
                .rsplit(|b| *b == b',')
                .next()
                .map(trim)
                .unwrap_or_default();
            chunked = last.eq_ignore_ascii_case(b"chunked");
        }
    }
    let framing = if status == 204 || status == 304 || (100..200).contains(&status) {
        Framing::Length(0)
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    Ok((status, framing))
}

/// `HTTP/1.x SSS[ reason]`.
fn parse_status_line(line: &[u8]) -> Result<u16, CheckError> {
    let malformed = || bad("malformed status line (not an HTTP/1.x response)");
    let rest = line.strip_prefix(b"HTTP/1.").ok_or_else(malformed)?;
    match rest {
        [minor, b' ', a, b, c, tail @ ..]
            if minor.is_ascii_digit()
                && [a, b, c].iter().all(|d| d.is_ascii_digit())
                && (tail.is_empty() || tail[0] == b' ') =>
        {
            Ok(u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'))
        }
        _ => Err(malformed()),
    }
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end.max(start)]
}

fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

fn parse_hex(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 15 {
        return None;
    }
    s.iter().try_fold(0u64, |n, d| {
        let v = char::from(*d).to_digit(16)?;
        Some(n * 16 + u64::from(v))
    })
}

/// Decode a chunked body: `Some(body)` once the last chunk is seen or
/// `max` bytes are decoded, `None` when more bytes are needed.
fn dechunk(data: &[u8], max: usize) -> Result<Option<Vec<u8>>, CheckError> {
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        let Some(nl) = data[i..].iter().position(|b| *b == b'\n') else {
            if data.len() - i > CHUNK_LINE_MAX {
                return Err(bad("chunk size line too long"));
            }
            return Ok(None);
        };
        let line = &data[i..i + nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let size_text = line
            .split(|b| *b == b';')
            .next()
            .map(trim)
            .unwrap_or_default();
        let size = parse_hex(size_text).ok_or_else(|| bad("invalid chunk size"))?;
        i += nl + 1;
        if size == 0 {
            return Ok(Some(out));
        }
        let avail = data.len() - i;
        let take = usize::try_from(size).map_or(avail, |s| s.min(avail));
        let room = max.saturating_sub(out.len());
        out.extend_from_slice(&data[i..i + take.min(room)]);
        if out.len() >= max {
            return Ok(Some(out));
        }
        if (take as u64) < size {
            return Ok(None);
        }
        i += take;
        match &data[i..] {
            [b'\r', b'\n', ..] => i += 2,
            [b'\n', ..] => i += 1,
            [] | [b'\r'] => return Ok(None),
            _ => return Err(bad("chunk data not followed by a line end")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn done(buf: &[u8], want_body: bool, max: usize, eof: bool) -> Response {
        match parse(buf, want_body, max, eof) {
            Ok(Parsed::Done(r)) => r,
            other => panic!("expected a response, got {other:?}"),
        }
    }

    #[test]
    fn status_only() {
        let r = done(b"HTTP/1.1 204 No Content\r\n\r\n", false, 100, false);
        assert_eq!(r.status, 204);
        assert_eq!(done(b"HTTP/1.0 503\n\n", false, 100, false).status, 503);
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\nServer: x\r\n", false, 10, false),
            Ok(Parsed::More)
        );
    }

    #[test]
    fn content_length_body_and_truncation() {
        let msg = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(done(msg, true, 100, false).body, b"hello");
        assert_eq!(done(msg, true, 3, false).body, b"hel");
        assert_eq!(
            parse(&msg[..msg.len() - 1], true, 100, false),
            Ok(Parsed::More)
        );
        assert!(
            parse(&msg[..msg.len() - 1], true, 100, true).is_err(),
            "early close"
        );
    }

    #[test]
    fn chunked_body_with_extensions_and_trailers() {
        let msg = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n4;x=y\r\nWiki\r\n5\r\npedia\r\n0\r\nT: v\r\n\r\n";
        assert_eq!(done(msg, true, 100, false).body, b"Wikipedia");
        assert_eq!(parse(&msg[..60], true, 100, false), Ok(Parsed::More));
        assert_eq!(done(msg, true, 6, false).body, b"Wikipe");
        let bad_size = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert!(parse(bad_size, true, 100, false).is_err());
    }

    #[test]
    fn until_close_and_interim_responses() {
        let msg = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\nall of it";
        assert_eq!(parse(msg, true, 100, false), Ok(Parsed::More));
        let r = done(msg, true, 100, true);
        assert_eq!((r.status, r.body.as_slice()), (200, &b"all of it"[..]));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for junk in [
            &b"SSH-2.0-OpenSSH\r\n\r\n"[..],
            b"HTTP/1.1 2x0 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        ] {
            assert!(
                parse(junk, true, 100, false).is_err(),
                "{:?}",
                String::from_utf8_lossy(junk)
            );
        }
        assert!(parse(b"", false, 100, true).is_err());
        assert!(parse(&[b'x'; HEAD_MAX + 1], false, 100, false).is_err());
    }

    proptest! {
        #[test]
        fn never_panics(buf in proptest::collection::vec(any::<u8>(), 0..512), want in any::<bool>(), max in 0usize..64, eof in any::<bool>()) {
            let _ = parse(&buf, want, max, eof);
        }

        #[test]
        fn never_panics_after_a_valid_head(tail in proptest::collection::vec(any::<u8>(), 0..256), eof in any::<bool>()) {
            let mut buf = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            buf.extend(tail);
            let _ = parse(&buf, true, 32, eof);
        }
    }
}
