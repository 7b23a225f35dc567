//! One connection's state: its socket and, for `wss://`, its TLS session,
//! read carry and fragment buffers, output buffer and its flushing
//! (through TLS or not: one branch), its role (subscriber or publisher) and,
//! while a resuming subscriber reconnects, its handshake step; also the
//! thread's schedule of resume drops. It must not reach the loop thread or
//! [`super::Shared`]: it imports no sibling, and everything above uses it.

use crate::connect;
use crate::nats::NatsParser;
use crate::resume::ResumeStream;
use crate::sequence::SequenceCheck;
use crate::tls;
use crate::wsframe::{self, OP_CLOSE, OP_TEXT};
use rustls::ClientConnection;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, ErrorKind, Write};

/// A publisher stops generating while this much is waiting to be written.
pub(super) const OUT_HIGH_WATER: usize = 256 << 10;

/// Resuming subscribers' next drops (time in ns, connection index),
/// soonest first.
#[derive(Default)]
pub(super) struct DropQueue(BinaryHeap<Reverse<(u64, usize)>>);

impl DropQueue {
    /// Drops connection `index` at `at_ns`, unless that is not before
    /// `end_ns`: no drop after publishing ends.
    pub(super) fn schedule(&mut self, at_ns: u64, index: usize, end_ns: u64) {
        if at_ns < end_ns {
            self.0.push(Reverse((at_ns, index)));
        }
    }

    pub(super) fn next_ns(&self) -> Option<u64> {
        self.0.peek().map(|&Reverse((at, _))| at)
    }

    /// The next connection due to be dropped by `now_ns`.
    pub(super) fn pop_due(&mut self, now_ns: u64) -> Option<usize> {
        if self.next_ns()? > now_ns {
            return None;
        }
        self.0.pop().map(|Reverse((_, index))| index)
    }
}

pub(super) struct Conn {
    pub(super) stream: mio::net::TcpStream,
    /// `wss://`: the TLS session every byte goes through.
    pub(super) tls: Option<Box<ClientConnection>>,
    pub(super) role: Role,
    /// A frame that the last read cut short.
    pub(super) carry: Vec<u8>,
    /// A fragmented data message being put together.
    pub(super) fragments: Vec<u8>,
    pub(super) in_fragmented_message: bool,
    pub(super) nats: Option<NatsParser>,
    /// Bytes to write (publishes, pongs) and how many are already written.
    pub(super) out: Vec<u8>,
    pub(super) out_written: usize,
    pub(super) open: bool,
    /// A resuming subscriber's new connection, not yet upgraded.
    pub(super) handshake: Option<Handshake>,
}

/// How far a resuming subscriber's new connection is.
pub(super) enum Handshake {
    /// The TCP connect to this node is in progress.
    Connecting { node: usize },
    /// The upgrade request (with this key) is sent.
    Upgrading { key: String },
}

pub(super) enum Role {
    Subscriber(Subscriber),
    Publisher(Publisher),
}

pub(super) struct Subscriber {
    pub(super) id: usize,
    pub(super) topic: usize,
    /// The node it is connected (or reconnecting) to.
    pub(super) node: usize,
    /// Listed in `LoopThread::touched` this turn.
    pub(super) touched: bool,
    /// Per publisher.
    pub(super) checks: Vec<SequenceCheck>,
    /// `resume`: the topic's stream across reconnects; order is then
    /// checked by `seq`, not by `checks`.
    pub(super) stream: Option<ResumeStream>,
}

pub(super) struct Publisher {
    pub(super) id: usize,
    /// Messages generated so far.
    pub(super) generated: u64,
    /// Per topic: this publisher's next counter (`lt_n`).
    pub(super) counters: Vec<u64>,
    /// Messages stamped inside the measured window, and the deliveries
    /// expected for them (mirrored in `PublisherCounters`).
    pub(super) published_measured: u64,
    pub(super) expected_measured: u64,
    /// Closed loop: the first message not yet delivered to every live
    /// subscriber, as last computed.
    pub(super) oldest_undelivered: u64,
    pub(super) finished: bool,
}

impl Conn {
    /// Whether a non-blocking connect has completed; its error if it
    /// failed.
    pub(super) fn connected(&self) -> io::Result<bool> {
        if let Some(error) = self.stream.take_error()? {
            return Err(error);
        }
        match self.stream.peer_addr() {
            Ok(_) => {
                self.stream.set_nodelay(true)?;
                Ok(true)
            }
            Err(e) if e.kind() == ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// While the upgrade is awaited: checks the response at the start of
    /// `buf` and once it is whole, queues the resume subscribe. Returns
    /// where WebSocket frames start in `buf` (0 if there was no upgrade to
    /// finish), or `None` while the response is incomplete.
    pub(super) fn finish_upgrade(
        &mut self,
        buf: &[u8],
        topics: &[String],
    ) -> Result<Option<usize>, String> {
        let Some(Handshake::Upgrading { key }) = &self.handshake else {
            return Ok(Some(0));
        };
        let Some(head_len) =
            connect::upgrade_response(buf, key).map_err(|e| format!("reconnect: {e:#}"))?
        else {
            return Ok(None);
        };
        self.handshake = None;
        if let Role::Subscriber(Subscriber {
            id,
            topic,
            stream: Some(stream),
            ..
        }) = &self.role
        {
            let mut request = Vec::new();
            stream.append_request(&mut request, &topics[*topic], *id as u64);
            wsframe::append_client_frame(&mut self.out, OP_TEXT, &request);
        }
        Ok(Some(head_len))
    }

    pub(super) fn pending_out(&self) -> usize {
        self.out.len() - self.out_written
    }

    /// Writes pending output until done or the socket is full (over TLS:
    /// until rustls has taken it all and written its records, or the
    /// socket is full).
    pub(super) fn flush(&mut self) -> io::Result<()> {
        match self.tls.as_deref_mut() {
            None => {
                while self.out_written < self.out.len() {
                    match self.stream.write(&self.out[self.out_written..]) {
                        Ok(0) => return Err(ErrorKind::WriteZero.into()),
                        Ok(n) => self.out_written += n,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    }
                }
            }
            Some(tls) => {
                self.out_written +=
                    tls::write(tls, &mut self.stream, &self.out[self.out_written..])?;
            }
        }
        if self.out_written == self.out.len() {
            self.out.clear();
            self.out_written = 0;
        } else if self.out_written >= OUT_HIGH_WATER {
            self.out.drain(..self.out_written);
            self.out_written = 0;
        }
        Ok(())
    }

    /// Replaces any pending output by a close frame with `code` (over TLS,
    /// followed by close_notify) and writes what the socket takes: a clean
    /// close, best effort.
    pub(super) fn send_close(&mut self, code: u16) {
        self.out.clear();
        self.out_written = 0;
        wsframe::append_client_frame(&mut self.out, OP_CLOSE, &code.to_be_bytes());
        let _ = self.flush();
        if let Some(tls) = self.tls.as_deref_mut() {
            tls.send_close_notify();
            let _ = tls::write_pending(tls, &mut self.stream);
        }
    }
}

pub(super) fn io_reason(error: &io::Error) -> String {
    match error.kind() {
        ErrorKind::ConnectionReset => "reset".to_string(),
        ErrorKind::BrokenPipe => "broken pipe".to_string(),
        _ => format!("io error: {error}"),
    }
}
