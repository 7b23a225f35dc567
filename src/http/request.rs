//! One HTTP/1.1 request parsed out of a connection's input buffer, with
//! the contract's limits (head, body, `Content-Length`); a request that
//! cannot be served becomes the [`Response`] that says why.
//!
//! Pure: bytes in, a request or a response out. The caller owns the
//! buffer, keeps bytes that are not yet a whole request, and loops while
//! whole requests remain (pipelining). Knows which paths exist only
//! through [`super::paths`].

use super::paths;
use super::response::Response;

/// The largest request head accepted; past it, 431.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// The largest request body accepted; past it, 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
const MAX_HEADERS: usize = 64;

/// One parsed request, borrowing from the connection's input buffer.
#[derive(Debug)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The path, without the query string.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: Vec<(&'a str, &'a [u8])>,
    pub body: &'a [u8],
    /// False after `Connection: close`, and for HTTP/1.0 without keep-alive.
    pub keep_alive: bool,
}

impl<'a> Request<'a> {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    /// True if the comma-separated header `name` lists `token`
    /// (case-insensitive), as in `Connection: keep-alive, Upgrade`.
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(|&b| b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    }

    /// The value of `name` in the query string, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query?.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then(|| {
                let value = value.replace('+', " ");
                percent_encoding::percent_decode_str(&value)
                    .decode_utf8_lossy()
                    .into_owned()
            })
        })
    }
}

/// What the input buffer holds.
#[derive(Debug)]
pub enum Parsed<'a> {
    /// Not a whole request yet: read more.
    Partial,
    /// A request, and how many bytes of the buffer it used.
    Complete(Request<'a>, usize),
    /// A request that cannot be served; answer and close the connection.
    Invalid(Response),
}

/// Parses the first request in `buf`, a REST publish with a body of at
/// most `MAX_BODY_BYTES` like any other request.
pub fn parse_request(buf: &[u8]) -> Parsed<'_> {
    parse_request_within(buf, MAX_BODY_BYTES)
}

/// Parses the first request in `buf`; the body of a REST publish may be
/// `message_bytes` long (`MAX_MESSAGE_BYTES`), any other `MAX_BODY_BYTES`.
pub fn parse_request_within(buf: &[u8], message_bytes: usize) -> Parsed<'_> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Partial) => {
            if buf.len() > MAX_HEAD_BYTES {
                return Parsed::Invalid(head_too_large());
            }
            return Parsed::Partial;
        }
        Ok(httparse::Status::Complete(n)) => n,
        Err(httparse::Error::TooManyHeaders) => return Parsed::Invalid(head_too_large()),
        Err(e) => {
            return Parsed::Invalid(
                Response::error(400, "BAD_REQUEST", &format!("malformed request: {e}")).closing(),
            )
        }
    };
    if head_len > MAX_HEAD_BYTES {
        return Parsed::Invalid(head_too_large());
    }
    let method = req.method.unwrap_or("");
    let target = req.path.unwrap_or("/");
    let version = req.version.unwrap_or(1);
    let headers: Vec<(&str, &[u8])> = req.headers.iter().map(|h| (h.name, h.value)).collect();
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    let mut request = Request {
        method,
        path,
        query,
        headers,
        body: &[],
        keep_alive: true,
    };
    request.keep_alive = if version == 0 {
        request.header_has_token("Connection", "keep-alive")
    } else {
        !request.header_has_token("Connection", "close")
    };

    // A request that no route takes (404) or that uses a method its path
    // does not allow (405) gets that answer rather than one about its body,
    // with the same fate for the connection.
    let body_refused = |response: Response| {
        Parsed::Invalid(match paths::misrouted(method, path) {
            Some(misrouted) => Response {
                close: response.close,
                consumed: response.consumed,
                ..misrouted
            },
            None => response,
        })
    };
    if request.header("Transfer-Encoding").is_some() {
        return body_refused(
            Response::error(
                411,
                "LENGTH_REQUIRED",
                "a request body needs Content-Length; chunked bodies are not accepted",
            )
            .closing(),
        );
    }
    let mut lengths = request
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("Content-Length"));
    let content_length = match (lengths.next(), lengths.next()) {
        (None, _) => None,
        (Some((_, first)), second) => {
            let parsed = parse_length(first);
            if parsed.is_none() || second.is_some_and(|(_, v)| parse_length(v) != parsed) {
                return Parsed::Invalid(
                    Response::error(400, "BAD_REQUEST", "invalid Content-Length").closing(),
                );
            }
            parsed
        }
    };
    let body_limit = if paths::is_publish(method, path) {
        message_bytes
    } else {
        MAX_BODY_BYTES
    };
    let body_len = match content_length {
        Some(n) if n > body_limit as u64 => {
            return body_refused(
                Response::error(
                    413,
                    "PAYLOAD_TOO_LARGE",
                    &format!("this request's body may be at most {body_limit} bytes"),
                )
                .closing(),
            )
        }
        Some(n) => n as usize,
        None if matches!(method, "POST" | "PUT" | "PATCH") => {
            // No body follows by the rules of HTTP/1.1, so the connection
            // stays usable.
            let response = Response::error(
                411,
                "LENGTH_REQUIRED",
                "a request body needs Content-Length",
            );
            return body_refused(response.keeping_connection_if(request.keep_alive, head_len));
        }
        None => 0,
    };
    if buf.len() < head_len + body_len {
        return Parsed::Partial;
    }
    request.body = &buf[head_len..head_len + body_len];
    Parsed::Complete(request, head_len + body_len)
}

fn parse_length(value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(value).ok()?.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn head_too_large() -> Response {
    Response::error(
        431,
        "HEADERS_TOO_LARGE",
        &format!("the request head may be at most {MAX_HEAD_BYTES} bytes"),
    )
    .closing()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(buf: &[u8]) -> (Request<'_>, usize) {
        match parse_request(buf) {
            Parsed::Complete(r, n) => (r, n),
            other => panic!("{other:?}"),
        }
    }

    fn invalid(buf: &[u8]) -> Response {
        match parse_request(buf) {
            Parsed::Invalid(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_a_request_with_a_body_and_query() {
        let buf = b"POST /topics?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 17\r\n\r\n{\"name\":\"orders\"}rest";
        let (req, used) = complete(buf);
        assert_eq!(
            (req.method, req.path, req.query),
            ("POST", "/topics", Some("x=1"))
        );
        assert_eq!(req.body, b"{\"name\":\"orders\"}");
        assert_eq!(used, buf.len() - 4);
        assert!(req.keep_alive);
        assert_eq!(req.header("host"), Some(&b"a"[..]));
    }

    #[test]
    fn split_requests_are_partial_until_whole() {
        let buf = b"POST /topics HTTP/1.1\r\nContent-Length: 5\r\n\r\nabcde";
        for cut in 0..buf.len() {
            assert!(
                matches!(parse_request(&buf[..cut]), Parsed::Partial),
                "cut at {cut}"
            );
        }
        assert!(matches!(parse_request(buf), Parsed::Complete(_, n) if n == buf.len()));
    }

    #[test]
    fn pipelined_requests_parse_one_at_a_time() {
        let buf = b"GET /health HTTP/1.1\r\n\r\nGET /topics HTTP/1.1\r\n\r\n";
        let (first, used) = complete(buf);
        assert_eq!(first.path, "/health");
        let (second, _) = complete(&buf[used..]);
        assert_eq!(second.path, "/topics");
    }

    #[test]
    fn connection_close_and_http10() {
        assert!(
            !complete(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
                .0
                .keep_alive
        );
        assert!(!complete(b"GET / HTTP/1.0\r\n\r\n").0.keep_alive);
        assert!(
            complete(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                .0
                .keep_alive
        );
        assert!(
            complete(b"GET / HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\n\r\n")
                .0
                .header_has_token("connection", "upgrade")
        );
    }

    #[test]
    fn limits_and_errors() {
        let big_head = format!(
            "GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n",
            "a".repeat(MAX_HEAD_BYTES)
        );
        let r = invalid(big_head.as_bytes());
        assert_eq!((r.status, r.close), (431, true));
        assert!(r.body.contains("HEADERS_TOO_LARGE"));
        let mut partial_head = b"GET / HTTP/1.1\r\nX: ".to_vec();
        partial_head.resize(MAX_HEAD_BYTES + 1, b'a');
        assert_eq!(invalid(&partial_head).status, 431);
        let many: String = (0..100).map(|i| format!("H{i}: v\r\n")).collect();
        assert_eq!(
            invalid(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()).status,
            431
        );

        let r = invalid(b"POST /topics HTTP/1.1\r\nContent-Length: 65537\r\n\r\n");
        assert_eq!((r.status, r.close), (413, true));
        assert!(r.body.contains("PAYLOAD_TOO_LARGE"));
        assert!(matches!(
            parse_request(b"POST /topics HTTP/1.1\r\nContent-Length: 65536\r\n\r\n"),
            Parsed::Partial
        ));

        let r = invalid(b"POST /topics HTTP/1.1\r\n\r\n");
        assert_eq!((r.status, r.close, r.consumed), (411, false, Some(25)));
        assert!(r.body.contains("LENGTH_REQUIRED"));
        let r = invalid(b"POST /topics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!((r.status, r.close), (411, true));

        assert_eq!(
            invalid(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n").status,
            400
        );
        assert_eq!(
            invalid(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n").status,
            400
        );
        let r = invalid(b"\x00\x01garbage\r\n\r\n");
        assert_eq!((r.status, r.close), (400, true));
        assert!(r.body.contains("BAD_REQUEST"));
    }

    #[test]
    fn a_wrong_method_or_path_is_refused_before_its_body() {
        for (method, path, status) in [
            ("POST", "/health", 405),
            ("PUT", "/stats", 405),
            ("POST", "/ws", 405),
            ("POST", "/topics/x", 405),
            ("PATCH", "/topics", 405),
            ("POST", "/metrics", 405),
            ("POST", "/readyz", 405),
            ("POST", "/nope", 404),
        ] {
            let bodiless = format!("{method} {path} HTTP/1.1\r\n\r\n");
            let r = invalid(bodiless.as_bytes());
            assert_eq!(
                (r.status, r.close),
                (status, false),
                "bodiless {method} {path}"
            );
            assert_eq!(r.consumed, Some(bodiless.len()), "{method} {path}");
            assert_eq!(r.headers.iter().any(|(n, _)| *n == "Allow"), status == 405);
            for head in ["Transfer-Encoding: chunked", "Content-Length: 65537"] {
                let raw = format!("{method} {path} HTTP/1.1\r\n{head}\r\n\r\n");
                let r = invalid(raw.as_bytes());
                assert_eq!(
                    (r.status, r.close),
                    (status, true),
                    "{head}: {method} {path}"
                );
            }
        }
        // An allowed method still gets the body's error.
        assert_eq!(invalid(b"POST /topics HTTP/1.1\r\n\r\n").status, 411);
        assert_eq!(
            invalid(b"DELETE /topics/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").status,
            411
        );
    }

    #[test]
    fn query_params_are_percent_decoded() {
        let (req, _) = complete(b"GET /ws?a=1&api_key=s%20e+c HTTP/1.1\r\n\r\n");
        assert_eq!(req.query_param("api_key").as_deref(), Some("s e c"));
        assert_eq!(req.query_param("a").as_deref(), Some("1"));
        assert_eq!(req.query_param("b"), None);
    }
}
