//! The JSON protocol spoken over `/ws`: decoding and validating client
//! frames, and encoding every server message (ack, event, error, pong, info).
//! Also the one way client JSON is decoded into a struct, [`decode_object`],
//! which the REST routes use for their bodies too.
//!
//! Pure functions only: text in, values or text out. No sockets, no broker
//! state, no WebSocket framing (that is [`crate::ws::frame`]). Server
//! messages that go to many connections (events, deletion notices) are
//! encoded here once; the broker frames them once, so that fan-out copies a
//! pointer and never the message.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::time::SystemTime;

/// The error codes sent in WebSocket `error` messages. The contract's
/// `UNAUTHORIZED` is an HTTP 401 before any upgrade (see `http::routes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest,
    TopicNotFound,
    SlowConsumer,
    ShuttingDown,
    /// Cluster mode: the backplane could not carry the request out.
    Unavailable,
    /// A path the broker did not expect; logged where it happens.
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "BAD_REQUEST",
            ErrorCode::TopicNotFound => "TOPIC_NOT_FOUND",
            ErrorCode::SlowConsumer => "SLOW_CONSUMER",
            ErrorCode::ShuttingDown => "SHUTTING_DOWN",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Internal => "INTERNAL",
        }
    }
}

/// A valid client frame.
#[derive(Debug)]
pub enum ClientRequest<'a> {
    Subscribe {
        topic: String,
        client_id: String,
        start: Start,
        request_id: Option<String>,
    },
    Unsubscribe {
        topic: String,
        client_id: String,
        request_id: Option<String>,
    },
    Publish {
        topic: String,
        message: &'a RawValue,
        request_id: Option<String>,
    },
    Ping {
        request_id: Option<String>,
    },
}

/// Where a subscription starts, before live events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Replay the `n` most recent messages (`last_n`; 0: none).
    LastN(usize),
    /// Resume: every message after `seq` of `epoch` (`since_seq`, `epoch`).
    Since { seq: u64, epoch: String },
}

impl ClientRequest<'_> {
    pub fn request_id(&self) -> Option<&str> {
        match self {
            ClientRequest::Subscribe { request_id, .. }
            | ClientRequest::Unsubscribe { request_id, .. }
            | ClientRequest::Publish { request_id, .. }
            | ClientRequest::Ping { request_id } => request_id.as_deref(),
        }
    }
}

/// A frame that is not a valid request: answered with `BAD_REQUEST`, echoing
/// whatever `request_id` and `topic` could be read from it.
#[derive(Debug, PartialEq, Eq)]
pub struct InvalidRequest {
    pub request_id: Option<String>,
    pub topic: Option<String>,
    pub message: String,
}

/// Every field of a client frame, undecoded: each is checked and decoded on
/// its own so that an error can name the field. A field given as `null` is
/// `Some("null")` here, not `None`, so that a `null` payload stays a value.
#[derive(Deserialize)]
struct RawClientFrame<'a> {
    #[serde(rename = "type", borrow, default, deserialize_with = "given")]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "given")]
    topic: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "given")]
    message: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "given")]
    client_id: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "given")]
    last_n: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "given")]
    since_seq: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "given")]
    epoch: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "given")]
    request_id: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawMessage<'a> {
    #[serde(borrow, default, deserialize_with = "given")]
    id: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "given")]
    payload: Option<&'a RawValue>,
}

/// What JSON counts as whitespace before a value.
const JSON_WHITESPACE: [char; 4] = [' ', '\t', '\n', '\r'];

/// Decodes client JSON that the contract says is an object into `T`: every
/// struct decoded from client input (frames, `message`, REST bodies) goes
/// through here. serde's derived `Deserialize` takes an array for a struct,
/// the fields by position, so `["x"]` would pass for `{"name":"x"}`; this
/// refuses every JSON type but an object before the derived code runs. The
/// check is a look at the first byte, so a valid object costs nothing more.
///
/// `what` names the value for the error, as in `field 'message'`: text that
/// is not JSON is `invalid JSON: ...`; JSON of another type is `{what} must
/// be a JSON object`; an object the struct refuses (a field given twice)
/// is `{what} is invalid: ...`.
pub(crate) fn decode_object<'de, T: Deserialize<'de>>(
    text: &'de str,
    what: &str,
) -> Result<T, String> {
    if !text.trim_start_matches(JSON_WHITESPACE).starts_with('{') {
        return Err(match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Ok(_) => format!("{what} must be a JSON object"),
            Err(e) => format!("invalid JSON: {e}"),
        });
    }
    serde_json::from_str(text).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            format!("invalid JSON: {e}")
        } else {
            let error = e.to_string();
            let without_position = error.split(" at line").next().unwrap_or_default();
            format!("{what} is invalid: {without_position}")
        }
    })
}

/// JSON of every type but an object: the shapes serde's derived
/// `Deserialize` would take for a struct (arrays) and those it would not.
#[cfg(test)]
pub(crate) const NOT_OBJECTS: [&str; 12] = [
    "[]",
    r#"["x"]"#,
    r#"["m1",{"k":1}]"#,
    r#"[["x"]]"#,
    r#" [{"id":"m","payload":1}]"#,
    r#""x""#,
    "3",
    "-1.5e3",
    "true",
    "false",
    "null",
    "\n\t\r []",
];

/// Every JSON type but a string (and null, which counts as absent), for
/// the fields that must be a string.
#[cfg(test)]
pub(crate) const NOT_STRINGS: [&str; 7] =
    ["[]", r#"["x"]"#, r#"[["x"]]"#, "7", "true", "false", "{}"];

/// Called only for a field that is there, whatever its value.
fn given<'de, D: serde::Deserializer<'de>>(field: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(field).map(Some)
}

/// A JSON `null` counts as absent, like a missing field.
fn present(field: Option<&RawValue>) -> Option<&RawValue> {
    field.filter(|raw| raw.get() != "null")
}

fn optional_string(field: Option<&RawValue>, name: &str) -> Result<Option<String>, String> {
    match present(field) {
        None => Ok(None),
        Some(raw) => serde_json::from_str::<String>(raw.get())
            .map(Some)
            .map_err(|_| format!("field '{name}' must be a string")),
    }
}

fn required_string(field: Option<&RawValue>, name: &str) -> Result<String, String> {
    optional_string(field, name)?.ok_or_else(|| format!("missing field '{name}'"))
}

/// An integer >= 0, or `None` when absent. Integers too large for `u64`
/// saturate: as a `last_n` they mean "everything held", as a `since_seq`
/// "beyond the last message".
fn non_negative_integer(field: Option<&RawValue>, name: &str) -> Result<Option<u64>, String> {
    let Some(raw) = present(field) else {
        return Ok(None);
    };
    let text = raw.get();
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if negative && digits.bytes().any(|b| b != b'0') {
            return Err(format!("field '{name}' must not be negative"));
        }
        return Ok(Some(digits.parse::<u64>().unwrap_or(u64::MAX)));
    }
    match serde_json::from_str::<f64>(text) {
        Ok(_) => Err(format!("field '{name}' must be an integer")),
        Err(_) => Err(format!("field '{name}' must be a non-negative integer")),
    }
}

/// `last_n`, or `since_seq` with `epoch` (resume); not both.
fn parse_start(raw: &RawClientFrame<'_>) -> Result<Start, String> {
    let last_n = non_negative_integer(raw.last_n, "last_n")?;
    let Some(seq) = non_negative_integer(raw.since_seq, "since_seq")? else {
        let n = last_n.unwrap_or(0);
        return Ok(Start::LastN(usize::try_from(n).unwrap_or(usize::MAX)));
    };
    if last_n.is_some() {
        return Err("fields 'since_seq' and 'last_n' cannot be used together".into());
    }
    let epoch = optional_string(raw.epoch, "epoch")?
        .ok_or_else(|| "field 'since_seq' needs the field 'epoch'".to_string())?;
    Ok(Start::Since { seq, epoch })
}

/// Checks a publish's message, the `message` of a WebSocket publish or the
/// body of a REST one: an object with a non-empty string `id` and a
/// `payload` of any type. `what` names it in errors (`field 'message'`,
/// `the body`), and `field` prefixes its fields' names (`message.`, ``).
pub fn validate_message(message: &RawValue, what: &str, field: &str) -> Result<(), String> {
    let inner: RawMessage<'_> = decode_object(message.get(), what)?;
    let id = required_string(inner.id, &format!("{field}id"))?;
    if id.is_empty() {
        return Err(format!("field '{field}id' must not be empty"));
    }
    if inner.payload.is_none() {
        return Err(format!("missing field '{field}payload'"));
    }
    Ok(())
}

/// Decodes and validates one client text frame.
pub fn parse_client_frame(text: &str) -> Result<ClientRequest<'_>, InvalidRequest> {
    let invalid = |message: String| InvalidRequest {
        request_id: None,
        topic: None,
        message,
    };
    let raw: RawClientFrame<'_> = decode_object(text, "a frame").map_err(invalid)?;
    // Read what can be echoed first, so that later errors carry it.
    let request_id = optional_string(raw.request_id, "request_id").map_err(invalid)?;
    let topic = optional_string(raw.topic, "topic");
    let fail = |message: String| InvalidRequest {
        request_id: request_id.clone(),
        topic: topic.clone().ok().flatten(),
        message,
    };
    let kind = required_string(raw.kind, "type").map_err(fail)?;
    let need_topic = || {
        topic
            .clone()
            .map_err(&fail)?
            .ok_or_else(|| fail("missing field 'topic'".into()))
    };
    match kind.as_str() {
        "subscribe" => Ok(ClientRequest::Subscribe {
            topic: need_topic()?,
            client_id: required_string(raw.client_id, "client_id").map_err(fail)?,
            start: parse_start(&raw).map_err(fail)?,
            request_id,
        }),
        "unsubscribe" => Ok(ClientRequest::Unsubscribe {
            topic: need_topic()?,
            client_id: required_string(raw.client_id, "client_id").map_err(fail)?,
            request_id,
        }),
        "publish" => {
            let topic = need_topic()?;
            let message =
                present(raw.message).ok_or_else(|| fail("missing field 'message'".into()))?;
            validate_message(message, "field 'message'", "message.").map_err(fail)?;
            Ok(ClientRequest::Publish {
                topic,
                message,
                request_id,
            })
        }
        "ping" => Ok(ClientRequest::Ping { request_id }),
        other => Err(fail(format!(
            "unknown type '{other}'; expected subscribe, unsubscribe, publish or ping"
        ))),
    }
}

/// A topic name: 1 to 255 bytes of UTF-8, no ASCII control character, no `/`.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name must not be empty".into());
    }
    if name.len() > 255 {
        return Err(format!(
            "topic name is {} bytes; at most 255 are allowed",
            name.len()
        ));
    }
    if name.bytes().any(|b| b.is_ascii_control()) {
        return Err("topic name must not contain control characters".into());
    }
    if name.contains('/') {
        return Err("topic name must not contain '/'".into());
    }
    Ok(())
}

/// RFC 3339 UTC with milliseconds: `2025-08-25T10:00:00.123Z`.
pub fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'static str,
    message: &'a str,
}

/// Every server message but `event`, which [`encode_event`] writes by hand
/// to pass the publisher's `message` through untouched.
#[derive(Serialize)]
struct ServerMessage<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    topic: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    epoch: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    recovered: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorBody<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    msg: Option<&'static str>,
    ts: String,
}

impl<'a> ServerMessage<'a> {
    fn new(kind: &'static str, at: SystemTime) -> Self {
        ServerMessage {
            kind,
            request_id: None,
            topic: None,
            status: None,
            seq: None,
            epoch: None,
            last_seq: None,
            recovered: None,
            error: None,
            msg: None,
            ts: timestamp(at),
        }
    }

    fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server messages always serialise")
    }
}

/// What an ack says beyond `status: ok`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acked<'a> {
    /// An unsubscribe.
    Done,
    /// A subscribe: the topic's epoch, the `seq` of the last message
    /// before the subscription, and for a resume whether it recovered.
    Subscribed {
        epoch: &'a str,
        last_seq: u64,
        recovered: Option<bool>,
    },
    /// A publish, and the `seq` it was given.
    Published { seq: u64 },
}

pub fn encode_ack(
    request_id: Option<&str>,
    topic: &str,
    acked: Acked<'_>,
    at: SystemTime,
) -> String {
    let mut ack = ServerMessage {
        request_id,
        topic: Some(topic),
        status: Some("ok"),
        ..ServerMessage::new("ack", at)
    };
    match acked {
        Acked::Done => {}
        Acked::Subscribed {
            epoch,
            last_seq,
            recovered,
        } => {
            ack.epoch = Some(epoch);
            ack.last_seq = Some(last_seq);
            ack.recovered = recovered;
        }
        Acked::Published { seq } => ack.seq = Some(seq),
    }
    ack.to_json()
}

pub fn encode_error(
    code: ErrorCode,
    message: &str,
    request_id: Option<&str>,
    topic: Option<&str>,
    at: SystemTime,
) -> String {
    ServerMessage {
        request_id,
        topic,
        error: Some(ErrorBody {
            code: code.as_str(),
            message,
        }),
        ..ServerMessage::new("error", at)
    }
    .to_json()
}

pub fn encode_pong(request_id: Option<&str>, at: SystemTime) -> String {
    ServerMessage {
        request_id,
        ..ServerMessage::new("pong", at)
    }
    .to_json()
}

/// Server-initiated notices: `ping`, `topic_deleted` (with its topic),
/// `server_shutdown`.
pub fn encode_info(msg: &'static str, topic: Option<&str>, at: SystemTime) -> String {
    ServerMessage {
        topic,
        msg: Some(msg),
        ..ServerMessage::new("info", at)
    }
    .to_json()
}

/// Cluster mode: `info topic_reset`, the topic's messages up to
/// `last_seq` that a subscriber has not had cannot be delivered.
pub fn encode_reset(topic: &str, epoch: &str, last_seq: u64, at: SystemTime) -> String {
    ServerMessage {
        topic: Some(topic),
        msg: Some("topic_reset"),
        epoch: Some(epoch),
        last_seq: Some(last_seq),
        ..ServerMessage::new("info", at)
    }
    .to_json()
}

/// The JSON text of an event stamped `ts` (see [`timestamp`]). `message`
/// is the publisher's raw JSON, copied byte for byte.
pub fn encode_event(topic: &str, message: &RawValue, seq: u64, ts: &str) -> String {
    let mut out = String::with_capacity(64 + topic.len() + message.get().len());
    out.push_str(r#"{"type":"event","topic":"#);
    out.push_str(&serde_json::to_string(topic).expect("strings always serialise"));
    out.push_str(r#","message":"#);
    out.push_str(message.get());
    out.push_str(r#","seq":"#);
    out.push_str(&seq.to_string());
    out.push_str(r#","ts":""#);
    out.push_str(ts);
    out.push_str("\"}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::time::{Duration, UNIX_EPOCH};

    fn bad(text: &str) -> InvalidRequest {
        parse_client_frame(text).expect_err("should be rejected")
    }

    #[test]
    fn parses_every_request_type() {
        let r = parse_client_frame(r#"{"type":"subscribe","topic":"orders","client_id":"s1","last_n":5,"request_id":"r1"}"#).unwrap();
        assert!(
            matches!(&r, ClientRequest::Subscribe { topic, client_id, start: Start::LastN(5), request_id: Some(id) } if topic == "orders" && client_id == "s1" && id == "r1"),
            "{r:?}"
        );
        let r = parse_client_frame(r#"{"type":"unsubscribe","topic":"orders","client_id":"s1"}"#)
            .unwrap();
        assert!(
            matches!(&r, ClientRequest::Unsubscribe { topic, client_id, request_id: None } if topic == "orders" && client_id == "s1"),
            "{r:?}"
        );
        let text = r#"{"type":"publish","topic":"o","message":{"id":"m1", "payload": {"a":[1, 2.50]}},"extra":true}"#;
        match parse_client_frame(text).unwrap() {
            ClientRequest::Publish {
                topic,
                message,
                request_id,
            } => {
                assert_eq!(topic, "o");
                assert_eq!(message.get(), r#"{"id":"m1", "payload": {"a":[1, 2.50]}}"#);
                assert_eq!(request_id, None);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_client_frame(r#"{"type":"ping","request_id":"r9"}"#)
                .unwrap()
                .request_id(),
            Some("r9")
        );
    }

    #[test]
    fn subscribe_defaults_and_limits_last_n() {
        let n = |v: &str| match parse_client_frame(&format!(
            r#"{{"type":"subscribe","topic":"t","client_id":"c","last_n":{v}}}"#
        )) {
            Ok(ClientRequest::Subscribe {
                start: Start::LastN(n),
                ..
            }) => Ok(n),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.message),
        };
        assert_eq!(n("0"), Ok(0));
        assert_eq!(n("null"), Ok(0));
        assert_eq!(n("-0"), Ok(0));
        assert_eq!(n("123456789012345678901234567890"), Ok(usize::MAX));
        assert!(n("-1").unwrap_err().contains("negative"));
        assert!(n("1.5").unwrap_err().contains("integer"));
        assert!(n("1e2").unwrap_err().contains("integer"));
        assert!(n(r#""3""#).unwrap_err().contains("last_n"));
        assert!(matches!(
            parse_client_frame(r#"{"type":"subscribe","topic":"t","client_id":"c"}"#),
            Ok(ClientRequest::Subscribe {
                start: Start::LastN(0),
                ..
            })
        ));
    }

    #[test]
    fn subscribe_resumes_with_since_seq_and_epoch() {
        let start = |fields: &str| {
            parse_client_frame(&format!(
                r#"{{"type":"subscribe","topic":"t","client_id":"c"{fields}}}"#
            ))
            .map(|r| match r {
                ClientRequest::Subscribe { start, .. } => start,
                other => panic!("{other:?}"),
            })
            .map_err(|e| e.message)
        };
        assert_eq!(
            start(r#","since_seq":7,"epoch":"e1""#),
            Ok(Start::Since {
                seq: 7,
                epoch: "e1".into()
            })
        );
        assert_eq!(
            start(r#","since_seq":0,"epoch":"e1","last_n":null"#),
            Ok(Start::Since {
                seq: 0,
                epoch: "e1".into()
            })
        );
        assert_eq!(
            start(r#","epoch":"e1","last_n":2"#),
            Ok(Start::LastN(2)),
            "an epoch alone changes nothing"
        );
        assert_eq!(
            start(r#","since_seq":7"#),
            Err("field 'since_seq' needs the field 'epoch'".into())
        );
        assert_eq!(
            start(r#","since_seq":7,"epoch":"e1","last_n":0"#),
            Err("fields 'since_seq' and 'last_n' cannot be used together".into())
        );
        assert_eq!(
            start(r#","since_seq":-1,"epoch":"e1""#),
            Err("field 'since_seq' must not be negative".into())
        );
        assert_eq!(
            start(r#","since_seq":"7","epoch":"e1""#),
            Err("field 'since_seq' must be a non-negative integer".into())
        );
        assert_eq!(
            start(r#","since_seq":7,"epoch":7"#),
            Err("field 'epoch' must be a string".into())
        );
    }

    #[test]
    fn acks_carry_what_the_request_got() {
        let ack = |acked| {
            serde_json::from_str::<Value>(&encode_ack(Some("r"), "t", acked, UNIX_EPOCH)).unwrap()
        };
        let plain = ack(Acked::Done);
        assert_eq!(plain["status"], "ok");
        assert!(plain.get("seq").is_none() && plain.get("epoch").is_none());
        let published = ack(Acked::Published { seq: 43 });
        assert_eq!(published["seq"], 43);
        let subscribed = ack(Acked::Subscribed {
            epoch: "E",
            last_seq: 42,
            recovered: None,
        });
        assert_eq!(
            (
                subscribed["epoch"].as_str(),
                subscribed["last_seq"].as_u64()
            ),
            (Some("E"), Some(42))
        );
        assert!(subscribed.get("recovered").is_none());
        let resumed = ack(Acked::Subscribed {
            epoch: "E",
            last_seq: 42,
            recovered: Some(false),
        });
        assert_eq!(resumed["recovered"], false);
    }

    #[test]
    fn errors_name_the_field_and_echo_what_they_can() {
        assert!(bad("not json").message.starts_with("invalid JSON"));
        assert_eq!(bad("[1,2]").message, "a frame must be a JSON object");
        assert_eq!(bad("\"x\"").message, "a frame must be a JSON object");
        assert_eq!(bad("{}").message, "missing field 'type'");
        assert_eq!(
            bad(r#"{"type":5}"#).message,
            "field 'type' must be a string"
        );
        let e = bad(r#"{"type":"dance","request_id":"r1"}"#);
        assert!(e.message.contains("unknown type 'dance'"));
        assert_eq!(e.request_id.as_deref(), Some("r1"));
        assert_eq!(
            bad(r#"{"type":"ping","request_id":7}"#).message,
            "field 'request_id' must be a string"
        );
        let e = bad(r#"{"type":"subscribe","topic":"t","request_id":"r2"}"#);
        assert_eq!(e.message, "missing field 'client_id'");
        assert_eq!(
            (e.request_id.as_deref(), e.topic.as_deref()),
            (Some("r2"), Some("t"))
        );
        assert_eq!(
            bad(r#"{"type":"subscribe","client_id":"c"}"#).message,
            "missing field 'topic'"
        );
        assert_eq!(
            bad(r#"{"type":"subscribe","topic":1,"client_id":"c"}"#).message,
            "field 'topic' must be a string"
        );
        assert_eq!(
            bad(r#"{"type":"unsubscribe","topic":"t","client_id":[]}"#).message,
            "field 'client_id' must be a string"
        );
        assert_eq!(
            bad(r#"{"type":"publish","topic":"t"}"#).message,
            "missing field 'message'"
        );
        assert_eq!(
            bad(r#"{"type":"publish","topic":"t","message":"m"}"#).message,
            "field 'message' must be a JSON object"
        );
        assert_eq!(
            bad(r#"{"type":"ping","type":"ping"}"#).message,
            "a frame is invalid: duplicate field `type`"
        );
        assert_eq!(
            bad(r#"{"type":"publish","topic":"t","message":{"payload":1}}"#).message,
            "missing field 'message.id'"
        );
        assert_eq!(
            bad(r#"{"type":"publish","topic":"t","message":{"id":"","payload":1}}"#).message,
            "field 'message.id' must not be empty"
        );
        assert_eq!(
            bad(r#"{"type":"publish","topic":"t","message":{"id":3,"payload":1}}"#).message,
            "field 'message.id' must be a string"
        );
        assert_eq!(
            bad(r#"{"type":"publish","topic":"t","message":{"id":"m"}}"#).message,
            "missing field 'message.payload'"
        );
    }

    // An `InvalidRequest` is what the connection answers with `BAD_REQUEST`;
    // tests/websocket.rs checks the code on the wire.

    #[test]
    fn a_frame_that_is_not_an_object_is_refused_naming_it() {
        for value in NOT_OBJECTS {
            assert_eq!(
                bad(value),
                InvalidRequest {
                    request_id: None,
                    topic: None,
                    message: "a frame must be a JSON object".into(),
                },
                "{value}"
            );
        }
    }

    #[test]
    fn a_message_that_is_not_an_object_is_refused_naming_it() {
        for value in NOT_OBJECTS {
            let e = bad(&format!(
                r#"{{"type":"publish","topic":"t","request_id":"r","message":{value}}}"#
            ));
            let expected = if value == "null" {
                "missing field 'message'"
            } else {
                "field 'message' must be a JSON object"
            };
            assert_eq!(e.message, expected, "{value}");
            assert_eq!(
                (e.request_id.as_deref(), e.topic.as_deref()),
                (Some("r"), Some("t")),
                "{value}"
            );
        }
    }

    #[test]
    fn every_field_of_the_wrong_type_is_refused_naming_it() {
        let frames = [
            ("type", r#"{"type":V}"#),
            ("topic", r#"{"type":"subscribe","topic":V,"client_id":"c"}"#),
            (
                "client_id",
                r#"{"type":"subscribe","topic":"t","client_id":V}"#,
            ),
            (
                "client_id",
                r#"{"type":"unsubscribe","topic":"t","client_id":V}"#,
            ),
            ("request_id", r#"{"type":"ping","request_id":V}"#),
            (
                "message.id",
                r#"{"type":"publish","topic":"t","message":{"id":V,"payload":1}}"#,
            ),
        ];
        for (field, frame) in frames {
            for value in NOT_STRINGS {
                let text = frame.replace('V', value);
                assert_eq!(
                    bad(&text).message,
                    format!("field '{field}' must be a string"),
                    "{text}"
                );
            }
        }
        for value in [
            "[]",
            r#"["x"]"#,
            r#"[["x"]]"#,
            "true",
            "false",
            "{}",
            r#""3""#,
        ] {
            let text =
                format!(r#"{{"type":"subscribe","topic":"t","client_id":"c","last_n":{value}}}"#);
            assert!(
                bad(&text).message.starts_with("field 'last_n' must be"),
                "{text}"
            );
        }
    }

    #[test]
    fn decode_object_takes_only_an_object() {
        fn name(text: &str) -> Result<Option<String>, String> {
            decode_object::<RawMessage<'_>>(text, "the thing")
                .map(|m| m.id.map(|id| id.get().to_owned()))
        }
        assert_eq!(name(" \r\n\t{\"id\":\"m\"}"), Ok(Some(r#""m""#.into())));
        assert_eq!(name("{}"), Ok(None));
        for value in NOT_OBJECTS {
            assert_eq!(
                name(value),
                Err("the thing must be a JSON object".into()),
                "{value}"
            );
        }
        assert_eq!(
            name(r#"{"id":"a","id":"b"}"#),
            Err("the thing is invalid: duplicate field `id`".into())
        );
        for text in ["", "[1,", "{", "\u{a0}{}", "{} x", "[] x", "nul"] {
            assert!(
                name(text).unwrap_err().starts_with("invalid JSON: "),
                "{text:?}"
            );
        }
    }

    #[test]
    fn payload_may_be_any_json_value_including_null() {
        for payload in ["null", "1", "\"s\"", "[]", "{}", "true"] {
            let text = format!(
                r#"{{"type":"publish","topic":"t","message":{{"id":"m","payload":{payload}}}}}"#
            );
            assert!(parse_client_frame(&text).is_ok(), "{payload}");
        }
    }

    #[test]
    fn topic_names_follow_the_contract() {
        assert!(validate_topic_name("orders").is_ok());
        assert!(validate_topic_name("first topic").is_ok());
        assert!(validate_topic_name("ünïcødé").is_ok());
        assert!(validate_topic_name(&"a".repeat(255)).is_ok());
        assert!(validate_topic_name(&"a".repeat(256)).is_err());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("a/b").is_err());
        assert!(validate_topic_name("a\nb").is_err());
        assert!(validate_topic_name("a\u{7f}b").is_err());
    }

    #[test]
    fn timestamps_carry_milliseconds() {
        let at = UNIX_EPOCH + Duration::from_millis(1_756_116_000_123);
        assert_eq!(timestamp(at), "2025-08-25T10:00:00.123Z");
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn server_messages_omit_absent_fields() {
        let at = UNIX_EPOCH;
        let v: Value =
            serde_json::from_str(&encode_ack(Some("r1"), "orders", Acked::Done, at)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"ack","request_id":"r1","topic":"orders","status":"ok","ts":"1970-01-01T00:00:00.000Z"})
        );
        let v: Value = serde_json::from_str(&encode_ack(None, "o", Acked::Done, at)).unwrap();
        assert!(v.get("request_id").is_none());
        let v: Value = serde_json::from_str(&encode_error(
            ErrorCode::TopicNotFound,
            "no",
            Some("r"),
            Some("t"),
            at,
        ))
        .unwrap();
        assert_eq!(
            v["error"],
            serde_json::json!({"code":"TOPIC_NOT_FOUND","message":"no"})
        );
        assert_eq!(
            (
                v["type"].as_str(),
                v["topic"].as_str(),
                v["request_id"].as_str()
            ),
            (Some("error"), Some("t"), Some("r"))
        );
        let v: Value =
            serde_json::from_str(&encode_error(ErrorCode::SlowConsumer, "x", None, None, at))
                .unwrap();
        assert!(v.get("topic").is_none() && v.get("request_id").is_none());
        let v: Value = serde_json::from_str(&encode_pong(None, at)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"pong","ts":"1970-01-01T00:00:00.000Z"})
        );
        let v: Value = serde_json::from_str(&encode_info("topic_deleted", Some("o"), at)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"info","topic":"o","msg":"topic_deleted","ts":"1970-01-01T00:00:00.000Z"})
        );
    }

    #[test]
    fn events_pass_the_message_through_byte_for_byte() {
        let raw = RawValue::from_string(r#"{"id":"m1","payload":{"b":1.000,"a":"\u00e9"}}"#.into())
            .unwrap();
        let text = encode_event("ord\"ers", &raw, 42, &timestamp(UNIX_EPOCH));
        assert!(
            text.contains(r#""message":{"id":"m1","payload":{"b":1.000,"a":"\u00e9"}}"#),
            "{text}"
        );
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["type"], "event");
        assert_eq!(v["topic"], "ord\"ers");
        assert_eq!(v["seq"], 42);
        assert_eq!(v["ts"], "1970-01-01T00:00:00.000Z");
    }
}
