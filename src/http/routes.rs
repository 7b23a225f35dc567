//! The REST routes and their handlers, and the gate in front of `/ws`:
//! authentication, routing, 404 and 405. Takes a parsed request and the
//! shared broker; returns a response or the decision to upgrade. No sockets.

use super::{Request, Response};
use crate::backplane::Backplane;
use crate::broker::change::{Change, Outcome};
use crate::broker::Broker;
use crate::metrics::{render_prometheus, BrokerGauges, MetricsSnapshot, WorkerMetrics};
use crate::protocol::{decode_object, validate_message, validate_topic_name};
use crate::ws::frame::text_payload;
use crate::ws::SessionKind;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;

/// What a handler needs of the world.
pub struct RestContext<'a> {
    pub broker: &'a Broker,
    pub api_key: Option<&'a str>,
    /// True once shutdown has begun.
    pub draining: bool,
    pub uptime: Duration,
    pub connections: usize,
    /// Every worker's counters.
    pub metrics: &'a [Arc<WorkerMetrics>],
    /// Where changes go; in cluster mode, what the cluster says.
    pub backplane: &'a Backplane,
}

/// The backplane of a context built without a server.
static LOCAL: Backplane = Backplane::Local;

impl<'a> RestContext<'a> {
    /// A context over `broker` alone: no key, not draining, no uptime, no
    /// connections, no counters. The server fills in the rest; tests and
    /// benchmarks override what they need.
    pub fn new(broker: &'a Broker) -> RestContext<'a> {
        RestContext {
            broker,
            api_key: None,
            draining: false,
            uptime: Duration::ZERO,
            connections: 0,
            metrics: &[],
            backplane: &LOCAL,
        }
    }
}

/// What to do with a request.
#[derive(Debug)]
pub enum Action {
    Respond(Response),
    /// Switch to WebSocket: write this `101` response, then frames.
    Upgrade(Vec<u8>, SessionKind),
    /// Carry out this change (a publish through the same path as a
    /// WebSocket publish), then answer with [`answer`].
    Change(Change),
}

/// The response to a change, once carried out.
pub fn answer(change: &Change, outcome: Outcome) -> Response {
    match (change, outcome) {
        (Change::Create { name }, Outcome::Created) => {
            log::info!(topic = name.as_str(); "topic created");
            Response::json(
                201,
                &TopicStatus {
                    status: "created",
                    topic: name,
                },
            )
        }
        (Change::Create { name }, Outcome::Exists) => {
            Response::error(409, "CONFLICT", &format!("topic '{name}' already exists"))
        }
        (_, Outcome::InvalidName(why)) => {
            Response::error(400, "BAD_REQUEST", &format!("invalid field 'name': {why}"))
        }
        (Change::Delete { name }, Outcome::Deleted) => {
            log::info!(topic = name.as_str(); "topic deleted");
            Response::json(
                200,
                &TopicStatus {
                    status: "deleted",
                    topic: name,
                },
            )
        }
        (Change::Publish { topic, .. }, Outcome::Published(seq)) => published(topic, seq),
        (Change::Delete { name } | Change::Publish { topic: name, .. }, Outcome::NoTopic) => {
            topic_not_found(name)
        }
        (_, Outcome::Unavailable(why)) => Response::error(503, "UNAVAILABLE", why),
        (change, outcome) => {
            log::error!(change:? = change, outcome:? = outcome; "a change had an outcome it cannot have");
            Response::error(500, "INTERNAL", "unexpected outcome")
        }
    }
}

/// Carries out a change on `broker` alone and answers it; other actions
/// are returned as they are. For what runs routes without a server (tests,
/// fuzzing, benchmarks).
pub fn settle(action: Action, broker: &Broker) -> Action {
    match action {
        Action::Change(change) => {
            let outcome = broker.carry_out(&change);
            Action::Respond(answer(&change, outcome))
        }
        other => other,
    }
}

/// Routes one request.
pub fn handle(req: &Request<'_>, ctx: &RestContext<'_>) -> Action {
    let route = Route::of(req.path);
    if route.needs_key() && !authorized(req, route, ctx.api_key) {
        return Action::Respond(Response::error(
            401,
            "UNAUTHORIZED",
            "missing or wrong API key",
        ));
    }
    if let Some(response) = misrouted(req.method, req.path) {
        return Action::Respond(response);
    }
    if ctx.draining && route.needs_key() {
        return Action::Respond(
            Response::error(503, "SHUTTING_DOWN", "the server is shutting down").closing(),
        );
    }
    if !ctx.backplane.is_up() && route.needs_backplane() {
        return Action::Respond(Response::error(
            503,
            "UNAVAILABLE",
            "the backplane cannot be reached",
        ));
    }
    let response = match route {
        Route::WebSocket => match crate::ws::accept_upgrade(req) {
            Ok(switching) => return Action::Upgrade(switching, SessionKind::PubSub),
            Err(response) => response,
        },
        Route::Topics if req.method == "POST" => return create_topic(req.body),
        Route::Topics => list_topics(ctx),
        Route::Topic(encoded) if req.method == "GET" => topic_detail(encoded, ctx),
        Route::Topic(encoded) => return delete_topic(encoded),
        Route::Messages(encoded) if req.method == "POST" => {
            return publish_message(encoded, req.body)
        }
        Route::Messages(encoded) => history(encoded, req, ctx),
        Route::Health => health(ctx),
        Route::Ready => ready(ctx),
        Route::Stats => stats(ctx),
        Route::Metrics => metrics(ctx),
        #[cfg(feature = "autobahn")]
        Route::Echo => match crate::ws::accept_upgrade(req) {
            Ok(switching) => return Action::Upgrade(switching, SessionKind::Echo),
            Err(response) => response,
        },
        Route::Unknown => unreachable!("unknown routes allow no method"),
    };
    Action::Respond(response)
}

/// 404 for a path no route takes, 405 with `Allow` for a method its route
/// does not allow; `None` for a request a route serves. The parser asks too,
/// before it refuses a body (a bodiless `POST /health` gets 405, not 411).
pub fn misrouted(method: &str, path: &str) -> Option<Response> {
    let allowed = Route::of(path).allowed_methods();
    if allowed.is_empty() {
        return Some(Response::error(
            404,
            "NOT_FOUND",
            &format!("no such path: {path}"),
        ));
    }
    if !allowed.contains(&method) {
        return Some(
            Response::error(
                405,
                "METHOD_NOT_ALLOWED",
                &format!("{method} is not allowed on {path}"),
            )
            .with_header("Allow", allowed.join(", ")),
        );
    }
    None
}

/// A REST publish, whose body may be as large as `MAX_MESSAGE_BYTES`.
pub fn is_publish(method: &str, path: &str) -> bool {
    method == "POST" && matches!(Route::of(path), Route::Messages(_))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route<'a> {
    WebSocket,
    Topics,
    /// `/topics/{name}`, the name still percent-encoded.
    Topic(&'a str),
    /// `/topics/{name}/messages`, the name still percent-encoded.
    Messages(&'a str),
    Health,
    Ready,
    Stats,
    Metrics,
    #[cfg(feature = "autobahn")]
    Echo,
    Unknown,
}

impl<'a> Route<'a> {
    fn of(path: &'a str) -> Route<'a> {
        match path {
            "/ws" => Route::WebSocket,
            "/topics" => Route::Topics,
            "/health" => Route::Health,
            "/readyz" => Route::Ready,
            "/stats" => Route::Stats,
            "/metrics" => Route::Metrics,
            #[cfg(feature = "autobahn")]
            "/" => Route::Echo,
            _ => {
                let Some(rest) = path.strip_prefix("/topics/") else {
                    return Route::Unknown;
                };
                let (name, messages) = match rest.strip_suffix("/messages") {
                    Some(name) => (name, true),
                    None => (rest, false),
                };
                match (name.is_empty() || name.contains('/'), messages) {
                    (true, _) => Route::Unknown,
                    (false, false) => Route::Topic(name),
                    (false, true) => Route::Messages(name),
                }
            }
        }
    }

    fn allowed_methods(self) -> &'static [&'static str] {
        match self {
            Route::WebSocket | Route::Health | Route::Ready | Route::Stats | Route::Metrics => {
                &["GET"]
            }
            Route::Topics => &["GET", "POST"],
            Route::Topic(_) => &["GET", "DELETE"],
            Route::Messages(_) => &["GET", "POST"],
            #[cfg(feature = "autobahn")]
            Route::Echo => &["GET"],
            Route::Unknown => &[],
        }
    }

    /// Cluster mode: what answers for the whole cluster, and so needs the
    /// backplane.
    fn needs_backplane(self) -> bool {
        matches!(self, Route::Topics | Route::Topic(_) | Route::Messages(_))
    }

    /// Probes answer without the API key, so that liveness and readiness
    /// checks work; and they keep answering while the server drains.
    fn needs_key(self) -> bool {
        !matches!(self, Route::Health | Route::Ready)
    }
}

/// `X-API-Key`, or for the WebSocket upgrade the `api_key` query parameter,
/// compared in constant time.
fn authorized(req: &Request<'_>, route: Route<'_>, api_key: Option<&str>) -> bool {
    let Some(expected) = api_key else { return true };
    let matches = |given: &[u8]| bool::from(given.ct_eq(expected.as_bytes()));
    if req.header("X-API-Key").is_some_and(matches) {
        return true;
    }
    route == Route::WebSocket
        && req
            .query_param("api_key")
            .is_some_and(|k| matches(k.as_bytes()))
}

#[derive(Deserialize)]
struct CreateTopicBody<'a> {
    #[serde(borrow)]
    name: Option<&'a RawValue>,
}

#[derive(Serialize)]
struct TopicStatus<'a> {
    status: &'static str,
    topic: &'a str,
}

fn create_topic(body: &[u8]) -> Action {
    let bad = |message: &str| Action::Respond(Response::error(400, "BAD_REQUEST", message));
    let Ok(text) = std::str::from_utf8(body) else {
        return bad("invalid JSON: the body is not UTF-8");
    };
    let parsed: CreateTopicBody<'_> = match decode_object(text, "the body") {
        Ok(parsed) => parsed,
        Err(message) => return bad(&message),
    };
    let Some(raw_name) = parsed.name.filter(|raw| raw.get() != "null") else {
        return bad("missing field 'name'");
    };
    let Ok(name) = serde_json::from_str::<String>(raw_name.get()) else {
        return bad("field 'name' must be a string");
    };
    if let Err(why) = validate_topic_name(&name) {
        return bad(&format!("invalid field 'name': {why}"));
    }
    Action::Change(Change::Create { name })
}

/// The topic name of a path, percent-decoded.
fn topic_name(encoded: &str) -> Result<Cow<'_, str>, Response> {
    percent_encoding::percent_decode_str(encoded)
        .decode_utf8()
        .map_err(|_| {
            Response::error(
                400,
                "BAD_REQUEST",
                "the topic name in the path is not valid UTF-8",
            )
        })
}

/// 404 `TOPIC_NOT_FOUND`.
pub fn topic_not_found(name: &str) -> Response {
    Response::error(
        404,
        "TOPIC_NOT_FOUND",
        &format!("topic '{name}' does not exist"),
    )
}

fn delete_topic(encoded: &str) -> Action {
    match topic_name(encoded) {
        Ok(name) => Action::Change(Change::Delete {
            name: name.into_owned(),
        }),
        Err(response) => Action::Respond(response),
    }
}

#[derive(Serialize)]
struct TopicDetail<'a> {
    name: &'a str,
    subscribers: usize,
    messages: u64,
    last_seq: u64,
    epoch: &'a str,
}

fn topic_detail(encoded: &str, ctx: &RestContext<'_>) -> Response {
    let name = match topic_name(encoded) {
        Ok(name) => name,
        Err(response) => return response,
    };
    let Some(topic) = ctx.broker.topic(&name) else {
        return topic_not_found(&name);
    };
    let summary = topic.summary();
    Response::json(
        200,
        &TopicDetail {
            name: &summary.name,
            subscribers: summary.subscribers
                + ctx.backplane.others_subscribers(&summary.name) as usize,
            messages: summary.messages,
            last_seq: summary.messages,
            epoch: &summary.epoch,
        },
    )
}

/// `POST /topics/{name}/messages`: the body is the `message` of a WebSocket
/// publish, checked the same way.
fn publish_message(encoded: &str, body: &[u8]) -> Action {
    let name = match topic_name(encoded) {
        Ok(name) => name,
        Err(response) => return Action::Respond(response),
    };
    let bad = |message: String| Action::Respond(Response::error(400, "BAD_REQUEST", &message));
    let Ok(text) = std::str::from_utf8(body) else {
        return bad("invalid JSON: the body is not UTF-8".into());
    };
    let message: Box<RawValue> = match serde_json::from_str(text) {
        Ok(message) => message,
        Err(e) => return bad(format!("invalid JSON: {e}")),
    };
    if let Err(e) = validate_message(&message, "the body", "") {
        return bad(e);
    }
    Action::Change(Change::Publish {
        topic: name.into_owned(),
        message,
    })
}

/// The answer to a REST publish that was given `seq`.
pub fn published(topic: &str, seq: u64) -> Response {
    #[derive(Serialize)]
    struct Published<'a> {
        status: &'static str,
        topic: &'a str,
        seq: u64,
    }
    Response::json(
        200,
        &Published {
            status: "published",
            topic,
            seq,
        },
    )
}

#[derive(Serialize)]
struct HistoryPage<'a> {
    topic: &'a str,
    epoch: &'a str,
    last_seq: u64,
    messages: Vec<HistoryEntry<'a>>,
}

#[derive(Serialize)]
struct HistoryEntry<'a> {
    seq: u64,
    message: &'a RawValue,
    ts: &'a str,
}

/// What a kept event frame says, for the history.
#[derive(Deserialize)]
struct KeptEvent<'a> {
    #[serde(borrow)]
    message: &'a RawValue,
    ts: &'a str,
}

/// `GET /topics/{name}/messages?since_seq=N&limit=M`: the held messages
/// after N (default 0), oldest first, at most M (default and maximum: the
/// ring size; a larger M is taken as the maximum).
fn history(encoded: &str, req: &Request<'_>, ctx: &RestContext<'_>) -> Response {
    let name = match topic_name(encoded) {
        Ok(name) => name,
        Err(response) => return response,
    };
    let ring = ctx.broker.ring_capacity();
    let since = match query_integer(req, "since_seq", 0) {
        Ok(since) => since,
        Err(response) => return response,
    };
    let limit = match query_integer(req, "limit", ring as u64) {
        Ok(0) => return Response::error(400, "BAD_REQUEST", "query 'limit' must be at least 1"),
        Ok(limit) => usize::try_from(limit).unwrap_or(usize::MAX).min(ring),
        Err(response) => return response,
    };
    let Some(topic) = ctx.broker.topic(&name) else {
        return topic_not_found(&name);
    };
    let history = topic.history(since, limit);
    let mut messages = Vec::with_capacity(history.events.len());
    for (seq, frame) in &history.events {
        let kept: KeptEvent<'_> = serde_json::from_slice(text_payload(frame))
            .expect("the broker's own event frames are JSON events");
        messages.push(HistoryEntry {
            seq: *seq,
            message: kept.message,
            ts: kept.ts,
        });
    }
    Response::json(
        200,
        &HistoryPage {
            topic: &name,
            epoch: &history.epoch,
            last_seq: history.last_seq,
            messages,
        },
    )
}

/// A query parameter that must be an integer >= 0 (decimal digits only),
/// or `default` if absent. Integers too large for `u64` saturate, as
/// `since_seq` does over WebSocket: "beyond the last message", and a
/// `limit` above the ring size.
fn query_integer(req: &Request<'_>, name: &str, default: u64) -> Result<u64, Response> {
    match req.query_param(name) {
        None => Ok(default),
        Some(text) if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(text.parse::<u64>().unwrap_or(u64::MAX))
        }
        Some(text) => Err(Response::error(
            400,
            "BAD_REQUEST",
            &format!("query '{name}' must be a non-negative integer, not '{text}'"),
        )),
    }
}

#[derive(Serialize)]
struct TopicListEntry {
    name: String,
    subscribers: usize,
}

#[derive(Serialize)]
struct TopicList {
    topics: Vec<TopicListEntry>,
}

fn list_topics(ctx: &RestContext<'_>) -> Response {
    let topics = ctx
        .broker
        .summaries()
        .into_iter()
        .map(|s| TopicListEntry {
            subscribers: s.subscribers + ctx.backplane.others_subscribers(&s.name) as usize,
            name: s.name,
        })
        .collect();
    Response::json(200, &TopicList { topics })
}

#[derive(Serialize)]
struct Health<'a> {
    uptime_sec: u64,
    topics: usize,
    subscribers: usize,
    connections: usize,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<ClusterHealth<'a>>,
}

/// Cluster mode: this node and whether it reaches the backplane.
#[derive(Serialize)]
struct ClusterHealth<'a> {
    node: &'a str,
    backplane: &'static str,
}

fn health(ctx: &RestContext<'_>) -> Response {
    let summaries = ctx.broker.summaries();
    Response::json(
        200,
        &Health {
            uptime_sec: ctx.uptime.as_secs(),
            topics: summaries.len(),
            subscribers: summaries.iter().map(|s| s.subscribers).sum(),
            connections: ctx.connections,
            status: if ctx.draining { "draining" } else { "ok" },
            cluster: ctx.backplane.cluster().map(|c| ClusterHealth {
                node: &c.node_id,
                backplane: if c.is_up() { "up" } else { "down" },
            }),
        },
    )
}

#[derive(Serialize)]
struct TopicStats {
    messages: u64,
    subscribers: usize,
    delivered: u64,
    slow_consumer_disconnects: u64,
    ring: usize,
    last_seq: u64,
}

#[derive(Serialize)]
struct Totals {
    connections: usize,
    websocket_connections: i64,
    messages_published: u64,
    messages_delivered: u64,
    slow_consumer_disconnects: u64,
    bytes_received: u64,
    bytes_sent: u64,
}

#[derive(Serialize)]
struct Stats {
    topics: BTreeMap<String, TopicStats>,
    totals: Totals,
    uptime_sec: u64,
    connections: usize,
}

fn stats(ctx: &RestContext<'_>) -> Response {
    let topics = ctx
        .broker
        .summaries()
        .into_iter()
        .map(|s| {
            let figures = TopicStats {
                messages: s.messages,
                subscribers: s.subscribers,
                delivered: s.delivered,
                slow_consumer_disconnects: s.slow_consumer_disconnects,
                ring: s.ring,
                last_seq: s.messages,
            };
            (s.name, figures)
        })
        .collect();
    let m = MetricsSnapshot::sum(ctx.metrics.iter().map(Arc::as_ref));
    let totals = Totals {
        connections: ctx.connections,
        websocket_connections: m.open_websocket,
        messages_published: m.published,
        messages_delivered: m.delivered,
        slow_consumer_disconnects: m.slow_consumer_disconnects(),
        bytes_received: m.bytes_received,
        bytes_sent: m.bytes_sent,
    };
    let stats = Stats {
        topics,
        totals,
        uptime_sec: ctx.uptime.as_secs(),
        connections: ctx.connections,
    };
    Response::json(200, &stats)
}

#[derive(Serialize)]
struct Readiness {
    status: &'static str,
}

/// 200 while serving; 503 from the moment shutdown begins.
fn ready(ctx: &RestContext<'_>) -> Response {
    if ctx.draining {
        Response::json(503, &Readiness { status: "draining" })
    } else if !ctx.backplane.is_ready() {
        Response::json(
            503,
            &Readiness {
                status: "backplane_down",
            },
        )
    } else {
        Response::json(200, &Readiness { status: "ready" })
    }
}

fn metrics(ctx: &RestContext<'_>) -> Response {
    let summaries = ctx.broker.summaries();
    let gauges = BrokerGauges {
        topics: summaries.len(),
        subscriptions: summaries.iter().map(|s| s.subscribers).sum(),
        uptime_seconds: ctx.uptime.as_secs_f64(),
    };
    let snapshot = MetricsSnapshot::sum(ctx.metrics.iter().map(Arc::as_ref));
    Response::text(
        200,
        PROMETHEUS_CONTENT_TYPE,
        render_prometheus(&snapshot, &gauges),
    )
}

const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::delivery::{ConnectionKey, SubscriberQueue, WorkerMailbox};
    use crate::broker::Replay;
    use crate::http::{parse_request, Parsed};
    use crate::protocol::{NOT_OBJECTS, NOT_STRINGS};
    use serde_json::{json, Value};
    use std::sync::Arc;

    struct World {
        broker: Broker,
        api_key: Option<&'static str>,
        draining: bool,
        metrics: Vec<Arc<WorkerMetrics>>,
    }

    impl World {
        fn new() -> World {
            World {
                broker: Broker::new(10),
                api_key: None,
                draining: false,
                metrics: vec![Arc::default(), Arc::default()],
            }
        }

        fn send(&self, raw: impl AsRef<[u8]>) -> Action {
            let ctx = RestContext {
                api_key: self.api_key,
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
                .publish(&RawValue::from_string(r#"{"id":"m","payload":1}"#.into()).unwrap())
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
        for path in ["/", "/nope", "/topics/", "/topics/a/b", "/health/x"] {
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
            .publish(&RawValue::from_string(r#"{"id":"m","payload":1}"#.into()).unwrap())
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
}
