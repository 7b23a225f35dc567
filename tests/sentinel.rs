//! Cluster mode's "high availability" with real servers: a Redis master,
//! one replica and three sentinels (`tests/common/sentinel.rs`), nodes
//! that find the master through `redis+sentinel://`, a failover they
//! follow, and `REDIS_REPLICAS_ACK` refusing what was not replicated.
//!
//! `redis-server` and `redis-sentinel` must be on PATH (Debian packages
//! `redis-server` and `redis-sentinel`).

mod common;

use common::cluster::*;
use common::sentinel::*;
use common::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a failover may take here (down after 1 s, then a vote).
const FAILOVER: Duration = Duration::from_secs(20);

/// `client`'s reply to a publish of `id` to `topic` (an ack or an error).
fn publish(client: &mut Client, topic: &str, id: &str) -> Value {
    client.send(json!({"type":"publish","topic":topic,
        "message":{"id":id,"payload":{}},"request_id":id}));
    let reply = client.recv();
    assert_eq!(reply["request_id"], id, "{reply}");
    reply
}

#[test]
fn nodes_find_the_master_through_sentinel_and_carry_messages() {
    let set = SentinelSet::start();
    let a = Node::start(&set.url(), "a", &[]);
    let b = Node::start(&set.url(), "b", &[]);
    create_topic(a.addr(), "t");
    eventually("t listed on b", || subscribers(b.addr(), "t").is_some());
    let (collector, _) = Collector::subscribe("b", b.client(), "t");
    let mut client = a.client();
    for i in 1..=5u64 {
        let ack = client.publish("t", &format!("m{i}"), json!(i));
        assert_eq!(ack["seq"], i, "{ack}");
    }
    collector.wait_for_seq("t", 5, WAIT);
    // The topic lives on the master the sentinels named.
    let seq: u64 = set.master.query(redis::cmd("GET").arg("pubsub:t:{t}:seq"));
    assert_eq!(seq, 5);
}

#[test]
fn a_failover_is_followed_and_loses_nothing_acked_with_replicas_ack() {
    let mut set = SentinelSet::start();
    let env = [("REDIS_REPLICAS_ACK", "1")];
    let a = Node::start(&set.url(), "a", &env);
    let b = Node::start(&set.url(), "b", &env);
    create_topic(a.addr(), "t");
    eventually("t listed on b", || subscribers(b.addr(), "t").is_some());
    let (collector, _) = Collector::subscribe("b", b.client(), "t");
    let publisher = Publisher::start(
        a.client(),
        PublisherPlan {
            topic: "t",
            prefix: "m",
            window: 4,
            pause: Duration::from_millis(10),
            limit: 1_000_000,
            payload_bytes: 16,
        },
    );
    publisher.wait_acked(50, WAIT);

    let killed = Instant::now();
    set.master.kill();
    // No master: the nodes answer UNAVAILABLE and say so on /readyz.
    eventually("a publish refused with UNAVAILABLE", || {
        publisher.sent().iter().any(|s| {
            s.answered > killed && s.outcome.as_ref().is_err_and(|code| code == "UNAVAILABLE")
        })
    });
    eventually("b: /readyz backplane_down", || {
        let (status, body) = b.readyz();
        status == 503 && body["status"] == "backplane_down"
    });
    set.wait_master(set.replica.port, FAILOVER);
    // The promoted replica has no replica of its own until the old master
    // is back, as a replica of it: till then nothing can be acked.
    set.master.restart();
    a.wait_ready(FAILOVER);
    b.wait_ready(FAILOVER);
    publisher.wait_acked(50, FAILOVER);
    let failover_took = killed.elapsed();
    let sent = publisher.finish();

    let acked: Vec<(u64, &str)> = sent
        .iter()
        .filter_map(|s| Some((*s.outcome.as_ref().ok()?, s.id.as_str())))
        .collect();
    let last = acked.iter().map(|(seq, _)| *seq).max().unwrap();
    collector.wait_for_seq("t", last, WAIT);
    let seen = collector.finish();
    let mut delivered: HashMap<String, u64> = HashMap::new();
    for (i, (reset, events)) in runs(&seen, "t").iter().enumerate() {
        if let Some((first, _)) = events.first() {
            assert_consecutive(&format!("b, run {i} (after {reset:?})"), events, *first);
        }
        for (seq, id) in events {
            delivered.insert(id.clone(), *seq);
        }
    }
    for (seq, id) in &acked {
        assert_eq!(
            delivered.get(*id),
            Some(seq),
            "acked {id} (seq {seq}) was not delivered as acked; the failover took {failover_took:?}"
        );
    }
    eprintln!(
        "failover followed in {failover_took:?}; {} acked, {} refused",
        acked.len(),
        sent.len() - acked.len()
    );
}

#[test]
fn without_replicas_ack_a_failover_loses_nothing_silently() {
    // Replication is asynchronous: the promoted replica may lack the last
    // acked messages. Whatever it lacks, every subscriber's stream has no
    // gap that was not announced with `topic_reset`, no message twice,
    // nothing nobody published; and what was acked after the failover is
    // delivered as acked.
    let mut set = SentinelSet::start();
    let a = Node::start(&set.url(), "a", &[]);
    let b = Node::start(&set.url(), "b", &[]);
    create_topic(a.addr(), "t");
    eventually("t listed on b", || subscribers(b.addr(), "t").is_some());
    let collectors = [
        Collector::subscribe("on a", a.client(), "t").0,
        Collector::subscribe("on b", b.client(), "t").0,
    ];
    let publisher = Publisher::start(
        a.client(),
        PublisherPlan {
            topic: "t",
            prefix: "m",
            window: 8,
            pause: Duration::from_millis(2),
            limit: 1_000_000,
            payload_bytes: 16,
        },
    );
    publisher.wait_acked(100, WAIT);
    let killed = Instant::now();
    set.master.kill();
    set.wait_master(set.replica.port, FAILOVER);
    a.wait_ready(FAILOVER);
    b.wait_ready(FAILOVER);
    publisher.wait_acked(100, FAILOVER);
    let sent = publisher.finish();
    let published: HashMap<&str, &Sent> = sent.iter().map(|s| (s.id.as_str(), s)).collect();
    let after: Vec<(u64, &str)> = sent
        .iter()
        .filter(|s| s.answered > killed)
        .filter_map(|s| Some((*s.outcome.as_ref().ok()?, s.id.as_str())))
        .collect();
    let last = after
        .iter()
        .map(|(seq, _)| *seq)
        .max()
        .expect("acks after the failover");
    let mut announced = 0;
    for collector in collectors {
        collector.wait_until("the last ack after the failover", WAIT, |seen| {
            runs(seen, "t")
                .last()
                .is_some_and(|(_, events)| events.iter().any(|(seq, _)| *seq == last))
        });
        let seen = collector.finish();
        let runs = runs(&seen, "t");
        announced += runs.len() - 1;
        let mut delivered: HashMap<&str, u64> = HashMap::new();
        for (i, (reset, events)) in runs.iter().enumerate() {
            if let Some((first, _)) = events.first() {
                assert_consecutive(&format!("run {i} (after {reset:?})"), events, *first);
            }
            for (seq, id) in events {
                assert!(
                    published.contains_key(id.as_str()),
                    "{id}: nobody published it"
                );
                assert!(delivered.insert(id, *seq).is_none(), "{id} delivered twice");
            }
        }
        let (_, final_run) = runs.last().unwrap();
        let in_final: HashMap<&str, u64> = final_run
            .iter()
            .map(|(seq, id)| (id.as_str(), *seq))
            .collect();
        for (seq, id) in &after {
            assert_eq!(
                in_final.get(id),
                Some(seq),
                "{id}, acked after the failover"
            );
        }
    }
    eprintln!(
        "failover without REDIS_REPLICAS_ACK: {} published, {} acked after it, {announced} resets announced",
        sent.len(),
        after.len()
    );
}

#[test]
fn a_replica_that_stops_answering_gets_publishes_refused_within_a_second() {
    let set = SentinelSet::start();
    let a = Node::start(&set.url(), "a", &[("REDIS_REPLICAS_ACK", "1")]);
    create_topic(a.addr(), "t");
    let mut client = a.client();
    assert_eq!(publish(&mut client, "t", "before")["type"], "ack");

    set.replica.pause();
    let started = Instant::now();
    let reply = publish(&mut client, "t", "paused");
    let took = started.elapsed();
    set.replica.resume();
    assert_eq!(reply["type"], "error", "not acked: {reply}");
    assert_eq!(reply["error"]["code"], "UNAVAILABLE", "{reply}");
    assert!(
        took < Duration::from_millis(1500),
        "refused after {took:?}, not within about a second"
    );
    eventually("publishes acked again once the replica answers", || {
        publish(&mut client, "t", "after")["type"] == "ack"
    });
}
