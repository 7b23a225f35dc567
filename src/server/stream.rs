//! What a connection reads from and writes to ([`Transport`]): its socket,
//! or TLS served by the event loop itself, a rustls `ServerConnection`
//! driven over the non-blocking socket ([`Stream`]); and the TLS
//! configuration new connections get ([`TlsAcceptor`], swapped on SIGHUP).
//! No thread, no blocking call, no async runtime: the worker's loop drives
//! TLS as it drives the socket.
//!
//! The connection reads and writes plaintext through a [`Stream`] as it
//! would through a socket; TLS stays here. Two of its habits matter to a
//! readiness loop:
//!
//! - **A read may need a write** (handshake messages, alerts, session
//!   tickets, a key update). A read sends what rustls wants sent before it
//!   returns; what the socket does not take goes out with the connection's
//!   next flush (`Write::flush`), which the socket's next writable event
//!   brings.
//! - **Writing is buffered twice**: plaintext rustls takes is encrypted at
//!   once into records that may not all reach the socket. A write first
//!   sends the records left from before and takes no plaintext while any
//!   are left, so what waits stays in the connection's `Output`, whose
//!   high-water mark keeps bounding it and pausing input.
//!
//! A read returns plaintext rustls already holds before it touches the
//! socket, and says `WouldBlock` only when the socket did: "read until it
//! would block", which edge-triggered readiness requires, drains rustls
//! too. Interest stays registered readable and writable, edge-triggered,
//! as for plain sockets: whatever rustls wants next, the event that lets it
//! happen arrives, and no `reregister` is spent on following `wants_read`
//! and `wants_write`.
//!
//! Once our `close_notify` is sent (`shutdown_write`, when the connection
//! is done and only drops what the peer still sends), records are read
//! from the socket as they are and never given to rustls: one it refused
//! would make it queue a fatal alert after its `close_notify`, which trips
//! a `debug_assert!` inside rustls (rustls/rustls#959), a panic of the
//! worker in debug builds that any peer could cause. So the peer's own
//! `close_notify`, if it comes after ours, is dropped unread too: the end
//! of its TCP stream (or the close grace) ends the linger.

use crate::config::{ConfigError, ServerTls, TlsFiles};
use mio::net::TcpStream;
use rustls::{ServerConfig, ServerConnection};
use std::io::{self, ErrorKind, Read, Write};
use std::net::Shutdown;
use std::sync::{Arc, PoisonError, RwLock};

/// What a connection reads from and writes to: a non-blocking socket in
/// the worker; a byte buffer in tests and fuzzing, so that the whole state
/// machine runs without sockets.
pub trait Transport: Read + Write {
    /// Ends our half of the stream: the peer reads end of stream after our
    /// last byte.
    fn shutdown_write(&mut self);

    /// The connection is about to be freed: a last word if the stream has
    /// one (TLS's `close_notify`), written if the socket takes it at once.
    fn close(&mut self) {}
}

impl Transport for TcpStream {
    fn shutdown_write(&mut self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

/// What a connection reads from and writes to: its socket, or TLS over it.
pub enum Stream<S> {
    Plain(S),
    Tls(Box<TlsStream<S>>),
}

/// A socket with rustls between it and the connection.
pub struct TlsStream<S> {
    socket: S,
    tls: ServerConnection,
    /// Some TLS record has been sent: the peer speaks TLS.
    answered: bool,
    /// Nothing more goes to the peer: it sent what is not TLS, and gets
    /// no answer, not even the alert rustls would send (see `read`).
    silenced: bool,
    /// Our `close_notify` is sent: what the peer sends is read from the
    /// socket and dropped, not given to rustls (see the module doc).
    closed: bool,
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

impl<S: Read + Write> TlsStream<S> {
    /// Plaintext rustls holds, else records from the socket, until there
    /// is plaintext or the socket would block. A peer's close without
    /// `close_notify` reads as end of stream: many clients close that way,
    /// and WebSocket and HTTP frame their own ends.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            if self.closed {
                return self.socket.read(buf);
            }
            self.tls.read_tls(&mut self.socket)?;
            if let Err(e) = self.tls.process_new_packets() {
                // rustls queued an alert that says why. A TLS peer gets it;
                // a peer that never spoke TLS (plain HTTP on this port) gets
                // no answer at all, only the close.
                self.silenced = !self.answered;
                let _ = self.send_records();
                return Err(io::Error::new(ErrorKind::InvalidData, e));
            }
            match self.send_records() {
                Err(e) if e.kind() != ErrorKind::WouldBlock => return Err(e),
                _ => {}
            }
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.send_records()?;
        let taken = self.tls.writer().write(buf)?;
        if taken == 0 && !buf.is_empty() {
            // Only before the handshake is done, with rustls's plaintext
            // buffer full: nothing the broker writes so early.
            return Err(ErrorKind::WouldBlock.into());
        }
        match self.send_records() {
            Err(e) if e.kind() != ErrorKind::WouldBlock => Err(e),
            _ => Ok(taken),
        }
    }

    /// Writes the records rustls holds until none is left; `WouldBlock`
    /// if the socket stops taking them first.
    fn send_records(&mut self) -> io::Result<()> {
        while self.tls.wants_write() && !self.silenced {
            if self.tls.write_tls(&mut self.socket)? == 0 {
                return Err(ErrorKind::WriteZero.into());
            }
            self.answered = true;
        }
        Ok(())
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
    /// TLS first says `close_notify`: a few bytes into a socket that has
    /// just taken everything before them.
    fn shutdown_write(&mut self) {
        if let Stream::Tls(tls) = self {
            tls.tls.send_close_notify();
            tls.closed = true;
            let _ = tls.send_records();
        }
        self.socket_mut().shutdown_write();
    }

    fn close(&mut self) {
        if let Stream::Tls(tls) = self {
            tls.tls.send_close_notify();
            let _ = tls.send_records();
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
        let tls = ServerConnection::new(self.current()).map_err(io::Error::other)?;
        Ok(Stream::Tls(Box::new(TlsStream {
            socket,
            tls,
            answered: false,
            silenced: false,
            closed: false,
        })))
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
