//! One client connection: its socket and the bytes that cross it. It reads
//! (HTTP requests, then WebSocket frames), hands what it read to the
//! protocol side (HTTP serving in [`super::http_service`], the JSON session
//! in [`super::session`]), writes its output and its queued events, and
//! moves through its [`Lifecycle`] (open, closing, ended).
//!
//! ```text
//!   Http { requests, pipelined }  --101-->  WebSocket { codec, session }
//! ```
//!
//! Everything here runs on the connection's own worker thread. The only
//! state other threads touch is the session's `SubscriberQueue`, through
//! the broker. A connection never frees itself: when it ends, it tells the
//! worker (`WorkerCtx::ended`), which reaps it at the end of the loop turn.

use super::context::WorkerCtx;
use super::http_service::{HttpInput, Served};
use super::lifecycle::{CloseWait, Lifecycle, CLOSE_GRACE, MAX_LINGER_BYTES};
use super::output::{Output, Written};
use super::stream::Transport;
use super::websocket_service::{Deadline, Names, Reading, WebSocketService};
use crate::auth::Access;
use crate::broker::change::Outcome;
use crate::broker::delivery::{ConnectionKey, Notice, SubscriberQueue};
use crate::metrics::{ConnectionKind, DisconnectReason};
use crate::ws::SessionKind;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tungstenite::protocol::frame::coding::CloseCode;

/// Queued events are gathered into writes of about this size.
const GATHER_BYTES: usize = 64 * 1024;

enum Phase {
    Http(HttpInput),
    WebSocket(Box<WebSocketService>),
}

pub struct Connection<S> {
    socket: S,
    slot: usize,
    generation: u64,
    peer: SocketAddr,
    opened: Instant,
    phase: Phase,
    life: Lifecycle,
    output: Output,
    /// Requests and client messages read. For the close log line.
    messages_in: u64,
    /// Already on this turn's flush list.
    pub(super) touched: bool,
    /// This connection's live deadline in the worker's timers.
    pub(super) timer: Option<Instant>,
}

impl<S: Transport> Connection<S> {
    /// A new connection, its handshake timeout armed.
    pub fn new(
        socket: S,
        slot: usize,
        generation: u64,
        peer: SocketAddr,
        ctx: &mut WorkerCtx,
    ) -> Connection<S> {
        let mut conn = Connection {
            socket,
            slot,
            generation,
            peer,
            opened: ctx.now,
            phase: Phase::Http(HttpInput::new(ctx.now)),
            life: Lifecycle::Open,
            output: Output::default(),
            messages_in: 0,
            touched: false,
            timer: None,
        };
        let deadline = ctx.now + ctx.shared.config.handshake_timeout;
        ctx.timers.arm(&mut conn.timer, deadline, slot, generation);
        conn
    }

    pub fn socket_mut(&mut self) -> &mut S {
        &mut self.socket
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn is_websocket(&self) -> bool {
        matches!(self.phase, Phase::WebSocket(_))
    }

    fn key(&self) -> ConnectionKey {
        ConnectionKey::new(self.slot, self.generation)
    }

    fn names(&self) -> Names {
        Names {
            key: self.key(),
            peer: self.peer,
        }
    }

    fn websocket(&self) -> Option<&WebSocketService> {
        match &self.phase {
            Phase::WebSocket(ws) => Some(ws),
            Phase::Http(_) => None,
        }
    }

    // ---- the lifecycle's transitions, with what the worker must know ----

    /// Ends the connection (see [`Lifecycle::end`]); the worker reaps it
    /// at the end of the turn.
    pub fn end(&mut self, ctx: &mut WorkerCtx, otherwise: DisconnectReason) {
        if self.life.end(otherwise) {
            ctx.ended.push(self.slot);
        }
    }

    /// Starts closing, with the close deadline armed.
    fn begin_close(&mut self, ctx: &mut WorkerCtx, reason: DisconnectReason, wait: CloseWait) {
        let deadline = ctx.now + CLOSE_GRACE;
        if self.life.begin_close(reason, wait, deadline) {
            ctx.timers
                .arm(&mut self.timer, deadline, self.slot, self.generation);
        }
    }

    /// Fails the WebSocket connection: a close frame with `code`, then no
    /// further frames are read; the connection lingers until the peer is
    /// done or the close deadline.
    fn fail_protocol(&mut self, ctx: &mut WorkerCtx, code: CloseCode, why: &str) {
        let sub = self.websocket().map_or("-", WebSocketService::sub);
        log::debug!(conn:% = self.key(), peer:% = self.peer, worker = ctx.id, sub, why; "protocol error");
        if !self.life.takes_requests() {
            return self.end(ctx, DisconnectReason::ProtocolError);
        }
        self.send_close_frame(code, why);
        self.begin_close(ctx, DisconnectReason::ProtocolError, CloseWait::Linger);
    }

    /// Puts a WebSocket close frame behind everything already in the
    /// output; nothing but the close follows it.
    fn send_close_frame(&mut self, code: CloseCode, reason: &str) {
        if let Phase::WebSocket(ws) = &mut self.phase {
            ws.close_frame(&mut self.output, code, reason);
        }
    }

    // ---- reading ----------------------------------------------------------

    /// The socket is readable (or closed): read until it would block.
    pub fn on_readable(&mut self, ctx: &mut WorkerCtx) {
        if self.life.is_ended() {
            return;
        }
        if !self.life.lingers() {
            if self.is_websocket() {
                self.read_websocket(ctx);
            } else {
                self.read_http(ctx);
            }
        }
        // Reading may have started the close: what is left in the socket is
        // dropped now, since readiness is edge-triggered and the peer's end
        // of stream may already be among it.
        if self.life.lingers() {
            self.drop_input(ctx);
        }
    }

    /// While lingering: reads and drops input until it would block, noting
    /// the peer's end of stream.
    fn drop_input(&mut self, ctx: &mut WorkerCtx) {
        loop {
            let result = self.socket.read(&mut ctx.read_buffer);
            let Some(closing) = self.life.closing_mut() else {
                return;
            };
            match result {
                Ok(0) => {
                    closing.peer_eof = true;
                    return;
                }
                Ok(n) => {
                    ctx.metrics.record_received(n);
                    closing.dropped += n;
                    if closing.dropped > MAX_LINGER_BYTES {
                        return self.end(ctx, DisconnectReason::Normal);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return self.end(ctx, DisconnectReason::ConnectionError),
            }
        }
    }

    fn read_http(&mut self, ctx: &mut WorkerCtx) {
        loop {
            // Requests already buffered first: a pause for output may have
            // left some behind.
            self.serve_requests(ctx);
            if !self.life.takes_requests() {
                return;
            }
            if self.is_websocket() {
                // Bytes that followed the upgrade request are already in the
                // codec; frames still in the socket follow them.
                return self.read_websocket(ctx);
            }
            if self.output.over_high_water() {
                return self.life.pause_input();
            }
            if matches!(&self.phase, Phase::Http(http) if http.is_awaiting()) {
                // Read on when the backplane answers (`on_outcome`): input
                // is not buffered without bound meanwhile.
                return;
            }
            let n = match self.socket.read(&mut ctx.read_buffer) {
                Ok(0) => {
                    // The peer is done sending; answer what it asked, then close.
                    self.begin_close(ctx, DisconnectReason::Normal, CloseWait::Linger);
                    if let Some(closing) = self.life.closing_mut() {
                        closing.peer_eof = true;
                    }
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // The stream's word for TLS refusing the peer (see
                // `server::tls`); the TLS handshake is read here.
                Err(e) if e.kind() == ErrorKind::InvalidData => {
                    log::debug!(conn:% = self.key(), peer:% = self.peer, worker = ctx.id, error:% = e; "TLS refused");
                    return self.end(ctx, DisconnectReason::TlsError);
                }
                Err(_) => return self.end(ctx, DisconnectReason::ConnectionError),
            };
            ctx.metrics.record_received(n);
            if let Phase::Http(http) = &mut self.phase {
                http.buffer.extend_from_slice(&ctx.read_buffer[..n]);
            }
        }
    }

    /// Serves every whole request in the input buffer.
    fn serve_requests(&mut self, ctx: &mut WorkerCtx) {
        let Phase::Http(http) = &mut self.phase else {
            return;
        };
        if !self.life.takes_requests() {
            return;
        }
        let key = ConnectionKey::new(self.slot, self.generation);
        match http.serve(ctx, &mut self.output, key, self.peer, &mut self.messages_in) {
            Served::Waiting => {}
            Served::Close => self.begin_close(ctx, DisconnectReason::Normal, CloseWait::Linger),
            Served::Upgrade {
                kind,
                early_frames,
                access,
            } => self.become_websocket(ctx, early_frames, kind, access),
        }
    }

    fn become_websocket(
        &mut self,
        ctx: &mut WorkerCtx,
        early_frames: Vec<u8>,
        kind: SessionKind,
        access: Access,
    ) {
        let service = WebSocketService::new(ctx, early_frames, kind, access, self.names());
        self.phase = Phase::WebSocket(Box::new(service));
        self.timer = None;
        self.arm_session_timer(ctx);
        ctx.metrics.record_upgrade();
    }

    fn read_websocket(&mut self, ctx: &mut WorkerCtx) {
        let Phase::WebSocket(ws) = &mut self.phase else {
            return;
        };
        let mut rearm = false;
        let reading = ws.read(
            &mut self.socket,
            ctx,
            &mut self.output,
            self.life.takes_requests(),
            &mut self.messages_in,
            &mut rearm,
        );
        if rearm {
            self.arm_session_timer(ctx);
        }
        match reading {
            Reading::Waiting => {}
            // The socket is still readable: the worker comes back here
            // next turn without waiting for a new readiness event, and
            // lets its other connections have their turn meanwhile.
            Reading::OutOfBudget => ctx.read_next_turn.push(self.key()),
            Reading::OutputFull => self.life.pause_input(),
            Reading::PeerClosed if self.life.is_closing() => self.life.peer_answered_close(),
            Reading::PeerClosed => {
                self.begin_close(ctx, DisconnectReason::Normal, CloseWait::Linger)
            }
            Reading::Gone => self.end(ctx, DisconnectReason::Normal),
            Reading::Violation { code, why } => self.fail_protocol(ctx, code, &why),
            Reading::Failed => self.end(ctx, DisconnectReason::ConnectionError),
        }
    }

    /// The backplane carried out the change this connection waits for: its
    /// reply goes out, and reading resumes (input may be waiting in the
    /// socket, with no new readiness event to come).
    pub fn on_outcome(&mut self, ctx: &mut WorkerCtx, outcome: Outcome) {
        ctx.count(&outcome);
        if self.life.is_ended() {
            return;
        }
        match &mut self.phase {
            Phase::WebSocket(ws) => ws.on_outcome(ctx, outcome, &mut self.output),
            Phase::Http(http) => {
                if http.on_outcome(ctx, &mut self.output, outcome, self.peer) {
                    return self.begin_close(ctx, DisconnectReason::Normal, CloseWait::Linger);
                }
            }
        }
        if self.life.takes_requests() {
            self.on_readable(ctx);
        }
    }

    // ---- writing -------------------------------------------------------------

    /// Publishers queued events for this connection: clear the flag that
    /// keeps them from posting it again, before the flush pops the queue.
    pub fn unschedule(&self) {
        if let Some(queue) = self.queue() {
            queue.unschedule();
        }
    }

    fn queue(&self) -> Option<&Arc<SubscriberQueue>> {
        self.websocket().and_then(WebSocketService::queue)
    }

    /// Writes the output, then queued events, until done or the socket
    /// would block; then takes the closing and draining steps that were
    /// waiting for the output to be written.
    pub fn flush(&mut self, ctx: &mut WorkerCtx) {
        loop {
            if self.life.is_ended() {
                return;
            }
            self.cut_if_slow(ctx);
            if !self.write_output(ctx) {
                return;
            }
            if self.life.takes_requests()
                && ctx.is_draining()
                && self.is_websocket()
                && self.queue_is_empty()
            {
                self.send_shutdown(ctx);
                continue;
            }
            if let Some(closing) = self.life.closing_mut() {
                if closing.wait != CloseWait::Linger {
                    return;
                }
                if !closing.write_shut {
                    // Everything is out: our side is done. The peer reads
                    // our last bytes, then end of stream; what it still
                    // sends is dropped, not left unread to reset the
                    // connection.
                    if !self.socket.shutdown_write() {
                        return;
                    }
                    closing.write_shut = true;
                    self.drop_input(ctx);
                }
                if self.life.closing_mut().is_some_and(|c| c.peer_eof) {
                    self.end(ctx, DisconnectReason::Normal);
                }
                return;
            }
            if self.life.resume_input() {
                self.on_readable(ctx);
                continue;
            }
            return;
        }
    }

    fn queue_is_empty(&self) -> bool {
        self.queue().is_none_or(|q| q.is_empty())
    }

    /// Writes the output, then (unless closing) queued events gathered into
    /// large writes. Returns false if the socket would block or failed.
    fn write_output(&mut self, ctx: &mut WorkerCtx) -> bool {
        loop {
            match self.output.write_to(&mut self.socket, &ctx.metrics) {
                Written::All => {}
                Written::Blocked => return false,
                Written::Failed => {
                    self.end(ctx, DisconnectReason::ConnectionError);
                    return false;
                }
            }
            if !self.life.takes_requests() {
                return true;
            }
            let Some(queue) = self.queue() else {
                return true;
            };
            ctx.metrics.record_queue_depth(queue.len());
            ctx.batch.clear();
            let mut frames = 0;
            while ctx.batch.len() < GATHER_BYTES {
                let Some(frame) = queue.pop() else { break };
                ctx.batch.extend_from_slice(&frame);
                frames += 1;
            }
            if frames == 0 {
                return true;
            }
            self.output.messages += frames;
            ctx.metrics.record_delivered(frames);
            match self
                .output
                .write_batch(&mut self.socket, &ctx.batch, &ctx.metrics)
            {
                Written::All => {}
                Written::Blocked => return false,
                Written::Failed => {
                    self.end(ctx, DisconnectReason::ConnectionError);
                    return false;
                }
            }
        }
    }

    /// A publisher found this connection's queue full: `SLOW_CONSUMER`,
    /// then a close with 1008.
    fn cut_if_slow(&mut self, ctx: &mut WorkerCtx) {
        if !self.life.takes_requests() {
            return;
        }
        let names = self.names();
        let Phase::WebSocket(ws) = &mut self.phase else {
            return;
        };
        if ws.cut_if_slow(ctx, &mut self.output, names) {
            self.begin_close(ctx, DisconnectReason::SlowConsumer, CloseWait::Linger);
        }
    }

    /// Shutdown: `info server_shutdown` and a close frame with 1001, then
    /// wait briefly for the peer's close.
    fn send_shutdown(&mut self, ctx: &mut WorkerCtx) {
        if !self.life.takes_requests() {
            return;
        }
        let Phase::WebSocket(ws) = &mut self.phase else {
            return;
        };
        ws.shut_down(&mut self.output);
        self.begin_close(ctx, DisconnectReason::Shutdown, CloseWait::PeerCloseFrame);
    }

    /// The drain deadline passed: whatever is still queued is dropped.
    pub fn force_shutdown(&mut self, ctx: &mut WorkerCtx) {
        match &self.phase {
            Phase::WebSocket(ws) => {
                ws.drop_queued();
                self.send_shutdown(ctx);
            }
            Phase::Http(_) => self.end(ctx, DisconnectReason::Shutdown),
        }
    }

    /// The worker's WebSocket connections have all drained: an HTTP
    /// connection gets its last response out and closes.
    pub fn close_if_http(&mut self, ctx: &mut WorkerCtx) {
        if !self.is_websocket() {
            self.begin_close(ctx, DisconnectReason::Shutdown, CloseWait::Linger);
        }
    }

    // ---- timers --------------------------------------------------------------

    fn arm_session_timer(&mut self, ctx: &mut WorkerCtx) {
        if let Phase::WebSocket(ws) = &mut self.phase {
            let at = ws.deadline(ctx);
            ctx.timers
                .arm(&mut self.timer, at, self.slot, self.generation);
        }
    }

    /// Another thread's word for this connection: its user was
    /// disconnected (`info disconnected`, then a close with 1008).
    pub fn on_notice(&mut self, ctx: &mut WorkerCtx, notice: Notice) {
        match notice {
            Notice::Disconnect => {
                if !self.life.takes_requests() {
                    return;
                }
                let names = self.names();
                let Phase::WebSocket(ws) = &mut self.phase else {
                    return;
                };
                ws.disconnect(ctx, &mut self.output, names);
                self.begin_close(ctx, DisconnectReason::Disconnected, CloseWait::Linger);
            }
        }
    }

    /// The connection's deadline came: close it, or send a heartbeat, and
    /// arm the next deadline.
    pub fn on_timer(&mut self, ctx: &mut WorkerCtx) {
        self.timer = None;
        match &self.life {
            Lifecycle::Ended(_) => return,
            Lifecycle::Closing(closing) => {
                if ctx.now >= closing.deadline {
                    return self.end(ctx, DisconnectReason::Normal);
                }
                let deadline = closing.deadline;
                return ctx
                    .timers
                    .arm(&mut self.timer, deadline, self.slot, self.generation);
            }
            Lifecycle::Open | Lifecycle::InputPaused => {}
        }
        let names = self.names();
        match &mut self.phase {
            Phase::Http(http) => {
                let deadline = http.request_started + ctx.shared.config.handshake_timeout;
                if ctx.now >= deadline {
                    log::debug!(
                        conn:% = names.key, peer:% = names.peer, worker = ctx.id;
                        "no request within the handshake timeout"
                    );
                    return self.end(ctx, DisconnectReason::HandshakeTimeout);
                }
                ctx.timers
                    .arm(&mut self.timer, deadline, self.slot, self.generation);
            }
            Phase::WebSocket(ws) => match ws.on_deadline(ctx, &mut self.output, names) {
                Deadline::Close(reason) => self.begin_close(ctx, reason, CloseWait::Linger),
                Deadline::Dead => self.end(ctx, DisconnectReason::DeadPeer),
                Deadline::Next(at) => {
                    ctx.timers
                        .arm(&mut self.timer, at, self.slot, self.generation)
                }
            },
        }
    }

    // ---- the end -------------------------------------------------------------

    /// Leaves every topic, counts and logs the close; called by the worker
    /// when it reaps the connection.
    pub fn release(&mut self, ctx: &WorkerCtx) {
        let reason = self.life.ended_reason().unwrap_or(DisconnectReason::Normal);
        let key = self.key();
        let (kind, client_id, sub) = match &mut self.phase {
            Phase::WebSocket(ws) => {
                ws.leave(ctx);
                (ConnectionKind::WebSocket, ws.client_id(), Some(ws.sub()))
            }
            Phase::Http(_) => (ConnectionKind::Http, None, None),
        };
        ctx.metrics.record_closed(kind, reason);
        log::info!(
            conn:% = key, peer:% = self.peer, worker = ctx.id,
            kind = if kind == ConnectionKind::WebSocket { "websocket" } else { "http" },
            reason = reason.as_str(), client_id = client_id.unwrap_or("-"), sub = sub.unwrap_or("-"),
            messages_in = self.messages_in, messages_out = self.output.messages,
            lifetime_ms = self.opened.elapsed().as_millis() as u64;
            "connection closed"
        );
    }
}
