//! Unit tests of the publish fast path (`super`): what it takes, what it
//! leaves to serde, and that either way a frame gets what serde alone gives
//! it. tests/properties.rs checks the same on generated frames.

use super::*;
use crate::protocol::{parse_client_frame, parse_client_frame_by_serde};

/// What the fast path says of `frame`, checked against serde: a yes must
/// be serde's answer, and the whole (fast path, then serde) must be
/// serde's answer.
fn fast(frame: &str) -> Option<Publish<'_>> {
    let answer = publish(frame);
    assert_eq!(
        parse_client_frame(frame),
        parse_client_frame_by_serde(frame),
        "{frame}"
    );
    answer
}

/// `{"type":"publish","topic":"t","message":MESSAGE}`
fn with_message(message: &str) -> String {
    format!(r#"{{"type":"publish","topic":"t","message":{message}}}"#)
}

/// A payload nested `depth` deep: arrays and objects in turn.
fn nested(depth: usize) -> String {
    let mut text = String::from("1");
    for level in 0..depth {
        text = if level % 2 == 0 {
            format!("[{text}]")
        } else {
            format!(r#"{{"k":{text}}}"#)
        };
    }
    format!(r#"{{"id":"m","payload":{text}}}"#)
}

#[test]
fn reads_a_publish_with_its_fields_borrowed() {
    let frame = r#"{"type":"publish","topic":"orders","message":{"id":"m1","payload":{"a":[1,2.5]}},"request_id":"r1"}"#;
    assert_eq!(
        fast(frame),
        Some(Publish {
            topic: "orders",
            message: r#"{"id":"m1","payload":{"a":[1,2.5]}}"#,
            request_id: Some("r1"),
        })
    );
    let spaced = " \n{ \"request_id\" : null ,\t\"message\" :\r{ \"payload\" : [ ] , \"id\" : \"x\" } , \"topic\":\"t\", \"type\" : \"publish\" }\r\n ";
    assert_eq!(
        fast(spaced),
        Some(Publish {
            topic: "t",
            message: r#"{ "payload" : [ ] , "id" : "x" }"#,
            request_id: None,
        })
    );
}

#[test]
fn takes_what_serde_takes_and_reads_no_further() {
    let frames = [
        with_message(r#"{"id":"m","payload":null}"#),
        r#"{"type":"publish","topic":"","message":{"id":"m","payload":1}}"#.into(),
        r#"{"type":"publish","topic":"ünïcødé 😀","message":{"id":"m","payload":1}}"#.into(),
        // Fields serde knows but a publish does not read, and unknown ones.
        r#"{"client_id":"c","last_n":-1,"since_seq":"x","epoch":7,"token":{},"type":"publish","topic":"t","message":{"id":"m","payload":1},"extra":{"x":[1,{"y":null}]},"extra":2}"#.into(),
        // Keys given twice where serde does not mind: unknown ones in the
        // message, and any inside the payload.
        with_message(r#"{"id":"m","payload":{"a":1,"a":2},"x":1,"x":2}"#),
        // Escapes are passed on as written in the message and its id, lone
        // surrogates included (a `RawValue` takes them).
        with_message(r#"{"id":"m\u0031\n\"\\\/\b\f\r\t","payload":"\ud800 \udc00 \u00E9 é"}"#),
        with_message(r#"{"id":"\ud800","payload":{"\u0000":1}}"#),
        with_message(r#"{"id":"m","payload":[-0,0.5e-3,1E+400,-1e-400,123456789012345678901234567890,true,false,null,"\u007f"]}"#),
        with_message(&nested(MAX_DEPTH as usize)),
    ];
    for frame in &frames {
        let got = fast(frame).unwrap_or_else(|| panic!("not taken: {frame}"));
        assert!(got.message.starts_with('{') && got.message.ends_with('}'));
    }
}

#[test]
fn nests_as_deep_as_serde_would_decode_and_leaves_deeper_to_it() {
    // The frame and the message are two levels: 126 more make 128.
    assert!(fast(&with_message(&nested(126))).is_some());
    for depth in [127, 128, 129, 10_000] {
        let frame = with_message(&nested(depth));
        assert!(fast(&frame).is_none(), "{depth}");
        // serde_json checks a `RawValue` without recursion: it takes any
        // depth, and the broker keeps doing so.
        assert!(parse_client_frame(&frame).is_ok(), "{depth}");
    }
}

#[test]
fn leaves_to_serde_what_it_is_not_sure_of() {
    // (frame, whether serde takes it)
    let frames = [
        // Escapes where a field is read, and keys with escapes.
        (
            r#"{"type":"publish","topic":"t\u0031","message":{"id":"m","payload":1}}"#.into(),
            true,
        ),
        (
            r#"{"type":"publish","topic":"t","message":{"id":"m","payload":1},"request_id":"r\"1"}"#.into(),
            true,
        ),
        (
            r#"{"type":"publ\u0069sh","topic":"t","message":{"id":"m","payload":1}}"#.into(),
            true,
        ),
        (
            r#"{"type":"publish","top\u0069c":"t","message":{"id":"m","payload":1}}"#.into(),
            true,
        ),
        (with_message(r#"{"\u0069d":"m","payload":1}"#), true),
        (
            r#"{"type":"publish","topic":"t","topic":"t","message":{"id":"m","payload":1}}"#.into(),
            false,
        ),
        (
            r#"{"type":"publish","topic":"t","t\u006fpic":"u","message":{"id":"m","payload":1}}"#.into(),
            false,
        ),
        (
            r#"{"type":"publish","topic":"t","message":{"id":"m","payload":1},"client_id":1,"client_id":2}"#.into(),
            false,
        ),
        (
            r#"{"type":"publish","type":"publish","topic":"t","message":{"id":"m","payload":1}}"#.into(),
            false,
        ),
        (
            r#"{"type":"publish","topic":"t","message":{"id":"m","payload":1},"message":{"id":"n","payload":1}}"#.into(),
            false,
        ),
        (
            r#"{"type":"publish","topic":"t","message":{"id":"m","payload":1},"request_id":"a","request_id":"b"}"#.into(),
            false,
        ),
        (
            r#"{"type":"publish","topic":"t","message":{"id":"m","payload":1},"request_id":"\ud800"}"#.into(),
            false,
        ),
        (with_message(r#"{"id":"m","id":"n","payload":1}"#), false),
        (with_message(r#"{"id":"m","payload":1,"payload":2}"#), false),
        (with_message(r#"{"id":"m","payload":1,"\ud800":2}"#), false),
        // The message's rules.
        (with_message(r#"{"id":"","payload":1}"#), false),
        (with_message(r#"{"id":3,"payload":1}"#), false),
        (with_message(r#"{"id":null,"payload":1}"#), false),
        (with_message(r#"{"payload":1}"#), false),
        (with_message(r#"{"id":"m"}"#), false),
        (with_message("{}"), false),
        (with_message(r#"[{"id":"m","payload":1}]"#), false),
        (with_message(r#""m""#), false),
        (with_message("null"), false),
        // Other types, missing and ill-typed fields.
        (r#"{"type":"ping","request_id":"r"}"#.into(), true),
        (
            r#"{"type":"subscribe","topic":"t","client_id":"c"}"#.into(),
            true,
        ),
        (r#"{"topic":"t","message":{"id":"m","payload":1}}"#.into(), false),
        (r#"{"type":"publish","message":{"id":"m","payload":1}}"#.into(), false),
        (r#"{"type":"publish","topic":"t"}"#.into(), false),
        (
            r#"{"type":"publish","topic":7,"message":{"id":"m","payload":1}}"#.into(),
            false,
        ),
        (
            r#"{"type":"publish","topic":null,"message":{"id":"m","payload":1}}"#.into(),
            false,
        ),
        (
            r#"{"type":"publish","topic":"t","message":{"id":"m","payload":1},"request_id":7}"#.into(),
            false,
        ),
        ("{}".into(), false),
        ("[]".into(), false),
        // Not JSON, or not only JSON.
        (format!("\u{feff}{}", with_message(r#"{"id":"m","payload":1}"#)), false),
        (format!("\u{a0}{}", with_message(r#"{"id":"m","payload":1}"#)), false),
        (format!("{} x", with_message(r#"{"id":"m","payload":1}"#)), false),
        (format!("{}}}", with_message(r#"{"id":"m","payload":1}"#)), false),
        (
            r#"{"type":"publish","topic":"t","message":{"id":"m","payload":1},}"#.into(),
            false,
        ),
        (
            r#"{"type":"publish","topic":"t","message":{"id":"m","payload":1}"#.into(),
            false,
        ),
        (
            "{\"type\":\"publish\",\"topic\":\"t\t\",\"message\":{\"id\":\"m\",\"payload\":1}}".into(),
            false,
        ),
        (
            "{\"type\":\"publish\",\"topic\":\"t\",\"message\":{\"id\":\"m\",\"payload\":\"\u{1}\"}}".into(),
            false,
        ),
    ];
    for (frame, serde_takes) in &frames {
        assert!(fast(frame).is_none(), "taken: {frame}");
        assert_eq!(
            parse_client_frame_by_serde(frame).is_ok(),
            *serde_takes,
            "{frame}"
        );
    }
}

#[test]
fn checks_every_value_as_serde_checks_a_raw_value() {
    let bad = [
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
        "1_0",
        "tru",
        "nul",
        "fals",
        "True",
        "nulll",
        r#""\a""#,
        r#""\0""#,
        r#""\'""#,
        r#""\x""#,
        r#""\u12""#,
        r#""\u12g4""#,
        r#""\U0041""#,
        r#""open"#,
        "[1,]",
        "[,1]",
        "[1 2]",
        r#"{"a":1,}"#,
        r#"{"a" 1}"#,
        "{1:2}",
        r#"{"a":}"#,
        "[",
        "]",
        "{",
        r#"{"a":1]"#,
        "[1}",
        "'s'",
    ];
    for payload in bad {
        let frame = with_message(&format!(r#"{{"id":"m","payload":{payload}}}"#));
        assert!(fast(&frame).is_none(), "taken: {frame}");
        assert!(parse_client_frame(&frame).is_err(), "{frame}");
    }
    let good = [
        "0",
        "-0",
        "10",
        "-12.5e+3",
        "1E-0",
        "0.000",
        r#""""#,
        r#""\"\\\/\b\f\n\r\t\u0000\uFFFF""#,
        "[]",
        "{}",
        "[[],{}]",
        r#"{"":""}"#,
        " [ 1 , { \"a\" : [ ] } ] ",
    ];
    for payload in good {
        let frame = with_message(&format!(r#"{{"id":"m","payload":{payload}}}"#));
        assert!(fast(&frame).is_some(), "not taken: {frame}");
    }
}

#[test]
fn finds_the_first_byte_that_ends_a_plain_run_wherever_it_is() {
    let special = [b'"', b'\\', 0x00, 0x1f];
    let ordinary = [b'a', b' ', b'!', b'#', b'[', b']', 0x7f, 0x80, 0xff];
    for len in 0..=20 {
        for filler in ordinary {
            assert_eq!(
                special_byte(&vec![filler; len]),
                None,
                "{len} × {filler:#x}"
            );
            for at in 0..len {
                for first in special {
                    let mut bytes = vec![filler; len];
                    bytes[at] = first;
                    assert_eq!(special_byte(&bytes), Some(at), "{bytes:x?}");
                    // What follows the first cannot hide it.
                    for later in (at + 1..len).step_by(3) {
                        bytes[later] = b'"';
                        assert_eq!(special_byte(&bytes), Some(at), "{bytes:x?}");
                    }
                }
            }
        }
    }
}

/// The names serde's derived code gives a deserializer for `T`'s fields.
fn serde_field_names<'de, T: serde::Deserialize<'de>>() -> &'static [&'static str] {
    use serde::de::{value::Error, Error as _, Visitor};
    struct FieldNames<'a>(&'a mut &'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for FieldNames<'_> {
        type Error = Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
            Err(Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Error> {
            *self.0 = fields;
            Err(Error::custom("names read"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut names: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldNames(&mut names));
    names
}

/// A known field given twice is refused by serde; the fast path must know
/// every one of them, or it would take a frame serde refuses.
#[test]
fn knows_every_field_serde_knows() {
    use crate::protocol::{RawClientFrame, RawMessage};
    assert_eq!(serde_field_names::<RawClientFrame<'_>>(), FRAME_FIELDS);
    assert_eq!(serde_field_names::<RawMessage<'_>>(), ["id", "payload"]);
}
