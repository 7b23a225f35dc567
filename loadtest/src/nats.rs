//! The NATS client protocol, the part a load generator needs: parsing what
//! the server sends (`INFO`, `MSG`, `PING`, `PONG`, `+OK`, `-ERR`) from a
//! byte stream that WebSocket frames may split or batch anywhere, and
//! writing `CONNECT`, `SUB`, `PUB`, `PING` and `PONG`. Pure: no sockets.

use memchr::memmem;

/// Sent once after the server's `INFO`: no `+OK` per command, no headers.
pub const CONNECT: &[u8] = b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":false}\r\n";
pub const PING: &[u8] = b"PING\r\n";
pub const PONG: &[u8] = b"PONG\r\n";

/// A control line longer than this without `\r\n` is a protocol error
/// (the server's `INFO` is about a kilobyte).
const MAX_CONTROL_LINE: usize = 64 << 10;

/// One server message. Slices borrow from the parser's input.
#[derive(Debug, PartialEq, Eq)]
pub enum NatsEvent<'a> {
    Info(&'a [u8]),
    Msg {
        subject: &'a [u8],
        sid: &'a [u8],
        payload: &'a [u8],
    },
    Ping,
    Pong,
    Ok,
    Err(&'a [u8]),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatsError {
    LineTooLong,
    UnknownOperation(String),
    BadMsgLine(String),
    /// The payload of a `MSG` is not followed by `\r\n`.
    MissingPayloadEnd,
}

impl std::fmt::Display for NatsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NatsError::LineTooLong => write!(f, "control line without CRLF"),
            NatsError::UnknownOperation(op) => write!(f, "unknown operation {op:?}"),
            NatsError::BadMsgLine(line) => write!(f, "bad MSG line {line:?}"),
            NatsError::MissingPayloadEnd => write!(f, "MSG payload not followed by CRLF"),
        }
    }
}

impl std::error::Error for NatsError {}

/// An incremental parser. Input that ends in the middle of a message is
/// kept (in a buffer that is reused, so steady state allocates nothing)
/// and completed by the next `feed`.
#[derive(Debug)]
pub struct NatsParser {
    stash: Vec<u8>,
    crlf: memmem::Finder<'static>,
}

impl Default for NatsParser {
    fn default() -> Self {
        NatsParser {
            stash: Vec::new(),
            crlf: memmem::Finder::new(b"\r\n"),
        }
    }
}

impl NatsParser {
    /// Parses every complete message in the stash followed by `data`,
    /// calling `on_event` for each in order, and keeps the incomplete tail.
    pub fn feed(
        &mut self,
        data: &[u8],
        mut on_event: impl FnMut(NatsEvent<'_>),
    ) -> Result<(), NatsError> {
        if self.stash.is_empty() {
            let used = parse_all(&self.crlf, data, &mut on_event)?;
            self.stash.extend_from_slice(&data[used..]);
        } else {
            self.stash.extend_from_slice(data);
            let used = parse_all(&self.crlf, &self.stash, &mut on_event)?;
            self.stash.drain(..used);
        }
        Ok(())
    }
}

/// Parses messages from the front of `buf`; returns the bytes consumed.
fn parse_all(
    crlf: &memmem::Finder<'_>,
    buf: &[u8],
    on_event: &mut impl FnMut(NatsEvent<'_>),
) -> Result<usize, NatsError> {
    let mut used = 0;
    while let Some((event, len)) = parse_one(crlf, &buf[used..])? {
        on_event(event);
        used += len;
    }
    Ok(used)
}

/// One message from the front of `buf` and its length, or `None` if `buf`
/// does not hold all of it yet.
fn parse_one<'a>(
    crlf: &memmem::Finder<'_>,
    buf: &'a [u8],
) -> Result<Option<(NatsEvent<'a>, usize)>, NatsError> {
    let Some(line_len) = crlf.find(buf) else {
        return if buf.len() > MAX_CONTROL_LINE {
            Err(NatsError::LineTooLong)
        } else {
            Ok(None)
        };
    };
    let line = &buf[..line_len];
    let after_line = line_len + 2;
    let (op, args) = match memchr::memchr2(b' ', b'\t', line) {
        Some(space) => (&line[..space], trim_start(&line[space + 1..])),
        None => (line, &line[line.len()..]),
    };
    let event = if op.eq_ignore_ascii_case(b"MSG") {
        let (subject, sid, size) = parse_msg_args(args)?;
        let end = after_line + size;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(NatsError::MissingPayloadEnd);
        }
        let event = NatsEvent::Msg {
            subject,
            sid,
            payload: &buf[after_line..end],
        };
        return Ok(Some((event, end + 2)));
    } else if op.eq_ignore_ascii_case(b"PING") {
        NatsEvent::Ping
    } else if op.eq_ignore_ascii_case(b"PONG") {
        NatsEvent::Pong
    } else if op.eq_ignore_ascii_case(b"+OK") {
        NatsEvent::Ok
    } else if op.eq_ignore_ascii_case(b"-ERR") {
        NatsEvent::Err(args)
    } else if op.eq_ignore_ascii_case(b"INFO") {
        NatsEvent::Info(args)
    } else {
        return Err(NatsError::UnknownOperation(
            String::from_utf8_lossy(op).into_owned(),
        ));
    };
    Ok(Some((event, after_line)))
}

/// `<subject> <sid> [reply-to] <#bytes>`.
fn parse_msg_args(args: &[u8]) -> Result<(&[u8], &[u8], usize), NatsError> {
    let bad = || NatsError::BadMsgLine(String::from_utf8_lossy(args).into_owned());
    let mut fields = args
        .split(|&b| b == b' ' || b == b'\t')
        .filter(|f| !f.is_empty());
    let subject = fields.next().ok_or_else(bad)?;
    let sid = fields.next().ok_or_else(bad)?;
    let third = fields.next().ok_or_else(bad)?;
    let size_field = fields.next().unwrap_or(third);
    if fields.next().is_some() {
        return Err(bad());
    }
    let size = parse_usize(size_field).ok_or_else(bad)?;
    Ok((subject, sid, size))
}

fn parse_usize(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() || digits.len() > 12 {
        return None;
    }
    digits.iter().try_fold(0usize, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + usize::from(d - b'0'))
    })
}

fn trim_start(bytes: &[u8]) -> &[u8] {
    let skip = bytes
        .iter()
        .take_while(|b| **b == b' ' || **b == b'\t')
        .count();
    &bytes[skip..]
}

/// Appends `SUB <subject> <sid>\r\n`.
pub fn append_sub(out: &mut Vec<u8>, subject: &str, sid: u64) {
    out.extend_from_slice(b"SUB ");
    out.extend_from_slice(subject.as_bytes());
    out.push(b' ');
    out.extend_from_slice(itoa::Buffer::new().format(sid).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends `PUB <subject> <n>\r\n<payload>\r\n`.
pub fn append_pub(out: &mut Vec<u8>, subject: &str, payload: &[u8]) {
    out.extend_from_slice(b"PUB ");
    out.extend_from_slice(subject.as_bytes());
    out.push(b' ');
    out.extend_from_slice(itoa::Buffer::new().format(payload.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the parser reports, owned, for comparison.
    #[derive(Debug, PartialEq, Eq)]
    enum Owned {
        Info(Vec<u8>),
        Msg(Vec<u8>, Vec<u8>, Vec<u8>),
        Ping,
        Pong,
        Ok,
        Err(Vec<u8>),
    }

    fn own(event: NatsEvent<'_>) -> Owned {
        match event {
            NatsEvent::Info(i) => Owned::Info(i.to_vec()),
            NatsEvent::Msg {
                subject,
                sid,
                payload,
            } => Owned::Msg(subject.to_vec(), sid.to_vec(), payload.to_vec()),
            NatsEvent::Ping => Owned::Ping,
            NatsEvent::Pong => Owned::Pong,
            NatsEvent::Ok => Owned::Ok,
            NatsEvent::Err(e) => Owned::Err(e.to_vec()),
        }
    }

    const STREAM: &[u8] = b"INFO {\"server_id\":\"x\",\"max_payload\":1048576}\r\n\
        +OK\r\n\
        MSG lt-0 1 11\r\n{\"a\":\"b\r\n\"}\r\n\
        PING\r\n\
        MSG lt-1 22 reply.to 0\r\n\r\n\
        -ERR 'Slow Consumer'\r\n\
        PONG\r\n";

    fn expected() -> Vec<Owned> {
        vec![
            Owned::Info(b"{\"server_id\":\"x\",\"max_payload\":1048576}".to_vec()),
            Owned::Ok,
            Owned::Msg(
                b"lt-0".to_vec(),
                b"1".to_vec(),
                b"{\"a\":\"b\r\n\"}".to_vec(),
            ),
            Owned::Ping,
            Owned::Msg(b"lt-1".to_vec(), b"22".to_vec(), Vec::new()),
            Owned::Err(b"'Slow Consumer'".to_vec()),
            Owned::Pong,
        ]
    }

    #[test]
    fn one_batch_holding_every_kind_of_message() {
        let mut parser = NatsParser::default();
        let mut seen = Vec::new();
        parser.feed(STREAM, |e| seen.push(own(e))).unwrap();
        assert_eq!(seen, expected());
        assert!(parser.stash.is_empty());
    }

    #[test]
    fn split_into_two_at_every_byte() {
        for cut in 0..=STREAM.len() {
            let mut parser = NatsParser::default();
            let mut seen = Vec::new();
            parser.feed(&STREAM[..cut], |e| seen.push(own(e))).unwrap();
            parser.feed(&STREAM[cut..], |e| seen.push(own(e))).unwrap();
            assert_eq!(seen, expected(), "cut at {cut}");
        }
    }

    #[test]
    fn fed_one_byte_at_a_time() {
        let mut parser = NatsParser::default();
        let mut seen = Vec::new();
        for byte in STREAM.chunks(1) {
            parser.feed(byte, |e| seen.push(own(e))).unwrap();
        }
        assert_eq!(seen, expected());
    }

    #[test]
    fn lowercase_operations_are_accepted() {
        let mut parser = NatsParser::default();
        let mut seen = Vec::new();
        parser
            .feed(b"ping\r\nmsg s 1 2\r\nhi\r\n", |e| seen.push(own(e)))
            .unwrap();
        assert_eq!(
            seen,
            [
                Owned::Ping,
                Owned::Msg(b"s".to_vec(), b"1".to_vec(), b"hi".to_vec())
            ]
        );
    }

    #[test]
    fn malformed_input_is_an_error() {
        let mut parser = NatsParser::default();
        assert!(matches!(
            parser.feed(b"HELLO\r\n", |_| {}),
            Err(NatsError::UnknownOperation(_))
        ));
        let mut parser = NatsParser::default();
        assert!(matches!(
            parser.feed(b"MSG s 1 x\r\n", |_| {}),
            Err(NatsError::BadMsgLine(_))
        ));
        let mut parser = NatsParser::default();
        assert_eq!(
            parser.feed(b"MSG s 1 2\r\nhiXX", |_| {}),
            Err(NatsError::MissingPayloadEnd)
        );
        let mut parser = NatsParser::default();
        assert_eq!(
            parser.feed(&vec![b'x'; MAX_CONTROL_LINE + 1], |_| {}),
            Err(NatsError::LineTooLong)
        );
    }

    #[test]
    fn commands_are_written_in_the_text_protocol() {
        let mut out = Vec::new();
        append_sub(&mut out, "lt-3", 7);
        append_pub(&mut out, "lt-3", b"hello");
        assert_eq!(out, b"SUB lt-3 7\r\nPUB lt-3 5\r\nhello\r\n");
    }
}
