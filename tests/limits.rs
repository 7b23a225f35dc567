//! Limits and failures on the WebSocket side: message size (1009), invalid
//! UTF-8 (1007), protocol violations (1002), MAX_CONNECTIONS, bad upgrade
//! requests, binary frames, and the handshake timeout.

mod common;

use common::*;
use serde_json::json;
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::Instant;
use tungstenite::Message;

/// A ping request of exactly `size` bytes (padded with an ignored field).
fn ping_of_size(size: usize, request_id: &str) -> String {
    let prefix = format!(r#"{{"type":"ping","request_id":"{request_id}","pad":""#);
    let suffix = r#""}"#;
    let text = format!(
        "{prefix}{}{suffix}",
        "x".repeat(size - prefix.len() - suffix.len())
    );
    assert_eq!(text.len(), size);
    text
}

/// Reads frames until the server's close frame; returns its code.
fn close_code(raw: &mut RawWs) -> u16 {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        match raw.next_frame() {
            Ok(Some((0x8, payload))) => {
                assert!(payload.len() >= 2, "close frame without a code");
                return u16::from_be_bytes([payload[0], payload[1]]);
            }
            Ok(Some((0x1, text))) => {
                let text = String::from_utf8_lossy(&text);
                assert!(
                    !text.contains("\"pong\""),
                    "the bad frame was answered: {text}"
                );
            }
            Ok(Some(_)) => {}
            Ok(None) => panic!("connection ended without a close frame"),
            Err(e) if is_reset(&e) => panic!("connection ended without a close frame: {e}"),
            Err(e) => panic!("read: {e}"),
        }
    }
    panic!("no close frame within {WAIT:?}");
}

/// Asserts the connection is closed or refused: any bytes before the end
/// must be an HTTP 503.
fn assert_refused(mut stream: TcpStream) {
    let (received, closed) = read_until_closed(&mut stream, WAIT);
    let text = String::from_utf8_lossy(&received);
    assert!(closed, "neither refused nor closed; got {text:?}");
    assert!(
        received.is_empty() || text.starts_with("HTTP/1.1 503 "),
        "expected a 503 or a closed connection, got {text:?}"
    );
}

// ---- size, UTF-8, protocol -----------------------------------------------------

#[test]
fn message_over_max_message_bytes_closes_with_1009() {
    let broker = TestBroker::with(&[("MAX_MESSAGE_BYTES", "1024")]);
    let mut c = broker.client();
    c.send_text(&ping_of_size(1025, "big"));
    let (code, _, seen) = c.read_until_close();
    assert_eq!(code, Some(1009), "seen {seen:?}");
    assert!(
        !seen.iter().any(|v| v["type"] == "pong"),
        "the oversized message was served: {seen:?}"
    );
}

#[test]
fn message_at_or_under_max_message_bytes_is_served() {
    let broker = TestBroker::with(&[("MAX_MESSAGE_BYTES", "1024")]);
    let mut c = broker.client();
    c.send_text(&ping_of_size(1000, "under"));
    assert_eq!(c.expect("pong")["request_id"], "under");
    c.send_text(&ping_of_size(1024, "at"));
    assert_eq!(c.expect("pong")["request_id"], "at");
    // An error reply for a message just under the limit, and still open.
    let bad = format!(
        r#"{{"type":"fly","request_id":"e","pad":"{}"}}"#,
        "y".repeat(900)
    );
    c.send_text(&bad);
    let error = c.expect("error");
    assert_eq!(error["error"]["code"], "BAD_REQUEST");
    assert_eq!(error["request_id"], "e");
    c.send(json!({"type":"ping","request_id":"still"}));
    assert_eq!(c.expect("pong")["request_id"], "still");
}

#[test]
fn fragmented_message_over_the_limit_closes_with_1009() {
    let broker = TestBroker::with(&[("MAX_MESSAGE_BYTES", "1024")]);
    let mut c = broker.client();
    let text = ping_of_size(1200, "frag");
    let (a, b) = text.split_at(600);
    c.write_fragment(a.as_bytes(), true, false);
    c.write_fragment(b.as_bytes(), false, true);
    c.ws.flush().unwrap();
    let (code, _, seen) = c.read_until_close();
    assert_eq!(code, Some(1009), "seen {seen:?}");
}

#[test]
fn invalid_utf8_in_a_text_frame_closes_with_1007() {
    let broker = TestBroker::start();
    let mut c = broker.client();
    let mut bytes = br#"{"type":"ping","request_id":""#.to_vec();
    bytes.extend_from_slice(&[0xff, 0xfe, 0xc3]);
    bytes.extend_from_slice(br#""}"#);
    c.write_fragment(&bytes, true, true);
    c.ws.flush().unwrap();
    let (code, _, seen) = c.read_until_close();
    assert_eq!(code, Some(1007), "seen {seen:?}");
}

#[test]
fn invalid_utf8_on_raw_tcp_closes_with_1007() {
    let broker = TestBroker::start();
    let mut raw = RawWs::connect(broker.addr);
    raw.send_frame(&masked_frame(
        0x81,
        b"{\"type\":\"ping\",\"x\":\"\xc0\xaf\"}",
    ));
    assert_eq!(close_code(&mut raw), 1007);
}

#[test]
fn unmasked_client_frame_closes_with_1002() {
    let broker = TestBroker::start();
    let mut raw = RawWs::connect(broker.addr);
    // A masked frame first: the connection works.
    raw.send_frame(&masked_frame(0x81, br#"{"type":"ping","request_id":"ok"}"#));
    let (opcode, text) = raw.next_frame().expect("read").expect("pong");
    assert_eq!(opcode, 0x1);
    assert!(String::from_utf8_lossy(&text).contains(r#""request_id":"ok""#));
    raw.send_frame(&unmasked_frame(
        0x81,
        br#"{"type":"ping","request_id":"bad"}"#,
    ));
    assert_eq!(close_code(&mut raw), 1002);
}

#[test]
fn reserved_opcode_closes_with_1002() {
    let broker = TestBroker::start();
    let mut raw = RawWs::connect(broker.addr);
    raw.send_frame(&masked_frame(0x83, b"x"));
    assert_eq!(close_code(&mut raw), 1002);
}

#[test]
fn reserved_bits_without_an_extension_close_with_1002() {
    let broker = TestBroker::start();
    let mut raw = RawWs::connect(broker.addr);
    // RSV1 set: compression was not negotiated.
    raw.send_frame(&masked_frame(0xC1, br#"{"type":"ping"}"#));
    assert_eq!(close_code(&mut raw), 1002);
}

// ---- connections ----------------------------------------------------------------

#[test]
fn max_connections_refuses_past_the_limit_and_recovers() {
    let broker = TestBroker::with(&[("MAX_CONNECTIONS", "3")]);
    let mut clients: Vec<Client> = (0..3).map(|_| broker.client()).collect();
    for c in &mut clients {
        c.send(json!({"type":"ping","request_id":"open"}));
        c.expect("pong");
    }

    match tungstenite::connect(broker.ws_url()) {
        Ok((_, response)) => panic!("a 4th connection was upgraded: {}", response.status()),
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 503),
        Err(_) => {} // closed at accept
    }
    let mut stream = TcpStream::connect(broker.addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let _ = stream.write_all(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_refused(stream);

    drop(clients.remove(0));
    let mut fresh = None;
    eventually(
        "a new connection is accepted after one closed",
        || match tungstenite::connect(broker.ws_url()) {
            Ok((ws, _)) => {
                fresh = Some(Client::from_socket(ws));
                true
            }
            Err(_) => false,
        },
    );
    let mut fresh = fresh.unwrap();
    fresh.send(json!({"type":"ping","request_id":"fresh"}));
    assert_eq!(fresh.expect("pong")["request_id"], "fresh");

    // Three open again: the next one is refused again.
    match tungstenite::connect(broker.ws_url()) {
        Ok((_, response)) => panic!("over the limit but upgraded: {}", response.status()),
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 503),
        Err(_) => {}
    }
}

#[test]
fn upgrade_without_upgrade_headers_is_a_4xx_json_error() {
    let broker = TestBroker::start();
    let response = http(broker.addr, "GET", "/ws", None, &[]);
    assert!(
        (400..500).contains(&response.status),
        "status {}",
        response.status
    );
    assert!(
        response
            .header("Content-Type")
            .is_some_and(|v| v.starts_with("application/json")),
        "{:?}",
        response.headers
    );
    let body = response.json();
    assert!(body["error"]["code"].is_string(), "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    assert!(response.header("Sec-WebSocket-Accept").is_none());

    // Missing key: also refused, no 101.
    let head = WS_UPGRADE.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "");
    let mut stream = TcpStream::connect(broker.addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    let response = read_response(&mut BufReader::new(stream));
    assert!(
        (400..500).contains(&response.status),
        "status {}",
        response.status
    );
    assert!(response.json()["error"]["code"].is_string());
}

#[test]
fn websocket_version_8_gets_426() {
    let broker = TestBroker::start();
    let head = WS_UPGRADE.replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8");
    let mut stream = TcpStream::connect(broker.addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    let response = read_response(&mut BufReader::new(stream));
    assert_eq!(response.status, 426);
    assert!(response.json()["error"]["code"].is_string());
    // RFC 6455 4.2.2: the versions the server speaks.
    assert_eq!(response.header("Sec-WebSocket-Version"), Some("13"));
}

#[test]
fn binary_frame_is_bad_request_and_the_connection_stays_open() {
    let broker = TestBroker::start();
    broker.create_topic("t");
    let mut c = broker.client();
    c.ws.send(Message::binary(
        br#"{"type":"ping","request_id":"bin"}"#.to_vec(),
    ))
    .unwrap();
    let error = c.expect("error");
    assert_eq!(error["error"]["code"], "BAD_REQUEST", "{error}");
    c.send(json!({"type":"ping","request_id":"after"}));
    assert_eq!(c.expect("pong")["request_id"], "after");
    assert_eq!(c.subscribe("t", 0)["status"], "ok");
}

#[test]
fn handshake_timeout_closes_a_half_sent_request() {
    let broker = TestBroker::with(&[("HANDSHAKE_TIMEOUT_SECS", "1")]);
    let mut stream = TcpStream::connect(broker.addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(b"GET /health HTTP/1.1\r\nHo").unwrap();
    let (received, closed) = read_until_closed(&mut stream, WAIT);
    assert!(closed, "not closed within {WAIT:?}");
    assert!(
        !String::from_utf8_lossy(&received).contains(" 200 "),
        "the half request was served"
    );

    // A complete request on a fresh connection is still served.
    let (status, _) = http_json(broker.addr, "GET", "/health", None, &[]);
    assert_eq!(status, 200);
}
