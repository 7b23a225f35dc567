// The body of the `ws_handshake` fuzz target, shared with the regression
// test that replays `fuzz/regressions/ws_handshake/` (tests/fuzz_regressions.rs).
//
// The input is an upgrade request: when it parses whole, the handshake
// either accepts it with a well-formed `101` (only for a key of 16 bytes in
// base64) or refuses it with 400 or 426 and a JSON error.

use pubsub::http::upgrade::accept_upgrade;
use pubsub::http::{parse_request, Parsed};

pub fn run(data: &[u8]) {
    let Parsed::Complete(request, _) = parse_request(data) else {
        return;
    };
    match accept_upgrade(&request) {
        Ok(switching) => {
            let text = std::str::from_utf8(&switching).expect("the 101 is ASCII");
            assert!(text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
            assert!(text.ends_with("\r\n\r\n"));
            let accept = text
                .split("\r\n")
                .find_map(|line| line.strip_prefix("Sec-WebSocket-Accept: "))
                .expect("a Sec-WebSocket-Accept header");
            assert_eq!(accept.len(), 28, "a SHA-1 in base64: {accept}");
            let key = request
                .header("Sec-WebSocket-Key")
                .expect("accepted with a key")
                .trim_ascii();
            assert!(key.len() == 24 && key.ends_with(b"=="), "{key:?}");
        }
        Err(response) => {
            assert!(matches!(response.status, 400 | 426), "{response:?}");
            if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&response.body) {
                panic!("invalid JSON body ({e}): {:?}", response.body);
            }
        }
    }
}
