//! Server-to-client WebSocket frames, built by hand: server frames are
//! unmasked, so a frame's bytes are the same for every connection it goes
//! to and can be built once and shared. Reading client frames is
//! tungstenite's (see [`super::codec`]).

use std::sync::Arc;
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// A ready-to-write WebSocket frame shared by every connection it goes to.
/// A thin pointer, so that a subscriber queue slot stays small.
pub type SharedFrame = Arc<Vec<u8>>;

/// Appends `text` as one unmasked, final WebSocket text frame.
pub fn append_text_frame(out: &mut Vec<u8>, text: &str) {
    append_data_frame(out, Data::Text, text.as_bytes());
}

/// Appends `payload` as one unmasked, final data frame of type `data`.
pub fn append_data_frame(out: &mut Vec<u8>, data: Data, payload: &[u8]) {
    let header = FrameHeader {
        opcode: OpCode::Data(data),
        ..FrameHeader::default()
    };
    let len = payload.len() as u64;
    out.reserve(header.len(len) + payload.len());
    header
        .format(len, out)
        .expect("writing to a Vec cannot fail");
    out.extend_from_slice(payload);
}

/// The payload of a frame built here (unmasked, so the header is 2, 4 or
/// 10 bytes by the length it announces).
pub fn text_payload(frame: &[u8]) -> &[u8] {
    let header = match frame.get(1).map(|b| b & 0x7f) {
        Some(126) => 4,
        Some(127) => 10,
        _ => 2,
    };
    frame.get(header..).unwrap_or_default()
}

/// `text` framed once, to be shared by every connection it goes to.
pub fn shared_text_frame(text: &str) -> SharedFrame {
    let mut frame = Vec::new();
    append_text_frame(&mut frame, text);
    Arc::new(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_frames_are_unmasked_and_final() {
        let small = shared_text_frame("hi");
        assert_eq!(small.as_slice(), &[0x81, 2, b'h', b'i']);
        let medium = "x".repeat(300);
        let f = shared_text_frame(&medium);
        assert_eq!(&f[..4], &[0x81, 126, 1, 44]);
        assert_eq!(f.len(), 4 + 300);
        let large = "y".repeat(70_000);
        let f = shared_text_frame(&large);
        assert_eq!(f[1], 127);
        assert_eq!(u64::from_be_bytes(f[2..10].try_into().unwrap()), 70_000);
        assert_eq!(text_payload(&small), b"hi");
        assert_eq!(text_payload(&shared_text_frame(&medium)), medium.as_bytes());
        assert_eq!(text_payload(&f), large.as_bytes());
    }
}
