//! Configuration of the real binary through its environment: bad values
//! stop it with exit code 2 naming the variable, the `listening on` line
//! carries the real port, `ADDR=:PORT` takes IPv4 and IPv6, settings take
//! effect, and a port in use (by another broker too) fails fast.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};
use tungstenite::Message;

/// Log lines at `level` (env_logger's `[timestamp LEVEL ] message`).
/// Log lines are `<ts> <LEVEL> <msg> <fields>`.
fn lines_at(stderr: &str, level: &str) -> usize {
    stderr
        .lines()
        .filter(|line| line.split_whitespace().nth(1) == Some(level))
        .count()
}

/// Some traffic that logs at info and debug: a WebSocket connection that
/// subscribes and publishes, then closes.
fn some_traffic(addr: SocketAddr) {
    create_topic(addr, "t");
    let mut client = Client::connect(&ws_url(addr));
    client.subscribe("t", 0);
    client.publish("t", "m1", json!(1));
    client.expect("event");
    client.ws.close(None).unwrap();
    let _ = client.read_until_close();
}

#[test]
fn bad_values_exit_2_naming_the_variable() {
    let cases = [
        ("SUBSCRIBER_QUEUE_SIZE", "0"),
        ("RING_BUFFER_SIZE", "0"),
        ("RING_BUFFER_SIZE", "abc"),
        ("WORKERS", "0"),
        ("HEARTBEAT_INTERVAL_SECS", "-1"),
        ("SHUTDOWN_TIMEOUT_SECS", "x"),
        ("MAX_MESSAGE_BYTES", "0"),
        ("MAX_CONNECTIONS", "0"),
        ("ADDR", "nonsense"),
        ("LOG_LEVEL", "loud"),
    ];
    let mut failures = Vec::new();
    for (name, value) in cases {
        let (code, stderr) = run_to_exit(&[(name, value)]);
        if code != Some(2) {
            failures.push(format!(
                "{name}={value}: exit code {code:?}, want 2; stderr: {stderr:?}"
            ));
        } else if !stderr.contains(name) {
            failures.push(format!(
                "{name}={value}: stderr does not name {name}: {stderr:?}"
            ));
        } else if stderr.contains("listening on") {
            failures.push(format!("{name}={value}: it listened: {stderr:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn listening_line_names_the_real_port_which_answers_health() {
    let broker = BrokerProcess::spawn(&[]);
    assert_eq!(broker.addr.ip().to_string(), "127.0.0.1");
    assert_ne!(broker.addr.port(), 0, "the bound port, not 0");
    // The helper learns the address before it stores the line.
    let line = format!("listening on 127.0.0.1:{}", broker.addr.port());
    eventually("the listening line in stderr", || {
        broker.stderr().contains(&line)
    });
    let (status, body) = http_json(broker.addr, "GET", "/health", None, &[]);
    assert_eq!(status, 200, "{body}");
    assert!(body["uptime_sec"].is_u64(), "{body}");
    broker.stop();
}

/// True if this host can listen on IPv6's loopback.
fn has_ipv6_loopback() -> bool {
    TcpListener::bind("[::1]:0").is_ok()
}

#[test]
fn all_interfaces_means_ipv4_and_ipv6() {
    let broker = BrokerProcess::spawn(&[("ADDR", ":0")]);
    assert!(broker.addr.ip().is_unspecified(), "{}", broker.addr);
    let port = broker.addr.port();
    let (status, _) = http_json(
        SocketAddr::from(([127, 0, 0, 1], port)),
        "GET",
        "/health",
        None,
        &[],
    );
    assert_eq!(status, 200, "over IPv4");
    if has_ipv6_loopback() {
        assert_eq!(broker.addr.to_string(), format!("[::]:{port}"));
        let ipv6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
        assert_eq!(
            http_json(ipv6, "GET", "/health", None, &[]).0,
            200,
            "over IPv6"
        );
    } else {
        println!("this host has no IPv6 loopback: only IPv4 was checked");
    }
    broker.stop();
}

#[test]
fn a_second_broker_on_the_same_address_exits_1_and_the_first_serves_on() {
    let first = BrokerProcess::spawn(&[]);
    let port = first.addr.port();
    // The same address, and all interfaces (`[::]`) on the same port.
    for (addr, named) in [
        (first.addr.to_string(), first.addr.to_string()),
        (format!(":{port}"), format!("[::]:{port}")),
    ] {
        let (code, stderr) = run_to_exit(&[("ADDR", &addr)]);
        assert_eq!(code, Some(1), "ADDR={addr}: {stderr}");
        assert!(
            stderr.contains(&format!("cannot listen on {named}: "))
                && stderr.to_lowercase().contains("address already in use"),
            "ADDR={addr}: {stderr}"
        );
        assert!(!stderr.contains("listening on"), "{stderr}");
    }
    for _ in 0..16 {
        let (status, _) = http_json(first.addr, "GET", "/health", None, &[]);
        assert_eq!(status, 200, "the first broker serves every connection");
    }
    first.stop();
}

#[test]
fn ring_buffer_size_limits_replay() {
    let broker = BrokerProcess::spawn(&[("RING_BUFFER_SIZE", "2")]);
    create_topic(broker.addr, "t");
    let mut publisher = Client::connect(&ws_url(broker.addr));
    for i in 1..=5 {
        publisher.publish("t", &format!("m{i}"), json!(i));
    }
    let mut sub = Client::connect(&ws_url(broker.addr));
    sub.subscribe("t", 10);
    let replayed: Vec<Value> = (0..2).map(|_| sub.expect("event")).collect();
    assert_eq!(replayed[0]["message"]["id"], "m4");
    assert_eq!(replayed[0]["seq"], 4);
    assert_eq!(replayed[1]["message"]["id"], "m5");
    assert_eq!(replayed[1]["seq"], 5);
    sub.send(json!({"type":"ping","request_id":"p"}));
    assert_eq!(
        sub.expect("pong")["request_id"],
        "p",
        "nothing more than 2 replayed"
    );
    broker.stop();
}

#[test]
fn log_level_error_prints_only_the_listening_line() {
    let broker = BrokerProcess::spawn(&[("LOG_LEVEL", "error")]);
    some_traffic(broker.addr);
    let stderr = broker.stop();
    assert!(stderr.contains("listening on 127.0.0.1:"), "{stderr}");
    for level in ["INFO", "DEBUG", "TRACE"] {
        assert_eq!(lines_at(&stderr, level), 0, "{level} lines in: {stderr}");
    }
}

#[test]
fn log_level_debug_prints_more_than_info() {
    let info = BrokerProcess::spawn(&[]);
    some_traffic(info.addr);
    let info = info.stop();
    assert!(
        lines_at(&info, "INFO") > 0,
        "default level logs info: {info}"
    );
    assert_eq!(lines_at(&info, "DEBUG"), 0, "{info}");

    let debug = BrokerProcess::spawn(&[("LOG_LEVEL", "debug")]);
    some_traffic(debug.addr);
    let debug = debug.stop();
    assert!(lines_at(&debug, "INFO") > 0, "{debug}");
    assert!(lines_at(&debug, "DEBUG") > 0, "no debug lines: {debug}");
    assert!(debug.lines().count() > info.lines().count());
}

#[test]
fn max_message_bytes_closes_with_1009() {
    let broker = BrokerProcess::spawn(&[("MAX_MESSAGE_BYTES", "200")]);
    let mut client = Client::connect(&ws_url(broker.addr));
    client.send(json!({"type":"ping","request_id":"small"}));
    client.expect("pong");
    client.send(json!({"type":"ping","request_id":"x".repeat(300)}));
    let (code, _, _) = client.read_until_close();
    assert_eq!(code, Some(1009));
    broker.stop();
}

#[test]
fn heartbeat_interval_sets_the_ping_period() {
    let broker = BrokerProcess::spawn(&[("HEARTBEAT_INTERVAL_SECS", "1")]);
    let mut client = Client::connect(&ws_url(broker.addr));
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got_info_ping = false;
    while !got_info_ping && Instant::now() < deadline {
        match client.ws.read().expect("read") {
            Message::Text(text) => {
                let value: Value = serde_json::from_str(text.as_str()).unwrap();
                got_info_ping = value["type"] == "info" && value["msg"] == "ping";
            }
            _ => continue,
        }
    }
    assert!(got_info_ping, "no heartbeat within 5 s at a 1 s interval");
    broker.stop();
}

#[test]
fn max_connections_refuses_past_the_limit() {
    let broker = BrokerProcess::spawn(&[("MAX_CONNECTIONS", "1")]);
    let client = Client::connect(&ws_url(broker.addr));
    // The second connection gets 503 or is closed at accept.
    let mut stream = TcpStream::connect(broker.addr).expect("connect");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let _ = std::io::Write::write_all(
        &mut stream,
        b"GET /health HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
    );
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    assert!(
        response.is_empty() || response.starts_with("HTTP/1.1 503"),
        "{response}"
    );
    drop(client);
    // Once the first is gone, a new one is served.
    eventually("a connection to be served again", || {
        TcpStream::connect(broker.addr).is_ok_and(|mut s| {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = std::io::Write::write_all(
                &mut s,
                b"GET /health HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
            );
            let mut head = [0u8; 12];
            s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
        })
    });
    broker.stop();
}

#[test]
fn a_port_in_use_exits_non_zero_with_a_message() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, stderr) = run_to_exit(&[("ADDR", &addr)]);
    assert!(
        code.is_some_and(|c| c != 0),
        "exit code {code:?}; stderr: {stderr}"
    );
    assert!(!stderr.contains("listening on"), "{stderr}");
    let port = taken.local_addr().unwrap().port().to_string();
    assert!(
        stderr.contains(&port) || stderr.to_lowercase().contains("in use"),
        "the message names the address or the cause: {stderr}"
    );
    drop(taken);
}
