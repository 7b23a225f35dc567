//! A WebSocket connection's framing over bytes it is handed, on the model
//! of tungstenite's own split between a protocol context and the stream:
//! client frames are read from whatever `Read` the caller passes (the
//! socket), and everything tungstenite writes (the echo of a close, pongs,
//! our close and ping frames) lands in the caller's output buffer, so that
//! the connection writes every byte itself, batched and in order.
//!
//! This module turns tungstenite's results into what the connection must do
//! next ([`Incoming`]); it decides nothing about the connection's life.

use std::io::{self, ErrorKind, Read, Write};
use tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig, WebSocketContext};
use tungstenite::Message;

/// tungstenite's read buffer per connection (its default is 128 KiB): it is
/// allocated for every WebSocket connection, idle or not, and is most of an
/// idle subscriber's memory; a larger message grows it as needed.
const READ_BUFFER_BYTES: usize = 2 * 1024;
/// A close frame's payload is at most 125 bytes: two for the code, the
/// rest for the reason.
const MAX_CLOSE_REASON_BYTES: usize = 120;

/// What one read produced.
#[derive(Debug)]
pub enum Incoming {
    /// A whole text or binary message.
    Data(Message),
    /// A control frame that asks nothing of the caller (a pong to a ping of
    /// the peer is already in the output).
    Control,
    /// The peer's close frame. If it opened the closing handshake, the echo
    /// is already in the output.
    Close,
    /// Nothing more to read for now.
    WouldBlock,
    /// The stream ended, or the peer reset it, without a closing handshake.
    Gone,
    /// The peer broke the protocol (or a limit): fail the connection with a
    /// close frame of this code.
    Violation { code: CloseCode, why: String },
    /// The socket failed.
    Failed,
}

/// One WebSocket connection's framing state (server side).
pub struct Codec {
    ws: WebSocketContext,
}

/// tungstenite's view of the connection: reads come from the socket,
/// writes go to the output buffer.
struct Io<'a, S> {
    socket: S,
    out: &'a mut Vec<u8>,
    bytes_read: usize,
}

impl<S: Read> Read for Io<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.socket.read(buf)?;
        self.bytes_read += n;
        Ok(n)
    }
}

impl<S> Write for Io<'_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A stream that is never read: for writing frames outside a read.
struct NoInput;

impl Read for NoInput {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(ErrorKind::WouldBlock.into())
    }
}

impl Codec {
    /// A server-side codec whose input starts with `early` (bytes that came
    /// after the upgrade request, already read from the socket).
    /// `max_message_bytes` bounds a frame and a whole message.
    pub fn new(early: Vec<u8>, max_message_bytes: usize) -> Codec {
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER_BYTES)
            .write_buffer_size(0)
            .max_message_size(Some(max_message_bytes))
            .max_frame_size(Some(max_message_bytes));
        Codec {
            ws: WebSocketContext::from_partially_read(early, Role::Server, Some(config)),
        }
    }

    /// Reads until one thing happens; returns it and the bytes read from
    /// `socket` on the way.
    pub fn read<S: Read>(&mut self, socket: &mut S, out: &mut Vec<u8>) -> (Incoming, usize) {
        let mut io = Io {
            socket,
            out,
            bytes_read: 0,
        };
        loop {
            let incoming = match self.ws.read(&mut io) {
                Ok(message @ (Message::Text(_) | Message::Binary(_))) => Incoming::Data(message),
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => Incoming::Control,
                Ok(Message::Close(_)) => {
                    let _ = self.ws.flush(&mut io);
                    Incoming::Close
                }
                Err(WsError::Io(e)) if e.kind() == ErrorKind::Interrupted => continue,
                Err(WsError::Io(e)) if e.kind() == ErrorKind::WouldBlock => Incoming::WouldBlock,
                Err(
                    WsError::ConnectionClosed
                    | WsError::AlreadyClosed
                    | WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake),
                ) => Incoming::Gone,
                Err(WsError::Io(_)) => Incoming::Failed,
                Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size })) => {
                    Incoming::Violation {
                        code: CloseCode::Size,
                        why: format!("message of {size} bytes exceeds {max_size}"),
                    }
                }
                Err(WsError::Utf8(_)) => Incoming::Violation {
                    code: CloseCode::Invalid,
                    why: "invalid UTF-8 in a text message".into(),
                },
                Err(WsError::Protocol(e)) => Incoming::Violation {
                    code: CloseCode::Protocol,
                    why: e.to_string(),
                },
                Err(e) => Incoming::Violation {
                    code: CloseCode::Error,
                    why: e.to_string(),
                },
            };
            return (incoming, io.bytes_read);
        }
    }

    /// Appends a close frame to `out`; tungstenite then sends nothing else.
    /// A reason too long for a close frame is replaced by a generic one.
    pub fn close(&mut self, out: &mut Vec<u8>, code: CloseCode, reason: &str) {
        let reason = if reason.len() <= MAX_CLOSE_REASON_BYTES {
            reason
        } else {
            "protocol error"
        };
        let frame = CloseFrame {
            code,
            reason: reason.to_string().into(),
        };
        let _ = self.ws.close(&mut output_only(out), Some(frame));
    }

    /// Appends a ping frame to `out`, for the heartbeat.
    pub fn ping(&mut self, out: &mut Vec<u8>) {
        let mut io = output_only(out);
        let _ = self.ws.write(&mut io, Message::Ping(Default::default()));
        let _ = self.ws.flush(&mut io);
    }
}

/// An `Io` for writing frames outside a read: it has no input.
fn output_only(out: &mut Vec<u8>) -> Io<'_, NoInput> {
    Io {
        socket: NoInput,
        out,
        bytes_read: 0,
    }
}
