// The body of the `connection_tls` fuzz target, shared with the regression
// test that replays `fuzz/regressions/connection_tls/` (the
// `fuzz_regressions` module at the bottom of src/server/harness.rs).
//
// One connection through `ConnectionDriver` with TLS: the broker's own
// `TlsStream` (a rustls `ServerConnection`, configured from PEM files by
// `TlsFiles::load` as at start-up) under the worker's real turn, and a
// rustls `ClientConnection` in memory as its peer. The client does the
// handshake, then sends the plaintext of a `connection` program
// (`connection_program.rs`, a sibling module: HTTP, the upgrade, WebSocket
// frames); the input also decides how the client's TLS bytes are cut into
// the broker's reads (its records' size, the bytes each turn brings, the
// most one read returns: records split anywhere, several in one read),
// where the broker's output blocks, and garbage in the TLS stream.
//
// The input is a header byte H, then the program:
//
//   H bit 0      the client speaks TLS 1.2 (else TLS 1.3)
//   H bit 1      the client offers ALPN `h2` only, which the broker refuses
//                (else `http/1.1`)
//   H bits 2..=6 N: the client's records are at most 16 * N + 16 bytes
//                (N = 0: up to 16 KiB of plaintext)
//   H bit 7      the client's first flight is lost: the wire starts empty,
//                so what `FB` puts there is the first the broker reads
//                (plain HTTP on the TLS port, say)
//
// The steps of `connection_program.rs`, where a send is the client's
// plaintext (records of their own once the handshake is done) and `F5`
// ends the TCP stream (no `close_notify`; what waits on the wire is lost),
// and the target's own:
//
//   0xF8         hold: the client's TLS bytes wait on the wire (until
//                then, the broker reads them in the step that wrote them)
//   0xF9 N       the broker reads the next N + 1 bytes waiting, in one turn
//   0xFA         no more holding: the broker reads all that waits
//   0xFB N       the next N + 1 input bytes go onto the wire as they are
//   0xFC N       one read of the broker's socket returns at most N bytes
//                (0: as many as there are)
//   0xFD         the client sends `close_notify` (its plaintext ends)
//   0xFE         the client updates its traffic keys (TLS 1.3 KeyUpdate)
//   0xFF         nothing
//
// Checked: no panic, and no hang (every loop is bounded); the broker's
// output always parses as TLS and decrypts on the client's side, and
// nothing follows its `close_notify`. The client's only allowed errors are
// an alert the broker sent after garbage, and a `close_notify` during the
// handshake (the broker closing a connection whose handshake is not done:
// unauthenticated, which rustls refuses on TLS 1.3). The plaintext the
// client decrypts passes `OutputCheck`. Once the client's stream has ended
// and it reads everything, the connection is closed within two seconds;
// if the handshake was done, the client sent no garbage, was not refused
// and its receive window was never limited, the broker's TLS said
// `close_notify` last. (With a limited window it may not: the broker
// shuts the socket's write side only once `close_notify` is out, but a
// peer that takes nothing until the close deadline never gets it.)
//
// Differential: a plain twin (a second driver, without TLS) gets each
// record's plaintext in the step in which the TLS broker gets the
// record's last byte, the end of stream when it does (a `close_notify`
// after the broker's own is not one: it drops it unread), and every other
// step (time, drain, turns, read size) as it does. Then after every step
// both have written the same responses and frames (time stamps, uptimes
// and the broker's epoch aside) and are open or closed alike. The twin is
// dropped (the run is no longer comparable) when the client sends
// garbage, when the input limits the receive window (counted in TLS bytes
// on one side, plaintext on the other), when the client offers `h2` or
// loses its first flight, or when it sends more KeyUpdates in a row than
// rustls allows a peer (it then refuses the client).

use super::connection_program::{config, OutputCheck, Program, Step};
use pubsub::config::{ServerTls, TlsFiles};
use pubsub::server::harness::ConnectionDriver;
use rustls::pki_types::ServerName;
use rustls::{AlertDescription, ClientConfig, ClientConnection, RootCertStore};
use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::num::NonZeroUsize;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Rounds of records back and forth after a step, at most.
const PUMP_ROUNDS: usize = 16;
/// The TLS record header, which `max_fragment_size` counts.
const RECORD_HEADER: usize = 5;
/// The most plaintext a TLS record carries.
const MAX_RECORD_PLAINTEXT: usize = 16 * 1024;
/// The KeyUpdates rustls takes from a peer without application data in
/// between (its `TemperCounters`, after BoringSSL's `kMaxKeyUpdates`).
const KEY_UPDATES_IN_A_ROW: usize = 32;

/// Runs `data`; returns how many responses and frames the TLS run and its
/// plain twin agreed on, if they stayed comparable to the end (else 0).
pub fn run(data: &[u8]) -> usize {
    let (&header, program) = data.split_first().unwrap_or((&0, &[]));
    let mut tls = ConnectionDriver::new(pubsub::Config {
        tls: Some(certificates().server.clone()),
        ..config()
    });
    tls.create_topic("t");
    tls.create_topic("u");
    // Refusing `h2`, or without a hello, the broker never gets to replies.
    let mut plain = (header & 0x82 == 0).then(Twin::new);
    let mut peer = TlsPeer::new(header);
    if header & 0x80 != 0 {
        while peer.client.wants_write() {
            peer.client
                .write_tls(&mut std::io::sink())
                .expect("a sink takes every byte");
        }
    }
    peer.pump(&mut tls, &mut plain);
    let mut program = Program::new(program);
    while let Some(op) = program.op() {
        match program.step(op) {
            Some(Step::Send(bytes)) => peer.send(bytes),
            Some(Step::EndOfStream) => {
                peer.end_stream();
                tls.send_end_of_stream();
                if let Some(twin) = &mut plain {
                    twin.driver.send_end_of_stream();
                }
            }
            Some(step) => {
                if matches!(step, Step::WriteRoom(Some(_))) {
                    peer.window_limited = true;
                    plain = None;
                }
                step.apply(&mut tls);
                if let Some(twin) = &mut plain {
                    step.apply(&mut twin.driver);
                }
            }
            None => match op {
                0xF8 => peer.hold = true,
                0xF9 => {
                    let n = usize::from(program.byte()) + 1;
                    peer.deliver(n, &mut tls, &mut plain);
                }
                0xFA => peer.hold = false,
                0xFB => {
                    let n = usize::from(program.byte()) + 1;
                    peer.wire.extend_from_slice(program.bytes(n));
                    peer.garbage = true;
                    plain = None;
                }
                0xFC => {
                    let most = NonZeroUsize::new(usize::from(program.byte()));
                    tls.set_read_size(most);
                    if let Some(twin) = &mut plain {
                        twin.driver.set_read_size(most);
                    }
                }
                0xFD => peer.close_notify(),
                // Refused before the handshake is done, and on TLS 1.2.
                0xFE => {
                    if peer.client.refresh_traffic_keys().is_ok() {
                        peer.key_updates_in_a_row += 1;
                    }
                    if peer.key_updates_in_a_row > KEY_UPDATES_IN_A_ROW {
                        plain = None;
                        peer.refused = true;
                    }
                }
                _ => {}
            },
        }
        peer.pump(&mut tls, &mut plain);
        if let Some(twin) = &mut plain {
            twin.feed();
            twin.agrees(&peer, &tls);
        }
        if tls.is_closed() {
            break;
        }
    }
    // The client reads everything and its stream ends: the connection
    // closes within two seconds.
    peer.hold = false;
    tls.set_write_room(None);
    if let Some(twin) = &mut plain {
        twin.driver.set_write_room(None);
    }
    peer.pump(&mut tls, &mut plain);
    if !tls.is_closed() {
        peer.end_stream();
        tls.send_end_of_stream();
        tls.advance(Duration::from_secs(2));
        if let Some(twin) = &mut plain {
            twin.driver.send_end_of_stream();
            twin.driver.advance(Duration::from_secs(2));
        }
        peer.pump(&mut tls, &mut plain);
    }
    assert!(
        tls.is_closed(),
        "the peer ended its stream and read everything, yet the connection is open"
    );
    if !peer.garbage && !peer.refused && !peer.window_limited && peer.handshake_done {
        assert!(
            peer.closed_cleanly,
            "the broker's TLS ended without close_notify"
        );
    }
    let Some(mut twin) = plain else {
        return 0;
    };
    twin.feed();
    twin.agrees(&peer, &tls);
    twin.messages.len()
}

/// The plain twin of the TLS run: the same plaintext, without TLS.
struct Twin {
    driver: ConnectionDriver,
    check: OutputCheck,
    /// Its responses and frames so far, normalized.
    messages: Vec<String>,
}

impl Twin {
    fn new() -> Twin {
        let driver = ConnectionDriver::new(config());
        driver.create_topic("t");
        driver.create_topic("u");
        Twin {
            driver,
            check: OutputCheck::default(),
            messages: Vec::new(),
        }
    }

    fn feed(&mut self) {
        let messages = &mut self.messages;
        self.check
            .feed(self.driver.output(), |m| messages.push(normalized(m)));
    }

    /// The TLS run has written what this one has, and is open or closed
    /// as this one is.
    fn agrees(&self, peer: &TlsPeer, tls: &ConnectionDriver) {
        assert_eq!(
            self.messages, peer.messages,
            "over TLS and in plaintext, the same input got different replies"
        );
        assert_eq!(
            self.driver.is_closed(),
            tls.is_closed(),
            "over TLS and in plaintext, the connection closed at different steps"
        );
    }
}

/// What reaches the broker's connection once a record's last byte is
/// delivered.
enum Arrival {
    Plaintext(Vec<u8>),
    /// `close_notify`: the end of the client's plaintext.
    End,
}

/// The rustls client and the wire between it and the broker.
struct TlsPeer {
    client: ClientConnection,
    /// The most plaintext one of the client's records carries.
    record_plaintext: usize,
    /// TLS bytes for the broker that it has not been given yet.
    wire: Vec<u8>,
    /// Bytes given to the broker so far.
    delivered: usize,
    /// Where (in bytes given to the broker) each record the client wrote
    /// ends, and what it carries, in order.
    arrivals: VecDeque<(usize, Arrival)>,
    /// Plaintext sent before the handshake was done, written once it is.
    unsent: Vec<u8>,
    /// Bytes wait on the wire until a step delivers them.
    hold: bool,
    /// Raw bytes put on the wire (`FB`).
    garbage: bool,
    /// KeyUpdates since the client's last record of plaintext.
    key_updates_in_a_row: usize,
    /// rustls refused the client (too many KeyUpdates): its connection
    /// failed, and a failed TLS connection says no `close_notify` (rustls
    /// answers nothing more once it failed).
    refused: bool,
    /// The broker's writes blocked at some point (`F3`).
    window_limited: bool,
    /// The client's plaintext has ended (`close_notify` or end of stream).
    ended: bool,
    /// The TCP stream has ended: nothing more reaches the broker.
    stream_ended: bool,
    /// The client refused what the broker sent (see the checks above):
    /// from then on it reads and writes nothing.
    failed: bool,
    /// How much of the broker's output the client has read.
    read: usize,
    /// The broker's plaintext, decrypted.
    plaintext: Vec<u8>,
    check: OutputCheck,
    /// Its responses and frames so far, normalized.
    messages: Vec<String>,
    /// The client finished its handshake.
    handshake_done: bool,
    /// The client read the broker's `close_notify` (with the receive
    /// window unlimited, as soon as the broker wrote it).
    closed_cleanly: bool,
}

impl TlsPeer {
    fn new(header: u8) -> TlsPeer {
        let certificates = certificates();
        let mut config = match header & 1 {
            0 => certificates.tls13.clone(),
            _ => certificates.tls12.clone(),
        };
        config.alpn_protocols = match header & 2 {
            0 => vec![b"http/1.1".to_vec()],
            _ => vec![b"h2".to_vec()],
        };
        config.max_fragment_size = match usize::from(header >> 2 & 0x1F) {
            0 => None,
            n => Some(16 * n + 16),
        };
        let record_plaintext = config
            .max_fragment_size
            .map_or(MAX_RECORD_PLAINTEXT, |size| size - RECORD_HEADER);
        let name = ServerName::try_from("localhost").expect("a DNS name");
        let client = ClientConnection::new(Arc::new(config), name).expect("a client");
        TlsPeer {
            client,
            record_plaintext,
            wire: Vec::new(),
            delivered: 0,
            arrivals: VecDeque::new(),
            unsent: Vec::new(),
            hold: false,
            garbage: false,
            key_updates_in_a_row: 0,
            refused: false,
            window_limited: false,
            ended: false,
            stream_ended: false,
            failed: false,
            read: 0,
            plaintext: Vec::new(),
            check: OutputCheck::default(),
            messages: Vec::new(),
            handshake_done: false,
            closed_cleanly: false,
        }
    }

    /// The client sends `bytes` of plaintext: at once if the handshake is
    /// done, else once it is.
    fn send(&mut self, bytes: &[u8]) {
        if self.ended || self.failed {
            return;
        }
        self.unsent.extend_from_slice(bytes);
        self.write_unsent();
    }

    /// Writes the plaintext waiting for the handshake, if it is done: one
    /// record for each piece of at most `record_plaintext` bytes, so that
    /// the wire says where each piece's record ends.
    fn write_unsent(&mut self) {
        if self.client.is_handshaking() || self.unsent.is_empty() {
            return;
        }
        let unsent = std::mem::take(&mut self.unsent);
        for piece in unsent.chunks(self.record_plaintext) {
            self.flush_client();
            self.client
                .writer()
                .write_all(piece)
                .expect("the client takes plaintext once the handshake is done");
            self.flush_client();
            let end = self.delivered + self.wire.len();
            self.arrivals
                .push_back((end, Arrival::Plaintext(piece.to_vec())));
            self.key_updates_in_a_row = 0;
        }
    }

    /// The client says `close_notify`: its plaintext ends there.
    fn close_notify(&mut self) {
        if self.ended || self.failed {
            return;
        }
        self.ended = true;
        self.unsent.clear();
        self.flush_client();
        self.client.send_close_notify();
        self.flush_client();
        let end = self.delivered + self.wire.len();
        self.arrivals.push_back((end, Arrival::End));
    }

    /// The TCP stream ends: what waits on the wire is lost.
    fn end_stream(&mut self) {
        self.ended = true;
        self.stream_ended = true;
        self.unsent.clear();
        self.wire.clear();
        self.arrivals.clear();
    }

    /// What the client has to send goes onto the wire (nowhere once the
    /// stream has ended or the client failed).
    fn flush_client(&mut self) {
        while self.client.wants_write() {
            let written = if self.stream_ended || self.failed {
                self.client.write_tls(&mut std::io::sink())
            } else {
                self.client.write_tls(&mut self.wire)
            };
            written.expect("memory takes every byte");
        }
    }

    /// The broker reads the next `n` bytes of the wire (fewer if fewer
    /// wait) in one turn; the twin, in one turn too, the plaintext of the
    /// records that are now whole.
    fn deliver(&mut self, n: usize, broker: &mut ConnectionDriver, twin: &mut Option<Twin>) {
        let bytes: Vec<u8> = self.wire.drain(..n.min(self.wire.len())).collect();
        self.delivered += bytes.len();
        broker.send(&bytes);
        let mut plaintext = Vec::new();
        let mut end = false;
        while let Some((at, _)) = self.arrivals.front() {
            if *at > self.delivered {
                break;
            }
            match self.arrivals.pop_front().map(|(_, arrival)| arrival) {
                Some(Arrival::Plaintext(bytes)) => plaintext.extend_from_slice(&bytes),
                // After its own `close_notify`, the broker gives no record
                // to rustls (server::stream): the client's is dropped
                // unread, and only the TCP stream's end ends it.
                Some(Arrival::End) => end = !self.closed_cleanly,
                None => {}
            }
        }
        if let Some(twin) = twin {
            twin.driver.send(&plaintext);
            if end {
                twin.driver.send_end_of_stream();
            }
        }
    }

    /// Records back and forth until neither side has more: the client
    /// reads what the broker wrote, and puts what it has to send on the
    /// wire, which the broker reads unless it is held.
    fn pump(&mut self, broker: &mut ConnectionDriver, twin: &mut Option<Twin>) {
        for _ in 0..PUMP_ROUNDS {
            let output = broker.output();
            let new = output[self.read..].to_vec();
            self.read = output.len();
            self.receive(&new);
            if !self.failed && !self.ended {
                self.write_unsent();
            }
            self.flush_client();
            let deliver = !self.hold && !self.wire.is_empty() && !broker.is_closed();
            if deliver {
                self.deliver(self.wire.len(), broker, twin);
            }
            if new.is_empty() && !deliver {
                break;
            }
        }
        let messages = &mut self.messages;
        self.check
            .feed(&self.plaintext, |m| messages.push(normalized(m)));
    }

    /// The client reads `records` from the broker and decrypts them.
    fn receive(&mut self, mut records: &[u8]) {
        while !records.is_empty() && !self.failed {
            match self.client.read_tls(&mut records) {
                // Nothing is read once `close_notify` was.
                Ok(0) => panic!("the broker wrote records after its close_notify"),
                Ok(_) => {}
                Err(e) => panic!("the client cannot take the broker's records: {e}"),
            }
            match self.client.process_new_packets() {
                Ok(state) => self.closed_cleanly |= state.peer_has_closed(),
                Err(rustls::Error::AlertReceived(alert))
                    if self.garbage
                        || (alert == AlertDescription::CloseNotify
                            && self.client.is_handshaking()) =>
                {
                    self.failed = true
                }
                Err(e) => panic!("the broker's TLS does not decrypt: {e}"),
            }
            self.handshake_done |= !self.client.is_handshaking();
            let mut chunk = [0; 4096];
            loop {
                match self.client.reader().read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => self.plaintext.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("the client cannot read the plaintext: {e}"),
                }
            }
        }
    }
}

/// A response or frame as both runs must agree on it: without what differs
/// from one broker to another (time stamps, uptimes, the broker's random
/// `epoch`), nor the `Content-Length` their digits change.
fn normalized(message: &[u8]) -> String {
    const STAMP: &[u8] = b"0000-00-00T00:00:00.000Z";
    let mut bytes = message.to_vec();
    let mut at = 0;
    while at + STAMP.len() <= bytes.len() {
        let candidate = &bytes[at..at + STAMP.len()];
        let stamp = candidate.iter().zip(STAMP).all(|(&b, &t)| match t {
            b'0' => b.is_ascii_digit(),
            t => b == t,
        });
        if stamp {
            bytes[at..at + STAMP.len()].copy_from_slice(STAMP);
            at += STAMP.len();
        } else {
            at += 1;
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut normal = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        if !line.starts_with("Content-Length: ") && !line.starts_with("pubsub_uptime_seconds ") {
            normal.push_str(line);
        }
    }
    erase_values(&mut normal, "\"uptime_sec\":", |c| c.is_ascii_digit());
    erase_values(&mut normal, "\"epoch\":\"", |c| c != '"');
    normal
}

/// Removes the characters `in_value` that follow each `key` in `text`.
fn erase_values(text: &mut String, key: &str, in_value: fn(char) -> bool) {
    let mut from = 0;
    while let Some(found) = text[from..].find(key) {
        let start = from + found + key.len();
        let length: usize = text[start..]
            .chars()
            .take_while(|&c| in_value(c))
            .map(char::len_utf8)
            .sum();
        text.replace_range(start..start + length, "");
        from = start;
    }
}

/// The broker's TLS and what the client trusts, made once per process.
struct Certificates {
    server: ServerTls,
    tls13: ClientConfig,
    tls12: ClientConfig,
}

/// A CA and a certificate for `localhost` signed by it (Ed25519, so that
/// signatures and thus records have the same length on every run). The
/// broker's configuration comes from PEM files through `TlsFiles::load`,
/// its one way at start-up; the files are removed once read.
fn certificates() -> &'static Certificates {
    static CERTIFICATES: OnceLock<Certificates> = OnceLock::new();
    CERTIFICATES.get_or_init(|| {
        let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("a CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "pubsub fuzz CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("a CA");
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("a key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .expect("params")
            .signed_by(&key, &ca)
            .expect("a certificate");
        let dir = std::env::temp_dir().join(format!("pubsub-fuzz-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let files = TlsFiles {
            cert_file: dir.join("cert.pem").display().to_string(),
            key_file: dir.join("key.pem").display().to_string(),
            client_ca_file: None,
        };
        std::fs::write(&files.cert_file, cert.pem()).expect("a written certificate");
        std::fs::write(&files.key_file, key.serialize_pem()).expect("a written key");
        let initial = files.load(None).expect("the broker's TLS configuration");
        let _ = std::fs::remove_dir_all(&dir);
        let mut roots = RootCertStore::empty();
        roots.add(ca.der().clone()).expect("a usable CA");
        let client = |version: &'static rustls::SupportedProtocolVersion| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(&[version])
                .expect("a protocol version")
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
            // Nothing is carried from one run to the next.
            config.resumption = rustls::client::Resumption::disabled();
            config
        };
        Certificates {
            server: ServerTls { files, initial },
            tls13: client(&rustls::version::TLS13),
            tls12: client(&rustls::version::TLS12),
        }
    })
}
