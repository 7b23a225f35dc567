//! What goes on the wire for each target, beyond framing: the pubsub JSON
//! requests (subscribe, publish) and the byte-level look at its replies
//! (message type, error code), and the publish frame for either target,
//! padded to the requested size. Pure.

use crate::endpoint::TargetKind;
use crate::nats;
use crate::probe::{self, Probe};
use crate::wsframe::{self, OP_BINARY, OP_TEXT};
use memchr::memmem;

/// Appends a pubsub `subscribe` request.
pub fn append_subscribe_json(out: &mut Vec<u8>, topic: &str, id: u64) {
    out.extend_from_slice(b"{\"type\":\"subscribe\",\"topic\":");
    append_json_string(out, topic);
    out.extend_from_slice(b",\"client_id\":\"lt-");
    out.extend_from_slice(itoa::Buffer::new().format(id).as_bytes());
    out.extend_from_slice(b"\",\"request_id\":\"sub\"}");
}

/// Topic names are made by the harness (`<prefix>-<n>`); this escapes the
/// two characters JSON requires, in case a prefix holds them.
fn append_json_string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    for byte in text.bytes() {
        if byte == b'"' || byte == b'\\' {
            out.push(b'\\');
        }
        out.push(byte);
    }
    out.push(b'"');
}

/// The `type` of a pubsub server message, found by byte search (the broker
/// writes it first, so this looks at a few bytes only).
pub fn message_type(message: &[u8]) -> &[u8] {
    field_string(message, b"\"type\":\"").unwrap_or_default()
}

/// The `error.code` of a pubsub error message.
pub fn error_code(message: &[u8]) -> Option<&[u8]> {
    field_string(message, b"\"code\":\"")
}

fn field_string<'a>(message: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let start = memmem::find(message, key)? + key.len();
    let len = memchr::memchr(b'"', &message[start..])?;
    Some(&message[start..start + len])
}

/// Builds publish frames for one target, padded so that a frame is about
/// `size` bytes. Reuses its scratch buffer: no allocation per message.
pub struct PublishEncoder {
    kind: TargetKind,
    pad: usize,
    body: Vec<u8>,
    payload: Vec<u8>,
}

impl PublishEncoder {
    pub fn new(kind: TargetKind, size: usize) -> PublishEncoder {
        let mut encoder = PublishEncoder {
            kind,
            pad: 0,
            body: Vec::new(),
            payload: Vec::new(),
        };
        // Measure a typical frame without padding (10-digit timestamp,
        // small counters), then pad up to the requested size.
        let typical = Probe {
            sent_ns: 1_000_000_000,
            publisher: 0,
            counter: 1000,
        };
        let mut frame = Vec::new();
        encoder.append(&mut frame, "lt-0", &typical);
        encoder.pad = size.saturating_sub(frame.len());
        encoder
    }

    /// Appends one publish of `probe` to `topic`, as a masked frame.
    pub fn append(&mut self, out: &mut Vec<u8>, topic: &str, probe: &Probe) {
        self.payload.clear();
        probe::write_probe(&mut self.payload, probe, self.pad);
        self.body.clear();
        match self.kind {
            TargetKind::Pubsub => {
                self.body
                    .extend_from_slice(b"{\"type\":\"publish\",\"topic\":");
                append_json_string(&mut self.body, topic);
                self.body.extend_from_slice(b",\"message\":{\"id\":\"");
                let mut digits = itoa::Buffer::new();
                self.body
                    .extend_from_slice(digits.format(probe.publisher).as_bytes());
                self.body.push(b'-');
                self.body
                    .extend_from_slice(digits.format(probe.counter).as_bytes());
                self.body.extend_from_slice(b"\",\"payload\":");
                self.body.extend_from_slice(&self.payload);
                self.body.extend_from_slice(b"}}");
                wsframe::append_client_frame(out, OP_TEXT, &self.body);
            }
            TargetKind::Nats => {
                nats::append_pub(&mut self.body, topic, &self.payload);
                wsframe::append_client_frame(out, OP_BINARY, &self.body);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::ProbeFinder;

    #[test]
    fn requests_are_valid_json() {
        let mut out = Vec::new();
        append_subscribe_json(&mut out, "a\"b", 7);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["type"], "subscribe");
        assert_eq!(v["topic"], "a\"b");
        assert_eq!(v["client_id"], "lt-7");
    }

    #[test]
    fn replies_are_classified_by_byte_search() {
        let error = br#"{"type":"error","request_id":"r","error":{"code":"SLOW_CONSUMER","message":"x"},"ts":"t"}"#;
        assert_eq!(message_type(error), b"error");
        assert_eq!(error_code(error), Some(&b"SLOW_CONSUMER"[..]));
        assert_eq!(message_type(br#"{"type":"ack","status":"ok"}"#), b"ack");
        assert_eq!(message_type(b"garbage"), b"");
    }

    #[test]
    fn publish_frames_have_about_the_requested_size_and_carry_the_probe() {
        let probe = Probe {
            sent_ns: 1_500_000_000,
            publisher: 2,
            counter: 1234,
        };
        for kind in [TargetKind::Pubsub, TargetKind::Nats] {
            let mut encoder = PublishEncoder::new(kind, 512);
            let mut frame = Vec::new();
            encoder.append(&mut frame, "lt-0", &probe);
            assert!(
                (510..=516).contains(&frame.len()),
                "{kind:?}: {}",
                frame.len()
            );
            let head_len = 4 + 4; // 16-bit length, then the mask
            let body: Vec<u8> = frame[head_len..]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ wsframe::CLIENT_MASK[i & 3])
                .collect();
            assert_eq!(ProbeFinder::default().find(&body), Some(probe), "{kind:?}");
            if kind == TargetKind::Pubsub {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(v["message"]["id"], "2-1234");
                assert_eq!(v["message"]["payload"]["lt_n"], 1234);
            } else {
                assert!(body.starts_with(b"PUB lt-0 "));
            }
        }
    }
}
