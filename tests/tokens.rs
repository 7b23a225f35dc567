//! Authorization with tokens, from the attacker's side and the user's:
//! every refusal of a token (bad signature, `alg: none`, algorithm
//! confusion, expired, not yet valid, wrong audience or issuer) gets 401
//! and no upgrade; a connection upgraded without one takes only `auth`
//! until it has one, and is closed after the handshake timeout; a token's
//! patterns decide subscribe, publish and every REST read of a topic, and
//! a forbidden topic reveals nothing; a refresh replaces the rights and
//! revokes what they no longer cover; expiry and `POST /disconnect` close
//! with 1008; the publish limit and the allowed origins hold; and every
//! refusal is counted by reason.
//!
//! Long on purpose: one file for the promise "every user gets exactly the
//! topics they may use", each refusal a test of its own.

mod common;

use common::tokens::*;
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A broker that takes HS256 tokens (and the API key `k`).
fn token_broker(extra: &[(&str, &str)]) -> TestBroker {
    let mut vars = vec![("TOKEN_HMAC_SECRET", SECRET), ("API_KEY", "k")];
    vars.extend_from_slice(extra);
    let broker = TestBroker::with(&vars);
    for topic in ["user.42.inbox", "user.43.inbox", "chat", "news"] {
        let (status, _) = http_json(
            broker.addr,
            "POST",
            "/topics",
            Some(&json!({ "name": topic }).to_string()),
            &[("X-API-Key", "k")],
        );
        assert_eq!(status, 201);
    }
    broker
}

/// User 42: reads its own topics and `news`, writes `chat`.
fn user_42() -> Value {
    claims("user-42", &["user.42.*", "news"], &["chat"])
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A bodiless REST request with `token` as its bearer.
fn with_token(addr: std::net::SocketAddr, method: &str, path: &str, token: &str) -> (u16, Value) {
    http_json(
        addr,
        method,
        path,
        None,
        &[("Authorization", &bearer(token))],
    )
}

fn auth_failures(addr: std::net::SocketAddr, reason: &str) -> f64 {
    let response = http(addr, "GET", "/metrics", None, &[("X-API-Key", "k")]);
    let needle = format!("pubsub_auth_failures_total{{reason=\"{reason}\"}} ");
    String::from_utf8(response.body)
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix(&needle)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {needle}"))
}

/// Connects with `?token=`.
fn client_with_token(broker: &TestBroker, token: &str) -> Client {
    connect_with(&format!("{}?token={token}", broker.ws_url()), &[])
        .unwrap_or_else(|status| panic!("upgrade refused with {status}"))
}

#[test]
fn every_bad_token_is_refused_with_401_on_the_upgrade_and_over_rest() {
    let broker = token_broker(&[("TOKEN_AUDIENCE", "pubsub"), ("TOKEN_ISSUER", "backend")]);
    let good = json!({"sub":"u","exp":epoch_secs(600),"aud":"pubsub","iss":"backend","admin":true});
    let with = |changes: Value| {
        let mut claims = good.clone();
        for (k, v) in changes.as_object().unwrap() {
            claims[k] = v.clone();
        }
        claims
    };
    let mut no_exp = good.clone();
    no_exp.as_object_mut().unwrap().remove("exp");
    let bad: Vec<(&str, String, &str)> = vec![
        (
            "another secret",
            hs256_with(&good, "not-the-secret"),
            "invalid",
        ),
        ("alg none", unsigned(&good), "invalid"),
        (
            "RS256 header, HMAC-signed",
            signed_as("RS256", &good, SECRET.as_bytes()),
            "invalid",
        ),
        (
            "EdDSA header, HMAC-signed",
            signed_as("EdDSA", &good, SECRET.as_bytes()),
            "invalid",
        ),
        (
            "expired",
            hs256(&with(json!({"exp": epoch_secs(-60)}))),
            "expired",
        ),
        (
            "not yet valid",
            hs256(&with(json!({"nbf": epoch_secs(120)}))),
            "invalid",
        ),
        (
            "wrong audience",
            hs256(&with(json!({"aud": "other"}))),
            "invalid",
        ),
        (
            "wrong issuer",
            hs256(&with(json!({"iss": "someone"}))),
            "invalid",
        ),
        ("no exp", hs256(&no_exp), "invalid"),
        ("empty sub", hs256(&with(json!({"sub": ""}))), "invalid"),
        ("not a JWT", "not.a.jwt".to_string(), "invalid"),
    ];
    for (what, token, reason) in bad {
        let before = auth_failures(broker.addr, reason);
        assert_eq!(
            connect_with(&broker.ws_url(), &[("Authorization", &bearer(&token))]).err(),
            Some(401),
            "{what}: header"
        );
        assert_eq!(
            connect_with(&format!("{}?token={token}", broker.ws_url()), &[]).err(),
            Some(401),
            "{what}: query"
        );
        let (status, body) = with_token(broker.addr, "GET", "/topics", &token);
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("UNAUTHORIZED")),
            "{what}: {body}"
        );
        assert_eq!(
            auth_failures(broker.addr, reason) - before,
            3.0,
            "{what}: counted as {reason}"
        );
    }
    // The good one passes everywhere, as admin.
    let token = hs256(&good);
    assert!(connect_with(&broker.ws_url(), &[("Authorization", &bearer(&token))]).is_ok());
    let (status, _) = with_token(broker.addr, "GET", "/stats", &token);
    assert_eq!(status, 200);
}

#[test]
fn rest_without_credentials_is_401_missing() {
    let broker = token_broker(&[]);
    let before = auth_failures(broker.addr, "missing");
    let (status, body) = http_json(broker.addr, "GET", "/topics", None, &[]);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("UNAUTHORIZED"))
    );
    assert_eq!(auth_failures(broker.addr, "missing") - before, 1.0);
}

#[test]
fn an_upgrade_without_a_token_takes_only_auth_until_it_has_one() {
    let broker = token_broker(&[]);
    let mut client = broker.client();
    client.send(json!({"type":"ping","request_id":"p1"}));
    let refused = client.expect("error");
    assert_eq!(refused["error"]["code"], "UNAUTHORIZED", "{refused}");
    assert_eq!(refused["request_id"], "p1");
    client.send(json!({"type":"subscribe","topic":"news","client_id":"c","request_id":"s1"}));
    assert_eq!(client.expect("error")["error"]["code"], "UNAUTHORIZED");
    // A bad token in an auth message: UNAUTHORIZED, and the connection stays.
    client.send(json!({"type":"auth","token":unsigned(&user_42()),"request_id":"a0"}));
    let bad = client.expect("error");
    assert_eq!(
        (bad["error"]["code"].as_str(), bad["request_id"].as_str()),
        (Some("UNAUTHORIZED"), Some("a0"))
    );
    client.send(json!({"type":"auth","token":hs256(&user_42()),"request_id":"a1"}));
    let ack = client.expect("ack");
    assert_eq!(
        (
            ack["status"].as_str(),
            ack["sub"].as_str(),
            ack["request_id"].as_str()
        ),
        (Some("ok"), Some("user-42"), Some("a1")),
        "{ack}"
    );
    let expires = ack["expires"].as_str().expect("expires");
    assert!(humantime::parse_rfc3339(expires).is_ok(), "{expires}");
    client.ping("after-auth");
    assert_eq!(client.subscribe("news", 0)["status"], "ok");
}

#[test]
fn a_connection_without_a_token_is_closed_after_the_handshake_timeout() {
    let broker = token_broker(&[("HANDSHAKE_TIMEOUT_SECS", "1")]);
    let started = Instant::now();
    let mut client = broker.client();
    let (code, reason, seen) = client.read_until_close();
    assert_eq!(code, Some(1008), "{reason} {seen:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert!(
        seen.iter().any(|m| m["error"]["code"] == "UNAUTHORIZED"),
        "{seen:?}"
    );
    // One that authenticated in time stays past it.
    let mut kept = broker.client();
    kept.send(json!({"type":"auth","token":hs256(&user_42())}));
    kept.expect("ack");
    std::thread::sleep(Duration::from_millis(1500));
    kept.ping("still-here");
}

#[test]
fn patterns_decide_subscribe_and_publish_and_a_forbidden_topic_reveals_nothing() {
    let broker = token_broker(&[]);
    let mut client = client_with_token(&broker, &hs256(&user_42()));
    assert_eq!(client.subscribe("user.42.inbox", 0)["status"], "ok");
    assert_eq!(client.subscribe("news", 0)["status"], "ok");
    // Forbidden: another user's topic (exists), a topic that does not exist,
    // with replay and resume too: the same answer.
    for (topic, extra) in [
        ("user.43.inbox", json!({})),
        ("no-such-topic", json!({})),
        ("user.43.inbox", json!({"last_n": 5})),
        ("user.43.inbox", json!({"since_seq": 0, "epoch": "x"})),
        ("chat", json!({})),
    ] {
        let mut frame = json!({"type":"subscribe","topic":topic,"client_id":"c","request_id":"s"});
        for (k, v) in extra.as_object().unwrap() {
            frame[k] = v.clone();
        }
        client.send(frame);
        let refused = client.expect("error");
        assert_eq!(
            refused["error"]["code"], "FORBIDDEN",
            "{topic} {extra}: {refused}"
        );
        assert!(
            !refused["error"]["message"]
                .as_str()
                .unwrap()
                .contains("exist"),
            "{refused}"
        );
    }
    client.send(json!({"type":"unsubscribe","topic":"user.43.inbox","client_id":"c"}));
    assert_eq!(client.expect("error")["error"]["code"], "FORBIDDEN");
    // Publish: only to chat.
    assert_eq!(client.publish("chat", "m1", json!(1))["status"], "ok");
    for topic in ["news", "user.42.inbox", "nowhere"] {
        client.send(json!({"type":"publish","topic":topic,"message":{"id":"x","payload":1},"request_id":"p"}));
        let refused = client.expect("error");
        assert_eq!(
            (refused["error"]["code"].as_str(), refused["topic"].as_str()),
            (Some("FORBIDDEN"), Some(topic))
        );
    }
    // Nothing of the refused publishes was published.
    let (_, detail) = http_json(
        broker.addr,
        "GET",
        "/topics/news",
        None,
        &[("X-API-Key", "k")],
    );
    assert_eq!(detail["messages"], 0);
}

#[test]
fn rest_reads_and_writes_follow_the_patterns_and_admin_routes_need_admin() {
    let broker = token_broker(&[]);
    let auth = bearer(&hs256(&user_42()));
    let as_user = [("Authorization", auth.as_str())];
    let (status, list) = http_json(broker.addr, "GET", "/topics", None, &as_user);
    assert_eq!(status, 200);
    let names: Vec<&str> = list["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["chat", "news", "user.42.inbox"],
        "only what a pattern matches"
    );
    assert_eq!(
        http_json(broker.addr, "GET", "/topics/news", None, &as_user).0,
        200
    );
    assert_eq!(
        http_json(broker.addr, "GET", "/topics/news/messages", None, &as_user).0,
        200
    );
    let message = r#"{"id":"m","payload":1}"#;
    assert_eq!(
        http_json(
            broker.addr,
            "POST",
            "/topics/chat/messages",
            Some(message),
            &as_user
        )
        .0,
        200
    );
    for (method, path, body) in [
        ("GET", "/topics/user.43.inbox", None),
        ("GET", "/topics/no-such-topic", None),
        ("GET", "/topics/user.43.inbox/messages", None),
        ("GET", "/topics/no-such-topic/messages?since_seq=0", None),
        ("POST", "/topics/news/messages", Some(message)),
        ("POST", "/topics/no-such-topic/messages", Some(message)),
        ("POST", "/topics", Some(r#"{"name":"mine"}"#)),
        ("DELETE", "/topics/chat", None),
        ("GET", "/stats", None),
        ("GET", "/metrics", None),
        ("POST", "/disconnect", Some(r#"{"sub":"user-43"}"#)),
    ] {
        let (status, body) = http_json(broker.addr, method, path, body, &as_user);
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (403, Some("FORBIDDEN")),
            "{method} {path}: {body}"
        );
    }
    // An admin token may do all of it.
    let admin = bearer(&hs256(
        &json!({"sub":"ops","exp":epoch_secs(600),"admin":true}),
    ));
    let as_admin = [("Authorization", admin.as_str())];
    assert_eq!(
        http_json(
            broker.addr,
            "POST",
            "/topics",
            Some(r#"{"name":"mine"}"#),
            &as_admin
        )
        .0,
        201
    );
    assert_eq!(
        http_json(broker.addr, "GET", "/stats", None, &as_admin).0,
        200
    );
    assert_eq!(
        http_json(broker.addr, "GET", "/topics", None, &as_admin).1["topics"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
}

#[test]
fn a_refresh_replaces_the_rights_and_revokes_what_they_no_longer_cover() {
    let broker = token_broker(&[]);
    let mut client = client_with_token(&broker, &hs256(&user_42()));
    client.subscribe("user.42.inbox", 0);
    client.subscribe("news", 0);
    // Another user's token is refused, and the old rights stay.
    client.send(json!({"type":"auth","token":hs256(&claims("user-43", &["*"], &["*"])),"request_id":"other"}));
    assert_eq!(client.expect("error")["error"]["code"], "UNAUTHORIZED");
    client
        .send(json!({"type":"subscribe","topic":"user.43.inbox","client_id":"c","request_id":"s"}));
    assert_eq!(client.expect("error")["error"]["code"], "FORBIDDEN");
    // The same user, narrower: news is revoked.
    client.send(json!({"type":"auth","token":hs256(&claims("user-42", &["user.42.*"], &[])),"request_id":"r"}));
    assert_eq!(client.expect("ack")["sub"], "user-42");
    let revoked = client.expect("info");
    assert_eq!(
        (revoked["msg"].as_str(), revoked["topic"].as_str()),
        (Some("subscription_revoked"), Some("news")),
        "{revoked}"
    );
    let key = [("X-API-Key", "k")];
    for topic in ["news", "user.42.inbox"] {
        let body = json!({"id": format!("after-{topic}"), "payload": 1}).to_string();
        http_json(
            broker.addr,
            "POST",
            &format!("/topics/{topic}/messages"),
            Some(&body),
            &key,
        );
    }
    let event = client.expect("event");
    assert_eq!(
        event["topic"], "user.42.inbox",
        "no event of a revoked topic: {event}"
    );
    client.send(json!({"type":"publish","topic":"chat","message":{"id":"x","payload":1}}));
    assert_eq!(
        client.expect("error")["error"]["code"],
        "FORBIDDEN",
        "publish rights went too"
    );
}

#[test]
fn an_expired_token_closes_the_connection_with_token_expired() {
    let broker = token_broker(&[("TOKEN_LEEWAY_SECS", "0")]);
    let mut short = user_42();
    short["exp"] = json!(epoch_secs(2));
    let mut client = client_with_token(&broker, &hs256(&short));
    client.subscribe("news", 0);
    let (code, reason, seen) = client.read_until_close();
    assert_eq!(
        (code, reason.as_str()),
        (Some(1008), "TOKEN_EXPIRED"),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|m| m["type"] == "info" && m["msg"] == "token_expired"),
        "{seen:?}"
    );
    // A refresh before the expiry keeps the connection.
    short["exp"] = json!(epoch_secs(2));
    let mut refreshed = client_with_token(&broker, &hs256(&short));
    refreshed.send(json!({"type":"auth","token":hs256(&user_42())}));
    refreshed.expect("ack");
    std::thread::sleep(Duration::from_millis(2500));
    refreshed.ping("refreshed");
}

#[test]
fn disconnect_closes_every_connection_of_that_user_and_no_other() {
    let broker = token_broker(&[]);
    let mut alice: Vec<Client> = (0..3)
        .map(|_| client_with_token(&broker, &hs256(&claims("alice", &["*"], &[]))))
        .collect();
    let mut bob = client_with_token(&broker, &hs256(&claims("bob", &["*"], &[])));
    for client in &mut alice {
        client.subscribe("news", 0);
    }
    disconnect_user(broker.addr, "k", "alice");
    for client in &mut alice {
        let (code, _, seen) = client.read_until_close();
        assert_eq!(code, Some(1008));
        assert!(
            seen.iter()
                .any(|m| m["type"] == "info" && m["msg"] == "disconnected"),
            "{seen:?}"
        );
    }
    bob.ping("bob-stays");
    for bad in [r#"{}"#, r#"{"sub":""}"#, r#"{"sub":5}"#, "[]", "{"] {
        let (status, _) = http_json(
            broker.addr,
            "POST",
            "/disconnect",
            Some(bad),
            &[("X-API-Key", "k")],
        );
        assert_eq!(status, 400, "{bad}");
    }
}

#[test]
fn publishes_over_the_rate_are_refused_and_not_published() {
    let broker = token_broker(&[("PUBLISH_RATE", "5"), ("PUBLISH_BURST", "5")]);
    let mut client = client_with_token(&broker, &hs256(&user_42()));
    for i in 0..10 {
        client.send(json!({"type":"publish","topic":"chat","message":{"id":format!("m{i}"),"payload":i},"request_id":format!("p{i}")}));
    }
    let replies: Vec<Value> = (0..10).map(|_| client.recv()).collect();
    let acked = replies.iter().filter(|r| r["type"] == "ack").count();
    let limited = replies
        .iter()
        .filter(|r| r["error"]["code"] == "RATE_LIMITED")
        .count();
    assert_eq!((acked, limited), (5, 5), "{replies:?}");
    let (_, detail) = http_json(
        broker.addr,
        "GET",
        "/topics/chat",
        None,
        &[("X-API-Key", "k")],
    );
    assert_eq!(detail["messages"], 5);
    assert!(auth_failures(broker.addr, "rate_limited") >= 5.0);
}

#[test]
fn only_allowed_origins_may_upgrade() {
    let broker = token_broker(&[(
        "ALLOWED_ORIGINS",
        "https://app.example, https://admin.example",
    )]);
    let token = hs256(&user_42());
    let url = format!("{}?token={token}", broker.ws_url());
    assert_eq!(
        connect_with(&url, &[("Origin", "https://evil.example")]).err(),
        Some(403)
    );
    assert!(connect_with(&url, &[("Origin", "https://admin.example")]).is_ok());
    assert!(connect_with(&url, &[]).is_ok(), "no Origin: not a browser");
    assert!(auth_failures(broker.addr, "origin") >= 1.0);
}

#[test]
fn public_keys_from_a_file_are_chosen_by_kid_or_tried_in_turn() {
    let (first, second) = (Ed25519::generate(), Ed25519::generate());
    let file = write_key_file(&format!(
        "# kid: first\n{}# kid: second\n{}",
        first.public_pem, second.public_pem
    ));
    let broker = TestBroker::with(&[("TOKEN_PUBLIC_KEYS_FILE", file.to_str().unwrap())]);
    let claims = json!({"sub":"k","exp":epoch_secs(600),"admin":true});
    for token in [
        first.sign(&claims, Some("first")),
        second.sign(&claims, Some("second")),
        second.sign(&claims, Some("1")),
        second.sign(&claims, None),
    ] {
        let (status, _) = with_token(broker.addr, "GET", "/stats", &token);
        assert_eq!(status, 200);
    }
    let stranger = Ed25519::generate();
    for token in [
        first.sign(&claims, Some("second")),
        second.sign(&claims, Some("nobody")),
        stranger.sign(&claims, None),
        signed_as("EdDSA", &claims, first.public_pem.as_bytes()),
        signed_as("HS256", &claims, first.public_pem.as_bytes()),
    ] {
        let (status, _) = with_token(broker.addr, "GET", "/stats", &token);
        assert_eq!(status, 401);
    }
}

#[test]
fn bad_token_settings_stop_the_broker_with_exit_2_naming_the_variable() {
    let private = Ed25519::generate().private_pem;
    let private_file = write_key_file(&private);
    let garbage = write_key_file("not a key\n");
    for (name, value) in [
        ("TOKEN_PUBLIC_KEYS_FILE", "/nonexistent/keys.pem"),
        ("TOKEN_PUBLIC_KEYS_FILE", private_file.to_str().unwrap()),
        ("TOKEN_PUBLIC_KEYS_FILE", garbage.to_str().unwrap()),
        ("TOKEN_LEEWAY_SECS", "soon"),
        ("PUBLISH_RATE", "-1"),
    ] {
        let (code, stderr) = run_to_exit(&[(name, value)]);
        assert_eq!(code, Some(2), "{name}={value}: {stderr}");
        assert!(stderr.contains(name), "{name}={value}: {stderr}");
        assert!(
            !stderr.contains("PRIVATE KEY-----\n"),
            "no key in the log: {stderr}"
        );
    }
}
