//! The JSON protocol over /ws, end to end: acks, events, errors, pong,
//! request ids, field validation, fan-out and byte-for-byte payloads.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use tungstenite::Message;

fn assert_ts(value: &Value) {
    let ts = value["ts"]
        .as_str()
        .unwrap_or_else(|| panic!("no ts in {value}"));
    // 2025-08-25T10:00:00.123Z
    assert_eq!(ts.len(), 24, "{ts}");
    assert!(ts.ends_with('Z') && &ts[19..20] == ".", "{ts}");
}

#[test]
fn subscribe_publish_event_roundtrip() {
    let broker = TestBroker::start();
    broker.create_topic("orders");
    let mut sub = broker.client();
    let ack = sub.subscribe("orders", 0);
    assert_eq!(ack["status"], "ok");
    assert_eq!(ack["request_id"], "sub-orders");
    assert_ts(&ack);

    let mut publisher = broker.client();
    let ack = publisher.publish(
        "orders",
        "550e8400-e29b-41d4-a716-446655440000",
        json!({"order_id":"123"}),
    );
    assert_eq!(
        (ack["topic"].as_str(), ack["status"].as_str()),
        (Some("orders"), Some("ok"))
    );

    let event = sub.expect("event");
    assert_eq!(event["topic"], "orders");
    assert_eq!(
        event["message"],
        json!({"id":"550e8400-e29b-41d4-a716-446655440000","payload":{"order_id":"123"}})
    );
    assert_eq!(event["seq"], 1);
    assert_ts(&event);
    assert!(
        event.get("request_id").is_none(),
        "events carry no request_id: {event}"
    );
}

#[test]
fn publisher_does_not_get_its_own_message_unless_subscribed() {
    let broker = TestBroker::start();
    broker.create_topic("t");
    let mut both = broker.client();
    let mut only_pub = broker.client();
    both.subscribe("t", 0);
    only_pub.publish("t", "m1", json!(1));
    assert_eq!(both.expect("event")["message"]["id"], "m1");
    both.publish("t", "m2", json!(2));
    assert_eq!(
        both.expect("event")["message"]["id"],
        "m2",
        "a subscribed publisher gets its own message"
    );
    // The unsubscribed publisher gets nothing but the reply to its ping.
    only_pub.send(json!({"type":"ping","request_id":"p"}));
    assert_eq!(only_pub.expect("pong")["request_id"], "p");
}

#[test]
fn message_is_passed_through_byte_for_byte() {
    let broker = TestBroker::start();
    broker.create_topic("raw");
    let mut sub = broker.client();
    sub.subscribe("raw", 0);
    let mut publisher = broker.client();
    let message = r#"{"payload": {"z": 1.50, "a": [true, null, "\u00e9"]},  "id": "m1"}"#;
    publisher.send_text(&format!(
        r#"{{"type":"publish","topic":"raw","message":{message},"request_id":"r"}}"#
    ));
    publisher.expect("ack");
    match sub.ws.read().unwrap() {
        Message::Text(text) => {
            assert!(
                text.as_str().contains(&format!(r#""message":{message}"#)),
                "not byte for byte: {}",
                text.as_str()
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn ping_gets_pong_with_request_id_and_absent_fields_are_omitted() {
    let broker = TestBroker::start();
    let mut c = broker.client();
    c.send(json!({"type":"ping","request_id":"r9"}));
    let pong = c.expect("pong");
    assert_eq!(pong["request_id"], "r9");
    assert_ts(&pong);
    c.send(json!({"type":"ping"}));
    let pong = c.expect("pong");
    assert_eq!(
        pong.as_object().unwrap().len(),
        2,
        "only type and ts: {pong}"
    );
}

#[test]
fn errors_are_bad_request_naming_the_field_and_the_connection_stays_open() {
    let broker = TestBroker::start();
    broker.create_topic("t");
    let mut c = broker.client();
    let cases = [
        (r#"not json"#, "invalid JSON"),
        (r#"[1]"#, "object"),
        (r#"{"topic":"t"}"#, "'type'"),
        (r#"{"type":"fly","request_id":"r1"}"#, "unknown type"),
        (r#"{"type":"subscribe","client_id":"c"}"#, "'topic'"),
        (r#"{"type":"subscribe","topic":"t"}"#, "'client_id'"),
        (
            r#"{"type":"subscribe","topic":"t","client_id":"c","last_n":-1}"#,
            "last_n",
        ),
        (
            r#"{"type":"subscribe","topic":"t","client_id":"c","last_n":2.5}"#,
            "last_n",
        ),
        (
            r#"{"type":"subscribe","topic":7,"client_id":"c"}"#,
            "'topic'",
        ),
        (r#"{"type":"publish","topic":"t"}"#, "'message'"),
        (
            r#"{"type":"publish","topic":"t","message":{"payload":{}}}"#,
            "message.id",
        ),
        (
            r#"{"type":"publish","topic":"t","message":{"id":"","payload":{}}}"#,
            "message.id",
        ),
        (
            r#"{"type":"publish","topic":"t","message":{"id":"m"}}"#,
            "message.payload",
        ),
        (r#"{"type":"ping","request_id":5}"#, "request_id"),
    ];
    for (frame, needle) in cases {
        c.send_text(frame);
        let error = c.expect("error");
        assert_eq!(error["error"]["code"], "BAD_REQUEST", "{frame}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{frame}: {message}");
        assert_ts(&error);
    }
    c.send_text(r#"{"type":"fly","request_id":"r1"}"#);
    assert_eq!(c.expect("error")["request_id"], "r1");
    c.send_text(r#"{"type":"subscribe","topic":"t","request_id":"r2"}"#);
    let error = c.expect("error");
    assert_eq!(
        (error["request_id"].as_str(), error["topic"].as_str()),
        (Some("r2"), Some("t"))
    );

    c.ws.send(Message::binary(vec![1, 2, 3])).unwrap();
    assert_eq!(c.expect("error")["error"]["code"], "BAD_REQUEST");

    // Still open and working.
    assert_eq!(c.subscribe("t", 0)["status"], "ok");
}

#[test]
fn a_frame_that_is_not_an_object_is_bad_request_and_the_connection_stays_open() {
    let broker = TestBroker::start();
    let mut c = broker.client();
    for frame in [
        r#"["ping"]"#,
        r#"[{"type":"ping"}]"#,
        r#"[["x"]]"#,
        r#""ping""#,
        "42",
        "true",
        "null",
    ] {
        c.send_text(frame);
        let error = c.expect("error");
        assert_eq!(
            error["error"],
            json!({"code":"BAD_REQUEST","message":"a frame must be a JSON object"}),
            "{frame}"
        );
    }
    c.ping("still-open");
}

#[test]
fn a_publish_whose_message_is_not_an_object_is_bad_request_and_not_delivered() {
    let broker = TestBroker::start();
    broker.create_topic("t");
    let mut sub = broker.client();
    sub.subscribe("t", 0);
    let mut publisher = broker.client();
    for message in [
        json!(["m1", {"k": 1}]),
        json!([["m1"]]),
        json!("m1"),
        json!(1),
        json!(false),
    ] {
        publisher.send(json!({"type":"publish","topic":"t","message":message,"request_id":"bad"}));
        let error = publisher.expect("error");
        assert_eq!(
            (
                error["error"]["code"].as_str(),
                error["error"]["message"].as_str(),
                error["request_id"].as_str(),
                error["topic"].as_str()
            ),
            (
                Some("BAD_REQUEST"),
                Some("field 'message' must be a JSON object"),
                Some("bad"),
                Some("t")
            ),
            "{message}"
        );
    }
    // Events of a topic arrive in order: had a refused message gone out, it
    // would come before this one.
    publisher.publish("t", "good", json!(1));
    let event = sub.expect("event");
    assert_eq!(
        (event["message"]["id"].as_str(), event["seq"].as_u64()),
        (Some("good"), Some(1)),
        "{event}"
    );
}

#[test]
fn unknown_topics_are_topic_not_found() {
    let broker = TestBroker::start();
    let mut c = broker.client();
    for kind in ["subscribe", "unsubscribe", "publish"] {
        c.send(json!({"type":kind,"topic":"ghost","client_id":"c","message":{"id":"m","payload":1},"request_id":kind}));
        let error = c.expect("error");
        assert_eq!(error["error"]["code"], "TOPIC_NOT_FOUND", "{kind}");
        assert_eq!(
            (error["topic"].as_str(), error["request_id"].as_str()),
            (Some("ghost"), Some(kind))
        );
        assert!(error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ghost"));
    }
}

#[test]
fn double_subscribe_does_not_duplicate_and_unsubscribe_is_idempotent() {
    let broker = TestBroker::start();
    broker.create_topic("t");
    let mut sub = broker.client();
    sub.subscribe("t", 0);
    sub.subscribe("t", 0);
    let mut publisher = broker.client();
    publisher.publish("t", "m1", json!(1));
    publisher.publish("t", "m2", json!(2));
    assert_eq!(sub.expect("event")["seq"], 1);
    assert_eq!(sub.expect("event")["seq"], 2);

    sub.send(json!({"type":"unsubscribe","topic":"t","client_id":"c","request_id":"u1"}));
    let ack = sub.expect("ack");
    assert_eq!(
        (ack["request_id"].as_str(), ack["topic"].as_str()),
        (Some("u1"), Some("t"))
    );
    sub.send(json!({"type":"unsubscribe","topic":"t","client_id":"c","request_id":"u2"}));
    assert_eq!(sub.expect("ack")["request_id"], "u2");
    publisher.publish("t", "m3", json!(3));
    sub.send(json!({"type":"ping","request_id":"after"}));
    assert_eq!(
        sub.expect("pong")["request_id"],
        "after",
        "no event after unsubscribe"
    );
}

#[test]
fn fan_out_reaches_every_subscriber_and_no_other_topic() {
    let broker = TestBroker::start();
    broker.create_topic("a");
    broker.create_topic("b");
    let mut subs_a: Vec<Client> = (0..5).map(|_| broker.client()).collect();
    let mut sub_b = broker.client();
    for s in &mut subs_a {
        s.subscribe("a", 0);
    }
    sub_b.subscribe("b", 0);
    let mut publisher = broker.client();
    for i in 0..20 {
        publisher.publish("a", &format!("a{i}"), json!(i));
    }
    publisher.publish("b", "b0", json!(0));
    for s in &mut subs_a {
        for i in 0..20 {
            let e = s.expect("event");
            assert_eq!(
                (e["topic"].as_str(), e["seq"].as_u64()),
                (Some("a"), Some(i + 1))
            );
        }
    }
    let e = sub_b.expect("event");
    assert_eq!(
        (e["topic"].as_str(), e["message"]["id"].as_str()),
        (Some("b"), Some("b0"))
    );
}

#[test]
fn same_client_id_on_two_connections_gets_two_copies() {
    let broker = TestBroker::start();
    broker.create_topic("t");
    let mut one = broker.client();
    let mut two = broker.client();
    for c in [&mut one, &mut two] {
        c.send(json!({"type":"subscribe","topic":"t","client_id":"same"}));
        c.expect("ack");
    }
    broker.client().publish("t", "m", json!(null));
    assert_eq!(
        one.expect("event")["message"],
        json!({"id":"m","payload":null})
    );
    assert_eq!(two.expect("event")["message"]["id"], "m");
}

#[test]
fn frames_that_follow_the_upgrade_in_the_same_write_are_served() {
    let broker = TestBroker::start();
    let mut stream = TcpStream::connect(broker.addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut bytes = WS_UPGRADE.as_bytes().to_vec();
    bytes.extend(masked_frame(
        0x81,
        br#"{"type":"ping","request_id":"early"}"#,
    ));
    stream.write_all(&bytes).unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&received).contains("early") {
        let n = stream.read(&mut buf).expect("pong arrives");
        assert!(
            n > 0,
            "closed before the pong: {:?}",
            String::from_utf8_lossy(&received)
        );
        received.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 101 "), "{text}");
    assert!(text.contains(r#""type":"pong""#), "{text}");
}

#[test]
fn fragmented_messages_and_control_frames_between_fragments() {
    let broker = TestBroker::start();
    let mut c = broker.client();
    let text = r#"{"type":"ping","request_id":"frag"}"#;
    let (a, b) = text.split_at(10);
    c.write_fragment(a.as_bytes(), true, false);
    c.ws.write(Message::Ping(b"between".to_vec().into()))
        .unwrap();
    c.write_fragment(b.as_bytes(), false, true);
    c.ws.flush().unwrap();
    let mut got_pong_frame = false;
    loop {
        match c.ws.read().unwrap() {
            Message::Pong(data) => {
                assert_eq!(&data[..], b"between");
                got_pong_frame = true;
            }
            Message::Text(t) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                assert_eq!(
                    (v["type"].as_str(), v["request_id"].as_str()),
                    (Some("pong"), Some("frag"))
                );
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(
        got_pong_frame,
        "the ping between fragments is answered first"
    );
}

#[test]
fn close_handshake_is_echoed() {
    let broker = TestBroker::start();
    let mut c = broker.client();
    c.ws.close(None).unwrap();
    loop {
        match c.ws.read() {
            Ok(Message::Close(_)) | Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("unclean close: {e}"),
        }
    }
    c.set_read_timeout(Duration::from_secs(1));
}

#[test]
fn compression_is_not_negotiated() {
    let broker = TestBroker::start();
    let mut stream = TcpStream::connect(broker.addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n",
        )
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).unwrap(),
            1,
            "closed during the handshake"
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("sec-websocket-extensions"),
        "{head}"
    );
    // Frames then flow uncompressed.
    stream
        .write_all(&masked_frame(
            0x81,
            br#"{"type":"ping","request_id":"plain"}"#,
        ))
        .unwrap();
    let mut header = [0u8; 2];
    stream.read_exact(&mut header).unwrap();
    assert_eq!(header[0], 0x81, "FIN + text, no RSV1 (compression) bit");
}
