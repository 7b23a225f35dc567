// What the `connection` and `connection_tls` fuzz targets share: the
// broker's configuration, the decoding of an input into the steps of a
// program run against one connection, and the check of what the broker
// writes. Included as a sibling module `connection_program` by both targets
// (`fuzz/fuzz_targets/`) and by the regression tests that replay them (the
// `fuzz_regressions` module at the bottom of src/server/harness.rs).
//
// A program is a sequence of steps, each one opcode byte and its operands:
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
//   0xF8..=0xFF  the target's own (`connection`: nothing)
//
// A missing operand byte reads as 0. So `F1` followed by raw bytes sends
// them all at once.

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

/// One step of a program, decoded.
pub enum Step<'a> {
    Send(&'a [u8]),
    Advance(Duration),
    WriteRoom(Option<usize>),
    EndOfStream,
    Turn,
    Drain,
}

impl Step<'_> {
    /// Runs the step against a driver whose peer speaks plaintext.
    pub fn apply(&self, driver: &mut ConnectionDriver) {
        match *self {
            Step::Send(bytes) => driver.send(bytes),
            Step::Advance(by) => driver.advance(by),
            Step::WriteRoom(room) => driver.set_write_room(room),
            Step::EndOfStream => driver.send_end_of_stream(),
            Step::Turn => driver.send(b""),
            Step::Drain => driver.shut_down(),
        }
    }
}

/// The input, read from the front.
pub struct Program<'a> {
    rest: &'a [u8],
}

impl<'a> Program<'a> {
    pub fn new(data: &'a [u8]) -> Program<'a> {
        Program { rest: data }
    }

    /// The next opcode, None at the end of the input.
    pub fn op(&mut self) -> Option<u8> {
        let (&op, tail) = self.rest.split_first()?;
        self.rest = tail;
        Some(op)
    }

    /// The step of `op` with its operands; None for the target's own
    /// opcodes (`F8`..`FF`), whose operands the target reads.
    pub fn step(&mut self, op: u8) -> Option<Step<'a>> {
        Some(match op {
            0x00..=0xEF => Step::Send(self.bytes(usize::from(op) + 1)),
            0xF0 => {
                let n = u16::from_le_bytes([self.byte(), self.byte()]);
                Step::Send(self.bytes(usize::from(n)))
            }
            0xF1 => Step::Send(self.bytes(self.rest.len())),
            0xF2 => Step::Advance(Duration::from_millis(250 * u64::from(self.byte()))),
            0xF3 => {
                let room = u16::from_le_bytes([self.byte(), self.byte()]);
                Step::WriteRoom(Some(usize::from(room)))
            }
            0xF4 => Step::WriteRoom(None),
            0xF5 => Step::EndOfStream,
            0xF6 => Step::Turn,
            0xF7 => Step::Drain,
            0xF8..=0xFF => return None,
        })
    }

    /// The next operand byte, 0 past the end of the input.
    pub fn byte(&mut self) -> u8 {
        let (&b, tail) = self.rest.split_first().unwrap_or((&0, &[]));
        self.rest = tail;
        b
    }

    /// The next `n` bytes, fewer at the end of the input.
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (bytes, tail) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = tail;
        bytes
    }
}

/// Checks the connection's output as it grows: HTTP responses (a status
/// line, a `Content-Length`, a JSON body that parses, nothing after one
/// with `Connection: close`), then after a `101` WebSocket frames a server
/// may send (final, unmasked, text frames that are JSON objects with a
/// `type`, well-formed control frames, nothing after a close frame).
#[derive(Default)]
pub struct OutputCheck {
    /// Bytes of the output checked so far.
    pos: usize,
    websocket: bool,
    /// After a response with `Connection: close` or a close frame.
    done: bool,
}

impl OutputCheck {
    /// Checks what `out` holds past what was checked before, and hands
    /// each whole response or frame, as written, to `each`.
    pub fn feed(&mut self, out: &[u8], mut each: impl FnMut(&[u8])) {
        while self.pos < out.len() {
            let rest = &out[self.pos..];
            assert!(!self.done, "written after the end: {rest:?}");
            let used = if self.websocket {
                self.frame(rest)
            } else {
                self.response(rest)
            };
            match used {
                Some(n) => {
                    each(&rest[..n]);
                    self.pos += n;
                }
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
