// The body of the `client_frame` fuzz target, shared with the regression
// test that replays `fuzz/regressions/client_frame/` (tests/fuzz_regressions.rs).
//
// The input is one text frame (lossily decoded when it is not UTF-8). A
// valid publish must carry an object as its `message` (serde would take an
// array for a struct), and is encoded as an event, which must be a JSON
// object whose `message` is the publisher's, byte for byte; every reply the
// frame can get must be JSON too.

use pubsub::protocol::{
    encode_ack, encode_error, encode_event, encode_pong, parse_client_frame, ClientRequest,
    ErrorCode,
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
            let event = encode_event(&topic, message, 42, at);
            let fields = json_object(&event);
            assert_eq!(fields["message"].get(), message.get(), "{event}");
            let echoed: String = serde_json::from_str(fields["topic"].get()).expect("a string");
            assert_eq!(echoed, topic);
            assert_eq!(fields["seq"].get(), "42");
            json_object(&encode_ack(request_id.as_deref(), &topic, at));
        }
        Ok(
            ClientRequest::Subscribe {
                topic, request_id, ..
            }
            | ClientRequest::Unsubscribe {
                topic, request_id, ..
            },
        ) => {
            json_object(&encode_ack(request_id.as_deref(), &topic, at));
            json_object(&encode_error(
                ErrorCode::TopicNotFound,
                &format!("topic '{topic}' does not exist"),
                request_id.as_deref(),
                Some(&topic),
                at,
            ));
        }
        Ok(ClientRequest::Ping { request_id }) => {
            json_object(&encode_pong(request_id.as_deref(), at));
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

/// `text` is a JSON object; its fields, raw.
fn json_object(text: &str) -> BTreeMap<String, Box<RawValue>> {
    match serde_json::from_str(text) {
        Ok(fields) => fields,
        Err(e) => panic!("not a JSON object ({e}): {text}"),
    }
}
