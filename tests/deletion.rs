//! Topic deletion over REST while clients are subscribed: queued events
//! first, then `info topic_deleted`; the connection lives on for its other
//! topics; a re-created topic is a fresh one.

mod common;

use common::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Deletes `name`; the body must be exactly the deletion's.
fn delete(broker: &TestBroker, name: &str) {
    assert_eq!(
        delete_topic(broker.addr, name),
        json!({"status":"deleted","topic":name})
    );
}

fn topics(broker: &TestBroker) -> Value {
    let (status, body) = http_json(broker.addr, "GET", "/topics", None, &[]);
    assert_eq!(status, 200, "{body}");
    body
}

fn expect_event(client: &mut Client, topic: &str, seq: u64) -> Value {
    let event = client.expect("event");
    assert_eq!(
        (event["topic"].as_str(), event["seq"].as_u64()),
        (Some(topic), Some(seq)),
        "{event}"
    );
    event
}

fn expect_topic_deleted(client: &mut Client, topic: &str) {
    let info = client.expect("info");
    assert_eq!(
        info,
        json!({"type":"info","topic":topic,"msg":"topic_deleted","ts":info["ts"]}),
        "exactly type, topic, msg and ts"
    );
    assert!(info["ts"].as_str().is_some_and(|ts| ts.ends_with('Z')));
}

#[test]
fn queued_events_then_topic_deleted_and_the_connection_keeps_its_other_topics() {
    let broker = TestBroker::start();
    broker.create_topic("a");
    broker.create_topic("b");
    let mut sub = broker.client();
    sub.subscribe("a", 0);
    sub.subscribe("b", 0);
    let mut publisher = broker.client();
    for i in 1..=5 {
        publisher.publish("a", &format!("a{i}"), json!(i));
    }
    // The subscriber has read nothing yet: the five events are queued (or
    // on their way) when the topic goes.
    delete(&broker, "a");
    publisher.publish("b", "b1", json!("still here"));

    for seq in 1..=5 {
        let event = expect_event(&mut sub, "a", seq);
        assert_eq!(event["message"]["id"], format!("a{seq}"));
    }
    expect_topic_deleted(&mut sub, "a");
    let event = expect_event(&mut sub, "b", 1);
    assert_eq!(event["message"], json!({"id":"b1","payload":"still here"}));

    // The connection is open and its other subscription works.
    sub.ping("open");
    publisher.publish("b", "b2", json!(2));
    expect_event(&mut sub, "b", 2);

    // The deleted topic is gone for everyone.
    publisher.send(json!({"type":"publish","topic":"a","message":{"id":"late","payload":1},"request_id":"late"}));
    let error = publisher.expect("error");
    assert_eq!(error["error"]["code"], "TOPIC_NOT_FOUND", "{error}");
    assert_eq!(
        (error["topic"].as_str(), error["request_id"].as_str()),
        (Some("a"), Some("late"))
    );
    for kind in ["subscribe", "unsubscribe"] {
        sub.send(json!({"type":kind,"topic":"a","client_id":"c","request_id":kind}));
        let error = sub.expect("error");
        assert_eq!(error["error"]["code"], "TOPIC_NOT_FOUND", "{kind}: {error}");
        assert_eq!(error["request_id"], kind);
    }
    sub.ping("nothing-else");
}

#[test]
fn a_recreated_topic_is_fresh_and_the_old_subscriber_is_not_on_it() {
    let broker = TestBroker::start();
    broker.create_topic("a");
    broker.create_topic("b");
    let mut old = broker.client();
    old.subscribe("a", 0);
    old.subscribe("b", 0);
    let mut publisher = broker.client();
    for i in 1..=3 {
        publisher.publish("a", &format!("old{i}"), json!(i));
    }
    for seq in 1..=3 {
        expect_event(&mut old, "a", seq);
    }
    delete(&broker, "a");
    expect_topic_deleted(&mut old, "a");

    broker.create_topic("a");
    publisher.publish("a", "new1", json!("fresh"));

    // A new subscriber's replay sees only the new topic's message, at seq 1.
    let mut fresh = broker.client();
    fresh.subscribe("a", 10);
    let event = expect_event(&mut fresh, "a", 1);
    assert_eq!(event["message"], json!({"id":"new1","payload":"fresh"}));
    fresh.ping("replay-done");
    publisher.publish("a", "new2", json!(2));
    expect_event(&mut fresh, "a", 2);

    // The old subscriber gets nothing of the new topic: the next thing in
    // its (single, ordered) queue is the event of `b` published after.
    publisher.publish("b", "b1", json!(1));
    let next = old.recv();
    assert_eq!(
        (next["type"].as_str(), next["topic"].as_str()),
        (Some("event"), Some("b")),
        "old subscriber got something of the re-created topic: {next}"
    );
    old.ping("nothing-else");

    let listed = topics(&broker);
    assert_eq!(
        listed,
        json!({"topics":[{"name":"a","subscribers":1},{"name":"b","subscribers":1}]})
    );
    let (_, stats) = http_json(broker.addr, "GET", "/stats", None, &[]);
    assert_eq!(stats["topics"]["a"]["messages"], 2, "{stats}");
}

#[test]
fn subscriber_counts_drop_when_a_topic_is_deleted() {
    let broker = TestBroker::start();
    broker.create_topic("a");
    broker.create_topic("b");
    let mut one = broker.client();
    let mut two = broker.client();
    one.subscribe("a", 0);
    two.subscribe("a", 0);
    two.subscribe("b", 0);
    assert_eq!(
        topics(&broker),
        json!({"topics":[{"name":"a","subscribers":2},{"name":"b","subscribers":1}]})
    );
    let (_, health) = http_json(broker.addr, "GET", "/health", None, &[]);
    assert_eq!(
        (health["topics"].as_u64(), health["subscribers"].as_u64()),
        (Some(2), Some(3))
    );

    delete(&broker, "a");
    assert_eq!(
        topics(&broker),
        json!({"topics":[{"name":"b","subscribers":1}]})
    );
    let (_, health) = http_json(broker.addr, "GET", "/health", None, &[]);
    assert_eq!(
        (health["topics"].as_u64(), health["subscribers"].as_u64()),
        (Some(1), Some(1))
    );
    expect_topic_deleted(&mut one, "a");
    expect_topic_deleted(&mut two, "a");

    // Deleting it again is a 404.
    let (status, body) = http_json(broker.addr, "DELETE", "/topics/a", None, &[]);
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &json!("TOPIC_NOT_FOUND"))
    );
}

#[test]
fn deletion_during_publishing_delivers_exactly_the_acked_events_then_the_notice() {
    let broker = TestBroker::with(&[("SUBSCRIBER_QUEUE_SIZE", "10000")]);
    broker.create_topic("busy");
    let mut sub = broker.client();
    sub.subscribe("busy", 0);
    let acked = Arc::new(AtomicU64::new(0));
    let publisher = {
        let acked = Arc::clone(&acked);
        let mut client = broker.client();
        std::thread::spawn(move || {
            for i in 1..=5000u64 {
                client.send(json!({"type":"publish","topic":"busy","message":{"id":format!("m{i}"),"payload":i},"request_id":i.to_string()}));
                let reply = client.recv();
                assert_eq!(reply["request_id"], i.to_string(), "{reply}");
                match reply["type"].as_str() {
                    Some("ack") => acked.store(i, Ordering::Release),
                    Some("error") => {
                        assert_eq!(reply["error"]["code"], "TOPIC_NOT_FOUND", "{reply}");
                        return;
                    }
                    _ => panic!("unexpected reply {reply}"),
                }
            }
            panic!("the topic was never deleted");
        })
    };
    let deadline = Instant::now() + WAIT;
    while acked.load(Ordering::Acquire) < 50 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    delete(&broker, "busy");
    publisher.join().expect("publisher");
    let acked = acked.load(Ordering::Acquire);
    assert!(acked >= 50);

    for seq in 1..=acked {
        expect_event(&mut sub, "busy", seq);
    }
    expect_topic_deleted(&mut sub, "busy");
    sub.ping("after");
}
