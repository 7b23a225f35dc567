//! The harness over TLS, end to end, against the real broker started in
//! this process behind TLS (`TLS_CERT_FILE`, `TLS_KEY_FILE`, and for
//! mutual TLS `TLS_CLIENT_CA_FILE`) with certificates generated for the
//! test: a fan-out over wss:// (topics created over https://) delivers
//! every message; resuming subscribers reconnect, handshake included,
//! without blocking the loop; `handshakes` sets up every connection and,
//! with `--resume`, resumes sessions; a broker that requires client
//! certificates takes the harness's and refuses a client without one; and
//! the binary, given a wss:// URL and `--ca-file`, runs. Short runs,
//! functional assertions only.

mod common;

use common::{assert_clean, run_options, Broker};
use loadtest::certs::Pki;
use loadtest::endpoint::{Endpoint, TargetKind};
use loadtest::nodes::Nodes;
use loadtest::run::ServerPids;
use loadtest::scenario::{self, FanoutOptions, HandshakeOptions, ResumeOptions};
use std::process::Command;

fn fanout_options() -> FanoutOptions {
    FanoutOptions {
        publishers: 2,
        topics: 2,
        subscribers: 3,
        size: 300,
        rate: 0.0,
        window: 16,
        warmup: 0.2,
        duration: 0.6,
        run: run_options(),
    }
}

#[test]
fn fanout_over_wss_delivers_every_message_to_every_subscriber() {
    let pki = Pki::generate(false).unwrap();
    let broker = Broker::start(&[], Some(&pki));
    assert!(broker.endpoint.tls.is_some());
    let report = scenario::fanout(&broker.nodes(), &fanout_options(), &ServerPids::default())
        .expect("the run completes");
    assert_clean(&report);
    assert_eq!(report.expected, report.published * 3, "{}", report.table());
    assert_eq!(report.connections, 2 + 2 * 3);
    // Every connection negotiated TLS 1.3 (the broker's choice when
    // offered both), and says so.
    let sessions: u64 = report.tls_sessions.values().sum();
    assert_eq!(sessions, report.connections, "{}", report.table());
    assert!(
        report
            .tls_sessions
            .keys()
            .all(|k| k.starts_with("TLSv1_3 ")),
        "{}",
        report.table()
    );
}

#[test]
fn resuming_subscribers_reconnect_over_tls_and_see_every_seq_once() {
    let pki = Pki::generate(false).unwrap();
    let broker = Broker::start(&[("RING_BUFFER_SIZE", "10000")], Some(&pki));
    let options = ResumeOptions {
        publishers: 1,
        topics: 1,
        subscribers: 4,
        size: 200,
        rate: 300.0,
        duration: 1.0,
        reconnect_every: 100,
        seed: 5,
        require_recovery: true,
        run: run_options(),
    };
    let report = scenario::resume(&broker.nodes(), &options, &ServerPids::default())
        .expect("the run completes");
    assert_clean(&report);
    let resume = report.resume.as_ref().expect("resume reports its figures");
    assert!(resume.reconnects >= 4, "{}", report.table());
    // Every resume recovered, but for one per subscriber that may still
    // be handshaking when the run ends: a drop after the last message
    // leaves nothing to wait for.
    assert_eq!(resume.not_recovered, 0, "{}", report.table());
    assert!(
        resume.recovered + 4 >= resume.reconnects,
        "{}",
        report.table()
    );
    assert_eq!(resume.subscribers_complete, 4, "{}", report.table());
}

fn handshake_options(resume: bool) -> HandshakeOptions {
    HandshakeOptions {
        duration: 10.0,
        count: 60,
        concurrency: 3,
        threads: 2,
        upgrade: true,
        resume,
        timeout: 5.0,
    }
}

#[test]
fn handshakes_set_up_every_connection_and_resume_sessions_when_asked() {
    let pki = Pki::generate(false).unwrap();
    let broker = Broker::start(&[], Some(&pki));
    let full = scenario::handshakes(
        &broker.nodes(),
        &handshake_options(false),
        &ServerPids::default(),
    )
    .expect("the run completes");
    assert_eq!(full.failures(), Vec::<String>::new(), "{}", full.table());
    let figures = full.handshakes.as_ref().expect("handshake figures");
    assert_eq!((figures.completed, figures.resumed), (60, 0));
    assert!(figures.tls && figures.upgrade);
    assert_eq!(full.connect_us.count, 60);

    let resumed = scenario::handshakes(
        &broker.nodes(),
        &handshake_options(true),
        &ServerPids::default(),
    )
    .expect("the run completes");
    assert_eq!(
        resumed.failures(),
        Vec::<String>::new(),
        "{}",
        resumed.table()
    );
    let figures = resumed.handshakes.as_ref().expect("handshake figures");
    assert_eq!(figures.completed, 60);
    // Only the first connections of each thread, before any ticket came,
    // pay a full handshake.
    assert!(figures.resumed >= 50, "{}", resumed.table());
}

#[test]
fn a_broker_that_requires_client_certificates_takes_the_harness_and_refuses_others() {
    let pki = Pki::generate(true).unwrap();
    let broker = Broker::start(&[], Some(&pki));
    let report = scenario::fanout(&broker.nodes(), &fanout_options(), &ServerPids::default())
        .expect("the run completes");
    assert_clean(&report);

    let anonymous = loadtest::tls::client_config(&pki.ca, None, None).unwrap();
    let endpoint = Endpoint::local(TargetKind::Pubsub, broker.endpoint.addr, "/ws")
        .unwrap()
        .with_tls(&anonymous)
        .unwrap();
    let report = scenario::handshakes(
        &Nodes::single(endpoint),
        &HandshakeOptions {
            count: 3,
            ..handshake_options(false)
        },
        &ServerPids::default(),
    )
    .expect("the run completes");
    assert_eq!(report.connections, 0, "{}", report.table());
    assert_eq!(report.connect_failures, 3, "{}", report.table());
}

#[test]
fn the_binary_runs_against_a_wss_url_with_the_ca_file() {
    let pki = Pki::generate(false).unwrap();
    let broker = Broker::start(&[], Some(&pki));
    let url = format!("wss://{}/ws", broker.endpoint.addr);
    let ca = pki.ca.to_string_lossy().into_owned();
    let out = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(["fanout", "--url", &url, "--ca-file", &ca])
        .args(["--subscribers", "2", "--warmup", "0", "--duration", "0.3"])
        .args(["--quiet", "--json"])
        .output()
        .expect("run the loadtest binary");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let json: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap();
    assert!(json["delivered"].as_u64() > Some(0), "{stdout}");
    assert_eq!(json["delivered"], json["expected"], "{stdout}");

    // Without the CA, a wss:// URL is refused before anything is sent.
    let out = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(["fanout", "--url", &url, "--quiet"])
        .output()
        .expect("run the loadtest binary");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--ca-file"), "{stderr}");
}
