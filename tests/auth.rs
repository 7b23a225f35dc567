//! Authentication: with `API_KEY` set, REST calls and the WebSocket upgrade
//! need the key (`X-API-Key`, or `?api_key=` on /ws); `/health` does not.
//! Without it (or with it empty), nothing needs a key.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{BufReader, Write};
use std::net::TcpStream;
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;

const KEY: &str = "s3cret";

fn keyed() -> TestBroker {
    TestBroker::with(&[("API_KEY", KEY)])
}

fn with_key(key: &str) -> [(&str, &str); 1] {
    [("X-API-Key", key)]
}

/// A 401 with the error body `UNAUTHORIZED`.
fn assert_unauthorized(response: &HttpResponse, what: &str) {
    assert_eq!(
        response.status,
        401,
        "{what}: {}",
        String::from_utf8_lossy(&response.body)
    );
    assert!(
        response
            .header("Content-Type")
            .is_some_and(|v| v.starts_with("application/json")),
        "{what}: {:?}",
        response.headers
    );
    let body = response.json();
    assert_eq!(body["error"]["code"], "UNAUTHORIZED", "{what}: {body}");
    assert!(body["error"]["message"].is_string(), "{what}: {body}");
}

/// The upgrade of `request` must be refused with HTTP 401.
fn assert_upgrade_refused(request: impl IntoClientRequest, what: &str) {
    match tungstenite::connect(request) {
        Ok((_, response)) => panic!("{what}: upgraded with {}", response.status()),
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401, "{what}");
            if let Some(body) = response.body() {
                let body: Value = serde_json::from_slice(body).expect("JSON error body");
                assert_eq!(body["error"]["code"], "UNAUTHORIZED", "{what}: {body}");
            }
        }
        Err(e) => panic!("{what}: expected HTTP 401, got {e}"),
    }
}

#[test]
fn rest_without_a_key_is_401_unauthorized() {
    let broker = keyed();
    for (method, path, body) in [
        ("GET", "/topics", None),
        ("POST", "/topics", Some(r#"{"name":"orders"}"#)),
        ("DELETE", "/topics/orders", None),
        ("GET", "/stats", None),
    ] {
        let response = http(broker.addr, method, path, body, &[]);
        assert_unauthorized(&response, &format!("{method} {path}"));
    }
    // The refused POST created nothing.
    let (status, body) = http_json(broker.addr, "GET", "/topics", None, &with_key(KEY));
    assert_eq!((status, body), (200, json!({"topics":[]})));
}

#[test]
fn rest_with_a_wrong_key_is_401() {
    let broker = keyed();
    for wrong in ["wrong", "s3cre", "s3cret2", "S3CRET", " "] {
        let response = http(broker.addr, "GET", "/topics", None, &with_key(wrong));
        assert_unauthorized(&response, &format!("key {wrong:?}"));
        let response = http(
            broker.addr,
            "POST",
            "/topics",
            Some(r#"{"name":"x"}"#),
            &with_key(wrong),
        );
        assert_unauthorized(&response, &format!("POST with key {wrong:?}"));
    }
    let (_, body) = http_json(broker.addr, "GET", "/topics", None, &with_key(KEY));
    assert_eq!(body, json!({"topics":[]}));
}

#[test]
fn rest_with_the_right_key_works() {
    let broker = keyed();
    let key = with_key(KEY);
    assert_eq!(
        http_json(
            broker.addr,
            "POST",
            "/topics",
            Some(r#"{"name":"orders"}"#),
            &key
        ),
        (201, json!({"status":"created","topic":"orders"}))
    );
    assert_eq!(
        http_json(broker.addr, "GET", "/topics", None, &key),
        (200, json!({"topics":[{"name":"orders","subscribers":0}]}))
    );
    let (status, stats) = http_json(broker.addr, "GET", "/stats", None, &key);
    assert_eq!(status, 200);
    assert_eq!(stats["topics"]["orders"]["messages"], 0, "{stats}");
    assert_eq!(
        http_json(broker.addr, "DELETE", "/topics/orders", None, &key),
        (200, json!({"status":"deleted","topic":"orders"}))
    );
    // Header names are case-insensitive.
    let (status, _) = http_json(broker.addr, "GET", "/topics", None, &[("x-api-key", KEY)]);
    assert_eq!(status, 200);
}

#[test]
fn health_needs_no_key() {
    let broker = keyed();
    let (status, health) = http_json(broker.addr, "GET", "/health", None, &[]);
    assert_eq!(status, 200, "{health}");
    assert!(health["uptime_sec"].is_u64(), "{health}");
    assert!(health["topics"].is_u64(), "{health}");
    assert!(health["subscribers"].is_u64(), "{health}");
}

#[test]
fn websocket_upgrade_without_a_key_is_refused_with_401() {
    let broker = keyed();
    assert_upgrade_refused(broker.ws_url(), "no key");

    // On the wire: a 401 response, no 101 and no upgrade.
    let mut stream = TcpStream::connect(broker.addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream
        .write_all(b"GET /ws HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        .unwrap();
    let response = read_response(&mut BufReader::new(stream));
    assert_unauthorized(&response, "raw upgrade without key");
    assert!(response.header("Sec-WebSocket-Accept").is_none());
    assert!(response.header("Upgrade").is_none());
}

#[test]
fn websocket_upgrade_with_a_wrong_key_is_refused_with_401() {
    let broker = keyed();
    let mut request = broker.ws_url().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("X-API-Key", HeaderValue::from_static("wrong"));
    assert_upgrade_refused(request, "wrong header key");
    assert_upgrade_refused(
        format!("{}?api_key=wrong", broker.ws_url()),
        "wrong query key",
    );
    assert_upgrade_refused(format!("{}?api_key=", broker.ws_url()), "empty query key");
    assert_upgrade_refused(
        format!("{}?api_key=s3cre", broker.ws_url()),
        "prefix of the key",
    );
}

#[test]
fn websocket_upgrade_with_the_header_key_works() {
    let broker = keyed();
    let mut request = broker.ws_url().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("X-API-Key", HeaderValue::from_static(KEY));
    let (ws, response) = tungstenite::connect(request).expect("upgrade with X-API-Key");
    assert_eq!(response.status(), 101);
    let mut client = Client::from_socket(ws);
    client.ping("auth");
}

#[test]
fn websocket_upgrade_with_the_query_key_works() {
    let broker = keyed();
    let (status, _) = http_json(
        broker.addr,
        "POST",
        "/topics",
        Some(r#"{"name":"orders"}"#),
        &with_key(KEY),
    );
    assert_eq!(status, 201);
    let mut client = Client::connect(&format!("{}?api_key={KEY}", broker.ws_url()));
    client.ping("auth");
    assert_eq!(client.subscribe("orders", 0)["status"], "ok");
}

#[test]
fn without_api_key_nothing_needs_a_key() {
    for broker in [TestBroker::start(), TestBroker::with(&[("API_KEY", "")])] {
        broker.create_topic("orders");
        assert_eq!(
            http_json(broker.addr, "GET", "/topics", None, &[]),
            (200, json!({"topics":[{"name":"orders","subscribers":0}]}))
        );
        assert_eq!(http_json(broker.addr, "GET", "/stats", None, &[]).0, 200);
        // A key that is sent anyway does no harm.
        assert_eq!(
            http_json(broker.addr, "GET", "/topics", None, &with_key("any")).0,
            200
        );
        let mut client = broker.client();
        client.ping("auth");
        assert_eq!(client.subscribe("orders", 0)["status"], "ok");
        assert_eq!(
            http_json(broker.addr, "DELETE", "/topics/orders", None, &[]).0,
            200
        );
    }
}
