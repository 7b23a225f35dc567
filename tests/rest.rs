//! The REST contract over real sockets: topic management, listing, health
//! and stats, error bodies, 404/405, and HTTP/1.1 as written by hand on raw
//! TCP (keep-alive, pipelining, split writes, `Connection: close`, limits).

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::Read;
use std::net::SocketAddr;
use std::time::Duration;

fn is_json(response: &HttpResponse) -> bool {
    response
        .header("Content-Type")
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/json"))
}

/// `{"error":{"code":..,"message":..}}` with `status`, as JSON, and
/// nothing else in the body.
fn assert_error(response: &HttpResponse, status: u16, code: &str) {
    let body = String::from_utf8_lossy(&response.body).into_owned();
    assert_eq!(response.status, status, "{body}");
    assert!(is_json(response), "Content-Type: {:?}", response.headers);
    let value = response.json();
    let outer = value.as_object().unwrap_or_else(|| panic!("{body}"));
    assert_eq!(
        outer.keys().collect::<Vec<_>>(),
        ["error"],
        "only 'error': {body}"
    );
    let error = value["error"]
        .as_object()
        .unwrap_or_else(|| panic!("{body}"));
    let mut keys: Vec<_> = error.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["code", "message"], "{body}");
    assert_eq!(error["code"], code, "{body}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "message is a non-empty string: {body}"
    );
}

fn create(addr: SocketAddr, body: &str) -> HttpResponse {
    http(addr, "POST", "/topics", Some(body), &[])
}

// ---- topics -------------------------------------------------------------------

#[test]
fn create_topic_is_201_with_the_exact_body() {
    let broker = TestBroker::start();
    let response = create(broker.addr, r#"{"name":"orders"}"#);
    assert_eq!(response.status, 201);
    assert!(is_json(&response), "{:?}", response.headers);
    assert_eq!(
        response.json(),
        json!({"status":"created","topic":"orders"})
    );
    assert_eq!(topic_list(broker.addr), [("orders".to_string(), 0)]);
}

#[test]
fn creating_an_existing_topic_is_409_conflict() {
    let broker = TestBroker::start();
    broker.create_topic("orders");
    assert_error(
        &create(broker.addr, r#"{"name":"orders"}"#),
        409,
        "CONFLICT",
    );
    assert_eq!(topic_list(broker.addr).len(), 1);
}

#[test]
fn bad_create_bodies_are_400_bad_request() {
    let broker = TestBroker::start();
    for body in [
        "{",
        "not json",
        "",
        "[]",
        "{}",
        r#"{"topic":"orders"}"#,
        r#"{"name":null}"#,
        r#"{"name":5}"#,
        r#"{"name":["a"]}"#,
        r#"{"name":{"x":1}}"#,
    ] {
        let response = create(broker.addr, body);
        assert_eq!(response.status, 400, "{body:?}");
        assert_error(&response, 400, "BAD_REQUEST");
    }
    assert!(topic_list(broker.addr).is_empty());
}

#[test]
fn a_body_that_is_not_an_object_is_400_naming_it_and_creates_nothing() {
    let broker = TestBroker::start();
    for body in [r#"["x"]"#, r#"[["x"]]"#, r#""x""#, "7", "true", "null"] {
        let response = create(broker.addr, body);
        assert_error(&response, 400, "BAD_REQUEST");
        assert_eq!(
            response.json()["error"]["message"],
            "the body must be a JSON object",
            "{body}"
        );
    }
    for name in [r#"["x"]"#, r#"[["x"]]"#, "7", "false", r#"{"x":"y"}"#] {
        let response = create(broker.addr, &format!(r#"{{"name":{name}}}"#));
        assert_error(&response, 400, "BAD_REQUEST");
        assert_eq!(
            response.json()["error"]["message"],
            "field 'name' must be a string",
            "{name}"
        );
    }
    assert!(topic_list(broker.addr).is_empty());
}

#[test]
fn invalid_topic_names_are_400_and_255_bytes_is_fine() {
    let broker = TestBroker::start();
    let invalid = [
        String::new(),
        "x".repeat(256),
        // 128 two-byte characters: 128 characters but 256 bytes.
        "é".repeat(128),
        "a/b".to_string(),
        "/".to_string(),
        "a\u{0}b".to_string(),
        "a\u{1}b".to_string(),
        "line\nbreak".to_string(),
        "tab\there".to_string(),
        "del\u{7f}".to_string(),
    ];
    for name in &invalid {
        let response = create(broker.addr, &json!({ "name": name }).to_string());
        assert_eq!(response.status, 400, "name {name:?} must be refused");
        assert_error(&response, 400, "BAD_REQUEST");
    }
    assert!(topic_list(broker.addr).is_empty());

    let long = "x".repeat(255);
    // 127 two-byte characters and one more byte: 255 bytes.
    let long_utf8 = format!("{}a", "é".repeat(127));
    for name in [
        &long,
        &long_utf8,
        &"a".to_string(),
        &"first topic".to_string(),
    ] {
        let response = create(broker.addr, &json!({ "name": name }).to_string());
        assert_eq!(response.status, 201, "name {name:?} is valid");
        assert_eq!(response.json(), json!({"status":"created","topic":name}));
    }
    assert_eq!(topic_list(broker.addr).len(), 4);
}

#[test]
fn delete_topic_is_200_then_404_topic_not_found() {
    let broker = TestBroker::start();
    broker.create_topic("orders");
    broker.create_topic("other");
    let response = http(broker.addr, "DELETE", "/topics/orders", None, &[]);
    assert_eq!(response.status, 200);
    assert!(is_json(&response), "{:?}", response.headers);
    assert_eq!(
        response.json(),
        json!({"status":"deleted","topic":"orders"})
    );
    assert_eq!(topic_list(broker.addr), [("other".to_string(), 0)]);
    assert_error(
        &http(broker.addr, "DELETE", "/topics/orders", None, &[]),
        404,
        "TOPIC_NOT_FOUND",
    );
    assert_error(
        &http(broker.addr, "DELETE", "/topics/never", None, &[]),
        404,
        "TOPIC_NOT_FOUND",
    );
    // The name can be created again.
    broker.create_topic("orders");
}

#[test]
fn delete_percent_decodes_the_name() {
    let broker = TestBroker::start();
    broker.create_topic("first topic");
    broker.create_topic("café");
    let response = http(broker.addr, "DELETE", "/topics/first%20topic", None, &[]);
    assert_eq!(response.status, 200);
    assert_eq!(
        response.json(),
        json!({"status":"deleted","topic":"first topic"})
    );
    let response = http(broker.addr, "DELETE", "/topics/caf%C3%A9", None, &[]);
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["topic"], "café");
    assert!(topic_list(broker.addr).is_empty());
}

#[test]
fn topics_are_listed_sorted_by_name() {
    let broker = TestBroker::start();
    assert_eq!(
        http_json(broker.addr, "GET", "/topics", None, &[]),
        (200, json!({"topics":[]}))
    );
    for name in ["orders", "alpha", "zeta", "mid", "first topic"] {
        broker.create_topic(name);
    }
    let response = http(broker.addr, "GET", "/topics", None, &[]);
    assert_eq!(response.status, 200);
    assert!(is_json(&response), "{:?}", response.headers);
    assert_eq!(
        response.json(),
        json!({"topics":[
            {"name":"alpha","subscribers":0},
            {"name":"first topic","subscribers":0},
            {"name":"mid","subscribers":0},
            {"name":"orders","subscribers":0},
            {"name":"zeta","subscribers":0},
        ]})
    );
}

#[test]
fn subscriber_counts_follow_websocket_subscriptions() {
    let broker = TestBroker::start();
    broker.create_topic("a");
    broker.create_topic("b");
    let mut one = broker.client();
    let mut two = broker.client();
    one.subscribe("a", 0);
    assert_eq!(
        topic_list(broker.addr),
        [("a".to_string(), 1), ("b".to_string(), 0)]
    );
    two.subscribe("a", 0);
    two.subscribe("b", 0);
    assert_eq!(
        topic_list(broker.addr),
        [("a".to_string(), 2), ("b".to_string(), 1)]
    );

    two.send(json!({"type":"unsubscribe","topic":"a","client_id":"c","request_id":"u"}));
    two.expect("ack");
    assert_eq!(subscribers(broker.addr, "a"), Some(1));

    drop(one);
    eventually("the closed connection's subscription is gone", || {
        subscribers(broker.addr, "a") == Some(0)
    });
    assert_eq!(subscribers(broker.addr, "b"), Some(1));
}

#[test]
fn health_counts_topics_and_sums_subscribers() {
    let broker = TestBroker::start();
    let response = http(broker.addr, "GET", "/health", None, &[]);
    assert_eq!(response.status, 200);
    assert!(is_json(&response), "{:?}", response.headers);
    let health = response.json();
    assert!(health["uptime_sec"].is_u64(), "{health}");
    assert_eq!(
        (health["topics"].as_u64(), health["subscribers"].as_u64()),
        (Some(0), Some(0)),
        "{health}"
    );

    broker.create_topic("a");
    broker.create_topic("b");
    let mut one = broker.client();
    let mut two = broker.client();
    one.subscribe("a", 0);
    one.subscribe("b", 0);
    two.subscribe("a", 0);
    let (status, health) = http_json(broker.addr, "GET", "/health", None, &[]);
    assert_eq!(status, 200);
    assert!(health["uptime_sec"].is_u64(), "{health}");
    assert_eq!(
        (health["topics"].as_u64(), health["subscribers"].as_u64()),
        (Some(2), Some(3)),
        "{health}"
    );
}

#[test]
fn stats_count_messages_ever_published_and_subscribers() {
    let broker = TestBroker::start();
    let (status, stats) = http_json(broker.addr, "GET", "/stats", None, &[]);
    assert_eq!(status, 200);
    assert_eq!(stats["topics"], json!({}), "{stats}");

    broker.create_topic("orders");
    broker.create_topic("quiet");
    let mut sub = broker.client();
    sub.subscribe("orders", 0);
    let mut publisher = broker.client();
    for i in 0..3 {
        publisher.publish("orders", &format!("m{i}"), json!(i));
    }
    let response = http(broker.addr, "GET", "/stats", None, &[]);
    assert_eq!(response.status, 200);
    assert!(is_json(&response), "{:?}", response.headers);
    let stats = response.json();
    assert_eq!(stats["topics"]["orders"]["messages"], 3, "{stats}");
    assert_eq!(stats["topics"]["orders"]["subscribers"], 1, "{stats}");
    assert_eq!(stats["topics"]["quiet"]["messages"], 0, "{stats}");
    assert_eq!(stats["topics"]["quiet"]["subscribers"], 0, "{stats}");

    // Messages ever published: unsubscribing does not lower the count, and
    // messages published with nobody listening count too.
    for _ in 0..3 {
        sub.expect("event");
    }
    sub.send(json!({"type":"unsubscribe","topic":"orders","client_id":"c","request_id":"u"}));
    sub.expect("ack");
    publisher.publish("orders", "m3", json!(3));
    let (_, stats) = http_json(broker.addr, "GET", "/stats", None, &[]);
    assert_eq!(stats["topics"]["orders"]["messages"], 4, "{stats}");
    assert_eq!(stats["topics"]["orders"]["subscribers"], 0, "{stats}");
}

#[test]
fn unknown_paths_are_404_not_found() {
    let broker = TestBroker::start();
    for (method, path) in [
        ("GET", "/index.html"),
        ("GET", "/nope"),
        ("GET", "/healthz"),
        ("GET", "/topics/a/b"),
        ("DELETE", "/nope"),
    ] {
        let response = http(broker.addr, method, path, None, &[]);
        assert_eq!(response.status, 404, "{method} {path}");
        assert_error(&response, 404, "NOT_FOUND");
    }
    let response = http(broker.addr, "POST", "/nope", Some("{}"), &[]);
    assert_error(&response, 404, "NOT_FOUND");
}

#[test]
fn wrong_method_is_405_with_an_allow_header() {
    let broker = TestBroker::start();
    for (method, path, allowed) in [
        ("DELETE", "/topics", &["GET", "POST"][..]),
        ("PUT", "/topics", &["GET", "POST"][..]),
        ("PUT", "/topics/x", &["DELETE", "GET"][..]),
        ("POST", "/topics/x", &["DELETE", "GET"][..]),
        ("PUT", "/topics/x/messages", &["GET", "POST"][..]),
        ("POST", "/health", &["GET"][..]),
        ("DELETE", "/stats", &["GET"][..]),
    ] {
        let body = (method == "POST" || method == "PUT").then_some("{}");
        let response = http(broker.addr, method, path, body, &[]);
        assert_eq!(response.status, 405, "{method} {path}");
        assert_error(&response, 405, "METHOD_NOT_ALLOWED");
        let allow = response
            .header("Allow")
            .unwrap_or_else(|| panic!("{method} {path}: no Allow in {:?}", response.headers));
        let mut listed: Vec<&str> = allow.split(',').map(str::trim).collect();
        listed.sort_unstable();
        assert_eq!(listed, allowed, "{method} {path}: Allow: {allow}");
    }
}

// ---- HTTP/1.1 on raw sockets ---------------------------------------------------

#[test]
fn keep_alive_serves_requests_one_after_another() {
    let broker = TestBroker::start();
    let mut conn = HttpConn::open(broker.addr);
    let first = conn.request("POST", "/topics", Some(r#"{"name":"ka"}"#));
    assert_eq!(first.status, 201);
    assert_ne!(
        first.header("Connection").map(str::to_ascii_lowercase),
        Some("close".to_string())
    );
    let second = conn.request("GET", "/topics", None);
    assert_eq!(second.status, 200);
    assert_eq!(
        second.json(),
        json!({"topics":[{"name":"ka","subscribers":0}]})
    );
    assert_eq!(conn.request("GET", "/health", None).status, 200);
}

#[test]
fn pipelined_requests_in_one_write_are_answered_in_order() {
    let broker = TestBroker::start();
    let mut conn = HttpConn::open(broker.addr);
    let mut bytes = String::new();
    bytes.push_str(&request_text("GET", "/health", None));
    bytes.push_str(&request_text("POST", "/topics", Some(r#"{"name":"p1"}"#)));
    bytes.push_str(&request_text("GET", "/topics", None));
    bytes.push_str(&request_text("POST", "/topics", Some(r#"{"name":"p1"}"#)));
    bytes.push_str(&request_text("GET", "/nope", None));
    conn.send(bytes.as_bytes());

    let health = conn.response();
    assert_eq!(health.status, 200);
    assert!(health.json()["uptime_sec"].is_u64());
    let created = conn.response();
    assert_eq!(created.status, 201);
    assert_eq!(created.json(), json!({"status":"created","topic":"p1"}));
    let listed = conn.response();
    assert_eq!(listed.status, 200);
    assert_eq!(
        listed.json(),
        json!({"topics":[{"name":"p1","subscribers":0}]})
    );
    assert_error(&conn.response(), 409, "CONFLICT");
    assert_error(&conn.response(), 404, "NOT_FOUND");
    // The connection is still usable.
    assert_eq!(conn.request("GET", "/stats", None).status, 200);
}

#[test]
fn a_request_split_across_writes_is_served() {
    let broker = TestBroker::start();
    let mut conn = HttpConn::open(broker.addr);
    let request = request_text("POST", "/topics", Some(r#"{"name":"split"}"#));
    let bytes = request.as_bytes();
    let head_end = request.find("\r\n\r\n").unwrap() + 4;
    // Mid request line, mid header name, at the end of the head, mid body.
    let cuts = [9, 40, head_end, head_end + 5, bytes.len()];
    let mut start = 0;
    for cut in cuts {
        conn.send(&bytes[start..cut]);
        start = cut;
        std::thread::sleep(Duration::from_millis(30));
    }
    let response = conn.response();
    assert_eq!(response.status, 201);
    assert_eq!(response.json(), json!({"status":"created","topic":"split"}));

    // A GET head split mid-line, on the same connection.
    conn.send(b"GET /top");
    std::thread::sleep(Duration::from_millis(30));
    conn.send(b"ics HTTP/1.1\r\nHo");
    std::thread::sleep(Duration::from_millis(30));
    conn.send(b"st: test\r\n\r\n");
    let response = conn.response();
    assert_eq!(response.status, 200);
    assert_eq!(
        response.json(),
        json!({"topics":[{"name":"split","subscribers":0}]})
    );
}

#[test]
fn connection_close_gets_the_response_then_end_of_stream() {
    let broker = TestBroker::start();
    let mut conn = HttpConn::open(broker.addr);
    conn.send(b"GET /health HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    let response = conn.response();
    assert_eq!(response.status, 200);
    assert!(response.json()["uptime_sec"].is_u64());
    let mut byte = [0u8; 1];
    assert_eq!(
        conn.reader.read(&mut byte).expect("end of stream"),
        0,
        "the server closes after a Connection: close request"
    );
}

#[test]
fn post_without_content_length_is_411() {
    let broker = TestBroker::start();
    let mut conn = HttpConn::open(broker.addr);
    conn.send(b"POST /topics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    assert_error(&conn.response(), 411, "LENGTH_REQUIRED");

    // A chunked body has no Content-Length either.
    let mut conn = HttpConn::open(broker.addr);
    conn.send(
        b"POST /topics HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n11\r\n{\"name\":\"orders\"}\r\n0\r\n\r\n",
    );
    assert_error(&conn.response(), 411, "LENGTH_REQUIRED");
    assert!(topic_list(broker.addr).is_empty());
}

#[test]
fn a_wrong_method_is_405_before_any_complaint_about_the_body() {
    let broker = TestBroker::start();
    let mut conn = HttpConn::open(broker.addr);
    conn.send(b"POST /health HTTP/1.1\r\nHost: test\r\n\r\n");
    let response = conn.response();
    assert_error(&response, 405, "METHOD_NOT_ALLOWED");
    assert_eq!(response.header("Allow"), Some("GET"));
    // No body followed, so the connection serves the next request.
    assert_eq!(conn.request("GET", "/health", None).status, 200);
    conn.send(b"PUT /stats HTTP/1.1\r\nHost: test\r\nContent-Length: 65537\r\n\r\n");
    assert_error(&conn.response(), 405, "METHOD_NOT_ALLOWED");
    conn.assert_closed();
}

#[test]
fn body_over_64_kib_is_413_and_the_connection_closes() {
    let broker = TestBroker::start();
    let mut conn = HttpConn::open(broker.addr);
    conn.send(
        b"POST /topics HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 65537\r\n\r\n{\"name\":\"big\"",
    );
    let response = conn.response();
    assert_error(&response, 413, "PAYLOAD_TOO_LARGE");
    assert_eq!(
        response.header("Connection").map(str::to_ascii_lowercase),
        Some("close".to_string())
    );
    conn.assert_closed();
    assert!(topic_list(broker.addr).is_empty());
}

#[test]
fn body_of_exactly_64_kib_is_accepted() {
    let broker = TestBroker::start();
    let prefix = r#"{"name":"edge","pad":""#;
    let suffix = r#""}"#;
    let body = format!(
        "{prefix}{}{suffix}",
        "x".repeat(65536 - prefix.len() - suffix.len())
    );
    assert_eq!(body.len(), 65536);
    let mut conn = HttpConn::open(broker.addr);
    let response = conn.request("POST", "/topics", Some(&body));
    assert_eq!(
        response.status,
        201,
        "{:?}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(response.json(), json!({"status":"created","topic":"edge"}));
}

#[test]
fn head_over_16_kib_is_431_and_the_connection_closes() {
    let broker = TestBroker::start();
    let mut conn = HttpConn::open(broker.addr);
    let head = format!(
        "GET /topics HTTP/1.1\r\nHost: test\r\nX-Padding: {}\r\n\r\n",
        "a".repeat(17 * 1024)
    );
    conn.send(head.as_bytes());
    let response = conn.response();
    assert_error(&response, 431, "HEADERS_TOO_LARGE");
    assert_eq!(
        response.header("Connection").map(str::to_ascii_lowercase),
        Some("close".to_string())
    );
    conn.assert_closed();
}

#[test]
fn a_head_just_under_16_kib_is_served() {
    let broker = TestBroker::start();
    let mut conn = HttpConn::open(broker.addr);
    let head = format!(
        "GET /health HTTP/1.1\r\nHost: test\r\nX-Padding: {}\r\n\r\n",
        "a".repeat(15 * 1024)
    );
    conn.send(head.as_bytes());
    assert_eq!(conn.response().status, 200);
}

#[test]
fn garbage_request_line_is_400_and_the_connection_closes() {
    let broker = TestBroker::start();
    for garbage in [
        &b"this is not http\r\n\r\n"[..],
        &b"\x00\x01\x02garbage\r\n\r\n"[..],
    ] {
        let mut conn = HttpConn::open(broker.addr);
        conn.send(garbage);
        let response = conn.response();
        assert_error(&response, 400, "BAD_REQUEST");
        assert_eq!(
            response.header("Connection").map(str::to_ascii_lowercase),
            Some("close".to_string())
        );
        conn.assert_closed();
    }
}

#[test]
fn keep_alive_survives_a_404_and_a_405() {
    let broker = TestBroker::start();
    let mut conn = HttpConn::open(broker.addr);
    assert_error(&conn.request("GET", "/nope", None), 404, "NOT_FOUND");
    assert_eq!(conn.request("GET", "/health", None).status, 200);
    conn.send(b"DELETE /topics HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_error(&conn.response(), 405, "METHOD_NOT_ALLOWED");
    let response = conn.request("POST", "/topics", Some(r#"{"name":"after"}"#));
    assert_eq!(response.status, 201);
    let _: Value = response.json();
}
