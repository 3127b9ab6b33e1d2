//! Header rewriting of a forwarding proxy: hop-by-hop removal (RFC 9110
//! section 7.6.1), `X-Forwarded-For` / `X-Forwarded-Proto` as nginx's
//! `$proxy_add_x_forwarded_for` and `$scheme`, `Forwarded` (RFC 7239), and
//! the Host header.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// The headers that describe one connection and never cross a proxy.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// `X-Forwarded-For`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Whether the Connection header(s) list `token` (case-insensitive).
pub(crate) fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str()
            .unwrap_or("")
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    })
}

/// Remove hop-by-hop headers: the fixed list, `Upgrade`, and every header
/// the Connection header names. With `keep_upgrade` (a protocol switch
/// being passed through), `Upgrade` stays and `Connection: upgrade` is set.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Most messages carry none: one pass over the names they have is much
    // cheaper than nine hashed removals (and no Connection header means no
    // header named by it).
    if !keep_upgrade && !headers.keys().any(is_hop_by_hop) {
        return;
    }
    // Headers named in Connection: rare, so the list allocates only then.
    let mut named: Vec<HeaderName> = Vec::new();
    for v in headers.get_all(header::CONNECTION) {
        for token in v.to_str().unwrap_or("").split(',') {
            let token = token.trim();
            if token.is_empty()
                || token.eq_ignore_ascii_case("close")
                || token.eq_ignore_ascii_case("keep-alive")
                || token.eq_ignore_ascii_case("upgrade")
            {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                named.push(name);
            }
        }
    }
    for name in named {
        if !(keep_upgrade && name == header::UPGRADE) {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

/// Whether `name` is removed from every message (`Upgrade` included; the
/// headers that Connection names are not known here).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    *name == header::UPGRADE || HOP_BY_HOP.contains(name)
}

/// Append the client to `X-Forwarded-For` (several fields are joined into
/// one, as nginx's `$proxy_add_x_forwarded_for`), set `X-Forwarded-Proto`,
/// and append an RFC 7239 `Forwarded` element `for=..;proto=..;host=..`.
pub(crate) fn add_forwarded(headers: &mut HeaderMap, client: SocketAddr, proto: &'static str) {
    let ip = client.ip();
    let mut xff = String::with_capacity(64);
    for v in headers.get_all(&X_FORWARDED_FOR) {
        if let Ok(s) = v.to_str() {
            if !s.trim().is_empty() {
                xff.push_str(s.trim());
                xff.push_str(", ");
            }
        }
    }
    let _ = write!(xff, "{ip}");
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert(X_FORWARDED_FOR, v);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));

    let mut fwd = String::with_capacity(64);
    match ip {
        IpAddr::V4(v4) => {
            let _ = write!(fwd, "for={v4}");
        }
        IpAddr::V6(v6) => {
            let _ = write!(fwd, "for=\"[{v6}]\"");
        }
    }
    let _ = write!(fwd, ";proto={proto}");
    if let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        if host
            .bytes()
            .all(|c| c.is_ascii_graphic() && c != b'"' && c != b'\\')
        {
            let _ = write!(fwd, ";host=\"{host}\"");
        }
    }
    if let Ok(v) = HeaderValue::from_str(&fwd) {
        headers.append(header::FORWARDED, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["x-kept"]);
    }

    #[test]
    fn messages_without_hop_by_hop_headers_are_untouched() {
        let pairs = [("host", "a"), ("x-a", "1"), ("x-a", "2"), ("accept", "*/*")];
        let mut h = map(&pairs);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h, map(&pairs));
        for name in ["Keep-Alive", "proxy-connection", "TE", "trailer", "upgrade"] {
            let mut h = map(&[("host", "a"), (name, "x")]);
            strip_hop_by_hop(&mut h, false);
            assert_eq!(h, map(&[("host", "a")]), "{name}");
        }
    }

    #[test]
    fn upgrade_survives_when_asked() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
    }

    #[test]
    fn forwarded_headers_append() {
        let mut h = map(&[
            ("x-forwarded-for", "203.0.113.1"),
            ("x-forwarded-for", "203.0.113.2"),
            ("host", "example.com:8080"),
        ]);
        add_forwarded(&mut h, "[2001:db8::1]:5000".parse().unwrap(), "http");
        assert_eq!(
            h["x-forwarded-for"],
            "203.0.113.1, 203.0.113.2, 2001:db8::1"
        );
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(
            h["forwarded"],
            "for=\"[2001:db8::1]\";proto=http;host=\"example.com:8080\""
        );
    }
}
