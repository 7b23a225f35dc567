//! Helpers shared by the end-to-end tests: a broker on 127.0.0.1:0 (in
//! this process, or the real binary for signals and configuration), a raw
//! HTTP client, and a WebSocket client (tungstenite) that speaks the JSON
//! protocol.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
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
        // RUST_LOG=debug shows the broker's logs for a failing test.
        let _ = env_logger::builder().is_test(true).try_init();
        let mut map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        map.insert("ADDR".into(), "127.0.0.1:0".into());
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
        format!("ws://{}/ws", self.addr)
    }

    pub fn create_topic(&self, name: &str) {
        let (status, body) = http_json(
            self.addr,
            "POST",
            "/topics",
            Some(&json!({ "name": name }).to_string()),
            &[],
        );
        assert_eq!(status, 201, "creating {name}: {body}");
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

/// A WebSocket client speaking the JSON protocol.
pub struct Client {
    pub ws: WebSocket<MaybeTlsStream<TcpStream>>,
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

/// The real binary, started with `env` on 127.0.0.1:0; its stderr is
/// collected on a thread so that it never blocks.
pub struct BrokerProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl BrokerProcess {
    pub fn spawn(env: &[(&str, &str)]) -> BrokerProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pubsub"));
        command
            .env_clear()
            .env("ADDR", "127.0.0.1:0")
            .env("WORKERS", "2");
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn broker");
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
