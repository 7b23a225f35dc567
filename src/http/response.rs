//! HTTP responses as the broker writes them: JSON bodies (and the
//! console's files), error bodies `{"error":{"code","message"}}`, headers,
//! and whether the connection closes after it.
//!
//! Pure: a value, and its bytes.

use crate::console::Asset;
use crate::metrics::AuthFailure;
use serde::Serialize;

/// A response with a JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    /// Close the connection once this response is written.
    pub close: bool,
    /// For an error response to a request the connection survives (such as
    /// a bodiless POST): how many input bytes that request used.
    pub consumed: Option<usize>,
    /// A refusal of the gate (`gate`), counted by this reason.
    pub auth_failure: Option<AuthFailure>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
}

#[derive(Serialize)]
struct ErrorResponse<'a> {
    error: ErrorDetail<'a>,
}

impl Response {
    pub fn json(status: u16, body: &impl Serialize) -> Response {
        let body = serde_json::to_string(body).expect("response bodies always serialise");
        Response::text(status, "application/json", body)
    }

    /// A response whose body is already text of `content_type`.
    pub fn text(status: u16, content_type: &'static str, body: String) -> Response {
        Response {
            status,
            content_type,
            headers: Vec::new(),
            body,
            close: false,
            consumed: None,
            auth_failure: None,
        }
    }

    /// A 200 with a console file, and its headers.
    pub fn asset(asset: &Asset) -> Response {
        let mut response = Response::text(200, asset.content_type, asset.body.to_string());
        for (name, value) in asset.headers() {
            response = response.with_header(name, value);
        }
        response
    }

    /// `{"error":{"code":..,"message":..}}` with `status`.
    pub fn error(status: u16, code: &str, message: &str) -> Response {
        Response::json(
            status,
            &ErrorResponse {
                error: ErrorDetail { code, message },
            },
        )
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    pub fn closing(mut self) -> Response {
        self.close = true;
        self
    }

    /// [`closing`](Self::closing) if `close`.
    pub fn closing_if(mut self, close: bool) -> Response {
        self.close |= close;
        self
    }

    pub(super) fn keeping_connection_if(mut self, keep: bool, consumed: usize) -> Response {
        self.close = !keep;
        self.consumed = Some(consumed);
        self
    }

    /// Appends the whole response to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        let reason = reason_phrase(self.status);
        let _ = write!(
            out,
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
            self.status,
            self.content_type,
            self.body.len()
        );
        for (name, value) in &self.headers {
            let _ = write!(out, "{name}: {value}\r\n");
        }
        if self.close {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(self.body.as_bytes());
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Payload Too Large",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_well_formed() {
        let mut out = Vec::new();
        Response::error(405, "METHOD_NOT_ALLOWED", "no")
            .with_header("Allow", "GET")
            .closing()
            .write_to(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(text.contains("Content-Type: application/json\r\n"));
        assert!(text.contains("Allow: GET\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        let body = r#"{"error":{"code":"METHOD_NOT_ALLOWED","message":"no"}}"#;
        assert!(text.ends_with(&format!(
            "Content-Length: {}\r\nAllow: GET\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )));
    }
}
