//! The probe: what the harness writes into every published payload so that
//! a subscriber can tell, from the raw bytes it receives, when the message
//! was (meant to be) sent, who sent it and which of that publisher's
//! messages it is. Written as JSON, found again by byte search: a delivery
//! is never parsed as a whole.
//!
//! `{"lt_ns":<send time>,"lt_pub":<publisher>,"lt_n":<counter>,"pad":"xxx…"}`
//!
//! `lt_ns` is nanoseconds since the run's epoch (an `Instant` shared by the
//! harness's threads); `lt_n` counts that publisher's messages to that topic
//! from 0; `pad` brings the frame to the requested size.

use memchr::memmem;

/// What a delivery carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub sent_ns: u64,
    pub publisher: u32,
    pub counter: u64,
}

const START: &[u8] = b"{\"lt_ns\":";
const PUBLISHER: &[u8] = b",\"lt_pub\":";
const COUNTER: &[u8] = b",\"lt_n\":";
const PAD_START: &[u8] = b",\"pad\":\"";
const PAD_END: &[u8] = b"\"}";

/// Appends the probe as a JSON object with `pad` bytes of padding.
pub fn write_probe(out: &mut Vec<u8>, probe: &Probe, pad: usize) {
    let mut digits = itoa::Buffer::new();
    out.extend_from_slice(START);
    out.extend_from_slice(digits.format(probe.sent_ns).as_bytes());
    out.extend_from_slice(PUBLISHER);
    out.extend_from_slice(digits.format(probe.publisher).as_bytes());
    out.extend_from_slice(COUNTER);
    out.extend_from_slice(digits.format(probe.counter).as_bytes());
    out.extend_from_slice(PAD_START);
    out.resize(out.len() + pad, b'x');
    out.extend_from_slice(PAD_END);
}

/// Finds probes in received bytes; build one per thread and reuse it.
pub struct ProbeFinder {
    start: memmem::Finder<'static>,
}

impl Default for ProbeFinder {
    fn default() -> Self {
        ProbeFinder {
            start: memmem::Finder::new(START),
        }
    }
}

impl ProbeFinder {
    /// The probe in `bytes` (an event frame or a NATS payload), or `None`
    /// if there is none or it is malformed.
    pub fn find(&self, bytes: &[u8]) -> Option<Probe> {
        let at = self.start.find(bytes)? + START.len();
        let (sent_ns, at) = parse_u64(bytes, at)?;
        let at = expect(bytes, at, PUBLISHER)?;
        let (publisher, at) = parse_u64(bytes, at)?;
        let at = expect(bytes, at, COUNTER)?;
        let (counter, _) = parse_u64(bytes, at)?;
        Some(Probe {
            sent_ns,
            publisher: u32::try_from(publisher).ok()?,
            counter,
        })
    }
}

fn expect(bytes: &[u8], at: usize, literal: &[u8]) -> Option<usize> {
    bytes
        .get(at..)?
        .starts_with(literal)
        .then(|| at + literal.len())
}

/// Decimal digits at `at`: the value and where they end.
fn parse_u64(bytes: &[u8], at: usize) -> Option<(u64, usize)> {
    let digits = bytes
        .get(at..)?
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    if digits == 0 || digits > 19 {
        return None;
    }
    let value = bytes[at..at + digits]
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some((value, at + digits))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_probe_is_found_inside_an_event() {
        let probe = Probe {
            sent_ns: 1_234_567_890_123,
            publisher: 3,
            counter: 42,
        };
        let mut payload = Vec::new();
        write_probe(&mut payload, &probe, 10);
        let value: serde_json::Value = serde_json::from_slice(&payload).expect("valid JSON");
        assert_eq!(value["pad"].as_str().unwrap().len(), 10);
        let mut event =
            br#"{"type":"event","topic":"lt-0","message":{"id":"p3-42","payload":"#.to_vec();
        event.extend_from_slice(&payload);
        event.extend_from_slice(br#"},"seq":43,"ts":"2025-08-25T10:00:00.123Z"}"#);
        assert_eq!(ProbeFinder::default().find(&event), Some(probe));
    }

    #[test]
    fn missing_or_truncated_probes_are_not_found() {
        let finder = ProbeFinder::default();
        assert_eq!(finder.find(br#"{"type":"ack"}"#), None);
        assert_eq!(finder.find(br#"{"lt_ns":12,"lt_pub":"#), None);
        assert_eq!(finder.find(br#"{"lt_ns":,"lt_pub":1,"lt_n":2}"#), None);
    }
}
