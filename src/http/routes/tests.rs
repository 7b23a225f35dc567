//! Unit tests of the routes and handlers (`super`).

use super::*;
use crate::auth::TokenVerifier;
use crate::broker::delivery::{ConnectionKey, SubscriberQueue, WorkerMailbox};
use crate::broker::Replay;
use crate::http::gate::Gate;
use crate::http::{parse_request, Parsed};
use crate::metrics::WorkerMetrics;
use crate::protocol::{NOT_OBJECTS, NOT_STRINGS};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

struct World {
    broker: Broker,
    api_key: Option<&'static str>,
    tokens: Option<TokenVerifier>,
    origins: Vec<String>,
    draining: bool,
    metrics: Vec<Arc<WorkerMetrics>>,
}

impl World {
    fn new() -> World {
        World {
            broker: Broker::new(10),
            api_key: None,
            tokens: None,
            origins: Vec::new(),
            draining: false,
            metrics: vec![Arc::default(), Arc::default()],
        }
    }

    fn send(&self, raw: impl AsRef<[u8]>) -> Action {
        let ctx = RestContext {
            gate: Gate {
                api_key: self.api_key,
                tokens: self.tokens.as_ref(),
                allowed_origins: &self.origins,
            },
            draining: self.draining,
            uptime: Duration::from_secs(7),
            connections: 1,
            metrics: &self.metrics,
            ..RestContext::new(&self.broker)
        };
        match parse_request(raw.as_ref()) {
            Parsed::Complete(req, _) => settle(handle(&req, &ctx), &self.broker),
            other => panic!("{other:?}"),
        }
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &str,
    ) -> (u16, Value, Response) {
        let raw = match body {
            Some(body) => format!(
                "{method} {path} HTTP/1.1\r\n{headers}Content-Length: {}\r\n\r\n{body}",
                body.len()
            ),
            None => format!("{method} {path} HTTP/1.1\r\n{headers}\r\n"),
        };
        match self.send(&raw) {
            Action::Respond(r) => (r.status, serde_json::from_str(&r.body).unwrap(), r),
            other => panic!("not a response: {other:?}"),
        }
    }

    fn request(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let (status, body, _) = self.call(method, path, body, "");
        (status, body)
    }
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap()
}

#[test]
fn topic_lifecycle() {
    let w = World::new();
    assert_eq!(
        w.request("POST", "/topics", Some(r#"{"name":"orders"}"#)),
        (201, json!({"status":"created","topic":"orders"}))
    );
    let (status, body) = w.request("POST", "/topics", Some(r#"{"name":"orders"}"#));
    assert_eq!((status, code(&body)), (409, "CONFLICT"));
    w.request("POST", "/topics", Some(r#"{"name":"first topic"}"#));
    assert_eq!(
        w.request("GET", "/topics", None),
        (
            200,
            json!({"topics":[{"name":"first topic","subscribers":0},{"name":"orders","subscribers":0}]})
        )
    );
    assert_eq!(
        w.request("DELETE", "/topics/first%20topic", None),
        (200, json!({"status":"deleted","topic":"first topic"}))
    );
    let (status, body) = w.request("DELETE", "/topics/first%20topic", None);
    assert_eq!((status, code(&body)), (404, "TOPIC_NOT_FOUND"));
    assert_eq!(
        w.request("GET", "/topics", None).1["topics"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn create_validates_the_body() {
    let w = World::new();
    for (body, needle) in [
        ("{", "invalid JSON"),
        ("[]", "JSON object"),
        ("{}", "missing field 'name'"),
        (r#"{"name":null}"#, "missing field 'name'"),
        (r#"{"name":5}"#, "'name' must be a string"),
        (r#"{"name":""}"#, "empty"),
        (r#"{"name":"a/b"}"#, "'/'"),
        (r#"{"name":"a\u0001"}"#, "control"),
    ] {
        let (status, v) = w.request("POST", "/topics", Some(body));
        assert_eq!((status, code(&v)), (400, "BAD_REQUEST"), "{body}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{body}: {v}"
        );
    }
    let long = "x".repeat(256);
    assert_eq!(
        w.request("POST", "/topics", Some(&format!(r#"{{"name":"{long}"}}"#)))
            .0,
        400
    );
    assert_eq!(
        w.request(
            "POST",
            "/topics",
            Some(&format!(r#"{{"name":"{}"}}"#, &long[..255]))
        )
        .0,
        201
    );
}

#[test]
fn create_refuses_a_body_that_is_not_an_object() {
    let w = World::new();
    for body in NOT_OBJECTS {
        let (status, v) = w.request("POST", "/topics", Some(body));
        assert_eq!(
            (status, code(&v), v["error"]["message"].as_str()),
            (400, "BAD_REQUEST", Some("the body must be a JSON object")),
            "{body}"
        );
    }
    for name in NOT_STRINGS {
        let body = format!(r#"{{"name":{name}}}"#);
        let (status, v) = w.request("POST", "/topics", Some(&body));
        assert_eq!(
            (status, code(&v), v["error"]["message"].as_str()),
            (400, "BAD_REQUEST", Some("field 'name' must be a string")),
            "{body}"
        );
    }
    let (status, v) = w.request("POST", "/topics", Some(r#"{"name":"a","name":"b"}"#));
    assert_eq!(
        (status, code(&v), v["error"]["message"].as_str()),
        (
            400,
            "BAD_REQUEST",
            Some("the body is invalid: duplicate field `name`")
        )
    );
    let Action::Respond(r) =
        w.send(b"POST /topics HTTP/1.1\r\nContent-Length: 12\r\n\r\n{\"name\":\"\xff\"}")
    else {
        panic!("no upgrade here")
    };
    assert_eq!(
        (r.status, r.body.contains("invalid JSON")),
        (400, true),
        "{}",
        r.body
    );
    assert!(w.broker.summaries().is_empty(), "no topic was created");
}

#[test]
fn health_and_stats_count_subscriptions_and_messages() {
    let w = World::new();
    let topic = w.broker.create_topic("orders").unwrap();
    let mailbox = WorkerMailbox::unpolled();
    let q = Arc::new(SubscriberQueue::new(10, ConnectionKey::new(0, 0), mailbox));
    topic.subscribe(&q, Replay::LastN(0), false).unwrap();
    for _ in 0..3 {
        topic
            .publish(
                RawValue::from_string(r#"{"id":"m","payload":1}"#.into())
                    .unwrap()
                    .as_ref()
                    .into(),
            )
            .unwrap();
    }
    let (status, health) = w.request("GET", "/health", None);
    assert_eq!(status, 200);
    assert_eq!(
        (
            health["uptime_sec"].as_u64(),
            health["topics"].as_u64(),
            health["subscribers"].as_u64()
        ),
        (Some(7), Some(1), Some(1))
    );
    let (status, stats) = w.request("GET", "/stats", None);
    assert_eq!(status, 200);
    assert_eq!(stats["topics"]["orders"]["messages"], 3);
    assert_eq!(stats["topics"]["orders"]["subscribers"], 1);
    assert_eq!(stats["topics"]["orders"]["delivered"], 3);
}

#[test]
fn unknown_paths_and_wrong_methods() {
    let w = World::new();
    for path in [
        "/index.html",
        "/nope",
        "/topics/",
        "/topics/a/b",
        "/health/x",
    ] {
        let (status, body) = w.request("GET", path, None);
        assert_eq!((status, code(&body)), (404, "NOT_FOUND"), "{path}");
    }
    for (method, path, allow) in [
        ("DELETE", "/topics", "GET, POST"),
        ("PUT", "/topics/x", "GET, DELETE"),
        ("DELETE", "/topics/x/messages", "GET, POST"),
        ("POST", "/health", "GET"),
        ("PUT", "/stats", "GET"),
        ("POST", "/ws", "GET"),
    ] {
        let (status, body, r) = w.call(
            method,
            path,
            if method == "GET" { None } else { Some("{}") },
            "",
        );
        assert_eq!(
            (status, code(&body)),
            (405, "METHOD_NOT_ALLOWED"),
            "{method} {path}"
        );
        assert!(
            r.headers.contains(&("Allow", allow.to_string())),
            "{method} {path}: {:?}",
            r.headers
        );
    }
}

#[test]
fn api_key_guards_everything_but_health() {
    let mut w = World::new();
    w.api_key = Some("s3cret");
    let (status, body, _) = w.call("GET", "/topics", None, "");
    assert_eq!((status, code(&body)), (401, "UNAUTHORIZED"));
    assert_eq!(
        w.call("GET", "/topics", None, "X-API-Key: wrong\r\n").0,
        401
    );
    assert_eq!(
        w.call("GET", "/topics", None, "x-api-key: s3cret\r\n").0,
        200
    );
    assert_eq!(
        w.call("GET", "/stats?api_key=s3cret", None, "").0,
        401,
        "the query key is for /ws only"
    );
    assert_eq!(w.call("GET", "/health", None, "").0, 200);
    assert_eq!(w.call("GET", "/nope", None, "").0, 401);
    let upgrade = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    assert_eq!(w.call("GET", "/ws", None, upgrade).0, 401);
    assert!(matches!(
        w.send(format!("GET /ws?api_key=s3cret HTTP/1.1\r\n{upgrade}\r\n")),
        Action::Upgrade(..)
    ));
    assert!(matches!(
        w.send(format!(
            "GET /ws HTTP/1.1\r\nX-API-Key: s3cret\r\n{upgrade}\r\n"
        )),
        Action::Upgrade(..)
    ));
}

#[test]
fn console_files_need_no_key_and_only_get() {
    let mut w = World::new();
    w.api_key = Some("s3cret");
    #[cfg(not(feature = "autobahn"))]
    let paths = ["/", "/console.js", "/pubsub.js", "/console.css"];
    #[cfg(feature = "autobahn")]
    let paths = ["/console.js", "/pubsub.js", "/console.css"];
    for path in paths {
        let raw = format!("GET {path} HTTP/1.1\r\n\r\n");
        let Action::Respond(response) = w.send(&raw) else {
            panic!("no upgrade here")
        };
        assert_eq!(response.status, 200, "{path}");
        assert_eq!(
            w.call("POST", path, Some("{}"), "X-API-Key: s3cret\r\n").0,
            405
        );
    }
    assert_eq!(w.call("GET", "/topics", None, "").0, 401);
}

#[test]
fn draining_refuses_all_but_health() {
    let mut w = World::new();
    w.draining = true;
    let (status, body, r) = w.call("GET", "/topics", None, "");
    assert_eq!((status, code(&body), r.close), (503, "SHUTTING_DOWN", true));
    let (status, body) = w.request("GET", "/health", None);
    assert_eq!((status, body["status"].as_str()), (200, Some("draining")));
}

#[test]
fn readiness_needs_no_key_and_turns_503_when_draining() {
    let mut w = World::new();
    w.api_key = Some("k");
    assert_eq!(
        w.request("GET", "/readyz", None),
        (200, json!({"status":"ready"}))
    );
    w.draining = true;
    assert_eq!(
        w.request("GET", "/readyz", None),
        (503, json!({"status":"draining"}))
    );
}

#[test]
fn metrics_are_prometheus_text_behind_the_key() {
    let mut w = World::new();
    w.api_key = Some("k");
    w.broker.create_topic("t").unwrap();
    w.metrics[0].record_published();
    w.metrics[1].record_published();
    assert_eq!(w.call("GET", "/metrics", None, "").0, 401);
    let raw = "GET /metrics HTTP/1.1\r\nX-API-Key: k\r\n\r\n";
    let Action::Respond(response) = w.send(raw) else {
        panic!("no upgrade here")
    };
    assert_eq!(
        (response.status, response.content_type),
        (200, "text/plain; version=0.0.4")
    );
    assert!(
        response
            .body
            .contains("\npubsub_messages_published_total 2\n"),
        "{}",
        response.body
    );
    assert!(response.body.contains("\npubsub_topics 1\n"));
}

#[test]
fn stats_carry_per_topic_figures_and_totals() {
    let w = World::new();
    let topic = w.broker.create_topic("t").unwrap();
    topic
        .publish(
            RawValue::from_string(r#"{"id":"m","payload":1}"#.into())
                .unwrap()
                .as_ref()
                .into(),
        )
        .unwrap();
    w.metrics[1].record_delivered(4);
    let (status, stats) = w.request("GET", "/stats", None);
    assert_eq!(status, 200);
    assert_eq!(
        stats["topics"]["t"],
        json!({"messages":1,"subscribers":0,"delivered":0,"slow_consumer_disconnects":0,"ring":1,"last_seq":1})
    );
    assert_eq!(stats["totals"]["messages_delivered"], 4);
}
