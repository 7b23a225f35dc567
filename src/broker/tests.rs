//! Unit tests of topics, their replay and fan-out (`super`).

use super::delivery::{ConnectionKey, WorkerMailbox};
use super::*;
use serde_json::Value;

fn subscriber(slot: usize, capacity: usize) -> Arc<SubscriberQueue> {
    let mailbox = WorkerMailbox::unpolled();
    Arc::new(SubscriberQueue::new(
        capacity,
        ConnectionKey::new(slot, 0),
        mailbox,
    ))
}

fn message(id: &str) -> Box<RawValue> {
    RawValue::from_string(format!(r#"{{"id":"{id}","payload":{{"n":1}}}}"#)).unwrap()
}

fn decode(frame: &SharedFrame) -> Value {
    // Server frames with a short payload: two header bytes.
    let offset = match frame[1] {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    serde_json::from_slice(&frame[offset..]).unwrap()
}

fn drain(q: &SubscriberQueue) -> Vec<Value> {
    std::iter::from_fn(|| q.pop()).map(|f| decode(&f)).collect()
}

#[test]
fn publish_fans_out_in_order_with_consecutive_seq() {
    let broker = Broker::new(10);
    let topic = broker.create_topic("orders").unwrap();
    let (a, b) = (subscriber(1, 10), subscriber(2, 10));
    topic.subscribe(&a, Replay::LastN(0), false).unwrap();
    topic.subscribe(&b, Replay::LastN(0), false).unwrap();
    topic.subscribe(&b, Replay::LastN(0), true).unwrap();
    for id in ["m1", "m2", "m3"] {
        topic.publish(message(id).as_ref().into()).unwrap();
    }
    for q in [&a, &b] {
        let events = drain(q);
        assert_eq!(events.len(), 3, "subscribing twice must not duplicate");
        let seqs: Vec<_> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        assert_eq!(events[0]["message"]["id"], "m1");
        assert_eq!(events[0]["topic"], "orders");
    }
    assert_eq!(
        topic.summary(),
        TopicSummary {
            name: "orders".into(),
            subscribers: 2,
            messages: 3,
            delivered: 6,
            slow_consumer_disconnects: 0,
            ring: 3,
            epoch: topic.epoch().to_string(),
        }
    );
}

#[test]
fn events_stay_in_their_topic() {
    let broker = Broker::new(10);
    let (t1, t2) = (
        broker.create_topic("a").unwrap(),
        broker.create_topic("b").unwrap(),
    );
    let q = subscriber(1, 10);
    t1.subscribe(&q, Replay::LastN(0), false).unwrap();
    t2.publish(message("x").as_ref().into()).unwrap();
    assert!(q.is_empty());
}

#[test]
fn replay_then_live_has_no_gap_and_no_duplicate() {
    let broker = Broker::new(5);
    let topic = broker.create_topic("t").unwrap();
    for i in 0..8 {
        topic
            .publish(message(&format!("m{i}")).as_ref().into())
            .unwrap();
    }
    let q = subscriber(1, 100);
    let replay: Vec<Value> = topic
        .subscribe(&q, Replay::LastN(3), false)
        .unwrap()
        .replay
        .iter()
        .map(decode)
        .collect();
    topic.publish(message("live").as_ref().into()).unwrap();
    let live = drain(&q);
    let seqs: Vec<u64> = replay
        .iter()
        .chain(live.iter())
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![6, 7, 8, 9]);
    assert_eq!(
        topic
            .subscribe(&subscriber(2, 1), Replay::LastN(1000), false)
            .unwrap()
            .replay
            .len(),
        5,
        "replay is capped by the ring"
    );
}

#[test]
fn resume_replays_everything_after_since_seq_or_nothing() {
    // A ring of 5 after 8 messages holds 4..=8.
    let broker = Broker::new(5);
    let topic = broker.create_topic("t").unwrap();
    for i in 0..8 {
        topic
            .publish(message(&format!("m{i}")).as_ref().into())
            .unwrap();
    }
    let epoch = topic.epoch().to_string();
    let resume = |slot, seq, epoch: &str| {
        let q = subscriber(slot, 100);
        let got = topic
            .subscribe(&q, Replay::Since { seq, epoch }, false)
            .unwrap();
        assert_eq!(got.last_seq, 8);
        let seqs: Vec<u64> = got
            .replay
            .iter()
            .map(|f| decode(f)["seq"].as_u64().unwrap())
            .collect();
        (got.recovered, seqs)
    };
    assert_eq!(resume(1, 8, &epoch), (Some(true), vec![]), "nothing missed");
    assert_eq!(resume(2, 7, &epoch), (Some(true), vec![8]));
    assert_eq!(
        resume(3, 3, &epoch),
        (Some(true), vec![4, 5, 6, 7, 8]),
        "from the oldest held"
    );
    assert_eq!(
        resume(4, 2, &epoch),
        (Some(false), vec![]),
        "3 is no longer held"
    );
    assert_eq!(resume(5, 0, &epoch), (Some(false), vec![]));
    assert_eq!(
        resume(6, 9, &epoch),
        (Some(false), vec![]),
        "beyond the last"
    );
    assert_eq!(
        resume(7, 7, "another"),
        (Some(false), vec![]),
        "another epoch"
    );
    let again = {
        broker.delete_topic("t");
        broker.create_topic("t").unwrap()
    };
    assert_ne!(again.epoch(), epoch, "a recreated topic has a new epoch");
}

#[test]
fn replay_is_atomic_with_concurrent_publishers() {
    // Subscribers join while another thread publishes; each must see a
    // consecutive run of seq numbers from its replay into its live events.
    let broker = Arc::new(Broker::new(50));
    let topic = broker.create_topic("t").unwrap();
    let publisher = {
        let topic = Arc::clone(&topic);
        std::thread::spawn(move || {
            for i in 0..5_000 {
                topic
                    .publish(message(&i.to_string()).as_ref().into())
                    .unwrap();
            }
        })
    };
    let mut checked = 0;
    for slot in 0..200 {
        let q = subscriber(slot, 10_000);
        let replay = topic
            .subscribe(&q, Replay::LastN(20), false)
            .unwrap()
            .replay;
        let seqs: Vec<u64> = replay
            .iter()
            .map(decode)
            .chain(drain(&q))
            .map(|e| e["seq"].as_u64().unwrap())
            .collect();
        for pair in seqs.windows(2) {
            assert_eq!(pair[1], pair[0] + 1, "gap or duplicate in {seqs:?}");
        }
        checked += seqs.len();
        topic.unsubscribe(&q);
    }
    publisher.join().unwrap();
    assert!(checked > 0);
}

#[test]
fn overflow_drops_the_slow_subscriber_only() {
    let broker = Broker::new(10);
    let topic = broker.create_topic("t").unwrap();
    let (slow, healthy) = (subscriber(1, 2), subscriber(2, 10));
    topic.subscribe(&slow, Replay::LastN(0), false).unwrap();
    topic.subscribe(&healthy, Replay::LastN(0), false).unwrap();
    for i in 0..3 {
        topic
            .publish(message(&i.to_string()).as_ref().into())
            .unwrap();
    }
    assert!(slow.is_slow());
    assert!(!healthy.is_slow());
    assert_eq!(healthy.len(), 3);
    let summary = topic.summary();
    assert_eq!(
        (
            summary.subscribers,
            summary.slow_consumer_disconnects,
            summary.delivered
        ),
        (1, 1, 5)
    );
}

#[test]
fn deletion_notifies_after_queued_events_and_refuses_more() {
    let broker = Broker::new(10);
    let topic = broker.create_topic("t").unwrap();
    let q = subscriber(1, 10);
    topic.subscribe(&q, Replay::LastN(0), false).unwrap();
    topic.publish(message("m").as_ref().into()).unwrap();
    assert!(broker.delete_topic("t"));
    assert!(!broker.delete_topic("t"));
    let got = drain(&q);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0]["type"], "event");
    assert_eq!(
        got[1],
        serde_json::json!({"type":"info","topic":"t","msg":"topic_deleted","ts":got[1]["ts"]})
    );
    assert!(topic.is_deleted());
    assert_eq!(
        topic.publish(message("late").as_ref().into()),
        Err(TopicGone)
    );
    assert!(matches!(
        topic.subscribe(&q, Replay::LastN(0), false),
        Err(TopicGone)
    ));
    assert!(broker.topic("t").is_none());
    let again = broker.create_topic("t").unwrap();
    assert_eq!(
        again.publish(message("new").as_ref().into()),
        Ok(1),
        "a new topic starts at seq 1"
    );
}

#[test]
fn creation_validates_and_refuses_duplicates() {
    let broker = Broker::new(10);
    broker.create_topic("b").unwrap();
    broker.create_topic("a").unwrap();
    assert_eq!(broker.create_topic("a").err(), Some(CreateError::Exists));
    assert!(matches!(
        broker.create_topic("x/y"),
        Err(CreateError::InvalidName(_))
    ));
    let names: Vec<_> = broker.summaries().into_iter().map(|s| s.name).collect();
    assert_eq!(names, vec!["a", "b"]);
}

#[test]
fn a_mirror_applies_numbered_messages_once_and_in_order() {
    let broker = Broker::new(10);
    let topic = broker.mirror("t", "E1", 5);
    assert_eq!(topic.epoch(), "E1");
    let q = subscriber(1, 100);
    topic.subscribe(&q, Replay::LastN(0), false).unwrap();
    let ts = "2026-01-01T00:00:00.000Z";
    assert_eq!(topic.apply(5, &message("a"), ts), Ok(Applied::Delivered));
    assert_eq!(topic.apply(5, &message("a"), ts), Ok(Applied::Duplicate));
    assert_eq!(topic.apply(4, &message("z"), ts), Ok(Applied::Duplicate));
    assert_eq!(
        topic.apply(8, &message("d"), ts),
        Ok(Applied::Gap { expected: 6 }),
        "a gap delivers nothing"
    );
    assert_eq!(topic.apply(6, &message("b"), ts), Ok(Applied::Delivered));
    let got = drain(&q);
    let seqs: Vec<u64> = got.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, vec![5, 6]);
    assert_eq!(got[0]["ts"], ts, "the backplane's time, not this node's");
    assert!(
        Arc::ptr_eq(&broker.mirror("t", "E1", 1), &topic),
        "same epoch: same topic"
    );
}

#[test]
fn a_gap_filled_from_the_ring_does_not_count_against_the_queue() {
    let broker = Broker::new(1000);
    let topic = broker.mirror("t", "E1", 1);
    let (q, other) = (subscriber(1, 3), subscriber(2, 3));
    topic.subscribe(&q, Replay::LastN(0), false).unwrap();
    topic.subscribe(&other, Replay::LastN(0), false).unwrap();
    topic.apply(1, &message("live"), "ts").unwrap();
    assert_eq!(
        topic.apply(500, &message("after"), "ts"),
        Ok(Applied::Gap { expected: 2 })
    );
    for seq in 2..500 {
        assert_eq!(
            topic.fill(seq, &message("filled"), "ts"),
            Ok(Applied::Delivered)
        );
    }
    assert_eq!(
        topic.fill(499, &message("again"), "ts"),
        Ok(Applied::Duplicate)
    );
    // Behind the filled ones, live events count again: 1 was queued
    // before, so two more fit in a queue of 3, and the third overflows.
    for seq in 500..502 {
        assert_eq!(
            topic.apply(seq, &message("live"), "ts"),
            Ok(Applied::Delivered)
        );
    }
    assert!(!q.is_slow() && !other.is_slow());
    assert_eq!(q.len(), 501);
    let seqs: Vec<u64> = drain(&other)
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (1..502).collect::<Vec<_>>(),
        "every seq once, in order"
    );
    topic.apply(502, &message("over"), "ts").unwrap();
    assert!(q.is_slow(), "live events behind a repair still count");
    assert!(!other.is_slow(), "a queue that was read is not");
    assert_eq!(topic.summary().subscribers, 1);
}

#[test]
fn a_reset_tells_subscribers_and_numbering_goes_on() {
    let broker = Broker::new(10);
    let topic = broker.mirror("t", "E1", 1);
    let q = subscriber(1, 100);
    topic.subscribe(&q, Replay::LastN(0), false).unwrap();
    topic.apply(1, &message("a"), "ts").unwrap();
    topic.reset(7, Some("E2".into()));
    assert_eq!(topic.epoch(), "E2");
    assert_eq!(topic.next_seq(), 7);
    assert_eq!(topic.apply(7, &message("g"), "ts"), Ok(Applied::Delivered));
    let got = drain(&q);
    assert_eq!(got[0]["seq"], 1);
    assert_eq!(
        (
            got[1]["msg"].as_str(),
            got[1]["epoch"].as_str(),
            got[1]["last_seq"].as_u64()
        ),
        (Some("topic_reset"), Some("E2"), Some(6))
    );
    assert_eq!(got[2]["seq"], 7);
    assert_eq!(
        topic.history(0, 10).events.len(),
        1,
        "the ring starts again"
    );
}

#[test]
fn mirrors_follow_epochs_across_deletion_and_recreation() {
    let broker = Broker::new(10);
    let old = broker.mirror("t", "E1", 1);
    let q = subscriber(1, 100);
    old.subscribe(&q, Replay::LastN(0), false).unwrap();
    let new = broker.mirror("t", "E2", 1);
    assert!(old.is_deleted() && !new.is_deleted());
    assert_eq!(drain(&q)[0]["msg"], "topic_deleted");
    assert!(
        !broker.delete_mirror("t", "E1"),
        "a later incarnation stays"
    );
    assert!(broker.topic("t").is_some());
    assert!(broker.delete_mirror("t", "E2"));
    assert!(broker.topic("t").is_none());
}

#[test]
fn a_resume_ahead_of_a_mirror_waits_for_it_and_gets_nothing_twice() {
    // Cluster mode: the client saw up to 5 on another node; this node has
    // applied 3 so far.
    let broker = Broker::new(10);
    let topic = broker.mirror("t", "E1", 1);
    for seq in 1..=3 {
        topic.apply(seq, &message("old"), "ts").unwrap();
    }
    assert!(topic.is_behind(5, "E1") && topic.is_behind(4, "E1"));
    assert!(!topic.is_behind(3, "E1") && !topic.is_behind(5, "E0"));
    // The backplane said 5 is not there (yet another node's claim): not
    // recovered, as on a single broker.
    let other = subscriber(3, 10);
    let refused = topic
        .subscribe(
            &other,
            Replay::Since {
                seq: 5,
                epoch: "E1",
            },
            false,
        )
        .unwrap();
    assert_eq!((refused.recovered, refused.last_seq), (Some(false), 3));
    topic.unsubscribe(&other);
    // The backplane holds 5: the subscriber waits for what follows it.
    let q = subscriber(1, 100);
    let got = topic
        .subscribe(
            &q,
            Replay::SinceAhead {
                seq: 5,
                epoch: "E1",
            },
            false,
        )
        .unwrap();
    assert_eq!(
        (got.recovered, got.last_seq, got.replay.len()),
        (Some(true), 5, 0)
    );
    assert_eq!(topic.summary().subscribers, 1);
    for seq in 4..=7 {
        topic.apply(seq, &message("m"), "ts").unwrap();
    }
    let seqs: Vec<u64> = drain(&q)
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![6, 7], "4 and 5 were seen on the other node");
    // A single broker keeps the contract's answer: beyond the last seq is
    // not recovered, and live events follow.
    let single = broker.create_topic("s").unwrap();
    let got = single
        .subscribe(
            &subscriber(2, 10),
            Replay::Since {
                seq: 5,
                epoch: &single.epoch(),
            },
            false,
        )
        .unwrap();
    assert_eq!(got.recovered, Some(false));
}
