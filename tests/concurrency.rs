//! Many publishers and subscribers over several workers: every subscriber
//! sees every message of its topics exactly once, in seq order, nothing of
//! other topics, and each publisher's messages in the order it sent them.

mod common;

use common::*;
use serde_json::json;
use std::collections::HashMap;

const PUBLISHERS: usize = 4;
const TOPICS: [&str; 3] = ["t0", "t1", "t2"];
const PER_TOPIC: usize = 300;
const SUBSCRIBERS: usize = 12;
/// Published last, to every subscriber, once every publisher is done: all
/// that a subscriber will ever get of the other topics is queued before it.
const FENCE: &str = "fence";

#[test]
fn publishers_and_subscribers_on_four_workers_see_exactly_once_in_order() {
    // The queue is large so that a subscriber thread that the scheduler
    // holds back is not a slow consumer: this test is about fan-out.
    let broker = TestBroker::with(&[("WORKERS", "4"), ("SUBSCRIBER_QUEUE_SIZE", "100000")]);
    for topic in TOPICS.iter().chain([&FENCE]) {
        broker.create_topic(topic);
    }

    // Subscriber i takes the non-empty subset (i % 7) + 1 of the topics.
    let mut readers = Vec::new();
    for i in 0..SUBSCRIBERS {
        let mask = i % 7 + 1;
        let topics: Vec<&'static str> = (0..TOPICS.len())
            .filter(|t| mask & (1 << t) != 0)
            .map(|t| TOPICS[t])
            .collect();
        let mut client = broker.client();
        for topic in &topics {
            client.subscribe(topic, 0);
        }
        client.subscribe(FENCE, 0);
        readers.push(std::thread::spawn(move || {
            let mut events = Vec::new();
            let limit = TOPICS.len() * PUBLISHERS * PER_TOPIC + 1;
            loop {
                let event = client.expect("event");
                if event["topic"] == FENCE {
                    return (topics, events);
                }
                events.push(event);
                assert!(events.len() <= limit, "more events than published");
            }
        }));
    }

    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let mut client = broker.client();
            std::thread::spawn(move || {
                for n in 0..PER_TOPIC {
                    for topic in TOPICS {
                        client.publish(topic, &format!("p{p}-{n}"), json!({"p": p, "n": n}));
                    }
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.join().expect("publisher");
    }
    broker.client().publish(FENCE, "fence", json!(null));

    let expected_per_topic = (PUBLISHERS * PER_TOPIC) as u64;
    for (i, reader) in readers.into_iter().enumerate() {
        let (topics, events) = reader.join().expect("subscriber");
        // topic -> seqs seen; (topic, publisher) -> n values seen
        let mut seqs: HashMap<String, Vec<u64>> = HashMap::new();
        let mut order: HashMap<(String, u64), Vec<u64>> = HashMap::new();
        for event in &events {
            let topic = event["topic"].as_str().unwrap().to_string();
            assert!(
                topics.contains(&topic.as_str()),
                "subscriber {i} of {topics:?} got an event of {topic}: {event}"
            );
            seqs.entry(topic.clone())
                .or_default()
                .push(event["seq"].as_u64().unwrap());
            let payload = &event["message"]["payload"];
            let (p, n) = (
                payload["p"].as_u64().unwrap(),
                payload["n"].as_u64().unwrap(),
            );
            assert_eq!(event["message"]["id"], format!("p{p}-{n}"), "{event}");
            order.entry((topic, p)).or_default().push(n);
        }
        for topic in &topics {
            let got = seqs.remove(*topic).unwrap_or_default();
            assert_eq!(
                got.len() as u64,
                expected_per_topic,
                "subscriber {i}, topic {topic}: count"
            );
            for (k, seq) in got.iter().enumerate() {
                assert_eq!(
                    *seq,
                    k as u64 + 1,
                    "subscriber {i}, topic {topic}: seq out of order"
                );
            }
            for p in 0..PUBLISHERS as u64 {
                let ns = order.remove(&(topic.to_string(), p)).unwrap_or_default();
                assert_eq!(
                    ns,
                    (0..PER_TOPIC as u64).collect::<Vec<_>>(),
                    "subscriber {i}, topic {topic}: publisher {p}'s messages out of its order"
                );
            }
        }
    }
}
