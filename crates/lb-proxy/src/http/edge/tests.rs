use http::StatusCode;

use super::head::{parse, valid_host, Framing, Head};
use super::{Limits, Reject};

fn limits() -> Limits {
    Limits {
        max_uri_bytes: 64,
        max_header_bytes: 256,
        max_headers: 4,
        ..Limits::default()
    }
}

fn head(raw: &[u8]) -> Head {
    match parse(raw, &limits()) {
        Ok(Some(h)) => h,
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(raw)),
    }
}

fn refused(raw: &[u8]) -> Option<StatusCode> {
    match parse(raw, &limits()) {
        Err(r) => r.status(),
        other => panic!("{:?} passed: {other:?}", String::from_utf8_lossy(raw)),
    }
}

const VALID: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /p?q=1 HTTP/1.0\r\n\r\n",
    b"POST /u HTTP/1.1\r\nHost: a:80\r\nContent-Length: 12\r\n\r\n",
    b"POST /u HTTP/1.1\r\nhost: a\r\ntransfer-encoding:\tChunked \r\n\r\n",
    b"GET http://A.test:8080/x HTTP/1.1\r\nHost: a.test:8080\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: [::1]:1\r\n\r\n",
    b"GET / HTTP/1.7\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
];

#[test]
fn valid_heads_parse_with_their_framing() {
    let h = head(VALID[0]);
    assert_eq!(
        (h.len, h.framing, h.upgrade),
        (VALID[0].len(), Framing::None, false)
    );
    assert_eq!(head(VALID[1]).framing, Framing::None);
    assert_eq!(head(VALID[2]).framing, Framing::Length(12));
    assert_eq!(head(VALID[3]).framing, Framing::Chunked);
    assert_eq!(head(VALID[4]).framing, Framing::None);
    assert_eq!(head(VALID[5]).framing, Framing::None);
    let h = head(VALID[6]);
    assert!(h.upgrade);
    assert_eq!(h.minor_at, Some(13), "the 7 of HTTP/1.7 becomes a 1");
    // The head ends at its empty line: what follows is not looked at.
    let mut two = VALID[0].to_vec();
    two.extend_from_slice(b"\0garbage");
    assert_eq!(head(&two).len, VALID[0].len());
}

#[test]
fn every_prefix_of_a_valid_head_waits_for_more() {
    for raw in VALID {
        for cut in 0..raw.len() {
            assert_eq!(
                parse(&raw[..cut], &limits()),
                Ok(None),
                "{:?} cut at {cut}",
                String::from_utf8_lossy(raw)
            );
        }
    }
}

#[test]
fn refusals_carry_the_right_status() {
    let bad = Some(StatusCode::BAD_REQUEST);
    assert_eq!(refused(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\0\r\n\r\n"), bad);
    assert_eq!(refused(b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n"), bad);
    wait_for_more(b"GET / HTTP/1.1\r\n");
    assert_eq!(refused(b"GET / HTTP/1.1\r\n\r\n"), bad, "no Host");
    assert_eq!(
        refused(b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"),
        bad
    );
    assert_eq!(
        refused(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
        bad
    );
    assert_eq!(
        refused(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: br, chunked\r\n\r\n"),
        Some(StatusCode::NOT_IMPLEMENTED)
    );
    assert_eq!(
        refused(b"GET / HTTP/2.0\r\n\r\n"),
        Some(StatusCode::HTTP_VERSION_NOT_SUPPORTED)
    );
    assert_eq!(
        refused(b"GET /\r\n\r\n"),
        None,
        "HTTP/0.9 is closed unanswered"
    );
    assert_eq!(
        refused(b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"),
        Some(StatusCode::NOT_IMPLEMENTED)
    );
}

fn wait_for_more(raw: &[u8]) {
    assert_eq!(parse(raw, &limits()), Ok(None));
}

#[test]
fn limits_answer_414_and_431() {
    let long = [
        b"GET /".as_slice(),
        &[b'a'; 64],
        b" HTTP/1.1\r\nHost: a\r\n\r\n",
    ]
    .concat();
    assert_eq!(refused(&long), Some(StatusCode::URI_TOO_LONG));
    // A request line that never ends is refused once past the limit.
    let endless = [b"GET /".as_slice(), &[b'a'; 200]].concat();
    assert_eq!(refused(&endless), Some(StatusCode::URI_TOO_LONG));
    let many = b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n";
    assert_eq!(
        refused(many),
        Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
    );
    let big = [b"GET / HTTP/1.1\r\nHost: a\r\nX: ".as_slice(), &[b'v'; 300]].concat();
    assert_eq!(
        refused(&big),
        Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        "refused before the line ends"
    );
}

#[test]
fn garbage_is_refused_before_a_line_end() {
    assert_eq!(refused(b"\x16\x03\x01\x00"), Some(StatusCode::BAD_REQUEST));
    assert_eq!(refused(b"GET /caf\xc3"), Some(StatusCode::BAD_REQUEST));
    assert_eq!(refused(b"@"), Some(StatusCode::BAD_REQUEST));
}

#[test]
fn hosts() {
    for ok in [
        &b""[..],
        b"a",
        b"a.b-c_d~e",
        b"a:80",
        b"a:",
        b"127.0.0.1:8080",
        b"[::1]",
        b"[fe80::1]:443",
        b"x%41y",
    ] {
        assert!(valid_host(ok), "{:?}", String::from_utf8_lossy(ok));
    }
    for bad in [
        &b"a b"[..],
        b"a/b",
        b"u@a",
        b"a:8o",
        b"a:80:80",
        b"[::1",
        b"[::1]x",
        b"[]",
        b"[g::1]",
    ] {
        assert!(!valid_host(bad), "{:?}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn reject_reports_its_reason() {
    let r = Reject::answer(StatusCode::BAD_REQUEST, "why");
    assert_eq!(
        (r.status(), r.why()),
        (Some(StatusCode::BAD_REQUEST), "why")
    );
    assert_eq!(Reject::close("x").status(), None);
}

#[test]
fn expectations_other_than_100_continue_are_unmet() {
    let met: &[&[u8]] = &[
        b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n",
        b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nExpect: 100-Continue \r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nExpect: ,\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    ];
    for raw in met {
        assert!(
            !head(raw).unmet_expectation,
            "{:?}",
            String::from_utf8_lossy(raw)
        );
    }
    let unmet: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\nHost: a\r\nExpect: foo\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue, foo\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue;a=b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nExpect: x\r\n\r\n",
        b"GET / HTTP/1.0\r\nExpect: x\r\n\r\n",
    ];
    for raw in unmet {
        assert!(
            head(raw).unmet_expectation,
            "{:?}",
            String::from_utf8_lossy(raw)
        );
    }
    let h = head(b"HEAD / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Close\r\n\r\n");
    assert!(h.head_method && !h.persistent);
    assert!(head(VALID[0]).persistent);
    assert!(!head(VALID[1]).persistent, "HTTP/1.0");
}

#[test]
fn chunk_sizes_past_max_body_are_refused_413_in_any_split() {
    use super::chunked::Chunked;
    let body = b"5\r\nhello\r\n5\r\nworld\r\n1\r\n!\r\n0\r\n\r\n";
    // Within 11 bytes the body passes whole; within 10 the third chunk size
    // is refused, however the bytes arrive.
    for (max, ok) in [(11u64, true), (10, false)] {
        for split in 0..body.len() {
            let mut c = Chunked::new(1024).with_max_body(Some(max));
            let first = c.feed(&body[..split]);
            let result = first.and_then(|(n, done)| {
                assert!(!done || n == body.len());
                c.feed(&body[n..])
            });
            match (ok, result) {
                (true, Ok((_, done))) => assert!(done, "max {max}, split {split}"),
                (false, Err(r)) => assert_eq!(r.status(), Some(StatusCode::PAYLOAD_TOO_LARGE)),
                (ok, r) => panic!("max {max}, split {split}: expected ok={ok}, got {r:?}"),
            }
        }
    }
}
