//! Resume after reconnect (`since_seq` + `epoch`), end to end: the ack's
//! `epoch`, `last_seq` and `recovered` at every boundary of the ring, the
//! replay right after the ack and before live events, epochs (per topic,
//! per incarnation, per broker), the publish ack's `seq`, the resume
//! requests that are `BAD_REQUEST`, and resumes while publishers on other
//! workers run: what a subscriber sees across reconnects is every `seq`
//! once, in order, or a gap announced by `recovered: false`.
//!
//! Long on purpose: resume has a boundary per case of the contract, and
//! two storms.

mod common;

use common::*;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// `GET /topics/{name}`, which must answer 200.
fn detail(addr: SocketAddr, topic: &str) -> Value {
    let (status, body) = http_json(addr, "GET", &format!("/topics/{topic}"), None, &[]);
    assert_eq!(status, 200, "{body}");
    body
}

fn epoch_of(addr: SocketAddr, topic: &str) -> String {
    detail(addr, topic)["epoch"]
        .as_str()
        .expect("epoch is a string")
        .to_string()
}

/// Subscribes with `since_seq` and `epoch`; returns the ack, which must be
/// the next message.
fn resume(client: &mut Client, topic: &str, since: u64, epoch: &str) -> Value {
    client.send(json!({
        "type": "subscribe",
        "topic": topic,
        "client_id": "resumer",
        "since_seq": since,
        "epoch": epoch,
        "request_id": "resume",
    }));
    let ack = client.expect("ack");
    assert_eq!(
        (
            ack["topic"].as_str(),
            ack["request_id"].as_str(),
            ack["status"].as_str()
        ),
        (Some(topic), Some("resume"), Some("ok")),
        "{ack}"
    );
    ack
}

/// The ack's (epoch, last_seq, recovered).
fn ack_fields(ack: &Value) -> (Option<&str>, Option<u64>, Option<bool>) {
    (
        ack["epoch"].as_str(),
        ack["last_seq"].as_u64(),
        ack["recovered"].as_bool(),
    )
}

/// The next frame must be an event of `topic` with this `seq`.
fn expect_seq(client: &mut Client, topic: &str, seq: u64) -> Value {
    let event = client.expect("event");
    assert_eq!(
        (
            event["topic"].as_str(),
            event["seq"].as_u64(),
            event["message"]["id"].as_str()
        ),
        (Some(topic), Some(seq), Some(format!("m{seq}").as_str())),
        "{event}"
    );
    event
}

/// Publishes m{from}..=m{to} to `topic`; each ack must carry its `seq`.
fn publish_range(publisher: &mut Client, topic: &str, from: u64, to: u64) {
    for seq in from..=to {
        let ack = publisher.publish(topic, &format!("m{seq}"), json!({ "n": seq }));
        assert_eq!(ack["seq"].as_u64(), Some(seq), "{ack}");
    }
}

// ---- acks ---------------------------------------------------------------------------

#[test]
fn publish_acks_count_seq_per_topic_and_subscribe_acks_carry_epoch_and_last_seq() {
    let broker = TestBroker::start();
    broker.create_topic("a");
    broker.create_topic("b");
    let mut publisher = broker.client();
    // Interleaved: each topic counts on its own.
    for (topic, seq) in [("a", 1), ("b", 1), ("a", 2), ("a", 3), ("b", 2)] {
        let ack = publisher.publish(topic, &format!("{topic}{seq}"), json!(null));
        assert_eq!(
            (ack["topic"].as_str(), ack["seq"].as_u64()),
            (Some(topic), Some(seq)),
            "{ack}"
        );
        assert!(ack.get("epoch").is_none() && ack.get("last_seq").is_none());
    }

    let mut sub = broker.client();
    let ack = sub.subscribe("a", 0);
    assert_eq!(
        ack_fields(&ack),
        (Some(epoch_of(broker.addr, "a").as_str()), Some(3), None),
        "no 'recovered' unless resuming: {ack}"
    );
    assert!(ack.get("recovered").is_none(), "{ack}");
    assert!(ack.get("seq").is_none(), "{ack}");
    let ack = sub.subscribe("b", 1);
    assert_eq!(
        ack_fields(&ack),
        (Some(epoch_of(broker.addr, "b").as_str()), Some(2), None)
    );
    // The replay of last_n follows its ack as before.
    let event = sub.expect("event");
    assert_eq!(
        (event["topic"].as_str(), event["seq"].as_u64()),
        (Some("b"), Some(2))
    );

    // An empty topic: last_seq 0.
    broker.create_topic("empty");
    let ack = sub.subscribe("empty", 0);
    assert_eq!(ack["last_seq"].as_u64(), Some(0), "{ack}");

    // An epoch without since_seq changes nothing.
    sub.send(
        json!({"type":"subscribe","topic":"a","client_id":"c","epoch":"whatever","request_id":"e"}),
    );
    let ack = sub.expect("ack");
    assert_eq!(ack["request_id"], "e");
    assert!(ack.get("recovered").is_none(), "{ack}");
    assert_eq!(ack["last_seq"].as_u64(), Some(3));

    // Unsubscribe acks carry none of it.
    sub.send(json!({"type":"unsubscribe","topic":"a","client_id":"c","request_id":"u"}));
    let ack = sub.expect("ack");
    for field in ["seq", "epoch", "last_seq", "recovered"] {
        assert!(ack.get(field).is_none(), "{field} in {ack}");
    }
    sub.ping("end");
}

// ---- the boundaries -------------------------------------------------------------------

const RING: u64 = 5;

/// Creates `topic`, publishes `published` messages, resumes a new client
/// at `since`, and checks the ack (epoch from `GET /topics/{name}`,
/// `last_seq`, `recovered`), then exactly the replay `replayed` (half
/// open; `0..0` for none), then a
/// live message right after it, then nothing else.
fn check_resume(
    broker: &TestBroker,
    topic: &str,
    published: u64,
    since: u64,
    recovered: bool,
    replayed: std::ops::Range<u64>,
) {
    broker.create_topic(topic);
    let mut publisher = broker.client();
    publish_range(&mut publisher, topic, 1, published);
    let epoch = epoch_of(broker.addr, topic);

    let mut sub = broker.client();
    let ack = resume(&mut sub, topic, since, &epoch);
    assert_eq!(
        ack_fields(&ack),
        (Some(epoch.as_str()), Some(published), Some(recovered)),
        "{topic}: {published} published, resume after {since}: {ack}"
    );
    for seq in replayed {
        expect_seq(&mut sub, topic, seq);
    }
    sub.ping(&format!("{topic}-replayed"));
    publish_range(&mut publisher, topic, published + 1, published + 1);
    expect_seq(&mut sub, topic, published + 1);
    sub.ping(&format!("{topic}-live"));
}

#[test]
fn resume_at_every_boundary_of_the_ring() {
    let broker = TestBroker::with(&[("RING_BUFFER_SIZE", &RING.to_string())]);
    // 8 published, the ring holds 4..=8.
    check_resume(&broker, "nothing-missed", 8, 8, true, 0..0);
    check_resume(&broker, "the-last", 8, 7, true, 8..9);
    check_resume(&broker, "the-middle", 8, 5, true, 6..9);
    check_resume(&broker, "the-oldest", 8, 3, true, 4..9);
    check_resume(&broker, "one-past-the-oldest", 8, 2, false, 0..0);
    check_resume(&broker, "far-past-the-oldest", 8, 0, false, 0..0);
    check_resume(&broker, "beyond", 8, 9, false, 0..0);
    check_resume(&broker, "far-beyond", 8, u64::MAX, false, 0..0);
    // The ring exactly full, then one more.
    check_resume(&broker, "full-from-0", RING, 0, true, 1..RING + 1);
    check_resume(&broker, "overfull-from-0", RING + 1, 0, false, 0..0);
    check_resume(&broker, "overfull-from-1", RING + 1, 1, true, 2..RING + 2);
    // Fewer than the ring holds.
    check_resume(&broker, "few-from-0", 3, 0, true, 1..4);
    // An empty topic: 0 is its last_seq; 1 is beyond it.
    check_resume(&broker, "empty-from-0", 0, 0, true, 0..0);
    check_resume(&broker, "empty-from-1", 0, 1, false, 0..0);
}

#[test]
fn a_since_seq_too_large_for_64_bits_is_beyond_the_last() {
    let broker = TestBroker::with(&[("RING_BUFFER_SIZE", "5")]);
    broker.create_topic("t");
    let mut publisher = broker.client();
    publish_range(&mut publisher, "t", 1, 3);
    let epoch = epoch_of(broker.addr, "t");
    let mut sub = broker.client();
    sub.send_text(&format!(
        r#"{{"type":"subscribe","topic":"t","client_id":"c","since_seq":18446744073709551616000,"epoch":"{epoch}","request_id":"big"}}"#
    ));
    let ack = sub.expect("ack");
    assert_eq!(
        ack_fields(&ack),
        (Some(epoch.as_str()), Some(3), Some(false))
    );
    sub.ping("nothing-replayed");
    publish_range(&mut publisher, "t", 4, 4);
    expect_seq(&mut sub, "t", 4);
}

#[test]
fn another_epoch_is_not_recovered_and_replays_nothing() {
    let broker = TestBroker::with(&[("RING_BUFFER_SIZE", "5")]);
    broker.create_topic("t");
    broker.create_topic("other");
    let mut publisher = broker.client();
    publish_range(&mut publisher, "t", 1, 4);
    let epoch = epoch_of(broker.addr, "t");
    let other = epoch_of(broker.addr, "other");

    let mut sub = broker.client();
    for (i, wrong) in [
        other.as_str(),
        "",
        "AAAAAAAAAAAA",
        &epoch[..epoch.len() - 1],
    ]
    .into_iter()
    .enumerate()
    {
        // Every message after 2 is held: only the epoch is wrong.
        let ack = resume(&mut sub, "t", 2, wrong);
        assert_eq!(
            ack_fields(&ack),
            (Some(epoch.as_str()), Some(4), Some(false)),
            "epoch {wrong:?}: {ack}"
        );
        sub.ping(&format!("nothing-replayed-{i}"));
    }
    // The right epoch on the same connection (already subscribed): replayed.
    let ack = resume(&mut sub, "t", 2, &epoch);
    assert_eq!(
        ack_fields(&ack),
        (Some(epoch.as_str()), Some(4), Some(true))
    );
    expect_seq(&mut sub, "t", 3);
    expect_seq(&mut sub, "t", 4);
    sub.ping("replayed");
    publish_range(&mut publisher, "t", 5, 5);
    expect_seq(&mut sub, "t", 5);
    sub.ping("live-once");
}

#[test]
fn a_recreated_topic_has_a_new_epoch_and_the_old_one_does_not_recover() {
    let broker = TestBroker::with(&[("RING_BUFFER_SIZE", "10")]);
    broker.create_topic("t");
    let mut sub = broker.client();
    let ack = sub.subscribe("t", 0);
    let old_epoch = ack["epoch"].as_str().unwrap().to_string();
    let mut publisher = broker.client();
    publish_range(&mut publisher, "t", 1, 3);
    for seq in 1..=3 {
        expect_seq(&mut sub, "t", seq);
    }

    delete_topic(broker.addr, "t");
    let info = sub.expect("info");
    assert_eq!(
        (info["msg"].as_str(), info["topic"].as_str()),
        (Some("topic_deleted"), Some("t")),
        "{info}"
    );

    broker.create_topic("t");
    let new_epoch = epoch_of(broker.addr, "t");
    assert_ne!(new_epoch, old_epoch, "a new incarnation has a new epoch");
    // seq starts again; 5 > 3, so the ring holds everything after 3 and
    // only the epoch tells the client this is not the topic it saw.
    publish_range(&mut publisher, "t", 1, 5);
    let ack = resume(&mut sub, "t", 3, &old_epoch);
    assert_eq!(
        ack_fields(&ack),
        (Some(new_epoch.as_str()), Some(5), Some(false)),
        "{ack}"
    );
    sub.ping("nothing-replayed");
    publish_range(&mut publisher, "t", 6, 6);
    expect_seq(&mut sub, "t", 6);

    // From 0 with the old epoch: not recovered either.
    let mut other = broker.client();
    let ack = resume(&mut other, "t", 0, &old_epoch);
    assert_eq!(
        ack_fields(&ack),
        (Some(new_epoch.as_str()), Some(6), Some(false))
    );
    other.ping("nothing-replayed");
}

#[test]
fn a_long_resume_replay_does_not_count_against_the_subscriber_queue() {
    let broker = TestBroker::with(&[("RING_BUFFER_SIZE", "1000"), ("SUBSCRIBER_QUEUE_SIZE", "1")]);
    broker.create_topic("t");
    let mut publisher = broker.client();
    publish_range(&mut publisher, "t", 1, 600);
    let epoch = epoch_of(broker.addr, "t");
    let mut sub = broker.client();
    let ack = resume(&mut sub, "t", 0, &epoch);
    assert_eq!(
        ack_fields(&ack),
        (Some(epoch.as_str()), Some(600), Some(true))
    );
    for seq in 1..=600 {
        // An `error SLOW_CONSUMER` here would fail the `expect("event")`.
        expect_seq(&mut sub, "t", seq);
    }
    sub.ping("still-open");
    publish_range(&mut publisher, "t", 601, 601);
    expect_seq(&mut sub, "t", 601);
}

// ---- epochs ---------------------------------------------------------------------------

#[test]
fn epochs_differ_across_topics_incarnations_and_brokers_and_stay_put_otherwise() {
    let first = TestBroker::start();
    let second = TestBroker::start();
    let mut seen = Vec::new();
    for broker in [&first, &second] {
        broker.create_topic("orders");
        broker.create_topic("other");
        seen.push(epoch_of(broker.addr, "orders"));
        seen.push(epoch_of(broker.addr, "other"));
    }
    delete_topic(first.addr, "orders");
    first.create_topic("orders");
    seen.push(epoch_of(first.addr, "orders"));
    for epoch in &seen {
        assert!(
            !epoch.is_empty()
                && epoch.len() <= 32
                && epoch
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "short and URL-safe: {epoch:?}"
        );
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "all differ: {seen:?}");

    // Stable while the topic lives: publishing does not change it, and the
    // subscribe ack, the detail and the history agree.
    let epoch = epoch_of(first.addr, "orders");
    let mut client = first.client();
    client.publish("orders", "m1", json!(1));
    assert_eq!(epoch_of(first.addr, "orders"), epoch);
    assert_eq!(
        client.subscribe("orders", 0)["epoch"].as_str(),
        Some(epoch.as_str())
    );
    let (status, history) = http_json(first.addr, "GET", "/topics/orders/messages", None, &[]);
    assert_eq!(status, 200);
    assert_eq!(history["epoch"].as_str(), Some(epoch.as_str()));

    // The other broker's epoch for the same name and seq does not recover.
    let mut on_second = second.client();
    on_second.publish("orders", "m1", json!(1));
    let ack = resume(&mut on_second, "orders", 1, &epoch);
    assert_eq!(ack["recovered"], false, "{ack}");
}

// ---- bad requests ---------------------------------------------------------------------

#[test]
fn bad_resume_requests_are_bad_request_and_the_connection_stays_open() {
    let broker = TestBroker::with(&[("RING_BUFFER_SIZE", "5")]);
    broker.create_topic("t");
    let mut publisher = broker.client();
    publish_range(&mut publisher, "t", 1, 2);
    let epoch = epoch_of(broker.addr, "t");
    let mut client = broker.client();
    let cases = [
        (r#""since_seq":1"#.to_string(), "epoch"),
        (r#""since_seq":0,"epoch":null"#.to_string(), "epoch"),
        (
            format!(r#""since_seq":1,"epoch":"{epoch}","last_n":2"#),
            "last_n",
        ),
        (
            format!(r#""since_seq":1,"epoch":"{epoch}","last_n":0"#),
            "last_n",
        ),
        (format!(r#""since_seq":-1,"epoch":"{epoch}""#), "since_seq"),
        (format!(r#""since_seq":"1","epoch":"{epoch}""#), "since_seq"),
        (format!(r#""since_seq":1.5,"epoch":"{epoch}""#), "since_seq"),
        (
            format!(r#""since_seq":true,"epoch":"{epoch}""#),
            "since_seq",
        ),
        (format!(r#""since_seq":[1],"epoch":"{epoch}""#), "since_seq"),
        (r#""since_seq":1,"epoch":7"#.to_string(), "epoch"),
        (r#""since_seq":1,"epoch":["e"]"#.to_string(), "epoch"),
        (r#""since_seq":1,"epoch":{}"#.to_string(), "epoch"),
        (r#""since_seq":1,"epoch":true"#.to_string(), "epoch"),
    ];
    for (i, (fields, named)) in cases.iter().enumerate() {
        let rid = format!("bad-{i}");
        client.send_text(&format!(
            r#"{{"type":"subscribe","topic":"t","client_id":"c","request_id":"{rid}",{fields}}}"#
        ));
        let error = client.expect("error");
        assert_eq!(
            (
                error["error"]["code"].as_str(),
                error["request_id"].as_str(),
                error["topic"].as_str()
            ),
            (Some("BAD_REQUEST"), Some(rid.as_str()), Some("t")),
            "{fields}: {error}"
        );
        let message = error["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(named),
            "{fields}: names '{named}': {message}"
        );
        client.ping(&format!("open-{i}"));
    }
    // None of them subscribed: a publish reaches nobody here.
    publish_range(&mut publisher, "t", 3, 3);
    client.ping("not-subscribed");
    // A valid resume on the same connection works.
    let ack = resume(&mut client, "t", 1, &epoch);
    assert_eq!(
        ack_fields(&ack),
        (Some(epoch.as_str()), Some(3), Some(true))
    );
    expect_seq(&mut client, "t", 2);
    expect_seq(&mut client, "t", 3);
    client.ping("end");
}

#[test]
fn resuming_a_missing_topic_is_topic_not_found() {
    let broker = TestBroker::start();
    let mut client = broker.client();
    client.send(json!({"type":"subscribe","topic":"nope","client_id":"c","since_seq":0,"epoch":"e","request_id":"r"}));
    let error = client.expect("error");
    assert_eq!(error["error"]["code"], "TOPIC_NOT_FOUND", "{error}");
    assert_eq!(error["request_id"], "r");
    client.ping("open");
}

// ---- under load -----------------------------------------------------------------------

const TOPIC: &str = "storm";
const PUBLISHERS: u64 = 4;
const PER_PUBLISHER: u64 = 1500;
const N: u64 = PUBLISHERS * PER_PUBLISHER;
/// How many times the subscriber drops and resumes during a storm.
const RECONNECTS: usize = 24;
/// How long a whole storm may take.
const STORM_LIMIT: Duration = Duration::from_secs(90);
/// How many events the subscriber reads before each drop (cycled).
const CHUNKS: [u64; 8] = [137, 1, 0, 411, 64, 9, 250, 33];

/// Publisher connections (each its own, so spread over the workers) that
/// publish `PER_PUBLISHER` messages each; each returns its acks' seqs.
fn start_publishers(broker: &TestBroker) -> Vec<JoinHandle<Vec<u64>>> {
    (0..PUBLISHERS)
        .map(|p| {
            let mut client = broker.client();
            std::thread::spawn(move || {
                (0..PER_PUBLISHER)
                    .map(|n| {
                        let ack = client.publish(TOPIC, &format!("p{p}-{n}"), json!({"p": p}));
                        ack["seq"].as_u64().expect("publish ack has a seq")
                    })
                    .collect()
            })
        })
        .collect()
}

/// Joins the publishers: each one's seqs rise, and together they are
/// 1..=N, each once.
fn join_publishers(publishers: Vec<JoinHandle<Vec<u64>>>) {
    let mut all = Vec::new();
    for publisher in publishers {
        let seqs = publisher.join().expect("publisher");
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "a publisher's seqs rise"
        );
        all.extend(seqs);
    }
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=N).collect::<Vec<_>>(),
        "publish acks: 1..=N once each"
    );
}

/// Reads events while they are the next `seq` after `*last`, up to
/// `count` of them (or until `N`).
fn read_next(client: &mut Client, last: &mut u64, count: u64) {
    for _ in 0..count {
        if *last == N {
            return;
        }
        let event = client.expect("event");
        assert_eq!(event["topic"], TOPIC);
        assert_eq!(
            event["seq"].as_u64(),
            Some(*last + 1),
            "gap or duplicate after {last}: {event}"
        );
        *last += 1;
    }
}

#[test]
fn resume_during_a_publish_storm_sees_every_seq_exactly_once_in_order() {
    let broker = TestBroker::with(&[
        ("WORKERS", "4"),
        ("RING_BUFFER_SIZE", "100000"),
        ("SUBSCRIBER_QUEUE_SIZE", "100000"),
    ]);
    broker.create_topic(TOPIC);
    let deadline = Instant::now() + STORM_LIMIT;
    let mut client = broker.client();
    let ack = client.subscribe(TOPIC, 0);
    assert_eq!(ack["last_seq"].as_u64(), Some(0));
    let epoch = ack["epoch"].as_str().unwrap().to_string();
    let publishers = start_publishers(&broker);

    // `last` is the seq of the last event seen, on any connection: every
    // event read must be `last + 1`, so the union of what was seen is
    // 1..=last, each once, in order.
    let mut last = 0;
    let mut resumes_mid_storm = 0;
    for round in 0..RECONNECTS {
        read_next(&mut client, &mut last, CHUNKS[round % CHUNKS.len()]);
        assert!(Instant::now() < deadline, "storm over {STORM_LIMIT:?}");
        // Dropped without a close, as a network would.
        drop(client);
        client = broker.client();
        let ack = resume(&mut client, TOPIC, last, &epoch);
        let (ack_epoch, last_seq, recovered) = ack_fields(&ack);
        assert_eq!(
            (ack_epoch, recovered),
            (Some(epoch.as_str()), Some(true)),
            "{ack}"
        );
        let last_seq = last_seq.unwrap();
        assert!(
            (last..=N).contains(&last_seq),
            "last_seq {last_seq} after {last}"
        );
        if last_seq < N {
            resumes_mid_storm += 1;
        }
    }
    while last < N {
        let left = N - last;
        read_next(&mut client, &mut last, left);
        assert!(Instant::now() < deadline, "storm over {STORM_LIMIT:?}");
    }
    join_publishers(publishers);
    client.ping("nothing-more");
    assert!(
        resumes_mid_storm > 0,
        "at least one resume while publishers were publishing"
    );
}

#[test]
fn resume_during_a_storm_with_a_small_ring_recovers_exactly_when_it_can() {
    const SMALL: u64 = 50;
    let broker = TestBroker::with(&[
        ("WORKERS", "4"),
        ("RING_BUFFER_SIZE", &SMALL.to_string()),
        ("SUBSCRIBER_QUEUE_SIZE", "100000"),
    ]);
    broker.create_topic(TOPIC);
    let deadline = Instant::now() + STORM_LIMIT;
    let mut client = broker.client();
    let epoch = client.subscribe(TOPIC, 0)["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    let publishers = start_publishers(&broker);

    // Every event read must be `last + 1`; a resume that is not recovered
    // moves `last` to the ack's `last_seq` (live events follow it), and
    // the gap it announces is counted.
    let mut last = 0;
    let (mut seen, mut missed) = (0, 0);
    let (mut not_recovered, mut recovered_count) = (0, 0);
    let reconnect = |client: &mut Client, last: &mut u64, wait_out_the_ring: bool| {
        let since = *last;
        *client = broker.client();
        if wait_out_the_ring && since + SMALL < N {
            // Let the ring move past since + 1 before resuming.
            eventually("the ring to move past the subscriber", || {
                detail(broker.addr, TOPIC)["last_seq"].as_u64().unwrap() > since + SMALL
            });
        }
        let ack = resume(client, TOPIC, since, &epoch);
        let (ack_epoch, last_seq, recovered) = ack_fields(&ack);
        assert_eq!(ack_epoch, Some(epoch.as_str()));
        let last_seq = last_seq.unwrap();
        assert!((since..=N).contains(&last_seq), "{ack} after {since}");
        // The ring holds the last SMALL messages: resume recovers exactly
        // when every message after `since` is among them.
        assert_eq!(
            recovered,
            Some(last_seq - since <= SMALL),
            "since {since}: {ack}"
        );
        if recovered == Some(false) {
            // Nothing replayed: the next event (if any) is last_seq + 1.
            *last = last_seq;
            (0, last_seq - since)
        } else {
            (1, 0)
        }
    };
    for round in 0..RECONNECTS {
        let before = last;
        read_next(&mut client, &mut last, CHUNKS[round % CHUNKS.len()]);
        seen += last - before;
        assert!(Instant::now() < deadline, "storm over {STORM_LIMIT:?}");
        let (ok, gap) = reconnect(&mut client, &mut last, round % 2 == 1);
        recovered_count += ok;
        missed += gap;
        not_recovered += u64::from(ok == 0);
    }
    // Once the publishers are done, a resume close enough to the end must
    // recover what is left.
    join_publishers(publishers);
    let before = last;
    let near_the_end = (N - SMALL / 2).saturating_sub(last);
    read_next(&mut client, &mut last, near_the_end);
    seen += last - before;
    let (ok, gap) = reconnect(&mut client, &mut last, false);
    assert_eq!((ok, gap), (1, 0), "after the storm, within the ring");
    let before = last;
    let left = N - last;
    read_next(&mut client, &mut last, left);
    seen += last - before;
    client.ping("nothing-more");
    assert_eq!(last, N);
    assert_eq!(
        seen + missed,
        N,
        "seen and announced as missed: every seq once"
    );
    assert!(
        not_recovered > 0,
        "waiting out the ring gives recovered:false"
    );
    assert!(recovered_count > 0);
}
