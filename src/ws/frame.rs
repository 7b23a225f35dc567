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

/// Appends one unmasked, final text frame whose payload `write` appends,
/// so that a reply is written once, straight into the output. Its header
/// is written first for a payload under 126 bytes (an ack's), and widened
/// after `write` when the payload is longer, which moves it.
pub fn append_text_frame_with(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    let header = data_header(Data::Text);
    let start = out.len();
    header.format(0, out).expect("writing to a Vec cannot fail");
    let short = out.len() - start;
    write(out);
    let len = out.len() - start - short;
    match u8::try_from(len) {
        // The length of a short payload is the second byte of its header.
        Ok(len) if len < 126 => out[start + 1] = len,
        _ => {
            let mut wide = [0; 10];
            let unused = {
                let mut rest = &mut wide[..];
                header
                    .format(len as u64, &mut rest)
                    .expect("a header is at most 10 bytes");
                rest.len()
            };
            let wide = &wide[..wide.len() - unused];
            out.splice(start..start + short, wide.iter().copied());
        }
    }
}

/// Appends `payload` as one unmasked, final data frame of type `data`.
pub fn append_data_frame(out: &mut Vec<u8>, data: Data, payload: &[u8]) {
    let header = data_header(data);
    let len = payload.len() as u64;
    out.reserve(header.len(len) + payload.len());
    header
        .format(len, out)
        .expect("writing to a Vec cannot fail");
    out.extend_from_slice(payload);
}

/// The header of an unmasked, final data frame of type `data`.
fn data_header(data: Data) -> FrameHeader {
    FrameHeader {
        opcode: OpCode::Data(data),
        ..FrameHeader::default()
    }
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
    shared_text_frame_of(&[text.as_bytes()])
}

/// The text made of `parts` end to end, framed once, to be shared by every
/// connection it goes to: built in a buffer of its exact size, each part
/// copied once (an event is spliced so, see `protocol::Event`).
pub fn shared_text_frame_of(parts: &[&[u8]]) -> SharedFrame {
    let header = data_header(Data::Text);
    let len = parts.iter().map(|part| part.len()).sum::<usize>();
    let mut frame = Vec::with_capacity(header.len(len as u64) + len);
    header
        .format(len as u64, &mut frame)
        .expect("writing to a Vec cannot fail");
    for part in parts {
        frame.extend_from_slice(part);
    }
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

    #[test]
    fn a_frame_written_in_place_is_the_frame_of_its_payload() {
        for len in [0, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
            let payload = "z".repeat(len);
            let mut expected = b"before".to_vec();
            append_text_frame(&mut expected, &payload);
            let mut written = b"before".to_vec();
            append_text_frame_with(&mut written, |out| {
                out.extend_from_slice(payload.as_bytes())
            });
            assert!(written == expected, "{len} bytes");
        }
    }

    #[test]
    fn a_frame_of_parts_is_the_frame_of_their_text() {
        let parts: [&[u8]; 3] = [b"{\"a\":", &[b'1'; 200], b"}"];
        let text = String::from_utf8(parts.concat()).unwrap();
        assert_eq!(shared_text_frame_of(&parts), shared_text_frame(&text));
        assert_eq!(*shared_text_frame_of(&[]), [0x81, 0]);
    }
}
