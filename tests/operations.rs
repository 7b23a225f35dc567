//! What operators rely on: `/metrics` (parsed by a real Prometheus
//! text-format parser), `/readyz` through a drain, JSON logs (whose `conn`
//! names one connection), `--help` and `--version`.

mod common;

use common::*;
use prometheus_parse::{Scrape, Value as Metric};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

fn scrape(addr: SocketAddr, key: Option<&str>) -> Scrape {
    let headers: Vec<(&str, &str)> = key.map(|k| ("X-API-Key", k)).into_iter().collect();
    let response = http(addr, "GET", "/metrics", None, &headers);
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("Content-Type"),
        Some("text/plain; version=0.0.4")
    );
    let text = String::from_utf8(response.body).unwrap();
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("valid exposition format")
}

/// The value of a counter or gauge sample with exactly these labels.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let sample = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no sample {name}{labels:?}"));
    match sample.value {
        Metric::Counter(v) | Metric::Gauge(v) | Metric::Untyped(v) => v,
        ref other => panic!("{name} is {other:?}"),
    }
}

#[test]
fn metrics_move_with_publishes_deliveries_and_slow_consumers() {
    let broker = TestBroker::with(&[("API_KEY", "k"), ("SUBSCRIBER_QUEUE_SIZE", "1")]);
    let key = [("X-API-Key", "k")];
    assert_eq!(
        http(
            broker.addr,
            "POST",
            "/topics",
            Some(r#"{"name":"t"}"#),
            &key
        )
        .status,
        201
    );
    let before = scrape(broker.addr, Some("k"));
    for name in [
        "pubsub_connections",
        "pubsub_connections_accepted_total",
        "pubsub_connections_rejected_total",
        "pubsub_topics",
        "pubsub_subscriptions",
        "pubsub_messages_published_total",
        "pubsub_messages_delivered_total",
        "pubsub_bytes_received_total",
        "pubsub_bytes_sent_total",
        "pubsub_slow_consumer_disconnects_total",
        "pubsub_disconnects_total",
        "pubsub_http_requests_total",
        "pubsub_auth_failures_total",
        "pubsub_subscriber_queue_depth",
        "pubsub_uptime_seconds",
        "pubsub_build_info",
    ] {
        assert!(
            before.samples.iter().any(|s| s.metric == name),
            "missing {name}"
        );
    }
    assert_eq!(value(&before, "pubsub_topics", &[]), 1.0);
    assert!(value(&before, "pubsub_http_requests_total", &[("code", "2xx")]) >= 1.0);
    assert_eq!(
        value(
            &before,
            "pubsub_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );

    // Two subscribers read along; three messages.
    let url = format!("ws://{}/ws?api_key=k", broker.addr);
    let mut subs: Vec<Client> = (0..2).map(|_| Client::connect(&url)).collect();
    for s in &mut subs {
        s.subscribe("t", 0);
    }
    let mut publisher = Client::connect(&url);
    for i in 0..3 {
        publisher.publish("t", &format!("m{i}"), json!(i));
        for s in &mut subs {
            s.expect("event");
        }
    }
    let after = scrape(broker.addr, Some("k"));
    let delta = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    assert_eq!(delta("pubsub_messages_published_total", &[]), 3.0);
    assert_eq!(delta("pubsub_messages_delivered_total", &[]), 6.0);
    assert_eq!(value(&after, "pubsub_subscriptions", &[]), 2.0);
    assert_eq!(
        value(&after, "pubsub_connections", &[("kind", "websocket")]),
        3.0
    );
    assert!(delta("pubsub_bytes_received_total", &[]) > 0.0);
    assert!(delta("pubsub_bytes_sent_total", &[]) > 0.0);
    let depth = after
        .samples
        .iter()
        .find(|s| s.metric == "pubsub_subscriber_queue_depth")
        .unwrap();
    assert!(
        matches!(&depth.value, Metric::Histogram(buckets) if !buckets.is_empty()),
        "{depth:?}"
    );

    // A failed key counts.
    assert_eq!(
        http(
            broker.addr,
            "GET",
            "/topics",
            None,
            &[("X-API-Key", "nope")]
        )
        .status,
        401
    );
    let after_auth = scrape(broker.addr, Some("k"));
    assert_eq!(
        value(
            &after_auth,
            "pubsub_auth_failures_total",
            &[("reason", "invalid")]
        ) - value(
            &after,
            "pubsub_auth_failures_total",
            &[("reason", "invalid")]
        ),
        1.0
    );
    assert!(
        value(
            &after_auth,
            "pubsub_http_requests_total",
            &[("code", "4xx")]
        ) >= 1.0
    );

    // A subscriber that stops reading, with a queue of one, is cut.
    let slow = &mut subs[0];
    slow.set_read_timeout(WAIT);
    for i in 0..400 {
        publisher.publish("t", &format!("flood{i}"), json!("x".repeat(16 * 1024)));
        let cut = scrape(broker.addr, Some("k"));
        if value(&cut, "pubsub_slow_consumer_disconnects_total", &[]) >= 1.0 {
            break;
        }
        // The other subscriber keeps up.
        subs[1].expect("event");
    }
    eventually("the slow consumer's close to be counted", || {
        let cut = scrape(broker.addr, Some("k"));
        value(&cut, "pubsub_slow_consumer_disconnects_total", &[]) == 1.0
            && value(
                &cut,
                "pubsub_disconnects_total",
                &[("reason", "slow_consumer")],
            ) == 1.0
    });
}

#[test]
fn metrics_need_the_key_and_carry_no_topic_labels() {
    let broker = TestBroker::with(&[("API_KEY", "k")]);
    assert_eq!(http(broker.addr, "GET", "/metrics", None, &[]).status, 401);
    assert_eq!(
        http(
            broker.addr,
            "POST",
            "/topics",
            Some(r#"{"name":"secret-topic"}"#),
            &[("X-API-Key", "k")]
        )
        .status,
        201
    );
    let s = scrape(broker.addr, Some("k"));
    for sample in &s.samples {
        for label in ["topic", "name"] {
            assert!(sample.labels.get(label).is_none(), "{sample:?}");
        }
    }
    let text =
        String::from_utf8(http(broker.addr, "GET", "/metrics", None, &[("X-API-Key", "k")]).body)
            .unwrap();
    assert!(!text.contains("secret-topic"));
}

#[test]
fn stats_add_per_topic_figures_and_totals() {
    let broker = TestBroker::start();
    broker.create_topic("t");
    let mut sub = broker.client();
    sub.subscribe("t", 0);
    let mut publisher = broker.client();
    publisher.publish("t", "m1", json!(1));
    publisher.publish("t", "m2", json!(2));
    sub.expect("event");
    sub.expect("event");
    let (status, stats) = http_json(broker.addr, "GET", "/stats", None, &[]);
    assert_eq!(status, 200);
    assert_eq!(
        stats["topics"]["t"],
        json!({"messages":2,"subscribers":1,"delivered":2,"slow_consumer_disconnects":0,"ring":2,"last_seq":2})
    );
    assert_eq!(stats["totals"]["messages_published"], 2);
    assert_eq!(stats["totals"]["messages_delivered"], 2);
}

#[test]
fn readyz_answers_without_a_key_and_503_on_an_open_connection_during_a_drain() {
    let mut broker = BrokerProcess::spawn(&[
        ("WORKERS", "1"),
        ("API_KEY", "k"),
        ("SHUTDOWN_TIMEOUT_SECS", "3"),
        ("SUBSCRIBER_QUEUE_SIZE", "100000"),
    ]);
    let (status, body) = http_json(broker.addr, "GET", "/readyz", None, &[]);
    assert_eq!((status, body), (200, json!({"status":"ready"})));
    assert_eq!(
        http(
            broker.addr,
            "POST",
            "/topics",
            Some(r#"{"name":"t"}"#),
            &[("X-API-Key", "k")]
        )
        .status,
        201
    );

    // A subscriber that does not read keeps the drain going.
    let url = format!("ws://{}/ws?api_key=k", broker.addr);
    let mut stuck = Client::connect(&url);
    stuck.subscribe("t", 0);
    let mut publisher = Client::connect(&url);
    for i in 0..300 {
        publisher.publish("t", &format!("m{i}"), json!("y".repeat(64 * 1024)));
    }
    // A keep-alive connection opened before the signal.
    let mut probe = HttpConn::open(broker.addr);
    assert_eq!(probe.request("GET", "/readyz", None).status, 200);

    broker.signal("TERM");
    let mut answer = None;
    for _ in 0..50 {
        let response = probe.request("GET", "/readyz", None);
        if response.status == 503 {
            answer = Some(response);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let response = answer.expect("/readyz turns 503 once the drain begins");
    assert_eq!(response.json(), json!({"status":"draining"}));
    drop(stuck);
    broker.wait_success(Duration::from_secs(15));
}

#[test]
fn json_logs_are_one_object_per_line() {
    let broker = BrokerProcess::spawn(&[("LOG_FORMAT", "json"), ("LOG_LEVEL", "debug")]);
    let url = ws_url(broker.addr);
    assert_eq!(
        http(broker.addr, "POST", "/topics", Some(r#"{"name":"t"}"#), &[]).status,
        201
    );
    let mut sub = Client::connect(&url);
    sub.subscribe("t", 0);
    Client::connect(&url).publish("t", "m", json!(1));
    sub.expect("event");
    sub.ws.close(None).unwrap();
    let _ = sub.ws.read();
    eventually("the close to be logged", || {
        broker.stderr().contains("\"kind\":\"websocket\"")
    });
    let stderr = broker.stop();
    let lines: Vec<Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    for line in &lines {
        let ts = line["ts"].as_str().expect("ts");
        assert_eq!((ts.len(), &ts[19..20], &ts[23..]), (24, ".", "Z"), "{line}");
        assert!(
            ["error", "warn", "info", "debug", "trace"].contains(&line["level"].as_str().unwrap()),
            "{line}"
        );
        assert!(line["msg"].is_string(), "{line}");
    }
    assert!(lines
        .iter()
        .any(|l| l["msg"].as_str().unwrap().contains("listening on ")));
    let closed = lines
        .iter()
        .find(|l| l["msg"] == "connection closed" && l["client_id"] == "test")
        .unwrap_or_else(|| panic!("no close line of the subscriber in {stderr}"));
    assert_eq!(closed["reason"], "normal");
    assert_eq!(closed["kind"], "websocket");
    // In: the upgrade request and the subscribe. Out: the 101, the ack, the event.
    assert_eq!(
        (
            closed["messages_in"].as_u64(),
            closed["messages_out"].as_u64()
        ),
        (Some(2), Some(3)),
        "{closed}"
    );
    assert!(
        closed["conn"].is_string() && closed["peer"].is_string() && closed["worker"].is_u64(),
        "{closed}"
    );
    let request = lines
        .iter()
        .find(|l| l["msg"] == "request" && l["path"] == "/topics")
        .expect("debug logs one line per REST request");
    assert_eq!(
        (request["method"].as_str(), request["status"].as_u64()),
        (Some("POST"), Some(201))
    );
    assert!(request["micros"].is_u64());
    assert!(lines
        .iter()
        .any(|l| l["msg"] == "topic created" && l["topic"] == "t"));
}

#[test]
fn log_lines_of_two_workers_never_share_a_conn_id() {
    let broker = BrokerProcess::spawn(&[("LOG_FORMAT", "json"), ("WORKERS", "2")]);
    const CONNECTIONS: usize = 64;
    for _ in 0..CONNECTIONS {
        assert_eq!(http(broker.addr, "GET", "/health", None, &[]).status, 200);
    }
    let closes = |stderr: &str| -> Vec<Value> {
        stderr
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|line| line["msg"] == "connection closed")
            .collect()
    };
    eventually("every close to be logged", || {
        closes(&broker.stderr()).len() == CONNECTIONS
    });
    let closes = closes(&broker.stop());
    let workers: std::collections::BTreeSet<u64> = closes
        .iter()
        .map(|l| l["worker"].as_u64().unwrap())
        .collect();
    assert_eq!(
        workers.len(),
        2,
        "both workers accepted connections: {closes:?}"
    );
    let ids: std::collections::BTreeSet<&str> =
        closes.iter().map(|l| l["conn"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), CONNECTIONS, "conn ids repeat: {closes:?}");
}

#[test]
fn help_names_every_variable_the_config_reads_and_version_prints() {
    let output = Command::new(env!("CARGO_BIN_EXE_pubsub"))
        .arg("--help")
        .env_clear()
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    let mut named: Vec<&str> = help
        .lines()
        .filter_map(|line| line.strip_prefix("  "))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter(|word| word.chars().all(|c| c.is_ascii_uppercase() || c == '_') && word.len() > 1)
        .collect();
    named.sort();
    let read = std::cell::RefCell::new(std::collections::BTreeSet::new());
    pubsub::Config::from_vars(|name| {
        read.borrow_mut().insert(name.to_string());
        None
    })
    .unwrap();
    let read = read.into_inner();
    assert_eq!(
        named,
        read.iter().map(String::as_str).collect::<Vec<_>>(),
        "{help}"
    );
    for setting in pubsub::config::SETTINGS {
        assert!(help.contains(&setting.meaning()), "{}", setting.name());
    }

    let output = Command::new(env!("CARGO_BIN_EXE_pubsub"))
        .arg("--version")
        .env_clear()
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8(output.stdout).unwrap().trim(),
        format!("pubsub {}", env!("CARGO_PKG_VERSION"))
    );
}
