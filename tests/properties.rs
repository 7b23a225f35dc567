//! Property tests of the pure layers, through the library's public API:
//! the replay ring, topic replay, the subscriber queue and its slow-consumer
//! rule, percent-decoding of topic names in `DELETE /topics/{name}`, and the
//! parsers (client frames, HTTP requests), which must never panic whatever
//! they are given, and every place that decodes client JSON, which must
//! refuse any value of another type than the contract names.
//!
//! Long on purpose: every property of the pure parts in one place, with
//! the generators they share.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};
use proptest::collection::vec;
use proptest::prelude::*;
use pubsub::broker::delivery::{ConnectionKey, Delivery, SubscriberQueue, WorkerMailbox};
use pubsub::broker::ring::ReplayRing;
use pubsub::broker::{Broker, Replay};
use pubsub::http::gate::Gate;
use pubsub::http::handler::{Action, RestContext};
use pubsub::http::routes::{handle, settle};
use pubsub::http::{parse_request, Parsed, MAX_BODY_BYTES};
use pubsub::protocol::{
    fast, parse_client_frame, parse_client_frame_by_serde, validate_topic_name, ClientRequest,
};
use pubsub::ws::frame::SharedFrame;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::Arc;

/// Modest case counts, and no regression files written into the tree.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A frame that carries `id`, for the structures that only move frames.
fn frame(id: u32) -> SharedFrame {
    Arc::new(id.to_le_bytes().to_vec())
}

fn id_of(frame: &SharedFrame) -> u32 {
    u32::from_le_bytes(frame[..4].try_into().unwrap())
}

/// The JSON inside a server frame (unmasked, one frame).
fn decode(frame: &SharedFrame) -> Value {
    let offset = match frame[1] & 0x7f {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    serde_json::from_slice(&frame[offset..]).expect("a server frame holds JSON")
}

fn seq_of(frame: &SharedFrame) -> u64 {
    let event = decode(frame);
    let seq = event["seq"].as_u64().expect("an event has a seq");
    assert_eq!(event["message"]["id"], format!("m{seq}"), "{event}");
    seq
}

fn message(seq: u64) -> Box<RawValue> {
    RawValue::from_string(format!(r#"{{"id":"m{seq}","payload":{{"n":{seq}}}}}"#)).unwrap()
}

fn queue(capacity: usize, mailbox: &Arc<WorkerMailbox>) -> Arc<SubscriberQueue> {
    Arc::new(SubscriberQueue::new(
        capacity,
        ConnectionKey::new(3, 9),
        Arc::clone(mailbox),
    ))
}

// ---- the replay ring ---------------------------------------------------------------

#[derive(Debug, Clone)]
enum RingOp {
    Push,
    Last(usize),
    Clear,
}

fn ring_ops() -> impl Strategy<Value = Vec<RingOp>> {
    vec(
        prop_oneof![
            8 => Just(RingOp::Push),
            4 => (0usize..150).prop_map(RingOp::Last),
            1 => Just(RingOp::Last(usize::MAX)),
            1 => Just(RingOp::Clear),
        ],
        0..300,
    )
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn ring_last_n_is_the_tail_of_everything_pushed(capacity in 1usize..40, ops in ring_ops()) {
        let mut ring = ReplayRing::new(capacity);
        let mut model: Vec<u32> = Vec::new();
        let mut next = 0u32;
        for op in ops {
            match op {
                RingOp::Push => {
                    ring.push(u64::from(next) + 1, frame(next));
                    model.push(next);
                    next += 1;
                }
                RingOp::Last(n) => {
                    let got: Vec<u32> = ring.last(n).iter().map(id_of).collect();
                    let k = n.min(capacity).min(model.len());
                    prop_assert_eq!(got, model[model.len() - k..].to_vec(), "last({})", n);
                }
                RingOp::Clear => {
                    ring.clear();
                    model.clear();
                }
            }
            prop_assert_eq!(ring.len(), model.len().min(capacity));
            prop_assert_eq!(ring.is_empty(), model.is_empty());
        }
    }

    #[test]
    fn topic_replay_is_the_model_and_live_events_follow_without_gap(
        ring in 1usize..64,
        prior in 0u64..200,
        last_n in prop_oneof![4 => 0usize..300, 1 => Just(usize::MAX)],
        again in proptest::option::of(0usize..300),
        live in 0u64..20,
    ) {
        let broker = Broker::new(ring);
        let topic = broker.create_topic("t").unwrap();
        for seq in 1..=prior {
            prop_assert_eq!(topic.publish(message(seq).as_ref().into()), Ok(seq));
        }
        let mailbox = WorkerMailbox::unpolled();
        let q = queue(1000, &mailbox);
        // The model: the min(last_n, ring, prior) newest, oldest first.
        let held = |n: usize, published: u64| -> Vec<u64> {
            let k = (n.min(ring) as u64).min(published);
            (published - k + 1..=published).collect()
        };

        let replay: Vec<u64> = topic.subscribe(&q, Replay::LastN(last_n), false).unwrap().replay.iter().map(seq_of).collect();
        prop_assert_eq!(replay, held(last_n, prior));
        let mut published = prior;
        for _ in 0..live {
            published += 1;
            topic.publish(message(published).as_ref().into()).unwrap();
        }
        // A second subscribe on the same connection replays again but does
        // not join twice; the events still queued come back with it, to be
        // written before its ack, so that only the replay and newer events
        // follow the ack.
        let mut live_seqs: Vec<u64> = Vec::new();
        if let Some(n) = again {
            let subscribed = topic.subscribe(&q, Replay::LastN(n), true).unwrap();
            live_seqs.extend(subscribed.earlier.iter().map(seq_of));
            prop_assert!(q.is_empty(), "nothing of before the ack is left queued");
            let replay: Vec<u64> = subscribed.replay.iter().map(seq_of).collect();
            prop_assert_eq!(replay, held(n, published));
            published += 1;
            topic.publish(message(published).as_ref().into()).unwrap();
        }
        live_seqs.extend(std::iter::from_fn(|| q.pop()).map(|f| seq_of(&f)));
        prop_assert_eq!(live_seqs, (prior + 1..=published).collect::<Vec<u64>>());
        prop_assert_eq!(topic.summary().subscribers, 1);
        prop_assert_eq!(topic.summary().messages, published);
    }
}

// ---- the subscriber queue and the slow-consumer rule ------------------------------------

#[derive(Debug, Clone)]
enum QueueOp {
    /// A publisher delivers the next event.
    Deliver,
    /// A cluster node fills the next event in from the ring.
    Fill,
    /// The owner pops one event.
    Pop,
    /// The owner takes its mailbox and unschedules the connection.
    Drain,
}

fn queue_ops() -> impl Strategy<Value = Vec<QueueOp>> {
    vec(
        prop_oneof![
            5 => Just(QueueOp::Deliver),
            2 => Just(QueueOp::Fill),
            4 => Just(QueueOp::Pop),
            1 => Just(QueueOp::Drain),
        ],
        0..400,
    )
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn queue_is_bounded_ordered_and_the_first_overflow_is_final(
        capacity in 1usize..24,
        ops in queue_ops(),
    ) {
        let mailbox = WorkerMailbox::unpolled();
        let q = queue(capacity, &mailbox);
        // Every queued event, and whether it is live (counted) or filled.
        let mut model: VecDeque<(u32, bool)> = VecDeque::new();
        let live = |model: &VecDeque<(u32, bool)>| model.iter().filter(|(_, l)| *l).count();
        let mut popped: Vec<u32> = Vec::new();
        let mut first_refused: Option<u32> = None;
        // The "scheduled" flag: one post per connection until unscheduled.
        let mut scheduled = false;
        let mut posts = 0usize;
        let mut next = 0u32;
        for op in ops {
            match op {
                QueueOp::Deliver => {
                    let id = next;
                    next += 1;
                    let accepted = q.deliver(&frame(id));
                    match first_refused {
                        Some(_) => prop_assert!(!accepted, "{} was taken after the overflow", id),
                        None if live(&model) < capacity => {
                            prop_assert!(accepted, "{} was refused with room", id);
                            model.push_back((id, true));
                        }
                        None => {
                            prop_assert!(!accepted, "{} was taken by a full queue", id);
                            first_refused = Some(id);
                        }
                    }
                    // Taking an event, or becoming slow, schedules the owner once.
                    if (accepted || first_refused == Some(id)) && !scheduled {
                        scheduled = true;
                        posts += 1;
                    }
                }
                QueueOp::Fill => {
                    let id = next;
                    next += 1;
                    let accepted = q.offer_filled(&frame(id)) == Delivery::Queued;
                    // Filled events never overflow; a slow consumer takes none.
                    prop_assert_eq!(accepted, first_refused.is_none(), "{}", id);
                    if accepted {
                        model.push_back((id, false));
                        if !scheduled {
                            scheduled = true;
                            posts += 1;
                        }
                    }
                }
                QueueOp::Pop => {
                    let got = q.pop().map(|f| id_of(&f));
                    prop_assert_eq!(got, model.pop_front().map(|(id, _)| id));
                    popped.extend(got);
                }
                QueueOp::Drain => {
                    let mut keys = Vec::new();
                    mailbox.drain(&mut keys);
                    prop_assert_eq!(keys.len(), posts);
                    prop_assert!(keys.iter().all(|k| *k == q.key()));
                    posts = 0;
                    q.unschedule();
                    scheduled = false;
                }
            }
            prop_assert!(live(&model) <= capacity);
            prop_assert_eq!(q.len(), model.len());
            prop_assert_eq!(q.is_empty(), model.is_empty());
            prop_assert_eq!(q.is_slow(), first_refused.is_some());
            prop_assert_eq!(mailbox.has_posts(), posts > 0);
        }
        // Every delivery before the first refusal comes out, in order; none
        // after it does.
        popped.extend(std::iter::from_fn(|| q.pop()).map(|f| id_of(&f)));
        let accepted_until = first_refused.unwrap_or(next);
        prop_assert_eq!(popped, (0..accepted_until).collect::<Vec<u32>>());
    }
}

// ---- percent-decoding of topic names ----------------------------------------------------

/// Controls, space, and what ends or escapes a path segment.
const SEGMENT: &AsciiSet = &CONTROLS.add(b' ').add(b'%').add(b'/').add(b'?').add(b'#');

/// A valid topic name: 1 to 255 bytes of UTF-8, no ASCII control, no '/'.
fn topic_name() -> impl Strategy<Value = String> {
    let char = prop_oneof![
        6 => proptest::char::range('!', '~'),
        1 => Just(' '),
        1 => Just('%'),
        1 => Just('?'),
        1 => Just('#'),
        1 => Just('+'),
        3 => any::<char>(),
    ]
    .prop_filter("no control, no '/'", |c| *c != '/' && !c.is_ascii_control());
    vec(char, 1..200).prop_map(|chars| {
        let mut name = String::new();
        for c in chars {
            if name.len() + c.len_utf8() > 255 {
                break;
            }
            name.push(c);
        }
        name
    })
}

fn rest<'a>(broker: &'a Broker, api_key: Option<&'a str>) -> RestContext<'a> {
    RestContext {
        gate: Gate {
            api_key,
            ..Gate::default()
        },
        ..RestContext::new(broker)
    }
}

/// Parses and routes one whole request.
fn call(raw: &[u8], ctx: &RestContext<'_>) -> Result<Action, TestCaseError> {
    match parse_request(raw) {
        Parsed::Complete(request, used) => {
            prop_assert_eq!(used, raw.len());
            Ok(settle(handle(&request, ctx), ctx.broker))
        }
        other => Err(TestCaseError::fail(format!(
            "not a whole request: {other:?}"
        ))),
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn delete_percent_decodes_exactly_the_named_topic(
        name in topic_name(),
        every_symbol in any::<bool>(),
    ) {
        prop_assert!(validate_topic_name(&name).is_ok(), "generated {:?}", name);
        let set = if every_symbol { percent_encoding::NON_ALPHANUMERIC } else { SEGMENT };
        let encoded = utf8_percent_encode(&name, set).to_string();
        let broker = Broker::new(4);
        broker.create_topic(&name).unwrap();
        // Decoys: the name not decoded at all, and decoded twice.
        let decoys: Vec<String> = [
            encoded.clone(),
            percent_decode_str(&name).decode_utf8_lossy().into_owned(),
        ]
        .into_iter()
        .filter(|d| *d != name && broker.create_topic(d).is_ok())
        .collect();

        let raw = format!("DELETE /topics/{encoded} HTTP/1.1\r\nHost: test\r\n\r\n");
        let ctx = rest(&broker, None);
        let response = match call(raw.as_bytes(), &ctx)? {
            Action::Respond(response) => response,
            other => return Err(TestCaseError::fail(format!("not a response: {other:?}"))),
        };
        prop_assert_eq!(response.status, 200, "{}", response.body);
        let body: Value = serde_json::from_str(&response.body).unwrap();
        prop_assert_eq!(body, json!({"status": "deleted", "topic": name}));
        prop_assert!(broker.topic(&name).is_none());
        for decoy in &decoys {
            prop_assert!(broker.topic(decoy).is_some(), "decoy {:?} was deleted", decoy);
        }
        // Again: it is gone.
        let again = match call(raw.as_bytes(), &ctx)? {
            Action::Respond(response) => response,
            other => return Err(TestCaseError::fail(format!("not a response: {other:?}"))),
        };
        prop_assert_eq!(again.status, 404, "{}", again.body);
    }
}

// ---- the parsers never panic ------------------------------------------------------------

/// Any JSON value, a few levels deep, with the protocol's field names.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "[a-z0-9]{0,6}".prop_map(Value::String),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(Value::Array),
            vec((field_name(), inner), 0..5)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "type", "topic", "message", "client_id", "last_n", "request_id", "id", "payload",
        ])
        .prop_map(String::from),
        1 => "[a-z_]{0,8}",
    ]
}

/// A value written as JSON text, including texts `Value` cannot make.
fn json_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => json_value().prop_map(|v| v.to_string()),
        1 => prop::sample::select(vec![
            "-0", "-1", "0.0", "1e3", "1.5", "-1e400", "18446744073709551616",
            "99999999999999999999999999", "\"\"", "\"\\ud800\"", "[]", "{}", "nul", "tru",
        ])
        .prop_map(String::from),
    ]
}

/// Client frames: objects with the protocol's fields (often right, often
/// not), sometimes cut short or with a stray character.
fn client_frame() -> impl Strategy<Value = String> {
    let kind = prop_oneof![
        4 => prop::sample::select(vec!["subscribe", "unsubscribe", "publish", "ping"])
            .prop_map(|k| format!("\"{k}\"")),
        1 => json_text(),
    ];
    let message = prop_oneof![
        (json_text(), json_text())
            .prop_map(|(id, payload)| format!(r#"{{"id":{id},"payload":{payload}}}"#)),
        "[a-z0-9]{1,5}".prop_map(|id| format!(r#"{{"id":"{id}","payload":{{}}}}"#)),
        json_text(),
    ];
    let fields = vec(
        prop_oneof![
            json_text().prop_map(|v| format!(r#""topic":{v}"#)),
            "[a-z]{1,5}".prop_map(|v| format!(r#""topic":"{v}""#)),
            message.prop_map(|v| format!(r#""message":{v}"#)),
            json_text().prop_map(|v| format!(r#""client_id":{v}"#)),
            json_text().prop_map(|v| format!(r#""last_n":{v}"#)),
            json_text().prop_map(|v| format!(r#""request_id":{v}"#)),
            (field_name(), json_text()).prop_map(|(k, v)| format!(r#""{k}":{v}"#)),
        ],
        0..6,
    );
    let whole = (kind, fields).prop_map(|(kind, fields)| {
        let mut all = vec![format!(r#""type":{kind}"#)];
        all.extend(fields);
        format!("{{{}}}", all.join(","))
    });
    (whole, any::<prop::sample::Index>(), 0u8..4, any::<char>()).prop_map(|(text, at, how, c)| {
        let mut cut = at.index(text.len() + 1);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        match how {
            0 => text[..cut].to_string(),
            1 => format!("{}{c}{}", &text[..cut], &text[cut..]),
            _ => text,
        }
    })
}

/// Checks what a parsed frame says against the JSON it came from.
fn check_frame(text: &str) -> Result<(), TestCaseError> {
    match parse_client_frame(text) {
        Err(invalid) => prop_assert!(!invalid.message.is_empty()),
        Ok(request) => {
            // Lone surrogate escapes (`"\ud800"`) fit the JSON grammar but
            // make no string: such a text is only checked for syntax.
            if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
                return Err(TestCaseError::fail(format!(
                    "accepted invalid JSON ({e}): {text}"
                )));
            }
            let Ok(value) = serde_json::from_str::<Value>(text) else {
                return Ok(());
            };
            let kind = match &request {
                ClientRequest::Subscribe { .. } => "subscribe",
                ClientRequest::Unsubscribe { .. } => "unsubscribe",
                ClientRequest::Publish { .. } => "publish",
                ClientRequest::Ping { .. } => "ping",
                ClientRequest::Auth { .. } => "auth",
            };
            prop_assert_eq!(&value["type"], kind, "{}", text);
            if let Some(id) = request.request_id() {
                prop_assert_eq!(&value["request_id"], id, "{}", text);
            }
            match &request {
                ClientRequest::Subscribe {
                    topic, client_id, ..
                }
                | ClientRequest::Unsubscribe {
                    topic, client_id, ..
                } => {
                    prop_assert_eq!(&value["topic"], &**topic);
                    prop_assert_eq!(&value["client_id"], client_id.as_str());
                }
                ClientRequest::Publish { topic, message, .. } => {
                    prop_assert_eq!(&value["topic"], &**topic);
                    let inner: Value = serde_json::from_str(message.get()).unwrap();
                    prop_assert!(
                        inner["id"].as_str().is_some_and(|id| !id.is_empty()),
                        "{}",
                        text
                    );
                    prop_assert!(inner.get("payload").is_some(), "{}", text);
                }
                ClientRequest::Ping { .. } => {}
                ClientRequest::Auth { token, .. } => {
                    prop_assert_eq!(&value["token"], token.as_str());
                }
            }
        }
    }
    Ok(())
}

/// HTTP requests: a request line, headers and a body from pools of the
/// good and the bad, sometimes cut short; or plain random bytes.
fn http_bytes() -> impl Strategy<Value = Vec<u8>> {
    let method = prop::sample::select(vec!["GET", "POST", "DELETE", "PUT", "get", "", "G\0T"]);
    let path = prop_oneof![
        prop::sample::select(vec![
            "/ws",
            "/topics",
            "/topics/a",
            "/topics/%ff",
            "/topics/%",
            "/topics/a%2Fb",
            "/topics/",
            "/health",
            "/readyz",
            "/metrics",
            "/stats",
            "/ws?api_key=k",
            "/ws?api_key=%zz&x",
            "*",
            "",
        ])
        .prop_map(String::from),
        "/[ -~]{0,20}",
    ];
    let version = prop::sample::select(vec!["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTX/1.1", ""]);
    let header = prop_oneof![
        prop::sample::select(vec![
            "Host: test",
            "Connection: close",
            "Connection: keep-alive, Upgrade",
            "Upgrade: websocket",
            "Sec-WebSocket-Version: 13",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Key: x",
            "X-API-Key: k",
            "Transfer-Encoding: chunked",
            "Content-Length: 0",
            "Content-Length: 16",
            "Content-Length: -1",
            "Content-Length: 99999999999999999999999",
            "Content-Length: 70000",
            "Bad Header: x",
            ": empty",
            "X: \u{1}",
        ])
        .prop_map(String::from),
        ("[A-Za-z-]{1,12}", "[ -~]{0,20}").prop_map(|(n, v)| format!("{n}: {v}")),
    ];
    let body = prop_oneof![
        Just(Vec::new()),
        Just(br#"{"name":"orders"}"#.to_vec()),
        vec(any::<u8>(), 0..64),
    ];
    let structured = (
        method,
        path,
        version,
        vec(header, 0..8),
        body,
        any::<prop::sample::Index>(),
        any::<bool>(),
    )
        .prop_map(|(method, path, version, headers, body, cut, whole)| {
            let mut bytes = format!("{method} {path} {version}\r\n").into_bytes();
            for header in headers {
                bytes.extend_from_slice(header.as_bytes());
                bytes.extend_from_slice(b"\r\n");
            }
            bytes.extend_from_slice(b"\r\n");
            bytes.extend_from_slice(&body);
            if !whole {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            bytes
        });
    prop_oneof![3 => structured, 1 => vec(any::<u8>(), 0..2048)]
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn parse_client_frame_never_panics_on_any_string(text in any::<String>()) {
        check_frame(&text)?;
    }

    #[test]
    fn parse_client_frame_never_panics_on_near_miss_frames(text in client_frame()) {
        check_frame(&text)?;
    }

    #[test]
    fn parse_request_and_routing_never_panic(bytes in http_bytes(), keyed in any::<bool>()) {
        let broker = Broker::new(4);
        broker.create_topic("a").unwrap();
        let ctx = rest(&broker, keyed.then_some("k"));
        match parse_request(&bytes) {
            Parsed::Partial => {}
            Parsed::Invalid(response) => {
                prop_assert!((400..500).contains(&response.status), "{:?}", response);
                if let Some(used) = response.consumed {
                    prop_assert!(used <= bytes.len());
                }
            }
            Parsed::Complete(request, used) => {
                prop_assert!(used <= bytes.len());
                prop_assert!(request.body.len() <= MAX_BODY_BYTES);
                match settle(handle(&request, &ctx), &broker) {
                    Action::Respond(response) => {
                        prop_assert!((200..600).contains(&response.status), "{:?}", response);
                        if response.content_type.starts_with("application/json") {
                            let body: Value = serde_json::from_str(&response.body)
                                .map_err(|e| TestCaseError::fail(format!("body not JSON: {e}")))?;
                            prop_assert!(body.is_object());
                        }
                    }
                    Action::Upgrade(switching, ..) => {
                        prop_assert!(switching.starts_with(b"HTTP/1.1 101 "));
                    }
                    Action::Change(change) => {
                        return Err(TestCaseError::fail(format!("not settled: {change:?}")));
                    }
                }
            }
        }
    }
}

// ---- the shape of client JSON ----------------------------------------------------------

/// Any JSON value but an object.
fn not_an_object() -> impl Strategy<Value = Value> {
    json_value().prop_filter("not an object", |v| !v.is_object())
}

/// Any JSON value but a string, and not null (which counts as absent).
fn not_a_string() -> impl Strategy<Value = Value> {
    json_value().prop_filter("not a string or null", |v| !v.is_string() && !v.is_null())
}

/// JSON whitespace, which may come before any value.
fn whitespace() -> impl Strategy<Value = String> {
    "[ \t\n\r]{0,3}"
}

/// A client frame with one field that must be a string set to `value`,
/// every other field right; and the field's name as errors give it.
fn frame_with_string_field(field: usize, value: &Value) -> (Value, &'static str) {
    match field {
        0 => (json!({"type": value}), "type"),
        1 => (
            json!({"type": "subscribe", "topic": value, "client_id": "c"}),
            "topic",
        ),
        2 => (
            json!({"type": "unsubscribe", "topic": "t", "client_id": value}),
            "client_id",
        ),
        3 => (json!({"type": "ping", "request_id": value}), "request_id"),
        _ => (
            json!({"type": "publish", "topic": "t", "message": {"id": value, "payload": 1}}),
            "message.id",
        ),
    }
}

/// `POST /topics` with `body` to a broker with no topic: the status, the
/// `error` of the response body, and how many topics the broker then has.
fn create_topic_with(body: &str) -> Result<(u16, Value, usize), TestCaseError> {
    let broker = Broker::new(4);
    let raw = format!(
        "POST /topics HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let response = match call(raw.as_bytes(), &rest(&broker, None))? {
        Action::Respond(response) => response,
        other => return Err(TestCaseError::fail(format!("not a response: {other:?}"))),
    };
    let json: Value = serde_json::from_str(&response.body)
        .map_err(|e| TestCaseError::fail(format!("body not JSON: {e}")))?;
    Ok((
        response.status,
        json["error"].clone(),
        broker.summaries().len(),
    ))
}

proptest! {
    #![proptest_config(config(256))]

    // An `Err` of `parse_client_frame` is what the connection answers with
    // `BAD_REQUEST` (tests/websocket.rs checks it on the wire).

    #[test]
    fn a_frame_that_is_not_an_object_is_refused(value in not_an_object(), ws in whitespace()) {
        let text = format!("{ws}{value}");
        let invalid = parse_client_frame(&text).err();
        prop_assert_eq!(
            invalid.map(|e| e.message),
            Some("a frame must be a JSON object".to_string()),
            "{}",
            text
        );
    }

    #[test]
    fn a_message_that_is_not_an_object_is_refused(
        value in not_an_object().prop_filter("null is absent", |v| !v.is_null()),
        ws in whitespace(),
    ) {
        let text = format!(
            r#"{{"type":"publish","topic":"t","request_id":"r","message":{ws}{value}}}"#
        );
        let invalid = parse_client_frame(&text).err();
        prop_assert_eq!(
            invalid.map(|e| (e.message, e.request_id, e.topic)),
            Some((
                "field 'message' must be a JSON object".to_string(),
                Some("r".to_string()),
                Some("t".to_string())
            )),
            "{}",
            text
        );
    }

    #[test]
    fn a_string_field_of_another_type_is_refused_naming_it(
        field in 0usize..5,
        value in not_a_string(),
    ) {
        let (frame, name) = frame_with_string_field(field, &value);
        let invalid = parse_client_frame(&frame.to_string()).err();
        prop_assert_eq!(
            invalid.map(|e| e.message),
            Some(format!("field '{name}' must be a string")),
            "{}",
            frame
        );
    }

    #[test]
    fn a_create_body_that_is_not_an_object_is_bad_request(
        value in not_an_object(),
        ws in whitespace(),
    ) {
        let (status, error, topics) = create_topic_with(&format!("{ws}{value}"))?;
        prop_assert_eq!(
            (status, error, topics),
            (400, json!({"code": "BAD_REQUEST", "message": "the body must be a JSON object"}), 0),
            "{}",
            value
        );
    }

    #[test]
    fn a_create_name_that_is_not_a_string_is_bad_request(value in not_a_string()) {
        let (status, error, topics) = create_topic_with(&json!({"name": value}).to_string())?;
        prop_assert_eq!(
            (status, error, topics),
            (400, json!({"code": "BAD_REQUEST", "message": "field 'name' must be a string"}), 0),
            "{}",
            value
        );
    }
}

// ---- the publish fast path against serde's ---------------------------------------------

/// JSON whitespace between tokens, mostly none.
fn gap() -> impl Strategy<Value = String> {
    prop_oneof![3 => Just(String::new()), 1 => "[ \t\n\r]{1,3}"]
}

/// A JSON string as written: plain, escaped as serde escapes, or with
/// escapes of every kind (lone surrogates too), non-ASCII.
fn string_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        2 => "[a-z0-9 _.-]{1,4}",
        1 => "[\u{80}-\u{10ffff}]",
        1 => prop::sample::select(vec![
            "\\\"", "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t", "\\u00e9", "\\u0000",
            "\\uD83D\\uDE00", "\\ud800", "\\udfff", "\u{7f}",
        ])
        .prop_map(String::from),
    ];
    prop_oneof![
        4 => "[a-z0-9 _.-]{0,8}".prop_map(|s| format!("\"{s}\"")),
        2 => any::<String>().prop_map(|s| json!(s).to_string()),
        2 => vec(piece, 0..4).prop_map(|pieces| format!("\"{}\"", pieces.concat())),
    ]
}

/// A JSON number as written, in RFC 8259's forms.
fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f).to_string()),
        1 => prop::sample::select(vec![
            "0", "-0", "0.0", "1e5", "1E+5", "-1e-5", "1.5e308", "1e999", "-1e-999",
            "123456789012345678901234567890", "0.000001", "10E0",
        ])
        .prop_map(String::from),
    ]
}

/// What is not a JSON value, though it looks like one: numbers out of
/// RFC 8259's forms, literals misspelt, strings with a bad escape or a raw
/// control character.
fn bad_value_text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "01",
            "-01",
            "1.",
            ".5",
            "-",
            "+1",
            "1e",
            "1e+",
            "1.e5",
            "0x10",
            "NaN",
            "Infinity",
            "1_000",
            "--1",
            "tru",
            "nul",
            "True",
            "nulll",
            "'s'",
            "[1}",
            "{\"a\":1]",
            "[}",
            "{]",
        ])
        .prop_map(String::from),
        (
            "[a-z]{0,3}",
            prop::sample::select(vec![
                "\\u12", "\\u12g4", "\\x", "\\a", "\\0", "\\'", "\\e", "\\U0041", "\\", "\u{1}",
                "\t", "\u{1f}", "\""
            ]),
        )
            .prop_map(|(s, bad)| format!("\"{s}{bad}\"")),
    ]
}

/// `value` inside `depth` arrays and objects, in turn.
fn nest(depth: usize, value: String) -> String {
    (0..depth).fold(value, |inner, level| {
        if level % 2 == 0 {
            format!("[{inner}]")
        } else {
            format!("{{\"k\":{inner}}}")
        }
    })
}

/// Any JSON value as written, now and then subtly bad: odd numbers and
/// strings, literals cut short, trailing commas; with keys given twice,
/// and nesting around the depth where the fast path stops.
fn value_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        20 => string_text(),
        20 => number_text(),
        10 => prop::sample::select(vec!["true", "false", "null"]).prop_map(String::from),
        2 => bad_value_text(),
        3 => (120usize..132, prop_oneof![Just("1".to_string()), Just("[]".to_string())])
            .prop_map(|(depth, inner)| nest(depth, inner)),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            (
                vec((inner.clone(), gap()), 0..4),
                prop::bool::weighted(0.005)
            )
                .prop_map(|(items, trailing)| {
                    let items: Vec<String> =
                        items.into_iter().map(|(v, g)| format!("{g}{v}")).collect();
                    format!("[{}{}]", items.join(","), if trailing { "," } else { "" })
                }),
            (
                vec(
                    (prop_oneof![6 => "\"[a-c]\"", 1 => string_text()], inner),
                    0..4
                ),
                gap()
            )
                .prop_map(|(members, g)| {
                    let members: Vec<String> = members
                        .into_iter()
                        .map(|(k, v)| format!("{k}{g}:{g}{v}"))
                        .collect();
                    format!("{{{}}}", members.join(","))
                }),
        ]
    })
}

/// Members written as `"key":value`, separated by commas, with the `gaps`
/// around them in turn.
fn object_text(members: Vec<(String, String)>, gaps: Vec<String>) -> String {
    let gap = |i: usize| gaps.get(i % gaps.len().max(1)).cloned().unwrap_or_default();
    let body: Vec<String> = members
        .into_iter()
        .enumerate()
        .map(|(i, (key, value))| {
            format!(
                "{}{key}{}:{}{value}{}",
                gap(i),
                gap(i + 1),
                gap(i + 2),
                gap(i + 3)
            )
        })
        .collect();
    format!("{{{}}}", body.join(","))
}

/// `(key, value)` members in a random order.
fn shuffled(
    members: impl Strategy<Value = Vec<(String, String)>>,
) -> impl Strategy<Value = String> {
    (members, vec(gap(), 1..5))
        .prop_flat_map(|(members, gaps)| (Just(members).prop_shuffle(), Just(gaps)))
        .prop_map(|(members, gaps)| object_text(members, gaps))
}

/// A publish's `message`: `id` and `payload` mostly right, now and then
/// not (missing, empty, of another type); members given twice or spelled
/// with escapes, unknown ones, in any order; or not an object.
fn message_text() -> impl Strategy<Value = String> {
    let id = prop_oneof![
        8 => "[a-z0-9-]{1,8}".prop_map(|s| format!("\"{s}\"")),
        3 => string_text(),
        1 => value_text(),
        1 => bad_value_text(),
    ];
    let member = prop_oneof![
        6 => ("\"[a-z]{1,3}\"", value_text()),
        1 => (Just("\"id\"".to_string()), id.clone()),
        1 => (Just("\"payload\"".to_string()), value_text()),
        1 => (
            prop::sample::select(vec!["\"\\u0069d\"", "\"p\\u0061yload\"", "\"\\ud800\"", "\"\\u0078\""])
                .prop_map(String::from),
            value_text()
        ),
    ];
    let members = (
        prop::option::weighted(0.95, id),
        prop::option::weighted(0.95, value_text()),
        prop_oneof![3 => Just(Vec::new()), 1 => vec(member, 1..3)],
    )
        .prop_map(|(id, payload, mut members)| {
            members.extend(id.map(|id| ("\"id\"".to_string(), id)));
            members.extend(payload.map(|p| ("\"payload\"".to_string(), p)));
            members
        });
    prop_oneof![15 => shuffled(members), 1 => value_text()]
}

/// Publish frames, mostly well formed, often subtly not: each field right
/// or wrong (escapes, other types, null, missing), fields given twice or
/// spelled with escapes, unknown fields, in any order with any whitespace;
/// and now and then a byte order mark or other whitespace than JSON's
/// before, something after, a trailing comma, a character put in, or cut
/// short.
fn publish_frame_text() -> impl Strategy<Value = String> {
    let kind = prop_oneof![
        20 => Just("\"publish\"".to_string()),
        1 => prop::sample::select(vec!["\"publ\\u0069sh\"", "\"ping\"", "\"Publish\"", "null", "5"])
            .prop_map(String::from),
    ];
    let plain_or = |plain: &'static str| {
        prop_oneof![
            10 => plain.prop_map(|s| format!("\"{s}\"")),
            3 => string_text(),
            1 => Just("null".to_string()),
            1 => value_text(),
            1 => bad_value_text(),
        ]
    };
    let extra = (
        prop::sample::select(vec![
            "\"type\"",
            "\"topic\"",
            "\"message\"",
            "\"request_id\"",
            "\"client_id\"",
            "\"last_n\"",
            "\"since_seq\"",
            "\"epoch\"",
            "\"token\"",
            "\"t\\u006fpic\"",
            "\"x\"",
            "\"\"",
            "\"x\"",
        ])
        .prop_map(String::from),
        value_text(),
    );
    let members = (
        prop::option::weighted(0.97, kind),
        prop::option::weighted(0.97, plain_or("[a-z.]{0,8}")),
        prop::option::weighted(0.97, message_text()),
        prop::option::of(plain_or("[a-z0-9-]{0,8}")),
        prop_oneof![3 => Just(Vec::new()), 1 => vec(extra, 1..3)],
    )
        .prop_map(|(kind, topic, message, request_id, mut members)| {
            let fields = [
                ("type", kind),
                ("topic", topic),
                ("message", message),
                ("request_id", request_id),
            ];
            for (key, value) in fields {
                members.extend(value.map(|v| (format!("\"{key}\""), v)));
            }
            members
        });
    let odd = prop::sample::select(vec![
        "\u{feff}", "\u{a0}", "\u{b}", "\u{c}", "\u{0}", "x", "}", ",",
    ]);
    (
        shuffled(members),
        0u8..40,
        any::<prop::sample::Index>(),
        odd,
        any::<char>(),
    )
        .prop_map(|(text, how, at, odd, c)| {
            let mut at = at.index(text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            match how {
                0 => format!("{odd}{text}"),
                1 => format!("{text}{odd}"),
                2 => format!("{}{odd}{}", &text[..at], &text[at..]),
                3 => format!("{}{c}{}", &text[..at], &text[at..]),
                4 => text[..at].to_string(),
                5 => text.replacen('}', ",}", 1),
                _ => text,
            }
        })
}

/// A well-formed publish frame the fast path must take: plain strings for
/// its fields, a message whose payload is any JSON value (as serde writes
/// it, escapes included), unknown fields, any order, any JSON whitespace.
fn plain_publish_frame_text() -> impl Strategy<Value = String> {
    let ws = || "[ \t\n\r]{0,2}";
    (
        "[a-z.]{0,8}",
        "[a-z0-9-]{1,8}",
        json_value(),
        prop::option::of("[a-z0-9-]{0,8}"),
        vec(("[a-z]{1,4}", json_value()), 0..3),
        vec(ws(), 4),
    )
        .prop_flat_map(|(topic, id, payload, request_id, extra, gaps)| {
            let message = object_text(
                vec![
                    ("\"id\"".into(), format!("\"{id}\"")),
                    ("\"payload\"".into(), payload.to_string()),
                ],
                gaps.clone(),
            );
            let mut members = vec![
                ("\"type\"".to_string(), "\"publish\"".to_string()),
                ("\"topic\"".to_string(), format!("\"{topic}\"")),
                ("\"message\"".to_string(), message),
            ];
            members.extend(request_id.map(|r| ("\"request_id\"".to_string(), format!("\"{r}\""))));
            // Unknown keys only: a known one could be given twice.
            members.extend(
                extra
                    .into_iter()
                    .map(|(k, v)| (format!("\"x_{k}\""), v.to_string())),
            );
            (Just(members).prop_shuffle(), Just(gaps))
        })
        .prop_map(|(members, gaps)| object_text(members, gaps))
}

proptest! {
    #![proptest_config(config(2048))]

    /// The fast path says yes only where serde does, with the same fields:
    /// with serde behind it, a frame gets exactly serde's answer, error
    /// messages and echoed fields included.
    #[test]
    fn the_fast_path_and_serde_answer_every_publish_frame_alike(text in publish_frame_text()) {
        prop_assert_eq!(parse_client_frame(&text), parse_client_frame_by_serde(&text), "{}", text);
    }

    #[test]
    fn the_fast_path_and_serde_answer_every_near_miss_frame_alike(text in client_frame()) {
        prop_assert_eq!(parse_client_frame(&text), parse_client_frame_by_serde(&text), "{}", text);
    }

    /// Not vacuous: a plain publish frame is the fast path's.
    #[test]
    fn a_plain_publish_frame_takes_the_fast_path(text in plain_publish_frame_text()) {
        let taken = fast::publish(&text);
        prop_assert!(taken.is_some(), "{}", text);
        let serde = parse_client_frame_by_serde(&text);
        prop_assert_eq!(parse_client_frame(&text), serde, "{}", text);
    }
}
