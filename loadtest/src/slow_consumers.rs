//! Subscribers that stop reading, for the `slow` scenario: each subscribes
//! with a small `SO_RCVBUF` and is then left alone, so the server's queue
//! for it overflows. After the run each one is read out to learn what the
//! server did: cut it (an `SLOW_CONSUMER` error, a close frame, EOF or a
//! reset) or kept it open.

use crate::connect::{self, Opened, SocketOptions};
use crate::nats::NatsEvent;
use crate::nodes::Nodes;
use crate::tls::BlockingStream;
use crate::wire;
use crate::wsframe::{self, OP_BINARY, OP_CLOSE, OP_TEXT};
use anyhow::Result;
use serde::Serialize;
use std::io::{ErrorKind, Read};
use std::time::{Duration, Instant};

/// A read that waits this long without data means the server kept the
/// connection open.
const QUIET: Duration = Duration::from_millis(500);
/// Reading out one connection takes at most this long.
const READ_OUT_LIMIT: Duration = Duration::from_secs(3);

/// What happened to the slow subscribers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SlowOutcome {
    pub slow_subscribers: u64,
    /// Connections the server closed (by any sign below).
    pub cut: u64,
    /// Connections that received the `SLOW_CONSUMER` error (pubsub) or a
    /// `-ERR` naming a slow consumer (NATS).
    pub slow_consumer_errors: u64,
    /// Connections that received a close frame with code 1008.
    pub close_1008: u64,
    /// Connections still open after the run.
    pub still_open: u64,
    /// Events that reached the slow subscribers before they were cut.
    pub events_read: u64,
}

/// Opens `count` slow subscribers spread over `topics`, numbered from
/// `first_id` (after the reading ones), each on its node.
pub fn open(
    nodes: &Nodes,
    topics: &[String],
    count: usize,
    recv_buffer: usize,
    first_id: u64,
    deadline: Instant,
) -> Result<Vec<Opened>> {
    (0..count)
        .map(|i| {
            let id = first_id + i as u64;
            connect::open_subscriber(
                &nodes.endpoints()[nodes.subscriber_node(id as usize)],
                SocketOptions {
                    source: None,
                    recv_buffer: Some(recv_buffer),
                },
                &topics[i % topics.len()],
                id,
                deadline,
            )
        })
        .collect()
}

/// Reads every slow subscriber out and sums up what the server did.
pub fn read_out(connections: Vec<Opened>) -> SlowOutcome {
    let mut outcome = SlowOutcome {
        slow_subscribers: connections.len() as u64,
        ..SlowOutcome::default()
    };
    for connection in connections {
        let fate = read_one(connection);
        outcome.cut += u64::from(fate.cut);
        outcome.slow_consumer_errors += u64::from(fate.slow_consumer_error);
        outcome.close_1008 += u64::from(fate.close_1008);
        outcome.still_open += u64::from(!fate.cut);
        outcome.events_read += fate.events;
    }
    outcome
}

#[derive(Default)]
struct Fate {
    cut: bool,
    slow_consumer_error: bool,
    close_1008: bool,
    events: u64,
}

fn read_one(connection: Opened) -> Fate {
    let Opened {
        stream,
        tls,
        unread: mut buf,
        nats,
        ..
    } = connection;
    let mut stream = BlockingStream::from_parts(stream, tls);
    let mut nats = nats;
    let mut fate = Fate::default();
    if stream.socket().set_read_timeout(Some(QUIET)).is_err() {
        return fate;
    }
    let limit = Instant::now() + READ_OUT_LIMIT;
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let mut used = 0;
        while let Ok(Some(head)) = wsframe::parse_server_frame(&buf[used..]) {
            let payload = head.payload(&buf[used..]);
            match head.opcode {
                OP_TEXT | OP_BINARY => match nats.as_mut() {
                    None => match wire::message_type(payload) {
                        b"event" => fate.events += 1,
                        b"error" if wire::error_code(payload) == Some(b"SLOW_CONSUMER") => {
                            fate.slow_consumer_error = true;
                        }
                        _ => {}
                    },
                    Some(parser) => {
                        let fed = parser.feed(payload, |event| match event {
                            NatsEvent::Msg { .. } => fate.events += 1,
                            NatsEvent::Err(text) if is_nats_slow_consumer(text) => {
                                fate.slow_consumer_error = true;
                            }
                            _ => {}
                        });
                        if fed.is_err() {
                            fate.cut = true;
                            return fate;
                        }
                    }
                },
                OP_CLOSE => {
                    fate.cut = true;
                    fate.close_1008 = wsframe::close_code(payload) == Some(1008);
                    return fate;
                }
                _ => {}
            }
            used += head.frame_len();
        }
        buf.drain(..used);
        if Instant::now() > limit {
            return fate;
        }
        match stream.read(&mut chunk) {
            Ok(0) => {
                fate.cut = true;
                return fate;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return fate
            }
            Err(_) => {
                fate.cut = true;
                return fate;
            }
        }
    }
}

fn is_nats_slow_consumer(text: &[u8]) -> bool {
    text.to_ascii_lowercase()
        .windows(b"slow consumer".len())
        .any(|w| w == b"slow consumer")
}
