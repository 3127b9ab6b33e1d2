//! Decoding a chunked response body (RFC 9112 §7.1) from the read buffer:
//! data handed on as it comes, sizes and line ends checked, extensions
//! skipped, trailers parsed.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::read::broken;
use super::{MAX_HEAD, MAX_HEADERS};
use crate::pick::BoxError;

/// The longest chunk size: 16 hex digits fill a `u64`.
const MAX_SIZE_DIGITS: u8 = 16;

/// The longest run of extensions on one chunk line.
const MAX_EXTENSION_BYTES: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    SizeStart,
    Size {
        digits: u8,
        size: u64,
    },
    /// Whitespace after the size: only a `;` or the line end may follow.
    SizeWs {
        size: u64,
    },
    Ext {
        size: u64,
        run: usize,
    },
    SizeLf {
        size: u64,
    },
    Data {
        left: u64,
    },
    DataCr,
    DataLf,
    Trailers,
    Done,
}

/// What the decoder got from the buffer.
#[derive(Debug)]
pub(crate) enum Step {
    /// Body bytes.
    Data(Bytes),
    /// The trailer fields; the body is over.
    Trailers(HeaderMap),
    /// The body is over.
    End,
    /// The buffer holds no more of the body: read more.
    More,
}

/// A chunked body decoder.
#[derive(Clone, Debug)]
pub(crate) struct Decoder {
    state: State,
}

impl Decoder {
    /// A decoder at the start of a body.
    pub(crate) fn new() -> Self {
        Decoder {
            state: State::SizeStart,
        }
    }

    /// Take what the front of `buf` holds of the body.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Step, BoxError> {
        loop {
            match self.state {
                State::Data { left } => {
                    if buf.is_empty() {
                        return Ok(Step::More);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(n).freeze();
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data { left }
                    };
                    return Ok(Step::Data(data));
                }
                State::Trailers => return self.trailers(buf),
                State::Done => return Ok(Step::End),
                _ => {
                    let Some(&b) = buf.first() else {
                        return Ok(Step::More);
                    };
                    buf.advance(1);
                    self.step(b)?;
                }
            }
        }
    }

    /// Whether the first chunk line in `buf` (if whole) is valid: checked
    /// before the response head goes on, so that a body broken from its
    /// first byte is answered with a 502 rather than cut.
    pub(crate) fn check_start(buf: &[u8]) -> Result<(), BoxError> {
        let mut d = Decoder::new();
        for &b in buf {
            d.step(b)?;
            if matches!(d.state, State::Data { .. } | State::Trailers) {
                break;
            }
        }
        Ok(())
    }

    fn step(&mut self, b: u8) -> Result<(), BoxError> {
        use State::*;
        self.state = match self.state {
            SizeStart => Size {
                digits: 1,
                size: hex(b).ok_or_else(|| bad("invalid chunk size"))?,
            },
            Size { digits, size } => match b {
                b'\r' => SizeLf { size },
                b';' => Ext { size, run: 0 },
                b' ' | b'\t' => SizeWs { size },
                _ if digits >= MAX_SIZE_DIGITS => return Err(bad("chunk size overflow")),
                _ => Size {
                    digits: digits + 1,
                    size: (size << 4) | hex(b).ok_or_else(|| bad("invalid chunk size"))?,
                },
            },
            SizeWs { size } => match b {
                b' ' | b'\t' => SizeWs { size },
                b';' => Ext { size, run: 0 },
                b'\r' => SizeLf { size },
                _ => return Err(bad("invalid chunk size")),
            },
            Ext { size, run } => match b {
                b'\r' => SizeLf { size },
                b'\n' => return Err(bad("bare LF in a chunk extension")),
                _ if run >= MAX_EXTENSION_BYTES => return Err(bad("chunk extensions too long")),
                _ => Ext { size, run: run + 1 },
            },
            SizeLf { size } => match b {
                b'\n' if size == 0 => Trailers,
                b'\n' => Data { left: size },
                _ => return Err(bad("bare CR after a chunk size")),
            },
            DataCr => match b {
                b'\r' => DataLf,
                _ => return Err(bad("chunk data longer than its size")),
            },
            DataLf => match b {
                b'\n' => SizeStart,
                _ => return Err(bad("bare CR after chunk data")),
            },
            Data { .. } | Trailers | Done => return Err(bad("chunked decoder state error")),
        };
        Ok(())
    }

    /// The trailer section, once it is whole in `buf`.
    fn trailers(&mut self, buf: &mut BytesMut) -> Result<Step, BoxError> {
        if buf.starts_with(b"\r\n") {
            buf.advance(2);
            self.state = State::Done;
            return Ok(Step::End);
        }
        if buf.len() < 2 {
            return Ok(Step::More);
        }
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            if buf.len() > MAX_HEAD {
                return Err(bad("chunked trailers over 64 KiB"));
            }
            return Ok(Step::More);
        };
        let section = buf.split_to(end + 4);
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        // Trailers are rare: the zeroed field array is no concern here.
        let parsed = httparse::parse_headers(&section, &mut fields)
            .map_err(|e| bad_owned(format!("invalid chunked trailers: {e}")))?;
        let httparse::Status::Complete((_, fields)) = parsed else {
            return Err(bad("invalid chunked trailers"));
        };
        let mut map = HeaderMap::with_capacity(fields.len());
        for f in fields {
            let name = HeaderName::from_bytes(f.name.as_bytes())
                .map_err(|_| bad("invalid trailer name"))?;
            let value =
                HeaderValue::from_bytes(f.value).map_err(|_| bad("invalid trailer value"))?;
            map.append(name, value);
        }
        self.state = State::Done;
        Ok(Step::Trailers(map))
    }
}

fn hex(b: u8) -> Option<u64> {
    (b as char).to_digit(16).map(u64::from)
}

fn bad(why: &'static str) -> BoxError {
    broken(why)
}

fn bad_owned(why: String) -> BoxError {
    broken(why)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body's bytes and trailers, fed in pieces of `piece` bytes.
    fn decode(wire: &[u8], piece: usize) -> Result<(Vec<u8>, Option<HeaderMap>), BoxError> {
        let mut d = Decoder::new();
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut fed = 0;
        loop {
            match d.decode(&mut buf)? {
                Step::Data(b) => body.extend_from_slice(&b),
                Step::Trailers(t) => return Ok((body, Some(t))),
                Step::End => return Ok((body, None)),
                Step::More if fed < wire.len() => {
                    let to = (fed + piece).min(wire.len());
                    buf.extend_from_slice(&wire[fed..to]);
                    fed = to;
                }
                Step::More => return Err("cut short".into()),
            }
        }
    }

    #[test]
    fn bodies_decode_whatever_the_pieces() {
        let wire = b"5;name=value\r\nhello\r\n6 ; x\r\n world\r\n0\r\nx-sum: 42\r\n\r\n";
        for piece in 1..wire.len() {
            let (body, trailers) = decode(wire, piece).unwrap();
            assert_eq!(body, b"hello world", "piece {piece}");
            let t = trailers.expect("trailers");
            assert_eq!(t["x-sum"], "42");
        }
        let (body, trailers) = decode(b"A\r\n0123456789\r\n0\r\n\r\n", 64).unwrap();
        assert_eq!(body, b"0123456789");
        assert!(trailers.is_none());
    }

    #[test]
    fn bad_bodies_are_errors() {
        for wire in [
            &b"zz\r\n"[..],
            b"-1\r\n",
            b"0x5\r\n",
            b"5\nhello",
            b"11111111111111111\r\n",
            b"3\r\nhello\r\n",
            b"0\r\nX\r\n\r\n",
        ] {
            assert!(
                decode(wire, 64).is_err(),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
        assert!(Decoder::check_start(b"zz\r\n").is_err());
        assert!(Decoder::check_start(b"5\r\nhel").is_ok());
        assert!(Decoder::check_start(b"").is_ok());
    }
}
