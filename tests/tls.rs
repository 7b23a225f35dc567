//! TLS served by the broker itself (PROTOCOL.md, "TLS"), over real sockets
//! with a rustls client that trusts only the test's own CA: https:// and
//! wss:// on TLS 1.2 and 1.3 with ALPN and the whole chain; plain HTTP
//! refused without an answer; the handshake timeout; mutual TLS; a 1 MiB
//! message; the slow-consumer cut and the drain through TLS, with
//! `close_notify`; the SIGHUP reload; the start-up checks; and no private
//! key in the logs.

mod common;

use common::tls::{all_versions, connect, https, try_health, wss_client, Identity, TestCa};
use common::{
    read_until_closed, run_to_exit, tcp_with_recv_buffer, BrokerProcess, TestBroker, WAIT,
};
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};
use serde_json::json;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A directory of the test's own for its certificate files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pubsub-tls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A broker in this process serving `identity`, with `more` settings.
fn tls_broker(dir: &Path, identity: &Identity, more: &[(&str, &str)]) -> TestBroker {
    let (cert, key) = identity.write(dir, "server");
    let mut vars = vec![
        ("TLS_CERT_FILE", cert.to_str().unwrap().to_string()),
        ("TLS_KEY_FILE", key.to_str().unwrap().to_string()),
    ];
    vars.extend(more.iter().map(|(k, v)| (*k, v.to_string())));
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    TestBroker::with(&vars)
}

fn create_topic(addr: SocketAddr, client: &Arc<rustls::ClientConfig>, name: &str) {
    let body = json!({ "name": name }).to_string();
    let response = https(addr, client, "POST", "/topics", Some(&body));
    assert_eq!(response.status, 201, "{}", response.json());
}

fn metric(addr: SocketAddr, client: &Arc<rustls::ClientConfig>, line_start: &str) -> f64 {
    let response = https(addr, client, "GET", "/metrics", None);
    String::from_utf8(response.body)
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix(line_start))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

#[test]
fn https_and_wss_work_on_tls_1_2_and_1_3_with_alpn_and_the_whole_chain() {
    let dir = scratch("versions");
    let ca = TestCa::new("versions");
    let broker = tls_broker(&dir, &ca.server(), &[]);
    create_topic(broker.addr, &ca.client(&all_versions(), None), "orders");
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        // The client trusts the root only: the handshake succeeds only if
        // the broker sends the intermediate too.
        let client = ca.client(&[version], None);
        let stream = connect(broker.addr, &client).expect("handshake");
        assert_eq!(stream.conn.protocol_version(), Some(version.version));
        assert_eq!(stream.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
        assert_eq!(stream.conn.peer_certificates().map(<[_]>::len), Some(2));

        let health = https(broker.addr, &client, "GET", "/health", None);
        assert_eq!(health.status, 200);
        assert_eq!(health.json()["status"], "ok");

        let mut subscriber = wss_client(stream);
        subscriber.subscribe("orders", 0);
        let mut publisher = wss_client(connect(broker.addr, &client).unwrap());
        let id = format!("{:?}", version.version);
        let ack = publisher.publish("orders", &id, json!({ "over": "tls" }));
        let event = subscriber.expect("event");
        assert_eq!(event["message"]["id"], id.as_str());
        assert_eq!(event["seq"], ack["seq"]);
    }
}

#[test]
fn plain_http_on_the_tls_port_gets_no_answer_only_a_close() {
    let dir = scratch("plain");
    let ca = TestCa::new("plain");
    let broker = tls_broker(&dir, &ca.server(), &[]);
    let mut plain = TcpStream::connect(broker.addr).unwrap();
    plain
        .write_all(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    let (answer, closed) = read_until_closed(&mut plain, WAIT);
    assert!(closed, "still open");
    assert_eq!(answer, b"", "{}", String::from_utf8_lossy(&answer));

    let client = ca.client(&all_versions(), None);
    let refused = "pubsub_disconnects_total{reason=\"tls_error\"} ";
    common::eventually("the refusal counted", || {
        metric(broker.addr, &client, refused) >= 1.0
    });
}

#[test]
fn a_tls_handshake_not_done_in_time_is_closed_but_an_established_connection_stays() {
    let dir = scratch("slowloris");
    let ca = TestCa::new("slowloris");
    let broker = tls_broker(&dir, &ca.server(), &[("HANDSHAKE_TIMEOUT_SECS", "1")]);
    let client = ca.client(&all_versions(), None);
    create_topic(broker.addr, &client, "t");
    let mut established = wss_client(connect(broker.addr, &client).unwrap());
    established.subscribe("t", 0);

    // Silent; then the first bytes of a ClientHello and nothing more.
    let silent = TcpStream::connect(broker.addr).unwrap();
    let mut partial = TcpStream::connect(broker.addr).unwrap();
    let mut hello = Vec::new();
    let mut tls =
        ClientConnection::new(client.clone(), ServerName::try_from("127.0.0.1").unwrap()).unwrap();
    tls.write_tls(&mut hello).unwrap();
    partial.write_all(&hello[..hello.len() / 2]).unwrap();
    let started = Instant::now();
    for mut stream in [silent, partial] {
        let (answer, closed) = read_until_closed(&mut stream, WAIT);
        assert!(closed && answer.is_empty(), "{answer:?}");
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "{waited:?}"
    );

    std::thread::sleep(Duration::from_millis(1500));
    established.ping("after the timeout");
}

#[test]
fn mutual_tls_takes_only_clients_with_a_certificate_from_the_client_ca() {
    let dir = scratch("mtls");
    let ca = TestCa::new("mtls");
    let clients_ca = TestCa::new("mtls clients");
    let strangers_ca = TestCa::new("strangers");
    let ca_file = dir.join("clients-ca.pem");
    std::fs::write(&ca_file, clients_ca.root_pem()).unwrap();
    let broker = tls_broker(
        &dir,
        &ca.server(),
        &[("TLS_CLIENT_CA_FILE", ca_file.to_str().unwrap())],
    );
    let member = clients_ca.issue(&["client.example"], "member");
    let stranger = strangers_ca.issue(&["client.example"], "stranger");
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let without = try_health(broker.addr, &ca.client(&[version], None));
        assert!(
            without.is_err(),
            "{version:?} without a certificate: {without:?}"
        );
        let foreign = try_health(broker.addr, &ca.client(&[version], Some(&stranger)));
        assert!(
            foreign.is_err(),
            "{version:?} with a stranger's: {foreign:?}"
        );
        let admitted = try_health(broker.addr, &ca.client(&[version], Some(&member)))
            .unwrap_or_else(|e| panic!("{version:?} with a member's certificate: {e}"));
        assert!(admitted.starts_with("HTTP/1.1 200"), "{admitted}");
    }
}

#[test]
fn a_one_mib_message_crosses_tls_both_ways() {
    let dir = scratch("large");
    let ca = TestCa::new("large");
    let broker = tls_broker(&dir, &ca.server(), &[]);
    let client = ca.client(&all_versions(), None);
    create_topic(broker.addr, &client, "large");
    let mut subscriber = wss_client(connect(broker.addr, &client).unwrap());
    subscriber.subscribe("large", 0);
    let mut publisher = wss_client(connect(broker.addr, &client).unwrap());
    // The whole publish frame just under MAX_MESSAGE_BYTES (1 MiB).
    let blob: String = (0..1_048_400)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    publisher.publish("large", "big", json!({ "blob": blob }));
    let event = subscriber.expect("event");
    assert_eq!(
        event["message"]["payload"]["blob"].as_str(),
        Some(blob.as_str())
    );
    // And again from the ring, to a late subscriber.
    let mut late = wss_client(connect(broker.addr, &client).unwrap());
    late.subscribe("large", 1);
    let replayed = late.expect("event");
    assert_eq!(
        replayed["message"]["payload"]["blob"].as_str(),
        Some(blob.as_str())
    );
}

#[test]
fn a_slow_consumer_over_tls_is_cut_with_its_error_and_close() {
    let dir = scratch("slow");
    let ca = TestCa::new("slow");
    let broker = tls_broker(&dir, &ca.server(), &[("SUBSCRIBER_QUEUE_SIZE", "1")]);
    let client = ca.client(&all_versions(), None);
    create_topic(broker.addr, &client, "big");
    let socket = tcp_with_recv_buffer(broker.addr, 4096);
    socket.set_read_timeout(Some(WAIT)).unwrap();
    let tls =
        ClientConnection::new(client.clone(), ServerName::try_from("127.0.0.1").unwrap()).unwrap();
    let mut slow = wss_client(StreamOwned::new(tls, socket));
    slow.subscribe("big", 0);

    let mut publisher = wss_client(connect(broker.addr, &client).unwrap());
    let payload = json!({ "blob": "y".repeat(64 * 1024) });
    let details = |addr| https(addr, &client, "GET", "/topics/big", None).json();
    let mut published = 0;
    while published < 500 && details(broker.addr)["subscribers"] != 0 {
        published += 1;
        publisher.publish("big", &format!("m{published}"), payload.clone());
    }
    assert_eq!(details(broker.addr)["subscribers"], 0, "never overflowed");

    let (code, reason, seen) = slow.read_until_close();
    assert_eq!((code, reason.as_str()), (Some(1008), "SLOW_CONSUMER"));
    let last = seen.last().expect("the error frame");
    assert_eq!(last["error"]["code"], "SLOW_CONSUMER", "{last}");
    for (i, event) in seen[..seen.len() - 1].iter().enumerate() {
        assert_eq!(event["seq"], i as u64 + 1);
    }
    // The broker ends TLS properly: close_notify, not a bare TCP close.
    assert_eq!(clean_end(slow.ws.get_mut()), Ok(()));
}

/// Reads what is left on `stream` until TLS ends: `Ok` for a
/// `close_notify`, else how it ended.
fn clean_end(stream: &mut common::tls::TlsSocket) -> Result<(), String> {
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
                return Err("closed without close_notify".into())
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Err("still open".into())
}

#[test]
fn the_drain_closes_tls_connections_with_the_shutdown_notice_and_close_notify() {
    let dir = scratch("drain");
    let ca = TestCa::new("drain");
    let broker = tls_broker(&dir, &ca.server(), &[]);
    let client = ca.client(&all_versions(), None);
    create_topic(broker.addr, &client, "t");
    let mut subscriber = wss_client(connect(broker.addr, &client).unwrap());
    subscriber.subscribe("t", 0);
    let mut publisher = wss_client(connect(broker.addr, &client).unwrap());
    for i in 0..50 {
        publisher.publish("t", &format!("m{i}"), json!(i));
    }
    let stopping = std::thread::spawn(move || broker.shutdown());
    let (code, _, seen) = subscriber.read_until_close();
    assert_eq!(code, Some(1001));
    let events = seen.iter().filter(|m| m["type"] == "event").count();
    assert_eq!(events, 50, "every queued event delivered before the close");
    assert_eq!(seen.last().unwrap()["msg"], "server_shutdown");
    // The client answers the close, as tungstenite does when it reads it.
    let _ = subscriber.ws.flush();
    assert_eq!(clean_end(subscriber.ws.get_mut()), Ok(()));
    stopping.join().unwrap();
}

/// The DER of the certificate `addr` serves now.
fn served_certificate(addr: SocketAddr, ca: &TestCa) -> Vec<u8> {
    let stream = connect(addr, &ca.client(&all_versions(), None)).expect("handshake");
    stream.conn.peer_certificates().unwrap()[0].to_vec()
}

#[test]
fn sighup_gives_new_connections_the_new_certificate_and_a_bad_reload_keeps_the_old() {
    let dir = scratch("reload");
    let ca = TestCa::new("reload");
    let first = ca.issue(&["127.0.0.1"], "first");
    let second = ca.issue(&["127.0.0.1"], "second");
    let (cert, key) = first.write(&dir, "server");
    let broker = BrokerProcess::spawn(&[
        ("TLS_CERT_FILE", cert.to_str().unwrap()),
        ("TLS_KEY_FILE", key.to_str().unwrap()),
    ]);
    let client = ca.client(&all_versions(), None);
    create_topic(broker.addr, &client, "t");
    assert_eq!(
        served_certificate(broker.addr, &ca),
        first.chain[0].to_vec()
    );
    let mut old = wss_client(connect(broker.addr, &client).unwrap());
    old.subscribe("t", 0);

    second.write(&dir, "server");
    broker.signal("HUP");
    common::eventually("the reload logged", || {
        broker.stderr().contains("TLS certificate reloaded")
    });
    assert_eq!(
        served_certificate(broker.addr, &ca),
        second.chain[0].to_vec()
    );
    // The open connection keeps going on the session it began with.
    let mut publisher = wss_client(connect(broker.addr, &client).unwrap());
    publisher.publish("t", "after-reload", json!(1));
    assert_eq!(old.expect("event")["message"]["id"], "after-reload");

    // A key that does not match the certificate, then a certificate file
    // that is gone: each reload fails, names its file, and changes nothing.
    std::fs::write(&key, &first.key_pem).unwrap();
    broker.signal("HUP");
    common::eventually("the failed reload logged", || {
        broker.stderr().contains("variable=TLS_KEY_FILE")
    });
    std::fs::remove_file(&cert).unwrap();
    broker.signal("HUP");
    common::eventually("the second failed reload logged", || {
        broker.stderr().contains("variable=TLS_CERT_FILE")
    });
    assert_eq!(
        served_certificate(broker.addr, &ca),
        second.chain[0].to_vec()
    );
    let log = broker.stderr();
    let failures: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("TLS reload failed"))
        .collect();
    assert_eq!(failures.len(), 2, "{log}");
    assert!(
        failures[0].contains(key.to_str().unwrap()),
        "{}",
        failures[0]
    );
    assert!(
        failures[1].contains(cert.to_str().unwrap()),
        "{}",
        failures[1]
    );
    assert!(
        !log.contains("signal received"),
        "SIGHUP must not drain: {log}"
    );
    broker.stop();
}

#[test]
fn bad_tls_settings_stop_the_broker_with_exit_code_2_naming_the_variable() {
    let dir = scratch("startup");
    let ca = TestCa::new("startup");
    let (cert, key) = ca.server().write(&dir, "server");
    let (_, other_key) = ca.server().write(&dir, "other");
    let garbage = dir.join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN PRIVATE KEY-----\nU0VDUkVULWtleS1tYXRlcmlhbA==\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let missing = dir.join("missing.pem");
    let (cert, key, other_key, garbage, missing) = (
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
        other_key.to_str().unwrap(),
        garbage.to_str().unwrap(),
        missing.to_str().unwrap(),
    );
    // The settings, the variable named, and the reason given.
    type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec![("TLS_CERT_FILE", cert)],
            "TLS_CERT_FILE",
            "needs TLS_KEY_FILE",
        ),
        (
            vec![("TLS_KEY_FILE", key)],
            "TLS_KEY_FILE",
            "needs TLS_CERT_FILE",
        ),
        (
            vec![("TLS_CLIENT_CA_FILE", cert)],
            "TLS_CLIENT_CA_FILE",
            "needs TLS_CERT_FILE",
        ),
        (
            vec![("TLS_CERT_FILE", missing), ("TLS_KEY_FILE", key)],
            "TLS_CERT_FILE",
            "cannot read it",
        ),
        (
            vec![("TLS_CERT_FILE", key), ("TLS_KEY_FILE", key)],
            "TLS_CERT_FILE",
            "holds no PEM certificate",
        ),
        (
            vec![("TLS_CERT_FILE", cert), ("TLS_KEY_FILE", cert)],
            "TLS_KEY_FILE",
            "holds no usable PEM private key",
        ),
        (
            vec![("TLS_CERT_FILE", cert), ("TLS_KEY_FILE", garbage)],
            "TLS_KEY_FILE",
            "is not a usable private key",
        ),
        (
            vec![("TLS_CERT_FILE", cert), ("TLS_KEY_FILE", other_key)],
            "TLS_KEY_FILE",
            "does not match the certificate",
        ),
        (
            vec![
                ("TLS_CERT_FILE", cert),
                ("TLS_KEY_FILE", key),
                ("TLS_CLIENT_CA_FILE", missing),
            ],
            "TLS_CLIENT_CA_FILE",
            "cannot read it",
        ),
    ];
    for (env, variable, reason) in cases {
        let (code, stderr) = run_to_exit(&env);
        assert_eq!(code, Some(2), "{env:?}: {stderr}");
        assert!(
            stderr.contains(&format!("invalid {variable}=")) && stderr.contains(reason),
            "{env:?}: {stderr}"
        );
        assert!(
            !stderr.contains("U0VDUkVU"),
            "key material quoted: {stderr}"
        );
    }
}

#[test]
fn no_private_key_reaches_the_log_even_at_trace() {
    let dir = scratch("secrecy");
    let ca = TestCa::new("secrecy");
    let identity = ca.server();
    let (cert, key) = identity.write(&dir, "server");
    let key_lines: Vec<&str> = identity
        .key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(!key_lines.is_empty());
    for format in ["text", "json"] {
        let broker = BrokerProcess::spawn(&[
            ("TLS_CERT_FILE", cert.to_str().unwrap()),
            ("TLS_KEY_FILE", key.to_str().unwrap()),
            ("LOG_LEVEL", "trace"),
            ("LOG_FORMAT", format),
        ]);
        let client = ca.client(&all_versions(), None);
        create_topic(broker.addr, &client, "t");
        let mut ws = wss_client(connect(broker.addr, &client).unwrap());
        ws.subscribe("t", 1);
        broker.signal("HUP");
        common::eventually("the reload logged", || {
            broker.stderr().contains("TLS certificate reloaded")
        });
        let log = broker.stop();
        assert!(
            log.contains(key.to_str().unwrap()),
            "the path is shown: {log}"
        );
        for line in &key_lines {
            assert!(
                !log.contains(line),
                "{format}: a line of the key in the log"
            );
        }
    }
}
