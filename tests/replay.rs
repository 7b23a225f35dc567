//! Replay on subscribe (`last_n`): the most recent messages, oldest first,
//! right after the ack, then live events with no gap and no duplicate.

mod common;

use common::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The next frame must be an event of `topic` with this `seq` and id.
fn expect_event(client: &mut Client, topic: &str, seq: u64, id: &str) -> Value {
    let event = client.expect("event");
    assert_eq!(
        (
            event["topic"].as_str(),
            event["seq"].as_u64(),
            event["message"]["id"].as_str()
        ),
        (Some(topic), Some(seq), Some(id)),
        "{event}"
    );
    event
}

fn publish_many(publisher: &mut Client, topic: &str, range: std::ops::RangeInclusive<u64>) {
    for i in range {
        publisher.publish(topic, &format!("m{i}"), json!({ "n": i }));
    }
}

#[test]
fn last_n_replays_the_most_recent_oldest_first_then_live_continues() {
    let broker = TestBroker::with(&[("RING_BUFFER_SIZE", "5")]);
    broker.create_topic("t");
    let mut publisher = broker.client();
    publish_many(&mut publisher, "t", 1..=8);

    let mut sub = broker.client();
    let ack = sub.subscribe("t", 3);
    assert_eq!(ack["status"], "ok");
    for seq in 6..=8 {
        let event = expect_event(&mut sub, "t", seq, &format!("m{seq}"));
        assert_eq!(
            event["message"],
            json!({"id": format!("m{seq}"), "payload": {"n": seq}}),
            "replayed message is the published one"
        );
    }
    publish_many(&mut publisher, "t", 9..=11);
    for seq in 9..=11 {
        expect_event(&mut sub, "t", seq, &format!("m{seq}"));
    }
    sub.ping("end");
}

#[test]
fn last_n_larger_than_held_replays_everything_held_capped_by_the_ring() {
    let broker = TestBroker::with(&[("RING_BUFFER_SIZE", "5")]);
    broker.create_topic("few");
    broker.create_topic("many");
    let mut publisher = broker.client();
    publish_many(&mut publisher, "few", 1..=3);
    publish_many(&mut publisher, "many", 1..=8);

    let mut sub = broker.client();
    sub.subscribe("few", 10);
    for seq in 1..=3 {
        expect_event(&mut sub, "few", seq, &format!("m{seq}"));
    }
    sub.ping("few-done");

    sub.subscribe("many", 100);
    for seq in 4..=8 {
        expect_event(&mut sub, "many", seq, &format!("m{seq}"));
    }
    sub.ping("many-done");

    publisher.publish("many", "m9", json!({"n": 9}));
    expect_event(&mut sub, "many", 9, "m9");
}

#[test]
fn last_n_zero_or_absent_replays_nothing() {
    let broker = TestBroker::start();
    broker.create_topic("t");
    let mut publisher = broker.client();
    publish_many(&mut publisher, "t", 1..=3);

    let mut zero = broker.client();
    zero.subscribe("t", 0);
    let mut absent = broker.client();
    absent.send(json!({"type":"subscribe","topic":"t","client_id":"c","request_id":"r"}));
    let ack = absent.expect("ack");
    assert_eq!(ack["request_id"], "r");

    publisher.publish("t", "m4", json!({"n": 4}));
    for sub in [&mut zero, &mut absent] {
        expect_event(sub, "t", 4, "m4");
        sub.ping("after");
    }
}

#[test]
fn replay_on_an_empty_topic_is_just_the_ack() {
    let broker = TestBroker::start();
    broker.create_topic("empty");
    let mut sub = broker.client();
    sub.subscribe("empty", 5);
    sub.ping("nothing");
    broker.client().publish("empty", "first", json!(1));
    expect_event(&mut sub, "empty", 1, "first");
}

#[test]
fn replay_frames_do_not_count_against_the_subscriber_queue() {
    let broker = TestBroker::with(&[("SUBSCRIBER_QUEUE_SIZE", "2"), ("RING_BUFFER_SIZE", "50")]);
    broker.create_topic("t");
    let mut publisher = broker.client();
    publish_many(&mut publisher, "t", 1..=20);

    let mut sub = broker.client();
    sub.subscribe("t", 20);
    for seq in 1..=20 {
        // An `error SLOW_CONSUMER` here would fail the `expect("event")`.
        expect_event(&mut sub, "t", seq, &format!("m{seq}"));
    }
    sub.ping("still-open");
    publisher.publish("t", "m21", json!({"n": 21}));
    expect_event(&mut sub, "t", 21, "m21");
}

#[test]
fn replay_then_live_is_consecutive_while_a_publisher_runs() {
    const TOTAL: u64 = 2000;
    const LAST_N: u64 = 10;
    let broker = TestBroker::with(&[("SUBSCRIBER_QUEUE_SIZE", "100000")]);
    broker.create_topic("race");
    let acked = Arc::new(AtomicU64::new(0));

    let publisher = {
        let acked = Arc::clone(&acked);
        let mut client = broker.client();
        std::thread::spawn(move || {
            for i in 1..=TOTAL {
                client.publish("race", &format!("m{i}"), json!({ "n": i }));
                acked.store(i, Ordering::Release);
            }
        })
    };

    // Subscribe at different moments of the run (the later ones may come
    // after the publisher is done: then they get the replay only).
    let moments = [0, 5, 150, 400, 800, 1200, 1600, 1950];
    let mut readers = Vec::new();
    for &moment in &moments {
        let deadline = Instant::now() + WAIT;
        while acked.load(Ordering::Acquire) < moment && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(200));
        }
        let mut sub = broker.client();
        let before = acked.load(Ordering::Acquire);
        sub.subscribe("race", LAST_N);
        let after = acked.load(Ordering::Acquire);
        readers.push(std::thread::spawn(move || {
            let mut seqs = Vec::new();
            while seqs.last() != Some(&TOTAL) {
                let event = sub.expect("event");
                assert_eq!(event["topic"], "race");
                let seq = event["seq"].as_u64().unwrap();
                assert_eq!(event["message"]["id"], format!("m{seq}"));
                seqs.push(seq);
                assert!(seqs.len() as u64 <= TOTAL, "more events than published");
            }
            (before, after, seqs)
        }));
    }
    publisher.join().expect("publisher");

    for reader in readers {
        let (before, after, seqs) = reader.join().expect("reader");
        for pair in seqs.windows(2) {
            assert_eq!(
                pair[1],
                pair[0] + 1,
                "gap or duplicate (subscribed with {before}..={after} acked): {:?}",
                &seqs[..seqs.len().min(40)]
            );
        }
        // The replay was min(last_n, held) of the messages held when the
        // subscribe was served: held was at least `before` and at most
        // `after + 1` (one publish may have been in flight).
        let first = seqs[0];
        let held_low = before;
        let held_high = after + 1;
        let first_low = held_low.saturating_sub(LAST_N) + 1;
        let first_high = held_high.saturating_sub(LAST_N) + 1;
        assert!(
            (first_low..=first_high).contains(&first),
            "first seq {first} is not the start of a {LAST_N}-message replay (held {held_low}..={held_high})"
        );
    }
}

/// Subscribing again on a connection that has not read its events yet:
/// those still queued in the broker come before the new ack, and after it
/// only the replay and newer events, consecutively (no seq twice after the
/// ack).
#[test]
fn subscribing_again_writes_what_is_still_queued_before_the_ack() {
    let broker = TestBroker::start();
    broker.create_topic("t");
    let mut sub = broker.client();
    sub.subscribe("t", 0);
    // Events of 100 KiB that the subscriber does not read yet: the
    // sockets' buffers fill and the rest stay queued in the broker.
    let mut publisher = broker.client();
    let filler = "x".repeat(100 * 1024);
    for i in 1..=60 {
        publisher.publish("t", &format!("m{i}"), json!({ "f": filler }));
    }
    sub.send(
        json!({"type":"subscribe","topic":"t","client_id":"again","last_n":5,"request_id":"again"}),
    );
    let mut before_ack = Vec::new();
    let ack = loop {
        let frame = sub.recv();
        match frame["type"].as_str() {
            Some("event") => before_ack.push(frame["seq"].as_u64().unwrap()),
            _ => break frame,
        }
    };
    assert_eq!(
        (
            ack["type"].as_str(),
            ack["request_id"].as_str(),
            ack["last_seq"].as_u64()
        ),
        (Some("ack"), Some("again"), Some(60)),
        "{ack}"
    );
    assert_eq!(
        before_ack,
        (1..=60).collect::<Vec<_>>(),
        "what the first subscription was given, all of it before the ack"
    );
    publisher.publish("t", "m61", json!({ "f": 61 }));
    for seq in 56..=61 {
        expect_event(&mut sub, "t", seq, &format!("m{seq}"));
    }
    sub.ping("end");
}
