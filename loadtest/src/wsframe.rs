//! WebSocket framing (RFC 6455), client side, by hand: decoding the
//! unmasked frames a server sends, and encoding the masked frames a client
//! must send. Pure: bytes in, bytes or frame headers out; no sockets.
//!
//! The decoder never copies or allocates: it reads a frame header from the
//! front of a buffer and says how long the frame is, so the caller can hand
//! the payload slice on and move to the next frame.

/// Opcodes this client meets.
pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// The masking key of every frame this harness sends. RFC 6455 wants an
/// unpredictable key to protect proxies from cache poisoning; on loopback,
/// against our own broker, a fixed non-zero key keeps the frames valid (the
/// server still has to unmask them) and costs nothing to choose.
pub const CLIENT_MASK: [u8; 4] = [0x5a, 0x17, 0xc3, 0x8e];

/// Server frames larger than this are treated as a protocol error (the
/// broker's own cap is 64 MiB).
pub const MAX_FRAME_PAYLOAD: u64 = 64 << 20;

/// The header of one complete frame at the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    pub fin: bool,
    pub opcode: u8,
    /// Bytes of header (2, 4 or 10 for an unmasked frame).
    pub header_len: usize,
    pub payload_len: usize,
}

impl FrameHead {
    /// Header plus payload: where the next frame starts.
    pub fn frame_len(&self) -> usize {
        self.header_len + self.payload_len
    }

    /// The payload of this frame, given the buffer it was parsed from.
    pub fn payload<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.header_len..self.frame_len()]
    }
}

/// A server frame that breaks the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// A server must not mask its frames.
    Masked,
    /// RSV bits set without a negotiated extension.
    ReservedBits,
    UnknownOpcode(u8),
    /// A control frame that is fragmented or longer than 125 bytes.
    BadControlFrame,
    TooLarge(u64),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Masked => write!(f, "masked frame from the server"),
            FrameError::ReservedBits => write!(f, "reserved bits set"),
            FrameError::UnknownOpcode(op) => write!(f, "unknown opcode {op:#x}"),
            FrameError::BadControlFrame => write!(f, "fragmented or oversized control frame"),
            FrameError::TooLarge(n) => write!(f, "frame of {n} bytes"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Reads the header of the frame at the front of `buf`. `Ok(None)` means
/// the buffer does not yet hold the whole frame (header and payload).
pub fn parse_server_frame(buf: &[u8]) -> Result<Option<FrameHead>, FrameError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        return Err(FrameError::ReservedBits);
    }
    if b1 & 0x80 != 0 {
        return Err(FrameError::Masked);
    }
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0f;
    let is_control = match opcode {
        OP_CONTINUATION | OP_TEXT | OP_BINARY => false,
        OP_CLOSE | OP_PING | OP_PONG => true,
        other => return Err(FrameError::UnknownOpcode(other)),
    };
    let (header_len, payload_len) = match b1 & 0x7f {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (4, u64::from(u16::from_be_bytes([buf[2], buf[3]])))
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut len = [0u8; 8];
            len.copy_from_slice(&buf[2..10]);
            (10, u64::from_be_bytes(len))
        }
        short => (2, u64::from(short)),
    };
    if is_control && (!fin || payload_len > 125) {
        return Err(FrameError::BadControlFrame);
    }
    if payload_len > MAX_FRAME_PAYLOAD {
        return Err(FrameError::TooLarge(payload_len));
    }
    let head = FrameHead {
        fin,
        opcode,
        header_len,
        payload_len: payload_len as usize,
    };
    Ok((buf.len() >= head.frame_len()).then_some(head))
}

/// Appends one final, masked client frame carrying `payload`.
pub fn append_client_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&CLIENT_MASK);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..]);
}

/// XORs `bytes` with [`CLIENT_MASK`], eight bytes at a time.
fn apply_mask(bytes: &mut [u8]) {
    let mask8 = u64::from_ne_bytes([
        CLIENT_MASK[0],
        CLIENT_MASK[1],
        CLIENT_MASK[2],
        CLIENT_MASK[3],
        CLIENT_MASK[0],
        CLIENT_MASK[1],
        CLIENT_MASK[2],
        CLIENT_MASK[3],
    ]);
    let mut words = bytes.chunks_exact_mut(8);
    for word in &mut words {
        let masked = u64::from_ne_bytes((&*word).try_into().expect("8 bytes")) ^ mask8;
        word.copy_from_slice(&masked.to_ne_bytes());
    }
    // The tail starts at a multiple of 8, so the mask starts over.
    for (i, byte) in words.into_remainder().iter_mut().enumerate() {
        *byte ^= CLIENT_MASK[i & 3];
    }
}

/// The status code of a close frame's payload, if it carries one.
pub fn close_code(payload: &[u8]) -> Option<u16> {
    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unmasked server frame, as a broker would send it.
    fn server_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        let len = payload.len();
        if len < 126 {
            out.push(len as u8);
        } else if len <= 0xffff {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        out.extend_from_slice(payload);
        out
    }

    /// Decodes a masked client frame back into (opcode, payload).
    fn unmask_client_frame(frame: &[u8]) -> (u8, Vec<u8>) {
        assert_eq!(frame[0] & 0x80, 0x80, "final");
        assert_eq!(frame[1] & 0x80, 0x80, "masked");
        let (offset, len) = match frame[1] & 0x7f {
            126 => (4, u16::from_be_bytes([frame[2], frame[3]]) as usize),
            127 => (
                10,
                u64::from_be_bytes(frame[2..10].try_into().unwrap()) as usize,
            ),
            n => (2, n as usize),
        };
        let mask = &frame[offset..offset + 4];
        let body = &frame[offset + 4..];
        assert_eq!(body.len(), len);
        let payload = body
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i & 3])
            .collect();
        (frame[0] & 0x0f, payload)
    }

    #[test]
    fn all_three_length_encodings_decode() {
        for (len, header_len) in [
            (0, 2),
            (125, 2),
            (126, 4),
            (65535, 4),
            (65536, 10),
            (200_000, 10),
        ] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let frame = server_frame(OP_TEXT, true, &payload);
            let head = parse_server_frame(&frame).unwrap().expect("complete");
            assert_eq!(head.header_len, header_len, "len {len}");
            assert_eq!(head.payload_len, len);
            assert_eq!(head.frame_len(), frame.len());
            assert_eq!(head.payload(&frame), &payload[..]);
        }
    }

    #[test]
    fn every_split_of_a_frame_is_incomplete_until_the_last_byte() {
        for len in [5usize, 300, 70_000] {
            let frame = server_frame(OP_BINARY, true, &vec![7u8; len]);
            for cut in 0..frame.len() {
                assert_eq!(
                    parse_server_frame(&frame[..cut]),
                    Ok(None),
                    "len {len} cut {cut}"
                );
            }
            assert!(parse_server_frame(&frame).unwrap().is_some());
        }
    }

    #[test]
    fn batched_frames_parse_one_after_another() {
        let mut stream = server_frame(OP_TEXT, true, b"first");
        stream.extend(server_frame(OP_PING, true, b"p"));
        stream.extend(server_frame(OP_TEXT, false, &[b'x'; 130]));
        stream.extend(server_frame(OP_CONTINUATION, true, b"end"));
        let mut seen = Vec::new();
        let mut rest = &stream[..];
        while let Some(head) = parse_server_frame(rest).unwrap() {
            seen.push((head.opcode, head.fin, head.payload(rest).len()));
            rest = &rest[head.frame_len()..];
        }
        assert!(rest.is_empty());
        assert_eq!(
            seen,
            [
                (OP_TEXT, true, 5),
                (OP_PING, true, 1),
                (OP_TEXT, false, 130),
                (OP_CONTINUATION, true, 3)
            ]
        );
    }

    #[test]
    fn protocol_violations_are_errors() {
        let mut masked = server_frame(OP_TEXT, true, b"hi");
        masked[1] |= 0x80;
        assert_eq!(parse_server_frame(&masked), Err(FrameError::Masked));
        let mut rsv = server_frame(OP_TEXT, true, b"hi");
        rsv[0] |= 0x40;
        assert_eq!(parse_server_frame(&rsv), Err(FrameError::ReservedBits));
        assert_eq!(
            parse_server_frame(&[0x83, 0]),
            Err(FrameError::UnknownOpcode(3))
        );
        assert_eq!(
            parse_server_frame(&server_frame(OP_PING, false, b"")),
            Err(FrameError::BadControlFrame)
        );
        assert_eq!(
            parse_server_frame(&server_frame(OP_PING, true, &[0; 126])),
            Err(FrameError::BadControlFrame)
        );
    }

    #[test]
    fn client_frames_are_masked_and_round_trip_in_all_lengths() {
        for len in [0usize, 3, 13, 125, 126, 65535, 65536] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let mut out = Vec::new();
            append_client_frame(&mut out, OP_TEXT, &payload);
            let (opcode, decoded) = unmask_client_frame(&out);
            assert_eq!(opcode, OP_TEXT);
            assert_eq!(decoded, payload);
        }
    }

    #[test]
    fn close_code_reads_the_first_two_bytes() {
        assert_eq!(close_code(&[0x03, 0xf0, b'x']), Some(1008));
        assert_eq!(close_code(&[]), None);
    }
}
