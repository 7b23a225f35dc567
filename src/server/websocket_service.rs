//! WebSocket serving for one connection, beside `http_service`: frames read
//! out of the socket through the codec and handed to the session, the
//! heartbeat and the dead-peer deadline, the credentials' deadline, the
//! slow-consumer cut, the shutdown notice and a user's disconnection. It
//! decides when the connection must close, and puts the notice and the
//! close frame in the output; the connection does the closing (its
//! lifecycle) and the writing.
//!
//! ```text
//!   socket -> Codec::read -> Session::on_message -> Output
//! ```

use super::context::WorkerCtx;
use super::credentials::Lapse;
use super::output::Output;
use super::session::Session;
use crate::auth::Access;
use crate::broker::change::Outcome;
use crate::broker::delivery::{ConnectionKey, SubscriberQueue};
use crate::metrics::DisconnectReason;
use crate::ws::codec::{Codec, Incoming};
use crate::ws::SessionKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tungstenite::protocol::frame::coding::CloseCode;

/// Messages one connection may have handled in a loop turn before the
/// worker moves on to its other connections.
const READ_BUDGET_MESSAGES: usize = 256;

/// An upgraded connection: its framing, its session, its deadlines.
pub struct WebSocketService {
    codec: Codec,
    session: Session,
    next_ping: Instant,
    /// When the peer last sent anything (a frame, a pong).
    last_input: Instant,
}

/// What reading came to.
pub enum Reading {
    /// The socket would block, or the session waits for the backplane
    /// (reading resumes with its answer).
    Waiting,
    /// The read budget ran out with the socket still readable: read again
    /// next turn.
    OutOfBudget,
    /// The output is over its high-water mark: pause input.
    OutputFull,
    /// The peer sent a close frame.
    PeerClosed,
    /// The peer's stream ended without a close frame.
    Gone,
    /// The peer broke the protocol: fail the connection with `code`.
    Violation { code: CloseCode, why: String },
    /// The socket failed.
    Failed,
}

/// What the connection's deadline came to.
pub enum Deadline {
    /// Close, for `reason`: the notice and the close frame are in the
    /// output.
    Close(DisconnectReason),
    /// Nothing came from the peer for three heartbeats: end it.
    Dead,
    /// The next deadline.
    Next(Instant),
}

/// Who the connection is, for its log lines.
#[derive(Clone, Copy)]
pub struct Names {
    pub key: ConnectionKey,
    pub peer: SocketAddr,
}

impl WebSocketService {
    /// The service after a `101`: `early_frames` are the bytes that
    /// followed the upgrade request, the stream's first.
    pub fn new(
        ctx: &mut WorkerCtx,
        early_frames: Vec<u8>,
        kind: SessionKind,
        access: Access,
        names: Names,
    ) -> WebSocketService {
        let config = &ctx.shared.config;
        let service = WebSocketService {
            codec: Codec::new(early_frames, config.max_message_bytes),
            next_ping: ctx.now + config.heartbeat_interval,
            last_input: ctx.now,
            session: Session::new(kind, names.key, access, ctx),
        };
        log::info!(
            conn:% = names.key, peer:% = names.peer, worker = ctx.id, sub = service.sub();
            "websocket opened"
        );
        service
    }

    /// The token's user, or `-`, for log lines.
    pub fn sub(&self) -> &str {
        self.session.sub().unwrap_or("-")
    }

    pub fn client_id(&self) -> Option<&str> {
        self.session.client_id()
    }

    /// The event queue, once the session has subscribed.
    pub fn queue(&self) -> Option<&Arc<SubscriberQueue>> {
        self.session.queue()
    }

    /// Reads frames and hands whole messages to the session (only if
    /// `takes_requests`: a closing connection reads to find the peer's
    /// close), until the socket would block or something stops it.
    /// `messages_in` counts the messages read; a moved credentials'
    /// deadline sets `rearm`.
    pub fn read<S: std::io::Read + std::io::Write>(
        &mut self,
        socket: &mut S,
        ctx: &mut WorkerCtx,
        out: &mut Output,
        takes_requests: bool,
        messages_in: &mut u64,
        rearm: &mut bool,
    ) -> Reading {
        let mut budget = READ_BUDGET_MESSAGES;
        loop {
            if out.over_high_water() {
                return Reading::OutputFull;
            }
            if budget == 0 {
                return Reading::OutOfBudget;
            }
            budget -= 1;
            if self.session.blocks_reading() {
                return Reading::Waiting;
            }
            let (incoming, bytes_read) = self.codec.read(socket, out.buffer());
            if bytes_read > 0 {
                self.last_input = ctx.now;
                ctx.metrics.record_received(bytes_read);
            }
            match incoming {
                Incoming::Data(message) => {
                    *messages_in += 1;
                    if takes_requests {
                        self.session.on_message(ctx, message, out);
                        *rearm |= self.session.credentials_deadline().1;
                    }
                }
                Incoming::Control => {}
                Incoming::Close => return Reading::PeerClosed,
                Incoming::WouldBlock => return Reading::Waiting,
                Incoming::Gone => return Reading::Gone,
                Incoming::Violation { code, why } => return Reading::Violation { code, why },
                Incoming::Failed => return Reading::Failed,
            }
        }
    }

    /// The backplane answered what the session waits for.
    pub fn on_outcome(&mut self, ctx: &mut WorkerCtx, outcome: Outcome, out: &mut Output) {
        self.session.on_outcome(ctx, outcome, out);
    }

    /// Puts a close frame behind everything already in the output; nothing
    /// but the close follows it.
    pub fn close_frame(&mut self, out: &mut Output, code: CloseCode, reason: &str) {
        self.codec.close(out.buffer(), code, reason);
    }

    /// If a publisher found the queue full: `SLOW_CONSUMER` and a close
    /// frame with 1008 in the output; true if so.
    pub fn cut_if_slow(&mut self, ctx: &WorkerCtx, out: &mut Output, names: Names) -> bool {
        if !self.session.cut_if_slow(ctx, out) {
            return false;
        }
        log::warn!(
            conn:% = names.key, peer:% = names.peer, worker = ctx.id,
            client_id = self.client_id().unwrap_or("-"), sub = self.sub(),
            queue_size = ctx.shared.config.subscriber_queue_size;
            "slow consumer"
        );
        self.close_frame(out, CloseCode::Policy, "SLOW_CONSUMER");
        true
    }

    /// Shutdown: `info server_shutdown` and a close frame with 1001.
    pub fn shut_down(&mut self, out: &mut Output) {
        self.session.shut_down(out);
        self.close_frame(out, CloseCode::Away, "server shutting down");
    }

    /// The drain deadline passed: whatever is still queued is dropped.
    pub fn drop_queued(&self) {
        self.session.drop_queued();
    }

    /// Its user was disconnected: `info disconnected` and a close frame
    /// with 1008.
    pub fn disconnect(&mut self, ctx: &WorkerCtx, out: &mut Output, names: Names) {
        log::info!(
            conn:% = names.key, peer:% = names.peer, worker = ctx.id, sub = self.sub();
            "user disconnected"
        );
        self.session.disconnected(out);
        self.close_frame(out, CloseCode::Policy, "DISCONNECTED");
    }

    /// The nearest of the heartbeat, the dead-peer deadline and the
    /// credentials' deadline (no token yet, or the token's expiry).
    pub fn deadline(&mut self, ctx: &WorkerCtx) -> Instant {
        let dead_at = self.last_input + 3 * ctx.shared.config.heartbeat_interval;
        let at = self.next_ping.min(dead_at);
        match self.session.credentials_deadline() {
            (Some(lapse_at), _) => at.min(lapse_at),
            (None, _) => at,
        }
    }

    /// The connection's deadline came: the credentials lapsed, the peer is
    /// dead, or a heartbeat is due (its `info ping` and ping frame go in
    /// the output).
    pub fn on_deadline(&mut self, ctx: &WorkerCtx, out: &mut Output, names: Names) -> Deadline {
        if let Some(lapse) = self.session.lapse(ctx, out) {
            let (reason, why) = match lapse {
                Lapse::NoToken => (DisconnectReason::HandshakeTimeout, "UNAUTHORIZED"),
                Lapse::TokenExpired => (DisconnectReason::TokenExpired, "TOKEN_EXPIRED"),
            };
            log::info!(
                conn:% = names.key, peer:% = names.peer, worker = ctx.id,
                sub = self.sub(), reason = reason.as_str();
                "credentials lapsed"
            );
            self.close_frame(out, CloseCode::Policy, why);
            return Deadline::Close(reason);
        }
        let interval = ctx.shared.config.heartbeat_interval;
        if ctx.now >= self.last_input + 3 * interval {
            return Deadline::Dead;
        }
        if ctx.now >= self.next_ping {
            self.next_ping = ctx.now + interval;
            self.session.heartbeat(out);
            self.codec.ping(out.buffer());
        }
        Deadline::Next(self.deadline(ctx))
    }

    /// The connection is gone: the session leaves every topic and the
    /// users directory.
    pub fn leave(&mut self, ctx: &WorkerCtx) {
        self.session.leave_all(ctx);
    }
}
