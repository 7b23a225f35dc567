//! Faults at the socket level, end to end: stalled and oversized requests,
//! garbage upgrades, resets in the middle of a frame, half-closed sockets,
//! connection and descriptor exhaustion, churn (subscribe cycles, topic
//! creation and deletion) and deletion under load.
//!
//! Every test also checks the three promises that no fault may break: the
//! broker does not panic and keeps serving (a fresh client can still create
//! a topic, subscribe, publish and get the event); other clients see no
//! error and no stall (a witness publishes and reads along on its own
//! connections all the while, and must get every acked event, in order);
//! and nothing acked is lost for subscribers that keep reading.
//!
//! Long on purpose: one file per promise, and this one (no fault reaches
//! another client) has a case per fault, each with its own witness.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, Once, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::Message;

// ---- no panic ---------------------------------------------------------------------

/// Panics seen on the in-process brokers' worker threads, by any test of
/// this file.
static WORKER_PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Records every panic of a thread named `worker-*` (the broker's event
/// loops), then reports it as usual.
fn watch_worker_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            if let Some(name) = thread.name().filter(|n| n.starts_with("worker-")) {
                WORKER_PANICS
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(format!("{name}: {info}"));
            }
            default(info);
        }));
    });
}

fn assert_no_worker_panic() {
    let panics = WORKER_PANICS.lock().unwrap_or_else(PoisonError::into_inner);
    assert!(panics.is_empty(), "a broker worker panicked: {panics:?}");
}

/// An in-process broker whose worker panics are watched.
fn start(vars: &[(&str, &str)]) -> TestBroker {
    watch_worker_panics();
    TestBroker::with(vars)
}

/// The real binary is alive and printed no panic.
fn assert_process_healthy(broker: &mut BrokerProcess) {
    assert!(
        broker.child.try_wait().unwrap().is_none(),
        "the broker exited; stderr: {}",
        broker.stderr()
    );
    let stderr = broker.stderr();
    assert!(
        !stderr.contains("panicked"),
        "the broker panicked: {stderr}"
    );
}

// ---- helpers ----------------------------------------------------------------------

fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The plain TCP stream under a WebSocket client.
fn tcp_of(client: &Client) -> TcpStream {
    match client.ws.get_ref() {
        MaybeTlsStream::Plain(stream) => stream.try_clone().unwrap(),
        _ => unreachable!("the tests speak plain ws://"),
    }
}

/// Drops `stream` with SO_LINGER 0, so the peer gets an RST. Every other
/// handle on the socket must be gone already (or go right after).
fn reset(stream: TcpStream) {
    let socket = socket2::Socket::from(stream);
    socket.set_linger(Some(Duration::ZERO)).unwrap();
    drop(socket);
}

/// Every complete response at the start of `bytes` (Content-Length bodies).
fn parse_responses(bytes: &[u8]) -> Vec<HttpResponse> {
    let mut responses = Vec::new();
    let mut rest = bytes;
    while let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&rest[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let Some(status) = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
        else {
            break;
        };
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let start = end + 4;
        if rest.len() < start + length {
            break;
        }
        responses.push(HttpResponse {
            status,
            headers,
            body: rest[start..start + length].to_vec(),
        });
        rest = &rest[start + length..];
    }
    responses
}

/// Reads one whole response off `stream` within `limit`; None if the
/// stream ended or stayed silent first.
fn read_one_response(stream: &mut TcpStream, limit: Duration) -> Option<HttpResponse> {
    let deadline = Instant::now() + limit;
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(response) = parse_responses(&received).into_iter().next() {
            return Some(response);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

/// `GET path` on a new connection, without panicking on a refused or
/// reset connection.
fn try_get(addr: SocketAddr, path: &str) -> Option<(u16, Value)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .ok()?;
    let response = read_one_response(&mut stream, WAIT)?;
    Some((
        response.status,
        serde_json::from_slice(&response.body).ok()?,
    ))
}

/// Waits until `/health` (on its own connection) reports `open`
/// connections besides itself.
fn wait_for_open_connections(addr: SocketAddr, open: u64) {
    eventually(
        &format!("{open} open connections"),
        || matches!(try_get(addr, "/health"), Some((200, health)) if health["connections"] == open + 1),
    );
}

/// A WebSocket client, retrying while the broker refuses (a connection
/// that just closed may not be reaped yet).
fn connect_retrying(addr: SocketAddr) -> Client {
    let deadline = Instant::now() + WAIT;
    loop {
        match tungstenite::connect(ws_url(addr)) {
            Ok((ws, _)) => return Client::from_socket(ws),
            Err(e) if Instant::now() > deadline => panic!("cannot connect: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// A fresh client can create a topic, subscribe, publish and get the event.
fn assert_serving(addr: SocketAddr) {
    let topic = unique("fresh");
    create_topic(addr, &topic);
    let mut sub = connect_retrying(addr);
    sub.subscribe(&topic, 0);
    let mut publisher = connect_retrying(addr);
    publisher.publish(&topic, "fresh-1", json!({"fresh": true}));
    let event = sub.expect("event");
    assert_eq!(event["topic"], topic.as_str(), "{event}");
    assert_eq!(event["message"]["id"], "fresh-1", "{event}");
    assert_eq!(event["seq"], 1, "{event}");
}

/// Reads `count` events of `topic`, which must carry seqs `first..`.
fn expect_run(client: &mut Client, topic: &str, first: u64, count: u64) {
    for seq in first..first + count {
        let event = client.expect("event");
        assert_eq!(event["topic"], topic, "{event}");
        assert_eq!(event["seq"], seq, "gap, duplicate or reorder: {event}");
    }
}

/// A tiny deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, len: usize, alphabet: &[u8]) -> Vec<u8> {
        (0..len)
            .map(|_| alphabet[self.below(alphabet.len())])
            .collect()
    }
}

// ---- the witness ------------------------------------------------------------------

/// Another client, on its own topic and connections, that publishes and
/// reads along while a test runs: each of its events must arrive, in
/// order, with consecutive seqs, and none may take long.
struct Witness {
    topic: String,
    stop: Arc<AtomicBool>,
    confirmed: Arc<AtomicU64>,
    handle: Option<JoinHandle<Duration>>,
}

/// One publish-and-read round may take this long before it is a stall.
const STALL: Duration = Duration::from_secs(5);

impl Witness {
    fn start(addr: SocketAddr) -> Witness {
        let topic = unique("witness");
        create_topic(addr, &topic);
        let stop = Arc::new(AtomicBool::new(false));
        let confirmed = Arc::new(AtomicU64::new(0));
        let (ready_tx, ready_rx) = mpsc::channel();
        let handle = {
            let (topic, stop, confirmed) =
                (topic.clone(), Arc::clone(&stop), Arc::clone(&confirmed));
            std::thread::spawn(move || {
                let mut sub = Client::connect(&ws_url(addr));
                sub.subscribe(&topic, 0);
                let mut publisher = Client::connect(&ws_url(addr));
                ready_tx.send(()).unwrap();
                let mut slowest = Duration::ZERO;
                let deadline = Instant::now() + Duration::from_secs(180);
                let mut seq = 0u64;
                while !stop.load(Ordering::Acquire) && seq < 200_000 && Instant::now() < deadline {
                    seq += 1;
                    let id = format!("w{seq}");
                    let began = Instant::now();
                    publisher.publish(&topic, &id, json!({ "n": seq }));
                    let event = sub.expect("event");
                    assert_eq!(event["topic"], topic.as_str(), "witness: {event}");
                    assert_eq!(event["message"]["id"], id, "witness: {event}");
                    assert_eq!(event["seq"], seq, "witness: {event}");
                    slowest = slowest.max(began.elapsed());
                    confirmed.store(seq, Ordering::Release);
                    std::thread::sleep(Duration::from_millis(3));
                }
                slowest
            })
        };
        if ready_rx.recv_timeout(WAIT).is_err() {
            let why = match handle.join() {
                Err(e) => panic_text(e),
                Ok(_) => "no reason".into(),
            };
            panic!("the witness could not start: {why}");
        }
        Witness {
            topic,
            stop,
            confirmed,
            handle: Some(handle),
        }
    }

    /// Waits until `n` more of the witness's events went through.
    fn advance(&self, n: u64) {
        let target = self.confirmed.load(Ordering::Acquire) + n;
        let deadline = Instant::now() + WAIT;
        while self.confirmed.load(Ordering::Acquire) < target {
            let finished = self.handle.as_ref().is_some_and(|h| h.is_finished());
            assert!(!finished, "the witness stopped early");
            assert!(
                Instant::now() < deadline,
                "the witness stalled at {} events",
                self.confirmed.load(Ordering::Acquire)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops the witness and checks what it saw; returns its event count.
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Release);
        let slowest = match self.handle.take().unwrap().join() {
            Ok(slowest) => slowest,
            Err(e) => panic!("the witness failed: {}", panic_text(e)),
        };
        let events = self.confirmed.load(Ordering::Acquire);
        assert!(events > 0, "the witness saw no event");
        assert!(
            slowest < STALL,
            "a witness round took {slowest:?}: the fault stalled others"
        );
        events
    }
}

impl Drop for Witness {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

fn panic_text(e: Box<dyn std::any::Any + Send>) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic".into())
}

// ---- stalled and oversized requests -------------------------------------------------

#[test]
fn half_sent_heads_are_closed_after_the_handshake_timeout() {
    let broker = start(&[("HANDSHAKE_TIMEOUT_SECS", "1")]);
    let witness = Witness::start(broker.addr);

    let heads: [&[u8]; 3] = [
        b"",
        b"GET /topics HTTP/1.1\r\nHost: te",
        b"GET /ws HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upg",
    ];
    let mut stalled = Vec::new();
    for head in heads {
        let mut stream = TcpStream::connect(broker.addr).unwrap();
        stream.write_all(head).unwrap();
        stalled.push((stream, Instant::now()));
    }

    // Meanwhile another client is served normally, on a keep-alive
    // connection, and the witness carries on.
    let mut other = HttpConn::open(broker.addr);
    let began = Instant::now();
    let mut served = 0;
    while began.elapsed() < Duration::from_millis(700) && served < 100 {
        let response = other.request("GET", "/health", None);
        assert_eq!(response.status, 200);
        served += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(served >= 5, "only {served} requests were served meanwhile");
    witness.advance(5);

    for (i, (mut stream, opened)) in stalled.into_iter().enumerate() {
        let (received, closed) = read_until_closed(&mut stream, WAIT);
        let waited = opened.elapsed();
        let text = String::from_utf8_lossy(&received);
        assert!(closed, "stalled connection {i} still open after {waited:?}");
        assert!(
            waited >= Duration::from_millis(900),
            "stalled connection {i} closed after {waited:?}, before the 1 s timeout"
        );
        assert!(
            !text.starts_with("HTTP/1.1 2") && !text.starts_with("HTTP/1.1 101"),
            "the half-sent request {i} was served: {text:?}"
        );
    }

    witness.advance(3);
    witness.finish();
    assert_serving(broker.addr);
    assert_no_worker_panic();
}

#[test]
fn connections_past_max_connections_are_refused_and_capacity_returns() {
    let broker = start(&[("MAX_CONNECTIONS", "5")]);
    let witness = Witness::start(broker.addr);
    wait_for_open_connections(broker.addr, 2);
    let mut clients: Vec<Client> = (0..3).map(|_| connect_retrying(broker.addr)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.ping(&format!("open-{i}"));
    }

    // Five open: every further connection gets a 503 and is closed.
    for i in 0..5 {
        let mut extra = TcpStream::connect(broker.addr).unwrap();
        let (received, closed) = read_until_closed(&mut extra, WAIT);
        assert!(closed, "extra connection {i} was kept open");
        let responses = parse_responses(&received);
        assert_eq!(
            responses.first().map(|r| r.status),
            Some(503),
            "extra connection {i}: {:?}",
            String::from_utf8_lossy(&received)
        );
        assert!(responses[0].json()["error"]["code"].is_string());
    }
    match tungstenite::connect(ws_url(broker.addr)) {
        Ok((_, response)) => panic!("a 6th connection was upgraded: {}", response.status()),
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 503),
        Err(_) => {} // reset: the refusal raced the request
    }

    // The five keep working.
    for (i, c) in clients.iter_mut().enumerate() {
        c.ping(&format!("still-{i}"));
    }
    witness.advance(5);

    // Two close: two new connections are taken, then the limit holds again.
    clients.truncate(1);
    let mut fresh: Vec<Client> = (0..2).map(|_| connect_retrying(broker.addr)).collect();
    for (i, c) in fresh.iter_mut().enumerate() {
        c.ping(&format!("fresh-{i}"));
    }
    let mut extra = TcpStream::connect(broker.addr).unwrap();
    let (received, _) = read_until_closed(&mut extra, WAIT);
    assert!(
        received.starts_with(b"HTTP/1.1 503 "),
        "at the limit again but not refused: {:?}",
        String::from_utf8_lossy(&received)
    );
    clients[0].ping("last");

    drop(fresh);
    drop(clients);
    wait_for_open_connections(broker.addr, 2);
    witness.advance(3);
    witness.finish();
    assert_serving(broker.addr);
    assert_no_worker_panic();
}

#[test]
fn a_one_megabyte_request_head_gets_431_and_is_closed() {
    let broker = start(&[]);
    let witness = Witness::start(broker.addr);
    let big = "a".repeat(1_000_000);
    let many: String = (0..20_000)
        .map(|i| format!("X-H{i}: {}\r\n", "b".repeat(40)))
        .collect();
    let heads = [
        format!("GET /topics HTTP/1.1\r\nHost: test\r\nX-Big: {big}\r\n\r\n"),
        format!("GET /ws HTTP/1.1\r\nHost: test\r\nX-Big: {big}"),
        format!("POST /topics HTTP/1.1\r\nHost: test\r\n{many}\r\n"),
        format!("GET /{big} HTTP/1.1\r\n\r\n"),
    ];
    for (i, head) in heads.into_iter().enumerate() {
        let mut stream = TcpStream::connect(broker.addr).unwrap();
        let mut writer = stream.try_clone().unwrap();
        // The head goes out on a thread while this one reads the answer:
        // the broker may answer (and stop reading) long before it is sent.
        let sender = std::thread::spawn(move || {
            let _ = writer.write_all(head.as_bytes());
            let _ = writer.shutdown(Shutdown::Write);
        });
        let began = Instant::now();
        let (received, closed) = read_until_closed(&mut stream, WAIT);
        assert!(closed, "head {i}: not closed within {WAIT:?}");
        let responses = parse_responses(&received);
        assert_eq!(
            responses.len(),
            1,
            "head {i}: expected one response, got {:?}",
            String::from_utf8_lossy(&received[..received.len().min(500)])
        );
        assert_eq!(responses[0].status, 431, "head {i}");
        assert_eq!(
            responses[0].json()["error"]["code"],
            "HEADERS_TOO_LARGE",
            "head {i}"
        );
        assert!(
            began.elapsed() < WAIT,
            "head {i}: took {:?}",
            began.elapsed()
        );
        drop(stream);
        sender.join().unwrap();
        witness.advance(2);
    }
    witness.finish();
    assert_serving(broker.addr);
    assert_no_worker_panic();
}

#[test]
fn garbage_upgrade_requests_get_a_4xx() {
    let broker = start(&[]);
    let witness = Witness::start(broker.addr);
    const GOOD: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let mut heads: Vec<Vec<u8>> = [
        // Bad header lines.
        "GET /ws HTTP/1.1\r\nUpgrade websocket\r\n\r\n".to_string(),
        "GET /ws HTTP/1.1\r\nSec WebSocket-Key: x\r\n\r\n".to_string(),
        "GET /ws HTTP/1.1\r\n: websocket\r\n\r\n".to_string(),
        "GET /ws HTTP/9.9\r\nHost: t\r\n\r\n".to_string(),
        "GET /ws HTTP/1.1\r\nHost: t\r\n\r\n".to_string(),
        format!("GET /ws HTTP/1.1\r\n{GOOD}Content-Length: -1\r\n\r\n"),
        format!("GET /ws HTTP/1.1\r\n{GOOD}Transfer-Encoding: chunked\r\n\r\n"),
        // Bad values.
        GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "!!!not base64 at all!!!!"),
        GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZR=="),
        GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", ""),
        GOOD.replace("Version: 13", "Version: banana"),
        GOOD.replace("Version: 13", "Version: 13, 13"),
        GOOD.replace("Upgrade: websocket", "Upgrade: h2c"),
        GOOD.replace("Connection: Upgrade", "Connection: close"),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, h)| {
        if i >= 7 {
            format!("GET /ws HTTP/1.1\r\nHost: t\r\n{h}\r\n").into_bytes()
        } else {
            h.into_bytes()
        }
    })
    .collect();
    // Bytes no header may hold.
    for bad in [&b"\x00"[..], b"\x01\x02", b"\x7f", b"\r"] {
        let mut head = b"GET /ws HTTP/1.1\r\nUpgrade: websocket".to_vec();
        head.extend_from_slice(bad);
        head.extend_from_slice(b"\r\nConnection: Upgrade\r\n\r\n");
        heads.push(head);
    }
    // Random bytes after the request line (no digits: no accidental
    // Content-Length that would wait for a body).
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let alphabet: Vec<u8> = (0u8..=255).filter(|b| !b.is_ascii_digit()).collect();
    let headerish = b"abcXYZ-:; \t\r\n\x00\xff\xc3Upgrade:websocketConnection:";
    for i in 0..120 {
        let mut head = b"GET /ws HTTP/1.1\r\n".to_vec();
        let len = 1 + rng.below(3000);
        let junk = if i % 2 == 0 {
            rng.bytes(len, &alphabet)
        } else {
            rng.bytes(len, headerish)
        };
        head.extend_from_slice(&junk);
        head.extend_from_slice(b"\r\n\r\n");
        heads.push(head);
    }

    for (i, head) in heads.iter().enumerate() {
        let mut stream = TcpStream::connect(broker.addr).unwrap();
        let _ = stream.write_all(head);
        let response = read_one_response(&mut stream, WAIT).unwrap_or_else(|| {
            panic!(
                "head {i} got no response: {:?}",
                String::from_utf8_lossy(&head[..head.len().min(200)])
            )
        });
        assert!(
            (400..500).contains(&response.status),
            "head {i}: status {} for {:?}",
            response.status,
            String::from_utf8_lossy(&head[..head.len().min(200)])
        );
        assert!(response.header("Sec-WebSocket-Accept").is_none());
        assert!(
            response.json()["error"]["code"].is_string(),
            "head {i}: {:?}",
            String::from_utf8_lossy(&response.body)
        );
        if i % 20 == 0 {
            witness.advance(1);
        }
    }
    witness.finish();
    assert_serving(broker.addr);
    assert_no_worker_panic();
}

// ---- resets and half-closed sockets -------------------------------------------------

#[test]
fn connections_reset_in_the_middle_of_a_frame_are_cleaned_up() {
    let broker = start(&[]);
    let witness = Witness::start(broker.addr);
    let topic = unique("resets");
    create_topic(broker.addr, &topic);
    let mut reader = broker.client();
    reader.subscribe(&topic, 0);
    let mut publisher = broker.client();
    let mut published = 0u64;
    let mut publish = |publisher: &mut Client, n: u64| {
        for _ in 0..n {
            published += 1;
            publisher.publish(&topic, &format!("m{published}"), json!({ "n": published }));
        }
    };

    let ping_text = br#"{"type":"ping","request_id":"half"}"#;
    for round in 0..24 {
        let mut victim = broker.client();
        victim.subscribe(&topic, 0);
        // Events wait for the victim, unread.
        publish(&mut publisher, 5);
        let mut raw = tcp_of(&victim);
        let cut: Vec<u8> = match round % 6 {
            // Half of a masked frame.
            0 => {
                let frame = masked_frame(0x81, ping_text);
                frame[..frame.len() / 2].to_vec()
            }
            // One byte of a frame header.
            1 => vec![0x81],
            // The header of a 64 KiB frame and a little of it.
            2 => masked_frame(0x81, &vec![b' '; 65_000])[..1000].to_vec(),
            // A whole frame, then half the next.
            3 => {
                let mut bytes = masked_frame(0x81, ping_text);
                let next = masked_frame(0x81, ping_text);
                bytes.extend_from_slice(&next[..next.len() / 2]);
                bytes
            }
            // Half of a close frame.
            4 => masked_frame(0x88, &[0x03, 0xe8, b'b', b'y', b'e'])[..4].to_vec(),
            // Nothing: reset while events are on their way to it.
            _ => Vec::new(),
        };
        raw.write_all(&cut).unwrap();
        drop(victim);
        reset(raw);
        publish(&mut publisher, 2);
    }
    // Resets in the middle of an HTTP head and of an upgrade.
    for round in 0..10 {
        let mut raw = TcpStream::connect(broker.addr).unwrap();
        let head: &[u8] = if round % 2 == 0 {
            b"POST /topics HTTP/1.1\r\nContent-Length: 40\r\n\r\n{\"name\":"
        } else {
            b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upg"
        };
        raw.write_all(head).unwrap();
        reset(raw);
    }
    publish(&mut publisher, 3);

    // The subscriber that kept reading has every acked event, in order.
    expect_run(&mut reader, &topic, 1, published);
    eventually("the reset subscribers are gone", || {
        subscribers(broker.addr, &topic) == Some(1)
    });
    // witness 2, reader, publisher
    wait_for_open_connections(broker.addr, 4);
    witness.finish();
    assert_serving(broker.addr);
    assert_no_worker_panic();
}

#[test]
fn a_half_closed_websocket_subscriber_is_ended_and_cleaned_up() {
    // EOF from a WebSocket peer without a close frame ends the connection
    // (tungstenite reports a reset without closing handshake): the
    // subscriber leaves its topics and its socket is closed.
    let broker = start(&[]);
    let witness = Witness::start(broker.addr);
    let topic = unique("halfclosed");
    create_topic(broker.addr, &topic);
    let mut reader = broker.client();
    reader.subscribe(&topic, 0);
    let mut publisher = broker.client();

    let mut victims: Vec<Client> = (0..3)
        .map(|_| {
            let mut c = broker.client();
            c.subscribe(&topic, 0);
            c
        })
        .collect();
    assert_eq!(subscribers(broker.addr, &topic), Some(4));
    publisher.publish(&topic, "m1", json!(1));
    for victim in &mut victims {
        tcp_of(victim).shutdown(Shutdown::Write).unwrap();
    }
    for n in 2..=10 {
        publisher.publish(&topic, &format!("m{n}"), json!(n));
    }

    for (i, victim) in victims.iter_mut().enumerate() {
        let deadline = Instant::now() + WAIT;
        let mut seqs = Vec::new();
        let ended = loop {
            if Instant::now() > deadline {
                break false;
            }
            match victim.ws.read() {
                Ok(Message::Text(text)) => {
                    let value: Value = serde_json::from_str(text.as_str()).unwrap();
                    if value["type"] == "event" {
                        seqs.push(value["seq"].as_u64().unwrap());
                    }
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if is_timeout(&e) => break false,
                Err(_) => break true,
            }
        };
        assert!(ended, "half-closed subscriber {i} was not ended");
        let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, expected, "subscriber {i}: events out of order");
    }
    eventually("the half-closed subscribers are gone", || {
        subscribers(broker.addr, &topic) == Some(1)
    });

    publisher.publish(&topic, "m11", json!(11));
    expect_run(&mut reader, &topic, 1, 11);
    witness.advance(3);
    witness.finish();
    assert_serving(broker.addr);
    assert_no_worker_panic();
}

#[test]
fn http_requests_followed_by_a_half_close_are_answered() {
    let broker = start(&[]);
    let witness = Witness::start(broker.addr);
    let topic = unique("via-half-close");

    let exchange = |requests: &[u8]| -> Vec<HttpResponse> {
        let mut stream = TcpStream::connect(broker.addr).unwrap();
        stream.write_all(requests).unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        let (received, closed) = read_until_closed(&mut stream, WAIT);
        assert!(closed, "not closed after the half close");
        parse_responses(&received)
    };

    let responses = exchange(request_text("GET", "/topics", None).as_bytes());
    assert_eq!(responses.len(), 1);
    assert_eq!(responses[0].status, 200);

    let body = json!({ "name": topic }).to_string();
    let responses = exchange(request_text("POST", "/topics", Some(&body)).as_bytes());
    assert_eq!(responses.len(), 1);
    assert_eq!(responses[0].status, 201);
    assert!(subscribers(broker.addr, &topic).is_some());

    let pipelined = [
        request_text("GET", "/health", None),
        request_text("POST", "/topics", Some(&body)),
        request_text("DELETE", &format!("/topics/{topic}"), None),
        request_text("GET", "/stats", None),
    ]
    .concat();
    let statuses: Vec<u16> = exchange(pipelined.as_bytes())
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, vec![200, 409, 200, 200]);
    assert!(subscribers(broker.addr, &topic).is_none());

    // Half a request, then end of stream: closed at once, nothing served.
    let began = Instant::now();
    let responses = exchange(b"GET /health HTTP/1.1\r\nHo");
    assert!(
        responses.iter().all(|r| r.status != 200),
        "a half request was served"
    );
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "{:?}",
        began.elapsed()
    );

    witness.advance(3);
    witness.finish();
    assert_serving(broker.addr);
    assert_no_worker_panic();
}

// ---- churn ------------------------------------------------------------------------

#[test]
fn ten_thousand_subscribe_unsubscribe_cycles_on_one_connection() {
    let broker = start(&[]);
    let witness = Witness::start(broker.addr);
    let topic = unique("cycles");
    create_topic(broker.addr, &topic);
    let mut reader = broker.client();
    reader.subscribe(&topic, 0);

    let mut c = broker.client();
    const CYCLES: usize = 10_000;
    const BATCH: usize = 50; // cycles per batch: 100 frames, then 100 acks
    for batch in 0..CYCLES / BATCH {
        for i in batch * BATCH..(batch + 1) * BATCH {
            for (kind, tag) in [("subscribe", "s"), ("unsubscribe", "u")] {
                let frame = json!({"type":kind,"topic":topic,"client_id":"cycler","request_id":format!("{tag}{i}")});
                c.ws.write(Message::text(frame.to_string())).unwrap();
            }
        }
        c.ws.flush().unwrap();
        for i in batch * BATCH..(batch + 1) * BATCH {
            for tag in ["s", "u"] {
                let ack = c.expect("ack");
                assert_eq!(ack["request_id"], format!("{tag}{i}"), "{ack}");
                assert_eq!(ack["topic"], topic.as_str(), "{ack}");
            }
        }
    }
    assert_eq!(subscribers(broker.addr, &topic), Some(1));

    c.subscribe(&topic, 0);
    assert_eq!(subscribers(broker.addr, &topic), Some(2));
    let mut publisher = broker.client();
    for n in 1..=3 {
        publisher.publish(&topic, &format!("m{n}"), json!(n));
    }
    expect_run(&mut c, &topic, 1, 3);
    // A duplicate of the first three would come before the fourth.
    publisher.publish(&topic, "m4", json!(4));
    expect_run(&mut c, &topic, 4, 1);
    c.ping("done");
    expect_run(&mut reader, &topic, 1, 4);

    witness.finish();
    assert_serving(broker.addr);
    assert_no_worker_panic();
}

#[test]
fn deleting_a_topic_under_full_rate_publishing() {
    // The queue holds every event, so that the subscriber, which does not
    // read while the topic is deleted, is not a slow consumer.
    let broker = start(&[("SUBSCRIBER_QUEUE_SIZE", "10000")]);
    let witness = Witness::start(broker.addr);
    let topic = unique("doomed");
    let other = unique("survivor");
    create_topic(broker.addr, &topic);
    create_topic(broker.addr, &other);
    let mut sub = broker.client();
    sub.subscribe(&topic, 0);
    sub.subscribe(&other, 0);

    const TOTAL: u64 = 5000;
    const WINDOW: u64 = 64;
    let acked = Arc::new(AtomicU64::new(0));
    let publisher = {
        let (url, topic, acked) = (broker.ws_url(), topic.clone(), Arc::clone(&acked));
        std::thread::spawn(move || {
            let mut c = Client::connect(&url);
            let (mut sent, mut answered, mut errors) = (0u64, 0u64, 0u64);
            while answered < TOTAL {
                while sent < TOTAL && sent - answered < WINDOW {
                    sent += 1;
                    let frame = json!({"type":"publish","topic":topic,"message":{"id":format!("p{sent}"),"payload":{"n":sent}},"request_id":format!("p{sent}")});
                    c.ws.write(Message::text(frame.to_string())).unwrap();
                }
                c.ws.flush().unwrap();
                let reply = c.recv();
                answered += 1;
                assert_eq!(reply["request_id"], format!("p{answered}"), "{reply}");
                match reply["type"].as_str() {
                    Some("ack") => {
                        assert_eq!(errors, 0, "an ack after TOPIC_NOT_FOUND: {reply}");
                        acked.fetch_add(1, Ordering::AcqRel);
                    }
                    Some("error") => {
                        assert_eq!(reply["error"]["code"], "TOPIC_NOT_FOUND", "{reply}");
                        assert_eq!(reply["topic"], topic.as_str(), "{reply}");
                        errors += 1;
                    }
                    _ => panic!("neither ack nor TOPIC_NOT_FOUND: {reply}"),
                }
            }
            (acked.load(Ordering::Acquire), errors)
        })
    };

    let deadline = Instant::now() + WAIT;
    while acked.load(Ordering::Acquire) < 1000 && !publisher.is_finished() {
        assert!(Instant::now() < deadline, "the publisher got no acks");
        std::thread::sleep(Duration::from_millis(1));
    }
    delete_topic(broker.addr, &topic);
    let (acks, errors) = publisher.join().expect("publisher");
    assert_eq!(acks + errors, TOTAL);
    assert!(acks >= 1000, "only {acks} acks");
    assert!(
        errors > 0,
        "the publisher finished before the deletion; nothing tested"
    );

    // Every acked event, consecutive, then the notice.
    expect_run(&mut sub, &topic, 1, acks);
    let notice = sub.expect("info");
    assert_eq!(notice["msg"], "topic_deleted", "{notice}");
    assert_eq!(notice["topic"], topic.as_str(), "{notice}");
    // Then nothing of that topic: the next thing is the other topic's event.
    broker
        .client()
        .publish(&other, "after", json!("after the deletion"));
    let next = sub.expect("event");
    assert_eq!(next["topic"], other.as_str(), "{next}");
    assert_eq!(next["message"]["id"], "after", "{next}");
    assert!(subscribers(broker.addr, &topic).is_none());
    assert_eq!(subscribers(broker.addr, &other), Some(1));

    witness.finish();
    assert_serving(broker.addr);
    assert_no_worker_panic();
}

/// The process's resident set, from /proc.
fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in {status}"))
}

#[test]
fn a_hundred_thousand_topics_created_and_deleted_give_their_memory_back() {
    let mut broker = BrokerProcess::spawn(&[("LOG_LEVEL", "warn")]);
    let pid = broker.child.id();
    let witness = Witness::start(broker.addr);
    let mut conn = HttpConn::open(broker.addr);

    const TOPICS: usize = 100_000;
    const BATCH: usize = 500;
    // A first small round, so that the baseline has the allocator warm.
    let warm: Vec<String> = (0..BATCH)
        .map(|i| {
            request_text(
                "POST",
                "/topics",
                Some(&format!("{{\"name\":\"warm-{i}\"}}")),
            )
        })
        .collect();
    assert!(conn.pipeline(&warm).iter().all(|r| r.status == 201));
    let warm: Vec<String> = (0..BATCH)
        .map(|i| request_text("DELETE", &format!("/topics/warm-{i}"), None))
        .collect();
    assert!(conn.pipeline(&warm).iter().all(|r| r.status == 200));
    let before = vm_rss_kib(pid);

    // Two rounds, for the record: a leak would keep growing round after
    // round, memory kept but reused would not.
    let mut rounds = Vec::new();
    for round in 0..2 {
        let name = |i: usize| format!("churn{round}-{i:06}");
        for start in (0..TOPICS).step_by(BATCH) {
            let requests: Vec<String> = (start..start + BATCH)
                .map(|i| {
                    request_text(
                        "POST",
                        "/topics",
                        Some(&format!("{{\"name\":\"{}\"}}", name(i))),
                    )
                })
                .collect();
            for (i, response) in conn.pipeline(&requests).iter().enumerate() {
                assert_eq!(response.status, 201, "creating {}", name(start + i));
            }
        }
        let peak = vm_rss_kib(pid);
        let (status, health) = http_json(broker.addr, "GET", "/health", None, &[]);
        assert_eq!(status, 200);
        assert_eq!(health["topics"], TOPICS as u64 + 1, "{health}");
        witness.advance(2);

        for start in (0..TOPICS).step_by(BATCH) {
            let requests: Vec<String> = (start..start + BATCH)
                .map(|i| request_text("DELETE", &format!("/topics/{}", name(i)), None))
                .collect();
            for (i, response) in conn.pipeline(&requests).iter().enumerate() {
                assert_eq!(response.status, 200, "deleting {}", name(start + i));
            }
        }
        witness.advance(2);
        rounds.push((peak, vm_rss_kib(pid)));
    }
    let witness_topic = witness.topic.clone();
    witness.finish();
    delete_topic(broker.addr, &witness_topic);
    let listed = conn.request("GET", "/topics", None);
    assert_eq!(listed.status, 200);
    assert_eq!(listed.json(), json!({ "topics": [] }));

    // Workers hand freed memory back to the system within a second of
    // going quiet.
    let settle = std::time::Instant::now() + Duration::from_secs(5);
    let mut after = vm_rss_kib(pid);
    while after >= before + 20 * 1024 && std::time::Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(100));
        after = vm_rss_kib(pid);
    }
    let report = format!(
        "VmRSS {before} KiB before; (peak, after) per round of {TOPICS} topics: {rounds:?} KiB; {after} KiB at the end"
    );
    eprintln!("{report}");
    assert!(
        after < before + 20 * 1024,
        "memory did not come back after deleting every topic: {report}"
    );
    assert_serving(broker.addr);
    assert_process_healthy(&mut broker);
}

// ---- file descriptors -------------------------------------------------------------

/// Sets the soft and hard RLIMIT_NOFILE of a running process.
fn limit_open_files(pid: u32, limit: u64) {
    let rlim = libc::rlimit {
        rlim_cur: limit as libc::rlim_t,
        rlim_max: limit as libc::rlim_t,
    };
    // SAFETY: prlimit reads `rlim` and writes nothing (old limit is null).
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &rlim,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// utime + stime of the whole process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .collect();
    // After the command: state is field 3, utime 14 and stime 15.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ticks as f64 / per_second as f64
}

const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n";

#[test]
fn running_out_of_file_descriptors_pauses_accepting_without_spinning() {
    // Idle keep-alive connections must not be closed by the handshake
    // timeout while the test holds them.
    let mut broker = BrokerProcess::spawn(&[("HANDSHAKE_TIMEOUT_SECS", "120")]);
    let pid = broker.child.id();
    let witness = Witness::start(broker.addr);
    wait_for_open_connections(broker.addr, 2);
    let baseline = open_fds(pid);
    assert!(baseline < 40, "{baseline} descriptors open at the start");
    let limit = baseline as u64 + 40;
    limit_open_files(pid, limit);

    // Open connections until one is not accepted.
    let mut served = Vec::new();
    let mut waiting = Vec::new();
    for _ in 0..200 {
        let mut stream = TcpStream::connect(broker.addr).unwrap();
        stream.write_all(HEALTH).unwrap();
        match read_one_response(&mut stream, Duration::from_secs(1)) {
            Some(response) => {
                assert_eq!(response.status, 200);
                served.push(stream);
            }
            None => {
                waiting.push(stream);
                break;
            }
        }
    }
    assert!(
        !waiting.is_empty(),
        "all {} connections were accepted under a limit of {limit} descriptors",
        served.len()
    );
    assert!(
        served.len() >= 20,
        "only {} connections served",
        served.len()
    );
    for _ in 0..4 {
        let mut stream = TcpStream::connect(broker.addr).unwrap();
        stream.write_all(HEALTH).unwrap();
        waiting.push(stream);
    }

    // While they wait in the backlog the broker does not spin...
    let (cpu0, t0) = (cpu_seconds(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(1));
    let (cpu1, t1) = (cpu_seconds(pid), Instant::now());
    let load = (cpu1 - cpu0) / (t1 - t0).as_secs_f64();
    assert!(
        load < 0.5,
        "the broker used {:.0}% of a core while out of descriptors",
        load * 100.0
    );
    // ...and serves the connections it has.
    witness.advance(5);
    for stream in served.iter_mut().step_by(7) {
        stream.write_all(HEALTH).unwrap();
        let response = read_one_response(stream, WAIT).expect("an accepted connection answers");
        assert_eq!(response.status, 200);
    }
    assert_process_healthy(&mut broker);

    // Descriptors free up: the waiting connections are accepted and served,
    // and new clients work.
    served.truncate(served.len() - 20);
    for (i, stream) in waiting.iter_mut().enumerate() {
        let response = read_one_response(stream, WAIT)
            .unwrap_or_else(|| panic!("waiting connection {i} was never served"));
        assert_eq!(response.status, 200);
    }
    drop(waiting);
    assert_serving(broker.addr);
    witness.advance(3);
    witness.finish();
    assert_process_healthy(&mut broker);
    let stderr = broker.stderr();
    assert!(
        stderr.contains("accept failed"),
        "no accept failure was logged: {stderr}"
    );
}
