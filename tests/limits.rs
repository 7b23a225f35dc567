//! Limits and failures on the WebSocket side: message size (1009), invalid
//! UTF-8 (1007), protocol violations (1002), MAX_CONNECTIONS, bad upgrade
//! requests, binary frames, and the handshake timeout.

mod common;

use common::*;
use serde_json::json;
use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::Message;

const UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

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

/// A client frame built by hand; `first` is the FIN/RSV/opcode byte.
fn frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = vec![first, payload.len() as u8 | if masked { 0x80 } else { 0 }];
    if masked {
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// A WebSocket connection upgraded by hand on raw TCP.
struct RawWs {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawWs {
    fn open(addr: SocketAddr) -> RawWs {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_nodelay(true).unwrap();
        stream.write_all(UPGRADE.as_bytes()).unwrap();
        let mut raw = RawWs {
            stream,
            buf: Vec::new(),
        };
        let end = loop {
            if let Some(at) = raw.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            assert!(raw.fill(), "closed during the handshake");
        };
        let head = String::from_utf8_lossy(&raw.buf[..end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        raw.buf.drain(..end);
        raw
    }

    /// Reads more bytes; false at end of stream.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                ) =>
            {
                false
            }
            Err(e) => panic!("read: {e}"),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next server frame (opcode, payload), or None at end of stream.
    fn next_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.buf.len() >= 2 {
                assert_eq!(self.buf[1] & 0x80, 0, "server frames are not masked");
                let (len, header) = match self.buf[1] & 0x7f {
                    126 if self.buf.len() >= 4 => {
                        (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                    }
                    127 if self.buf.len() >= 10 => (
                        u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize,
                        10,
                    ),
                    126 | 127 => (usize::MAX, 0),
                    n => (n as usize, 2),
                };
                if len != usize::MAX && self.buf.len() >= header + len {
                    let opcode = self.buf[0] & 0x0f;
                    let payload = self.buf[header..header + len].to_vec();
                    self.buf.drain(..header + len);
                    return Some((opcode, payload));
                }
            }
            if !self.fill() {
                return None;
            }
        }
    }

    /// Reads frames until the server's close frame; returns its code.
    fn close_code(&mut self) -> u16 {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            match self.next_frame() {
                Some((0x8, payload)) => {
                    assert!(payload.len() >= 2, "close frame without a code");
                    return u16::from_be_bytes([payload[0], payload[1]]);
                }
                Some((0x1, text)) => {
                    let text = String::from_utf8_lossy(&text);
                    assert!(
                        !text.contains("\"pong\""),
                        "the bad frame was answered: {text}"
                    );
                }
                Some(_) => {}
                None => panic!("connection ended without a close frame"),
            }
        }
        panic!("no close frame within {WAIT:?}");
    }
}

/// Asserts the connection is closed or refused: any bytes before the end
/// must be an HTTP 503.
fn assert_refused(mut stream: TcpStream) {
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                ) =>
            {
                break
            }
            Err(e) => panic!(
                "neither refused nor closed ({e}); got {:?}",
                String::from_utf8_lossy(&received)
            ),
        }
    }
    let text = String::from_utf8_lossy(&received);
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
    c.ws.write(Message::Frame(Frame::message(
        a.as_bytes().to_vec(),
        OpCode::Data(Data::Text),
        false,
    )))
    .unwrap();
    c.ws.write(Message::Frame(Frame::message(
        b.as_bytes().to_vec(),
        OpCode::Data(Data::Continue),
        true,
    )))
    .unwrap();
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
    c.ws.send(Message::Frame(Frame::message(
        bytes,
        OpCode::Data(Data::Text),
        true,
    )))
    .unwrap();
    let (code, _, seen) = c.read_until_close();
    assert_eq!(code, Some(1007), "seen {seen:?}");
}

#[test]
fn invalid_utf8_on_raw_tcp_closes_with_1007() {
    let broker = TestBroker::start();
    let mut raw = RawWs::open(broker.addr);
    raw.send(&frame(
        0x81,
        b"{\"type\":\"ping\",\"x\":\"\xc0\xaf\"}",
        true,
    ));
    assert_eq!(raw.close_code(), 1007);
}

#[test]
fn unmasked_client_frame_closes_with_1002() {
    let broker = TestBroker::start();
    let mut raw = RawWs::open(broker.addr);
    // A masked frame first: the connection works.
    raw.send(&frame(0x81, br#"{"type":"ping","request_id":"ok"}"#, true));
    let (opcode, text) = raw.next_frame().expect("pong");
    assert_eq!(opcode, 0x1);
    assert!(String::from_utf8_lossy(&text).contains(r#""request_id":"ok""#));
    raw.send(&frame(
        0x81,
        br#"{"type":"ping","request_id":"bad"}"#,
        false,
    ));
    assert_eq!(raw.close_code(), 1002);
}

#[test]
fn reserved_opcode_closes_with_1002() {
    let broker = TestBroker::start();
    let mut raw = RawWs::open(broker.addr);
    raw.send(&frame(0x83, b"x", true));
    assert_eq!(raw.close_code(), 1002);
}

#[test]
fn reserved_bits_without_an_extension_close_with_1002() {
    let broker = TestBroker::start();
    let mut raw = RawWs::open(broker.addr);
    // RSV1 set: compression was not negotiated.
    raw.send(&frame(0xC1, br#"{"type":"ping"}"#, true));
    assert_eq!(raw.close_code(), 1002);
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
    let head = UPGRADE.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "");
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
    let head = UPGRADE.replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8");
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
    let mut received = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                ) =>
            {
                break
            }
            Err(e) => panic!("not closed within {WAIT:?}: {e}"),
        }
    }
    assert!(
        !String::from_utf8_lossy(&received).contains(" 200 "),
        "the half request was served"
    );

    // A complete request on a fresh connection is still served.
    let (status, _) = http_json(broker.addr, "GET", "/health", None, &[]);
    assert_eq!(status, 200);
}
