//! What goes on the wire for each target, beyond framing: the pubsub JSON
//! requests (subscribe, publish) and the byte-level look at its replies
//! (message type, error code), and the publish frame for either target,
//! padded to the requested size. Pure.

use crate::endpoint::TargetKind;
use crate::nats;
use crate::probe::{self, Probe};
use crate::wsframe::{self, OP_BINARY, OP_TEXT};
use memchr::memmem;

/// Where a resuming subscriber left off: the last `seq` it saw, in which
/// epoch of the topic.
#[derive(Debug, Clone, Copy)]
pub struct ResumeFrom<'a> {
    pub since_seq: u64,
    pub epoch: &'a str,
}

/// Appends a pubsub `subscribe` request, resuming if `resume` says where.
pub fn append_subscribe_json(
    out: &mut Vec<u8>,
    topic: &str,
    id: u64,
    resume: Option<ResumeFrom<'_>>,
) {
    out.extend_from_slice(b"{\"type\":\"subscribe\",\"topic\":");
    append_json_string(out, topic);
    out.extend_from_slice(b",\"client_id\":\"lt-");
    out.extend_from_slice(itoa::Buffer::new().format(id).as_bytes());
    if let Some(resume) = resume {
        out.extend_from_slice(b"\",\"since_seq\":");
        out.extend_from_slice(itoa::Buffer::new().format(resume.since_seq).as_bytes());
        out.extend_from_slice(b",\"epoch\":");
        append_json_string(out, resume.epoch);
        out.push(b',');
    } else {
        out.extend_from_slice(b"\",");
    }
    out.extend_from_slice(b"\"request_id\":\"sub\"}");
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

/// What a subscribe ack says about the topic's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeAck<'a> {
    pub epoch: &'a [u8],
    /// The `seq` of the last message before the subscription.
    pub last_seq: u64,
    /// Present when the subscribe asked to resume.
    pub recovered: Option<bool>,
}

/// The `epoch`, `last_seq` and `recovered` of a subscribe ack; `None` if
/// `epoch` or `last_seq` is missing (a broker without resume).
pub fn subscribe_ack(message: &[u8]) -> Option<SubscribeAck<'_>> {
    const LAST_SEQ: &[u8] = b"\"last_seq\":";
    let recovered = memmem::find(message, b"\"recovered\":")
        .map(|at| message[at + b"\"recovered\":".len()..].starts_with(b"true"));
    Some(SubscribeAck {
        epoch: field_string(message, b"\"epoch\":\"")?,
        last_seq: field_number(message, memmem::find(message, LAST_SEQ)?, LAST_SEQ)?,
        recovered,
    })
}

/// The `seq` of an event (or a publish ack). The broker writes it after
/// the client's message, so it is looked for from the end.
pub fn event_seq(message: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"seq\":";
    field_number(message, memmem::rfind(message, KEY)?, KEY)
}

/// The unsigned integer after `key`, found at `at`.
fn field_number(message: &[u8], at: usize, key: &[u8]) -> Option<u64> {
    let digits = &message[at + key.len()..];
    let len = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&digits[..len]).ok()?.parse().ok()
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
        append_subscribe_json(&mut out, "a\"b", 7, None);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["type"], "subscribe");
        assert_eq!(v["topic"], "a\"b");
        assert_eq!(v["client_id"], "lt-7");
        assert!(v.get("since_seq").is_none());
        out.clear();
        let resume = ResumeFrom {
            since_seq: 42,
            epoch: "Xy-9",
        };
        append_subscribe_json(&mut out, "t", 3, Some(resume));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["since_seq"], 42);
        assert_eq!(v["epoch"], "Xy-9");
        assert_eq!(v["request_id"], "sub");
    }

    #[test]
    fn subscribe_acks_and_event_seqs_are_read_by_byte_search() {
        let first = br#"{"type":"ack","request_id":"sub","topic":"t","status":"ok","epoch":"Ab_3","last_seq":0,"ts":"x"}"#;
        assert_eq!(
            subscribe_ack(first),
            Some(SubscribeAck {
                epoch: b"Ab_3",
                last_seq: 0,
                recovered: None
            })
        );
        let resumed = br#"{"type":"ack","topic":"t","status":"ok","epoch":"e","last_seq":1234,"recovered":true,"ts":"x"}"#;
        let ack = subscribe_ack(resumed).unwrap();
        assert_eq!((ack.last_seq, ack.recovered), (1234, Some(true)));
        let lost = br#"{"type":"ack","epoch":"e","last_seq":9,"recovered":false}"#;
        assert_eq!(subscribe_ack(lost).unwrap().recovered, Some(false));
        assert_eq!(subscribe_ack(br#"{"type":"ack","status":"ok"}"#), None);
        // The client's payload comes first and may say anything.
        let event = br#"{"type":"event","topic":"t","message":{"id":"1","payload":{"seq":5}},"seq":77,"ts":"x"}"#;
        assert_eq!(event_seq(event), Some(77));
        assert_eq!(event_seq(br#"{"type":"event","seq":"7"}"#), None);
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
