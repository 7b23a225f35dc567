//! Backpressure: a subscriber that does not read overflows its bounded
//! queue, is sent `error SLOW_CONSUMER` and a close frame 1008, and is cut;
//! publishers and other subscribers never wait for it.

mod common;

use common::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tungstenite::stream::MaybeTlsStream;

/// What a slow consumer read once it started reading again.
#[derive(Debug, Default)]
struct Drained {
    seqs: Vec<u64>,
    error: Option<Value>,
    close: Option<(u16, String)>,
    after_close: Vec<u8>,
    eof: bool,
    reset: Option<String>,
}

fn drain_slow(slow: &mut RawWs) -> Drained {
    let mut got = Drained::default();
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        match slow.next_frame() {
            Ok(None) => {
                got.eof = true;
                return got;
            }
            Err(e) if is_timeout(&e) => {
                panic!("the slow consumer's socket was left open: {e}; got {got:?}")
            }
            Err(e) => {
                got.reset = Some(e.to_string());
                return got;
            }
            Ok(Some((opcode, payload))) => {
                if got.close.is_some() {
                    got.after_close.push(opcode);
                    continue;
                }
                match opcode {
                    0x1 => {
                        let value: Value = serde_json::from_slice(&payload).unwrap();
                        assert!(got.error.is_none(), "a frame after the error: {value}");
                        match value["type"].as_str() {
                            Some("event") => got.seqs.push(value["seq"].as_u64().unwrap()),
                            Some("error") => got.error = Some(value),
                            _ => panic!("unexpected frame {value}"),
                        }
                    }
                    0x8 => {
                        assert!(payload.len() >= 2, "close frame without a code");
                        let code = u16::from_be_bytes([payload[0], payload[1]]);
                        let reason = String::from_utf8(payload[2..].to_vec()).unwrap();
                        got.close = Some((code, reason));
                    }
                    0x9 | 0xa => {}
                    other => panic!("unexpected opcode {other}"),
                }
            }
        }
    }
    panic!("the slow consumer's socket did not end within {WAIT:?}: {got:?}");
}

#[test]
fn slow_consumer_is_cut_while_the_publisher_and_a_healthy_subscriber_carry_on() {
    const MAX_MESSAGES: u64 = 2000;
    let broker = TestBroker::with(&[("SUBSCRIBER_QUEUE_SIZE", "10")]);
    broker.create_topic("feed");
    broker.create_topic("other");

    let mut slow = RawWs::connect_with_recv_buffer(broker.addr, 4096);
    for topic in ["feed", "other"] {
        slow.send_text(
            &json!({"type":"subscribe","topic":topic,"client_id":"slow","request_id":topic})
                .to_string(),
        );
        let ack = slow.next_json();
        assert_eq!(
            (ack["type"].as_str(), ack["request_id"].as_str()),
            (Some("ack"), Some(topic))
        );
    }
    // From here on the slow consumer reads nothing until it has been cut.

    let mut healthy = broker.client();
    healthy.subscribe("feed", 0);
    let healthy_seen = Arc::new(AtomicU64::new(0));
    let healthy_reader = {
        let seen = Arc::clone(&healthy_seen);
        std::thread::spawn(move || {
            let mut seqs = Vec::new();
            loop {
                let event = healthy.expect("event");
                let seq = event["seq"].as_u64().unwrap();
                seqs.push(seq);
                seen.store(seq, Ordering::Release);
                if event["message"]["id"] == "end" {
                    // The client goes back too, so that it stays subscribed.
                    return (seqs, healthy);
                }
                assert_eq!(event["message"]["id"], format!("m{seq}"));
            }
        })
    };

    let mut publisher = broker.client();
    let payload = json!({ "blob": "x".repeat(16 * 1024) });
    let mut published = 0;
    // The overflow, hence the cut and its 1 s close deadline, comes after
    // the start of the publish after which the cut is seen.
    let mut last_publish_started = Instant::now();
    while published < MAX_MESSAGES {
        // The test keeps the healthy subscriber within a few events of the
        // publisher, so that only the slow one can overflow.
        let deadline = Instant::now() + WAIT;
        while healthy_seen.load(Ordering::Acquire) + 4 < published {
            assert!(
                Instant::now() < deadline,
                "the healthy subscriber stalled at {published}"
            );
            std::thread::sleep(Duration::from_micros(100));
        }
        published += 1;
        last_publish_started = Instant::now();
        // Panics unless the ack arrives (within WAIT): publishing never
        // waits for the slow consumer.
        publisher.publish("feed", &format!("m{published}"), payload.clone());
        if subscribers(broker.addr, "feed") == Some(1) {
            break;
        }
    }
    assert_eq!(
        subscribers(broker.addr, "feed"),
        Some(1),
        "{published} messages of 16 KiB never overflowed a queue of 10"
    );

    // Read the slow socket now, well within the broker's close deadline.
    let drained = drain_slow(&mut slow);
    for (i, seq) in drained.seqs.iter().enumerate() {
        assert_eq!(
            *seq,
            i as u64 + 1,
            "the slow consumer's events: {:?}",
            drained.seqs
        );
    }
    assert!(
        (drained.seqs.len() as u64) < published,
        "the slow consumer got every event ({published}) yet was cut"
    );
    match (&drained.error, &drained.close) {
        (Some(error), Some((code, reason))) => {
            assert_eq!(error["error"]["code"], "SLOW_CONSUMER", "{error}");
            assert!(error["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()));
            assert_eq!((*code, reason.as_str()), (1008, "SLOW_CONSUMER"));
            assert!(
                drained.after_close.is_empty(),
                "frames after close: {drained:?}"
            );
            assert!(drained.eof || drained.reset.is_some());
        }
        (None, None) => {
            // Fallback: the close deadline passed before the reader drained.
            // Ending the socket before that deadline without the error and
            // the close frame is wrong.
            assert!(
                last_publish_started.elapsed() > Duration::from_millis(900),
                "the slow consumer's socket ended without SLOW_CONSUMER and close 1008, before the close deadline: {drained:?}"
            );
            eprintln!("warning: the slow consumer was closed before its error frame was read: {drained:?}");
        }
        _ => panic!("error frame and close frame must come together: {drained:?}"),
    }

    // Every other party carried on.
    publisher.publish("feed", "end", json!("end"));
    let (seqs, _healthy) = healthy_reader.join().expect("healthy subscriber");
    assert_eq!(
        seqs,
        (1..=published + 1).collect::<Vec<_>>(),
        "the healthy subscriber gets each message once, in order"
    );
    assert_eq!(subscribers(broker.addr, "feed"), Some(1));
    eventually("the slow consumer leaves its other topic", || {
        subscribers(broker.addr, "other") == Some(0)
    });
}

#[test]
fn slow_consumer_with_a_queue_of_one_gets_the_error_and_close_1008() {
    let broker = TestBroker::with(&[("SUBSCRIBER_QUEUE_SIZE", "1")]);
    broker.create_topic("big");
    broker.create_topic("quiet");

    let stream = tcp_with_recv_buffer(broker.addr, 4096);
    let (ws, response) =
        tungstenite::client(broker.ws_url(), MaybeTlsStream::Plain(stream)).expect("upgrade");
    assert_eq!(response.status(), 101);
    let mut sub = Client::from_socket(ws);
    sub.subscribe("big", 0);
    sub.subscribe("quiet", 0);

    let mut publisher = broker.client();
    let payload = json!({ "blob": "y".repeat(64 * 1024) });
    let mut published = 0;
    while published < 500 && subscribers(broker.addr, "big") != Some(0) {
        published += 1;
        publisher.publish("big", &format!("m{published}"), payload.clone());
    }
    assert_eq!(subscribers(broker.addr, "big"), Some(0), "never overflowed");

    let (code, reason, seen) = sub.read_until_close();
    assert_eq!(
        (code, reason.as_str()),
        (Some(1008), "SLOW_CONSUMER"),
        "{} frames seen",
        seen.len()
    );
    let last = seen.last().expect("the error frame");
    assert_eq!(
        (last["type"].as_str(), last["error"]["code"].as_str()),
        (Some("error"), Some("SLOW_CONSUMER")),
        "{last}"
    );
    let events = &seen[..seen.len() - 1];
    assert!(events.iter().all(|e| e["type"] == "event"));
    assert!((events.len() as u64) < published);
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event["seq"], i as u64 + 1);
    }
    eventually("the slow consumer leaves all its topics", || {
        subscribers(broker.addr, "quiet") == Some(0)
    });
    // The publisher is unaffected.
    publisher.publish("big", "after", json!(1));
}
