//! The own HTTP/1.1 server side ([`Server::h1_server`]) against raw
//! clients on loopback: exact bytes in, exact bytes out, and the same
//! bytes as hyper's server writes (`h1_server(false)`), `Date` aside.
//! Outcomes are asserted, never speed.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, SizeHint};
use hyper_util::rt::TokioIo;
use lb_proxy::http::{ClientBody, Server};
use lb_proxy::BoxError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long a read waits before the connection counts as quiet.
const QUIET: Duration = Duration::from_millis(500);

/// A response body of frames given in advance, of unknown length; `None`
/// stands for a wait (the body is not ready once).
struct Frames(VecDeque<Option<Result<Bytes, BoxError>>>);

impl Body for Frames {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.0.pop_front() {
            Some(None) => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Some(Some(r)) => Poll::Ready(Some(r.map(Frame::data))),
            None => Poll::Ready(None),
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

type Out = http_body_util::combinators::BoxBody<Bytes, BoxError>;

fn full(text: &'static str) -> Out {
    Full::new(Bytes::from(text)).map_err(|e| match e {}).boxed()
}

async fn handle(mut req: Request<ClientBody>) -> Result<Response<Out>, Infallible> {
    let resp = match req.uri().path() {
        "/hello" => Response::new(full("hello")),
        "/stream" => Response::new(
            Frames(VecDeque::from([
                Some(Ok(Bytes::from("ab"))),
                Some(Ok(Bytes::from("cde"))),
            ]))
            .boxed(),
        ),
        "/fail" => Response::new(
            Frames(VecDeque::from([
                Some(Ok(Bytes::from("first"))),
                Some(Err(BoxError::from("broken"))),
            ]))
            .boxed(),
        ),
        // Fails after what came first has gone out.
        "/fail-later" => Response::new(
            Frames(VecDeque::from([
                Some(Ok(Bytes::from("first"))),
                None,
                Some(Err(BoxError::from("broken"))),
            ]))
            .boxed(),
        ),
        "/204" => {
            let mut r = Response::new(full(""));
            *r.status_mut() = StatusCode::NO_CONTENT;
            r
        }
        "/304" => {
            let mut r = Response::new(full(""));
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            r
        }
        "/close" => Response::builder()
            .header("connection", "close")
            .body(full("bye"))
            .unwrap(),
        // Reads the whole body, frame by frame, and answers its length
        // and its largest frame.
        "/count" => {
            let mut body = req.into_body();
            let (mut total, mut largest) = (0usize, 0usize);
            while let Some(f) = body.frame().await {
                let Ok(f) = f else {
                    break;
                };
                if let Some(d) = f.data_ref() {
                    total += d.len();
                    largest = largest.max(d.len());
                }
            }
            Response::new(
                Full::new(Bytes::from(format!("{total} {largest}")))
                    .map_err(|e| match e {})
                    .boxed(),
            )
        }
        // The body itself, streamed back.
        "/echo" => Response::new(req.into_body().boxed()),
        // Answers before reading the body.
        "/early" => Response::new(full("early")),
        "/upgrade" => {
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let Ok(up) = on.await else {
                    return;
                };
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 64];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
            Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("connection", "upgrade")
                .header("upgrade", "echo")
                .body(full(""))
                .unwrap()
        }
        _ => {
            let mut r = Response::new(full("no"));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
    };
    Ok(resp)
}

async fn start(own: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::new().h1_server(own);
    tokio::spawn(server.serve(listener, tower::service_fn(handle)));
    addr
}

/// What came back until the connection closed (`true`) or went quiet.
async fn read_all(s: &mut TcpStream) -> (String, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match tokio::time::timeout(QUIET, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (strip_date(&out), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (strip_date(&out), false),
        }
    }
}

/// The bytes, with every `date:` line taken out.
fn strip_date(b: &[u8]) -> String {
    let text = String::from_utf8_lossy(b);
    let mut out = String::new();
    let mut rest = &text[..];
    while let Some(at) = rest.find("date: ") {
        out.push_str(&rest[..at]);
        let end = rest[at..].find("\r\n").map_or(rest.len(), |e| at + e + 2);
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Send `input` on a new connection to a server with and without the own
/// server side: both must answer the same; that answer.
async fn both(input: &[u8]) -> (String, bool) {
    let mut seen = Vec::new();
    for own in [true, false] {
        let addr = start(own).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(input).await.unwrap();
        seen.push(read_all(&mut s).await);
    }
    assert_eq!(
        seen[0], seen[1],
        "own server (left) and hyper's (right) differ"
    );
    seen.remove(0)
}

const HELLO: &str = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";

#[tokio::test]
async fn keep_alive_serves_several_requests_then_a_close() {
    let mut s = TcpStream::connect(start(true).await).await.unwrap();
    for _ in 0..3 {
        s.write_all(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_all(&mut s).await, (HELLO.to_owned(), false));
    }
    s.write_all(b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let want = "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 5\r\n\r\nhello";
    assert_eq!(read_all(&mut s).await, (want.to_owned(), true));
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let got = both(
        b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\nGET /stream HTTP/1.1\r\nHost: t\r\n\r\n\
          HEAD /hello HTTP/1.1\r\nHost: t\r\n\r\nGET /nope HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .await;
    let want = format!(
        "{HELLO}HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n\
         HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n\
         HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\nno"
    );
    assert_eq!(got, (want, false));
}

#[tokio::test]
async fn no_body_for_head_204_and_304() {
    let got = both(
        b"HEAD /stream HTTP/1.1\r\nHost: t\r\n\r\nGET /204 HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /304 HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .await;
    let want = "HTTP/1.1 200 OK\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n\
                HTTP/1.1 304 Not Modified\r\n\r\n";
    assert_eq!(got, (want.to_owned(), false));
}

#[tokio::test]
async fn http_10_closes_unless_kept_alive() {
    let got = both(b"GET /hello HTTP/1.0\r\n\r\n").await;
    let want = "HTTP/1.0 200 OK\r\ncontent-length: 5\r\n\r\nhello";
    assert_eq!(got, (want.to_owned(), true));

    let got = both(
        b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n\
          GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    )
    .await;
    // Kept alive after the sized body; the unsized one is close-delimited.
    let want = "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 5\r\n\r\nhello\
                HTTP/1.0 200 OK\r\nconnection: keep-alive\r\n\r\nabcde";
    assert_eq!(got, (want.to_owned(), true));
}

#[tokio::test]
async fn a_response_saying_close_closes() {
    let got =
        both(b"GET /close HTTP/1.1\r\nHost: t\r\n\r\nGET /hello HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let want = "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 3\r\n\r\nbye";
    assert_eq!(got, (want.to_owned(), true));
}

#[tokio::test]
async fn request_bodies_sized_and_chunked_stream_through() {
    let got = both(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello\
          POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
          3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nx-trailer: 1\r\n\r\n\
          POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    let want = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello\
                HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
    assert!(got.0.starts_with(want), "{got:?}");
    assert!(
        got.0
            .ends_with("HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n0 0"),
        "{got:?}"
    );
    assert!(!got.1);
}

#[tokio::test]
async fn a_large_upload_streams_in_bounded_frames() {
    for chunked in [false, true] {
        let addr = start(true).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        const TOTAL: usize = 8 * 1024 * 1024;
        let head = if chunked {
            "POST /count HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_owned()
        } else {
            format!("POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: {TOTAL}\r\n\r\n")
        };
        s.write_all(head.as_bytes()).await.unwrap();
        let piece = vec![b'x'; 64 * 1024];
        for _ in 0..TOTAL / piece.len() {
            if chunked {
                s.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                    .await
                    .unwrap();
            }
            s.write_all(&piece).await.unwrap();
            if chunked {
                s.write_all(b"\r\n").await.unwrap();
            }
        }
        if chunked {
            s.write_all(b"0\r\n\r\n").await.unwrap();
        }
        let (got, closed) = read_all(&mut s).await;
        let body = got.split("\r\n\r\n").nth(1).unwrap().to_owned();
        let (total, largest) = body.split_once(' ').unwrap();
        assert_eq!(total.parse::<usize>().unwrap(), TOTAL);
        let largest: usize = largest.parse().unwrap();
        assert!(largest <= 256 * 1024, "frames stay small: {largest}");
        assert!(!closed);
    }
}

#[tokio::test]
async fn a_body_error_mid_response_closes_the_connection() {
    // Failing at once: as hyper, nothing of the response goes out.
    let got =
        both(b"GET /fail HTTP/1.1\r\nHost: t\r\n\r\nGET /hello HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(got, (String::new(), true));
    // Failing after a wait: what went out stays, and the chunked body
    // never ends.
    let got =
        both(b"GET /fail-later HTTP/1.1\r\nHost: t\r\n\r\nGET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
            .await;
    let want = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n";
    assert_eq!(got, (want.to_owned(), true));
}

#[tokio::test]
async fn an_early_answer_to_an_unfinished_upload() {
    // The rest of a short body has come: dropped, and the connection goes on.
    let got = both(
        b"POST /early HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello\
          GET /hello HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .await;
    let want = format!("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nearly{HELLO}");
    assert_eq!(got, (want, false));
    // Most of a long one is still to come: answered, then closed.
    let addr = start(true).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /early HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n0123456789")
        .await
        .unwrap();
    let want = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nearly";
    assert_eq!(read_all(&mut s).await, (want.to_owned(), true));
}

#[tokio::test]
async fn expect_100_continue_goes_through_hyper() {
    for own in [true, false] {
        let mut s = TcpStream::connect(start(own).await).await.unwrap();
        s.write_all(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_all(&mut s).await, (HELLO.to_owned(), false));
        s.write_all(
            b"POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
        )
        .await
        .unwrap();
        assert_eq!(
            read_all(&mut s).await,
            ("HTTP/1.1 100 Continue\r\n\r\n".to_owned(), false)
        );
        s.write_all(b"hello").await.unwrap();
        let want = "HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n5 5";
        assert_eq!(read_all(&mut s).await, (want.to_owned(), false));
        // And the connection goes on (through hyper now).
        s.write_all(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_all(&mut s).await, (HELLO.to_owned(), false));
    }
}

#[tokio::test]
async fn an_upgrade_after_a_plain_request_goes_through_hyper() {
    for own in [true, false] {
        let mut s = TcpStream::connect(start(own).await).await.unwrap();
        s.write_all(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_all(&mut s).await, (HELLO.to_owned(), false));
        s.write_all(
            b"GET /upgrade HTTP/1.1\r\nHost: t\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n",
        )
        .await
        .unwrap();
        let want =
            "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n";
        assert_eq!(read_all(&mut s).await, (want.to_owned(), false));
        s.write_all(b"ping").await.unwrap();
        assert_eq!(read_all(&mut s).await, ("ping".to_owned(), false));
    }
}

#[tokio::test]
async fn a_target_the_edge_passes_but_http_refuses_is_answered_as_hyper_does() {
    for target in ["/a\"b", "/a{b}", "/a<b>", "/a\\b", "/a^b", "/a|b", "/a`b"] {
        let req = format!(
            "GET {target} HTTP/1.1\r\nHost: t\r\n\r\nGET /hello HTTP/1.1\r\nHost: t\r\n\r\n"
        );
        let got = both(req.as_bytes()).await;
        assert!(!got.0.is_empty(), "{target}: answered");
    }
}
