//! The request head: request line and header fields, by the grammar of
//! RFC 9112 §2-§7 and RFC 9110 §5, strictly.

use http::StatusCode;

use super::{Limits, Reject};

/// How the body of a request is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body.
    None,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A complete, valid request head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Head {
    /// Its length in bytes, the empty line included.
    pub len: usize,
    /// Where a minor version digit above 1 sits, to be served as HTTP/1.1.
    pub minor_at: Option<usize>,
    /// How its body is delimited.
    pub framing: Framing,
    /// Whether it asks for a protocol switch (HTTP/1.1 with `Upgrade`).
    pub upgrade: bool,
    /// Whether it states an expectation other than `100-continue` (RFC 9110
    /// §10.1.1): to be answered 417 and not passed on.
    pub unmet_expectation: bool,
    /// Whether the connection may serve another request after this one:
    /// HTTP/1.1 and no `Connection: close`.
    pub persistent: bool,
    /// Whether the method is HEAD (its answer has no body).
    pub head_method: bool,
}

/// The largest body length hyper accepts.
const MAX_LENGTH: u64 = u64::MAX - 2;

/// Room for the method, the spaces and the version around the target.
const LINE_SLACK: usize = 64;

/// Parse the request head at the start of `buf` (leading empty lines
/// already skipped): `Ok(None)` while it is incomplete and within limits.
pub(crate) fn parse(buf: &[u8], limits: &Limits) -> Result<Option<Head>, Reject> {
    let Some(lf) = memchr::memchr(b'\n', buf) else {
        check_partial_line(buf, limits)?;
        return Ok(None);
    };
    let line = crlf_line(&buf[..lf])?;
    let start = request_line(line, limits)?;
    let mut fields = Fields::default();
    let mut at = lf + 1;
    loop {
        let rest = &buf[at..];
        let Some(lf) = memchr::memchr(b'\n', rest) else {
            if at - (line.len() + 2) + rest.len() > limits.max_header_bytes {
                return Err(too_large("header block over the limit"));
            }
            return Ok(None);
        };
        let field = crlf_line(&rest[..lf])?;
        at += lf + 1;
        if at - (line.len() + 2) > limits.max_header_bytes {
            return Err(too_large("header block over the limit"));
        }
        if field.is_empty() {
            break;
        }
        fields.count += 1;
        if fields.count > limits.max_headers {
            return Err(too_large("too many header fields"));
        }
        let (name, value) = field_line(field)?;
        fields.note(name, value)?;
    }
    let framing = semantics(&start, &fields)?;
    Ok(Some(Head {
        len: at,
        minor_at: start.minor_at,
        framing,
        upgrade: start.minor > 0 && fields.upgrade,
        unmet_expectation: fields.unmet_expectation,
        persistent: start.minor > 0 && !fields.close,
        head_method: start.head_method,
    }))
}

/// Reject a request line that cannot become valid, before its end arrives.
fn check_partial_line(buf: &[u8], limits: &Limits) -> Result<(), Reject> {
    let body = buf.strip_suffix(b"\r").unwrap_or(buf);
    if body.iter().any(|b| !(b' '..=b'~').contains(b)) {
        return Err(bad("invalid byte in the request line"));
    }
    if !body.is_empty() && !is_tchar(body[0]) {
        return Err(bad("invalid method"));
    }
    if buf.len() > limits.max_uri_bytes + LINE_SLACK {
        return Err(Reject::answer(
            StatusCode::URI_TOO_LONG,
            "request line over the limit",
        ));
    }
    Ok(())
}

/// A line without its CR LF; a bare LF or a stray CR is an error.
fn crlf_line(line: &[u8]) -> Result<&[u8], Reject> {
    let Some(line) = line.strip_suffix(b"\r") else {
        return Err(bad("line ended by a bare LF"));
    };
    if memchr::memchr(b'\r', line).is_some() {
        return Err(bad("bare CR"));
    }
    Ok(line)
}

/// What the request line says.
struct Start<'a> {
    /// The authority of an absolute-form target.
    authority: Option<&'a [u8]>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1 (and higher minors served as 1.1).
    minor: u8,
    minor_at: Option<usize>,
    head_method: bool,
}

fn request_line<'a>(line: &'a [u8], limits: &Limits) -> Result<Start<'a>, Reject> {
    let mut parts = line.split(|b| *b == b' ');
    let (method, target) = match (parts.next(), parts.next()) {
        (Some(m), Some(t)) => (m, t),
        _ => return Err(bad("no request target")),
    };
    if method.is_empty() || !method.iter().all(|b| is_tchar(*b)) {
        return Err(bad("invalid method"));
    }
    let Some(version) = parts.next() else {
        if !target.is_empty() && target.iter().all(|b| (b'!'..=b'~').contains(b)) {
            return Err(Reject::close("HTTP/0.9 request"));
        }
        return Err(bad("no HTTP version"));
    };
    if parts.next().is_some() {
        return Err(bad("extra space in the request line"));
    }
    let minor = match version {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            if *major != b'1' {
                let v = StatusCode::HTTP_VERSION_NOT_SUPPORTED;
                return Err(Reject::answer(v, "HTTP major version not 1"));
            }
            *minor - b'0'
        }
        _ => return Err(bad("malformed HTTP version")),
    };
    let minor_at = (minor > 1).then(|| line.len() - 1);
    if target.len() > limits.max_uri_bytes {
        return Err(Reject::answer(
            StatusCode::URI_TOO_LONG,
            "target over the limit",
        ));
    }
    if target.is_empty()
        || !target
            .iter()
            .all(|b| (b'!'..=b'~').contains(b) && *b != b'#')
    {
        return Err(bad("invalid byte in the request target"));
    }
    if method == b"CONNECT" {
        let no = StatusCode::NOT_IMPLEMENTED;
        return Err(Reject::answer(no, "CONNECT: no tunnels here"));
    }
    let authority = match target {
        [b'/', ..] => None,
        b"*" if method == b"OPTIONS" => None,
        _ => Some(absolute_authority(target)?),
    };
    Ok(Start {
        authority,
        minor: minor.min(1),
        minor_at,
        head_method: method == b"HEAD",
    })
}

/// The authority of an absolute-form target (`scheme://authority/path`).
fn absolute_authority(target: &[u8]) -> Result<&[u8], Reject> {
    let colon = target.iter().position(|b| *b == b':').unwrap_or(0);
    let (scheme, rest) = target.split_at(colon);
    let scheme_ok = scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(b));
    let Some(rest) = rest.strip_prefix(b"://").filter(|_| scheme_ok) else {
        return Err(bad("request target in no known form"));
    };
    let end = rest
        .iter()
        .position(|b| *b == b'/' || *b == b'?')
        .unwrap_or(rest.len());
    let authority = &rest[..end];
    if !valid_host(authority) || authority.is_empty() {
        return Err(bad("invalid authority in the request target"));
    }
    Ok(authority)
}

/// One `name: value` line, the value without its surrounding whitespace.
fn field_line(line: &[u8]) -> Result<(&[u8], &[u8]), Reject> {
    if matches!(line.first(), Some(b' ' | b'\t')) {
        return Err(bad("obs-fold or whitespace before a field"));
    }
    let Some(colon) = line.iter().position(|b| *b == b':') else {
        return Err(bad("header line without a colon"));
    };
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    if name.is_empty() || !name.iter().all(|b| is_tchar(*b)) {
        return Err(bad("invalid header name"));
    }
    if !value
        .iter()
        .all(|b| *b == b'\t' || (b' '..=b'~').contains(b) || *b >= 0x80)
    {
        return Err(bad("NUL, CR, LF or control byte in a header value"));
    }
    Ok((name, trim_ows(value)))
}

/// What the header fields say about framing and routing.
#[derive(Default)]
struct Fields<'a> {
    count: usize,
    hosts: usize,
    host: &'a [u8],
    length: Option<u64>,
    has_te: bool,
    /// The last transfer coding of all `Transfer-Encoding` lines.
    last_coding: &'a [u8],
    /// Whether an earlier coding was empty or `chunked`.
    bad_before: bool,
    /// Whether an earlier coding was some other coding.
    other_before: bool,
    upgrade: bool,
    /// An `Expect` member other than `100-continue`.
    unmet_expectation: bool,
    /// `Connection: close`.
    close: bool,
}

impl<'a> Fields<'a> {
    fn note(&mut self, name: &'a [u8], value: &'a [u8]) -> Result<(), Reject> {
        if name.eq_ignore_ascii_case(b"host") {
            self.hosts += 1;
            self.host = value;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let n = digits(value).ok_or_else(|| bad("malformed Content-Length"))?;
            if self.length.is_some_and(|prev| prev != n) {
                return Err(bad("conflicting Content-Length"));
            }
            self.length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            for coding in value.split(|b| *b == b',').map(trim_ows) {
                if self.has_te {
                    let prev = self.last_coding;
                    self.bad_before |= prev.is_empty() || prev.eq_ignore_ascii_case(b"chunked");
                    self.other_before = true;
                }
                self.has_te = true;
                self.last_coding = coding;
            }
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            self.upgrade = true;
        } else if name.eq_ignore_ascii_case(b"expect") {
            // `Expect = #expectation`: empty members are allowed and mean
            // nothing; `100-continue` (any case, no parameters) is the only
            // expectation defined.
            self.unmet_expectation |= value
                .split(|b| *b == b',')
                .map(trim_ows)
                .any(|m| !m.is_empty() && !m.eq_ignore_ascii_case(b"100-continue"));
        } else if name.eq_ignore_ascii_case(b"connection") {
            self.close |= value
                .split(|b| *b == b',')
                .map(trim_ows)
                .any(|o| o.eq_ignore_ascii_case(b"close"));
        }
        Ok(())
    }
}

/// Host, Content-Length and Transfer-Encoding together; the body framing.
fn semantics(start: &Start<'_>, f: &Fields<'_>) -> Result<Framing, Reject> {
    if f.hosts > 1 {
        return Err(bad("more than one Host"));
    }
    if f.hosts == 0 && start.minor > 0 {
        return Err(bad("HTTP/1.1 request without Host"));
    }
    if f.hosts == 1 && !valid_host(f.host) {
        return Err(bad("invalid Host"));
    }
    if let Some(authority) = start.authority {
        if f.hosts == 1 && !authority.eq_ignore_ascii_case(f.host) {
            return Err(bad("Host differs from the target's authority"));
        }
    }
    if !f.has_te {
        return Ok(match f.length {
            Some(0) | None => Framing::None,
            Some(n) => Framing::Length(n),
        });
    }
    if start.minor == 0 {
        return Err(bad("Transfer-Encoding in HTTP/1.0"));
    }
    if f.length.is_some() {
        return Err(bad("both Content-Length and Transfer-Encoding"));
    }
    if !f.last_coding.eq_ignore_ascii_case(b"chunked") {
        return Err(bad("chunked is not the final transfer coding"));
    }
    if f.bad_before {
        return Err(bad("chunked twice, or an empty transfer coding"));
    }
    if f.other_before {
        let no = StatusCode::NOT_IMPLEMENTED;
        return Err(Reject::answer(no, "a transfer coding other than chunked"));
    }
    Ok(Framing::Chunked)
}

/// `uri-host [ ":" port ]` (RFC 9110 §7.2, RFC 3986 §3.2.2); may be empty.
pub(crate) fn valid_host(h: &[u8]) -> bool {
    let (host, port) = if h.first() == Some(&b'[') {
        let Some(close) = h.iter().position(|b| *b == b']') else {
            return false;
        };
        let inner = &h[1..close];
        let literal_ok = !inner.is_empty()
            && inner
                .iter()
                .all(|b| b.is_ascii_hexdigit() || b":.".contains(b));
        if !literal_ok {
            return false;
        }
        match &h[close + 1..] {
            [] => (&h[..0], None),
            [b':', port @ ..] => (&h[..0], Some(port)),
            _ => return false,
        }
    } else {
        match h.iter().rposition(|b| *b == b':') {
            Some(c) => (&h[..c], Some(&h[c + 1..])),
            None => (h, None),
        }
    };
    let reg_name_ok = host
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(b));
    reg_name_ok && port.is_none_or(|p| p.iter().all(u8::is_ascii_digit))
}

/// `1*DIGIT` as a body length.
fn digits(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for b in v {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    (n <= MAX_LENGTH).then_some(n)
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// `tchar` of RFC 9110 §5.6.2.
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn bad(why: &'static str) -> Reject {
    Reject::answer(StatusCode::BAD_REQUEST, why)
}

fn too_large(why: &'static str) -> Reject {
    Reject::answer(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, why)
}
