//! The scenarios, end to end, against a real broker started in this process
//! on a free loopback port. Small numbers, short windows, and functional
//! assertions only (nothing about speed): every expected delivery arrives,
//! in order, a subscriber that stops reading is cut while the others
//! lose nothing, and subscribers that drop and resume see every seq once.
//! And the binary's exit status: a run that falls short, or options that
//! leave nothing to measure, fail.

mod common;

use common::{assert_clean, run_options, Broker};
use loadtest::run::ServerPids;
use loadtest::scenario::{self, ConnsOptions, FanoutOptions, ResumeOptions, SlowOptions};
use std::process::{Command, Output};

#[test]
fn closed_loop_fanout_delivers_every_message_to_every_subscriber() {
    let broker = Broker::start(&[], None);
    let options = FanoutOptions {
        publishers: 2,
        topics: 3,
        subscribers: 4,
        size: 300,
        rate: 0.0,
        window: 16,
        warmup: 0.2,
        duration: 0.8,
        run: run_options(),
    };
    let report = scenario::fanout(&broker.nodes(), &options, &ServerPids::default())
        .expect("the run completes");
    assert_clean(&report);
    // Every topic has 4 subscribers, so each message is expected 4 times.
    assert_eq!(report.expected, report.published * 4);
    assert_eq!(report.connections, 2 + 3 * 4);
    assert!(report.latency_us.count > 0);
    assert!(report.send_lag_us.is_none());
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    for key in [
        "published",
        "delivered",
        "expected",
        "lost",
        "delivered_per_sec",
        "disconnects",
        "server_cpu_pct",
        "server_rss_kib",
    ] {
        assert!(json.get(key).is_some(), "JSON lacks {key}");
    }
    for key in ["p50", "p90", "p99", "p999", "max"] {
        assert!(
            json["latency_us"].get(key).is_some(),
            "JSON lacks latency_us.{key}"
        );
    }
}

#[test]
fn open_loop_fanout_keeps_the_schedule_and_loses_nothing() {
    let broker = Broker::start(&[], None);
    let options = FanoutOptions {
        publishers: 1,
        topics: 2,
        subscribers: 3,
        size: 128,
        rate: 400.0,
        window: 64,
        warmup: 0.2,
        duration: 0.5,
        run: run_options(),
    };
    let report = scenario::fanout(&broker.nodes(), &options, &ServerPids::default())
        .expect("the run completes");
    assert_clean(&report);
    // 400/s over 0.5 s; the window's edges may round either way.
    assert!(
        (199..=201).contains(&report.published),
        "{}",
        report.table()
    );
    assert_eq!(report.unsent, 0);
    assert!(report.send_lag_us.is_some());
    assert!(report.acks > 0);
}

#[test]
fn a_subscriber_that_stops_reading_is_cut_and_the_others_lose_nothing() {
    // A deep queue, so that a healthy subscriber survives a long stall of
    // this (possibly busy) machine; large messages, so that the slow one
    // still overflows it, and the kernel's socket buffers, within the run.
    let broker = Broker::start(&[("SUBSCRIBER_QUEUE_SIZE", "1000")], None);
    let options = SlowOptions {
        publishers: 1,
        topics: 1,
        subscribers: 2,
        slow: 1,
        slow_rcvbuf: 4096,
        rate: 1000.0,
        size: 16384,
        warmup: 0.2,
        duration: 2.5,
        run: run_options(),
    };
    let report = scenario::slow(&broker.nodes(), &options, &ServerPids::default())
        .expect("the run completes");
    assert_clean(&report);
    let slow = report
        .slow
        .as_ref()
        .expect("the slow scenario reports its slow subscribers");
    assert_eq!(slow.slow_subscribers, 1);
    assert_eq!(slow.cut, 1, "{}", report.table());
    assert_eq!(slow.still_open, 0);
}

#[test]
fn subscribers_that_drop_and_resume_see_every_seq_exactly_once() {
    // A ring far larger than a run of this length can fill, so that every
    // resume recovers even if this machine stalls for a while.
    let broker = Broker::start(&[("RING_BUFFER_SIZE", "10000")], None);
    let options = ResumeOptions {
        publishers: 2,
        topics: 2,
        subscribers: 3,
        size: 200,
        rate: 400.0,
        duration: 1.5,
        reconnect_every: 100,
        seed: 3,
        require_recovery: true,
        run: run_options(),
    };
    let report = scenario::resume(&broker.nodes(), &options, &ServerPids::default())
        .expect("the run completes");
    assert_clean(&report);
    // Each message is due to its topic's 3 subscribers, drops or not.
    assert_eq!(report.expected, report.published * 3, "{}", report.table());
    let resume = report.resume.as_ref().expect("resume reports its figures");
    assert_eq!(resume.subscribers, 6);
    assert!(resume.reconnects >= 6, "{}", report.table());
    // Both kinds of drop, abrupt and clean, were exercised.
    assert!(
        0 < resume.abrupt_drops && resume.abrupt_drops < resume.reconnects,
        "{}",
        report.table()
    );
    assert_eq!(resume.recovered, resume.reconnects, "{}", report.table());
    assert_eq!((resume.not_recovered, resume.missed), (0, 0));
    assert_eq!(resume.subscribers_complete, 6, "{}", report.table());
    assert_eq!(resume.subscribers_short, 0);
    assert_eq!(resume.replayed + resume.live, report.delivered);
    // Both topics got half the messages, numbered from 1.
    assert_eq!(resume.topic_last_seq.iter().sum::<u64>(), report.published);
    assert_eq!(resume.resume_ack_us.count, resume.reconnects);
    assert!(resume.first_event_us.count > 0);
}

#[test]
fn idle_connections_are_opened_and_held() {
    let broker = Broker::start(&[], None);
    let options = ConnsOptions {
        connections: 50,
        topics: 5,
        hold: 0.3,
        source_addrs: Some(2),
        run: run_options(),
    };
    let report = scenario::conns(&broker.nodes(), &options, &ServerPids::default())
        .expect("the run completes");
    assert_eq!(report.connections, 50, "{}", report.table());
    assert_eq!(report.connect_failures, 0);
    assert_eq!(report.disconnects, 0);
    assert_eq!(report.connect_us.count, 50);
}

fn loadtest(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(args)
        .output()
        .expect("run the loadtest binary")
}

#[test]
fn the_binary_fails_a_run_that_falls_short_and_says_why() {
    // Room for two connections: at least two of the four are refused.
    let broker = Broker::start(&[("MAX_CONNECTIONS", "2")], None);
    let url = format!("ws://{}/ws", broker.endpoint.addr);
    let out = loadtest(&[
        "conns",
        "--url",
        &url,
        "--connections",
        "4",
        "--topics",
        "1",
        "--hold",
        "0.2",
        "--quiet",
    ]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("conns against pubsub"), "{stdout}");
    assert!(
        stderr.contains("loadtest: FAILED: ") && stderr.contains("connections failed to set up"),
        "{stderr}"
    );
}

#[test]
fn the_binary_refuses_resume_against_nats() {
    let out = loadtest(&["resume", "--target", "nats", "--spawn", "--quiet"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--target pubsub only"), "{stderr}");
    assert!(!stderr.contains("spawned"), "nothing is spawned: {stderr}");
}

#[test]
fn the_binary_refuses_a_window_of_zero_seconds() {
    for args in [
        &["fanout", "--duration", "0"][..],
        &["slow", "--duration", "0"],
        &["conns", "--hold", "0"],
        &["resume", "--duration", "0"],
    ] {
        let out = loadtest(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("more than 0 seconds"), "{args:?}: {stderr}");
    }
}
