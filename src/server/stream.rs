//! What a connection reads from and writes to ([`Transport`]): its socket,
//! or TLS served by the event loop itself, a rustls `ServerConnection`
//! driven over the non-blocking socket ([`Stream`]); and the TLS
//! configuration new connections get ([`TlsAcceptor`], swapped on SIGHUP).
//! No thread, no blocking call, no async runtime: the worker's loop drives
//! TLS as it drives the socket.
//!
//! The connection reads and writes plaintext through a [`Stream`] as it
//! would through a socket; TLS stays here. rustls's unbuffered API leaves
//! the buffers to us, which is what lets an idle TLS connection hold no
//! buffer at all: TLS bytes read wait in `incoming` only while a record is
//! partly read, bytes made wait in `outgoing` only until the socket takes
//! them, and each is freed when it empties. Two habits of TLS matter to a
//! readiness loop:
//!
//! - **A read may need a write** (handshake messages, alerts, session
//!   tickets, a key update). A read sends what rustls made before it
//!   returns; what the socket does not take goes out with the connection's
//!   next flush (`Write::flush`), which the socket's next writable event
//!   brings.
//! - **Writing is buffered twice**: plaintext taken is encrypted at once
//!   into records that may not all reach the socket. A write first sends
//!   the records left from before and takes no plaintext while any are
//!   left, so what waits stays in the connection's `Output`, whose
//!   high-water mark keeps bounding it and pausing input.
//!
//! A read returns plaintext already decrypted before it touches the
//! socket, and says `WouldBlock` only when the socket did: "read until it
//! would block", which edge-triggered readiness requires, drains TLS too.
//! Interest stays registered readable and writable, edge-triggered, as for
//! plain sockets: whatever rustls wants next, the event that lets it happen
//! arrives, and no `reregister` is spent on following what it wants.
//!
//! Once our `close_notify` is made (the connection is done and only drops
//! what the peer still sends), TLS bytes are read from the socket as they
//! are and never given to rustls: a record it refused would make it queue
//! a fatal alert after its `close_notify`, which trips a `debug_assert!`
//! inside rustls (rustls/rustls#959), a panic of the worker in debug builds
//! that any peer could cause (found by the `connection_tls` fuzz target).
//! So the peer's own `close_notify`, if it comes after ours, is dropped
//! unread too: the end of its TCP stream (or the close grace) ends the
//! linger.

use crate::config::{ConfigError, ServerTls, TlsFiles};
use mio::net::TcpStream;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use rustls::ServerConfig;
use std::io::{self, ErrorKind, Read, Write};
use std::net::Shutdown;
use std::sync::{Arc, PoisonError, RwLock};

/// What a connection reads from and writes to: a non-blocking socket in
/// the worker; a byte buffer in tests and fuzzing, so that the whole state
/// machine runs without sockets.
pub trait Transport: Read + Write {
    /// Ends our half of the stream: the peer reads end of stream after our
    /// last byte. False while the stream's own last bytes (TLS's
    /// `close_notify`) wait for the socket: called again on the next flush.
    fn shutdown_write(&mut self) -> bool;

    /// The connection is about to be freed: a last word if the stream has
    /// one (TLS's `close_notify`), written if the socket takes it at once.
    fn close(&mut self) {}
}

impl Transport for TcpStream {
    fn shutdown_write(&mut self) -> bool {
        let _ = self.shutdown(Shutdown::Write);
        true
    }
}

/// What a connection reads from and writes to: its socket, or TLS over it.
pub enum Stream<S> {
    Plain(S),
    Tls(Box<TlsStream<S>>),
}

/// The largest TLS record on the wire: a header, 16 KiB of plaintext and
/// the most a cipher may add (TLS 1.2's limit; 1.3 adds less).
const RECORD_BYTES: usize = 5 + 16 * 1024 + 2048;
/// The most TLS input held at once: rustls joins a handshake message of up
/// to 64 KiB in the input buffer, and a record may follow it.
const MAX_INCOMING: usize = 64 * 1024 + RECORD_BYTES;
/// Plaintext encrypted per write call: four full records.
const WRITE_CHUNK: usize = 64 * 1024;

/// A socket with rustls between it and the connection.
pub struct TlsStream<S> {
    socket: S,
    tls: UnbufferedServerConnection,
    /// TLS bytes read, `incoming[..filled]`, not yet processed: a partial
    /// record between reads. Freed when a read ends with none left.
    incoming: Vec<u8>,
    filled: usize,
    /// Plaintext decrypted and not yet read, from `plaintext_read` on.
    plaintext: Vec<u8>,
    plaintext_read: usize,
    /// TLS bytes made and not yet taken by the socket, from `sent` on.
    outgoing: Vec<u8>,
    sent: usize,
    /// The socket reached end of stream, or the peer's `close_notify` came.
    input_ended: bool,
    /// Our `close_notify` is made: what the peer sends is read from the
    /// socket and dropped, not given to rustls (see the module doc).
    closed: bool,
    /// Some TLS record has been sent: the peer speaks TLS.
    answered: bool,
    /// Nothing more goes to the peer: it sent what is not TLS, and gets no
    /// answer, not even the alert rustls made (see `fail`).
    silenced: bool,
    /// rustls refused the peer: it is not asked anything again.
    failed: bool,
}

/// What a turn of rustls is asked for besides working through its input.
#[derive(Clone, Copy)]
enum Want<'a> {
    Read,
    /// Encrypt (some of) these bytes.
    Write(&'a [u8]),
    /// Make our `close_notify`.
    Close,
}

impl<S> Stream<S> {
    /// The socket under TLS, if any: for registering it with the poll.
    pub fn socket_mut(&mut self) -> &mut S {
        match self {
            Stream::Plain(socket) => socket,
            Stream::Tls(tls) => &mut tls.socket,
        }
    }
}

impl<S> TlsStream<S> {
    fn new(socket: S, tls: UnbufferedServerConnection) -> TlsStream<S> {
        TlsStream {
            socket,
            tls,
            incoming: Vec::new(),
            filled: 0,
            plaintext: Vec::new(),
            plaintext_read: 0,
            outgoing: Vec::new(),
            sent: 0,
            input_ended: false,
            closed: false,
            answered: false,
            silenced: false,
            failed: false,
        }
    }
}

impl<S: Read + Write> TlsStream<S> {
    /// Plaintext already decrypted, else records from the socket, until
    /// there is plaintext or the socket would block. A peer's close without
    /// `close_notify` reads as end of stream: many clients close that way,
    /// and WebSocket and HTTP frame their own ends.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.plaintext_read < self.plaintext.len() {
                let n = buf.len().min(self.plaintext.len() - self.plaintext_read);
                let from = self.plaintext_read;
                buf[..n].copy_from_slice(&self.plaintext[from..from + n]);
                self.plaintext_read += n;
                if self.plaintext_read == self.plaintext.len() {
                    self.plaintext = Vec::new();
                    self.plaintext_read = 0;
                }
                return Ok(n);
            }
            if self.input_ended {
                return Ok(0);
            }
            if self.closed {
                return self.socket.read(buf);
            }
            self.drive(Want::Read)?;
            if !self.plaintext.is_empty() || self.input_ended {
                continue;
            }
            match self.send_records() {
                Err(e) if e.kind() != ErrorKind::WouldBlock => return Err(e),
                _ => {}
            }
            match self.read_socket() {
                Ok(0) => self.input_ended = true,
                Ok(_) => {}
                Err(e) => {
                    if self.filled == 0 {
                        self.incoming = Vec::new();
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Reads from the socket behind what `incoming` holds.
    fn read_socket(&mut self) -> io::Result<usize> {
        if self.filled == self.incoming.len() {
            if self.incoming.len() >= MAX_INCOMING {
                return Err(io::Error::new(
                    ErrorKind::InvalidData,
                    "TLS message too large",
                ));
            }
            self.incoming.resize(self.incoming.len() + RECORD_BYTES, 0);
        }
        let n = self.socket.read(&mut self.incoming[self.filled..])?;
        self.filled += n;
        Ok(n)
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.send_records()?;
        let taken = self.drive(Want::Write(&buf[..buf.len().min(WRITE_CHUNK)]))?;
        if taken == 0 && !buf.is_empty() {
            // Only before the handshake is done: nothing the broker writes
            // so early.
            return Err(ErrorKind::WouldBlock.into());
        }
        match self.send_records() {
            Err(e) if e.kind() != ErrorKind::WouldBlock => Err(e),
            _ => Ok(taken),
        }
    }

    /// Runs rustls over the input held until it needs more, making what
    /// it wants sent and keeping what it decrypted; on the way, does what
    /// `want` asks once the handshake allows it. Returns the plaintext
    /// bytes taken for encryption.
    fn drive(&mut self, want: Want) -> io::Result<usize> {
        if self.failed {
            return Err(io::Error::new(ErrorKind::InvalidData, "TLS failed"));
        }
        let mut taken = 0;
        loop {
            let UnbufferedStatus { mut discard, state } = self
                .tls
                .process_tls_records(&mut self.incoming[..self.filled]);
            let blocked = match state {
                Err(e) => {
                    self.discard(discard);
                    return Err(self.fail(e));
                }
                Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                    while let Some(record) = traffic.next_record() {
                        let record =
                            record.map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?;
                        discard += record.discard;
                        self.plaintext.extend_from_slice(record.payload);
                    }
                    false
                }
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    let start = self.outgoing.len();
                    loop {
                        match encode.encode(&mut self.outgoing[start..]) {
                            Ok(n) => break self.outgoing.truncate(start + n),
                            Err(EncodeError::InsufficientSize(need)) => {
                                self.outgoing.resize(start + need.required_size, 0)
                            }
                            Err(EncodeError::AlreadyEncoded) => break,
                        }
                    }
                    false
                }
                // `outgoing` keeps the bytes, in order, until the socket
                // takes them; rustls need not wait for that.
                Ok(ConnectionState::TransmitTlsData(transmit)) => {
                    transmit.done();
                    false
                }
                Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                    match want {
                        Want::Write(data) if taken == 0 && !data.is_empty() => {
                            taken = encrypt(&mut self.outgoing, data, |plain, out| {
                                traffic.encrypt(plain, out)
                            })?;
                        }
                        Want::Close if !self.closed => {
                            self.closed = true;
                            encrypt(&mut self.outgoing, &[], |_, out| {
                                traffic.queue_close_notify(out)
                            })?;
                        }
                        _ => {}
                    }
                    true
                }
                Ok(ConnectionState::PeerClosed | ConnectionState::Closed) => {
                    self.input_ended = true;
                    true
                }
                // Early data is never accepted (rustls's default), so it
                // cannot come; it would be replayable if it did.
                Ok(ConnectionState::ReadEarlyData(_)) => {
                    return Err(io::Error::new(ErrorKind::InvalidData, "TLS early data"))
                }
                Ok(ConnectionState::BlockedHandshake) | Ok(_) => true,
            };
            self.discard(discard);
            if blocked {
                return Ok(taken);
            }
        }
    }

    /// Drops the first `n` bytes of input, which rustls is done with.
    fn discard(&mut self, n: usize) {
        self.incoming.copy_within(n..self.filled, 0);
        self.filled -= n;
    }

    /// rustls refused the peer, and queued an alert that says why: a TLS
    /// peer gets it; a peer that never spoke TLS (plain HTTP on this port)
    /// gets no answer at all, only the close. The alert is the one thing
    /// rustls holds (what it made before was taken as it came), so one
    /// more call hands it over; another would work through the refused
    /// input again.
    fn fail(&mut self, error: rustls::Error) -> io::Error {
        self.failed = true;
        self.silenced = !self.answered;
        let next = self
            .tls
            .process_tls_records(&mut self.incoming[..self.filled]);
        if let Ok(ConnectionState::EncodeTlsData(mut encode)) = next.state {
            let start = self.outgoing.len();
            self.outgoing.resize(start + RECORD_BYTES, 0);
            let n = encode.encode(&mut self.outgoing[start..]).unwrap_or(0);
            self.outgoing.truncate(start + n);
        }
        let _ = self.send_records();
        io::Error::new(ErrorKind::InvalidData, error)
    }

    /// Writes the TLS bytes made until none is left; `WouldBlock` if the
    /// socket stops taking them first. The buffer is freed once empty.
    fn send_records(&mut self) -> io::Result<()> {
        if self.silenced {
            self.outgoing = Vec::new();
            self.sent = 0;
        }
        while self.sent < self.outgoing.len() {
            match self.socket.write(&self.outgoing[self.sent..])? {
                0 => return Err(ErrorKind::WriteZero.into()),
                n => self.sent += n,
            }
            self.answered = true;
        }
        self.outgoing = Vec::new();
        self.sent = 0;
        Ok(())
    }

    /// Our `close_notify`, to a peer we have spoken TLS with once the
    /// handshake is done; written if the socket takes it at once.
    fn close(&mut self) {
        if self.answered && !self.closed {
            let _ = self.drive(Want::Close);
        }
        let _ = self.send_records();
    }
}

/// Appends to `outgoing` what `make` writes into a slice (rustls's
/// encryption, which says how much room it needs when given too little);
/// returns the plaintext length taken.
fn encrypt(
    outgoing: &mut Vec<u8>,
    plaintext: &[u8],
    mut make: impl FnMut(&[u8], &mut [u8]) -> Result<usize, EncryptError>,
) -> io::Result<usize> {
    let start = outgoing.len();
    // Enough for most: the records' overhead is small.
    outgoing.resize(start + plaintext.len() + 256, 0);
    loop {
        match make(plaintext, &mut outgoing[start..]) {
            Ok(n) => {
                outgoing.truncate(start + n);
                return Ok(plaintext.len());
            }
            Err(EncryptError::InsufficientSize(need)) => {
                outgoing.resize(start + need.required_size, 0)
            }
            Err(e) => {
                outgoing.truncate(start);
                return Err(io::Error::other(e));
            }
        }
    }
}

impl<S: Transport> Read for Stream<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(socket) => socket.read(buf),
            Stream::Tls(tls) => tls.read(buf),
        }
    }
}

impl<S: Transport> Write for Stream<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(socket) => socket.write(buf),
            Stream::Tls(tls) => tls.write(buf),
        }
    }

    /// Sends what TLS still holds; a plain socket holds nothing.
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(_) => Ok(()),
            Stream::Tls(tls) => tls.send_records(),
        }
    }
}

impl<S: Transport> Transport for Stream<S> {
    /// TLS first says `close_notify`, and the socket's write side stays
    /// open until the socket has taken it.
    fn shutdown_write(&mut self) -> bool {
        self.close();
        if let Stream::Tls(tls) = self {
            if tls.sent < tls.outgoing.len() {
                return false;
            }
        }
        self.socket_mut().shutdown_write()
    }

    /// TLS says `close_notify` to a peer it has spoken TLS with; one that
    /// never got an answer (a handshake timed out before it began) gets
    /// none now either.
    fn close(&mut self) {
        if let Stream::Tls(tls) = self {
            tls.close();
        }
    }
}

/// The TLS configuration new connections get. SIGHUP swaps it for one read
/// from the files again; open connections keep the one they started with.
pub struct TlsAcceptor {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsAcceptor {
    pub fn new(tls: &ServerTls) -> TlsAcceptor {
        TlsAcceptor {
            files: tls.files.clone(),
            current: RwLock::new(Arc::clone(&tls.initial)),
        }
    }

    fn current(&self) -> Arc<ServerConfig> {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(&current)
    }

    /// TLS over a socket just accepted; the handshake happens as it reads.
    pub fn accept<S>(&self, socket: S) -> io::Result<Stream<S>> {
        let tls = UnbufferedServerConnection::new(self.current()).map_err(io::Error::other)?;
        Ok(Stream::Tls(Box::new(TlsStream::new(socket, tls))))
    }

    /// Reads the files again. On an error the current configuration stays.
    pub fn reload(&self) -> Result<(), ConfigError> {
        let loaded = self.files.load(Some(&self.current()))?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = loaded;
        Ok(())
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TlsFiles;
    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection, RootCertStore};
    use std::cell::RefCell;
    use std::collections::VecDeque;
    use std::rc::Rc;

    /// One direction of an in-memory connection.
    type Pipe = Rc<RefCell<VecDeque<u8>>>;

    /// The broker's end: reads what the client wrote, writes for it to
    /// read, taking at most `room` bytes before it would block.
    struct MemorySocket {
        from_client: Pipe,
        to_client: Pipe,
        room: Rc<RefCell<usize>>,
    }

    impl Read for MemorySocket {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let mut input = self.from_client.borrow_mut();
            if input.is_empty() {
                return Err(ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(input.len());
            for (slot, byte) in buf.iter_mut().zip(input.drain(..n)) {
                *slot = byte;
            }
            Ok(n)
        }
    }

    impl Write for MemorySocket {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut room = self.room.borrow_mut();
            let n = buf.len().min(*room);
            if n == 0 {
                return Err(ErrorKind::WouldBlock.into());
            }
            *room -= n;
            self.to_client.borrow_mut().extend(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Transport for MemorySocket {
        fn shutdown_write(&mut self) -> bool {
            true
        }
    }

    /// A TLS stream of the broker's and a rustls client, joined in memory.
    struct Pair {
        server: Stream<MemorySocket>,
        client: ClientConnection,
        from_client: Pipe,
        to_client: Pipe,
        room: Rc<RefCell<usize>>,
        /// Plaintext the client has received.
        received: Vec<u8>,
    }

    fn pair() -> Pair {
        let ca = rcgen::CertifiedIssuer::self_signed(
            {
                let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
                params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
                params
            },
            rcgen::KeyPair::generate().unwrap(),
        )
        .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let dir = std::env::temp_dir().join(format!(
            "pubsub-stream-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        let files = TlsFiles {
            cert_file: cert_file.to_str().unwrap().to_string(),
            key_file: key_file.to_str().unwrap().to_string(),
            client_ca_file: None,
        };
        let acceptor = TlsAcceptor::new(&ServerTls {
            initial: files.load(None).unwrap(),
            files,
        });
        std::fs::remove_dir_all(&dir).unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        let client_config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        let client = ClientConnection::new(
            Arc::new(client_config),
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap();
        let (from_client, to_client) = (Pipe::default(), Pipe::default());
        let room = Rc::new(RefCell::new(usize::MAX));
        let socket = MemorySocket {
            from_client: Rc::clone(&from_client),
            to_client: Rc::clone(&to_client),
            room: Rc::clone(&room),
        };
        Pair {
            server: acceptor.accept(socket).unwrap(),
            client,
            from_client,
            to_client,
            room,
            received: Vec::new(),
        }
    }

    impl Pair {
        /// Moves bytes both ways until neither side has more to say; the
        /// broker reads as its connection does, until it would block.
        /// Returns the plaintext the broker read.
        fn exchange(&mut self) -> Vec<u8> {
            let mut read = Vec::new();
            for _ in 0..20 {
                while self.client.wants_write() {
                    let mut bytes = Vec::new();
                    self.client.write_tls(&mut bytes).unwrap();
                    self.from_client.borrow_mut().extend(bytes);
                }
                let mut buf = [0u8; 4096];
                loop {
                    match self.server.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => read.extend_from_slice(&buf[..n]),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => panic!("broker read: {e}"),
                    }
                }
                let tls: Vec<u8> = self.to_client.borrow_mut().drain(..).collect();
                if tls.is_empty() && !self.client.wants_write() {
                    break;
                }
                let mut tls = &tls[..];
                while !tls.is_empty() {
                    self.client.read_tls(&mut tls).unwrap();
                    self.client.process_new_packets().unwrap();
                    let _ = self.client.reader().read_to_end(&mut self.received);
                }
            }
            read
        }

        fn tls(&self) -> &TlsStream<MemorySocket> {
            match &self.server {
                Stream::Tls(tls) => tls,
                Stream::Plain(_) => unreachable!("accepted with TLS"),
            }
        }
    }

    #[test]
    fn an_idle_tls_stream_holds_no_buffer() {
        let mut pair = pair();
        pair.exchange();
        assert!(!pair.client.is_handshaking());
        pair.client.writer().write_all(&[b'x'; 50_000]).unwrap();
        assert_eq!(pair.exchange(), vec![b'x'; 50_000]);
        pair.server.write_all(&[b'y'; 70_000]).unwrap();
        pair.server.flush().unwrap();
        pair.exchange();
        assert_eq!(std::mem::take(&mut pair.received), vec![b'y'; 70_000]);
        let tls = pair.tls();
        assert_eq!(
            (
                tls.incoming.capacity(),
                tls.plaintext.capacity(),
                tls.outgoing.capacity()
            ),
            (0, 0, 0)
        );
    }

    #[test]
    fn records_the_socket_did_not_take_hold_back_more_plaintext_and_go_out_with_flush() {
        let mut pair = pair();
        pair.exchange();
        *pair.room.borrow_mut() = 1000;
        let first = pair.server.write(&[b'a'; 30_000]).unwrap();
        assert_eq!(first, 30_000, "taken whole, encrypted, partly sent");
        let second = pair.server.write(b"more").unwrap_err();
        assert_eq!(second.kind(), ErrorKind::WouldBlock);
        assert_eq!(
            pair.server.flush().unwrap_err().kind(),
            ErrorKind::WouldBlock
        );
        *pair.room.borrow_mut() = usize::MAX;
        pair.server.flush().unwrap();
        pair.server.write_all(b"more").unwrap();
        pair.exchange();
        let mut expected = vec![b'a'; 30_000];
        expected.extend_from_slice(b"more");
        assert_eq!(std::mem::take(&mut pair.received), expected);
    }

    #[test]
    fn a_close_notify_the_socket_did_not_take_holds_the_write_side_open() {
        let mut pair = pair();
        pair.exchange();
        *pair.room.borrow_mut() = 0;
        assert!(!pair.server.shutdown_write(), "close_notify still waits");
        assert!(!pair.server.shutdown_write(), "and is not made twice");
        *pair.room.borrow_mut() = usize::MAX;
        assert!(pair.server.shutdown_write());
        pair.exchange();
        let mut after = Vec::new();
        let end = pair.client.reader().read_to_end(&mut after);
        assert_eq!(end.unwrap(), 0, "close_notify arrived");
    }

    #[test]
    fn close_notify_ends_the_peers_reading_cleanly() {
        let mut pair = pair();
        pair.exchange();
        pair.server.write_all(b"bye").unwrap();
        pair.server.shutdown_write();
        pair.exchange();
        assert_eq!(pair.received, b"bye");
        let mut after = Vec::new();
        let end = pair.client.reader().read_to_end(&mut after);
        assert_eq!(
            end.unwrap(),
            0,
            "close_notify: a clean end, not UnexpectedEof"
        );
    }
}
