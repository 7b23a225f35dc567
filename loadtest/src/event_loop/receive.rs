//! The receive path: draining a connection's socket into the thread's
//! scratch buffer (decrypted on the way, for `wss://`), finishing a
//! reconnect's upgrade, parsing WebSocket frames, and handling each
//! message (pubsub JSON or NATS): deliveries (order check, counts,
//! latency), acks, errors, pings. It must not allocate once buffers have
//! grown, must not write to [`super::Shared`] (progress goes out once per
//! turn, in `record`), and writes to a socket only to answer a ping, a
//! close, or the TLS layer (handshake messages, alerts, key updates).

use super::conn::{io_reason, Conn, DropQueue, Handshake, Role, Subscriber};
use super::{LoopThread, Window, READ_CHUNK};
use crate::endpoint::TargetKind;
use crate::nats::{self, NatsEvent, NatsParser};
use crate::probe::ProbeFinder;
use crate::sequence::Arrival;
use crate::tally::Tally;
use crate::tls;
use crate::wire;
use crate::wsframe::{self, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT};
use std::io::{ErrorKind, Read};

/// How a message (or the bytes around it) ended a connection.
enum Closed {
    ByServer(Option<u16>),
    Protocol(String),
}

impl LoopThread {
    /// Reads everything the socket holds (`from_socket`) or only what is
    /// already in the connection's carry buffer, and handles each frame.
    pub(super) fn read_connection(&mut self, index: usize, from_socket: bool) {
        let Some(conn) = self.conns.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        if !conn.open {
            return;
        }
        if matches!(conn.handshake, Some(Handshake::Connecting { .. })) {
            // Nothing to read yet; a failed connect may show as an error
            // event only.
            self.write_connection(index);
            return;
        }
        let mut ctx = Receiver {
            kind: self.kind,
            window: &self.window,
            finder: &self.finder,
            tally: &mut self.tally,
            touched: &mut self.touched,
            drops: &mut self.drops,
            conn_index: index,
        };
        let ended = loop {
            let carried = conn.carry.len();
            if self.scratch.len() < carried + READ_CHUNK {
                self.scratch.resize(carried + READ_CHUNK, 0);
            }
            self.scratch[..carried].copy_from_slice(&conn.carry);
            let mut drained = false;
            let filled = if from_socket {
                let buf = &mut self.scratch[carried..];
                // A short read emptied the socket: skip the read that
                // would only say WouldBlock. Data arriving later raises a
                // new edge (epoll signals every arrival), as tokio also
                // relies on. Over TLS, `tls::read` says when the socket
                // is empty.
                let read = match conn.tls.as_deref_mut() {
                    None => conn.stream.read(buf).map(|n| (n, n < buf.len())),
                    Some(tls) => tls::read(tls, &mut conn.stream, buf),
                };
                match read {
                    Ok((0, _)) => break Some("eof".to_string()),
                    Ok((n, empty)) => {
                        drained = empty;
                        carried + n
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break None,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => break Some(io_reason(&e)),
                }
            } else {
                carried
            };
            let now_ns = self.shared.now_ns();
            let upgraded = match conn.finish_upgrade(&self.scratch[..filled], &self.topics) {
                Ok(upgraded) => upgraded,
                Err(reason) => break Some(reason),
            };
            let parsed = match upgraded {
                Some(start) => ctx
                    .frames(conn, &self.scratch[start..filled], now_ns)
                    .map(|used| start + used),
                None => Ok(0),
            };
            match parsed {
                Ok(used) => {
                    conn.carry.clear();
                    conn.carry.extend_from_slice(&self.scratch[used..filled]);
                }
                Err(Closed::ByServer(code)) => {
                    // Answer the close; the socket is dropped right after.
                    wsframe::append_client_frame(
                        &mut conn.out,
                        OP_CLOSE,
                        &code.unwrap_or(1000).to_be_bytes(),
                    );
                    let _ = conn.flush();
                    break Some(match code {
                        Some(code) => format!("close {code}"),
                        None => "close".to_string(),
                    });
                }
                Err(Closed::Protocol(error)) => break Some(format!("protocol error: {error}")),
            }
            if !from_socket || drained {
                break None;
            }
        };
        let pong_pending = conn.pending_out() > 0;
        match ended {
            Some(reason) => self.close(index, reason),
            None if pong_pending => self.write_connection(index),
            None => {}
        }
    }
}

/// What handling received frames needs from the thread.
struct Receiver<'a> {
    kind: TargetKind,
    window: &'a Window,
    finder: &'a ProbeFinder,
    tally: &'a mut Tally,
    touched: &'a mut Vec<usize>,
    drops: &'a mut DropQueue,
    /// The connection whose bytes are being handled.
    conn_index: usize,
}

impl Receiver<'_> {
    /// Handles every complete frame at the front of `buf`; returns the
    /// bytes consumed.
    fn frames(&mut self, conn: &mut Conn, buf: &[u8], now_ns: u64) -> Result<usize, Closed> {
        let mut used = 0;
        loop {
            let rest = &buf[used..];
            let head = match wsframe::parse_server_frame(rest) {
                Ok(Some(head)) => head,
                Ok(None) => return Ok(used),
                Err(e) => return Err(Closed::Protocol(e.to_string())),
            };
            let payload = head.payload(rest);
            match head.opcode {
                OP_TEXT | OP_BINARY if head.fin && !conn.in_fragmented_message => {
                    self.message(conn, payload, now_ns)?;
                }
                OP_TEXT | OP_BINARY if !conn.in_fragmented_message => {
                    conn.in_fragmented_message = true;
                    conn.fragments.clear();
                    conn.fragments.extend_from_slice(payload);
                }
                OP_CONTINUATION if conn.in_fragmented_message => {
                    conn.fragments.extend_from_slice(payload);
                    if head.fin {
                        conn.in_fragmented_message = false;
                        let message = std::mem::take(&mut conn.fragments);
                        let handled = self.message(conn, &message, now_ns);
                        conn.fragments = message;
                        handled?;
                    }
                }
                OP_TEXT | OP_BINARY | OP_CONTINUATION => {
                    return Err(Closed::Protocol("bad fragmentation".into()));
                }
                OP_PING => wsframe::append_client_frame(&mut conn.out, OP_PONG, payload),
                OP_CLOSE => return Err(Closed::ByServer(wsframe::close_code(payload))),
                _ => {}
            }
            used += head.frame_len();
        }
    }

    /// One complete data message.
    fn message(&mut self, conn: &mut Conn, message: &[u8], now_ns: u64) -> Result<(), Closed> {
        match self.kind {
            TargetKind::Pubsub => {
                match wire::message_type(message) {
                    b"event" => self.delivery(&mut conn.role, message, now_ns),
                    b"ack" => self.ack(&mut conn.role, message, now_ns)?,
                    b"error" => self
                        .tally
                        .record_error(wire::error_code(message).unwrap_or(b"unknown")),
                    _ => {}
                }
                Ok(())
            }
            TargetKind::Nats => {
                let Conn {
                    nats, role, out, ..
                } = conn;
                let parser = nats.get_or_insert_with(NatsParser::default);
                parser
                    .feed(message, |event| match event {
                        NatsEvent::Msg { payload, .. } => self.delivery(role, payload, now_ns),
                        NatsEvent::Ping => wsframe::append_client_frame(out, OP_BINARY, nats::PONG),
                        NatsEvent::Err(text) => self.tally.record_error(text),
                        NatsEvent::Info(_) | NatsEvent::Pong | NatsEvent::Ok => {}
                    })
                    .map_err(|e| Closed::Protocol(e.to_string()))
            }
        }
    }

    /// A publish ack, or a resuming subscriber's subscribe ack: its drop is
    /// scheduled from then.
    fn ack(&mut self, role: &mut Role, message: &[u8], now_ns: u64) -> Result<(), Closed> {
        let Role::Subscriber(Subscriber {
            stream: Some(stream),
            ..
        }) = role
        else {
            self.tally.acks += 1;
            return Ok(());
        };
        let resumed = stream
            .acked(message, now_ns, &mut self.tally.resume)
            .map_err(Closed::Protocol)?;
        if resumed {
            let at = stream.next_drop_ns(now_ns);
            self.drops.schedule(at, self.conn_index, self.window.end_ns);
        }
        Ok(())
    }

    /// One delivery to a subscriber: order check, counts, latency.
    fn delivery(&mut self, role: &mut Role, bytes: &[u8], now_ns: u64) {
        let Role::Subscriber(subscriber) = role else {
            self.tally.malformed += 1;
            return;
        };
        let Some(probe) = self.finder.find(bytes) else {
            self.tally.malformed += 1;
            return;
        };
        let arrival = match subscriber.stream.as_mut() {
            Some(stream) => {
                let Some(seq) = wire::event_seq(bytes) else {
                    self.tally.malformed += 1;
                    return;
                };
                stream.observe(seq, now_ns, &mut self.tally.resume)
            }
            None => {
                let Some(check) = subscriber.checks.get_mut(probe.publisher as usize) else {
                    self.tally.malformed += 1;
                    return;
                };
                check.observe(probe.counter)
            }
        };
        match arrival {
            Arrival::Duplicate => {
                self.tally.duplicates += 1;
                return;
            }
            Arrival::Late => self.tally.out_of_order += 1,
            Arrival::Gap(missing) => self.tally.gaps += missing,
            Arrival::InOrder => {}
        }
        if !subscriber.touched {
            subscriber.touched = true;
            self.touched.push(self.conn_index);
        }
        self.tally.delivered += 1;
        if self.window.measures(probe.sent_ns) {
            self.tally.delivered_measured += 1;
            self.tally
                .latency
                .saturating_record(now_ns.saturating_sub(probe.sent_ns));
        }
    }
}
