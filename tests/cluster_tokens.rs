//! Tokens in cluster mode: `POST /disconnect` on one node closes the
//! user's connections on every node, and a publish the token does not
//! grant (over WebSocket or REST) never reaches Redis.
//!
//! `redis-server` must be on PATH (Debian package `redis-server`).

mod common;

use common::cluster::*;
use common::tokens::*;
use common::*;
use serde_json::json;

const TOKENS: &[(&str, &str)] = &[("TOKEN_HMAC_SECRET", SECRET), ("API_KEY", "k")];

#[test]
fn disconnect_on_one_node_closes_the_users_connections_on_every_node() {
    let mut cluster = Cluster::start(3, TOKENS);
    let alice = hs256(&claims("alice", &["*"], &[]));
    let bob = hs256(&claims("bob", &["*"], &[]));
    let mut alices: Vec<Client> = cluster
        .nodes
        .iter()
        .map(|node| connect_with(&format!("{}?token={alice}", node.ws_url()), &[]).unwrap())
        .collect();
    let mut bobs: Vec<Client> = cluster
        .nodes
        .iter()
        .map(|node| connect_with(&format!("{}?token={bob}", node.ws_url()), &[]).unwrap())
        .collect();
    for client in alices.iter_mut().chain(bobs.iter_mut()) {
        client.ping("connected");
    }
    disconnect_user(cluster.nodes[1].addr(), "k", "alice");
    for (i, client) in alices.iter_mut().enumerate() {
        let (code, _, seen) = client.read_until_close();
        assert_eq!(code, Some(1008), "node {i}: {seen:?}");
        assert!(
            seen.iter().any(|m| m["msg"] == "disconnected"),
            "node {i}: {seen:?}"
        );
    }
    for client in &mut bobs {
        client.ping("bob-stays");
    }
    cluster.assert_sound();
}

#[test]
fn a_forbidden_publish_never_reaches_redis() {
    let mut cluster = Cluster::start(2, TOKENS);
    let node = &cluster.nodes[0];
    let key = [("X-API-Key", "k")];
    let (status, _) = http_json(
        node.addr(),
        "POST",
        "/topics",
        Some(r#"{"name":"locked"}"#),
        &key,
    );
    assert_eq!(status, 201);
    let reader = hs256(&claims("reader", &["locked"], &[]));
    let mut client = connect_with(&format!("{}?token={reader}", node.ws_url()), &[]).unwrap();
    for i in 0..20 {
        client.send(
            json!({"type":"publish","topic":"locked","message":{"id":format!("m{i}"),"payload":i}}),
        );
        assert_eq!(client.expect("error")["error"]["code"], "FORBIDDEN");
    }
    let auth = format!("Bearer {reader}");
    let (status, _) = http_json(
        node.addr(),
        "POST",
        "/topics/locked/messages",
        Some(r#"{"id":"r","payload":1}"#),
        &[("Authorization", auth.as_str())],
    );
    assert_eq!(status, 403);
    let seq: Option<u64> = cluster
        .redis
        .query(redis::cmd("GET").arg("pubsub:t:{locked}:seq"));
    let held: u64 = cluster
        .redis
        .query(redis::cmd("XLEN").arg("pubsub:t:{locked}:ring"));
    assert_eq!(
        (seq, held),
        (None, 0),
        "nothing of the refused publishes is in Redis"
    );
    cluster.assert_sound();
}
