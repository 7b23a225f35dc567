// The body of the `client_frame` fuzz target, shared with the regression
// test that replays `fuzz/regressions/client_frame/` (tests/fuzz_regressions.rs).
//
// The input is one text frame (lossily decoded when it is not UTF-8). The
// publish fast path must answer it exactly as serde's path alone does
// (the fast path says yes only where serde does, with the same fields, and
// leaves the rest to serde). A valid publish must carry an object as its
// `message` (serde would take an array for a struct), and is spliced into
// an event, which must be a JSON object whose `message` is the publisher's,
// byte for byte; its ack, written by hand, must be what serde writes. Every
// reply the frame can get must be JSON too.

use pubsub::protocol::{
    encode_ack, encode_auth_ack, encode_error, encode_pong, encode_publish_ack, event_head,
    parse_client_frame, parse_client_frame_by_serde, timestamp, Acked, ClientRequest, ErrorCode,
    Event, Start,
};
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::time::SystemTime;

pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let at = SystemTime::UNIX_EPOCH;
    let parsed = parse_client_frame(&text);
    assert_eq!(parsed, parse_client_frame_by_serde(&text), "{text:?}");
    // The input as a request_id and a topic: any character, escaped.
    publish_ack(Some(&text), &text, at);
    publish_ack(None, &text, at);
    match parsed {
        Ok(ClientRequest::Publish {
            topic,
            message,
            request_id,
        }) => {
            assert!(message.get().starts_with('{'), "not an object: {text}");
            let ts = timestamp(at);
            let head = event_head(&topic);
            let event = Event::new(&head, message, 42, &ts).parts().concat();
            let event = String::from_utf8(event).expect("an event is UTF-8");
            let fields = json_object(&event);
            assert_eq!(fields["message"].get(), message.get(), "{event}");
            let echoed: String = serde_json::from_str(fields["topic"].get()).expect("a string");
            assert_eq!(echoed, topic);
            assert_eq!(fields["seq"].get(), "42");
            assert_eq!(fields["ts"].get(), format!("\"{ts}\""));
            publish_ack(request_id.as_deref(), &topic, at);
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

/// The ack of a publish, written by hand, is what serde writes: its
/// strings escaped by serde_json, in the order of the other acks' fields.
fn publish_ack(request_id: Option<&str>, topic: &str, at: SystemTime) {
    let string = |s: &str| serde_json::to_string(s).expect("strings always serialise");
    let request_id_field = request_id.map_or(String::new(), |id| {
        format!(",\"request_id\":{}", string(id))
    });
    let serde_writes = format!(
        "{{\"type\":\"ack\"{request_id_field},\"topic\":{},\"status\":\"ok\",\"seq\":42,\"ts\":\"{}\"}}",
        string(topic),
        timestamp(at)
    );
    let mut ack = Vec::new();
    encode_publish_ack(&mut ack, request_id, topic, 42, at);
    assert_eq!(
        String::from_utf8(ack).expect("an ack is UTF-8"),
        serde_writes
    );
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
