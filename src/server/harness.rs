//! One connection driven by hand, without sockets: the same state machine
//! the worker runs (`Connection`), over an in-memory transport, with the
//! worker's own per-turn steps (read, take posts, fire timers, flush, reap)
//! done by the caller. For fuzzing (`fuzz/`) and for tests that replay the
//! inputs the fuzzer found; not built into the broker.

use super::connection::{Connection, Transport};
use super::context::WorkerCtx;
use super::Shared;
use crate::broker::delivery::WorkerMailbox;
use crate::config::Config;
use std::io::{self, ErrorKind, Read, Write};
use std::sync::Arc;
use std::time::Duration;

/// Input the test has supplied, and output the connection wrote. Reading
/// past the supplied input would block, as on a non-blocking socket.
#[derive(Default)]
pub struct MemoryTransport {
    input: Vec<u8>,
    read_pos: usize,
    end_of_input: bool,
    output: Vec<u8>,
    write_shut: bool,
    /// How many bytes the next writes may take before blocking.
    write_room: Option<usize>,
}

impl Read for MemoryTransport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = &self.input[self.read_pos..];
        if left.is_empty() {
            return if self.end_of_input {
                Ok(0)
            } else {
                Err(ErrorKind::WouldBlock.into())
            };
        }
        let n = left.len().min(buf.len());
        buf[..n].copy_from_slice(&left[..n]);
        self.read_pos += n;
        Ok(n)
    }
}

impl Write for MemoryTransport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.write_shut {
            return Err(ErrorKind::BrokenPipe.into());
        }
        let n = match self.write_room {
            Some(0) => return Err(ErrorKind::WouldBlock.into()),
            Some(room) => {
                let n = room.min(buf.len());
                self.write_room = Some(room - n);
                n
            }
            None => buf.len(),
        };
        self.output.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for MemoryTransport {
    fn shutdown_write(&mut self) {
        self.write_shut = true;
    }
}

/// A broker of one worker with one connection on it.
pub struct ConnectionDriver {
    ctx: WorkerCtx,
    conn: Option<Connection<MemoryTransport>>,
}

impl ConnectionDriver {
    pub fn new(config: Config) -> ConnectionDriver {
        let shared = Arc::new(
            Shared::new(config, vec![WorkerMailbox::unpolled()]).expect("a local backplane"),
        );
        let mut ctx = WorkerCtx::new(0, shared);
        let peer = "127.0.0.1:9".parse().expect("a valid address");
        let conn = Connection::new(MemoryTransport::default(), 0, 1, peer, &mut ctx);
        ConnectionDriver {
            ctx,
            conn: Some(conn),
        }
    }

    /// Creates a topic, as `POST /topics` would.
    pub fn create_topic(&self, name: &str) {
        let _ = self.ctx.shared.broker.create_topic(name);
    }

    /// The peer sends `bytes`; then one loop turn.
    pub fn send(&mut self, bytes: &[u8]) {
        if let Some(conn) = &mut self.conn {
            conn.socket_mut().input.extend_from_slice(bytes);
        }
        self.turn(true);
    }

    /// The peer closes its side; then one loop turn.
    pub fn send_end_of_stream(&mut self) {
        if let Some(conn) = &mut self.conn {
            conn.socket_mut().end_of_input = true;
        }
        self.turn(true);
    }

    /// From now on the peer's receive window takes `bytes` more, then
    /// writes block (None: unlimited); then one loop turn.
    pub fn set_write_room(&mut self, bytes: Option<usize>) {
        if let Some(conn) = &mut self.conn {
            conn.socket_mut().write_room = bytes;
        }
        self.turn(false);
    }

    /// Time passes; due timers fire in a loop turn.
    pub fn advance(&mut self, by: Duration) {
        self.ctx.now += by;
        self.turn(false);
    }

    /// One loop turn, as the worker runs it, and the turns after it while
    /// the connection has input left over from its read budget.
    fn turn(&mut self, mut readable: bool) {
        loop {
            let Some(conn) = &mut self.conn else { return };
            if readable {
                conn.on_readable(&mut self.ctx);
            }
            let mut posts = Vec::new();
            self.ctx.mailbox.drain(&mut posts);
            if !posts.is_empty() {
                conn.unschedule();
            }
            while let Some(entry) = self.ctx.timers.pop_due(self.ctx.now) {
                if conn.timer == Some(entry.at) {
                    conn.on_timer(&mut self.ctx);
                }
            }
            conn.flush(&mut self.ctx);
            if conn.is_ended() {
                conn.release(&self.ctx);
                self.ctx.ended.clear();
                self.conn = None;
                return;
            }
            readable = !self.ctx.read_next_turn.is_empty();
            self.ctx.read_next_turn.clear();
            if !readable {
                return;
            }
        }
    }

    /// Everything the connection has written so far.
    pub fn output(&mut self) -> &[u8] {
        self.conn.as_mut().map_or(&[], |c| &c.socket_mut().output)
    }

    /// Bytes the peer sent that the connection has not read yet.
    pub fn unread_input(&mut self) -> usize {
        self.conn.as_mut().map_or(0, |c| {
            let t = c.socket_mut();
            t.input.len() - t.read_pos
        })
    }

    /// True once the connection was reaped.
    pub fn is_closed(&self) -> bool {
        self.conn.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPGRADE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

    fn masked(text: &str) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let mut frame = vec![0x81, 0x80 | text.len() as u8];
        frame.extend_from_slice(&mask);
        frame.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        frame
    }

    #[test]
    fn a_whole_session_runs_without_sockets() {
        let mut driver = ConnectionDriver::new(Config::loopback());
        driver.create_topic("t");
        driver.send(b"GET /topics HTTP/1.1\r\n\r\n");
        assert!(String::from_utf8_lossy(driver.output())
            .contains(r#"{"topics":[{"name":"t","subscribers":0}]}"#));
        driver.send(UPGRADE);
        driver.send(&masked(
            r#"{"type":"subscribe","topic":"t","client_id":"c"}"#,
        ));
        driver.send(&masked(
            r#"{"type":"publish","topic":"t","message":{"id":"m","payload":1}}"#,
        ));
        let text = String::from_utf8_lossy(driver.output()).into_owned();
        assert!(text.contains("101 Switching Protocols"));
        assert_eq!(text.matches(r#""type":"ack""#).count(), 2, "{text}");
        assert!(
            text.contains(r#""type":"event","topic":"t","message":{"id":"m","payload":1},"seq":1"#),
            "{text}"
        );
        driver.send_end_of_stream();
        assert!(driver.is_closed());
    }

    #[test]
    fn a_peer_that_never_reads_is_paused_not_buffered_without_bound() {
        let mut driver = ConnectionDriver::new(Config::loopback());
        driver.send(UPGRADE);
        driver.set_write_room(Some(0));
        let ping = masked(r#"{"type":"ping"}"#);
        for _ in 0..20_000 {
            driver.send(&ping);
        }
        let unread = driver.unread_input();
        assert!(
            unread > 0,
            "a peer that does not read is not read from either"
        );
        assert!(
            20_000 * ping.len() - unread < 2 * 256 * 1024,
            "at most about the high-water mark of replies is buffered"
        );
        driver.set_write_room(None);
        driver.send(b"");
        assert_eq!(
            driver.unread_input(),
            0,
            "reading resumes once the replies are out"
        );
        let pongs = String::from_utf8_lossy(driver.output())
            .matches(r#""type":"pong""#)
            .count();
        assert_eq!(pongs, 20_000);
    }

    #[test]
    fn handshake_timeout_and_heartbeats_fire() {
        let mut driver = ConnectionDriver::new(Config::loopback());
        driver.send(b"GET /he");
        driver.advance(Duration::from_secs(11));
        assert!(
            driver.is_closed(),
            "no request within HANDSHAKE_TIMEOUT_SECS"
        );

        let mut driver = ConnectionDriver::new(Config::loopback());
        driver.send(UPGRADE);
        driver.advance(Duration::from_secs(31));
        assert!(String::from_utf8_lossy(driver.output()).contains(r#""msg":"ping""#));
        driver.advance(Duration::from_secs(60));
        assert!(driver.is_closed(), "silent for three intervals: dead");
    }
}

/// Replays the inputs saved under `fuzz/regressions/connection/` through the
/// body of the `connection` fuzz target (`fuzz/logic/connection.rs`, shared
/// word for word). See fuzz/README.md.
#[cfg(test)]
mod fuzz_regressions {
    use crate as pubsub;

    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fuzz/logic/connection.rs"
    ));

    #[test]
    fn connection_inputs() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/connection");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("a directory entry").path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no inputs in {}", dir.display());
        for file in files {
            eprintln!("replaying {}", file.display());
            run(&std::fs::read(&file).expect("a readable input"));
        }
    }
}
