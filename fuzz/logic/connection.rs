// The body of the `connection` fuzz target, shared with the regression test
// that replays `fuzz/regressions/connection/` (the `fuzz_regressions` module
// at the bottom of src/server/harness.rs includes this file, since
// `ConnectionDriver` exists only under `cfg(test)` and `cfg(fuzzing)`).
//
// The input is a small program run against one connection. Each step is one
// opcode byte and its operands:
//
//   0x00..=0xEF  send the next (op + 1) bytes (fewer at the end of input)
//   0xF0 LO HI   send the next u16 (little-endian) bytes
//   0xF1         send everything that is left
//   0xF2 N       advance time by N quarter-seconds
//   0xF3 LO HI   the peer's receive window takes u16 more bytes, then blocks
//   0xF4         unlimited receive window
//   0xF5         the peer ends its stream
//   0xF6         a loop turn with nothing new to read
//   0xF7         a graceful shutdown begins (the drain)
//   0xF8..=0xFF  nothing
//
// A missing operand byte reads as 0. So `F1` followed by raw bytes sends
// them all at once.
//
// Checked while it runs: what the connection writes is HTTP responses (JSON
// bodies that parse, nothing after `Connection: close`), then after a `101`
// WebSocket frames a server may send (final, unmasked, text frames that are
// JSON objects, well-formed control frames, nothing after a close frame).
// Checked at the end: once the peer's stream has ended and it reads
// everything, the connection is closed within two seconds.

use pubsub::server::harness::ConnectionDriver;
use pubsub::Config;
use std::time::Duration;

/// Small limits, so that overflow and size paths are reachable.
pub fn config() -> Config {
    Config {
        subscriber_queue_size: 4,
        ring_buffer_size: 4,
        max_message_bytes: 4096,
        ..Config::loopback()
    }
}

pub fn run(data: &[u8]) {
    let mut driver = ConnectionDriver::new(config());
    driver.create_topic("t");
    driver.create_topic("u");
    let mut check = OutputCheck::default();
    let mut rest = data;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        match op {
            0x00..=0xF1 => {
                let n = match op {
                    0xF0 => usize::from(u16::from_le_bytes([byte(&mut rest), byte(&mut rest)])),
                    0xF1 => rest.len(),
                    _ => usize::from(op) + 1,
                };
                let (chunk, tail) = rest.split_at(n.min(rest.len()));
                rest = tail;
                driver.send(chunk);
            }
            0xF2 => driver.advance(Duration::from_millis(250 * u64::from(byte(&mut rest)))),
            0xF3 => {
                let room = u16::from_le_bytes([byte(&mut rest), byte(&mut rest)]);
                driver.set_write_room(Some(usize::from(room)));
            }
            0xF4 => driver.set_write_room(None),
            0xF5 => driver.send_end_of_stream(),
            0xF6 => driver.send(b""),
            0xF7 => driver.shut_down(),
            _ => {}
        }
        if driver.is_closed() {
            return;
        }
        check.feed(driver.output());
    }
    driver.set_write_room(None);
    if driver.is_closed() {
        return;
    }
    check.feed(driver.output());
    driver.send_end_of_stream();
    driver.advance(Duration::from_secs(2));
    assert!(
        driver.is_closed(),
        "the peer ended its stream and read everything, yet the connection is open"
    );
}

/// The next operand byte, 0 past the end of the input.
fn byte(rest: &mut &[u8]) -> u8 {
    let (&b, tail) = rest.split_first().unwrap_or((&0, &[]));
    *rest = tail;
    b
}

/// Checks the connection's output as it grows.
#[derive(Default)]
struct OutputCheck {
    /// Bytes of the output checked so far.
    pos: usize,
    websocket: bool,
    /// After a response with `Connection: close` or a close frame.
    done: bool,
}

impl OutputCheck {
    fn feed(&mut self, out: &[u8]) {
        while self.pos < out.len() {
            let rest = &out[self.pos..];
            assert!(!self.done, "written after the end: {rest:?}");
            let used = if self.websocket {
                self.frame(rest)
            } else {
                self.response(rest)
            };
            match used {
                Some(n) => self.pos += n,
                None => return,
            }
        }
    }

    /// One HTTP response at the start of `out`, if it is all there.
    fn response(&mut self, out: &[u8]) -> Option<usize> {
        let head_len = out.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head = std::str::from_utf8(&out[..head_len]).expect("an ASCII response head");
        let mut lines = head.split("\r\n");
        let status = lines.next().and_then(|l| l.strip_prefix("HTTP/1.1 "));
        let status = status.unwrap_or_else(|| panic!("not a status line: {head:?}"));
        if status.starts_with("101 ") {
            self.websocket = true;
            return Some(head_len);
        }
        let mut length = None;
        let mut json = false;
        let mut close = false;
        for line in lines {
            let (name, value) = line.split_once(": ").unwrap_or((line, ""));
            match name {
                "Content-Length" => length = value.parse::<usize>().ok(),
                "Content-Type" => json = value == "application/json",
                "Connection" => close = value == "close",
                _ => {}
            }
        }
        let length = length.unwrap_or_else(|| panic!("no Content-Length: {head:?}"));
        let body = out.get(head_len..head_len + length)?;
        if json {
            if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                panic!(
                    "invalid JSON body ({e}): {:?}",
                    String::from_utf8_lossy(body)
                );
            }
        }
        self.done = close;
        Some(head_len + length)
    }

    /// One WebSocket frame at the start of `out`, if it is all there.
    fn frame(&mut self, out: &[u8]) -> Option<usize> {
        let (&b0, &b1) = (out.first()?, out.get(1)?);
        assert_eq!(b0 & 0xF0, 0x80, "a final frame, no RSV bits: {b0:#x}");
        assert_eq!(b1 & 0x80, 0, "a server never masks");
        let (header, length) = match b1 & 0x7F {
            126 => (
                4,
                u64::from(u16::from_be_bytes(out.get(2..4)?.try_into().ok()?)),
            ),
            127 => (10, u64::from_be_bytes(out.get(2..10)?.try_into().ok()?)),
            n => (2_usize, u64::from(n)),
        };
        let length = usize::try_from(length).expect("a length that fits");
        let payload = out.get(header..header.checked_add(length)?)?;
        match b0 & 0x0F {
            0x1 => {
                let parsed = serde_json::from_slice::<
                    std::collections::BTreeMap<String, serde::de::IgnoredAny>,
                >(payload);
                match parsed {
                    Ok(fields) => assert!(fields.contains_key("type"), "no type"),
                    Err(e) => panic!(
                        "a text frame that is not a JSON object ({e}): {:?}",
                        String::from_utf8_lossy(payload)
                    ),
                }
            }
            op @ 0x8..=0xA => {
                assert!(length <= 125, "control frame {op:#x} of {length} bytes");
                if op == 0x8 {
                    assert_ne!(length, 1, "a close payload has a code or nothing");
                    self.done = true;
                }
            }
            op => panic!("a server sends no frame of opcode {op:#x}"),
        }
        Some(header + length)
    }
}
