//! Cluster mode end to end: a real `redis-server` on a free loopback port
//! and three real broker processes on it. Topics are cluster-wide; every
//! subscriber on every node gets every message once, in `seq` order; resume
//! works on any node, also for the clients of a node killed mid-stream;
//! and every failure of the backplane (Redis killed and restarted with and
//! without its data, paused, a node's subscription killed, a node paused
//! past Redis's output buffer limit, a node kept from subscribing while a
//! gap longer than its queues grows) answers clearly and leaves every
//! subscriber with a contiguous sequence.
//!
//! `redis-server` must be on PATH (Debian package `redis-server`): without
//! it these tests fail, they do not skip.
//!
//! Long on purpose: one file per promise, and cluster mode's has a case
//! per failure of the backplane, each with three nodes and its own checks.

mod common;

use common::cluster::*;
use common::*;
use serde_json::json;
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

/// A backplane request is answered within this when Redis is gone.
const ANSWER_LIMIT: Duration = Duration::from_secs(1);

/// `POST /topics/{topic}/messages` on a new connection: the `seq` of the
/// ack, or the status and error code.
fn rest_publish(addr: std::net::SocketAddr, topic: &str, id: &str) -> Result<u64, (u16, String)> {
    let body = json!({"id": id, "payload": {"via": "rest"}}).to_string();
    let (status, reply) = http_json(
        addr,
        "POST",
        &format!("/topics/{topic}/messages"),
        Some(&body),
        &[],
    );
    if status == 200 {
        assert_eq!(reply["status"], "published", "{reply}");
        Ok(reply["seq"]
            .as_u64()
            .expect("a REST publish answers its seq"))
    } else {
        Err((
            status,
            reply["error"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ))
    }
}

/// The ids acked, by `seq`; asserts no `seq` was acked twice.
fn acked_by_seq(sent: &[Sent]) -> BTreeMap<u64, String> {
    let mut by_seq = BTreeMap::new();
    for s in sent {
        if let Ok(seq) = s.outcome {
            if let Some(other) = by_seq.insert(seq, s.id.clone()) {
                panic!("seq {seq} acked twice: to {other} and to {}", s.id);
            }
        }
    }
    by_seq
}

/// Asserts that every acked (seq, id) is among `events`.
fn assert_acked_delivered(who: &str, events: &[(u64, String)], acked: &BTreeMap<u64, String>) {
    let delivered: BTreeMap<u64, &String> = events.iter().map(|(s, id)| (*s, id)).collect();
    for (seq, id) in acked {
        assert_eq!(
            delivered.get(seq).copied(),
            Some(id),
            "{who}: the message acked with seq {seq} ({id}) was not delivered at that seq"
        );
    }
}

/// One subscriber per node (`<node><i>` for `per_node` each) to `topic`,
/// read on threads; returns them and the epoch their acks carried.
fn subscribe_everywhere(
    cluster: &Cluster,
    topic: &str,
    per_node: usize,
) -> (Vec<Collector>, String) {
    let mut collectors = Vec::new();
    let mut epochs = HashSet::new();
    for node in &cluster.nodes {
        for i in 0..per_node {
            let (collector, ack) =
                Collector::subscribe(&format!("{}{i}", node.id), node.client(), topic);
            epochs.insert(
                ack["epoch"]
                    .as_str()
                    .expect("a subscribe ack has an epoch")
                    .to_string(),
            );
            collectors.push(collector);
        }
    }
    assert_eq!(epochs.len(), 1, "one epoch on every node: {epochs:?}");
    (collectors, epochs.into_iter().next().unwrap())
}

/// A stream of WebSocket publishes from `node`, one at a time, paced.
fn paced_publisher(node: &Node, topic: &str, pause: Duration) -> Publisher {
    Publisher::start(
        node.client(),
        PublisherPlan {
            topic,
            prefix: &node.id,
            window: 1,
            pause,
            limit: 1_000_000,
            payload_bytes: 16,
        },
    )
}

/// A paced publisher on each of `nodes`, returned once each has had
/// `acked` publishes acked.
fn streaming_publishers(
    nodes: &[Node],
    topic: &str,
    pause: Duration,
    acked: usize,
) -> Vec<Publisher> {
    let publishers: Vec<Publisher> = nodes
        .iter()
        .map(|node| paced_publisher(node, topic, pause))
        .collect();
    for publisher in &publishers {
        publisher.wait_acked(acked, WAIT);
    }
    publishers
}

/// Waits until each of `publishers` has had `more` publishes acked, stops
/// them and returns every reply.
fn stop_after(publishers: Vec<Publisher>, more: usize) -> Vec<Sent> {
    for publisher in &publishers {
        publisher.wait_acked(more, WAIT);
    }
    publishers.into_iter().flat_map(Publisher::finish).collect()
}

/// After the publishers stopped: one last publish (REST, on `node`) whose
/// `seq` is the topic's last; waits until every collector has it and
/// returns it.
fn last_publish(node: &Node, topic: &str, collectors: &[Collector]) -> u64 {
    let last = rest_publish(node.addr(), topic, "last").expect("the last publish is acked");
    for collector in collectors {
        collector.wait_until(&format!("the last message, seq {last}"), WAIT, |seen| {
            seen.iter()
                .any(|v| v["type"] == "event" && v["message"]["id"] == "last")
        });
    }
    last
}

/// Every collector saw `topic` with no reset and no gap, 1 to `last`, and
/// every acked message at its seq. Returns nothing; panics on the first
/// subscriber that did not.
fn assert_every_subscriber_saw_all(
    cluster: &Cluster,
    collectors: Vec<Collector>,
    topic: &str,
    last: u64,
    acked: &BTreeMap<u64, String>,
) {
    for collector in collectors {
        let who = collector.name.clone();
        let runs = runs(&collector.finish(), topic);
        assert_eq!(
            runs.len(),
            1,
            "{who}: no topic_reset expected, got {:?}; the nodes' warnings:\n{}",
            runs.iter().map(|r| &r.0).collect::<Vec<_>>(),
            cluster.warnings()
        );
        let events = &runs[0].1;
        assert_consecutive(&who, events, 1);
        assert_eq!(
            events.len() as u64,
            last,
            "{who}: 1 to {last}; the nodes' warnings:\n{}",
            cluster.warnings()
        );
        assert_acked_delivered(&who, events, acked);
    }
}

#[test]
fn topics_are_cluster_wide_and_counted_across_the_cluster() {
    let mut cluster = Cluster::start(3, &[]);
    let (a, b, c) = (&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]);

    create_topic(a.addr(), "orders");
    cluster.wait_listed("orders");
    let detail = |node: &Node| http_json(node.addr(), "GET", "/topics/orders", None, &[]);
    let (status, on_a) = detail(a);
    assert_eq!(status, 200, "{on_a}");
    let epoch = on_a["epoch"].as_str().expect("an epoch").to_string();
    for node in [b, c] {
        let (status, on) = detail(node);
        assert_eq!(status, 200, "{on}");
        assert_eq!(
            (on["name"].as_str(), on["epoch"].as_str()),
            (Some("orders"), Some(epoch.as_str())),
            "node {}",
            node.id
        );
    }
    let (status, body) = http_json(
        b.addr(),
        "POST",
        "/topics",
        Some(r#"{"name":"orders"}"#),
        &[],
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("CONFLICT")),
        "created again on B: {body}"
    );

    // Two subscribers on A, one on B, none on C: every node counts three.
    let mut clients: Vec<Client> = [a, a, b].iter().map(|node| node.client()).collect();
    for client in &mut clients {
        assert_eq!(client.subscribe("orders", 0)["epoch"], epoch.as_str());
    }
    let counts_everywhere = |cluster: &Cluster, want: u64| {
        for node in &cluster.nodes {
            eventually(
                &format!("node {} counting {want} subscribers", node.id),
                || {
                    let (_, detail) = http_json(node.addr(), "GET", "/topics/orders", None, &[]);
                    subscribers(node.addr(), "orders") == Some(want)
                        && detail["subscribers"] == want
                },
            );
        }
    };
    counts_everywhere(&cluster, 3);
    drop(clients.remove(0));
    counts_everywhere(&cluster, 2);

    // Deleted on C: its subscribers on A and B (and C) are told.
    let mut on_c = c.client();
    on_c.subscribe("orders", 0);
    clients.push(on_c);
    assert_eq!(delete_topic(c.addr(), "orders")["status"], "deleted");
    for client in &mut clients {
        let info = client.expect("info");
        assert_eq!(
            (info["msg"].as_str(), info["topic"].as_str()),
            (Some("topic_deleted"), Some("orders")),
            "{info}"
        );
        client.ping("after-delete");
    }
    for node in &cluster.nodes {
        eventually(&format!("orders gone from node {}", node.id), || {
            subscribers(node.addr(), "orders").is_none()
                && http_json(node.addr(), "GET", "/topics/orders", None, &[]).0 == 404
        });
    }
    assert_eq!(
        http_json(a.addr(), "DELETE", "/topics/orders", None, &[]).0,
        404
    );
    assert_eq!(
        rest_publish(b.addr(), "orders", "late"),
        Err((404, "TOPIC_NOT_FOUND".into()))
    );

    // Created again on B: a new epoch, the same on every node.
    create_topic(b.addr(), "orders");
    cluster.wait_listed("orders");
    let epochs: HashSet<String> = cluster
        .nodes
        .iter()
        .map(|node| detail(node).1["epoch"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(epochs.len(), 1, "{epochs:?}");
    assert!(
        !epochs.contains(&epoch),
        "a topic created again has a new epoch"
    );

    // A node that dies stops counting once its entry expires.
    let mut on_b = b.client();
    on_b.subscribe("orders", 0);
    eventually("A counting B's subscriber", || {
        subscribers(a.addr(), "orders") == Some(1)
    });
    cluster.nodes[0].assert_sound();
    cluster.nodes[2].assert_sound();
    cluster.nodes[1].process.child.kill().unwrap();
    let killed = Instant::now();
    let (a, c) = (&cluster.nodes[0], &cluster.nodes[2]);
    eventually("A and C no longer counting the dead node", || {
        subscribers(a.addr(), "orders") == Some(0) && subscribers(c.addr(), "orders") == Some(0)
    });
    eprintln!("a dead node stopped counting after {:?}", killed.elapsed());
    cluster.nodes[0].assert_sound();
    cluster.nodes[2].assert_sound();
}

#[test]
fn messages_from_every_node_reach_every_subscriber_once_in_seq_order() {
    const PER_PUBLISHER: usize = 1000;
    const REST_PUBLISHES: usize = 100;
    let mut cluster = Cluster::start(3, &[]);
    create_topic(cluster.nodes[1].addr(), "stream");
    cluster.wait_listed("stream");
    let (collectors, _) = subscribe_everywhere(&cluster, "stream", 2);

    let started = Instant::now();
    let publishers: Vec<Publisher> = cluster
        .nodes
        .iter()
        .map(|node| {
            Publisher::start(
                node.client(),
                PublisherPlan {
                    topic: "stream",
                    prefix: &node.id,
                    window: 20,
                    pause: Duration::ZERO,
                    limit: PER_PUBLISHER,
                    payload_bytes: 32,
                },
            )
        })
        .collect();
    let mut sent = Vec::new();
    let mut rest = HttpConn::open(cluster.nodes[1].addr());
    for i in 0..REST_PUBLISHES {
        let id = format!("rest-{i}");
        let body = json!({"id": id, "payload": i}).to_string();
        let response = rest.request("POST", "/topics/stream/messages", Some(&body));
        assert_eq!(response.status, 200, "{:?}", response.json());
        sent.push(Sent {
            id,
            outcome: Ok(response.json()["seq"].as_u64().unwrap()),
            latency: Duration::ZERO,
            answered: Instant::now(),
        });
    }
    for publisher in publishers {
        sent.extend(publisher.complete(Duration::from_secs(20)));
    }
    eprintln!("published in {:?}", started.elapsed());
    let total = (3 * PER_PUBLISHER + REST_PUBLISHES) as u64;
    assert_eq!(sent.len() as u64, total);
    let errors: Vec<&Sent> = sent.iter().filter(|s| s.outcome.is_err()).collect();
    assert!(errors.is_empty(), "publishes refused: {errors:?}");
    let acked = acked_by_seq(&sent);
    assert_eq!(
        acked.keys().copied().collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>(),
        "the acks' seqs are 1 to {total}, each once"
    );
    for collector in &collectors {
        collector.wait_for_seq("stream", total, Duration::from_secs(20));
    }
    eprintln!(
        "{total} messages to 6 subscribers on 3 nodes in {:?}",
        started.elapsed()
    );
    assert_every_subscriber_saw_all(&cluster, collectors, "stream", total, &acked);
    cluster.assert_sound();
}

#[test]
fn last_n_and_resume_work_on_any_node() {
    let mut cluster = Cluster::start(3, &[]);
    let (a, b, c) = (&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]);
    create_topic(a.addr(), "resume");
    cluster.wait_listed("resume");

    let mut reader = a.client();
    let epoch = reader.subscribe("resume", 0)["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    let mut publisher = b.client();
    for i in 1..=20 {
        assert_eq!(
            publisher.publish("resume", &format!("m{i}"), json!(i))["seq"],
            i
        );
    }
    for i in 1..=20 {
        let event = reader.expect("event");
        assert_eq!(
            (event["seq"].as_u64(), event["message"]["id"].as_str()),
            (Some(i), Some(format!("m{i}").as_str()))
        );
    }
    drop(reader);
    for i in 21..=30 {
        assert_eq!(
            publisher.publish("resume", &format!("m{i}"), json!(i))["seq"],
            i
        );
    }

    // Back on C, from where it left off on A.
    let mut resumed = c.client();
    resumed.send(json!({"type":"subscribe","topic":"resume","client_id":"r","since_seq":20,"epoch":epoch,"request_id":"resume"}));
    let ack = resumed.expect("ack");
    assert_eq!(
        (ack["recovered"].as_bool(), ack["epoch"].as_str()),
        (Some(true), Some(epoch.as_str())),
        "{ack}"
    );
    assert_eq!(c.client().publish("resume", "m31", json!(31))["seq"], 31);
    for i in 21..=31 {
        let event = resumed.expect("event");
        assert_eq!(
            (event["seq"].as_u64(), event["message"]["id"].as_str()),
            (Some(i), Some(format!("m{i}").as_str())),
            "{event}"
        );
    }

    // last_n on B, then live from A, with no gap.
    let mut recent = b.client();
    let last_seq = recent.subscribe("resume", 5)["last_seq"].as_u64().unwrap();
    assert!((30..=31).contains(&last_seq), "B's last_seq {last_seq}");
    assert_eq!(a.client().publish("resume", "m32", json!(32))["seq"], 32);
    for i in last_seq - 4..=32 {
        assert_eq!(recent.expect("event")["seq"], i);
    }

    // Another epoch: not recovered, nothing replayed, live follows.
    let mut stale = a.client();
    stale.send(json!({"type":"subscribe","topic":"resume","client_id":"s","since_seq":3,"epoch":"not-the-epoch","request_id":"stale"}));
    assert_eq!(stale.expect("ack")["recovered"], false);
    assert_eq!(b.client().publish("resume", "m33", json!(33))["seq"], 33);
    assert_eq!(stale.expect("event")["seq"], 33);

    // The history page is the same ring on every node (once the last
    // publish reached it).
    let history = |node: &Node| {
        let (status, page) = http_json(
            node.addr(),
            "GET",
            "/topics/resume/messages?since_seq=28",
            None,
            &[],
        );
        assert_eq!(status, 200, "{page}");
        let seqs: Vec<u64> = page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["seq"].as_u64().unwrap())
            .collect();
        (seqs, page["epoch"].as_str().unwrap().to_string())
    };
    let want = (vec![29, 30, 31, 32, 33], epoch.clone());
    for node in &cluster.nodes {
        eventually(&format!("node {} holding 29 to 33", node.id), || {
            history(node) == want
        });
    }

    // A node that joins later has the ring too: last_n and resume work
    // there. Once it says ready it knows the topic (`history` wants 200).
    let late = Node::start(&cluster.redis.url(), "d", &[]);
    eventually("the late node holding 29 to 33", || history(&late) == want);
    let mut recent = late.client();
    assert_eq!(recent.subscribe("resume", 3)["last_seq"], 33);
    for i in 31..=33 {
        assert_eq!(recent.expect("event")["seq"], i);
    }
    let mut resumed = late.client();
    resumed.send(json!({"type":"subscribe","topic":"resume","client_id":"r","since_seq":30,"epoch":epoch,"request_id":"late"}));
    assert_eq!(resumed.expect("ack")["recovered"], true);
    for i in 31..=33 {
        assert_eq!(resumed.expect("event")["seq"], i);
    }
    cluster.assert_sound();
}

/// A node that stops gracefully (SIGTERM) takes its subscriber counts out
/// of Redis once its last connection closed: the other nodes count right
/// again at their next heartbeat (1 s), not once the counts expire (5 s).
#[test]
fn a_node_that_stops_gracefully_stops_counting_at_once() {
    let mut cluster = Cluster::start(2, &[]);
    let a = cluster.nodes[0].addr();
    create_topic(a, "t");
    cluster.wait_listed("t");
    let mut on_b = cluster.nodes[1].client();
    on_b.subscribe("t", 0);
    eventually("A counting B's subscriber", || {
        subscribers(a, "t") == Some(1)
    });

    cluster.nodes[1].process.signal("TERM");
    assert_eq!(on_b.expect("info")["msg"], "server_shutdown");
    drop(on_b);
    let status = cluster.nodes[1].process.wait_exit(WAIT);
    assert!(status.success(), "{status}");
    let stopped = Instant::now();
    eventually("A no longer counting B's subscriber", || {
        subscribers(a, "t") == Some(0)
    });
    let took = stopped.elapsed();
    eprintln!("A stopped counting {took:?} after B exited");
    assert!(
        took < Duration::from_secs(3),
        "{took:?}: as if B's counts had expired instead of being taken out"
    );
    assert!(cluster.nodes[1]
        .process
        .stderr()
        .contains("left the cluster"));
    cluster.nodes[0].assert_sound();
}

/// The failover a cluster is for: a node dies (SIGKILL) in the middle of a
/// stream, and its clients reconnect to the other nodes and resume from
/// the last `seq` they saw. Each ends with every message once, in order.
#[test]
fn clients_of_a_killed_node_resume_on_the_others_with_nothing_lost_or_repeated() {
    let mut cluster = Cluster::start(3, &[]);
    create_topic(cluster.nodes[0].addr(), "f");
    cluster.wait_listed("f");
    let mut first_legs = Vec::new();
    let mut epochs = HashSet::new();
    for i in 0..4 {
        let (collector, ack) =
            Collector::subscribe(&format!("c{i}"), cluster.nodes[2].client(), "f");
        epochs.insert(ack["epoch"].as_str().expect("an epoch").to_string());
        first_legs.push(collector);
    }
    assert_eq!(epochs.len(), 1);
    let epoch = epochs.into_iter().next().unwrap();
    let publishers = streaming_publishers(&cluster.nodes[..2], "f", Duration::from_millis(1), 100);

    cluster.nodes[2].process.child.kill().unwrap();
    let mut second_legs = Vec::new();
    for (i, leg) in first_legs.into_iter().enumerate() {
        leg.wait_until("the connection lost", WAIT, |seen| {
            seen.last()
                .is_some_and(|v| v["type"] == "closed" || v["type"] == "read_error")
        });
        let who = leg.name.clone();
        let before = runs(&leg.finish(), "f");
        assert_eq!(before.len(), 1, "{who}: no topic_reset expected");
        let before = before.into_iter().next().unwrap().1;
        assert_consecutive(&who, &before, 1);
        let last_seen = before.last().map_or(0, |(seq, _)| *seq);
        assert!(last_seen > 0, "{who} saw the stream before the node died");
        eprintln!("{who}: 1 to {last_seen} before the node died");
        // Half of them to each surviving node.
        let mut client = cluster.nodes[i % 2].client();
        client.send(json!({"type":"subscribe","topic":"f","client_id":who,
            "since_seq":last_seen,"epoch":epoch,"request_id":"resume"}));
        let ack = client.expect("ack");
        assert_eq!(
            (ack["recovered"].as_bool(), ack["epoch"].as_str()),
            (Some(true), Some(epoch.as_str())),
            "{who}: {ack}"
        );
        second_legs.push((before, Collector::start(&who, client)));
    }
    let sent = stop_after(publishers, 100);
    let (befores, collectors): (Vec<_>, Vec<_>) = second_legs.into_iter().unzip();
    let last = last_publish(&cluster.nodes[0], "f", &collectors);
    eprintln!("{last} messages in all");
    let acked = acked_by_seq(&sent);
    for (before, collector) in befores.into_iter().zip(collectors) {
        let who = collector.name.clone();
        let after = runs(&collector.finish(), "f");
        assert_eq!(
            after.len(),
            1,
            "{who}: no topic_reset expected after the resume"
        );
        let mut events = before;
        events.extend(after.into_iter().next().unwrap().1);
        assert_consecutive(&who, &events, 1);
        assert_eq!(events.len() as u64, last, "{who}: 1 to {last}");
        assert_acked_delivered(&who, &events, &acked);
    }
    cluster.nodes[0].assert_sound();
    cluster.nodes[1].assert_sound();
}

/// A node whose subscription is lost for longer than the ring covers:
/// its subscribers are told with `topic_reset` (same epoch, `last_seq`
/// the last message it cannot give), and events go on after it, with no
/// gap; the other nodes' subscribers miss nothing.
#[test]
fn a_gap_the_ring_no_longer_covers_is_announced_with_topic_reset() {
    let mut cluster = Cluster::start(3, &[("RING_BUFFER_SIZE", "10")]);
    create_topic(cluster.nodes[0].addr(), "s");
    cluster.wait_listed("s");
    let (collectors, epoch) = subscribe_everywhere(&cluster, "s", 1);
    let mut publisher = cluster.nodes[0].client();
    let mut acked = BTreeMap::new();
    let mut publish = |publisher: &mut Client, i: u64| {
        let id = format!("m{i}");
        assert_eq!(publisher.publish("s", &id, json!(i))["seq"], i);
        acked.insert(i, id);
    };
    for i in 1..=20 {
        publish(&mut publisher, i);
    }
    for collector in &collectors {
        collector.wait_for_seq("s", 20, WAIT);
    }

    // C stops; every subscription is dropped; A and B take theirs again
    // before 40 more messages; C, when it goes on, finds 51 to 60 held.
    let before = pubsub_client_ids(&cluster.redis);
    cluster.nodes[2].pause();
    let killed: i64 = cluster
        .redis
        .query(redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub"));
    assert_eq!(killed, 3);
    eventually("A and B subscribed again", || {
        let now = pubsub_client_ids(&cluster.redis);
        now.len() == 2 && now.is_disjoint(&before)
    });
    cluster.nodes[0].wait_ready(WAIT);
    cluster.nodes[1].wait_ready(WAIT);
    for i in 21..=60 {
        publish(&mut publisher, i);
    }
    cluster.nodes[2].resume();
    // Subscribed again, then caught up (ready): 61 comes after the repair.
    eventually("C subscribed again", || {
        pubsub_client_ids(&cluster.redis).len() == 3
    });
    cluster.nodes[2].wait_ready(WAIT);
    publish(&mut publisher, 61);

    for collector in collectors {
        collector.wait_for_seq("s", 61, WAIT);
        let who = collector.name.clone();
        let runs = runs(&collector.finish(), "s");
        if who.starts_with('c') {
            assert_eq!(runs.len(), 2, "{who}: one topic_reset");
            let reset = runs[1].0.as_ref().unwrap();
            assert_eq!(
                (reset["epoch"].as_str(), reset["last_seq"].as_u64()),
                (Some(epoch.as_str()), Some(50)),
                "{who}: {reset}"
            );
            assert_consecutive(&who, &runs[0].1, 1);
            assert_eq!(runs[0].1.len(), 20, "{who}");
            assert_consecutive(&who, &runs[1].1, 51);
            let after_reset: BTreeMap<u64, String> =
                acked.range(51..).map(|(s, id)| (*s, id.clone())).collect();
            assert_acked_delivered(&who, &runs[1].1, &after_reset);
        } else {
            assert_eq!(runs.len(), 1, "{who}: no topic_reset");
            assert_consecutive(&who, &runs[0].1, 1);
            assert_eq!(runs[0].1.len(), 61, "{who}");
            assert_acked_delivered(&who, &runs[0].1, &acked);
        }
    }
    let c = &cluster.nodes[2];
    assert!(
        c.process.stderr().contains("topic reset"),
        "{}",
        c.process.stderr()
    );
    if let Some(resets) = c.metric("pubsub_backplane_topic_resets_total") {
        assert!(resets >= 1.0, "node c counted no topic reset");
    }
    cluster.assert_sound();
}

/// What every node does right after Redis is killed: requests are refused
/// `UNAVAILABLE` within a second (WebSocket and REST), `/readyz` and
/// `/health` say the backplane is down, connections stay open.
fn assert_refused_while_down(cluster: &mut Cluster, collectors: &[Collector], topic: &str) {
    let (a, b, c) = (&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]);
    let mut probe = c.client();
    let asked = Instant::now();
    probe.send(json!({"type":"publish","topic":topic,"message":{"id":"probe","payload":1},"request_id":"probe"}));
    let reply = probe.expect("error");
    let ws_took = asked.elapsed();
    assert_eq!(
        (
            reply["error"]["code"].as_str(),
            reply["request_id"].as_str()
        ),
        (Some("UNAVAILABLE"), Some("probe")),
        "{reply}"
    );
    let asked = Instant::now();
    assert_eq!(
        rest_publish(a.addr(), topic, "probe"),
        Err((503, "UNAVAILABLE".into()))
    );
    let rest_took = asked.elapsed();
    let (status, body) = http_json(
        b.addr(),
        "POST",
        "/topics",
        Some(r#"{"name":"another"}"#),
        &[],
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("UNAVAILABLE")),
        "{body}"
    );
    eprintln!(
        "UNAVAILABLE after Redis died: WebSocket publish {ws_took:?}, REST publish {rest_took:?}"
    );
    assert!(
        ws_took < ANSWER_LIMIT && rest_took < ANSWER_LIMIT,
        "{ws_took:?}, {rest_took:?}"
    );
    probe.ping("probe-alive");
    for node in &cluster.nodes {
        eventually(&format!("node {} not ready", node.id), || {
            let (status, body) = node.readyz();
            status == 503 && body["status"] == "backplane_down"
        });
        assert_eq!(node.backplane(), "down");
    }
    for (i, collector) in collectors.iter().enumerate() {
        collector.ping(&format!("while-down-{i}"), ANSWER_LIMIT);
    }
    cluster.assert_sound();
}

/// The publishes sent after Redis died and answered before it was back
/// are all `UNAVAILABLE`, each within a second; returns how many. (One
/// sent just before may still be acked after: Redis ran it, and its reply
/// was on its way.)
fn assert_refusals(sent: &[Sent], died: Instant, back: Instant) -> usize {
    let during: Vec<&Sent> = sent
        .iter()
        .filter(|s| s.answered - s.latency > died && s.answered < back)
        .collect();
    for s in &during {
        assert_eq!(s.outcome, Err("UNAVAILABLE".to_string()), "{s:?}");
        assert!(
            s.latency < ANSWER_LIMIT,
            "answered after {:?}: {s:?}",
            s.latency
        );
    }
    let slowest = during.iter().map(|s| s.latency).max().unwrap_or_default();
    eprintln!(
        "{} publishes refused while Redis was down, the slowest after {slowest:?}",
        during.len()
    );
    during.len()
}

#[test]
fn redis_killed_and_restarted_without_its_data_resets_the_topics() {
    let mut cluster = Cluster::start(3, &[]);
    create_topic(cluster.nodes[0].addr(), "s");
    cluster.wait_listed("s");
    let (collectors, epoch) = subscribe_everywhere(&cluster, "s", 1);
    let publisher = paced_publisher(&cluster.nodes[1], "s", Duration::from_millis(2));
    publisher.wait_acked(100, WAIT);

    cluster.redis.kill();
    let died = Instant::now();
    assert_refused_while_down(&mut cluster, &collectors, "s");
    let before = publisher.sent();
    cluster.redis.restart();
    let restarted = Instant::now();
    cluster.wait_ready(WAIT);
    eprintln!(
        "every node ready {:?} after Redis restarted",
        restarted.elapsed()
    );

    // Every subscriber is told, with the topic's one new epoch.
    let mut new_epochs = HashSet::new();
    for collector in &collectors {
        collector.wait_until("topic_reset", WAIT, |seen| runs(seen, "s").len() > 1);
        let reset = runs(&collector.seen(), "s")[1].0.clone().unwrap();
        assert_eq!(reset["last_seq"], 0, "{reset}");
        new_epochs.insert(reset["epoch"].as_str().unwrap().to_string());
    }
    assert_eq!(new_epochs.len(), 1, "{new_epochs:?}");
    assert!(
        !new_epochs.contains(&epoch),
        "a new epoch after the data was lost"
    );
    let new_epoch = new_epochs.into_iter().next().unwrap();
    for node in &cluster.nodes {
        let (status, detail) = http_json(node.addr(), "GET", "/topics/s", None, &[]);
        assert_eq!(
            (status, detail["epoch"].as_str()),
            (200, Some(new_epoch.as_str())),
            "{detail}"
        );
    }

    publisher.wait_acked(50, WAIT);
    let sent = publisher.finish();
    let last = last_publish(&cluster.nodes[2], "s", &collectors);
    assert_refusals(&sent, died, restarted);
    // Sent before Redis died: the old data set's (even if answered after).
    let (old, new): (Vec<Sent>, Vec<Sent>) = sent
        .into_iter()
        .partition(|s| s.answered - s.latency < died);
    let (old, new) = (acked_by_seq(&old), acked_by_seq(&new));
    assert_eq!(new.keys().next(), Some(&1), "seq starts again at 1");
    assert!(
        before.len() > old.len(),
        "the publisher was refused while Redis was down"
    );
    for collector in collectors {
        let who = collector.name.clone();
        let runs = runs(&collector.finish(), "s");
        assert_eq!(runs.len(), 2, "{who}: one topic_reset");
        // Without persistence an acked message may be lost with Redis
        // (Redis can die between answering the publisher and writing to the
        // subscriptions); the topic_reset says so. What did arrive has no
        // gap, and is what was acked at that seq.
        assert_consecutive(&who, &runs[0].1, 1);
        let upto = runs[0].1.last().map_or(0, |e| e.0);
        let delivered_old: BTreeMap<u64, String> =
            old.range(..=upto).map(|(s, id)| (*s, id.clone())).collect();
        assert_acked_delivered(&who, &runs[0].1, &delivered_old);
        eprintln!(
            "{who}: {} acked before Redis died and lost with it",
            old.len() - delivered_old.len()
        );
        assert_consecutive(&who, &runs[1].1, 1);
        assert_eq!(runs[1].1.last().map(|e| e.0), Some(last), "{who}");
        assert_acked_delivered(&who, &runs[1].1, &new);
    }
    cluster.assert_sound();
}

#[test]
fn redis_killed_and_restarted_with_aof_loses_no_acked_message() {
    let mut cluster = Cluster::on(RedisServer::start_with_aof(), 3, &[]);
    create_topic(cluster.nodes[0].addr(), "s");
    cluster.wait_listed("s");
    let (collectors, epoch) = subscribe_everywhere(&cluster, "s", 1);
    let publishers = streaming_publishers(&cluster.nodes[..2], "s", Duration::from_millis(2), 100);

    cluster.redis.kill();
    let died = Instant::now();
    assert_refused_while_down(&mut cluster, &collectors, "s");
    cluster.redis.restart();
    let restarted = Instant::now();
    cluster.wait_ready(WAIT);
    eprintln!(
        "every node ready {:?} after Redis restarted",
        restarted.elapsed()
    );
    let sent = stop_after(publishers, 50);
    assert_refusals(&sent, died, restarted);
    let last = last_publish(&cluster.nodes[2], "s", &collectors);
    for node in &cluster.nodes {
        let (_, detail) = http_json(node.addr(), "GET", "/topics/s", None, &[]);
        assert_eq!(
            detail["epoch"],
            epoch.as_str(),
            "the epoch survives: {detail}"
        );
    }
    assert_every_subscriber_saw_all(&cluster, collectors, "s", last, &acked_by_seq(&sent));
    cluster.assert_sound();
}

#[test]
fn redis_paused_for_two_seconds_leaves_every_sequence_contiguous() {
    let mut cluster = Cluster::start(3, &[]);
    create_topic(cluster.nodes[0].addr(), "s");
    cluster.wait_listed("s");
    let (collectors, _) = subscribe_everywhere(&cluster, "s", 1);
    let publishers = streaming_publishers(&cluster.nodes, "s", Duration::from_millis(2), 50);

    cluster.redis.pause();
    let paused = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    cluster.redis.resume();
    let resumed = Instant::now();
    cluster.wait_ready(WAIT);
    eprintln!(
        "every node ready {:?} after Redis resumed",
        resumed.elapsed()
    );
    let sent = stop_after(publishers, 50);
    // The property is on what was acked and delivered; report the rest.
    let refused: Vec<&Sent> = sent.iter().filter(|s| s.outcome.is_err()).collect();
    let slowest = refused.iter().map(|s| s.latency).max().unwrap_or_default();
    eprintln!(
        "{} publishes refused around the pause ({:?} long), the slowest after {slowest:?}",
        refused.len(),
        resumed - paused
    );
    for s in &refused {
        assert_eq!(s.outcome, Err("UNAVAILABLE".to_string()), "{s:?}");
        // The request timeout (0.9 s), and slack for a loaded machine.
        assert!(s.latency < ANSWER_LIMIT + ANSWER_LIMIT / 2, "{s:?}");
    }
    let last = last_publish(&cluster.nodes[1], "s", &collectors);
    assert_every_subscriber_saw_all(&cluster, collectors, "s", last, &acked_by_seq(&sent));
    cluster.assert_sound();
}

/// The ids of Redis's pub/sub connections (one per node's event thread).
fn pubsub_client_ids(redis: &RedisServer) -> HashSet<u64> {
    let list: String = redis.query(redis::cmd("CLIENT").arg("LIST").arg("TYPE").arg("pubsub"));
    list.lines()
        .filter_map(|line| line.strip_prefix("id=")?.split(' ').next()?.parse().ok())
        .collect()
}

fn pubsub_clients(redis: &RedisServer) -> usize {
    pubsub_client_ids(redis).len()
}

/// Every node in `nodes` logged a gap filled from the ring and, if it
/// exports `pubsub_backplane_gaps_repaired_total` (the backplane metrics),
/// counted it.
fn assert_gaps_repaired(nodes: &[&Node]) {
    for node in nodes {
        let stderr = node.process.stderr();
        assert!(
            stderr.contains("gap filled from the ring"),
            "node {} logged no repair:\n{stderr}",
            node.id
        );
        match node.metric("pubsub_backplane_gaps_repaired_total") {
            Some(repaired) => assert!(repaired >= 1.0, "node {} counted no repair", node.id),
            None => eprintln!(
                "node {}: no pubsub_backplane_gaps_repaired_total yet; not checked",
                node.id
            ),
        }
    }
}

#[test]
fn a_killed_subscription_is_repaired_from_the_ring() {
    let mut cluster = Cluster::start(3, &[]);
    create_topic(cluster.nodes[0].addr(), "s");
    cluster.wait_listed("s");
    let (collectors, _) = subscribe_everywhere(&cluster, "s", 1);
    let publishers = streaming_publishers(&cluster.nodes[..2], "s", Duration::from_millis(1), 100);
    // Each time, every node subscribes again at once (the back-off starts
    // over after a good connection) and repairs the gap.
    let mut before = pubsub_client_ids(&cluster.redis);
    assert_eq!(before.len(), 3);
    for round in 0..5 {
        let killed: i64 = cluster
            .redis
            .query(redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub"));
        let at = Instant::now();
        assert_eq!(killed, 3, "round {round}: one subscription per node");
        let deadline = at + WAIT;
        let after = loop {
            let now = pubsub_client_ids(&cluster.redis);
            if now.len() == 3 && now.is_disjoint(&before) {
                break now;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: not subscribed again: {now:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let took = at.elapsed();
        eprintln!("round {round}: every node subscribed again after {took:?}");
        assert!(
            took < ANSWER_LIMIT,
            "round {round}: subscribed again after {took:?}"
        );
        before = after;
        for publisher in &publishers {
            publisher.wait_acked(50, WAIT);
        }
    }
    let sent = stop_after(publishers, 0);
    let refused: Vec<&Sent> = sent.iter().filter(|s| s.outcome.is_err()).collect();
    assert!(
        refused.is_empty(),
        "requests do not use the subscription: {refused:?}"
    );
    let last = last_publish(&cluster.nodes[2], "s", &collectors);
    assert_every_subscriber_saw_all(&cluster, collectors, "s", last, &acked_by_seq(&sent));
    assert_gaps_repaired(&cluster.nodes.iter().collect::<Vec<_>>());
    cluster.assert_sound();
}

#[test]
fn a_node_paused_past_the_output_buffer_limit_repairs_from_the_ring() {
    let mut cluster = Cluster::start(3, &[("RING_BUFFER_SIZE", "100000")]);
    let _: () = cluster.redis.query(
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("client-output-buffer-limit")
            .arg("pubsub 64kb 32kb 1"),
    );
    create_topic(cluster.nodes[0].addr(), "s");
    cluster.wait_listed("s");
    let (collectors, _) = subscribe_everywhere(&cluster, "s", 1);
    // Big messages, so that Redis's output buffer for the paused node
    // overflows soon after the kernel's socket buffers are full.
    let publishers: Vec<Publisher> = cluster.nodes[..2]
        .iter()
        .map(|node| {
            Publisher::start(
                node.client(),
                PublisherPlan {
                    topic: "s",
                    prefix: &node.id,
                    window: 10,
                    pause: Duration::from_millis(1),
                    limit: 1_000_000,
                    payload_bytes: 16 * 1024,
                },
            )
        })
        .collect();
    for publisher in &publishers {
        publisher.wait_acked(20, WAIT);
    }

    let victim = &cluster.nodes[2];
    victim.pause();
    let paused = Instant::now();
    let deadline = paused + Duration::from_secs(15);
    while pubsub_clients(&cluster.redis) == 3 {
        if Instant::now() > deadline {
            victim.resume();
            panic!("Redis did not drop the paused node's subscription within 15 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let dropped = paused.elapsed();
    for publisher in &publishers {
        publisher.wait_acked(20, WAIT);
    }
    victim.resume();
    eprintln!("Redis dropped the paused node's subscription after {dropped:?}");
    eventually("the node subscribed again", || {
        pubsub_clients(&cluster.redis) == 3
    });
    let sent = stop_after(publishers, 20);
    let last = last_publish(&cluster.nodes[0], "s", &collectors);
    eprintln!("{last} messages of 16 KiB");
    assert_every_subscriber_saw_all(&cluster, collectors, "s", last, &acked_by_seq(&sent));
    assert_gaps_repaired(&[&cluster.nodes[2]]);
    cluster.assert_sound();
}

#[test]
fn a_gap_longer_than_the_subscriber_queue_is_filled_without_a_slow_consumer() {
    // Node c connects as its own Redis user, so that its subscription can
    // be refused for a while (its ACL loses the channels) while the others
    // publish a gap thirty times the default queue of 100 events.
    let redis = RedisServer::start();
    let _: () = redis.query(
        redis::cmd("ACL")
            .arg("SETUSER")
            .arg("victim")
            .arg("on")
            .arg(">secret")
            .arg("~*")
            .arg("&*")
            .arg("+@all"),
    );
    let env = [
        ("SUBSCRIBER_QUEUE_SIZE", "100"),
        ("RING_BUFFER_SIZE", "10000"),
    ];
    let victim_url = redis
        .url()
        .replacen("redis://", "redis://victim:secret@", 1);
    let mut cluster = Cluster::on(redis, 2, &env);
    cluster.nodes.push(Node::start(&victim_url, "c", &env));
    create_topic(cluster.nodes[0].addr(), "s");
    cluster.wait_listed("s");
    // Only on node c: the others get the burst live, and a live burst may
    // well outrun a queue of 100.
    let (collector, _) = Collector::subscribe("c0", cluster.nodes[2].client(), "s");
    let collectors = vec![collector];
    rest_publish(cluster.nodes[0].addr(), "s", "before").expect("acked");

    let _: () = cluster.redis.query(
        redis::cmd("ACL")
            .arg("SETUSER")
            .arg("victim")
            .arg("resetchannels"),
    );
    let _: i64 = cluster.redis.query(
        redis::cmd("CLIENT")
            .arg("KILL")
            .arg("USER")
            .arg("victim")
            .arg("TYPE")
            .arg("pubsub"),
    );
    eventually("node c's subscription gone", || {
        pubsub_clients(&cluster.redis) == 2
    });
    let gap = 3000;
    let sent = Publisher::start(
        cluster.nodes[0].client(),
        PublisherPlan {
            topic: "s",
            prefix: "a",
            window: 50,
            pause: Duration::ZERO,
            limit: gap,
            payload_bytes: 64,
        },
    )
    .complete(WAIT);
    assert_eq!(sent.iter().filter(|s| s.outcome.is_ok()).count(), gap);
    assert_eq!(
        pubsub_clients(&cluster.redis),
        2,
        "node c stayed unsubscribed"
    );

    let _: () = cluster.redis.query(
        redis::cmd("ACL")
            .arg("SETUSER")
            .arg("victim")
            .arg("allchannels"),
    );
    eventually("node c subscribed again", || {
        pubsub_clients(&cluster.redis) == 3
    });
    let last = last_publish(&cluster.nodes[0], "s", &collectors);
    assert_eq!(last, gap as u64 + 2);
    assert_every_subscriber_saw_all(&cluster, collectors, "s", last, &acked_by_seq(&sent));
    assert_gaps_repaired(&[&cluster.nodes[2]]);
    assert_eq!(
        cluster.nodes[2].metric("pubsub_slow_consumer_disconnects_total"),
        Some(0.0),
        "node c cut no subscriber"
    );
    cluster.assert_sound();
}

/// `rediss://`: nodes reach Redis over TLS, check its certificate against
/// `REDIS_CA_FILE` and show their own (`REDIS_CLIENT_CERT_FILE`,
/// `REDIS_CLIENT_KEY_FILE`), as a Redis with `tls-auth-clients yes` asks.
/// A node without that CA (the system's CAs do not know it), or without a
/// certificate, does not get through, says why, and stays `backplane_down`.
#[test]
fn nodes_reach_redis_over_tls_and_check_its_certificate() {
    let redis = RedisServer::start_with_tls();
    let tls_port = redis.tls_port.unwrap();
    let ca = redis.ca_file();
    let (cert, key) = redis.client_files();
    let (ca, cert, key) = (
        ca.to_str().unwrap(),
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
    );
    let env = [
        ("REDIS_CA_FILE", ca),
        ("REDIS_CLIENT_CERT_FILE", cert),
        ("REDIS_CLIENT_KEY_FILE", key),
    ];
    let mut a = Node::start(&redis.tls_url(), "a", &env);
    let mut b = Node::start(&redis.tls_url(), "b", &env);
    create_topic(a.addr(), "t");
    eventually("t listed on b", || subscribers(b.addr(), "t").is_some());
    let (collector, _) = Collector::subscribe("b0", b.client(), "t");
    let seq = rest_publish(a.addr(), "t", "over-tls").expect("acked");
    collector.wait_for_seq("t", seq, WAIT);

    // Every connection but this test's own is on the TLS port.
    let list: String = redis.query(redis::cmd("CLIENT").arg("LIST"));
    let others: Vec<&str> = list
        .lines()
        .filter(|line| !line.contains("cmd=client|list"))
        .collect();
    assert!(others.len() >= 4, "both nodes' connections: {list}");
    let tls_laddr = format!("laddr=127.0.0.1:{tls_port} ");
    assert!(
        others.iter().all(|line| line.contains(&tls_laddr)),
        "a node connected without TLS: {list}"
    );

    let mut strangers = Vec::new();
    for (id, env, why) in [
        ("c", vec![env[1], env[2]], "UnknownIssuer"),
        ("d", vec![env[0]], "CertificateRequired"),
    ] {
        let node = Node::spawn(&redis.tls_url(), id, &env);
        eventually(&format!("node {id} to say why it cannot connect"), || {
            node.process
                .stderr()
                .lines()
                .any(|line| line.contains("reconnecting") && line.contains(why))
        });
        assert_eq!(node.readyz(), (503, json!({"status": "backplane_down"})));
        strangers.push(node);
    }
    for node in [&mut a, &mut b].into_iter().chain(strangers.iter_mut()) {
        node.assert_sound();
    }
}

#[test]
fn a_bad_redis_url_stops_the_broker_with_exit_2() {
    for url in [
        "http://x",
        "redis://",
        "redis://127.0.0.1:port",
        "127.0.0.1:6379",
    ] {
        let (code, stderr) = run_to_exit(&[("REDIS_URL", url), ("NODE_ID", "a")]);
        assert_eq!(code, Some(2), "REDIS_URL={url}: {stderr}");
        assert!(stderr.contains("REDIS_URL"), "REDIS_URL={url}: {stderr}");
    }
}

#[test]
fn an_unreachable_redis_is_waited_for() {
    let port = free_port();
    let node = Node::spawn(&format!("redis://127.0.0.1:{port}"), "a", &[]);
    let (status, body) = node.readyz();
    assert_eq!(
        (status, body["status"].as_str()),
        (503, Some("backplane_down")),
        "{body}"
    );
    assert_eq!(node.backplane(), "down");
    let asked = Instant::now();
    let (status, body) = http_json(node.addr(), "POST", "/topics", Some(r#"{"name":"t"}"#), &[]);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("UNAVAILABLE")),
        "{body}"
    );
    assert!(asked.elapsed() < ANSWER_LIMIT);
    let mut client = node.client();
    client.send(
        json!({"type":"publish","topic":"t","message":{"id":"m","payload":1},"request_id":"p"}),
    );
    assert_eq!(client.expect("error")["error"]["code"], "UNAVAILABLE");
    client.ping("still-open");

    let redis = RedisServer::start_on(port);
    let started = Instant::now();
    node.wait_ready(WAIT);
    eprintln!("ready {:?} after Redis started", started.elapsed());
    assert_eq!(node.backplane(), "up");
    create_topic(node.addr(), "t");
    assert_eq!(client.subscribe("t", 0)["topic"], "t");
    let other = Node::start(&redis.url(), "b", &[]);
    eventually("the second node lists t", || {
        subscribers(other.addr(), "t") == Some(1)
    });
    assert_eq!(other.client().publish("t", "m1", json!(1))["seq"], 1);
    assert_eq!(client.expect("event")["message"]["id"], "m1");
}

#[test]
fn pipelined_publishes_are_answered_in_request_order() {
    // A client that sends many publishes without waiting: they are in
    // flight to Redis together, and every reply (a ping and a subscribe
    // among them) comes back in the order of the requests.
    let mut cluster = Cluster::start(2, &[]);
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    create_topic(a.addr(), "pipe");
    cluster.wait_listed("pipe");
    let (watcher, _) = Collector::subscribe("watcher", b.client(), "pipe");
    let mut client = a.client();
    let total = 600u64;
    let mut expected = Vec::new();
    for i in 1..=total {
        client.send(json!({"type":"publish","topic":"pipe","message":{"id":format!("m{i}"),"payload":i},"request_id":format!("p{i}")}));
        expected.push(format!("p{i}"));
        if i == 300 {
            client.send(json!({"type":"ping","request_id":"ping"}));
            client.send(
                json!({"type":"subscribe","topic":"pipe","client_id":"c","request_id":"sub"}),
            );
            expected.extend(["ping".to_string(), "sub".to_string()]);
        }
    }
    let mut replies = Vec::new();
    let mut events = Vec::new();
    while replies.len() < expected.len() {
        let reply = client.recv();
        if reply["type"] == "event" {
            events.push(reply["seq"].as_u64().unwrap());
        } else {
            replies.push(reply);
        }
    }
    let ids: Vec<&str> = replies
        .iter()
        .map(|r| r["request_id"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(ids, expected, "replies out of request order");
    let seqs: Vec<u64> = replies
        .iter()
        .filter(|r| {
            r["request_id"]
                .as_str()
                .is_some_and(|id| id.starts_with("p") && id != "ping")
        })
        .map(|r| r["seq"].as_u64().expect("a publish ack carries its seq"))
        .collect();
    assert_eq!(seqs, (1..=total).collect::<Vec<_>>());
    // The subscribe took effect once the publishes before it were acked,
    // but in cluster mode this node applies their events when Redis sends
    // them, so it may have applied fewer: the subscriber then gets the rest
    // live, each once, in order.
    let sub = &replies[300 + 1];
    let from = sub["last_seq"]
        .as_u64()
        .expect("a subscribe ack carries last_seq");
    assert!(from <= 300, "the subscribe came after 300 publishes: {sub}");
    while events.last().is_none_or(|&last| last < total) {
        let event = client.expect("event");
        events.push(event["seq"].as_u64().unwrap());
    }
    assert_eq!(events, (from + 1..=total).collect::<Vec<_>>());
    watcher.wait_until("every event", WAIT, |seen| {
        seen.iter().filter(|v| v["type"] == "event").count() as u64 == total
    });
    cluster.assert_sound();
}

#[test]
fn a_resume_on_a_node_that_is_behind_gets_nothing_twice() {
    // The client saw up to 25 on A; C has applied only up to 20 when the
    // resume reaches it (C was paused and its subscription cut). C answers
    // recovered, and the client gets 26 next, not 21..25 again.
    let mut cluster = Cluster::start(2, &[]);
    let (a, c) = (&cluster.nodes[0], &cluster.nodes[1]);
    create_topic(a.addr(), "behind");
    cluster.wait_listed("behind");
    let (watcher, ack) = Collector::subscribe("watcher", c.client(), "behind");
    let epoch = ack["epoch"].as_str().unwrap().to_string();
    let mut publisher = a.client();
    for i in 1..=20 {
        assert_eq!(
            publisher.publish("behind", &format!("m{i}"), json!(i))["seq"],
            i
        );
    }
    watcher.wait_for_seq("behind", 20, WAIT);
    let mut resumed = c.client();
    c.pause();
    for id in pubsub_client_ids(&cluster.redis) {
        let _: redis::Value = cluster
            .redis
            .query(redis::cmd("CLIENT").arg("KILL").arg("ID").arg(id));
    }
    for i in 21..=25 {
        assert_eq!(
            publisher.publish("behind", &format!("m{i}"), json!(i))["seq"],
            i
        );
    }
    resumed.send(
        json!({"type":"subscribe","topic":"behind","client_id":"r","since_seq":25,"epoch":epoch}),
    );
    c.resume();
    let ack = resumed.expect("ack");
    assert_eq!(
        (ack["recovered"].as_bool(), ack["epoch"].as_str()),
        (Some(true), Some(epoch.as_str())),
        "{ack}"
    );
    assert_eq!(publisher.publish("behind", "m26", json!(26))["seq"], 26);
    let next = resumed.expect("event");
    assert_eq!(
        next["seq"], 26,
        "a message the client had came again: {next}"
    );
    cluster.assert_sound();
}
