//! One connection driven by hand, without sockets: the worker's own loop
//! turn ([`Worker::turn`]: accepts, reads, posts and outcomes, timers, the
//! drain, flushes, reaping) over an in-memory transport, with time moved
//! by the caller. The connection gets a [`Stream`] over that transport, as
//! in the broker: plain, or TLS through the broker's own `TlsStream` when
//! the configuration has `tls` (the caller then speaks TLS: what it sends
//! and reads are TLS records). For fuzzing (`fuzz/`) and for tests that
//! replay the inputs the fuzzer found; not built into the broker.

use super::connection::Connection;
use super::shared::Shared;
use super::stream::{Stream, TlsAcceptor, Transport};
use super::worker::{Ready, Sockets, Worker};
use crate::broker::delivery::WorkerMailbox;
use crate::config::Config;
use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// The most one read returns (None: all the input there is).
    read_size: Option<NonZeroUsize>,
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
        let most = self.read_size.map_or(usize::MAX, NonZeroUsize::get);
        let n = left.len().min(buf.len()).min(most);
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
    fn shutdown_write(&mut self) -> bool {
        self.write_shut = true;
        true
    }
}

/// One connection waiting to be accepted, then none.
struct OneConnection {
    waiting: Option<MemoryTransport>,
    /// TLS over the connection, when the broker serves it.
    tls: Option<Arc<TlsAcceptor>>,
    /// What the connection wrote, once it has been reaped: the worker
    /// deregisters a connection just before freeing it, after its last
    /// words (the bytes of the turn that ended it, TLS's `close_notify`).
    reaped_output: Vec<u8>,
}

impl Sockets for OneConnection {
    type Socket = Stream<MemoryTransport>;

    fn accept(&mut self) -> io::Result<(Stream<MemoryTransport>, SocketAddr)> {
        let peer = "127.0.0.1:9".parse().expect("a valid address");
        let socket = self.waiting.take().ok_or(ErrorKind::WouldBlock)?;
        let stream = match &self.tls {
            Some(tls) => tls.accept(socket)?,
            None => Stream::Plain(socket),
        };
        Ok((stream, peer))
    }

    fn register(&mut self, _: &mut Stream<MemoryTransport>, _: usize) -> io::Result<()> {
        Ok(())
    }

    fn deregister(&mut self, stream: &mut Stream<MemoryTransport>) {
        self.reaped_output = std::mem::take(&mut stream.socket_mut().output);
    }

    fn stop_listening(&mut self) {
        self.waiting = None;
    }
}

/// A broker of one worker with one connection on it: over TLS if
/// `config.tls` is set.
pub struct ConnectionDriver {
    worker: Worker<OneConnection>,
    /// The worker's clock, moved by `advance`.
    now: Instant,
    /// The connection's slot, until it is reaped.
    slot: Option<usize>,
}

impl ConnectionDriver {
    pub fn new(config: Config) -> ConnectionDriver {
        let shared = Arc::new(
            Shared::new(config, vec![WorkerMailbox::unpolled()]).expect("a local backplane"),
        );
        let sockets = OneConnection {
            waiting: Some(MemoryTransport::default()),
            tls: shared.tls.clone(),
            reaped_output: Vec::new(),
        };
        let mut driver = ConnectionDriver {
            worker: Worker::new(0, sockets, shared),
            now: Instant::now(),
            slot: Some(0),
        };
        driver.turn(Ready::Listener);
        driver
    }

    /// Creates a topic, as `POST /topics` would.
    pub fn create_topic(&self, name: &str) {
        let _ = self.worker.ctx().shared.broker.create_topic(name);
    }

    /// The peer sends `bytes`; then a loop turn.
    pub fn send(&mut self, bytes: &[u8]) {
        if let Some(transport) = self.transport() {
            transport.input.extend_from_slice(bytes);
        }
        self.turn_readable();
    }

    /// The peer closes its side; then a loop turn.
    pub fn send_end_of_stream(&mut self) {
        if let Some(transport) = self.transport() {
            transport.end_of_input = true;
        }
        self.turn_readable();
    }

    /// From now on the peer's receive window takes `bytes` more, then
    /// writes block (None: unlimited); then a loop turn in which the
    /// socket is writable.
    pub fn set_write_room(&mut self, bytes: Option<usize>) {
        if let Some(transport) = self.transport() {
            transport.write_room = bytes;
        }
        if let Some(slot) = self.slot {
            self.turn(Ready::Connection {
                slot,
                readable: false,
            });
        }
    }

    /// From now on one read of the socket returns at most `bytes` (None:
    /// whatever input there is). No loop turn.
    pub fn set_read_size(&mut self, bytes: Option<NonZeroUsize>) {
        if let Some(transport) = self.transport() {
            transport.read_size = bytes;
        }
    }

    /// Time passes; due timers fire in a loop turn.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        self.turn(Ready::Wake);
    }

    /// A graceful shutdown begins (SIGTERM); then a loop turn.
    pub fn shut_down(&mut self) {
        self.worker
            .ctx()
            .shared
            .draining
            .store(true, Ordering::Release);
        self.turn(Ready::Wake);
    }

    fn turn_readable(&mut self) {
        if let Some(slot) = self.slot {
            self.turn(Ready::Connection {
                slot,
                readable: true,
            });
        }
    }

    /// One loop turn with `ready`, and the turns after it that the worker
    /// wants at once (input left over from its read budget, posts).
    fn turn(&mut self, ready: Ready) {
        self.worker.turn(self.now, [ready]);
        while self.worker.wants_another_turn() && self.connection().is_some() {
            self.worker.turn(self.now, []);
        }
        if self.connection().is_none() {
            self.slot = None;
        }
    }

    fn connection(&mut self) -> Option<&mut Connection<Stream<MemoryTransport>>> {
        self.worker.connection_mut(self.slot?)
    }

    /// The transport under the connection's stream, until it is reaped.
    fn transport(&mut self) -> Option<&mut MemoryTransport> {
        Some(self.connection()?.socket_mut().socket_mut())
    }

    /// Everything the connection has written so far (TLS records over
    /// TLS), its last turn's bytes included once it has been reaped.
    pub fn output(&mut self) -> &[u8] {
        match self.slot {
            Some(slot) => self
                .worker
                .connection_mut(slot)
                .map_or(&[], |c| &c.socket_mut().socket_mut().output),
            None => &self.worker.sockets().reaped_output,
        }
    }

    /// Bytes the peer sent that the connection has not read yet.
    pub fn unread_input(&mut self) -> usize {
        self.transport().map_or(0, |t| t.input.len() - t.read_pos)
    }

    /// True once the connection was reaped.
    pub fn is_closed(&self) -> bool {
        self.slot.is_none()
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
    fn a_drain_notifies_and_closes_a_subscriber() {
        let mut driver = ConnectionDriver::new(Config::loopback());
        driver.create_topic("t");
        driver.send(UPGRADE);
        driver.send(&masked(
            r#"{"type":"subscribe","topic":"t","client_id":"c"}"#,
        ));
        driver.shut_down();
        driver.send(&masked(
            r#"{"type":"publish","topic":"t","message":{"id":"m","payload":1}}"#,
        ));
        let text = String::from_utf8_lossy(driver.output()).into_owned();
        assert!(text.contains(r#""msg":"server_shutdown""#), "{text}");
        assert!(
            !text.contains(r#""type":"event""#),
            "nothing is published once the drain began: {text}"
        );
        assert!(!driver.is_closed(), "waiting for the peer's close");
        driver.advance(Duration::from_secs(2));
        assert!(driver.is_closed(), "closed after the close grace");
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

/// Replays the inputs saved under `fuzz/regressions/connection/` and
/// `fuzz/regressions/connection_tls/` through the bodies of the
/// `connection` and `connection_tls` fuzz targets (`fuzz/logic/`, shared
/// word for word, each a module here as in its target, beside the
/// `connection_program` they share). See fuzz/README.md.
#[cfg(test)]
mod fuzz_regressions {
    mod connection_program {
        use crate as pubsub;

        include!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fuzz/logic/connection_program.rs"
        ));
    }

    mod connection {
        use crate as pubsub;

        include!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fuzz/logic/connection.rs"
        ));
    }

    mod connection_tls {
        use crate as pubsub;

        include!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fuzz/logic/connection_tls.rs"
        ));
    }

    /// Runs `body` on every file of `fuzz/regressions/<target>/`, naming
    /// each; returns what each run returned.
    fn replay<T>(target: &str, body: fn(&[u8]) -> T) -> Vec<T> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/regressions")
            .join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("a directory entry").path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no inputs in {}", dir.display());
        files
            .iter()
            .map(|file| {
                eprintln!("replaying {}", file.display());
                body(&std::fs::read(file).expect("a readable input"))
            })
            .collect()
    }

    #[test]
    fn connection_inputs() {
        replay("connection", connection::run);
    }

    #[test]
    fn connection_tls_inputs() {
        let agreed = replay("connection_tls", connection_tls::run);
        assert!(
            agreed.iter().filter(|&&n| n > 0).count() >= 10,
            "fewer than ten inputs stayed comparable with their plain twin and agreed on replies: {agreed:?}"
        );
    }
}
