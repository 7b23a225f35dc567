//! WebSocket framing, and nothing else: the frames the server writes
//! ([`frame`]), and the reading of client frames and writing of control
//! frames over a connection's bytes ([`codec`], tungstenite underneath).
//! Whether a request may become a WebSocket is HTTP's question
//! (`http::upgrade`). What the frames
//! carry is [`crate::protocol`]'s business; the socket is the server's.

pub mod codec;
pub mod frame;

/// What a WebSocket connection is for, decided by the path it was opened
/// on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    /// The JSON protocol of `/ws`.
    PubSub,
    /// Every message sent back unchanged, for the Autobahn conformance
    /// suite (`/` with the `autobahn` feature).
    #[cfg(feature = "autobahn")]
    Echo,
}
