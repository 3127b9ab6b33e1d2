//! A request head, already checked by [the edge](super::super::edge), made
//! into an `http::Request`: the head copied once into shared bytes, the
//! target and field values slices of them.

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Uri, Version};

use super::super::h1::chunked::Decoder;
use super::body::Reading;

/// Fields most heads stay within; the field array lives on the stack up to
/// this many (hyper's default), on the heap beyond.
const FEW: usize = 100;

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
    fn note(&mut self, name: &str, value: &[u8]) {
        let n = name.as_bytes();
        if n.len() == 14 && name.eq_ignore_ascii_case("content-length") {
            self.length = digits(value);
        } else if n.len() == 17 && name.eq_ignore_ascii_case("transfer-encoding") {
            self.chunked = true;
        } else if n.len() == 10 && name.eq_ignore_ascii_case("connection") {
            for token in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                self.close |= token.eq_ignore_ascii_case(b"close");
                self.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if n.len() == 7 && name.eq_ignore_ascii_case("upgrade") {
            self.upgrade = true;
        } else if n.len() == 6 && name.eq_ignore_ascii_case("expect") {
            self.expect = true;
        }
    }
}

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
pub(crate) fn parse(buf: &mut BytesMut, max_headers: usize) -> Parsed {
    let mut spans = Spans {
        few: [(0, 0, 0, 0); FEW_SPANS],
        many: Vec::new(),
        count: 0,
    };
    let scanned = if max_headers <= FEW {
        let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; FEW];
        scan(buf, &mut fields, &mut spans)
    } else {
        let mut fields = Vec::new();
        fields.resize_with(max_headers, MaybeUninit::uninit);
        scan(buf, &mut fields, &mut spans)
    };
    let s = match scanned {
        Ok(s) => s,
        Err(p) => return p,
    };
    let version = if s.minor == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    if s.notes.expect || s.notes.upgrade && version == Version::HTTP_11 {
        return Parsed::HandOff;
    }
    let head = Bytes::copy_from_slice(&buf[..s.len]);
    buf.advance(s.len);
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

fn scan<'b>(
    bytes: &'b [u8],
    fields: &mut [MaybeUninit<httparse::Header<'b>>],
    spans: &mut Spans,
) -> Result<Scan, Parsed> {
    let mut req = httparse::Request::new(&mut []);
    let parsed = httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut req, bytes, fields);
    let len = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err(Parsed::Partial),
        Err(_) => return Err(Parsed::Bad),
    };
    let base = bytes.as_ptr() as usize;
    let (Some(method), Some(path), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(Parsed::Bad);
    };
    spans.count = req.headers.len();
    if spans.count > spans.few.len() {
        spans.many.resize(spans.count, (0, 0, 0, 0));
    }
    let slots: &mut [Span] = if spans.count <= spans.few.len() {
        &mut spans.few[..spans.count]
    } else {
        &mut spans.many
    };
    let mut notes = Notes::default();
    for (span, f) in slots.iter_mut().zip(req.headers.iter()) {
        notes.note(f.name, f.value);
        let name = f.name.as_ptr() as usize - base;
        let value = f.value.as_ptr() as usize - base;
        *span = (name, name + f.name.len(), value, value + f.value.len());
    }
    let target = path.as_ptr() as usize - base;
    Ok(Scan {
        len,
        method: Method::from_bytes(method.as_bytes()).ok(),
        target: (target, target + path.len()),
        minor,
        notes,
    })
}

/// The header map of a head, values sharing its bytes.
fn fields_of(head: &Bytes, spans: &[Span]) -> Option<HeaderMap> {
    let mut map = HeaderMap::with_capacity(spans.len());
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
