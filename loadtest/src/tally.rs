//! What one event-loop thread counted and measured over a run, merged
//! across threads at the end: latency histograms, delivery and order
//! counts, connection set-up results, disconnects and errors by kind,
//! what TLS connections negotiated, (`resume`) drops and resumes, and
//! (`handshakes`) resumed TLS sessions.

use crate::resume::ResumeTally;
use hdrhistogram::Histogram;
use rustls::ClientConnection;
use std::collections::BTreeMap;

/// Highest value a histogram records (60 s in ns); larger values saturate.
const HISTOGRAM_MAX_NS: u64 = 60_000_000_000;
/// How many failure messages are kept as examples.
const FAILURE_SAMPLES: usize = 5;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_NS, 3).expect("valid histogram bounds")
}

#[derive(Debug, Clone)]
pub struct Tally {
    /// Receive time minus send time (intended, in open loop), measured
    /// window only, in ns.
    pub latency: Histogram<u64>,
    /// Open loop: how late the harness generated each message after its
    /// intended time, in ns. High values mean the publisher was the limit.
    pub send_lag: Histogram<u64>,
    /// Time to connect, upgrade and subscribe, per connection, in ns.
    pub connect_time: Histogram<u64>,
    pub connected: u64,
    pub connect_failures: u64,
    pub connect_failure_samples: Vec<String>,
    /// Unique deliveries (duplicates excluded), whole run and measured window.
    pub delivered: u64,
    pub delivered_measured: u64,
    pub duplicates: u64,
    /// Deliveries that arrived after a later message of the same publisher.
    pub out_of_order: u64,
    /// Messages skipped over in a subscriber's sequence when it arrived.
    pub gaps: u64,
    /// Data messages that should carry a probe and did not.
    pub malformed: u64,
    /// pubsub: publish acks received.
    pub acks: u64,
    /// Error replies from the server, by code (pubsub) or text (NATS).
    pub errors: BTreeMap<String, u64>,
    /// Connections lost during the run, by reason.
    pub disconnects: BTreeMap<String, u64>,
    /// Open loop: messages due inside the window that were never sent.
    pub unsent: u64,
    /// Bytes still waiting in publishers' buffers when the run stopped.
    pub unwritten_bytes: u64,
    /// `resume`: drops, resumes and the subscribers' streams.
    pub resume: ResumeTally,
    /// `handshakes`: TLS handshakes that resumed a session.
    pub resumed_handshakes: u64,
    /// TLS connections set up, by what they negotiated: version, cipher
    /// suite and key exchange group.
    pub tls_sessions: BTreeMap<String, u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            latency: new_histogram(),
            send_lag: new_histogram(),
            connect_time: new_histogram(),
            connected: 0,
            connect_failures: 0,
            connect_failure_samples: Vec::new(),
            delivered: 0,
            delivered_measured: 0,
            duplicates: 0,
            out_of_order: 0,
            gaps: 0,
            malformed: 0,
            acks: 0,
            errors: BTreeMap::new(),
            disconnects: BTreeMap::new(),
            unsent: 0,
            unwritten_bytes: 0,
            resume: ResumeTally::default(),
            resumed_handshakes: 0,
            tls_sessions: BTreeMap::new(),
        }
    }
}

impl Tally {
    pub fn record_error(&mut self, code: &[u8]) {
        let code = String::from_utf8_lossy(code);
        match self.errors.get_mut(code.as_ref()) {
            Some(count) => *count += 1,
            None => {
                self.errors.insert(code.into_owned(), 1);
            }
        }
    }

    pub fn record_disconnect(&mut self, reason: String) {
        *self.disconnects.entry(reason).or_default() += 1;
    }

    pub fn record_connect_failure(&mut self, error: &anyhow::Error) {
        self.connect_failures += 1;
        if self.connect_failure_samples.len() < FAILURE_SAMPLES {
            self.connect_failure_samples.push(format!("{error:#}"));
        }
    }

    /// Counts a TLS connection set up, by what it negotiated (a resumed
    /// TLS 1.2 session has no key exchange).
    pub fn record_tls_session(&mut self, tls: &ClientConnection) {
        let version = tls
            .protocol_version()
            .map_or("no version".to_string(), |v| format!("{v:?}"));
        let suite = tls
            .negotiated_cipher_suite()
            .map_or("no cipher suite".to_string(), |s| {
                format!("{:?}", s.suite())
            });
        let group = tls
            .negotiated_key_exchange_group()
            .map_or("no key exchange".to_string(), |g| format!("{:?}", g.name()));
        *self
            .tls_sessions
            .entry(format!("{version} {suite} {group}"))
            .or_default() += 1;
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn disconnect_count(&self) -> u64 {
        self.disconnects.values().sum()
    }

    pub fn merge(&mut self, other: Tally) {
        self.latency.add(&other.latency).expect("same bounds");
        self.send_lag.add(&other.send_lag).expect("same bounds");
        self.connect_time
            .add(&other.connect_time)
            .expect("same bounds");
        self.connected += other.connected;
        self.connect_failures += other.connect_failures;
        for sample in other.connect_failure_samples {
            if self.connect_failure_samples.len() < FAILURE_SAMPLES {
                self.connect_failure_samples.push(sample);
            }
        }
        self.delivered += other.delivered;
        self.delivered_measured += other.delivered_measured;
        self.duplicates += other.duplicates;
        self.out_of_order += other.out_of_order;
        self.gaps += other.gaps;
        self.malformed += other.malformed;
        self.acks += other.acks;
        for (code, n) in other.errors {
            *self.errors.entry(code).or_default() += n;
        }
        for (reason, n) in other.disconnects {
            *self.disconnects.entry(reason).or_default() += n;
        }
        self.unsent += other.unsent;
        self.unwritten_bytes += other.unwritten_bytes;
        self.resume.merge(other.resume);
        self.resumed_handshakes += other.resumed_handshakes;
        for (session, n) in other.tls_sessions {
            *self.tls_sessions.entry(session).or_default() += n;
        }
    }
}
