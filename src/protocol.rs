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
//!
//! A publish, the frame every message costs, is decoded and answered
//! without serde: [`fast`] reads the common publish frame in one pass,
//! borrowing its fields (serde's path decides everything else, and words
//! every error), [`encode_publish_ack`] writes its ack by hand, and an
//! [`Event`] is spliced from a topic's prebuilt head, the publisher's
//! message as it came, and its `seq` and `ts`.

pub mod fast;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::cell::Cell;
use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The error codes sent in WebSocket `error` messages (over REST the same
/// words are HTTP errors, see `http::routes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest,
    TopicNotFound,
    SlowConsumer,
    ShuttingDown,
    /// Cluster mode: the backplane could not carry the request out.
    Unavailable,
    /// Tokens: no valid token yet, or a bad `auth` message.
    Unauthorized,
    /// Tokens: the connection's token does not grant this.
    Forbidden,
    /// A publish over `PUBLISH_RATE`.
    RateLimited,
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
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::Internal => "INTERNAL",
        }
    }
}

/// A valid client frame. Its `topic` and `request_id` are borrowed from
/// the frame where the publish fast path read them ([`fast`]).
#[derive(Debug, PartialEq, Eq)]
pub enum ClientRequest<'a> {
    Subscribe {
        topic: Cow<'a, str>,
        client_id: String,
        start: Start,
        request_id: Option<Cow<'a, str>>,
    },
    Unsubscribe {
        topic: Cow<'a, str>,
        client_id: String,
        request_id: Option<Cow<'a, str>>,
    },
    Publish {
        topic: Cow<'a, str>,
        message: RawJson<'a>,
        request_id: Option<Cow<'a, str>>,
    },
    Ping {
        request_id: Option<Cow<'a, str>>,
    },
    /// A token, first or fresh (see `auth`).
    Auth {
        token: String,
        request_id: Option<Cow<'a, str>>,
    },
}

/// JSON text as a client wrote it, valid by construction: the text of a
/// `RawValue`, or of a `message` the publish fast path checked. A publish
/// hands it to the broker, which copies it into its event byte for byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawJson<'a>(&'a str);

impl<'a> RawJson<'a> {
    pub fn get(self) -> &'a str {
        self.0
    }

    /// An owned copy, for a message that outlives its frame (cluster mode
    /// hands it to the backplane). serde_json makes a `RawValue` only by
    /// checking its text, which costs a pass over it: off the hot path.
    pub fn to_raw_value(self) -> Box<RawValue> {
        RawValue::from_string(self.0.to_owned()).expect("a RawJson is valid JSON")
    }
}

impl<'a> From<&'a RawValue> for RawJson<'a> {
    fn from(raw: &'a RawValue) -> Self {
        RawJson(raw.get())
    }
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
            | ClientRequest::Ping { request_id }
            | ClientRequest::Auth { request_id, .. } => request_id.as_deref(),
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
    #[serde(borrow, default, deserialize_with = "given")]
    token: Option<&'a RawValue>,
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
    // Checked on its raw JSON, which serde has already validated: every
    // publish passes here, and nothing is allocated unless it is refused.
    let id = present(inner.id).ok_or_else(|| format!("missing field '{field}id'"))?;
    if !id.get().starts_with('"') {
        return Err(format!("field '{field}id' must be a string"));
    }
    if id.get() == "\"\"" {
        return Err(format!("field '{field}id' must not be empty"));
    }
    if inner.payload.is_none() {
        return Err(format!("missing field '{field}payload'"));
    }
    Ok(())
}

/// Decodes and validates one client text frame: a publish through the fast
/// path when it is sure ([`fast::publish`]), every other frame through
/// serde ([`parse_client_frame_by_serde`]), with the same result.
pub fn parse_client_frame(text: &str) -> Result<ClientRequest<'_>, InvalidRequest> {
    match fast::publish(text) {
        Some(publish) => Ok(ClientRequest::Publish {
            topic: Cow::Borrowed(publish.topic),
            message: RawJson(publish.message),
            request_id: publish.request_id.map(Cow::Borrowed),
        }),
        None => parse_client_frame_by_serde(text),
    }
}

/// Decodes and validates one client text frame through serde: what
/// [`parse_client_frame`] does with every frame the fast path is not sure
/// of, and the reference it is tested against.
pub fn parse_client_frame_by_serde(text: &str) -> Result<ClientRequest<'_>, InvalidRequest> {
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
            topic: Cow::Owned(need_topic()?),
            client_id: required_string(raw.client_id, "client_id").map_err(fail)?,
            start: parse_start(&raw).map_err(fail)?,
            request_id: request_id.map(Cow::Owned),
        }),
        "unsubscribe" => Ok(ClientRequest::Unsubscribe {
            topic: Cow::Owned(need_topic()?),
            client_id: required_string(raw.client_id, "client_id").map_err(fail)?,
            request_id: request_id.map(Cow::Owned),
        }),
        "publish" => {
            let topic = need_topic()?;
            let message =
                present(raw.message).ok_or_else(|| fail("missing field 'message'".into()))?;
            validate_message(message, "field 'message'", "message.").map_err(fail)?;
            Ok(ClientRequest::Publish {
                topic: Cow::Owned(topic),
                message: message.into(),
                request_id: request_id.map(Cow::Owned),
            })
        }
        "ping" => Ok(ClientRequest::Ping {
            request_id: request_id.map(Cow::Owned),
        }),
        "auth" => Ok(ClientRequest::Auth {
            token: required_string(raw.token, "token").map_err(fail)?,
            request_id: request_id.map(Cow::Owned),
        }),
        other => Err(fail(format!(
            "unknown type '{other}'; expected subscribe, unsubscribe, publish, ping or auth"
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

thread_local! {
    /// The millisecond (since the Unix epoch) this thread formatted last,
    /// and its text.
    static LAST_STAMP: Cell<(u64, Stamp)> = const { Cell::new((u64::MAX, Stamp([0; STAMP_LEN]))) };
}

/// The length of an RFC 3339 timestamp with milliseconds of a year with
/// four digits, as every year [`stamp`] can name has.
const STAMP_LEN: usize = "2025-08-25T10:00:00.123Z".len();

/// A millisecond as RFC 3339 text, on the stack: see [`stamp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp([u8; STAMP_LEN]);

impl Stamp {
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("a stamp is ASCII")
    }
}

/// The last millisecond RFC 3339 can name (the end of year 9999).
const LAST_NAMEABLE_MILLI: u64 = 253_402_300_800_000 - 1;

/// RFC 3339 UTC with milliseconds: `2025-08-25T10:00:00.123Z`. A clock
/// before 1970 or after 9999 is wrong: its time is clamped to that range
/// (formatting it would panic).
///
/// Every publish stamps its event and its ack, and formatting a date costs
/// as much as encoding the rest of a small event; a busy thread stamps many
/// in the same millisecond, so it formats each millisecond once, and the
/// text is copied, never allocated.
pub fn stamp(at: SystemTime) -> Stamp {
    let millis = millis_since_epoch(at);
    LAST_STAMP.with(|last| match last.get() {
        (formatted, stamp) if formatted == millis => stamp,
        _ => {
            let mut text = [0; STAMP_LEN];
            let at = UNIX_EPOCH + Duration::from_millis(millis);
            write!(&mut text[..], "{}", humantime::format_rfc3339_millis(at))
                .expect("a year of four digits fits");
            let stamp = Stamp(text);
            last.set((millis, stamp));
            stamp
        }
    })
}

/// [`stamp`] as a `String`.
pub fn timestamp(at: SystemTime) -> String {
    stamp(at).as_str().to_owned()
}

/// Milliseconds since the Unix epoch, within what RFC 3339 can name.
fn millis_since_epoch(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |since| {
        u64::try_from(since.as_millis()).map_or(LAST_NAMEABLE_MILLI, |m| m.min(LAST_NAMEABLE_MILLI))
    })
}

/// `at` within what RFC 3339 can name (humantime panics outside it).
fn clamped(at: SystemTime) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(millis_since_epoch(at))
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'static str,
    message: &'a str,
}

/// Every server message but `event`, spliced by hand to pass the
/// publisher's `message` through untouched ([`Event`]), and the ack of a
/// publish, written by hand ([`encode_publish_ack`]).
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
    epoch: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    recovered: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorBody<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    msg: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires: Option<String>,
    ts: String,
}

impl<'a> ServerMessage<'a> {
    fn new(kind: &'static str, at: SystemTime) -> Self {
        ServerMessage {
            kind,
            request_id: None,
            topic: None,
            status: None,
            epoch: None,
            last_seq: None,
            recovered: None,
            error: None,
            msg: None,
            sub: None,
            expires: None,
            ts: timestamp(at),
        }
    }

    fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server messages always serialise")
    }
}

/// What an ack says beyond `status: ok` (a publish's: see
/// [`encode_publish_ack`]).
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
    }
    ack.to_json()
}

/// The ack of an `auth` message: who the token names, and when it
/// expires.
pub fn encode_auth_ack(
    request_id: Option<&str>,
    sub: &str,
    expires: SystemTime,
    at: SystemTime,
) -> String {
    ServerMessage {
        request_id,
        status: Some("ok"),
        sub: Some(sub),
        expires: Some(humantime::format_rfc3339_seconds(clamped(expires)).to_string()),
        ..ServerMessage::new("ack", at)
    }
    .to_json()
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

/// Server-initiated notices: `ping`, `topic_deleted` and
/// `subscription_revoked` (with their topic), `server_shutdown`,
/// `token_expired`, `disconnected`.
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

/// The ack of a publish, `{"type":"ack","request_id":"r1","topic":"orders",
/// "status":"ok","seq":42,"ts":"..."}` (`request_id` omitted when absent),
/// appended to `out`: byte for byte what serde writes for the other acks,
/// written by hand because every publish gets one (nothing is allocated).
pub fn encode_publish_ack(
    out: &mut Vec<u8>,
    request_id: Option<&str>,
    topic: &str,
    seq: u64,
    at: SystemTime,
) {
    out.extend_from_slice(br#"{"type":"ack""#);
    if let Some(request_id) = request_id {
        out.extend_from_slice(br#","request_id":"#);
        push_json_string(out, request_id);
    }
    out.extend_from_slice(br#","topic":"#);
    push_json_string(out, topic);
    out.extend_from_slice(br#","status":"ok","seq":"#);
    out.extend_from_slice(Decimal::new(seq).as_bytes());
    out.extend_from_slice(br#","ts":""#);
    out.extend_from_slice(stamp(at).as_str().as_bytes());
    out.extend_from_slice(br#""}"#);
}

/// `text` as a JSON string, escaped as serde_json escapes it: `"` and `\`
/// behind a backslash, backspace, form feed, line feed, carriage return and
/// tab by their letter, every other control character as `\u00xx`
/// (lowercase hex), everything else as it is.
fn push_json_string(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut plain_from = 0;
    for (at, &byte) in bytes.iter().enumerate() {
        let letter = match byte {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            0x0c => b'f',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            0x00..=0x1f => b'u',
            _ => continue,
        };
        out.extend_from_slice(&bytes[plain_from..at]);
        out.extend_from_slice(&[b'\\', letter]);
        if letter == b'u' {
            out.extend_from_slice(&[
                b'0',
                b'0',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0xf)],
            ]);
        }
        plain_from = at + 1;
    }
    out.extend_from_slice(&bytes[plain_from..]);
    out.push(b'"');
}

/// A `u64` in decimal, on the stack.
struct Decimal {
    digits: [u8; 20],
    start: usize,
}

impl Decimal {
    fn new(mut n: u64) -> Self {
        let mut digits = [0; 20];
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        Decimal { digits, start }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.digits[self.start..]
    }
}

/// What every event of `topic` begins with, up to its `message`:
/// `{"type":"event","topic":"orders","message":`. A topic builds it once.
pub fn event_head(topic: &str) -> Box<str> {
    let topic = serde_json::to_string(topic).expect("strings always serialise");
    format!(r#"{{"type":"event","topic":{topic},"message":"#).into_boxed_str()
}

/// One event's JSON text, as the pieces it is spliced from, so that it is
/// written once, straight into its frame: the topic's [`event_head`], the
/// publisher's `message` byte for byte, then its `seq` and `ts` (see
/// [`stamp`]): `{"type":"event","topic":"orders","message":{...},"seq":42,
/// "ts":"..."}`.
pub struct Event<'a> {
    head: &'a str,
    message: RawJson<'a>,
    seq: Decimal,
    ts: &'a str,
}

impl<'a> Event<'a> {
    pub fn new(head: &'a str, message: RawJson<'a>, seq: u64, ts: &'a str) -> Self {
        Event {
            head,
            message,
            seq: Decimal::new(seq),
            ts,
        }
    }

    /// The event's text in pieces, in order: put end to end, they are
    /// the whole.
    pub fn parts(&self) -> [&[u8]; 7] {
        [
            self.head.as_bytes(),
            self.message.get().as_bytes(),
            br#","seq":"#,
            self.seq.as_bytes(),
            br#","ts":""#,
            self.ts.as_bytes(),
            br#""}"#,
        ]
    }
}

#[cfg(test)]
mod tests;
