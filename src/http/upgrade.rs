//! The WebSocket opening handshake (RFC 6455 section 4.2), checked before
//! anything is upgraded: whether a request may become a WebSocket, and what
//! the `101` says.

use super::request::Request;
use super::response::Response;

/// The `101 Switching Protocols` response for a valid upgrade request, or
/// the error response for an invalid one.
pub fn accept_upgrade(req: &Request<'_>) -> Result<Vec<u8>, Response> {
    if !req.header_has_token("Upgrade", "websocket")
        || !req.header_has_token("Connection", "upgrade")
    {
        return Err(Response::error(
            426,
            "UPGRADE_REQUIRED",
            "this endpoint speaks WebSocket: send Upgrade: websocket and Connection: Upgrade",
        )
        .with_header("Upgrade", "websocket"));
    }
    if req.header("Sec-WebSocket-Version").map(<[u8]>::trim_ascii) != Some(b"13") {
        return Err(
            Response::error(426, "UPGRADE_REQUIRED", "Sec-WebSocket-Version must be 13")
                .with_header("Sec-WebSocket-Version", "13"),
        );
    }
    let key = match req.header("Sec-WebSocket-Key").map(<[u8]>::trim_ascii) {
        Some(key) if is_valid_key(key) => key,
        _ => {
            return Err(Response::error(
                400,
                "BAD_REQUEST",
                "Sec-WebSocket-Key must be 16 random bytes in base64",
            ))
        }
    };
    let accept = tungstenite::handshake::derive_accept_key(key);
    Ok(format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .into_bytes())
}

/// "a base64-encoded value that, when decoded, is 16 bytes in length":
/// 22 base64 digits, the last carrying only two bits, then `==`.
fn is_valid_key(key: &[u8]) -> bool {
    let digit = |b: &u8| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/';
    key.len() == 24
        && key[..22].iter().all(digit)
        && b"AQgw".contains(&key[21])
        && &key[22..] == b"=="
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::{parse_request, Parsed};

    fn upgrade(head: &str) -> Result<Vec<u8>, Response> {
        match parse_request(head.as_bytes()) {
            Parsed::Complete(req, _) => accept_upgrade(&req),
            other => panic!("{other:?}"),
        }
    }

    const GOOD: &str = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

    #[test]
    fn accepts_the_rfc_example() {
        let response = String::from_utf8(upgrade(GOOD).unwrap()).unwrap();
        assert!(response.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(response.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    }

    #[test]
    fn header_tokens_are_case_insensitive_lists() {
        let head = GOOD
            .replace("Upgrade: websocket", "upgrade: WebSocket")
            .replace("Connection: Upgrade", "connection: keep-alive, upgrade");
        assert!(upgrade(&head).is_ok());
    }

    #[test]
    fn refuses_bad_handshakes() {
        assert_eq!(
            upgrade(&GOOD.replace("Upgrade: websocket\r\n", ""))
                .unwrap_err()
                .status,
            426
        );
        assert_eq!(
            upgrade(&GOOD.replace("Connection: Upgrade", "Connection: close"))
                .unwrap_err()
                .status,
            426
        );
        let r = upgrade(&GOOD.replace("Version: 13", "Version: 8")).unwrap_err();
        assert_eq!(r.status, 426);
        assert!(r.headers.contains(&("Sec-WebSocket-Version", "13".into())));
        for key in [
            "",
            "short==",
            "dGhlIHNhbXBsZSBub25jZQ",
            "dGhlIHNhbXBsZSBub25jZR==",
            "dGhlIHNhbXBsZSBub25j*Q==",
        ] {
            let head = GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", key);
            assert_eq!(upgrade(&head).unwrap_err().status, 400, "{key:?}");
        }
    }
}
