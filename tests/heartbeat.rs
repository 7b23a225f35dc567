//! Heartbeats: every interval an `info ping` and a protocol ping; a peer
//! from which nothing has arrived for three intervals is closed as dead,
//! one that answers (pong frames or any frame) stays.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tungstenite::Message;

const INTERVAL: &[(&str, &str)] = &[("HEARTBEAT_INTERVAL_SECS", "1")];

fn assert_info_ping(value: &Value) {
    assert_eq!(
        value,
        &json!({"type":"info","msg":"ping","ts":value["ts"]}),
        "exactly type, msg and ts"
    );
    let ts = value["ts"].as_str().expect("ts is a string");
    assert!(ts.len() == 24 && ts.ends_with('Z'), "{ts}");
}

#[test]
fn a_connection_gets_an_info_ping_and_a_protocol_ping_each_interval() {
    let broker = TestBroker::with(INTERVAL);
    let mut client = broker.client();
    client.set_read_timeout(Duration::from_millis(100));
    let deadline = Instant::now() + Duration::from_millis(2500);
    let (mut info_ping, mut protocol_ping) = (false, false);
    while !(info_ping && protocol_ping) && Instant::now() < deadline {
        match client.ws.read() {
            Ok(Message::Text(text)) => {
                let value: Value = serde_json::from_str(text.as_str()).unwrap();
                assert_info_ping(&value);
                info_ping = true;
            }
            Ok(Message::Ping(_)) => protocol_ping = true,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(tungstenite::Error::Io(e)) if is_timeout(&e) => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    assert!(
        info_ping && protocol_ping,
        "within 2.5 s: info ping {info_ping}, protocol ping {protocol_ping}"
    );
}

#[test]
fn a_silent_peer_is_closed_as_dead_after_three_intervals() {
    let broker = TestBroker::with(INTERVAL);
    let started = Instant::now();
    let mut raw = RawWs::connect(broker.addr);
    let (mut info_pings, mut protocol_pings) = (0, 0);
    let ended = loop {
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "still open after 6 s ({info_pings} info pings, {protocol_pings} pings)"
        );
        match raw.next_frame() {
            Ok(None) => break started.elapsed(),
            Err(e) if is_timeout(&e) => panic!("read timed out: still open"),
            Err(_) => break started.elapsed(),
            Ok(Some((0x1, payload))) => {
                assert_info_ping(&serde_json::from_slice(&payload).unwrap());
                info_pings += 1;
            }
            Ok(Some((0x9, _))) => protocol_pings += 1,
            // A close frame may precede the end of the stream.
            Ok(Some((0x8, _))) => {}
            Ok(Some((opcode, payload))) => panic!("unexpected frame {opcode}: {payload:?}"),
        }
    };
    assert!(
        ended >= Duration::from_millis(2500),
        "closed after only {ended:?}, before three intervals of silence"
    );
    assert!(
        ended <= Duration::from_secs(6),
        "closed only after {ended:?}"
    );
    assert!(
        info_pings >= 1 && protocol_pings >= 1,
        "heartbeats before the close: {info_pings} info, {protocol_pings} protocol"
    );
}

#[test]
fn a_peer_that_answers_protocol_pings_stays_connected() {
    let broker = TestBroker::with(INTERVAL);
    let mut client = broker.client();
    client.set_read_timeout(Duration::from_millis(100));
    let started = Instant::now();
    let mut pings = 0;
    // Only reads: tungstenite answers each ping with a pong on the next
    // read. Nothing else is sent.
    while started.elapsed() < Duration::from_millis(5500) {
        match client.ws.read() {
            Ok(Message::Ping(_)) => pings += 1,
            Ok(Message::Text(text)) => {
                assert_info_ping(&serde_json::from_str(text.as_str()).unwrap())
            }
            Ok(other) => panic!("unexpected {other:?} after {:?}", started.elapsed()),
            Err(tungstenite::Error::Io(e)) if is_timeout(&e) => {}
            Err(e) => panic!("connection lost after {:?}: {e}", started.elapsed()),
        }
    }
    assert!(pings >= 4, "only {pings} pings in 5.5 s");
    client.set_read_timeout(WAIT);
    client.send(json!({"type":"ping","request_id":"alive"}));
    assert_eq!(client.expect("pong")["request_id"], "alive");
}

#[test]
fn a_peer_that_sends_frames_stays_connected_without_answering_pings() {
    let broker = TestBroker::with(INTERVAL);
    let mut raw = RawWs::connect(broker.addr);
    let started = Instant::now();
    let mut n = 0;
    let mut protocol_pings = 0;
    loop {
        n += 1;
        let tag = format!("p{n}");
        let sent_at = started.elapsed();
        raw.send_text(&json!({"type":"ping","request_id":tag}).to_string());
        loop {
            match raw.next_frame() {
                Ok(Some((0x1, payload))) => {
                    let value: Value = serde_json::from_slice(&payload).unwrap();
                    if value["type"] == "pong" {
                        assert_eq!(value["request_id"], tag.as_str());
                        break;
                    }
                    assert_info_ping(&value);
                }
                // Never answered.
                Ok(Some((0x9, _))) => protocol_pings += 1,
                other => panic!("connection lost after {:?}: {other:?}", started.elapsed()),
            }
        }
        if sent_at > Duration::from_millis(5500) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(protocol_pings >= 3, "only {protocol_pings} pings in 5.5 s");
}
