//! A connection's outbound bytes, and the one way bytes are written to a
//! socket.
//!
//! Everything a connection sends that is its own (HTTP responses, replies,
//! replay, control frames, and the rest of a batch the socket did not take)
//! waits in its [`Output`], in order, and goes out before any queued event.
//! Writing stops at `WouldBlock` with the offset kept; an error or a zero
//! write is final for the connection. Everything is written only once the
//! stream's own buffer is empty too (`flush`: the records TLS holds). Queued events are gathered by the
//! caller into one batch and written through [`Output::write_batch`]
//! straight from the batch, so the common case copies nothing per
//! connection.

use crate::metrics::WorkerMetrics;
use std::io::{ErrorKind, Write};

/// While more than this many bytes wait to be written, the connection's
/// input is not read: a client that sends without reading cannot make the
/// broker buffer without bound.
const HIGH_WATER: usize = 256 * 1024;
/// An output buffer larger than this is freed once empty, so that one burst
/// does not pin memory for the connection's lifetime.
const KEEP_CAPACITY: usize = 16 * 1024;

/// How a write attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Everything was written.
    All,
    /// The socket would block; the rest waits in the output.
    Blocked,
    /// The socket failed or the peer is gone: the connection must end.
    Failed,
}

#[derive(Default)]
pub struct Output {
    bytes: Vec<u8>,
    /// How much of `bytes` the socket took already.
    written: usize,
    /// Messages put in the output or written through it: HTTP responses,
    /// replies, replayed and queued events. For the close log line.
    pub messages: u64,
}

impl Output {
    /// Bytes not yet written.
    pub fn pending(&self) -> usize {
        self.bytes.len() - self.written
    }

    /// More waits than a connection may have before it stops reading.
    pub fn over_high_water(&self) -> bool {
        self.pending() > HIGH_WATER
    }

    /// The buffer, to append whole frames or responses to. Appending never
    /// disturbs what is partly written.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    /// Writes what is pending.
    pub fn write_to(&mut self, socket: &mut impl Write, metrics: &WorkerMetrics) -> Written {
        let (n, written) = write_some(socket, &self.bytes[self.written..], metrics);
        self.written += n;
        if written == Written::All {
            self.bytes.clear();
            self.written = 0;
            if self.bytes.capacity() > KEEP_CAPACITY {
                self.bytes = Vec::new();
            }
        }
        written
    }

    /// Writes `batch` (whole frames) behind an empty output; what the socket
    /// does not take is kept to go first next time.
    pub fn write_batch(
        &mut self,
        socket: &mut impl Write,
        batch: &[u8],
        metrics: &WorkerMetrics,
    ) -> Written {
        debug_assert_eq!(self.pending(), 0, "a batch never overtakes the output");
        let (n, written) = write_some(socket, batch, metrics);
        if written == Written::Blocked {
            self.bytes.extend_from_slice(&batch[n..]);
        }
        written
    }
}

/// The one write loop: writes `bytes` until done, blocked or failed, and
/// says how much went out.
fn write_some(socket: &mut impl Write, bytes: &[u8], metrics: &WorkerMetrics) -> (usize, Written) {
    let mut written = 0;
    while written < bytes.len() {
        match socket.write(&bytes[written..]) {
            Ok(0) => return (written, Written::Failed),
            Ok(n) => {
                written += n;
                metrics.record_sent(n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return (written, Written::Blocked),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return (written, Written::Failed),
        }
    }
    // What the stream itself still holds (TLS records) counts as unwritten.
    match socket.flush() {
        Ok(()) => (written, Written::All),
        Err(e) if e.kind() == ErrorKind::WouldBlock => (written, Written::Blocked),
        Err(_) => (written, Written::Failed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    /// Takes `room` bytes, then would block; or fails.
    struct Socket {
        taken: Vec<u8>,
        room: usize,
        fail: bool,
    }

    impl Write for Socket {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.fail {
                return Err(ErrorKind::ConnectionReset.into());
            }
            let n = buf.len().min(self.room).min(3);
            if n == 0 {
                return Err(ErrorKind::WouldBlock.into());
            }
            self.room -= n;
            self.taken.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn socket(room: usize) -> Socket {
        Socket {
            taken: Vec::new(),
            room,
            fail: false,
        }
    }

    #[test]
    fn a_blocked_write_keeps_its_offset_and_resumes() {
        let metrics = WorkerMetrics::default();
        let mut output = Output::default();
        output.buffer().extend_from_slice(b"hello world");
        let mut s = socket(4);
        assert_eq!(output.write_to(&mut s, &metrics), Written::Blocked);
        assert_eq!(output.pending(), 7);
        output.buffer().extend_from_slice(b"!");
        s.room = 100;
        assert_eq!(output.write_to(&mut s, &metrics), Written::All);
        assert_eq!(s.taken, b"hello world!");
        assert_eq!(output.pending(), 0);
    }

    #[test]
    fn a_batch_the_socket_does_not_take_goes_first_next_time() {
        let metrics = WorkerMetrics::default();
        let mut output = Output::default();
        let mut s = socket(5);
        assert_eq!(
            output.write_batch(&mut s, b"0123456789", &metrics),
            Written::Blocked
        );
        assert_eq!(output.pending(), 5);
        s.room = 100;
        assert_eq!(output.write_to(&mut s, &metrics), Written::All);
        assert_eq!(s.taken, b"0123456789");
    }

    #[test]
    fn a_failed_socket_is_final() {
        let metrics = WorkerMetrics::default();
        let mut output = Output::default();
        output.buffer().extend_from_slice(b"x");
        let mut s = socket(10);
        s.fail = true;
        assert_eq!(output.write_to(&mut s, &metrics), Written::Failed);
        assert_eq!(
            Output::default().write_batch(&mut s, b"y", &metrics),
            Written::Failed
        );
    }
}
