//! The REST endpoints of one topic over real sockets: `GET /topics/{name}`
//! (its figures and epoch), `POST /topics/{name}/messages` (the same
//! publish as over WebSocket: validation, `seq`, fan-out, metrics; bodies
//! up to `MAX_MESSAGE_BYTES`) and `GET /topics/{name}/messages` (the ring,
//! read with `since_seq` and `limit`), with every bad body and query,
//! 404s, the API key and percent-encoded names.
//!
//! Long on purpose: one file per promise, and the REST side of one topic
//! (detail, publish, history) has many bounds, each a case.

mod common;

use common::*;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::net::SocketAddr;
use tungstenite::Message;

fn is_json(response: &HttpResponse) -> bool {
    response
        .header("Content-Type")
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/json"))
}

fn text(response: &HttpResponse) -> String {
    String::from_utf8_lossy(&response.body).into_owned()
}

/// `{"error":{"code":..,"message":..}}` with `status`.
fn assert_error(response: &HttpResponse, status: u16, code: &str) {
    assert_eq!(response.status, status, "{}", text(response));
    assert!(is_json(response), "Content-Type: {:?}", response.headers);
    let value = response.json();
    assert_eq!(value["error"]["code"], code, "{value}");
    assert!(
        value["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{value}"
    );
    assert_eq!(value.as_object().unwrap().len(), 1, "only 'error': {value}");
}

/// The sorted keys of a JSON object.
fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

fn rest_publish(addr: SocketAddr, topic: &str, body: &str) -> HttpResponse {
    http(
        addr,
        "POST",
        &format!("/topics/{topic}/messages"),
        Some(body),
        &[],
    )
}

/// A REST publish that must succeed with exactly this body.
fn rest_publish_ok(addr: SocketAddr, topic: &str, body: &str, seq: u64) {
    let response = rest_publish(addr, topic, body);
    assert_eq!(response.status, 200, "{}", text(&response));
    assert!(is_json(&response), "{:?}", response.headers);
    assert_eq!(
        response.json(),
        json!({"status":"published","topic":topic,"seq":seq})
    );
}

/// `GET /topics/{name}` (the name as it goes in the path), which must be
/// 200.
fn detail(addr: SocketAddr, path_name: &str) -> Value {
    let response = http(addr, "GET", &format!("/topics/{path_name}"), None, &[]);
    assert_eq!(response.status, 200, "{}", text(&response));
    assert!(is_json(&response));
    response.json()
}

/// The text of the next text message (heartbeats skipped).
fn recv_text(client: &mut Client) -> String {
    loop {
        match client.ws.read().unwrap_or_else(|e| panic!("read: {e}")) {
            Message::Text(text) => {
                let value: Value = serde_json::from_str(text.as_str()).unwrap();
                if value["type"] == "info" && value["msg"] == "ping" {
                    continue;
                }
                return text.to_string();
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// An event's `message` and `ts` as sent, byte for byte.
#[derive(Deserialize)]
struct RawEvent<'a> {
    #[serde(borrow)]
    message: &'a RawValue,
    seq: u64,
    ts: String,
}

/// The next event: (seq, message text, ts).
fn recv_event(client: &mut Client) -> (u64, String, String) {
    let text = recv_text(client);
    let event: RawEvent<'_> = serde_json::from_str(&text).unwrap();
    assert!(text.contains(r#""type":"event""#), "{text}");
    (event.seq, event.message.get().to_string(), event.ts)
}

/// RFC 3339 UTC with milliseconds.
fn assert_timestamp(ts: &str) {
    let b = ts.as_bytes();
    assert!(
        b.len() == 24
            && b[4] == b'-'
            && b[7] == b'-'
            && b[10] == b'T'
            && b[13] == b':'
            && b[16] == b':'
            && b[19] == b'.'
            && b[23] == b'Z',
        "{ts}"
    );
}

// ---- REST publish -----------------------------------------------------------------------

#[test]
fn rest_publish_reaches_websocket_subscribers_with_seqs_shared_with_websocket_publishes() {
    let broker = TestBroker::start();
    broker.create_topic("t");
    let mut subs: Vec<Client> = (0..2).map(|_| broker.client()).collect();
    for sub in &mut subs {
        sub.subscribe("t", 0);
    }
    let mut ws_publisher = broker.client();
    // The body is passed through as sent: spacing, 1.000, escapes.
    let rest_bodies = [
        r#"{"id":"m1","payload":{"b":1.000}}"#,
        r#"{ "payload" : [1, 2.50, "\u00e9"] , "id" : "m3" }"#,
        r#"{"id":"m4","payload":null}"#,
    ];
    let mut sent = Vec::new();
    rest_publish_ok(broker.addr, "t", rest_bodies[0], 1);
    sent.push(rest_bodies[0].to_string());
    let ack = ws_publisher.publish("t", "m2", json!({"x": 2}));
    assert_eq!(ack["seq"].as_u64(), Some(2), "{ack}");
    sent.push(r#"{"id":"m2","payload":{"x":2}}"#.to_string());
    for (seq, body) in [(3, rest_bodies[1]), (4, rest_bodies[2])] {
        rest_publish_ok(broker.addr, "t", body, seq);
        sent.push(body.to_string());
    }
    let ack = ws_publisher.publish("t", "m5", json!("five"));
    assert_eq!(ack["seq"].as_u64(), Some(5), "{ack}");
    sent.push(r#"{"id":"m5","payload":"five"}"#.to_string());

    for sub in &mut subs {
        for (i, message) in sent.iter().enumerate() {
            let (seq, got, ts) = recv_event(sub);
            assert_eq!((seq, got.as_str()), (i as u64 + 1, message.as_str()));
            assert_timestamp(&ts);
        }
        sub.ping("nothing-more");
    }
    ws_publisher.ping("publisher-gets-nothing");
    let detail = detail(broker.addr, "t");
    assert_eq!(
        (detail["messages"].as_u64(), detail["last_seq"].as_u64()),
        (Some(5), Some(5))
    );
}

#[test]
fn a_rest_publish_reaches_subscribers_on_its_own_worker() {
    // One worker: the REST connection and the subscriber share it.
    let broker = TestBroker::with(&[("WORKERS", "1")]);
    broker.create_topic("t");
    let mut sub = broker.client();
    sub.subscribe("t", 0);
    for seq in 1..=3 {
        rest_publish_ok(broker.addr, "t", r#"{"id":"m","payload":1}"#, seq);
        assert_eq!(sub.expect("event")["seq"].as_u64(), Some(seq));
    }
}

#[test]
fn pipelined_rest_publishes_are_published_in_order() {
    let broker = TestBroker::start();
    broker.create_topic("p");
    let mut sub = broker.client();
    sub.subscribe("p", 0);
    let mut conn = HttpConn::open(broker.addr);
    let requests: Vec<String> = (1..=20)
        .map(|i| {
            request_text(
                "POST",
                "/topics/p/messages",
                Some(&format!(r#"{{"id":"m{i}","payload":{i}}}"#)),
            )
        })
        .collect();
    for (i, response) in conn.pipeline(&requests).into_iter().enumerate() {
        assert_eq!(response.status, 200, "{}", text(&response));
        assert_eq!(response.json()["seq"].as_u64(), Some(i as u64 + 1));
    }
    for i in 1..=20u64 {
        let event = sub.expect("event");
        assert_eq!(
            (event["seq"].as_u64(), event["message"]["payload"].as_u64()),
            (Some(i), Some(i))
        );
    }
    sub.ping("end");
}

#[test]
fn rest_publish_to_a_missing_topic_is_404_and_publishes_nothing() {
    let broker = TestBroker::start();
    let body = r#"{"id":"m1","payload":1}"#;
    assert_error(
        &rest_publish(broker.addr, "nope", body),
        404,
        "TOPIC_NOT_FOUND",
    );
    assert_error(
        &rest_publish(broker.addr, "no%20pe", body),
        404,
        "TOPIC_NOT_FOUND",
    );
    // Deleted: gone for REST publish too, and a new incarnation counts
    // from 1 (whichever worker serves it).
    broker.create_topic("gone");
    rest_publish_ok(broker.addr, "gone", body, 1);
    delete_topic(broker.addr, "gone");
    for _ in 0..4 {
        assert_error(
            &rest_publish(broker.addr, "gone", body),
            404,
            "TOPIC_NOT_FOUND",
        );
    }
    broker.create_topic("gone");
    rest_publish_ok(broker.addr, "gone", body, 1);
    rest_publish_ok(broker.addr, "gone", body, 2);
}

#[test]
fn bad_rest_publish_bodies_are_400_and_publish_nothing() {
    let broker = TestBroker::start();
    broker.create_topic("t");
    let mut sub = broker.client();
    sub.subscribe("t", 0);
    let bodies = [
        // Not an object.
        "[]",
        r#"["m1",{"k":1}]"#,
        r#""m1""#,
        "3",
        "true",
        "null",
        // id missing, empty, or not a string.
        "{}",
        r#"{"payload":1}"#,
        r#"{"id":null,"payload":1}"#,
        r#"{"id":"","payload":1}"#,
        r#"{"id":7,"payload":1}"#,
        r#"{"id":["m1"],"payload":1}"#,
        r#"{"id":{"a":1},"payload":1}"#,
        r#"{"id":true,"payload":1}"#,
        // payload missing.
        r#"{"id":"m1"}"#,
        // Not JSON.
        "",
        "{",
        r#"{"id":"m1","payload":1"#,
        r#"{"id":"m1","payload":1}x"#,
        r#"{"id":"m1","payload":}"#,
        "id=m1&payload=1",
    ];
    let mut conn = HttpConn::open(broker.addr);
    for body in bodies {
        let response = conn.request("POST", "/topics/t/messages", Some(body));
        assert_error(&response, 400, "BAD_REQUEST");
        assert!(
            response.header("Connection").is_none_or(|v| v != "close"),
            "{body}: the connection stays open"
        );
    }
    // Not UTF-8.
    let body = b"{\"id\":\"m\xff1\",\"payload\":\"\xc3\"}";
    let mut raw = format!("POST /topics/t/messages HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    raw.extend_from_slice(body);
    conn.send(&raw);
    assert_error(&conn.response(), 400, "BAD_REQUEST");
    // Still open; nothing was published.
    let response = conn.request("GET", "/topics/t", None);
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["messages"].as_u64(), Some(0));
    sub.ping("nothing-delivered");
}

#[test]
fn a_rest_publish_body_may_be_as_large_as_max_message_bytes() {
    /// `{"id":"big","payload":"xxx..."}` of exactly `len` bytes.
    fn body_of(len: usize) -> String {
        let (prefix, suffix) = (r#"{"id":"big","payload":""#, r#""}"#);
        let body = format!(
            "{prefix}{}{suffix}",
            "x".repeat(len - prefix.len() - suffix.len())
        );
        assert_eq!(body.len(), len);
        body
    }

    // A small limit: exactly it is fine, one byte more is 413.
    let broker = TestBroker::with(&[("MAX_MESSAGE_BYTES", "2048")]);
    broker.create_topic("t");
    let mut sub = broker.client();
    sub.subscribe("t", 0);
    rest_publish_ok(broker.addr, "t", &body_of(2048), 1);
    assert_eq!(sub.expect("event")["seq"].as_u64(), Some(1));
    let mut conn = HttpConn::open(broker.addr);
    conn.send(&request_text("POST", "/topics/t/messages", Some(&body_of(2049))).into_bytes());
    let response = conn.response();
    assert_error(&response, 413, "PAYLOAD_TOO_LARGE");
    conn.assert_closed();
    // Other bodies keep their 64 KiB limit whatever MAX_MESSAGE_BYTES says.
    let name = format!(r#"{{"name":"n","pad":"{}"}}"#, "x".repeat(4000));
    assert_eq!(
        http(broker.addr, "POST", "/topics", Some(&name), &[]).status,
        201
    );
    sub.ping("nothing-more");
    drop(broker);

    // The default 1 MiB: between 64 KiB and 1 MiB is accepted and
    // delivered whole; over 1 MiB is 413 (told by Content-Length alone).
    let broker = TestBroker::start();
    broker.create_topic("t");
    let mut sub = broker.client();
    sub.subscribe("t", 0);
    for (seq, len) in [(1, 64 * 1024 + 1), (2, 300_000), (3, 1024 * 1024)] {
        let body = body_of(len);
        rest_publish_ok(broker.addr, "t", &body, seq);
        let (got_seq, message, _) = recv_event(&mut sub);
        assert_eq!(got_seq, seq);
        assert!(message == body, "the {len}-byte body is delivered whole");
    }
    let mut conn = HttpConn::open(broker.addr);
    conn.send(
        format!(
            "POST /topics/t/messages HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{{\"id\"",
            1024 * 1024 + 1
        )
        .as_bytes(),
    );
    assert_error(&conn.response(), 413, "PAYLOAD_TOO_LARGE");
    conn.assert_closed();
    assert_eq!(detail(broker.addr, "t")["messages"].as_u64(), Some(3));
}

#[test]
fn topic_endpoints_need_the_api_key_when_one_is_set() {
    let broker = TestBroker::with(&[("API_KEY", "secret")]);
    let key = [("X-API-Key", "secret")];
    let wrong = [("X-API-Key", "nope")];
    let response = http(
        broker.addr,
        "POST",
        "/topics",
        Some(r#"{"name":"t"}"#),
        &key,
    );
    assert_eq!(response.status, 201);
    let body = Some(r#"{"id":"m1","payload":1}"#);
    for (method, path, body) in [
        ("POST", "/topics/t/messages", body),
        ("GET", "/topics/t/messages", None),
        ("GET", "/topics/t", None),
        ("POST", "/topics/none/messages", body),
        ("GET", "/topics/none", None),
    ] {
        for headers in [&[][..], &wrong[..]] {
            assert_error(
                &http(broker.addr, method, path, body, headers),
                401,
                "UNAUTHORIZED",
            );
        }
        // The query parameter is for the WebSocket upgrade only.
        let with_query = format!("{path}?api_key=secret");
        assert_error(
            &http(broker.addr, method, &with_query, body, &[]),
            401,
            "UNAUTHORIZED",
        );
    }
    let response = http(broker.addr, "POST", "/topics/t/messages", body, &key);
    assert_eq!(response.status, 200, "{}", text(&response));
    assert_eq!(
        response.json()["seq"].as_u64(),
        Some(1),
        "refused ones published nothing"
    );
    let (status, detail) = http_json(broker.addr, "GET", "/topics/t", None, &key);
    assert_eq!((status, detail["messages"].as_u64()), (200, Some(1)));
    let (status, history) = http_json(broker.addr, "GET", "/topics/t/messages", None, &key);
    assert_eq!(
        (status, history["messages"].as_array().map(Vec::len)),
        (200, Some(1))
    );
}

/// The value of an unlabelled sample in `/metrics`.
fn metric(addr: SocketAddr, name: &str) -> f64 {
    let response = http(addr, "GET", "/metrics", None, &[]);
    assert_eq!(response.status, 200);
    let body = text(&response);
    body.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in {body}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn rest_publishes_count_in_the_metrics_like_websocket_ones() {
    const PUBLISHED: &str = "pubsub_messages_published_total";
    const DELIVERED: &str = "pubsub_messages_delivered_total";
    let broker = TestBroker::start();
    broker.create_topic("t");
    let mut sub = broker.client();
    sub.subscribe("t", 0);
    let (published, delivered) = (
        metric(broker.addr, PUBLISHED),
        metric(broker.addr, DELIVERED),
    );
    for seq in 1..=3 {
        rest_publish_ok(broker.addr, "t", r#"{"id":"m","payload":1}"#, seq);
    }
    broker.client().publish("t", "w", json!(1));
    // Refused ones do not count.
    assert_eq!(
        rest_publish(broker.addr, "none", r#"{"id":"m","payload":1}"#).status,
        404
    );
    assert_eq!(rest_publish(broker.addr, "t", r#"{"id":"m"}"#).status, 400);
    for seq in 1..=4 {
        assert_eq!(sub.expect("event")["seq"].as_u64(), Some(seq));
    }
    assert_eq!(metric(broker.addr, PUBLISHED) - published, 4.0);
    assert_eq!(metric(broker.addr, DELIVERED) - delivered, 4.0);
}

// ---- GET /topics/{name} -------------------------------------------------------------------

#[test]
fn topic_detail_gives_subscribers_messages_last_seq_and_epoch() {
    let broker = TestBroker::with(&[("RING_BUFFER_SIZE", "5")]);
    broker.create_topic("t");
    let fresh = detail(broker.addr, "t");
    assert_eq!(
        keys(&fresh),
        ["epoch", "last_seq", "messages", "name", "subscribers"]
    );
    let epoch = fresh["epoch"].as_str().unwrap().to_string();
    assert!(!epoch.is_empty());
    assert_eq!(
        fresh,
        json!({"name":"t","subscribers":0,"messages":0,"last_seq":0,"epoch":epoch})
    );

    let mut a = broker.client();
    let mut b = broker.client();
    a.subscribe("t", 0);
    a.subscribe("t", 0);
    b.subscribe("t", 0);
    let mut publisher = broker.client();
    for i in 1..=8 {
        publisher.publish("t", &format!("m{i}"), json!(i));
    }
    // More than the ring holds: messages counts every one.
    assert_eq!(
        detail(broker.addr, "t"),
        json!({"name":"t","subscribers":2,"messages":8,"last_seq":8,"epoch":epoch})
    );
    b.send(json!({"type":"unsubscribe","topic":"t","client_id":"b","request_id":"u"}));
    // Events may come before the ack.
    while b.recv()["type"] != "ack" {}
    assert_eq!(detail(broker.addr, "t")["subscribers"].as_u64(), Some(1));
    assert_eq!(
        detail(broker.addr, "t")["epoch"].as_str(),
        Some(epoch.as_str())
    );

    let (status, _) = http_json(broker.addr, "GET", "/topics/none", None, &[]);
    assert_eq!(status, 404);
    assert_error(
        &http(broker.addr, "GET", "/topics/none", None, &[]),
        404,
        "TOPIC_NOT_FOUND",
    );
    // After deletion: 404; created again: a new epoch, counts from 0.
    delete_topic(broker.addr, "t");
    assert_error(
        &http(broker.addr, "GET", "/topics/t", None, &[]),
        404,
        "TOPIC_NOT_FOUND",
    );
    broker.create_topic("t");
    let again = detail(broker.addr, "t");
    assert_eq!(
        (again["messages"].as_u64(), again["last_seq"].as_u64()),
        (Some(0), Some(0))
    );
    assert_ne!(again["epoch"].as_str(), Some(epoch.as_str()));
}

#[test]
fn topic_paths_are_percent_decoded_and_methods_checked() {
    let broker = TestBroker::start();
    let name = "a b?c#ü%";
    let encoded = "a%20b%3Fc%23%C3%BC%25";
    broker.create_topic(name);
    assert_eq!(detail(broker.addr, encoded)["name"].as_str(), Some(name));
    let mut sub = broker.client();
    sub.subscribe(name, 0);
    for seq in 1..=2 {
        let response = rest_publish(
            broker.addr,
            encoded,
            &format!(r#"{{"id":"m{seq}","payload":{seq}}}"#),
        );
        assert_eq!(
            response.json(),
            json!({"status":"published","topic":name,"seq":seq}),
            "the response names the topic decoded"
        );
    }
    for seq in 1..=2 {
        let event = sub.expect("event");
        assert_eq!(
            (event["topic"].as_str(), event["seq"].as_u64()),
            (Some(name), Some(seq))
        );
    }
    let (status, history) = http_json(
        broker.addr,
        "GET",
        &format!("/topics/{encoded}/messages?limit=1"),
        None,
        &[],
    );
    assert_eq!(status, 200);
    assert_eq!(history["topic"].as_str(), Some(name));
    assert_eq!(history["messages"][0]["seq"].as_u64(), Some(1));

    for (method, path, allow) in [
        ("PUT", "/topics/t", "GET, DELETE"),
        ("POST", "/topics/t", "GET, DELETE"),
        ("DELETE", "/topics/t/messages", "GET, POST"),
        ("PUT", "/topics/t/messages", "GET, POST"),
    ] {
        let response = http(broker.addr, method, path, Some("{}"), &[]);
        assert_error(&response, 405, "METHOD_NOT_ALLOWED");
        assert_eq!(response.header("Allow"), Some(allow), "{method} {path}");
    }
    for path in [
        "/topics/t/messages/x",
        "/topics//messages",
        "/topics/t/message",
    ] {
        assert_error(&http(broker.addr, "GET", path, None, &[]), 404, "NOT_FOUND");
    }
}

// ---- history ------------------------------------------------------------------------------

/// One history entry, its `message` as the body has it.
#[derive(Deserialize)]
struct Entry<'a> {
    seq: u64,
    #[serde(borrow)]
    message: &'a RawValue,
    ts: String,
}

#[derive(Deserialize)]
struct Page<'a> {
    #[serde(borrow)]
    messages: Vec<Entry<'a>>,
}

/// `GET /topics/{topic}/messages{query}`, which must be 200; the body's
/// JSON, and its entries as (seq, message text, ts).
fn history(addr: SocketAddr, topic: &str, query: &str) -> (Value, Vec<(u64, String, String)>) {
    let response = http(
        addr,
        "GET",
        &format!("/topics/{topic}/messages{query}"),
        None,
        &[],
    );
    assert_eq!(response.status, 200, "{query}: {}", text(&response));
    assert!(is_json(&response));
    let page: Page<'_> = serde_json::from_slice(&response.body).unwrap();
    let entries = page
        .messages
        .into_iter()
        .map(|e| (e.seq, e.message.get().to_string(), e.ts))
        .collect();
    (response.json(), entries)
}

fn history_seqs(addr: SocketAddr, topic: &str, query: &str) -> Vec<u64> {
    history(addr, topic, query)
        .1
        .into_iter()
        .map(|(seq, ..)| seq)
        .collect()
}

#[test]
fn history_reads_the_ring_with_since_seq_and_limit() {
    let broker = TestBroker::with(&[("RING_BUFFER_SIZE", "5")]);
    broker.create_topic("h");
    let (page, entries) = history(broker.addr, "h", "");
    assert!(entries.is_empty());
    let epoch = detail(broker.addr, "h")["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        page,
        json!({"topic":"h","epoch":epoch,"last_seq":0,"messages":[]})
    );

    // 8 messages, odd ones over WebSocket (as text, so 1.000 stays), even
    // ones over REST; a subscriber records what it was sent.
    let mut sub = broker.client();
    sub.subscribe("h", 0);
    let mut publisher = broker.client();
    let mut sent = vec![String::new()];
    for seq in 1..=8u64 {
        let message = format!(r#"{{"id":"m{seq}", "payload": {{"b":1.000,"n":{seq}}}}}"#);
        if seq % 2 == 1 {
            publisher.send_text(&format!(
                r#"{{"type":"publish","topic":"h","message":{message},"request_id":"p"}}"#
            ));
            assert_eq!(publisher.expect("ack")["seq"].as_u64(), Some(seq));
        } else {
            rest_publish_ok(broker.addr, "h", &message, seq);
        }
        sent.push(message);
    }
    let mut ts = vec![String::new()];
    for seq in 1..=8u64 {
        let (got, message, at) = recv_event(&mut sub);
        assert_eq!((got, &message), (seq, &sent[seq as usize]));
        ts.push(at);
    }

    // The whole page: fields, and every entry as the subscriber got it.
    let (page, entries) = history(broker.addr, "h", "");
    assert_eq!(keys(&page), ["epoch", "last_seq", "messages", "topic"]);
    assert_eq!(
        (
            page["topic"].as_str(),
            page["epoch"].as_str(),
            page["last_seq"].as_u64()
        ),
        (Some("h"), Some(epoch.as_str()), Some(8))
    );
    for entry in page["messages"].as_array().unwrap() {
        assert_eq!(keys(entry), ["message", "seq", "ts"]);
    }
    let expected: Vec<(u64, String, String)> = (4..=8)
        .map(|seq| (seq, sent[seq as usize].clone(), ts[seq as usize].clone()))
        .collect();
    assert_eq!(
        entries, expected,
        "the ring's 5, oldest first, byte for byte"
    );
    assert!(
        text(&http(broker.addr, "GET", "/topics/h/messages", None, &[]))
            .contains(r#""message":{"id":"m8", "payload": {"b":1.000,"n":8}}"#)
    );

    let h = |query: &str| history_seqs(broker.addr, "h", query);
    // since_seq bounds.
    assert_eq!(h("?since_seq=0"), [4, 5, 6, 7, 8]);
    assert_eq!(
        h("?since_seq=2"),
        [4, 5, 6, 7, 8],
        "older than the ring: from the oldest held"
    );
    assert_eq!(h("?since_seq=3"), [4, 5, 6, 7, 8]);
    assert_eq!(h("?since_seq=5"), [6, 7, 8]);
    assert_eq!(h("?since_seq=7"), [8]);
    assert_eq!(h("?since_seq=8"), Vec::<u64>::new(), "= last_seq: empty");
    assert_eq!(h("?since_seq=9"), Vec::<u64>::new(), "beyond: empty");
    assert_eq!(h("?since_seq=18446744073709551615"), Vec::<u64>::new());
    assert_eq!(
        h("?since_seq=99999999999999999999999"),
        Vec::<u64>::new(),
        "too large for 64 bits: beyond the last, as over WebSocket"
    );
    // limit.
    assert_eq!(h("?limit=1"), [4]);
    assert_eq!(h("?limit=2&since_seq=5"), [6, 7]);
    assert_eq!(h("?since_seq=5&limit=2"), [6, 7]);
    assert_eq!(h("?limit=5"), [4, 5, 6, 7, 8]);
    assert_eq!(
        h("?limit=6"),
        [4, 5, 6, 7, 8],
        "above the ring size: the ring size"
    );
    assert_eq!(h("?limit=18446744073709551615"), [4, 5, 6, 7, 8]);
    assert_eq!(
        h("?limit=99999999999999999999999"),
        [4, 5, 6, 7, 8],
        "too large for 64 bits: above the ring size too"
    );
    assert_eq!(h("?since_seq=7&limit=1000"), [8]);
    // Unknown parameters are ignored; values may be percent-encoded.
    assert_eq!(h("?foo=bar&limit=2&x"), [4, 5]);
    assert_eq!(h("?since_seq=%36"), [7, 8]);
    // The page is the same however often it is read.
    assert_eq!(history(broker.addr, "h", "?since_seq=3").1, expected);
}

#[test]
fn history_limit_defaults_to_the_ring_size() {
    let broker = TestBroker::start();
    broker.create_topic("big");
    let mut conn = HttpConn::open(broker.addr);
    let requests: Vec<String> = (1..=130)
        .map(|i| {
            request_text(
                "POST",
                "/topics/big/messages",
                Some(&format!(r#"{{"id":"m{i}","payload":{i}}}"#)),
            )
        })
        .collect();
    for response in conn.pipeline(&requests) {
        assert_eq!(response.status, 200);
    }
    // The default ring is 100.
    assert_eq!(
        history_seqs(broker.addr, "big", ""),
        (31..=130).collect::<Vec<u64>>()
    );
    assert_eq!(
        history_seqs(broker.addr, "big", "?since_seq=100"),
        (101..=130).collect::<Vec<u64>>()
    );
    assert_eq!(
        history_seqs(broker.addr, "big", "?limit=1000"),
        (31..=130).collect::<Vec<u64>>()
    );
}

#[test]
fn bad_history_queries_are_400_and_missing_topics_404() {
    let broker = TestBroker::start();
    broker.create_topic("h");
    let mut conn = HttpConn::open(broker.addr);
    for (query, named) in [
        ("since_seq=-1", "since_seq"),
        ("since_seq=x", "since_seq"),
        ("since_seq=1.5", "since_seq"),
        ("since_seq=1e3", "since_seq"),
        ("since_seq=", "since_seq"),
        ("since_seq=%2B5", "since_seq"),
        ("since_seq=-0", "since_seq"),
        ("since_seq=0x10", "since_seq"),
        ("limit=0", "limit"),
        ("limit=-3", "limit"),
        ("limit=abc", "limit"),
        ("limit=2.0", "limit"),
        ("limit=0&since_seq=1", "limit"),
        ("since_seq=1&limit=x", "limit"),
        ("since_seq=x&limit=1", "since_seq"),
    ] {
        let response = conn.request("GET", &format!("/topics/h/messages?{query}"), None);
        assert_error(&response, 400, "BAD_REQUEST");
        let message = response.json()["error"]["message"].to_string();
        assert!(
            message.contains(named),
            "{query}: names '{named}': {message}"
        );
    }
    // The connection is still usable.
    assert_eq!(conn.request("GET", "/topics/h/messages", None).status, 200);
    assert_error(
        &http(broker.addr, "GET", "/topics/none/messages", None, &[]),
        404,
        "TOPIC_NOT_FOUND",
    );
    assert_error(
        &http(
            broker.addr,
            "GET",
            "/topics/none/messages?since_seq=1&limit=1",
            None,
            &[],
        ),
        404,
        "TOPIC_NOT_FOUND",
    );
}

#[test]
fn history_of_a_recreated_topic_starts_again_with_a_new_epoch() {
    let broker = TestBroker::start();
    broker.create_topic("r");
    rest_publish_ok(broker.addr, "r", r#"{"id":"old","payload":1}"#, 1);
    let (old, _) = history(broker.addr, "r", "");
    delete_topic(broker.addr, "r");
    assert_error(
        &http(broker.addr, "GET", "/topics/r/messages", None, &[]),
        404,
        "TOPIC_NOT_FOUND",
    );
    broker.create_topic("r");
    let (page, entries) = history(broker.addr, "r", "");
    assert!(entries.is_empty());
    assert_eq!(page["last_seq"].as_u64(), Some(0));
    assert_ne!(page["epoch"], old["epoch"]);
    rest_publish_ok(broker.addr, "r", r#"{"id":"new","payload":2}"#, 1);
    let (_, entries) = history(broker.addr, "r", "");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].1, r#"{"id":"new","payload":2}"#);
}

#[test]
fn history_pages_are_consistent_while_publishers_run() {
    const RING: u64 = 50;
    const PER_PUBLISHER: u64 = 800;
    const PAGES: usize = 200;
    let broker = TestBroker::with(&[("WORKERS", "4"), ("RING_BUFFER_SIZE", &RING.to_string())]);
    broker.create_topic("live");
    let publishers: Vec<_> = (0..3)
        .map(|p| {
            let mut client = broker.client();
            std::thread::spawn(move || {
                for n in 0..PER_PUBLISHER {
                    client.publish("live", &format!("p{p}-{n}"), json!({"p": p, "n": n}));
                }
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut conn = HttpConn::open(broker.addr);
    let mut previous_last: u64 = 0;
    let mut mid_storm = 0;
    for page in 0..PAGES {
        assert!(std::time::Instant::now() < deadline, "pages took too long");
        let since = previous_last.saturating_sub(page as u64 % 70);
        let limit = page as u64 % 60 + 1;
        let response = conn.request(
            "GET",
            &format!("/topics/live/messages?since_seq={since}&limit={limit}"),
            None,
        );
        assert_eq!(response.status, 200);
        let body = response.json();
        let last_seq = body["last_seq"].as_u64().unwrap();
        assert!(last_seq >= previous_last, "last_seq never goes back");
        let seqs: Vec<u64> = body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["seq"].as_u64().unwrap())
            .collect();
        // The page is what the ring held when last_seq was read: the held
        // messages after `since`, oldest first, consecutive, at most `limit`.
        let oldest_held = last_seq.saturating_sub(RING) + 1;
        let first = (since + 1).max(oldest_held);
        let expected: Vec<u64> = (first..=last_seq).take(limit as usize).collect();
        assert_eq!(
            seqs, expected,
            "since {since}, limit {limit}, last_seq {last_seq}"
        );
        previous_last = last_seq;
        mid_storm += usize::from(last_seq < 3 * PER_PUBLISHER);
    }
    for publisher in publishers {
        publisher.join().expect("publisher");
    }
    let body = conn.request("GET", "/topics/live/messages", None).json();
    assert_eq!(body["last_seq"].as_u64(), Some(3 * PER_PUBLISHER));
    assert!(mid_storm > 0, "some pages were read while publishers ran");
}
