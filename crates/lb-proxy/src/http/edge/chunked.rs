//! The chunked transfer coding (RFC 9112 §7.1), checked byte by byte as
//! the body streams past: sizes, line ends, extensions and trailers.

use http::StatusCode;

use super::head::is_tchar;
use super::Reject;

/// The longest chunk-size: 16 hex digits fill a `u64`.
const MAX_SIZE_DIGITS: u8 = 16;

/// The longest run of chunk extensions on one chunk line.
const MAX_EXTENSION_BYTES: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// The first digit of a chunk size.
    SizeStart,
    Size {
        digits: u8,
        size: u64,
    },
    /// Whitespace after the size: only a `;` may follow.
    ExtWs {
        size: u64,
    },
    Ext {
        size: u64,
    },
    SizeLf {
        size: u64,
    },
    Data {
        left: u64,
    },
    DataCr,
    DataLf,
    /// The start of a trailer line, or of the final empty line.
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    FinalLf,
    Done,
}

/// A chunked body checker.
#[derive(Clone, Debug)]
pub(crate) struct Chunked {
    state: State,
    /// Bytes of extensions on the current line; of trailers in all.
    run: usize,
    max_trailer_bytes: usize,
    /// Data bytes announced so far, and how many the body may have.
    total: u64,
    max_body: u64,
}

impl Chunked {
    /// A checker at the start of a body; trailers may take
    /// `max_trailer_bytes` in all.
    pub(crate) fn new(max_trailer_bytes: usize) -> Self {
        Chunked {
            state: State::SizeStart,
            run: 0,
            max_trailer_bytes,
            total: 0,
            max_body: u64::MAX,
        }
    }

    /// The same, for a body of at most `max` data bytes: a chunk size that
    /// takes the sum past it is refused with 413.
    pub(crate) fn with_max_body(mut self, max: Option<u64>) -> Self {
        self.max_body = max.unwrap_or(u64::MAX);
        self
    }

    /// Check the bytes of `buf` that belong to this body: how many they
    /// are, and whether the body ended with them.
    pub(crate) fn feed(&mut self, buf: &[u8]) -> Result<(usize, bool), Reject> {
        let mut i = 0;
        while i < buf.len() {
            if let State::Data { left } = self.state {
                let take = (buf.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
                i += take;
                let left = left - take as u64;
                self.state = if left == 0 {
                    State::DataCr
                } else {
                    State::Data { left }
                };
                continue;
            }
            if self.state == State::Done {
                return Ok((i, true));
            }
            self.step(buf[i])?;
            i += 1;
        }
        Ok((i, self.state == State::Done))
    }

    fn step(&mut self, b: u8) -> Result<(), Reject> {
        use State::*;
        self.state = match self.state {
            SizeStart => Size {
                digits: 1,
                size: hex(b).ok_or_else(|| bad("invalid chunk size"))?,
            },
            Size { digits, size } => match b {
                b'\r' => SizeLf { size },
                b';' => self.ext(size),
                b' ' | b'\t' => ExtWs { size },
                _ if digits >= MAX_SIZE_DIGITS => return Err(bad("chunk size overflow")),
                _ => Size {
                    digits: digits + 1,
                    size: (size << 4) | hex(b).ok_or_else(|| bad("invalid chunk size"))?,
                },
            },
            ExtWs { size } => match b {
                b' ' | b'\t' => ExtWs { size },
                b';' => self.ext(size),
                _ => return Err(bad("whitespace after a chunk size")),
            },
            Ext { size } => match b {
                b'\r' => SizeLf { size },
                _ if field_byte(b) => {
                    self.run += 1;
                    if self.run > MAX_EXTENSION_BYTES {
                        return Err(bad("chunk extensions too long"));
                    }
                    Ext { size }
                }
                _ => return Err(bad("invalid byte in a chunk extension")),
            },
            SizeLf { size } => match b {
                b'\n' if size == 0 => {
                    self.run = 0;
                    TrailerStart
                }
                b'\n' => {
                    self.total = self.total.saturating_add(size);
                    if self.total > self.max_body {
                        return Err(Reject::answer(
                            http::StatusCode::PAYLOAD_TOO_LARGE,
                            "request body over the limit",
                        ));
                    }
                    Data { left: size }
                }
                _ => return Err(bad("bare CR after a chunk size")),
            },
            Data { .. } | Done => return Err(bad("chunked state error")),
            DataCr => match b {
                b'\r' => DataLf,
                _ => return Err(bad("chunk data longer than its size")),
            },
            DataLf => match b {
                b'\n' => SizeStart,
                _ => return Err(bad("bare CR after chunk data")),
            },
            TrailerStart => match b {
                b'\r' => FinalLf,
                _ if is_tchar(b) => self.trailer(TrailerName)?,
                _ => return Err(bad("invalid trailer line")),
            },
            TrailerName => match b {
                b':' => self.trailer(TrailerValue)?,
                _ if is_tchar(b) => self.trailer(TrailerName)?,
                _ => return Err(bad("invalid trailer name")),
            },
            TrailerValue => match b {
                b'\r' => self.trailer(TrailerLf)?,
                _ if field_byte(b) => self.trailer(TrailerValue)?,
                _ => return Err(bad("invalid byte in a trailer")),
            },
            TrailerLf => match b {
                b'\n' => self.trailer(TrailerStart)?,
                _ => return Err(bad("bare CR in a trailer")),
            },
            FinalLf => match b {
                b'\n' => Done,
                _ => return Err(bad("bare CR at the end of the body")),
            },
        };
        Ok(())
    }

    fn ext(&mut self, size: u64) -> State {
        self.run = 0;
        State::Ext { size }
    }

    /// Count a trailer byte against the limit.
    fn trailer(&mut self, next: State) -> Result<State, Reject> {
        self.run += 1;
        if self.run > self.max_trailer_bytes {
            let status = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
            return Err(Reject::answer(status, "trailers over the limit"));
        }
        Ok(next)
    }
}

/// A byte allowed in a field value or an extension: VCHAR, obs-text, SP, HTAB.
fn field_byte(b: u8) -> bool {
    b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80
}

fn hex(b: u8) -> Option<u64> {
    (b as char).to_digit(16).map(u64::from)
}

fn bad(why: &'static str) -> Reject {
    Reject::answer(StatusCode::BAD_REQUEST, why)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(body: &[u8]) -> Result<(usize, bool), Reject> {
        Chunked::new(1024).feed(body)
    }

    #[test]
    fn valid_bodies_end_where_they_end() {
        let body = b"5\r\nhello\r\n0\r\n\r\nGET";
        assert_eq!(check(body), Ok((body.len() - 3, true)));
        let ext = b"A;x=1;y=\"a b\"\r\n0123456789\r\n0\r\nT: v\r\n\r\n";
        assert_eq!(check(ext), Ok((ext.len(), true)));
        assert_eq!(check(b"00000005\r\nhel"), Ok((13, false)));
        assert_eq!(check(b"5 ;x\r\nhello\r\n0\r\n\r\n").map(|r| r.1), Ok(true));
    }

    #[test]
    fn any_split_gives_the_same_verdict() {
        let body = b"3;e=f\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nX-T: 1\r\n\r\n";
        for cut in 0..body.len() {
            let mut c = Chunked::new(1024);
            let (a, done_a) = c.feed(&body[..cut]).unwrap();
            assert_eq!((a, done_a), (cut, false), "cut {cut}");
            assert_eq!(
                c.feed(&body[cut..]),
                Ok((body.len() - cut, true)),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn bad_bodies_are_rejected() {
        for body in [
            &b"zz\r\n"[..],
            b"-1\r\n",
            b"0x5\r\n",
            b"5 \r\n",
            b"\r\n",
            b"5\nhello",
            b"11111111111111111\r\n",
            b"3\r\nhello\r\n",
            b"5;a=\0\r\n",
            b"0\r\nX\r\n\r\n",
            b"0\r\n X: y\r\n\r\n",
            b"0\r\nX: \0\r\n\r\n",
            b"0\r\n\n",
        ] {
            let r = check(body);
            assert!(r.is_err(), "{:?}: {r:?}", String::from_utf8_lossy(body));
        }
        let big = [b"0\r\n".as_slice(), &[b'a'; 2000], b": v\r\n\r\n"].concat();
        assert_eq!(
            check(&big).unwrap_err().status(),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
        // 16 digits fit in a u64.
        assert!(check(b"ffffffffffffffff\r\n").is_ok());
    }
}
