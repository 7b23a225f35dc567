//! Helpers shared by the end-to-end tests: a broker on 127.0.0.1:0 (in
//! this process, or the real binary for signals and configuration), REST
//! helpers, raw HTTP clients (one request per connection, or keep-alive),
//! a WebSocket client (tungstenite) that speaks the JSON protocol, and a
//! raw WebSocket client written by hand for what tungstenite would hide.
//!
//! Long on purpose: every end-to-end test file shares these fixtures,
//! so each file is about its promise and not about sockets.
#![allow(dead_code)]

pub mod cluster;
pub mod sentinel;
pub mod tls;
pub mod tokens;

use serde_json::{json, Value};
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// How long any single wait in a test may take before it fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// A broker running in this process on a free loopback port; shut down and
/// joined when dropped.
pub struct TestBroker {
    pub addr: SocketAddr,
    handle: pubsub::ShutdownHandle,
    server: Option<pubsub::Server>,
}

impl TestBroker {
    pub fn start() -> TestBroker {
        TestBroker::with(&[])
    }

    /// Starts a broker with these environment settings on top of the
    /// defaults (ADDR is always 127.0.0.1:0).
    pub fn with(vars: &[(&str, &str)]) -> TestBroker {
        TestBroker::on("127.0.0.1:0".parse().unwrap(), vars)
    }

    /// Starts a broker on `addr` (a port another broker of the test had,
    /// to restart it under its clients) with these settings.
    pub fn on(addr: SocketAddr, vars: &[(&str, &str)]) -> TestBroker {
        // RUST_LOG=debug shows the broker's logs for a failing test.
        let _ = env_logger::builder().is_test(true).try_init();
        let mut map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        map.insert("ADDR".into(), addr.to_string());
        map.entry("WORKERS".into()).or_insert_with(|| "2".into());
        let config =
            pubsub::Config::from_vars(|name| map.get(name).cloned()).expect("valid test config");
        let server = pubsub::Server::start(config).expect("broker starts");
        TestBroker {
            addr: server.local_addr(),
            handle: server.shutdown_handle(),
            server: Some(server),
        }
    }

    pub fn ws_url(&self) -> String {
        ws_url(self.addr)
    }

    pub fn create_topic(&self, name: &str) {
        create_topic(self.addr, name);
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.ws_url())
    }

    /// Begins the graceful shutdown and waits for it to finish.
    pub fn shutdown(mut self) {
        self.handle.shutdown();
        if let Some(server) = self.server.take() {
            server.wait();
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(server) = self.server.take() {
            server.wait();
        }
    }
}

// ---- REST -----------------------------------------------------------------------

/// The WebSocket endpoint of a broker at `addr`.
pub fn ws_url(addr: SocketAddr) -> String {
    format!("ws://{addr}/ws")
}

/// `POST /topics`, which must answer 201.
pub fn create_topic(addr: SocketAddr, name: &str) {
    let (status, body) = http_json(
        addr,
        "POST",
        "/topics",
        Some(&json!({ "name": name }).to_string()),
        &[],
    );
    assert_eq!(status, 201, "creating {name}: {body}");
}

/// `DELETE /topics/{name}`, which must answer 200; returns the body.
pub fn delete_topic(addr: SocketAddr, name: &str) -> Value {
    let (status, body) = http_json(addr, "DELETE", &format!("/topics/{name}"), None, &[]);
    assert_eq!(status, 200, "deleting {name}: {body}");
    body
}

/// `GET /topics`, which must answer 200: (name, subscribers) as listed.
pub fn topic_list(addr: SocketAddr) -> Vec<(String, u64)> {
    let (status, body) = http_json(addr, "GET", "/topics", None, &[]);
    assert_eq!(status, 200, "{body}");
    body["topics"]
        .as_array()
        .unwrap_or_else(|| panic!("no topics array: {body}"))
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                t["subscribers"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// The subscriber count `GET /topics` lists for `topic`; None if it is not
/// listed.
pub fn subscribers(addr: SocketAddr, topic: &str) -> Option<u64> {
    topic_list(addr)
        .into_iter()
        .find(|(name, _)| name == topic)
        .map(|(_, n)| n)
}

// ---- raw HTTP ---------------------------------------------------------------------

/// A response read off the wire.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Reads one response from `reader` (Content-Length bodies only, as the
/// broker sends).
pub fn read_response(reader: &mut impl BufRead) -> HttpResponse {
    let mut status_line = String::new();
    reader.read_line(&mut status_line).expect("status line");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"))
        .parse()
        .unwrap();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("header line");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').expect("header has a colon");
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("body");
    HttpResponse {
        status,
        headers,
        body,
    }
}

/// One request on a new connection (`Connection: close`).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> HttpResponse {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body.unwrap_or(""));
    stream.write_all(request.as_bytes()).unwrap();
    read_response(&mut BufReader::new(stream))
}

pub fn http_json(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let response = http(addr, method, path, body, headers);
    (response.status, response.json())
}

/// The text of `method path` as a keep-alive request (with a JSON body, if
/// any).
pub fn request_text(method: &str, path: &str, body: Option<&str>) -> String {
    match body {
        Some(body) => format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
        None => format!("{method} {path} HTTP/1.1\r\nHost: test\r\n\r\n"),
    }
}

/// A keep-alive HTTP connection on raw TCP: bytes written by hand (several
/// requests in one write if the test likes), responses read in order.
pub struct HttpConn {
    pub writer: TcpStream,
    pub reader: BufReader<TcpStream>,
}

impl HttpConn {
    pub fn open(addr: SocketAddr) -> HttpConn {
        let writer = TcpStream::connect(addr).expect("connect");
        writer.set_read_timeout(Some(WAIT)).unwrap();
        writer.set_nodelay(true).unwrap();
        let reader = BufReader::with_capacity(256 * 1024, writer.try_clone().unwrap());
        HttpConn { writer, reader }
    }

    /// Writes `bytes` as they are.
    pub fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write");
        self.writer.flush().unwrap();
    }

    /// Reads the next response.
    pub fn response(&mut self) -> HttpResponse {
        read_response(&mut self.reader)
    }

    /// One request (see `request_text`) and its response.
    pub fn request(&mut self, method: &str, path: &str, body: Option<&str>) -> HttpResponse {
        self.pipeline(&[request_text(method, path, body)]).remove(0)
    }

    /// Sends `requests` in one write, then reads as many responses.
    pub fn pipeline(&mut self, requests: &[String]) -> Vec<HttpResponse> {
        self.send(requests.concat().as_bytes());
        requests.iter().map(|_| self.response()).collect()
    }

    /// The server has closed the connection: a read gives end of stream
    /// (or a reset), not more bytes and not a timeout.
    pub fn assert_closed(&mut self) {
        let mut byte = [0u8; 1];
        match self.reader.read(&mut byte) {
            Ok(0) => {}
            Ok(_) => panic!("expected the connection to be closed, got more bytes"),
            Err(e) if is_reset(&e) => {}
            Err(e) => panic!("expected the connection to be closed: {e}"),
        }
    }
}

/// A read that timed out (the socket's read timeout passed).
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// A read that failed because the peer reset the connection.
pub fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
    )
}

/// Reads until the peer ends the stream (end of file or reset) or `limit`
/// passes. Returns the bytes and whether the stream ended.
pub fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + limit;
    let mut received = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (received, false);
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut chunk) {
            Ok(0) => return (received, true),
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(e) if is_reset(&e) => return (received, true),
            Err(e) if is_timeout(&e) => return (received, false),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("read: {e}"),
        }
    }
}

// ---- WebSocket --------------------------------------------------------------------

/// A WebSocket client speaking the JSON protocol, over plain TCP or, with
/// `tls::wss_client`, over TLS.
pub struct Client<S = MaybeTlsStream<TcpStream>> {
    pub ws: WebSocket<S>,
}

impl Client {
    pub fn connect(url: &str) -> Client {
        let (ws, response) =
            tungstenite::connect(url).unwrap_or_else(|e| panic!("connect {url}: {e}"));
        assert_eq!(response.status(), 101);
        Client::from_socket(ws)
    }

    pub fn from_socket(ws: WebSocket<MaybeTlsStream<TcpStream>>) -> Client {
        if let MaybeTlsStream::Plain(stream) = ws.get_ref() {
            stream.set_read_timeout(Some(WAIT)).unwrap();
            stream.set_nodelay(true).unwrap();
        }
        Client { ws }
    }

    pub fn set_read_timeout(&mut self, timeout: Duration) {
        if let MaybeTlsStream::Plain(stream) = self.ws.get_ref() {
            stream.set_read_timeout(Some(timeout)).unwrap();
        }
    }
}

impl<S: Read + Write> Client<S> {
    pub fn send(&mut self, value: Value) {
        self.ws
            .send(Message::text(value.to_string()))
            .expect("send");
    }

    pub fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text.to_string())).expect("send");
    }

    /// The next JSON message, skipping heartbeats (`info ping`) and
    /// protocol pings. Panics on close or timeout.
    pub fn recv(&mut self) -> Value {
        loop {
            match self.ws.read().unwrap_or_else(|e| panic!("read: {e}")) {
                Message::Text(text) => {
                    let value: Value =
                        serde_json::from_str(text.as_str()).expect("server sends JSON");
                    if value["type"] == "info" && value["msg"] == "ping" {
                        continue;
                    }
                    return value;
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text message, got {other:?}"),
            }
        }
    }

    /// The next message, which must be of `kind`.
    pub fn expect(&mut self, kind: &str) -> Value {
        let value = self.recv();
        assert_eq!(value["type"], kind, "expected {kind}, got {value}");
        value
    }

    pub fn subscribe(&mut self, topic: &str, last_n: u64) -> Value {
        self.send(json!({"type":"subscribe","topic":topic,"client_id":"test","last_n":last_n,"request_id":format!("sub-{topic}")}));
        let ack = self.expect("ack");
        assert_eq!(ack["topic"], topic);
        ack
    }

    pub fn publish(&mut self, topic: &str, id: &str, payload: Value) -> Value {
        self.send(json!({"type":"publish","topic":topic,"message":{"id":id,"payload":payload},"request_id":format!("pub-{id}")}));
        let ack = self.expect("ack");
        assert_eq!(ack["request_id"], format!("pub-{id}"));
        ack
    }

    /// Sends a ping tagged `tag`; the next message (heartbeats aside) must
    /// be its pong, so nothing else was waiting.
    pub fn ping(&mut self, tag: &str) {
        self.send(json!({"type":"ping","request_id":tag}));
        let next = self.recv();
        assert_eq!(
            (next["type"].as_str(), next["request_id"].as_str()),
            (Some("pong"), Some(tag)),
            "expected only the pong, got {next}"
        );
    }

    /// Queues (does not flush) one frame of a fragmented text message:
    /// the `first` is a text frame, the others continuations; `fin` ends
    /// the message.
    pub fn write_fragment(&mut self, bytes: &[u8], first: bool, fin: bool) {
        use tungstenite::protocol::frame::coding::{Data, OpCode};
        use tungstenite::protocol::frame::Frame;
        let opcode = OpCode::Data(if first { Data::Text } else { Data::Continue });
        self.ws
            .write(Message::Frame(Frame::message(bytes.to_vec(), opcode, fin)))
            .expect("write");
    }

    /// Reads until the server closes; returns the close frame's code and
    /// reason, and every JSON message seen before it.
    pub fn read_until_close(&mut self) -> (Option<u16>, String, Vec<Value>) {
        let mut seen = Vec::new();
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            match self.ws.read() {
                Ok(Message::Text(text)) => seen.push(serde_json::from_str(text.as_str()).unwrap()),
                Ok(Message::Close(frame)) => {
                    return (
                        frame.as_ref().map(|f| u16::from(f.code)),
                        frame.map(|f| f.reason.to_string()).unwrap_or_default(),
                        seen,
                    )
                }
                Ok(_) => {}
                Err(e) => panic!("connection ended without a close frame: {e}; seen {seen:?}"),
            }
        }
        panic!("no close within {WAIT:?}; seen {seen:?}");
    }
}

/// A valid upgrade request for /ws, as a client writes it.
pub const WS_UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

/// A client frame built by hand, masked as a client's must be; `first` is
/// the FIN/RSV/opcode byte (0x81: FIN + text). Any payload length.
pub fn masked_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    client_frame(first, payload, Some([0x37, 0xfa, 0x21, 0x3d]))
}

/// A client frame without the mask, which a server must refuse; `first` as
/// for `masked_frame`.
pub fn unmasked_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    client_frame(first, payload, None)
}

fn client_frame(first: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut out = vec![first];
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(mask) => {
            out.extend_from_slice(&mask);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A TCP connection to `addr` whose receive buffer is `recv_buffer` bytes
/// (set before connecting), so that the kernel absorbs little of what the
/// broker writes to it. Read timeout `WAIT`, no Nagle.
pub fn tcp_with_recv_buffer(addr: SocketAddr, recv_buffer: usize) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    socket.set_recv_buffer_size(recv_buffer).unwrap();
    socket.connect_timeout(&addr.into(), WAIT).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// A WebSocket client done by hand over a plain socket: it writes only
/// what the test sends (it never answers a ping), and reads only when the
/// test does.
pub struct RawWs {
    pub stream: TcpStream,
    /// Bytes read but not yet returned as frames.
    buf: Vec<u8>,
}

impl RawWs {
    /// Connects (read timeout `WAIT`, no Nagle) and upgrades.
    pub fn connect(addr: SocketAddr) -> RawWs {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_nodelay(true).unwrap();
        RawWs::upgrade(stream)
    }

    /// Connects with a receive buffer of `recv_buffer` bytes (see
    /// `tcp_with_recv_buffer`) and upgrades.
    pub fn connect_with_recv_buffer(addr: SocketAddr, recv_buffer: usize) -> RawWs {
        RawWs::upgrade(tcp_with_recv_buffer(addr, recv_buffer))
    }

    /// Sends `WS_UPGRADE` and reads the response head, which must be a 101.
    fn upgrade(mut stream: TcpStream) -> RawWs {
        stream.write_all(WS_UPGRADE.as_bytes()).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        let end = loop {
            if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos + 4;
            }
            let n = stream.read(&mut chunk).expect("upgrade response");
            assert!(n > 0, "closed during the upgrade");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        buf.drain(..end);
        RawWs { stream, buf }
    }

    /// Writes `bytes` as they are (see `masked_frame`).
    pub fn send_frame(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Sends `text` as one masked text frame.
    pub fn send_text(&mut self, text: &str) {
        self.send_frame(&masked_frame(0x81, text.as_bytes()));
    }

    /// The next whole frame: `Ok(Some((opcode, payload)))`, `Ok(None)` at
    /// end of stream. Server frames must be unmasked and unfragmented.
    pub fn next_frame(&mut self) -> io::Result<Option<(u8, Vec<u8>)>> {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            if let Some((opcode, payload, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                return Ok(Some((opcode, payload)));
            }
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Ok(None);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next frame, which must be a text frame holding JSON.
    pub fn next_json(&mut self) -> Value {
        match self.next_frame().expect("read") {
            Some((0x1, payload)) => serde_json::from_slice(&payload).unwrap(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// One server frame at the start of `buf`, if it is all there: (opcode,
/// payload, bytes used).
fn parse_server_frame(buf: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    assert_eq!(buf[0] & 0x80, 0x80, "the broker sends unfragmented frames");
    assert_eq!(buf[1] & 0x80, 0, "server frames are not masked");
    let (len, header) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => (
            u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
            10,
        ),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    if buf.len() < header + len {
        return None;
    }
    Some((
        buf[0] & 0x0f,
        buf[header..header + len].to_vec(),
        header + len,
    ))
}

// ---- the real binary --------------------------------------------------------------

/// Runs the binary with a cleared environment plus ADDR=127.0.0.1:0,
/// WORKERS=2 and `env` (which may override both), expecting it to exit by
/// itself within `WAIT`. Returns the exit code and stderr.
pub fn run_to_exit(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut child = broker_command(env).spawn().expect("spawn broker");
    let mut pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = reader.join().unwrap();
            panic!("{env:?}: the broker did not exit within {WAIT:?}; stderr: {stderr}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.code(), reader.join().unwrap())
}

/// The broker binary with a cleared environment plus ADDR=127.0.0.1:0,
/// WORKERS=2 and `env` (which may override both); stdin and stdout null,
/// stderr piped.
pub fn broker_command(env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pubsub"));
    command
        .env_clear()
        .env("ADDR", "127.0.0.1:0")
        .env("WORKERS", "2");
    for (k, v) in env {
        command.env(k, v);
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// The real binary, started with `env` on 127.0.0.1:0; its stderr is
/// collected on a thread so that it never blocks.
pub struct BrokerProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl BrokerProcess {
    /// Starts the binary (see `broker_command`) and waits for its
    /// `listening on` line.
    pub fn spawn(env: &[(&str, &str)]) -> BrokerProcess {
        let mut child = broker_command(env).spawn().expect("spawn broker");
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let stderr = std::sync::Arc::clone(&stderr);
            let pipe = child.stderr.take().unwrap();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if let Some(rest) = line.split("listening on ").nth(1) {
                        // The address ends where the text (or JSON) line goes on.
                        let addr = rest
                            .split(|c: char| !(c.is_ascii_alphanumeric() || ".:[]".contains(c)))
                            .next();
                        let _ = tx.send(addr.unwrap_or_default().to_string());
                    }
                    let mut all = stderr.lock().unwrap();
                    all.push_str(&line);
                    all.push('\n');
                }
            });
        }
        let addr = match rx.recv_timeout(WAIT) {
            Ok(addr) => addr.parse().expect("listening line names an address"),
            Err(_) => {
                let _ = child.kill();
                panic!("no 'listening on' line; stderr: {}", stderr.lock().unwrap());
            }
        };
        BrokerProcess {
            child,
            addr,
            stderr,
        }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args(["-s", signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit; panics after `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "broker did not exit within {limit:?}; stderr: {}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to exit (panics after `limit`) and asserts
    /// exit code 0; returns stderr.
    pub fn wait_success(&mut self, limit: Duration) -> String {
        let status = self.wait_exit(limit);
        assert_eq!(status.code(), Some(0), "{status}; {}", self.stderr());
        self.stderr()
    }

    /// Sends SIGTERM and expects exit code 0 within `WAIT`; returns stderr.
    pub fn stop(mut self) -> String {
        self.signal("TERM");
        self.wait_success(WAIT)
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `condition` until it holds or `WAIT` passes.
pub fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if condition() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}
