//! Unit tests of the JSON protocol (`super`).

use super::*;
use serde_json::Value;
use std::time::{Duration, UNIX_EPOCH};

fn bad(text: &str) -> InvalidRequest {
    parse_client_frame(text).expect_err("should be rejected")
}

#[test]
fn parses_every_request_type() {
    let r = parse_client_frame(
        r#"{"type":"subscribe","topic":"orders","client_id":"s1","last_n":5,"request_id":"r1"}"#,
    )
    .unwrap();
    assert!(
        matches!(&r, ClientRequest::Subscribe { topic, client_id, start: Start::LastN(5), request_id: Some(id) } if topic == "orders" && client_id == "s1" && id == "r1"),
        "{r:?}"
    );
    let r =
        parse_client_frame(r#"{"type":"unsubscribe","topic":"orders","client_id":"s1"}"#).unwrap();
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
    let mut published = Vec::new();
    encode_publish_ack(&mut published, Some("r"), "t", 43, UNIX_EPOCH);
    let published: Value = serde_json::from_slice(&published).unwrap();
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
fn a_thread_formats_each_millisecond_once_and_never_a_stale_one() {
    // Instants within one millisecond, across its edges, and back: each
    // must read exactly as formatting it afresh does.
    let base = UNIX_EPOCH + Duration::from_millis(1_756_116_000_123);
    let offsets_us = [0, 999, 1_000, 1_001, 0, 500, 2_000, 1_999, 60_000_000];
    for offset in offsets_us {
        let at = base + Duration::from_micros(offset);
        assert_eq!(
            timestamp(at),
            humantime::format_rfc3339_millis(at).to_string(),
            "{offset} µs after"
        );
    }
    assert_eq!(
        timestamp(UNIX_EPOCH - Duration::from_millis(1)),
        "1970-01-01T00:00:00.000Z",
        "a clock before 1970 is clamped, not a panic"
    );
    assert_eq!(
        timestamp(UNIX_EPOCH + Duration::from_secs(300_000_000_000)),
        "9999-12-31T23:59:59.999Z",
        "nor one after 9999"
    );
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
        serde_json::from_str(&encode_error(ErrorCode::SlowConsumer, "x", None, None, at)).unwrap();
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

/// Acks of a publish as serde wrote them before they were written by hand
/// (`encode_ack` of the day, at 2025-08-25T10:00:00.123Z).
#[test]
fn a_publish_ack_is_what_serde_wrote() {
    let at = UNIX_EPOCH + Duration::from_millis(1_756_116_000_123);
    let written = [
        (
            Some("a\"b"),
            "back\\slash",
            u64::MAX,
            "{\"type\":\"ack\",\"request_id\":\"a\\\"b\",\"topic\":\"back\\\\slash\",\"status\":\"ok\",\"seq\":18446744073709551615,\"ts\":\"2025-08-25T10:00:00.123Z\"}",
        ),
        (
            Some("\0\u{1}\u{8}\t\n\u{b}\u{c}\r\u{1f}\u{7f}"),
            "é中😀\u{2028}",
            42,
            "{\"type\":\"ack\",\"request_id\":\"\\u0000\\u0001\\b\\t\\n\\u000b\\f\\r\\u001f\u{7f}\",\"topic\":\"é中😀\u{2028}\",\"status\":\"ok\",\"seq\":42,\"ts\":\"2025-08-25T10:00:00.123Z\"}",
        ),
        (
            None,
            "/slash/",
            0,
            "{\"type\":\"ack\",\"topic\":\"/slash/\",\"status\":\"ok\",\"seq\":0,\"ts\":\"2025-08-25T10:00:00.123Z\"}",
        ),
        (
            Some(""),
            "",
            42,
            "{\"type\":\"ack\",\"request_id\":\"\",\"topic\":\"\",\"status\":\"ok\",\"seq\":42,\"ts\":\"2025-08-25T10:00:00.123Z\"}",
        ),
    ];
    for (request_id, topic, seq, serde_wrote) in written {
        let mut out = b"before".to_vec();
        encode_publish_ack(&mut out, request_id, topic, seq, at);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("before{serde_wrote}")
        );
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, failure_persistence: None, ..Default::default() })]

    /// Every string escaped as serde_json escapes it: quotes, backslashes,
    /// every control character, non-ASCII.
    #[test]
    fn a_publish_ack_is_what_serde_writes(
        request_id in proptest::option::of(tricky_string()),
        topic in tricky_string(),
        seq: u64,
        millis in 0u64..253_402_300_800_000,
    ) {
        let at = UNIX_EPOCH + Duration::from_millis(millis);
        let mut out = Vec::new();
        encode_publish_ack(&mut out, request_id.as_deref(), &topic, seq, at);
        proptest::prop_assert_eq!(
            String::from_utf8(out).unwrap(),
            serde_publish_ack(request_id.as_deref(), &topic, seq, at)
        );
    }
}

/// Strings made of what JSON escapes and what it does not.
fn tricky_string() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    prop_oneof![
        any::<String>(),
        proptest::collection::vec(
            prop_oneof![
                proptest::char::range('\0', '\u{7f}'),
                proptest::sample::select(vec![
                    '"', '\\', '/', 'é', '中', '😀', '\u{2028}', '\u{fffd}'
                ]),
            ],
            0..24,
        )
        .prop_map(|chars| chars.into_iter().collect()),
    ]
}

/// A publish's ack as serde writes it: the fields of the `ServerMessage`
/// acks were written from, in its order.
fn serde_publish_ack(request_id: Option<&str>, topic: &str, seq: u64, at: SystemTime) -> String {
    #[derive(Serialize)]
    struct PublishAck<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        request_id: Option<&'a str>,
        topic: &'a str,
        status: &'static str,
        seq: u64,
        ts: String,
    }
    serde_json::to_string(&PublishAck {
        kind: "ack",
        request_id,
        topic,
        status: "ok",
        seq,
        ts: timestamp(at),
    })
    .unwrap()
}

#[test]
fn events_pass_the_message_through_byte_for_byte() {
    let raw =
        RawValue::from_string(r#"{"id":"m1","payload":{"b":1.000,"a":"\u00e9"}}"#.into()).unwrap();
    let ts = timestamp(UNIX_EPOCH);
    let head = event_head("ord\"ers");
    let event = Event::new(&head, raw.as_ref().into(), 42, &ts);
    let text = String::from_utf8(event.parts().concat()).unwrap();
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
