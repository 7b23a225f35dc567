//! Graceful shutdown of the real binary on real signals: prompt exit when
//! idle, `server_shutdown` + close 1001 for subscribers, no acked event
//! lost, `SHUTTING_DOWN` and refused connections during the drain, the
//! drain deadline, and the second signal.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use tungstenite::Message;

/// Events published to fill a non-reading subscriber's backlog, and their
/// payload size: 1000 x 32 KiB is far more than loopback socket buffers
/// hold, so the broker still has events queued when the signal comes.
const BACKLOG_EVENTS: usize = 1000;
const BACKLOG_PAYLOAD: usize = 32 * 1024;

/// Publishes `count` messages (ids `m1..`) in pipelined batches and checks
/// that every one is acked.
fn publish_many(publisher: &mut Client, topic: &str, count: usize, payload: &Value) {
    const BATCH: usize = 50;
    let mut sent = 0;
    while sent < count {
        let batch = BATCH.min(count - sent);
        for i in sent + 1..=sent + batch {
            publisher.send(json!({
                "type": "publish",
                "topic": topic,
                "message": {"id": format!("m{i}"), "payload": payload},
                "request_id": format!("pub-{i}"),
            }));
        }
        for i in sent + 1..=sent + batch {
            let ack = publisher.expect("ack");
            assert_eq!(ack["request_id"], format!("pub-{i}"), "{ack}");
        }
        sent += batch;
    }
}

/// A subscriber to `topic` that will not read, and a backlog for it of
/// `BACKLOG_EVENTS` large events (all acked) that the broker cannot write
/// out until it reads.
fn stalled_subscriber(broker: &BrokerProcess, topic: &str) -> Client {
    let mut stalled = Client::connect(&ws_url(broker.addr));
    stalled.subscribe(topic, 0);
    let mut publisher = Client::connect(&ws_url(broker.addr));
    publish_many(
        &mut publisher,
        topic,
        BACKLOG_EVENTS,
        &json!("x".repeat(BACKLOG_PAYLOAD)),
    );
    stalled
}

/// True if a new connection is refused: connect fails, or the connection is
/// closed (or reset) without any response to a request.
fn connection_refused(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return true;
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let _ = stream.write_all(b"GET /health HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    let mut buf = [0u8; 256];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}

/// Waits until the broker refuses new connections (it has seen the signal
/// and started draining).
fn wait_for_refusal(broker: &mut BrokerProcess) {
    eventually("the broker to refuse new connections", || {
        connection_refused(broker.addr)
    });
    assert!(
        broker.child.try_wait().unwrap().is_none(),
        "precondition: the drain is still running; stderr: {}",
        broker.stderr()
    );
}

/// Reads every message up to the server's close frame (within `limit`),
/// skipping heartbeats; then reads on briefly so that our close reply goes
/// out. Returns the close code and the JSON messages seen.
fn read_to_close(client: &mut Client, limit: Duration) -> (Option<u16>, Vec<Value>) {
    let mut seen = Vec::new();
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        match client.ws.read() {
            Ok(Message::Text(text)) => {
                let value: Value = serde_json::from_str(text.as_str()).expect("server sends JSON");
                if !(value["type"] == "info" && value["msg"] == "ping") {
                    seen.push(value);
                }
            }
            Ok(Message::Close(frame)) => {
                // tungstenite queued the close reply; reading on sends it
                // and ends once the server closes the socket.
                for _ in 0..10 {
                    if client.ws.read().is_err() {
                        break;
                    }
                }
                return (frame.map(|f| u16::from(f.code)), seen);
            }
            Ok(_) => {}
            Err(e) => panic!(
                "connection ended without a close frame: {e}; {} messages, last {:?}",
                seen.len(),
                seen.last()
            ),
        }
    }
    panic!(
        "no close within {limit:?}; {} messages, last {:?}",
        seen.len(),
        seen.last()
    );
}

fn assert_shutdown_notice(value: &Value) {
    assert_eq!(value["type"], "info", "{value}");
    assert_eq!(value["msg"], "server_shutdown", "{value}");
    assert!(value["ts"].is_string(), "no ts: {value}");
}

fn assert_prompt_clean_exit(signal: &str) {
    let mut broker = BrokerProcess::spawn(&[("SHUTDOWN_TIMEOUT_SECS", "30")]);
    let (status, _) = http_json(broker.addr, "GET", "/health", None, &[]);
    assert_eq!(status, 200);
    let started = Instant::now();
    broker.signal(signal);
    let status = broker.wait_exit(Duration::from_secs(5));
    assert_eq!(
        status.code(),
        Some(0),
        "SIG{signal}: {status}; stderr: {}",
        broker.stderr()
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn sigterm_on_an_idle_server_exits_0_promptly() {
    assert_prompt_clean_exit("TERM");
}

#[test]
fn sigint_on_an_idle_server_exits_0_promptly() {
    assert_prompt_clean_exit("INT");
}

#[test]
fn reading_subscriber_gets_server_shutdown_then_close_1001() {
    let mut broker = BrokerProcess::spawn(&[]);
    create_topic(broker.addr, "t");
    let mut sub = Client::connect(&ws_url(broker.addr));
    sub.subscribe("t", 0);
    let mut publisher = Client::connect(&ws_url(broker.addr));
    publisher.publish("t", "m1", json!({"n": 1}));
    assert_eq!(sub.expect("event")["message"]["id"], "m1");

    broker.signal("TERM");
    let (code, seen) = read_to_close(&mut sub, WAIT);
    assert_eq!(seen.len(), 1, "only the shutdown notice: {seen:?}");
    assert_shutdown_notice(&seen[0]);
    assert_eq!(code, Some(1001), "close code; seen {seen:?}");

    broker.wait_success(WAIT);
}

#[test]
fn every_acked_event_is_delivered_before_the_shutdown() {
    const N: usize = 20_000;
    // A long drain deadline: this test is about loss, not the deadline,
    // and the subscriber keeps reading.
    let mut broker = BrokerProcess::spawn(&[
        ("SUBSCRIBER_QUEUE_SIZE", "100000"),
        ("SHUTDOWN_TIMEOUT_SECS", "30"),
    ]);
    create_topic(broker.addr, "backlog");
    let mut sub = Client::connect(&ws_url(broker.addr));
    sub.subscribe("backlog", 0);
    let mut publisher = Client::connect(&ws_url(broker.addr));
    publish_many(&mut publisher, "backlog", N, &json!({"k": "v"}));

    broker.signal("TERM");
    let (code, seen) = read_to_close(&mut sub, Duration::from_secs(60));
    assert_eq!(code, Some(1001), "close code after {} messages", seen.len());
    let (last, events) = seen.split_last().expect("at least the shutdown notice");
    assert_shutdown_notice(last);
    assert_eq!(events.len(), N, "events before server_shutdown");
    for (i, event) in events.iter().enumerate() {
        let n = i + 1;
        assert_eq!(event["type"], "event", "#{n}: {event}");
        assert_eq!(event["seq"], n, "#{n}: {event}");
        assert_eq!(event["message"]["id"], format!("m{n}"), "#{n}: {event}");
    }

    broker.wait_success(WAIT);
}

#[test]
fn during_the_drain_requests_get_shutting_down_and_new_connections_are_refused() {
    let mut broker = BrokerProcess::spawn(&[
        ("SUBSCRIBER_QUEUE_SIZE", "100000"),
        ("SHUTDOWN_TIMEOUT_SECS", "5"),
    ]);
    create_topic(broker.addr, "big");
    create_topic(broker.addr, "other");
    // `late` has a backlog too, so it is still open during the drain; it
    // reads only after its requests. `stalled` never reads and holds the
    // drain open until the deadline.
    let mut late = Client::connect(&ws_url(broker.addr));
    late.subscribe("big", 0);
    let stalled = stalled_subscriber(&broker, "big");

    broker.signal("TERM");
    wait_for_refusal(&mut broker);
    for attempt in 0..3 {
        assert!(
            connection_refused(broker.addr),
            "attempt {attempt}: a new connection was served during the drain"
        );
    }

    late.send(json!({"type":"publish","topic":"big","message":{"id":"late","payload":1},"request_id":"late-pub"}));
    late.send(
        json!({"type":"subscribe","topic":"other","client_id":"late","request_id":"late-sub"}),
    );
    late.send(json!({"type":"ping","request_id":"late-ping"}));
    let (code, seen) = read_to_close(&mut late, Duration::from_secs(30));
    for (request_id, topic) in [("late-pub", "big"), ("late-sub", "other")] {
        let reply = seen
            .iter()
            .find(|v| v["request_id"] == request_id)
            .unwrap_or_else(|| panic!("no reply to {request_id} in {} messages", seen.len()));
        assert_eq!(reply["type"], "error", "{reply}");
        assert_eq!(reply["error"]["code"], "SHUTTING_DOWN", "{reply}");
        assert_eq!(reply["topic"], topic, "{reply}");
    }
    assert!(
        seen.iter().any(|v| v["request_id"] == "late-ping"),
        "the connection still answers ping"
    );
    assert!(
        !seen.iter().any(|v| v["message"]["id"] == "late"),
        "a publish during the drain was delivered"
    );
    assert_shutdown_notice(seen.last().expect("messages before the close"));
    assert_eq!(code, Some(1001));

    broker.wait_success(Duration::from_secs(20));
    drop(stalled);
}

#[test]
fn a_subscriber_that_never_reads_does_not_hold_the_exit_past_the_deadline() {
    let mut broker = BrokerProcess::spawn(&[
        ("SUBSCRIBER_QUEUE_SIZE", "100000"),
        ("SHUTDOWN_TIMEOUT_SECS", "1"),
    ]);
    create_topic(broker.addr, "big");
    let stalled = stalled_subscriber(&broker, "big");

    let started = Instant::now();
    broker.signal("TERM");
    broker.wait_success(Duration::from_secs(10));
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(stalled);
}

#[test]
fn a_second_signal_during_the_drain_exits_at_once() {
    let mut broker = BrokerProcess::spawn(&[
        ("SUBSCRIBER_QUEUE_SIZE", "100000"),
        ("SHUTDOWN_TIMEOUT_SECS", "30"),
    ]);
    create_topic(broker.addr, "big");
    let stalled = stalled_subscriber(&broker, "big");

    broker.signal("TERM");
    // Once new connections are refused the first signal has been handled,
    // so the second is not merged into it.
    wait_for_refusal(&mut broker);
    let started = Instant::now();
    broker.signal("TERM");
    // Any exit status will do; it must come long before the 30 s deadline.
    broker.wait_exit(Duration::from_secs(5));
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(stalled);
}
