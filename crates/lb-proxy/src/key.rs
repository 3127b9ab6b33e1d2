//! Hash keys for the hashing schedulers, built from a request as nginx's
//! `hash $request_uri;` builds them.
//!
//! A [`KeyTemplate`] is parsed once from a string of literal text and
//! variables (`"$host$request_uri"`, `"${cookie_session}-x"`) and renders
//! the key of each request into a reused buffer, without allocating once the
//! buffer has grown. Anything that implements [`KeyExtractor`] can take its
//! place (a closure-like user type reading any part of the request).

use std::error::Error as StdError;
use std::fmt;
use std::io::Write as _;
use std::net::SocketAddr;
use std::str::FromStr;

use http::{HeaderMap, HeaderName, Method, Uri};

/// What a key extractor may read of a request.
#[derive(Debug, Clone, Copy)]
pub struct KeyInput<'a> {
    /// The method.
    pub method: &'a Method,
    /// The URI as received.
    pub uri: &'a Uri,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The client's address.
    pub client: SocketAddr,
    /// The local address the request came in on, if known.
    pub local: Option<SocketAddr>,
}

/// Builds the hash key of a request (see [`KeyTemplate`]).
///
/// Called on the request path for every pick: it must be quick, must not
/// block, and should write into `out` without allocating more than `out`
/// needs to grow.
pub trait KeyExtractor: Send + Sync + fmt::Debug {
    /// Append the key of `req` to `out` (which is empty on entry).
    fn extract(&self, req: &KeyInput<'_>, out: &mut Vec<u8>);
}

/// One piece of a key template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(Box<str>),
    RequestUri,
    Uri,
    Args,
    Arg(Box<str>),
    Host,
    Header(HeaderName),
    Cookie(Box<str>),
    RemoteAddr,
    RemotePort,
    ServerAddr,
    ServerPort,
    Method,
    Scheme,
}

/// A hash key template in nginx's variable syntax: `"$request_uri"`,
/// `"$remote_addr"`, `"$http_x_user"`, `"$cookie_session"`, `"$arg_id"`, or
/// any concatenation with literal text (`"${host}:$uri"`).
///
/// Variables follow nginx's `ngx_http_variables.c`:
///
/// | variable | value |
/// |---|---|
/// | `$request_uri` | the URI as received: path and query (`/a/b?x=1`) |
/// | `$uri` | the path, without the query (not percent-decoded, unlike nginx) |
/// | `$args`, `$query_string` | the query, without `?` |
/// | `$arg_NAME` | the first query parameter `NAME`, raw (not decoded) |
/// | `$host` | the Host header (or the URI's authority for HTTP/2), port removed, lower-cased |
/// | `$http_NAME` | the header `NAME` (`_` in NAME stands for `-`; case-insensitive); several are joined with `, ` |
/// | `$cookie_NAME` | the cookie `NAME` from the Cookie header(s) |
/// | `$remote_addr`, `$remote_port` | the client's IP and port |
/// | `$server_addr`, `$server_port` | the local address the request came in on |
/// | `$request_method`, `$scheme` | `GET`...; `http` |
///
/// A variable with no value renders as nothing, as in nginx.
///
/// ```
/// use lb_proxy::{KeyExtractor, KeyInput, KeyTemplate};
/// let t: KeyTemplate = "$host$request_uri".parse()?;
/// let (method, uri) = (http::Method::GET, "/a?x=1".parse::<http::Uri>()?);
/// let mut headers = http::HeaderMap::new();
/// headers.insert("host", "Example.COM:8080".parse()?);
/// let input = KeyInput { method: &method, uri: &uri, headers: &headers,
///     client: "192.0.2.1:5000".parse()?, local: None };
/// let mut key = Vec::new();
/// t.extract(&input, &mut key);
/// assert_eq!(key, b"example.com/a?x=1");
///
/// let e = "$nope".parse::<KeyTemplate>().unwrap_err();
/// assert!(e.to_string().contains("unknown variable"), "{e}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTemplate {
    source: Box<str>,
    parts: Vec<Part>,
}

/// A key template that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTemplateError {
    template: String,
    at: usize,
    reason: String,
}

impl KeyTemplateError {
    /// The byte offset in the template where the problem is.
    pub fn position(&self) -> usize {
        self.at
    }
}

impl fmt::Display for KeyTemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bad hash key template {:?} at byte {}: {}",
            self.template, self.at, self.reason
        )
    }
}

impl StdError for KeyTemplateError {}

impl FromStr for KeyTemplate {
    type Err = KeyTemplateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyTemplate::parse(s)
    }
}

impl fmt::Display for KeyTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn is_var_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

impl KeyTemplate {
    /// Parse a template. Errors name the byte offset and the problem: an
    /// unknown variable, `$` with no name, an unclosed `${`, an empty
    /// template, or a header name that is not a valid header name.
    pub fn parse(s: &str) -> Result<Self, KeyTemplateError> {
        let err = |at: usize, reason: String| KeyTemplateError {
            template: s.to_owned(),
            at,
            reason,
        };
        if s.is_empty() {
            return Err(err(0, "the template is empty".into()));
        }
        let bytes = s.as_bytes();
        let mut parts = Vec::new();
        let mut i = 0;
        let mut text_start = 0;
        while i < bytes.len() {
            if bytes[i] != b'$' {
                i += 1;
                continue;
            }
            if text_start < i {
                parts.push(Part::Text(s[text_start..i].into()));
            }
            let dollar = i;
            let (name, next) = if bytes.get(i + 1) == Some(&b'{') {
                let close = s[i + 2..]
                    .find('}')
                    .ok_or_else(|| err(dollar, "`${` is never closed with `}`".into()))?;
                (&s[i + 2..i + 2 + close], i + 3 + close)
            } else {
                let end = bytes[i + 1..]
                    .iter()
                    .position(|c| !is_var_char(*c))
                    .map_or(bytes.len(), |p| i + 1 + p);
                (&s[i + 1..end], end)
            };
            if name.is_empty() {
                return Err(err(
                    dollar,
                    "`$` must be followed by a variable name".into(),
                ));
            }
            parts.push(Self::variable(name).map_err(|r| err(dollar, r))?);
            i = next;
            text_start = next;
        }
        if text_start < bytes.len() {
            parts.push(Part::Text(s[text_start..].into()));
        }
        Ok(KeyTemplate {
            source: s.into(),
            parts,
        })
    }

    fn variable(name: &str) -> Result<Part, String> {
        let prefixed = |p: &str| name.strip_prefix(p).filter(|rest| !rest.is_empty());
        Ok(match name {
            "request_uri" => Part::RequestUri,
            "uri" | "document_uri" => Part::Uri,
            "args" | "query_string" => Part::Args,
            "host" => Part::Host,
            "remote_addr" => Part::RemoteAddr,
            "remote_port" => Part::RemotePort,
            "server_addr" => Part::ServerAddr,
            "server_port" => Part::ServerPort,
            "request_method" => Part::Method,
            "scheme" => Part::Scheme,
            _ => {
                if let Some(h) = prefixed("http_") {
                    let h = h.to_ascii_lowercase().replace('_', "-");
                    let h = HeaderName::from_bytes(h.as_bytes())
                        .map_err(|_| format!("{h:?} is not a valid header name"))?;
                    Part::Header(h)
                } else if let Some(c) = prefixed("cookie_") {
                    Part::Cookie(c.into())
                } else if let Some(a) = prefixed("arg_") {
                    Part::Arg(a.into())
                } else {
                    return Err(format!(
                        "unknown variable ${name} (known: $request_uri, $uri, $args, $arg_NAME, \
                         $host, $http_NAME, $cookie_NAME, $remote_addr, $remote_port, \
                         $server_addr, $server_port, $request_method, $scheme)"
                    ));
                }
            }
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl KeyExtractor for KeyTemplate {
    fn extract(&self, req: &KeyInput<'_>, out: &mut Vec<u8>) {
        for part in &self.parts {
            render(part, req, out);
        }
    }
}

fn render(part: &Part, req: &KeyInput<'_>, out: &mut Vec<u8>) {
    match part {
        Part::Text(t) => out.extend_from_slice(t.as_bytes()),
        Part::RequestUri => {
            let pq = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
            out.extend_from_slice(pq.as_bytes());
        }
        Part::Uri => out.extend_from_slice(req.uri.path().as_bytes()),
        Part::Args => out.extend_from_slice(req.uri.query().unwrap_or("").as_bytes()),
        Part::Arg(name) => {
            if let Some(v) = query_arg(req.uri.query().unwrap_or(""), name) {
                out.extend_from_slice(v.as_bytes());
            }
        }
        Part::Host => host(req, out),
        Part::Header(h) => {
            for (n, v) in req.headers.get_all(h).iter().enumerate() {
                if n > 0 {
                    out.extend_from_slice(b", ");
                }
                out.extend_from_slice(v.as_bytes());
            }
        }
        Part::Cookie(name) => {
            if let Some(v) = cookie(req.headers, name) {
                out.extend_from_slice(v);
            }
        }
        Part::RemoteAddr => {
            let _ = write!(out, "{}", req.client.ip());
        }
        Part::RemotePort => {
            let _ = write!(out, "{}", req.client.port());
        }
        Part::ServerAddr => {
            if let Some(l) = req.local {
                let _ = write!(out, "{}", l.ip());
            }
        }
        Part::ServerPort => {
            if let Some(l) = req.local {
                let _ = write!(out, "{}", l.port());
            }
        }
        Part::Method => out.extend_from_slice(req.method.as_str().as_bytes()),
        Part::Scheme => out.extend_from_slice(req.uri.scheme_str().unwrap_or("http").as_bytes()),
    }
}

/// `$host`: the Host header, else the URI's host; port removed, lower case.
fn host(req: &KeyInput<'_>, out: &mut Vec<u8>) {
    let raw = req
        .headers
        .get(http::header::HOST)
        .map(|v| v.as_bytes())
        .or_else(|| req.uri.authority().map(|a| a.as_str().as_bytes()))
        .unwrap_or(b"");
    let without_port = if raw.first() == Some(&b'[') {
        // An IPv6 literal: keep through the closing bracket.
        raw.iter()
            .position(|c| *c == b']')
            .map_or(raw, |p| &raw[..=p])
    } else {
        raw.iter()
            .position(|c| *c == b':')
            .map_or(raw, |p| &raw[..p])
    };
    out.extend(without_port.iter().map(u8::to_ascii_lowercase));
}

/// The first `name=value` of a query string, raw.
fn query_arg<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        k.eq_ignore_ascii_case(name).then_some(v)
    })
}

/// The value of cookie `name` in the Cookie header(s).
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers.get_all(http::header::COOKIE).iter().find_map(|v| {
        v.as_bytes().split(|c| *c == b';').find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|c| *c == b'=')?;
            let (k, v) = (&pair[..eq], &pair[eq + 1..]);
            k.eq_ignore_ascii_case(name.as_bytes()).then_some(v)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(t: &str, uri: &str, headers: &[(&str, &str)]) -> String {
        let t: KeyTemplate = t.parse().unwrap();
        let uri: Uri = uri.parse().unwrap();
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let input = KeyInput {
            method: &Method::POST,
            uri: &uri,
            headers: &h,
            client: "[2001:db8::7]:4711".parse().unwrap(),
            local: Some("10.0.0.1:80".parse().unwrap()),
        };
        let mut out = Vec::new();
        t.extract(&input, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_variable_renders_like_nginx() {
        assert_eq!(key("$request_uri", "/a/b?x=1&y=2", &[]), "/a/b?x=1&y=2");
        assert_eq!(key("$uri|$args", "/a/b?x=1&y=2", &[]), "/a/b|x=1&y=2");
        assert_eq!(key("$arg_y,$arg_z", "/?x=1&y=2", &[]), "2,");
        assert_eq!(
            key("$host", "/", &[("host", "WWW.Example.com:81")]),
            "www.example.com"
        );
        assert_eq!(key("$host", "http://[::1]:8080/", &[]), "[::1]");
        assert_eq!(
            key("$http_x_user", "/", &[("x-user", "a"), ("x-user", "b")]),
            "a, b"
        );
        assert_eq!(
            key(
                "$cookie_sid",
                "/",
                &[("cookie", "a=1; SID=xyz"), ("cookie", "sid=2")]
            ),
            "xyz"
        );
        assert_eq!(
            key("$remote_addr:$remote_port", "/", &[]),
            "2001:db8::7:4711"
        );
        assert_eq!(key("$server_addr $server_port", "/", &[]), "10.0.0.1 80");
        assert_eq!(key("${request_method}x$scheme", "/", &[]), "POSTxhttp");
        assert_eq!(key("pre-${uri}-post", "/p", &[]), "pre-/p-post");
    }

    #[test]
    fn bad_templates_say_where_and_why() {
        let cases = [
            ("", 0, "empty"),
            ("$", 0, "variable name"),
            ("ab$", 2, "variable name"),
            ("x${uri", 1, "never closed"),
            ("$foo", 0, "unknown variable $foo"),
            ("$uri$http_", 4, "unknown variable $http_"),
            ("${}", 0, "variable name"),
        ];
        for (t, at, why) in cases {
            let e = KeyTemplate::parse(t).unwrap_err();
            assert_eq!(e.position(), at, "{t:?}: {e}");
            assert!(e.to_string().contains(why), "{t:?}: {e}");
        }
    }
}
