//! Cluster mode's "readiness is the truth": a node whose backplane is
//! healthy never refuses a request with `UNAVAILABLE`, not in its first
//! milliseconds and not on the first request after Redis came back; and a
//! resume beyond a topic's cluster-wide `last_seq` is not recovered, on a
//! node that has applied every message as on one that is behind.
//!
//! `redis-server` must be on PATH (Debian package `redis-server`).

mod common;

use common::cluster::*;
use common::*;
use serde_json::json;

/// `POST /topics/{topic}/messages` on a new connection: the status and
/// the body.
fn rest_publish(node: &Node, topic: &str, id: &str) -> (u16, serde_json::Value) {
    let body = json!({"id": id, "payload": {"n": id}}).to_string();
    http_json(
        node.addr(),
        "POST",
        &format!("/topics/{topic}/messages"),
        Some(&body),
        &[],
    )
}

#[test]
fn a_node_carries_out_requests_as_soon_as_it_listens() {
    // Each new node is asked at once, the moment it prints `listening on`:
    // a creation (needs the request connection) and a subscribe to a topic
    // another node created (needs the events caught up).
    let redis = RedisServer::start();
    let first = Node::start(&redis.url(), "first", &[]);
    create_topic(first.addr(), "known");
    for round in 0..6 {
        let mut node = Node::spawn(&redis.url(), &format!("n{round}"), &[]);
        let (status, body) = node.readyz();
        assert_eq!(
            status, 200,
            "round {round}: /readyz right after listening: {body}"
        );
        let name = format!("fresh-{round}");
        let (status, body) = http_json(
            node.addr(),
            "POST",
            "/topics",
            Some(&json!({ "name": name }).to_string()),
            &[],
        );
        assert_eq!(status, 201, "round {round}: {body}");
        let mut client = node.client();
        let ack = client.subscribe("known", 0);
        assert_eq!(ack["type"], "ack", "round {round}: {ack}");
        node.assert_sound();
    }
}

#[test]
fn the_first_request_after_redis_restarts_is_carried_out() {
    // Redis killed and started again from its AOF while both nodes' request
    // connections sit idle: once the nodes say ready, the first change on
    // each is carried out, not refused as "lost the backplane".
    let mut cluster = Cluster::on(RedisServer::start_with_aof(), 2, &[]);
    create_topic(cluster.nodes[0].addr(), "t");
    cluster.wait_listed("t");
    let mut sent = 0;
    for round in 0..3 {
        cluster.redis.kill();
        cluster.redis.restart();
        cluster.wait_ready(WAIT);
        for node in &cluster.nodes {
            for _ in 0..2 {
                sent += 1;
                let (status, body) = rest_publish(node, "t", &format!("m{sent}"));
                assert_eq!(
                    (status, body["seq"].as_u64()),
                    (200, Some(sent)),
                    "round {round}, node {}: {body}\n{}",
                    node.id,
                    cluster.warnings()
                );
            }
        }
        let mut client = cluster.nodes[1].client();
        sent += 1;
        let ack = client.publish("t", &format!("m{sent}"), json!(sent));
        assert_eq!(ack["seq"], sent, "round {round}: {ack}");
    }
    cluster.assert_sound();
}

#[test]
fn a_resume_beyond_the_last_seq_is_not_recovered_on_any_node() {
    let mut cluster = Cluster::start(2, &[]);
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    create_topic(a.addr(), "ahead");
    cluster.wait_listed("ahead");
    let (watcher, ack) = Collector::subscribe("watcher", b.client(), "ahead");
    let epoch = ack["epoch"].as_str().unwrap().to_string();
    let mut publisher = a.client();
    for i in 1..=5 {
        assert_eq!(
            publisher.publish("ahead", &format!("m{i}"), json!(i))["seq"],
            i
        );
    }
    watcher.wait_for_seq("ahead", 5, WAIT);
    let mut resumed = Vec::new();
    for node in [a, b] {
        let mut client = node.client();
        client.send(json!({
            "type": "subscribe", "topic": "ahead", "client_id": "r",
            "since_seq": 9, "epoch": epoch, "request_id": "resume"
        }));
        let ack = client.expect("ack");
        assert_eq!(
            (ack["recovered"].as_bool(), ack["last_seq"].as_u64()),
            (Some(false), Some(5)),
            "node {}: {ack}",
            node.id
        );
        resumed.push(client);
    }
    // Live events follow, from the next message on.
    assert_eq!(publisher.publish("ahead", "m6", json!(6))["seq"], 6);
    for client in &mut resumed {
        assert_eq!(client.expect("event")["seq"], 6);
    }
    cluster.assert_sound();
}
