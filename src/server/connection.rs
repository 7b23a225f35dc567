//! One client connection and its state machine: HTTP (requests, possibly
//! pipelined) -> WebSocket session -> closing. It owns the socket, the
//! bytes waiting to be written, and, once upgraded, the tungstenite context
//! and the connection's subscriptions.
//!
//! Everything here runs on the connection's own worker thread. The only
//! state other threads touch is the `SubscriberQueue`, through the broker.
//! A connection never frees itself: it records why it must close
//! (`doom`) and the worker reaps it at the end of the loop turn.

use super::worker::WorkerCtx;
use crate::broker::delivery::{ConnectionKey, SubscriberQueue};
use crate::broker::Topic;
use crate::http::routes::{self, Action, RestContext, SessionKind};
use crate::http::{parse_request, Parsed};
use crate::metrics::{ConnectionKind, DisconnectReason};
use crate::protocol::{self, append_text_frame, ClientRequest, ErrorCode};
use mio::net::TcpStream;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig, WebSocketContext};
use tungstenite::Message;

/// How long a closing connection may take to get its last bytes out and
/// hear the peer's close; after it, the socket is dropped.
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// While more than this many bytes wait to be written, the connection's
/// input is not read: a client that sends without reading cannot make the
/// broker buffer without bound.
const OUTPUT_HIGH_WATER: usize = 256 * 1024;
/// Messages one connection may have handled in a loop turn before the
/// worker moves on to its other connections.
const READ_BUDGET_MESSAGES: usize = 256;
/// Queued events are gathered into writes of about this size.
const GATHER_BYTES: usize = 64 * 1024;
/// An output buffer larger than this is freed once empty, so that one burst
/// does not pin memory for the connection's lifetime.
const OUTPUT_KEEP_CAPACITY: usize = 16 * 1024;
/// A closing connection that keeps sending more than this is dropped at
/// once rather than read until its deadline.
const MAX_DISCARD_BYTES: usize = 1024 * 1024;
/// tungstenite's read buffer per connection (its default is 128 KiB): it is
/// allocated for every WebSocket connection, idle or not, and is most of an
/// idle subscriber's memory; a larger message grows it as needed.
const WS_READ_BUFFER: usize = 2 * 1024;

/// What a closing connection still waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloseWait {
    /// We sent a WebSocket close frame and read on for the peer's reply.
    PeerCloseFrame,
    /// Input is read and dropped; once our output is out we shut down our
    /// side and wait for the peer's end of stream.
    Drain,
}

#[derive(Debug)]
struct Closing {
    reason: DisconnectReason,
    wait: CloseWait,
    deadline: Instant,
    write_shut: bool,
    peer_eof: bool,
    /// Input read and dropped while closing.
    discarded: usize,
}

enum Phase {
    Http {
        input: Vec<u8>,
        request_started: Instant,
    },
    WebSocket(Box<Session>),
}

/// A WebSocket connection's protocol state.
struct Session {
    ws: WebSocketContext,
    /// Created at the first subscribe, so that a connection that only
    /// publishes costs no queue.
    queue: Option<Arc<SubscriberQueue>>,
    topics: Vec<Arc<Topic>>,
    client_id: Option<String>,
    next_ping: Instant,
    shutdown_sent: bool,
    kind: SessionKind,
}

/// What a connection reads from and writes to: a non-blocking socket in
/// the worker; a byte buffer in tests and fuzzing, so that the whole state
/// machine runs without sockets.
pub trait Transport: Read + Write {
    /// Ends our half of the stream: the peer reads end of stream after our
    /// last byte.
    fn shutdown_write(&mut self);
}

impl Transport for TcpStream {
    fn shutdown_write(&mut self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

pub struct Connection<S = TcpStream> {
    socket: S,
    slot: usize,
    generation: u64,
    peer: SocketAddr,
    opened: Instant,
    phase: Phase,
    /// Bytes to write before any queued event: HTTP responses, replies,
    /// replay, control frames, and the rest of a partly written batch.
    out: Vec<u8>,
    out_pos: usize,
    last_input: Instant,
    /// Requests and client frames read; responses, replies and events
    /// written. For the close log line.
    messages_in: u64,
    messages_out: u64,
    read_paused: bool,
    closing: Option<Closing>,
    pub(super) doomed: Option<DisconnectReason>,
    /// Already on this turn's flush list.
    pub(super) touched: bool,
    /// This connection's live deadline in the worker's timers.
    pub(super) timer: Option<Instant>,
}

/// tungstenite's view of the connection: reads come from the socket,
/// writes go to the output buffer (so frames are written by the worker,
/// batched, in order).
struct WsIo<'a, S> {
    socket: &'a mut S,
    out: &'a mut Vec<u8>,
    bytes_read: usize,
}

impl<S: Read> Read for WsIo<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.socket.read(buf)?;
        self.bytes_read += n;
        Ok(n)
    }
}

impl<S> Write for WsIo<'_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<S: Transport> Connection<S> {
    pub fn new(
        socket: S,
        slot: usize,
        generation: u64,
        peer: SocketAddr,
        now: Instant,
    ) -> Connection<S> {
        Connection {
            socket,
            slot,
            generation,
            peer,
            opened: now,
            phase: Phase::Http {
                input: Vec::new(),
                request_started: now,
            },
            out: Vec::new(),
            out_pos: 0,
            last_input: now,
            messages_in: 0,
            messages_out: 0,
            read_paused: false,
            closing: None,
            doomed: None,
            touched: false,
            timer: None,
        }
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

    /// The connection's first deadline: the handshake timeout.
    pub fn first_deadline(&self, ctx: &WorkerCtx) -> Instant {
        self.opened + ctx.shared.config.handshake_timeout
    }

    fn key(&self) -> ConnectionKey {
        ConnectionKey {
            slot: self.slot,
            generation: self.generation,
        }
    }

    /// Marks the connection for reaping at the end of the turn.
    #[track_caller]
    pub fn doom(&mut self, ctx: &mut WorkerCtx, reason: DisconnectReason) {
        log::trace!("doom {reason:?} at {}", std::panic::Location::caller());
        if self.doomed.is_none() {
            self.doomed = Some(reason);
            ctx.doomed.push(self.slot);
        }
    }

    /// Ends the connection at once, for the reason of the close already
    /// under way if there is one, else for `otherwise`.
    fn end_now(&mut self, ctx: &mut WorkerCtx, otherwise: DisconnectReason) {
        let reason = self.closing.as_ref().map_or(otherwise, |c| c.reason);
        self.doom(ctx, reason);
    }

    fn pending_output(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Starts closing: the connection stops taking requests, gets its output
    /// out, and is dropped by `deadline` at the latest.
    fn begin_close(&mut self, ctx: &mut WorkerCtx, reason: DisconnectReason, wait: CloseWait) {
        if self.closing.is_some() {
            return;
        }
        let deadline = ctx.now + CLOSE_GRACE;
        self.closing = Some(Closing {
            reason,
            wait,
            deadline,
            write_shut: false,
            peer_eof: false,
            discarded: 0,
        });
        ctx.timers
            .arm(&mut self.timer, deadline, self.slot, self.generation);
    }

    // ---- reading ----------------------------------------------------------

    /// The socket is readable (or closed): read until it would block.
    pub fn on_readable(&mut self, ctx: &mut WorkerCtx) {
        if self.doomed.is_some() {
            return;
        }
        if !self.is_discarding_input() {
            if self.is_websocket() {
                self.read_websocket(ctx);
            } else {
                self.read_http(ctx);
            }
        }
        // Reading may have started the close: what is left in the socket is
        // read and dropped now, since readiness is edge-triggered and the
        // peer's end of stream may already be among it.
        if self.is_discarding_input() && self.doomed.is_none() {
            self.discard_input(ctx);
        }
    }

    fn is_discarding_input(&self) -> bool {
        self.closing
            .as_ref()
            .is_some_and(|c| c.wait == CloseWait::Drain)
    }

    fn discard_input(&mut self, ctx: &mut WorkerCtx) {
        loop {
            let result = self.socket.read(&mut ctx.read_buffer);
            let Some(closing) = &mut self.closing else {
                return;
            };
            match result {
                Ok(0) => {
                    closing.peer_eof = true;
                    return;
                }
                Ok(n) => {
                    ctx.metrics.record_received(n);
                    closing.discarded += n;
                    if closing.discarded > MAX_DISCARD_BYTES {
                        let reason = closing.reason;
                        return self.doom(ctx, reason);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    let reason = closing.reason;
                    return self.doom(ctx, reason);
                }
            }
        }
    }

    fn read_http(&mut self, ctx: &mut WorkerCtx) {
        loop {
            // Requests already buffered first: a pause for output may have
            // left some behind.
            self.serve_requests(ctx);
            if self.closing.is_some() || self.doomed.is_some() {
                return;
            }
            if self.is_websocket() {
                // Bytes that followed the upgrade request are already in the
                // session; frames still in the socket follow them.
                return self.read_websocket(ctx);
            }
            if self.pending_output() > OUTPUT_HIGH_WATER {
                self.read_paused = true;
                return;
            }
            let n = match self.socket.read(&mut ctx.read_buffer) {
                Ok(0) => {
                    // The peer is done sending; answer what it asked, then close.
                    self.begin_close(ctx, DisconnectReason::Normal, CloseWait::Drain);
                    if let Some(closing) = &mut self.closing {
                        closing.peer_eof = true;
                    }
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return self.doom(ctx, DisconnectReason::ConnectionError),
            };
            ctx.metrics.record_received(n);
            if let Phase::Http { input, .. } = &mut self.phase {
                input.extend_from_slice(&ctx.read_buffer[..n]);
            }
        }
    }

    /// Serves every whole request in the input buffer.
    fn serve_requests(&mut self, ctx: &mut WorkerCtx) {
        loop {
            if self.closing.is_some() || self.pending_output() > OUTPUT_HIGH_WATER {
                return;
            }
            let Phase::Http {
                input,
                request_started,
            } = &mut self.phase
            else {
                return;
            };
            let started = Instant::now();
            // Read once: the route and the `Connection: close` decision must
            // agree (a signal between two reads gave a 200 that closed).
            let draining = ctx.shared.draining.load(Ordering::Acquire);
            let (action, keep_alive, used, request_line) = match parse_request(input) {
                Parsed::Partial => return,
                Parsed::Invalid(response) => {
                    response.write_to(&mut self.out);
                    ctx.metrics.record_http_response(response.status);
                    self.messages_in += 1;
                    self.messages_out += 1;
                    match response.consumed {
                        Some(used) if !response.close => {
                            input.drain(..used);
                            *request_started = ctx.now;
                            continue;
                        }
                        _ => {
                            input.clear();
                            return self.begin_close(
                                ctx,
                                DisconnectReason::Normal,
                                CloseWait::Drain,
                            );
                        }
                    }
                }
                Parsed::Complete(request, used) => {
                    let rest = RestContext {
                        broker: &ctx.shared.broker,
                        api_key: ctx.shared.config.api_key.as_deref(),
                        draining,
                        uptime: ctx.shared.started.elapsed(),
                        connections: ctx.shared.connections.load(Ordering::Relaxed),
                        metrics: &ctx.shared.metrics,
                        worker: Some(ctx.id),
                    };
                    let request_line = log::log_enabled!(log::Level::Debug)
                        .then(|| (request.method.to_string(), request.path.to_string()));
                    (
                        routes::handle(&request, &rest),
                        request.keep_alive,
                        used,
                        request_line,
                    )
                }
            };
            let status = match &action {
                Action::Respond(response) => response.status,
                Action::Upgrade(..) => 101,
            };
            ctx.metrics.record_http_response(status);
            self.messages_in += 1;
            self.messages_out += 1;
            if let Some((method, path)) = request_line {
                log::debug!(
                    method = method.as_str(), path = path.as_str(), status,
                    micros = started.elapsed().as_micros() as u64, peer:% = self.peer;
                    "request"
                );
            }
            match action {
                Action::Respond(mut response) => {
                    response.close |= !keep_alive || draining;
                    response.write_to(&mut self.out);
                    input.drain(..used);
                    *request_started = ctx.now;
                    if response.close {
                        return self.begin_close(ctx, DisconnectReason::Normal, CloseWait::Drain);
                    }
                }
                Action::Upgrade(switching, kind) => {
                    self.out.extend_from_slice(&switching);
                    let early_frames = input.split_off(used);
                    return self.become_websocket(ctx, early_frames, kind);
                }
            }
        }
    }

    fn become_websocket(&mut self, ctx: &mut WorkerCtx, early_frames: Vec<u8>, kind: SessionKind) {
        let config = &ctx.shared.config;
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(WS_READ_BUFFER)
            .write_buffer_size(0)
            .max_message_size(Some(config.max_message_bytes))
            .max_frame_size(Some(config.max_message_bytes));
        let ws = WebSocketContext::from_partially_read(early_frames, Role::Server, Some(ws_config));
        self.phase = Phase::WebSocket(Box::new(Session {
            ws,
            queue: None,
            topics: Vec::new(),
            client_id: None,
            next_ping: ctx.now + config.heartbeat_interval,
            shutdown_sent: false,
            kind,
        }));
        self.last_input = ctx.now;
        self.timer = None;
        self.arm_session_timer(ctx);
        ctx.metrics.record_upgrade();
        log::info!(conn:% = self.key(), peer:% = self.peer, worker = ctx.id; "websocket opened");
    }

    fn read_websocket(&mut self, ctx: &mut WorkerCtx) {
        let mut budget = READ_BUDGET_MESSAGES;
        loop {
            if self.pending_output() > OUTPUT_HIGH_WATER {
                self.read_paused = true;
                return;
            }
            if budget == 0 {
                // Let the worker's other connections have their turn; the
                // socket is still readable, so the worker comes back here
                // next turn without waiting for a new readiness event.
                ctx.read_again.push(self.key());
                return;
            }
            budget -= 1;
            let Phase::WebSocket(session) = &mut self.phase else {
                return;
            };
            let mut io = WsIo {
                socket: &mut self.socket,
                out: &mut self.out,
                bytes_read: 0,
            };
            let result = session.ws.read(&mut io);
            if io.bytes_read > 0 {
                self.last_input = ctx.now;
                ctx.metrics.record_received(io.bytes_read);
            }
            match result {
                Ok(message @ (Message::Text(_) | Message::Binary(_))) => {
                    self.messages_in += 1;
                    if self.closing.is_none() {
                        match session.kind {
                            SessionKind::PubSub => self.handle_message(ctx, message),
                            #[cfg(feature = "autobahn")]
                            SessionKind::Echo => self.echo(message),
                        }
                    }
                }
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                Ok(Message::Close(_)) => {
                    match &mut self.closing {
                        // The peer answered our close.
                        Some(closing) => closing.wait = CloseWait::Drain,
                        None => {
                            // The peer closes: tungstenite queued the echo of
                            // its close frame; put it in the output now.
                            let _ = session.ws.flush(&mut io);
                            self.begin_close(ctx, DisconnectReason::Normal, CloseWait::Drain);
                        }
                    }
                    return;
                }
                Err(WsError::Io(e)) if e.kind() == ErrorKind::WouldBlock => return,
                Err(WsError::Io(e)) if e.kind() == ErrorKind::Interrupted => continue,
                Err(
                    WsError::ConnectionClosed
                    | WsError::AlreadyClosed
                    | WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake),
                ) => return self.end_now(ctx, DisconnectReason::Normal),
                Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size })) => {
                    return self.fail_protocol(
                        ctx,
                        CloseCode::Size,
                        &format!("message of {size} bytes exceeds {max_size}"),
                    );
                }
                Err(WsError::Utf8(_)) => {
                    return self.fail_protocol(
                        ctx,
                        CloseCode::Invalid,
                        "invalid UTF-8 in a text message",
                    )
                }
                Err(WsError::Protocol(e)) => {
                    return self.fail_protocol(ctx, CloseCode::Protocol, &e.to_string())
                }
                Err(WsError::Io(_)) => return self.doom(ctx, DisconnectReason::ConnectionError),
                Err(e) => return self.fail_protocol(ctx, CloseCode::Error, &e.to_string()),
            }
        }
    }

    /// Fails the WebSocket connection: a close frame with `code`, then the
    /// socket is closed without reading further frames.
    fn fail_protocol(&mut self, ctx: &mut WorkerCtx, code: CloseCode, why: &str) {
        log::debug!(conn:% = self.key(), peer:% = self.peer, worker = ctx.id, why; "protocol error");
        if self.closing.is_some() {
            return self.end_now(ctx, DisconnectReason::ProtocolError);
        }
        // A close frame's reason must fit in its 125-byte payload.
        self.queue_close_frame(
            code,
            if why.len() <= 120 {
                why
            } else {
                "protocol error"
            },
        );
        self.begin_close(ctx, DisconnectReason::ProtocolError, CloseWait::Drain);
    }

    /// Queues a WebSocket close frame behind everything already in the
    /// output; tungstenite then refuses to send anything else.
    fn queue_close_frame(&mut self, code: CloseCode, reason: &str) {
        if let Phase::WebSocket(session) = &mut self.phase {
            let mut io = WsIo {
                socket: &mut self.socket,
                out: &mut self.out,
                bytes_read: 0,
            };
            let close = CloseFrame {
                code,
                reason: reason.to_string().into(),
            };
            let _ = session.ws.close(&mut io, Some(close));
        }
    }

    // ---- the JSON protocol -------------------------------------------------

    fn reply(&mut self, text: &str) {
        self.messages_out += 1;
        append_text_frame(&mut self.out, text);
    }

    fn reply_error(
        &mut self,
        code: ErrorCode,
        message: &str,
        request_id: Option<&str>,
        topic: Option<&str>,
    ) {
        self.reply(&protocol::encode_error(
            code,
            message,
            request_id,
            topic,
            SystemTime::now(),
        ));
    }

    fn handle_message(&mut self, ctx: &mut WorkerCtx, message: Message) {
        match message {
            Message::Text(text) => self.handle_request(ctx, text.as_str()),
            _ => self.reply_error(
                ErrorCode::BadRequest,
                "binary frames are not accepted; send JSON in text frames",
                None,
                None,
            ),
        }
    }

    /// The Autobahn echo session: the message goes back unchanged, through
    /// the same output buffer and write path as every other frame.
    #[cfg(feature = "autobahn")]
    fn echo(&mut self, message: Message) {
        use tungstenite::protocol::frame::coding::Data;
        self.messages_out += 1;
        match message {
            Message::Text(text) => {
                protocol::append_data_frame(&mut self.out, Data::Text, text.as_bytes())
            }
            Message::Binary(bytes) => {
                protocol::append_data_frame(&mut self.out, Data::Binary, &bytes)
            }
            _ => {}
        }
    }

    fn handle_request(&mut self, ctx: &mut WorkerCtx, text: &str) {
        let request = match protocol::parse_client_frame(text) {
            Ok(request) => request,
            Err(invalid) => {
                return self.reply_error(
                    ErrorCode::BadRequest,
                    &invalid.message,
                    invalid.request_id.as_deref(),
                    invalid.topic.as_deref(),
                )
            }
        };
        let request_id = request.request_id();
        let draining = ctx.shared.draining.load(Ordering::Acquire);
        match &request {
            ClientRequest::Ping { .. } => {
                self.reply(&protocol::encode_pong(request_id, SystemTime::now()));
            }
            ClientRequest::Subscribe { topic, .. } | ClientRequest::Publish { topic, .. }
                if draining =>
            {
                self.reply_error(
                    ErrorCode::ShuttingDown,
                    "the server is shutting down",
                    request_id,
                    Some(topic),
                );
            }
            ClientRequest::Subscribe {
                topic,
                client_id,
                last_n,
                ..
            } => {
                self.subscribe(ctx, topic, client_id, *last_n, request_id);
            }
            ClientRequest::Unsubscribe {
                topic, client_id, ..
            } => {
                self.unsubscribe(ctx, topic, client_id, request_id);
            }
            ClientRequest::Publish { topic, message, .. } => {
                let published = ctx
                    .topics
                    .get(&ctx.shared.broker, topic)
                    .map(|t| t.publish(message, Some(ctx.id)));
                match published {
                    Some(Ok(_)) => {
                        ctx.metrics.record_published();
                        self.reply(&protocol::encode_ack(request_id, topic, SystemTime::now()))
                    }
                    _ => self.reply_topic_not_found(topic, request_id),
                }
            }
        }
    }

    fn reply_topic_not_found(&mut self, topic: &str, request_id: Option<&str>) {
        let message = format!("topic '{topic}' does not exist");
        self.reply_error(ErrorCode::TopicNotFound, &message, request_id, Some(topic));
    }

    fn subscribe(
        &mut self,
        ctx: &mut WorkerCtx,
        name: &str,
        client_id: &str,
        last_n: usize,
        request_id: Option<&str>,
    ) {
        let key = self.key();
        let Phase::WebSocket(session) = &mut self.phase else {
            return;
        };
        session.client_id = Some(client_id.to_string());
        let Some(topic) = ctx.topics.get(&ctx.shared.broker, name).cloned() else {
            return self.reply_topic_not_found(name, request_id);
        };
        let queue = session.queue.get_or_insert_with(|| {
            Arc::new(SubscriberQueue::new(
                ctx.shared.config.subscriber_queue_size,
                key,
                Arc::clone(&ctx.mailbox),
            ))
        });
        session.topics.retain(|t| !t.is_deleted());
        let already_subscribed = session.topics.iter().any(|t| Arc::ptr_eq(t, &topic));
        match topic.subscribe(queue, last_n, already_subscribed) {
            Err(_) => self.reply_topic_not_found(name, request_id),
            Ok(replay) => {
                if !already_subscribed {
                    session.topics.push(topic);
                }
                self.messages_out += replay.len() as u64;
                ctx.metrics.record_delivered(replay.len() as u64);
                self.reply(&protocol::encode_ack(request_id, name, SystemTime::now()));
                for frame in &replay {
                    self.out.extend_from_slice(frame);
                }
            }
        }
    }

    fn unsubscribe(
        &mut self,
        ctx: &mut WorkerCtx,
        name: &str,
        client_id: &str,
        request_id: Option<&str>,
    ) {
        let Phase::WebSocket(session) = &mut self.phase else {
            return;
        };
        session.client_id = Some(client_id.to_string());
        let Some(topic) = ctx.topics.get(&ctx.shared.broker, name).cloned() else {
            return self.reply_topic_not_found(name, request_id);
        };
        if let Some(queue) = &session.queue {
            topic.unsubscribe(queue);
        }
        session
            .topics
            .retain(|t| !Arc::ptr_eq(t, &topic) && !t.is_deleted());
        self.reply(&protocol::encode_ack(request_id, name, SystemTime::now()));
    }

    // ---- writing -------------------------------------------------------------

    /// Publishers queued events for this connection: clear the flag that
    /// keeps them from posting it again, before the flush pops the queue.
    pub fn unschedule(&self) {
        if let Phase::WebSocket(session) = &self.phase {
            if let Some(queue) = &session.queue {
                queue.unschedule();
            }
        }
    }

    /// Writes what is pending, then queued events, until done or the socket
    /// would block; then takes the closing and draining steps that were
    /// waiting for the output to be written.
    pub fn flush(&mut self, ctx: &mut WorkerCtx) {
        loop {
            if self.doomed.is_some() {
                return;
            }
            self.cut_if_slow(ctx);
            if !self.write_output(ctx) {
                return;
            }
            if self.closing.is_none()
                && ctx.draining
                && self.is_websocket()
                && self.queue_is_empty()
            {
                self.send_shutdown(ctx);
                continue;
            }
            if let Some(closing) = &mut self.closing {
                if closing.wait == CloseWait::Drain && !closing.write_shut {
                    closing.write_shut = true;
                    self.socket.shutdown_write();
                }
                if closing.wait == CloseWait::Drain && closing.peer_eof {
                    let reason = closing.reason;
                    return self.doom(ctx, reason);
                }
                return;
            }
            if self.read_paused {
                self.read_paused = false;
                self.on_readable(ctx);
                continue;
            }
            return;
        }
    }

    fn queue_is_empty(&self) -> bool {
        match &self.phase {
            Phase::WebSocket(session) => session.queue.as_ref().is_none_or(|q| q.is_empty()),
            Phase::Http { .. } => true,
        }
    }

    /// Writes the output buffer, then (unless closing) queued events gathered
    /// into large writes. Returns false if the socket would block or failed.
    fn write_output(&mut self, ctx: &mut WorkerCtx) -> bool {
        loop {
            while self.out_pos < self.out.len() {
                match self.socket.write(&self.out[self.out_pos..]) {
                    Ok(0) => {
                        self.doom(ctx, DisconnectReason::ConnectionError);
                        return false;
                    }
                    Ok(n) => {
                        self.out_pos += n;
                        ctx.metrics.record_sent(n);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        self.end_now(ctx, DisconnectReason::ConnectionError);
                        return false;
                    }
                }
            }
            self.out.clear();
            self.out_pos = 0;
            if self.out.capacity() > OUTPUT_KEEP_CAPACITY {
                self.out = Vec::new();
            }
            if self.closing.is_some() {
                return true;
            }
            let Phase::WebSocket(session) = &mut self.phase else {
                return true;
            };
            let Some(queue) = &session.queue else {
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
            self.messages_out += frames;
            ctx.metrics.record_delivered(frames);
            // Write the batch straight from the batch buffer; only what the
            // socket does not take is copied into the connection's buffer.
            let mut written = 0;
            while written < ctx.batch.len() {
                match self.socket.write(&ctx.batch[written..]) {
                    Ok(0) => {
                        self.doom(ctx, DisconnectReason::ConnectionError);
                        return false;
                    }
                    Ok(n) => {
                        written += n;
                        ctx.metrics.record_sent(n);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        self.doom(ctx, DisconnectReason::ConnectionError);
                        return false;
                    }
                }
            }
            if written < ctx.batch.len() {
                self.out.extend_from_slice(&ctx.batch[written..]);
                return false;
            }
        }
    }

    /// A publisher found this connection's queue full: drop what is queued,
    /// leave every topic, send `SLOW_CONSUMER` and close with 1008.
    fn cut_if_slow(&mut self, ctx: &mut WorkerCtx) {
        if self.closing.is_some() {
            return;
        }
        let Phase::WebSocket(session) = &mut self.phase else {
            return;
        };
        let Some(queue) = &session.queue else { return };
        if !queue.is_slow() {
            return;
        }
        queue.clear();
        for topic in session.topics.drain(..) {
            topic.unsubscribe(queue);
        }
        let limit = ctx.shared.config.subscriber_queue_size;
        let text = protocol::encode_error(
            ErrorCode::SlowConsumer,
            &format!("more than {limit} events were waiting to be read; the connection is closed"),
            None,
            None,
            SystemTime::now(),
        );
        append_text_frame(&mut self.out, &text);
        log::warn!(
            conn:% = ConnectionKey { slot: self.slot, generation: self.generation }, peer:% = self.peer,
            worker = ctx.id, client_id = session.client_id.as_deref().unwrap_or("-"), queue_size = limit;
            "slow consumer"
        );
        self.queue_close_frame(CloseCode::Policy, "SLOW_CONSUMER");
        self.begin_close(ctx, DisconnectReason::SlowConsumer, CloseWait::Drain);
    }

    /// Shutdown: `info server_shutdown` and a close frame with 1001, then
    /// wait briefly for the peer's close.
    pub fn send_shutdown(&mut self, ctx: &mut WorkerCtx) {
        let Phase::WebSocket(session) = &mut self.phase else {
            return;
        };
        if session.shutdown_sent || self.closing.is_some() {
            return;
        }
        session.shutdown_sent = true;
        if let Some(queue) = &session.queue {
            queue.close();
        }
        append_text_frame(
            &mut self.out,
            &protocol::encode_info("server_shutdown", None, SystemTime::now()),
        );
        self.queue_close_frame(CloseCode::Away, "server shutting down");
        self.begin_close(ctx, DisconnectReason::Shutdown, CloseWait::PeerCloseFrame);
    }

    /// The drain deadline passed: whatever is still queued is dropped.
    pub fn force_shutdown(&mut self, ctx: &mut WorkerCtx) {
        match &self.phase {
            Phase::WebSocket(session) => {
                if let Some(queue) = &session.queue {
                    queue.clear();
                }
                self.send_shutdown(ctx);
            }
            Phase::Http { .. } => self.doom(ctx, DisconnectReason::Shutdown),
        }
    }

    /// The worker's WebSocket connections have all drained: an HTTP
    /// connection gets its last response out and closes.
    pub fn close_if_http(&mut self, ctx: &mut WorkerCtx) {
        if !self.is_websocket() {
            self.begin_close(ctx, DisconnectReason::Shutdown, CloseWait::Drain);
        }
    }

    // ---- timers --------------------------------------------------------------

    fn arm_session_timer(&mut self, ctx: &mut WorkerCtx) {
        if let Phase::WebSocket(session) = &self.phase {
            let dead_at = self.last_input + 3 * ctx.shared.config.heartbeat_interval;
            let at = session.next_ping.min(dead_at);
            ctx.timers
                .arm(&mut self.timer, at, self.slot, self.generation);
        }
    }

    /// The connection's deadline came: close it, or send a heartbeat, and
    /// arm the next deadline.
    pub fn on_timer(&mut self, ctx: &mut WorkerCtx) {
        self.timer = None;
        if self.doomed.is_some() {
            return;
        }
        if let Some(closing) = &self.closing {
            if ctx.now >= closing.deadline {
                let reason = closing.reason;
                return self.doom(ctx, reason);
            }
            let deadline = closing.deadline;
            return ctx
                .timers
                .arm(&mut self.timer, deadline, self.slot, self.generation);
        }
        let interval = ctx.shared.config.heartbeat_interval;
        match &mut self.phase {
            Phase::Http {
                request_started, ..
            } => {
                let deadline = *request_started + ctx.shared.config.handshake_timeout;
                if ctx.now >= deadline {
                    log::debug!(
                        conn:% = ConnectionKey { slot: self.slot, generation: self.generation },
                        peer:% = self.peer, worker = ctx.id;
                        "no request within the handshake timeout"
                    );
                    return self.doom(ctx, DisconnectReason::HandshakeTimeout);
                }
                ctx.timers
                    .arm(&mut self.timer, deadline, self.slot, self.generation);
            }
            Phase::WebSocket(session) => {
                if ctx.now >= self.last_input + 3 * interval {
                    return self.doom(ctx, DisconnectReason::DeadPeer);
                }
                if ctx.now >= session.next_ping {
                    session.next_ping = ctx.now + interval;
                    append_text_frame(
                        &mut self.out,
                        &protocol::encode_info("ping", None, SystemTime::now()),
                    );
                    let mut io = WsIo {
                        socket: &mut self.socket,
                        out: &mut self.out,
                        bytes_read: 0,
                    };
                    let _ = session.ws.write(&mut io, Message::Ping(Default::default()));
                    let _ = session.ws.flush(&mut io);
                }
                self.arm_session_timer(ctx);
            }
        }
    }

    // ---- the end -------------------------------------------------------------

    /// Leaves every topic, counts and logs the close; called by the worker
    /// when it reaps the connection.
    pub fn release(&mut self, ctx: &WorkerCtx, reason: DisconnectReason) {
        let (kind, client_id) = match &mut self.phase {
            Phase::WebSocket(session) => {
                if let Some(queue) = &session.queue {
                    queue.close();
                    for topic in session.topics.drain(..) {
                        topic.unsubscribe(queue);
                    }
                }
                (ConnectionKind::WebSocket, session.client_id.take())
            }
            Phase::Http { .. } => (ConnectionKind::Http, None),
        };
        ctx.metrics.record_closed(kind, reason);
        log::info!(
            conn:% = self.key(), peer:% = self.peer, worker = ctx.id,
            kind = if kind == ConnectionKind::WebSocket { "websocket" } else { "http" },
            reason = reason.as_str(), client_id = client_id.as_deref().unwrap_or("-"),
            messages_in = self.messages_in, messages_out = self.messages_out,
            lifetime_ms = self.opened.elapsed().as_millis() as u64;
            "connection closed"
        );
    }
}
