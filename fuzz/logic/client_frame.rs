// The body of the `client_frame` fuzz target, shared with the regression
// test that replays `fuzz/regressions/client_frame/` (tests/fuzz_regressions.rs).
//
// The input is one text frame (lossily decoded when it is not UTF-8). A
// valid publish must carry an object as its `message` (serde would take an
// array for a struct), and is encoded as an event, which must be a JSON
// object whose `message` is the publisher's, byte for byte; every reply the
// frame can get must be JSON too.

use pubsub::protocol::{
    encode_ack, encode_auth_ack, encode_error, encode_event, encode_pong, parse_client_frame,
    timestamp, Acked, ClientRequest, ErrorCode, Start,
};
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::time::SystemTime;

pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let at = SystemTime::UNIX_EPOCH;
    match parse_client_frame(&text) {
        Ok(ClientRequest::Publish {
            topic,
            message,
            request_id,
        }) => {
            assert!(message.get().starts_with('{'), "not an object: {text}");
            let event = encode_event(&topic, message, 42, &timestamp(at));
            let fields = json_object(&event);
            assert_eq!(fields["message"].get(), message.get(), "{event}");
            let echoed: String = serde_json::from_str(fields["topic"].get()).expect("a string");
            assert_eq!(echoed, topic);
            assert_eq!(fields["seq"].get(), "42");
            json_object(&encode_ack(
                request_id.as_deref(),
                &topic,
                Acked::Published { seq: 42 },
                at,
            ));
        }
        Ok(ClientRequest::Subscribe {
            topic,
            request_id,
            start,
            ..
        }) => {
            let recovered = matches!(start, Start::Since { .. }).then_some(true);
            let acked = Acked::Subscribed {
                epoch: "e",
                last_seq: 7,
                recovered,
            };
            json_object(&encode_ack(request_id.as_deref(), &topic, acked, at));
            topic_not_found(&topic, request_id.as_deref(), at);
        }
        Ok(ClientRequest::Unsubscribe {
            topic, request_id, ..
        }) => {
            json_object(&encode_ack(request_id.as_deref(), &topic, Acked::Done, at));
            topic_not_found(&topic, request_id.as_deref(), at);
        }
        Ok(ClientRequest::Ping { request_id }) => {
            json_object(&encode_pong(request_id.as_deref(), at));
        }
        Ok(ClientRequest::Auth { request_id, .. }) => {
            let ack = json_object(&encode_auth_ack(request_id.as_deref(), "user", at, at));
            assert_eq!(ack["sub"].get(), "\"user\"");
        }
        Err(invalid) => {
            json_object(&encode_error(
                ErrorCode::BadRequest,
                &invalid.message,
                invalid.request_id.as_deref(),
                invalid.topic.as_deref(),
                at,
            ));
        }
    }
}

fn topic_not_found(topic: &str, request_id: Option<&str>, at: SystemTime) {
    json_object(&encode_error(
        ErrorCode::TopicNotFound,
        &format!("topic '{topic}' does not exist"),
        request_id,
        Some(topic),
        at,
    ));
}

/// `text` is a JSON object; its fields, raw.
fn json_object(text: &str) -> BTreeMap<String, Box<RawValue>> {
    match serde_json::from_str(text) {
        Ok(fields) => fields,
        Err(e) => panic!("not a JSON object ({e}): {text}"),
    }
}
