//! A request head, already checked by [the edge](super::super::edge), made
//! into an `http::Request`: the head copied once into shared bytes, the
//! target and field values slices of them.

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Uri, Version};

use super::super::h1::chunked::Decoder;
use super::body::Reading;

/// What the front of the read buffer holds.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// A request this server serves; its head taken from the buffer.
    /// (Not boxed: it is moved once or twice, an allocation would cost more.)
    Request(ReqHead),
    /// A request for hyper (protocol switch, `Expect`): left in the buffer.
    HandOff,
    /// A head that cannot make a request (the edge let it through, but
    /// `http` refuses its target or a field): answered 400 as hyper does.
    Bad,
}

/// A request head and what serving it hangs on.
#[derive(Debug)]
pub(crate) struct ReqHead {
    pub(crate) req: Request<()>,
    pub(crate) body: Reading,
    /// The body length, when sized.
    pub(crate) length: Option<u64>,
    /// Whether the client lets the connection go on after this request.
    pub(crate) keep_alive: bool,
}

/// What the framing and the hand-off hang on, noted from the raw fields.
#[derive(Debug, Default)]
struct Notes {
    length: Option<u64>,
    chunked: bool,
    close: bool,
    keep_alive: bool,
    upgrade: bool,
    expect: bool,
}

impl Notes {
    fn note(&mut self, n: &[u8], value: &[u8]) {
        if n.len() == 14 && n.eq_ignore_ascii_case(b"content-length") {
            self.length = digits(value);
        } else if n.len() == 17 && n.eq_ignore_ascii_case(b"transfer-encoding") {
            self.chunked = true;
        } else if n.len() == 10 && n.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                self.close |= token.eq_ignore_ascii_case(b"close");
                self.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if n.len() == 7 && n.eq_ignore_ascii_case(b"upgrade") {
            self.upgrade = true;
        } else if n.len() == 6 && n.eq_ignore_ascii_case(b"expect") {
            self.expect = true;
        }
    }
}

/// Fields a request's header map has room for beyond its own.
const ROOM_TO_ADD: usize = 4;

/// Fields whose places are kept on the stack (more go to the heap).
const FEW_SPANS: usize = 16;

/// Where a field's name and value sit in the head.
type Span = (usize, usize, usize, usize);

/// Where each field of a head sits: on the stack for the usual few.
struct Spans {
    few: [Span; FEW_SPANS],
    many: Vec<Span>,
    count: usize,
}

impl Spans {
    fn push(&mut self, span: Span) {
        if self.count < self.few.len() {
            self.few[self.count] = span;
        } else {
            if self.many.is_empty() {
                self.many.extend_from_slice(&self.few);
            }
            self.many.push(span);
        }
        self.count += 1;
    }

    fn get(&self) -> &[Span] {
        if self.count <= self.few.len() {
            &self.few[..self.count]
        } else {
            &self.many
        }
    }
}

/// What a head's parse found, as offsets into it.
struct Scan {
    len: usize,
    method: Option<Method>,
    target: (usize, usize),
    minor: u8,
    notes: Notes,
}

/// Parse the head at the front of `buf`, taking it if this server serves
/// the request.
pub(crate) fn parse(buf: &mut BytesMut) -> Parsed {
    let mut spans = Spans {
        few: [(0, 0, 0, 0); FEW_SPANS],
        many: Vec::new(),
        count: 0,
    };
    let scanned = scan(buf, &mut spans);
    let s = match scanned {
        Ok(s) => s,
        Err(Miss::Partial) => return Parsed::Partial,
        Err(Miss::Bad) => return Parsed::Bad,
    };
    let version = if s.minor == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    if s.notes.expect || s.notes.upgrade && version == Version::HTTP_11 {
        return Parsed::HandOff;
    }
    // Split off, not copied: once the read buffer is shared (the first
    // head), later heads cost no allocation, and the buffer is reused in
    // place once their requests are gone.
    let head = buf.split_to(s.len).freeze();
    let Some(method) = s.method else {
        return Parsed::Bad;
    };
    let Ok(uri) = Uri::from_maybe_shared(head.slice(s.target.0..s.target.1)) else {
        return Parsed::Bad;
    };
    let Some(headers) = fields_of(&head, spans.get()) else {
        return Parsed::Bad;
    };
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = version;
    *req.headers_mut() = headers;
    let notes = s.notes;
    let (body, length) = if notes.chunked {
        (Reading::Chunked(Decoder::new()), None)
    } else {
        match notes.length {
            Some(0) | None => (Reading::Done, Some(0)),
            Some(n) => (Reading::Length(n), Some(n)),
        }
    };
    let keep_alive = if version == Version::HTTP_11 {
        !notes.close
    } else {
        notes.keep_alive && !notes.close
    };
    Parsed::Request(ReqHead {
        req,
        body,
        length,
        keep_alive,
    })
}

/// Why a scan found no head.
#[derive(Clone, Copy, Debug)]
enum Miss {
    Partial,
    Bad,
}

/// Split the head at the front of `bytes` into its parts. The edge has
/// checked it (CR LF line ends, single spaces in the request line, `name:
/// value` fields): this only finds where things are.
fn scan(bytes: &[u8], spans: &mut Spans) -> Result<Scan, Miss> {
    let Some(lf) = line_end(bytes, 0) else {
        return Err(Miss::Partial);
    };
    let line = bytes[..lf].strip_suffix(b"\r").ok_or(Miss::Bad)?;
    let sp1 = line.iter().position(|b| *b == b' ').ok_or(Miss::Bad)?;
    let sp2 = line.iter().rposition(|b| *b == b' ').ok_or(Miss::Bad)?;
    let minor = match &line[sp2 + 1..] {
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', m] if m.is_ascii_digit() => m - b'0',
        _ => return Err(Miss::Bad),
    };
    if sp2 <= sp1 + 1 {
        return Err(Miss::Bad);
    }
    let mut notes = Notes::default();
    spans.count = 0;
    let mut at = lf + 1;
    loop {
        let Some(lf) = line_end(bytes, at) else {
            return Err(Miss::Partial);
        };
        let field = bytes[at..lf].strip_suffix(b"\r").ok_or(Miss::Bad)?;
        let start = at;
        at = lf + 1;
        if field.is_empty() {
            break;
        }
        let colon = field.iter().position(|b| *b == b':').ok_or(Miss::Bad)?;
        let value = field[colon + 1..].trim_ascii();
        notes.note(&field[..colon], value);
        let vs = value.as_ptr() as usize - bytes.as_ptr() as usize;
        spans.push((start, start + colon, vs, vs + value.len()));
    }
    Ok(Scan {
        len: at,
        method: Method::from_bytes(&line[..sp1]).ok(),
        target: (sp1 + 1, sp2),
        minor,
        notes,
    })
}

/// Where the next LF is, from `from` on.
fn line_end(bytes: &[u8], from: usize) -> Option<usize> {
    memchr::memchr(b'\n', bytes.get(from..)?).map(|p| from + p)
}

/// The header map of a head, values sharing its bytes.
fn fields_of(head: &Bytes, spans: &[Span]) -> Option<HeaderMap> {
    // Room for the fields a proxy adds (`X-Forwarded-*`, `Via`, a new
    // `Host`): growing a full map costs about 1k instructions.
    let mut map = HeaderMap::with_capacity(spans.len() + ROOM_TO_ADD);
    for &(ns, ne, vs, ve) in spans {
        let name = HeaderName::from_bytes(head.get(ns..ne)?).ok()?;
        let value = HeaderValue::from_maybe_shared(head.slice(vs..ve)).ok()?;
        map.append(name, value);
    }
    Some(map)
}

/// `1*DIGIT` (the edge checked it already).
fn digits(v: &[u8]) -> Option<u64> {
    let mut n: u64 = 0;
    for b in v.trim_ascii() {
        n = n
            .checked_mul(10)?
            .checked_add(u64::from(b.checked_sub(b'0')?))?;
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> (Parsed, usize) {
        let mut buf = BytesMut::from(text);
        let p = parse(&mut buf);
        (p, buf.len())
    }

    fn request(text: &str) -> ReqHead {
        match parsed(text).0 {
            Parsed::Request(h) => h,
            other => panic!("{text:?}: {other:?}"),
        }
    }

    #[test]
    fn a_head_becomes_a_request_and_leaves_the_rest() {
        let (p, left) = parsed("GET /a?b HTTP/1.1\r\nHost: x:1\r\nX-A:  v w \r\n\r\nNEXT");
        let Parsed::Request(h) = p else {
            panic!("{p:?}");
        };
        assert_eq!(left, 4, "the bytes after the head stay");
        assert_eq!(h.req.method(), Method::GET);
        assert_eq!(h.req.uri(), "/a?b");
        assert_eq!(h.req.version(), Version::HTTP_11);
        assert_eq!(h.req.headers()["host"], "x:1");
        assert_eq!(h.req.headers()["x-a"], "v w");
        assert!(h.keep_alive);
        assert!(matches!(h.body, Reading::Done));
    }

    #[test]
    fn framing_and_keep_alive() {
        let h = request("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n");
        assert!(matches!(h.body, Reading::Length(12)));
        assert_eq!(h.length, Some(12));
        let h = request("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(matches!(h.body, Reading::Chunked(_)));
        assert_eq!(h.length, None);
        assert!(!request("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!request("GET / HTTP/1.0\r\n\r\n").keep_alive);
        let h = request("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(h.keep_alive);
        assert_eq!(h.req.version(), Version::HTTP_10);
    }

    #[test]
    fn switches_and_expectations_are_left_for_hyper() {
        let upgrade =
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
        assert!(matches!(parsed(upgrade), (Parsed::HandOff, n) if n == upgrade.len()));
        let expect =
            "PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n";
        assert!(matches!(parsed(expect), (Parsed::HandOff, n) if n == expect.len()));
        // HTTP/1.0 has no protocol switch: served here, `Upgrade` and all.
        let h = request("GET / HTTP/1.0\r\nUpgrade: websocket\r\n\r\n");
        assert!(h.req.headers().contains_key("upgrade"));
    }

    #[test]
    fn partial_and_bad_heads() {
        assert!(matches!(
            parsed("GET / HTTP/1.1\r\nHost: x\r\n"),
            (Parsed::Partial, _)
        ));
        assert!(matches!(parsed("GET / HTTP/1.1"), (Parsed::Partial, _)));
        assert!(matches!(parsed("GET /\r\n\r\n"), (Parsed::Bad, _)));
        assert!(matches!(
            parsed("GET / HTTP/1.1\nHost: x\r\n\r\n"),
            (Parsed::Bad, _)
        ));
        assert!(matches!(
            parsed("GET / HTTP/1.1\r\nHost x\r\n\r\n"),
            (Parsed::Bad, _)
        ));
    }

    #[test]
    fn many_fields_go_to_the_heap() {
        let mut text = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
        for i in 0..40 {
            text.push_str(&format!("X-{i}: {i}\r\n"));
        }
        text.push_str("\r\n");
        let h = request(&text);
        assert_eq!(h.req.headers().len(), 41);
        assert_eq!(h.req.headers()["x-39"], "39");
    }
}
