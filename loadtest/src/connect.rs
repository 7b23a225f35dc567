//! Opening a client connection, blocking and bounded by a deadline: the TCP
//! connect (from a chosen loopback source address, with a chosen receive
//! buffer), for `wss://` the TLS handshake, the WebSocket upgrade written
//! by hand, then the first exchange that makes it a subscriber or a
//! publisher (pubsub: `subscribe` and its ack; NATS: `CONNECT`, `SUB`,
//! `PING` and the `PONG` that proves the `SUB` was applied). The socket,
//! its TLS state and any bytes already read past that exchange are then
//! handed to an event loop (see [`crate::tls`] for why set-up blocks).

use crate::endpoint::{Endpoint, TargetKind};
use crate::nats::{self, NatsEvent, NatsParser};
use crate::tls::BlockingStream;
use crate::wire;
use crate::wsframe::{self, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT};
use anyhow::{anyhow, bail, Context, Result};
use rustls::ClientConnection;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Instant;

/// How the client socket is set up before it connects.
#[derive(Debug, Clone, Copy, Default)]
pub struct SocketOptions {
    /// Bind to this local address first (to use more than one source
    /// address's ephemeral ports).
    pub source: Option<IpAddr>,
    /// `SO_RCVBUF`, set before connecting so the TCP window follows it.
    pub recv_buffer: Option<usize>,
}

/// A connection ready for the event loop.
#[derive(Debug)]
pub struct Opened {
    pub stream: TcpStream,
    /// `wss://`: the TLS session, past its handshake.
    pub tls: Option<Box<ClientConnection>>,
    /// Bytes received after the setup exchange, not yet parsed.
    pub unread: Vec<u8>,
    /// NATS only: the parser, with any partial message it holds.
    pub nats: Option<NatsParser>,
    /// pubsub subscribers: the subscribe ack (it names the topic's epoch
    /// and `last_seq`).
    pub subscribe_ack: Option<Vec<u8>>,
}

/// Connects and subscribes to `topic`; returns once the server has
/// confirmed the subscription.
pub fn open_subscriber(
    endpoint: &Endpoint,
    options: SocketOptions,
    topic: &str,
    id: u64,
    deadline: Instant,
) -> Result<Opened> {
    let mut ws = BlockingWs::open(endpoint, options, deadline)?;
    match endpoint.kind {
        TargetKind::Pubsub => {
            let mut request = Vec::new();
            wire::append_subscribe_json(&mut request, topic, id, None);
            ws.send(OP_TEXT, &request)?;
            let ack = loop {
                let message = ws.next_message()?;
                match wire::message_type(&message) {
                    b"ack" => break message,
                    b"error" => bail!("subscribe refused: {}", String::from_utf8_lossy(&message)),
                    _ => {}
                }
            };
            let mut opened = ws.into_opened(None);
            opened.subscribe_ack = Some(ack);
            Ok(opened)
        }
        TargetKind::Nats => {
            let mut commands = nats::CONNECT.to_vec();
            nats::append_sub(&mut commands, topic, id);
            commands.extend_from_slice(nats::PING);
            ws.nats_setup(&commands)
        }
    }
}

/// Connects a publisher (NATS: and sends `CONNECT`).
pub fn open_publisher(endpoint: &Endpoint, deadline: Instant) -> Result<Opened> {
    let ws = BlockingWs::open(endpoint, SocketOptions::default(), deadline)?;
    match endpoint.kind {
        TargetKind::Pubsub => Ok(ws.into_opened(None)),
        TargetKind::Nats => {
            let mut commands = nats::CONNECT.to_vec();
            commands.extend_from_slice(nats::PING);
            ws.nats_setup(&commands)
        }
    }
}

/// A WebSocket over a blocking connection, for the setup exchange only
/// (it allocates freely; the event loop does not).
struct BlockingWs {
    stream: BlockingStream,
    /// Received bytes not yet consumed.
    buf: Vec<u8>,
    deadline: Instant,
}

impl BlockingWs {
    fn open(endpoint: &Endpoint, options: SocketOptions, deadline: Instant) -> Result<BlockingWs> {
        let stream = connect(endpoint, options, deadline)?;
        let mut ws = BlockingWs {
            stream,
            buf: Vec::with_capacity(1024),
            deadline,
        };
        ws.upgrade(endpoint)?;
        Ok(ws)
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        let left = remaining(self.deadline)?;
        self.stream.socket().set_write_timeout(Some(left))?;
        self.stream.write_all(bytes).context("write")
    }

    /// Reads more bytes into `buf`; EOF is an error here.
    fn fill(&mut self) -> Result<()> {
        let left = remaining(self.deadline)?;
        self.stream.socket().set_read_timeout(Some(left))?;
        let mut chunk = [0u8; 16 << 10];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => bail!("the server closed the connection"),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(());
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    bail!("timed out waiting for the server")
                }
                Err(e) => return Err(e).context("read"),
            }
        }
    }

    fn upgrade(&mut self, endpoint: &Endpoint) -> Result<()> {
        let (request, key) = upgrade_request(endpoint);
        self.write_all(&request)?;
        let head_len = loop {
            if let Some(len) = upgrade_response(&self.buf, &key)? {
                break len;
            }
            self.fill()?;
        };
        self.buf.drain(..head_len);
        Ok(())
    }

    fn send(&mut self, opcode: u8, payload: &[u8]) -> Result<()> {
        let mut frame = Vec::with_capacity(payload.len() + 14);
        wsframe::append_client_frame(&mut frame, opcode, payload);
        self.write_all(&frame)
    }

    /// The next data message (reassembled if fragmented), answering pings
    /// on the way. A close frame is an error: setup did not complete.
    fn next_message(&mut self) -> Result<Vec<u8>> {
        let mut message = Vec::new();
        loop {
            let Some(head) = wsframe::parse_server_frame(&self.buf)? else {
                self.fill()?;
                continue;
            };
            let payload = head.payload(&self.buf).to_vec();
            self.buf.drain(..head.frame_len());
            match head.opcode {
                OP_TEXT | OP_BINARY | OP_CONTINUATION => {
                    message.extend_from_slice(&payload);
                    if head.fin {
                        return Ok(message);
                    }
                }
                OP_PING => self.send(OP_PONG, &payload)?,
                OP_CLOSE => bail!(
                    "closed by the server (code {:?}: {})",
                    wsframe::close_code(&payload),
                    String::from_utf8_lossy(payload.get(2..).unwrap_or_default())
                ),
                _ => {}
            }
        }
    }

    /// Sends NATS commands ending in `PING` and waits for the `PONG`.
    fn nats_setup(mut self, commands: &[u8]) -> Result<Opened> {
        self.send(OP_BINARY, commands)?;
        let mut parser = NatsParser::default();
        let mut ponged = false;
        let mut answer_pings = 0;
        let mut refusal = None;
        while !ponged {
            let message = self.next_message()?;
            parser.feed(&message, |event| match event {
                NatsEvent::Pong => ponged = true,
                NatsEvent::Ping => answer_pings += 1,
                NatsEvent::Err(text) => refusal = Some(String::from_utf8_lossy(text).into_owned()),
                // Nothing is published before the run starts, so no MSG
                // can arrive here.
                NatsEvent::Info(_) | NatsEvent::Ok | NatsEvent::Msg { .. } => {}
            })?;
            if let Some(error) = refusal {
                bail!("NATS refused the setup: {error}");
            }
            for _ in 0..std::mem::take(&mut answer_pings) {
                self.send(OP_BINARY, nats::PONG)?;
            }
        }
        Ok(self.into_opened(Some(parser)))
    }

    fn into_opened(self, nats: Option<NatsParser>) -> Opened {
        let mut unread = self.buf;
        let (stream, tls) = self.stream.into_parts(&mut unread);
        Opened {
            stream,
            tls,
            unread,
            nats,
            subscribe_ack: None,
        }
    }
}

/// The time left before `deadline`; an error once it has passed.
fn remaining(deadline: Instant) -> Result<std::time::Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        bail!("setup deadline passed");
    }
    Ok(left)
}

/// A blocking connection to `endpoint`: TCP, and for `wss://` the TLS
/// handshake, done by `deadline`.
pub fn connect(
    endpoint: &Endpoint,
    options: SocketOptions,
    deadline: Instant,
) -> Result<BlockingStream> {
    let socket = tcp_connect(endpoint.addr, options, deadline)?;
    let Some(tls) = &endpoint.tls else {
        return Ok(BlockingStream::Plain(socket));
    };
    let left = remaining(deadline)?;
    socket.set_read_timeout(Some(left))?;
    socket.set_write_timeout(Some(left))?;
    BlockingStream::handshake(socket, tls)
        .with_context(|| format!("TLS handshake with {}", endpoint.addr))
}

/// The HTTP upgrade request for `endpoint`, and the `Sec-WebSocket-Key` it
/// carries (for [`upgrade_response`]).
pub fn upgrade_request(endpoint: &Endpoint) -> (Vec<u8>, String) {
    let key = tungstenite::handshake::client::generate_key();
    let mut request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n",
        endpoint.path, endpoint.host
    );
    match (&endpoint.token, &endpoint.api_key) {
        (Some(token), _) => request.push_str(&format!("Authorization: Bearer {token}\r\n")),
        (None, Some(api_key)) => request.push_str(&format!("X-API-Key: {api_key}\r\n")),
        (None, None) => {}
    }
    request.push_str("\r\n");
    (request.into_bytes(), key)
}

/// Checks the response to an upgrade request sent with `key`, at the start
/// of `buf`: `Ok(None)` while its head is incomplete, else the head's
/// length (WebSocket frames follow it); an error if it is not a valid 101.
pub fn upgrade_response(buf: &[u8], key: &str) -> Result<Option<usize>> {
    let Some(end) = memchr::memmem::find(buf, b"\r\n\r\n") else {
        if buf.len() > 16 << 10 {
            bail!("upgrade response head over 16 KiB");
        }
        return Ok(None);
    };
    let head_len = end + 4;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    response
        .parse(&buf[..head_len])
        .context("unparsable upgrade response")?;
    if response.code != Some(101) {
        bail!(
            "upgrade refused: HTTP {} {}",
            response.code.unwrap_or(0),
            response.reason.unwrap_or("")
        );
    }
    let accept = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
        .map(|h| h.value)
        .ok_or_else(|| anyhow!("101 without Sec-WebSocket-Accept"))?;
    if accept != tungstenite::handshake::derive_accept_key(key.as_bytes()).as_bytes() {
        bail!("wrong Sec-WebSocket-Accept");
    }
    Ok(Some(head_len))
}

/// A blocking TCP connection to `addr`, with `TCP_NODELAY`.
fn tcp_connect(addr: SocketAddr, options: SocketOptions, deadline: Instant) -> Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if let Some(size) = options.recv_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    if let Some(source) = options.source {
        socket
            .bind(&SockAddr::from(SocketAddr::new(source, 0)))
            .with_context(|| format!("bind to {source}"))?;
    }
    let timeout = deadline.saturating_duration_since(Instant::now());
    if timeout.is_zero() {
        bail!("setup deadline passed");
    }
    socket
        .connect_timeout(&SockAddr::from(addr), timeout)
        .with_context(|| format!("connect to {addr}"))?;
    socket.set_tcp_nodelay(true)?;
    Ok(socket.into())
}

/// A non-blocking connection to `endpoint` begun (its TCP connect under
/// way) and registered with `registry` as `token`, readable and writable;
/// with a TLS client when the endpoint is `wss://`, whose handshake then
/// happens in the event loop.
pub fn start_in_loop(
    endpoint: &Endpoint,
    registry: &mio::Registry,
    token: mio::Token,
) -> std::io::Result<(mio::net::TcpStream, Option<ClientConnection>)> {
    let tls = endpoint
        .tls
        .as_ref()
        .map(|tls| tls.connection())
        .transpose()?;
    let mut stream = mio::net::TcpStream::connect(endpoint.addr)?;
    registry.register(
        &mut stream,
        token,
        mio::Interest::READABLE | mio::Interest::WRITABLE,
    )?;
    Ok((stream, tls))
}
