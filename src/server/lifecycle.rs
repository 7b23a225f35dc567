//! The life of a connection, as one state and its transitions: every way a
//! connection pauses, closes and ends is a method here, and nothing else
//! changes the state.
//!
//! ```text
//!            pause_input                      begin_close
//!   Open  <--------------->  InputPaused  ------------------>  Closing
//!     |       resume_input                                        |
//!     +-----------------------------begin_close------------------>+
//!     |                                                           |
//!     +------------------------------- end --------------------> Ended
//! ```
//!
//! Closing is how every close the broker starts goes (a response with
//! `Connection: close`, a protocol error, a slow consumer, shutdown): the
//! connection stops taking requests, gets its output out (the last response
//! or the close frame), shuts its write side, and lingers: it reads and
//! drops what the peer still sends until the peer closes too, so that
//! closing a socket with unread input does not reset the connection and
//! destroy the close frame in flight (RFC 6455 section 7.1.1; nginx's
//! lingering close). A close is bounded in time (`CLOSE_GRACE`) and in
//! bytes dropped (`MAX_LINGER_BYTES`), so a client cannot hold a connection
//! open by sending.
//!
//! Ended is final: the worker reaps the connection at the end of the loop
//! turn, never in the middle of one.

use crate::metrics::DisconnectReason;
use std::time::{Duration, Instant};

/// How long a closing connection may take to get its last bytes out and
/// hear the peer's close; after it, the socket is dropped.
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// A closing connection that sends more than this is dropped at once
/// rather than read until its deadline. Large enough for the rest of a
/// message over `MAX_MESSAGE_BYTES` that a client is still sending when the
/// 1009 close goes out.
pub const MAX_LINGER_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug)]
pub enum Lifecycle {
    /// Reading requests or frames, writing replies and events.
    Open,
    /// Open, but more output waits than the high-water mark allows: input
    /// is not read until it is written, so a client that sends without
    /// reading cannot make the broker buffer without bound.
    InputPaused,
    Closing(Closing),
    /// To be reaped at the end of this turn, for this reason.
    Ended(DisconnectReason),
}

/// What a closing connection still waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseWait {
    /// We sent a WebSocket close frame and read frames on for the peer's
    /// answering close (shutdown, RFC 6455 section 5.5.1).
    PeerCloseFrame,
    /// Input is read and dropped; once our output is out we shut down our
    /// write side and wait for the peer's end of stream.
    Linger,
}

#[derive(Debug)]
pub struct Closing {
    pub reason: DisconnectReason,
    pub wait: CloseWait,
    pub deadline: Instant,
    /// Our write side is shut down.
    pub write_shut: bool,
    /// The peer's end of stream was read.
    pub peer_eof: bool,
    /// Input read and dropped while lingering.
    pub dropped: usize,
}

impl Lifecycle {
    pub fn is_ended(&self) -> bool {
        matches!(self, Lifecycle::Ended(_))
    }

    pub fn is_closing(&self) -> bool {
        matches!(self, Lifecycle::Closing(_))
    }

    /// Open or input paused: the connection still takes requests.
    pub fn takes_requests(&self) -> bool {
        matches!(self, Lifecycle::Open | Lifecycle::InputPaused)
    }

    /// Input is read only to be dropped.
    pub fn lingers(&self) -> bool {
        matches!(self, Lifecycle::Closing(c) if c.wait == CloseWait::Linger)
    }

    pub fn closing_mut(&mut self) -> Option<&mut Closing> {
        match self {
            Lifecycle::Closing(closing) => Some(closing),
            _ => None,
        }
    }

    /// Stops reading an open connection until its output drains.
    pub fn pause_input(&mut self) {
        if matches!(self, Lifecycle::Open) {
            *self = Lifecycle::InputPaused;
        }
    }

    /// True if input was paused: the caller reads again.
    pub fn resume_input(&mut self) -> bool {
        let paused = matches!(self, Lifecycle::InputPaused);
        if paused {
            *self = Lifecycle::Open;
        }
        paused
    }

    /// Starts closing, to be over by `deadline`. False if the connection
    /// was already closing or ended (the first close wins).
    pub fn begin_close(
        &mut self,
        reason: DisconnectReason,
        wait: CloseWait,
        deadline: Instant,
    ) -> bool {
        if !self.takes_requests() {
            return false;
        }
        *self = Lifecycle::Closing(Closing {
            reason,
            wait,
            deadline,
            write_shut: false,
            peer_eof: false,
            dropped: 0,
        });
        true
    }

    /// The peer answered our close frame: linger for its end of stream.
    pub fn peer_answered_close(&mut self) {
        if let Lifecycle::Closing(closing) = self {
            closing.wait = CloseWait::Linger;
        }
    }

    /// Ends the connection. The reason is the close's, if one was under
    /// way, else `otherwise`. False if it had already ended.
    pub fn end(&mut self, otherwise: DisconnectReason) -> bool {
        let reason = match self {
            Lifecycle::Ended(_) => return false,
            Lifecycle::Closing(closing) => closing.reason,
            Lifecycle::Open | Lifecycle::InputPaused => otherwise,
        };
        *self = Lifecycle::Ended(reason);
        true
    }

    /// Why the connection ended; `None` while it lives.
    pub fn ended_reason(&self) -> Option<DisconnectReason> {
        match self {
            Lifecycle::Ended(reason) => Some(*reason),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closing(reason: DisconnectReason, wait: CloseWait) -> Lifecycle {
        let mut life = Lifecycle::Open;
        assert!(life.begin_close(reason, wait, Instant::now()));
        life
    }

    #[test]
    fn input_pauses_and_resumes_only_while_open() {
        let mut life = Lifecycle::Open;
        life.pause_input();
        assert!(life.takes_requests() && !life.lingers());
        assert!(life.resume_input());
        assert!(!life.resume_input());
        let mut life = closing(DisconnectReason::Normal, CloseWait::Linger);
        life.pause_input();
        assert!(life.lingers());
        assert!(!life.resume_input());
    }

    #[test]
    fn the_first_close_wins_and_gives_the_end_its_reason() {
        let mut life = closing(DisconnectReason::SlowConsumer, CloseWait::Linger);
        assert!(!life.begin_close(
            DisconnectReason::Shutdown,
            CloseWait::PeerCloseFrame,
            Instant::now()
        ));
        assert!(life.end(DisconnectReason::ConnectionError));
        assert_eq!(life.ended_reason(), Some(DisconnectReason::SlowConsumer));
        assert!(!life.end(DisconnectReason::Normal));
    }

    #[test]
    fn an_open_connection_ends_for_the_reason_given() {
        let mut life = Lifecycle::InputPaused;
        assert!(life.end(DisconnectReason::DeadPeer));
        assert_eq!(life.ended_reason(), Some(DisconnectReason::DeadPeer));
        assert!(!life.begin_close(DisconnectReason::Normal, CloseWait::Linger, Instant::now()));
    }

    #[test]
    fn an_answered_close_lingers() {
        let mut life = closing(DisconnectReason::Shutdown, CloseWait::PeerCloseFrame);
        assert!(!life.lingers());
        life.peer_answered_close();
        assert!(life.lingers());
    }
}
