//! The end-of-run report: built from a run's [`Outcome`], printed as a
//! readable table, and serialised as one JSON object (`--json`).
//!
//! Long on purpose: the verdict and both renderings (table and JSON) of
//! every scenario's figures, and their tests (a third of the file).

use crate::endpoint::TargetKind;
use crate::resume::ResumeOutcome;
use crate::run::{NodeOutcome, Outcome};
use crate::slow_consumers::SlowOutcome;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Percentiles of a histogram recorded in ns, reported in µs.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(histogram: &Histogram<u64>) -> Percentiles {
        let us = |ns: u64| ns as f64 / 1000.0;
        Percentiles {
            count: histogram.len(),
            mean: histogram.mean() / 1000.0,
            p50: us(histogram.value_at_quantile(0.50)),
            p90: us(histogram.value_at_quantile(0.90)),
            p99: us(histogram.value_at_quantile(0.99)),
            p999: us(histogram.value_at_quantile(0.999)),
            max: us(histogram.max()),
        }
    }
}

/// `handshakes`: connections set up (TCP, TLS, and the upgrade if asked)
/// and closed at once.
#[derive(Debug, Clone, Serialize)]
pub struct HandshakeOutcome {
    /// Over TLS (`wss://`), or TCP alone (`ws://`).
    pub tls: bool,
    /// Each connection also upgraded to WebSocket (`--upgrade`).
    pub upgrade: bool,
    /// Sessions resumed when they could be (`--resume`).
    pub resume: bool,
    /// Connections set up, and per second of the run.
    pub completed: u64,
    pub completed_per_sec: f64,
    /// TLS handshakes that resumed a session (rustls's `handshake_kind`).
    pub resumed: u64,
    /// CPU time per connection set up, in µs: the servers' (summed over a
    /// cluster's nodes) and the harness's, over the whole run.
    pub server_cpu_us_per_handshake: Option<f64>,
    pub harness_cpu_us_per_handshake: Option<f64>,
}

impl HandshakeOutcome {
    pub fn new(outcome: &Outcome, tls: bool, upgrade: bool, resume: bool) -> HandshakeOutcome {
        let completed = outcome.tally.connected;
        let secs = outcome.measured_secs;
        let per_handshake = |pct: Option<f64>| {
            (completed > 0).then_some(pct? / 100.0 * secs * 1e6 / completed as f64)
        };
        HandshakeOutcome {
            tls,
            upgrade,
            resume,
            completed,
            completed_per_sec: completed as f64 / secs.max(f64::MIN_POSITIVE),
            resumed: outcome.tally.resumed_handshakes,
            server_cpu_us_per_handshake: per_handshake(outcome.server_cpu_pct),
            harness_cpu_us_per_handshake: per_handshake(outcome.harness_cpu_pct),
        }
    }

    /// What a run of connections of this kind set up: `TLS handshake`,
    /// `TCP connect`, `+ upgrade`, `(resuming)`.
    fn kind(&self) -> String {
        let mut kind = String::from(match self.tls {
            true => "TLS handshake",
            false => "TCP connect",
        });
        if self.upgrade {
            kind.push_str(" + upgrade");
        }
        if self.resume {
            kind.push_str(", resuming");
        }
        kind
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub target: TargetKind,
    pub measured_secs: f64,
    /// Messages sent with a timestamp inside the measured window.
    pub published: u64,
    /// Deliveries expected for them (live subscribers of each message's
    /// topic when it was sent).
    pub expected: u64,
    /// Unique deliveries of those messages.
    pub delivered: u64,
    /// `expected - delivered`.
    pub lost: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub gaps: u64,
    pub malformed: u64,
    pub published_per_sec: f64,
    pub delivered_per_sec: f64,
    pub latency_us: Percentiles,
    /// Open loop only: how late the harness sent, against the schedule.
    pub send_lag_us: Option<Percentiles>,
    /// Open loop: messages of the schedule never sent (the socket was full).
    pub unsent: u64,
    pub unwritten_bytes: u64,
    /// pubsub: publish acks received (whole run).
    pub acks: u64,
    pub connections: u64,
    pub connect_failures: u64,
    pub connect_failure_samples: Vec<String>,
    pub connect_per_sec: f64,
    /// Time to connect, upgrade and subscribe, per connection.
    pub connect_us: Percentiles,
    /// TLS connections set up, by what they negotiated (`TLSv1_3
    /// TLS13_AES_256_GCM_SHA384 X25519`); empty over plain TCP.
    pub tls_sessions: BTreeMap<String, u64>,
    pub disconnects: u64,
    pub disconnect_reasons: BTreeMap<String, u64>,
    pub errors: u64,
    pub error_codes: BTreeMap<String, u64>,
    pub harness_cpu_pct: Option<f64>,
    /// Summed over the nodes of a cluster.
    pub server_cpu_pct: Option<f64>,
    pub server_rss_kib: Option<u64>,
    pub server_rss_before_kib: Option<u64>,
    /// `conns`: the server's RSS growth per connection held.
    pub server_kib_per_connection: Option<f64>,
    /// Each server (a cluster's nodes, in order): connections placed on
    /// it, CPU, RSS, backplane round trips.
    pub nodes: Vec<NodeOutcome>,
    /// A spawned cluster's Redis: CPU% over the measured window.
    pub redis_cpu_pct: Option<f64>,
    pub slow: Option<SlowOutcome>,
    /// `resume`: drops, resumes and whether every subscriber saw every
    /// `seq` once (set by the scenario, which asks the broker for each
    /// topic's last `seq`).
    pub resume: Option<ResumeOutcome>,
    /// `handshakes`: how many, how fast, how many resumed, CPU per
    /// handshake (set by the scenario).
    pub handshakes: Option<HandshakeOutcome>,
}

impl Report {
    pub fn new(
        scenario: &'static str,
        target: TargetKind,
        outcome: Outcome,
        open_loop: bool,
    ) -> Report {
        let tally = &outcome.tally;
        let secs = outcome.measured_secs.max(f64::MIN_POSITIVE);
        let server_kib_per_connection = match (
            scenario,
            outcome.server_rss_before_kib,
            outcome.server_rss_kib,
        ) {
            ("conns", Some(before), Some(after)) if tally.connected > 0 => {
                Some((after as f64 - before as f64) / tally.connected as f64)
            }
            _ => None,
        };
        Report {
            scenario,
            target,
            measured_secs: outcome.measured_secs,
            published: outcome.published,
            expected: outcome.expected,
            delivered: tally.delivered_measured,
            lost: outcome.expected.saturating_sub(tally.delivered_measured),
            duplicates: tally.duplicates,
            out_of_order: tally.out_of_order,
            gaps: tally.gaps,
            malformed: tally.malformed,
            published_per_sec: outcome.published as f64 / secs,
            delivered_per_sec: tally.delivered_measured as f64 / secs,
            latency_us: Percentiles::of(&tally.latency),
            send_lag_us: open_loop.then(|| Percentiles::of(&tally.send_lag)),
            unsent: tally.unsent,
            unwritten_bytes: tally.unwritten_bytes,
            acks: tally.acks,
            connections: tally.connected,
            connect_failures: tally.connect_failures,
            connect_failure_samples: tally.connect_failure_samples.clone(),
            connect_per_sec: tally.connected as f64 / outcome.connect_secs.max(f64::MIN_POSITIVE),
            connect_us: Percentiles::of(&tally.connect_time),
            tls_sessions: tally.tls_sessions.clone(),
            disconnects: tally.disconnect_count(),
            disconnect_reasons: tally.disconnects.clone(),
            errors: tally.error_count(),
            error_codes: tally.errors.clone(),
            harness_cpu_pct: outcome.harness_cpu_pct,
            server_cpu_pct: outcome.server_cpu_pct,
            server_rss_kib: outcome.server_rss_kib,
            server_rss_before_kib: outcome.server_rss_before_kib,
            server_kib_per_connection,
            nodes: outcome.nodes,
            redis_cpu_pct: outcome.redis_cpu_pct,
            slow: outcome.slow,
            resume: None,
            handshakes: None,
        }
    }

    /// Whether the scenario publishes (`fanout`, `slow`, `resume`), or
    /// only connects (`conns`, `handshakes`).
    fn publishes(&self) -> bool {
        !matches!(self.scenario, "conns" | "handshakes")
    }

    /// Why the run fails, if it does: `fanout`, `slow` and `resume` must
    /// publish in the measured window and deliver every expected message,
    /// once, in order, to subscribers that stay connected, with no error
    /// reply and every scheduled message sent (`resume`: except what the
    /// broker said a resume could not recover; and see
    /// [`ResumeOutcome::failures`]); `conns` must set up and hold every
    /// connection, `handshakes` set up every one it started and, with
    /// `--resume`, resume at least one session. Empty if the run passed.
    pub fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        let mut fail_if = |failed: bool, why: String| {
            if failed {
                failures.push(why);
            }
        };
        if !self.publishes() {
            let asked = self.connections + self.connect_failures;
            fail_if(self.connections == 0, "no connection was set up".into());
            fail_if(
                self.connect_failures > 0,
                format!(
                    "{} of {asked} connections failed to set up",
                    self.connect_failures
                ),
            );
            if let Some(handshakes) = &self.handshakes {
                fail_if(
                    handshakes.resume && handshakes.completed > 0 && handshakes.resumed == 0,
                    "--resume, but no handshake resumed a session: the server gave no \
                     usable ticket or session ID"
                        .into(),
                );
            }
        } else {
            fail_if(
                self.published == 0,
                "nothing was published in the measured window".into(),
            );
            fail_if(
                self.published > 0 && self.expected == 0,
                "no delivery was expected: no subscriber was connected".into(),
            );
            let missed = self.resume.as_ref().map_or(0, |resume| resume.missed);
            fail_if(
                self.delivered + missed < self.expected,
                if missed == 0 {
                    format!(
                        "{} of {} expected deliveries arrived ({} lost)",
                        self.delivered, self.expected, self.lost
                    )
                } else {
                    format!(
                        "{} of {} expected deliveries arrived ({} lost, of which {missed} \
                         missed by resumes that did not recover)",
                        self.delivered, self.expected, self.lost
                    )
                },
            );
            fail_if(
                self.duplicates + self.out_of_order + self.gaps > 0,
                format!(
                    "{} duplicates, {} out of order, {} gaps",
                    self.duplicates, self.out_of_order, self.gaps
                ),
            );
            fail_if(
                self.malformed > 0,
                format!("{} deliveries without the harness's probe", self.malformed),
            );
            fail_if(
                self.unsent > 0,
                format!("{} scheduled messages were never sent", self.unsent),
            );
            fail_if(
                self.errors > 0,
                format!(
                    "{} error replies ({})",
                    self.errors,
                    join(&self.error_codes)
                ),
            );
            if let Some(resume) = &self.resume {
                for why in resume.failures() {
                    fail_if(true, why);
                }
            }
        }
        fail_if(
            self.disconnects > 0,
            format!(
                "{} connections were lost during the run ({})",
                self.disconnects,
                join(&self.disconnect_reasons)
            ),
        );
        failures
    }

    /// ` (a, b, c)`: a figure of each node, when there are several.
    fn per_node(&self, figure: impl Fn(&NodeOutcome) -> Option<String>) -> String {
        if self.nodes.len() < 2 {
            return String::new();
        }
        let figures: Vec<String> = self.nodes.iter().map(|n| optional(figure(n))).collect();
        format!(" ({})", figures.join(", "))
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("the report always serialises")
    }

    /// The summary as aligned `name  value` lines.
    pub fn table(&self) -> String {
        let mut rows: Vec<(&str, String)> = vec![
            (
                "scenario",
                format!("{} against {}", self.scenario, self.target),
            ),
            ("measured window", format!("{:.1} s", self.measured_secs)),
        ];
        if self.publishes() {
            rows.extend([
                (
                    "published",
                    format!("{} ({:.0}/s)", self.published, self.published_per_sec),
                ),
                (
                    "delivered",
                    format!(
                        "{} of {} expected ({:.0}/s)",
                        self.delivered, self.expected, self.delivered_per_sec
                    ),
                ),
                ("lost", self.lost.to_string()),
                (
                    "duplicates / out of order / gaps",
                    format!(
                        "{} / {} / {}",
                        self.duplicates, self.out_of_order, self.gaps
                    ),
                ),
                ("latency µs", percentiles(&self.latency_us)),
            ]);
            if let Some(lag) = &self.send_lag_us {
                rows.push(("send lag µs", percentiles(lag)));
                rows.push(("unsent (schedule missed)", self.unsent.to_string()));
            }
            if self.target == TargetKind::Pubsub {
                rows.push(("publish acks", self.acks.to_string()));
            }
        }
        rows.extend([
            (
                "connections",
                format!(
                    "{} ok, {} failed, {:.0}/s",
                    self.connections, self.connect_failures, self.connect_per_sec
                ),
            ),
            ("connect µs", percentiles(&self.connect_us)),
        ]);
        if !self.tls_sessions.is_empty() {
            rows.push(("TLS", join(&self.tls_sessions)));
        }
        rows.extend([
            (
                "disconnects",
                with_breakdown(self.disconnects, &self.disconnect_reasons),
            ),
            ("errors", with_breakdown(self.errors, &self.error_codes)),
            (
                "harness CPU",
                optional(self.harness_cpu_pct.map(|p| format!("{p:.0}%"))),
            ),
            (
                "server CPU",
                optional(self.server_cpu_pct.map(|p| format!("{p:.0}%")))
                    + &self.per_node(|n| n.cpu_pct.map(|p| format!("{p:.0}%"))),
            ),
            (
                "server RSS",
                optional(self.server_rss_kib.map(|k| format!("{k} KiB")))
                    + &self.per_node(|n| n.rss_kib.map(|k| format!("{k} KiB"))),
            ),
        ]);
        if self.nodes.len() > 1 {
            rows.push((
                "subscribers / publishers",
                self.nodes
                    .iter()
                    .map(|n| format!("{} / {}", n.subscribers, n.publishers))
                    .collect::<Vec<_>>()
                    .join(", ")
                    + " (per node)",
            ));
        }
        if let Some(pct) = self.redis_cpu_pct {
            rows.push(("redis CPU", format!("{pct:.0}%")));
        }
        let round_trips: Option<u64> = self
            .nodes
            .iter()
            .filter_map(|n| n.backplane_round_trips)
            .reduce(|a, b| a + b);
        if let Some(total) = round_trips {
            let per = self.published as f64 / total.max(1) as f64;
            rows.push((
                "backplane round trips",
                format!("{total} ({per:.1} messages each)")
                    + &self.per_node(|n| n.backplane_round_trips.map(|r| r.to_string())),
            ));
        }
        if let Some(handshakes) = &self.handshakes {
            let cpu = |us: Option<f64>| optional(us.map(|us| format!("{us:.0} µs")));
            rows.extend([
                (
                    "handshakes",
                    format!(
                        "{} ({:.0}/s; {})",
                        handshakes.completed,
                        handshakes.completed_per_sec,
                        handshakes.kind()
                    ),
                ),
                (
                    "CPU per handshake",
                    format!(
                        "server {}, harness {}",
                        cpu(handshakes.server_cpu_us_per_handshake),
                        cpu(handshakes.harness_cpu_us_per_handshake)
                    ),
                ),
            ]);
            if handshakes.resume {
                rows.push((
                    "resumed",
                    format!("{} of {}", handshakes.resumed, handshakes.completed),
                ));
            }
        }
        if let Some(per) = self.server_kib_per_connection {
            rows.push(("server KiB per connection", format!("{per:.1}")));
        }
        if let Some(slow) = &self.slow {
            rows.push((
                "slow subscribers",
                format!(
                    "{} of {} cut ({} got SLOW_CONSUMER, {} close 1008), {} still open, {} events read",
                    slow.cut, slow.slow_subscribers, slow.slow_consumer_errors, slow.close_1008, slow.still_open, slow.events_read
                ),
            ));
            if slow.cut == 0 && slow.slow_subscribers > 0 {
                rows.push((
                    "",
                    "none cut: their queues and socket buffers never filled \
                     (raise --rate, --size or --duration; see loadtest/README.md)"
                        .to_string(),
                ));
            }
        }
        if let Some(resume) = &self.resume {
            rows.extend([
                (
                    "reconnects",
                    format!(
                        "{} ({} abrupt, {} clean) of {} subscribers",
                        resume.reconnects,
                        resume.abrupt_drops,
                        resume.reconnects - resume.abrupt_drops,
                        resume.subscribers
                    ),
                ),
                (
                    "resumes recovered / not",
                    format!(
                        "{} / {} ({} seqs missed)",
                        resume.recovered, resume.not_recovered, resume.missed
                    ),
                ),
                (
                    "events replayed / live",
                    format!("{} / {}", resume.replayed, resume.live),
                ),
                (
                    "subscribers complete",
                    format!(
                        "{} of {} saw every seq once ({} ended short)",
                        resume.subscribers_complete, resume.subscribers, resume.subscribers_short
                    ),
                ),
                ("drop to resume ack µs", percentiles(&resume.resume_ack_us)),
                (
                    "drop to first event µs",
                    percentiles(&resume.first_event_us),
                ),
            ]);
            if resume.not_recovered > 0 {
                rows.push((
                    "",
                    "the broker's ring lost what a subscriber missed while away: spawn it \
                     with --env RING_BUFFER_SIZE=N (see loadtest/README.md)"
                        .to_string(),
                ));
            }
        }
        for sample in &self.connect_failure_samples {
            rows.push(("connect failure", sample.clone()));
        }
        let width = rows
            .iter()
            .map(|(name, _)| name.chars().count())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for (name, value) in rows {
            let _ = writeln!(out, "{name:<width$}  {value}");
        }
        out
    }
}

fn percentiles(p: &Percentiles) -> String {
    if p.count == 0 {
        return "-".to_string();
    }
    format!(
        "p50 {:.0}  p90 {:.0}  p99 {:.0}  p99.9 {:.0}  max {:.0}  (n={})",
        p.p50, p.p90, p.p99, p.p999, p.max, p.count
    )
}

fn with_breakdown(total: u64, parts: &BTreeMap<String, u64>) -> String {
    if parts.is_empty() {
        return total.to_string();
    }
    format!("{total} ({})", join(parts))
}

/// `key: count, key: count`.
fn join(parts: &BTreeMap<String, u64>) -> String {
    let detail: Vec<String> = parts.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    detail.join(", ")
}

fn optional(value: Option<String>) -> String {
    value.unwrap_or_else(|| "-".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resume::{ResumeTally, StreamEnd};
    use crate::tally::Tally;

    /// A report of `scenario` against pubsub that passes: 100 published,
    /// 300 expected and delivered; `conns`: 3 connections.
    fn passing(scenario: &'static str) -> Report {
        let tally = Tally {
            delivered_measured: 300,
            connected: 3,
            ..Tally::default()
        };
        let outcome = Outcome {
            tally,
            published: 100,
            expected: 300,
            measured_secs: 1.0,
            connect_secs: 0.1,
            harness_cpu_pct: None,
            server_cpu_pct: None,
            server_rss_kib: None,
            server_rss_before_kib: None,
            nodes: Vec::new(),
            redis_cpu_pct: None,
            slow: None,
        };
        Report::new(scenario, TargetKind::Pubsub, outcome, true)
    }

    #[test]
    fn a_clean_run_passes() {
        for scenario in ["fanout", "slow", "conns"] {
            assert_eq!(passing(scenario).failures(), Vec::<String>::new());
        }
    }

    #[test]
    fn a_run_that_publishes_nothing_fails() {
        let mut report = passing("fanout");
        (report.published, report.expected, report.delivered) = (0, 0, 0);
        assert_eq!(
            report.failures(),
            ["nothing was published in the measured window"]
        );
    }

    #[test]
    fn a_run_that_receives_less_than_expected_fails() {
        let mut report = passing("slow");
        (report.delivered, report.lost) = (299, 1);
        assert_eq!(
            report.failures(),
            ["299 of 300 expected deliveries arrived (1 lost)"]
        );
        let mut report = passing("fanout");
        (report.expected, report.delivered) = (0, 0);
        assert_eq!(
            report.failures(),
            ["no delivery was expected: no subscriber was connected"]
        );
    }

    #[test]
    fn disorder_errors_disconnects_and_unsent_messages_fail() {
        let mut report = passing("fanout");
        report.duplicates = 1;
        report.unsent = 2;
        report.errors = 1;
        report.error_codes.insert("TOPIC_NOT_FOUND".into(), 1);
        report.disconnects = 1;
        report.disconnect_reasons.insert("close 1008".into(), 1);
        assert_eq!(
            report.failures(),
            [
                "1 duplicates, 0 out of order, 0 gaps",
                "2 scheduled messages were never sent",
                "1 error replies (TOPIC_NOT_FOUND: 1)",
                "1 connections were lost during the run (close 1008: 1)",
            ]
        );
    }

    #[test]
    fn conns_fails_when_a_connection_is_not_set_up_or_not_held() {
        let mut report = passing("conns");
        // Publishing figures do not apply to conns.
        (report.published, report.expected, report.delivered) = (0, 0, 0);
        assert!(report.failures().is_empty());
        report.connect_failures = 2;
        assert_eq!(report.failures(), ["2 of 5 connections failed to set up"]);
        report.connections = 0;
        assert_eq!(
            report.failures(),
            [
                "no connection was set up",
                "2 of 2 connections failed to set up"
            ]
        );
    }

    /// A `resume` report: 3 subscribers of one topic whose last seq is
    /// 100, each ending there; 4 reconnects, of which `not_recovered` did
    /// not recover and missed 5 seqs each.
    fn resumed(not_recovered: u64, require_recovery: bool) -> Report {
        let mut report = passing("resume");
        let end = StreamEnd {
            topic: 0,
            last_seen: 100,
            clean: not_recovered == 0,
        };
        let tally = ResumeTally {
            reconnects: 4,
            recovered: 4 - not_recovered,
            not_recovered,
            missed: 5 * not_recovered,
            ends: vec![end; 3],
            ..ResumeTally::default()
        };
        report.resume = Some(ResumeOutcome::new(&tally, 3, vec![100], require_recovery));
        report
    }

    #[test]
    fn resume_excuses_only_what_the_broker_said_it_could_not_recover() {
        assert_eq!(resumed(0, true).failures(), Vec::<String>::new());
        let mut report = resumed(1, false);
        (report.delivered, report.lost) = (295, 5);
        assert_eq!(report.failures(), Vec::<String>::new());
        (report.delivered, report.lost) = (294, 6);
        assert_eq!(
            report.failures(),
            [
                "294 of 300 expected deliveries arrived (6 lost, of which 5 missed by \
              resumes that did not recover)"
            ]
        );
        let mut report = resumed(1, true);
        (report.delivered, report.lost) = (295, 5);
        assert_eq!(
            report.failures(),
            [
                "1 of 4 resumes did not recover (5 seqs missed): the broker's ring \
              (RING_BUFFER_SIZE) is too small for this rate"
            ]
        );
        assert!(
            report.table().contains("RING_BUFFER_SIZE=N"),
            "{}",
            report.table()
        );
        // A subscriber that saw a seq twice fails the run, whatever the
        // totals say.
        let mut report = resumed(0, true);
        report.duplicates = 1;
        if let Some(resume) = report.resume.as_mut() {
            resume.subscribers_complete = 2;
        }
        assert_eq!(
            report.failures(),
            [
                "1 duplicates, 0 out of order, 0 gaps",
                "1 of 3 subscribers did not see every seq of their topic exactly once"
            ]
        );
    }

    /// Every key of the JSON report, nested ones included, is in the
    /// README's table.
    #[test]
    fn the_readme_lists_every_json_key() {
        let readme = include_str!("../README.md");
        let mut report = resumed(0, true);
        report.slow = Some(SlowOutcome::default());
        report.nodes = vec![NodeOutcome::default()];
        report.handshakes = Some(handshakes(true, 10, 0));
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        let mut keys: Vec<&String> = json.as_object().unwrap().keys().collect();
        keys.extend(json["slow"].as_object().unwrap().keys());
        keys.extend(json["nodes"][0].as_object().unwrap().keys());
        keys.extend(json["resume"].as_object().unwrap().keys());
        keys.extend(json["handshakes"].as_object().unwrap().keys());
        keys.extend(json["resume"]["first_event_us"].as_object().unwrap().keys());
        keys.extend(json["latency_us"].as_object().unwrap().keys());
        for key in keys {
            assert!(
                readme.contains(&format!("`{key}`")),
                "loadtest/README.md does not list `{key}`"
            );
        }
    }

    #[test]
    fn the_table_sums_a_clusters_nodes_and_shows_each() {
        let mut report = passing("fanout");
        report.server_cpu_pct = Some(150.0);
        report.redis_cpu_pct = Some(30.0);
        report.nodes = (0..3)
            .map(|i| NodeOutcome {
                addr: format!("127.0.0.1:{}", 9000 + i),
                subscribers: 10,
                publishers: u64::from(i == 0),
                cpu_pct: Some(50.0),
                backplane_round_trips: Some(if i == 0 { 20 } else { 0 }),
                ..NodeOutcome::default()
            })
            .collect();
        let table = report.table();
        for expected in [
            "150% (50%, 50%, 50%)",
            "10 / 1, 10 / 0, 10 / 0 (per node)",
            "redis CPU",
            "20 (5.0 messages each) (20, 0, 0)",
        ] {
            assert!(table.contains(expected), "{expected}: {table}");
        }
        // One server: no per-node detail.
        report.nodes.truncate(1);
        assert!(!report.table().contains("per node"), "{}", report.table());
    }

    /// `handshakes` figures: `completed` connections over one second with
    /// `--resume` or not, `resumed` of them; the server used 50% of a core.
    fn handshakes(resume: bool, completed: u64, resumed: u64) -> HandshakeOutcome {
        let outcome = Outcome {
            tally: Tally {
                connected: completed,
                resumed_handshakes: resumed,
                ..Tally::default()
            },
            published: 0,
            expected: 0,
            measured_secs: 1.0,
            connect_secs: 1.0,
            harness_cpu_pct: None,
            server_cpu_pct: Some(50.0),
            server_rss_kib: None,
            server_rss_before_kib: None,
            nodes: Vec::new(),
            redis_cpu_pct: None,
            slow: None,
        };
        HandshakeOutcome::new(&outcome, true, true, resume)
    }

    #[test]
    fn handshakes_fail_on_a_failed_connection_or_no_resumed_session() {
        let mut report = passing("handshakes");
        (report.published, report.expected, report.delivered) = (0, 0, 0);
        report.handshakes = Some(handshakes(false, 3, 0));
        assert_eq!(report.failures(), Vec::<String>::new());
        let figures = report.handshakes.as_ref().unwrap();
        assert_eq!(figures.completed_per_sec, 3.0);
        // Half a core over a second for three handshakes.
        assert_eq!(figures.server_cpu_us_per_handshake, Some(500_000.0 / 3.0));
        assert_eq!(figures.harness_cpu_us_per_handshake, None);
        let table = report.table();
        assert!(
            table.contains("3 (3/s; TLS handshake + upgrade)"),
            "{table}"
        );
        assert!(table.contains("server 166667 µs, harness -"), "{table}");
        assert!(!table.contains("resumed"), "{table}");
        assert!(!table.contains("published"), "{table}");
        report.handshakes = Some(handshakes(true, 3, 0));
        assert_eq!(
            report.failures(),
            [
                "--resume, but no handshake resumed a session: the server gave no usable ticket \
              or session ID"
            ]
        );
        report.handshakes = Some(handshakes(true, 3, 2));
        assert!(report.failures().is_empty());
        assert!(
            report.table().contains("resumed            2 of 3"),
            "{}",
            report.table()
        );
        report.connect_failures = 1;
        assert_eq!(report.failures(), ["1 of 4 connections failed to set up"]);
    }

    #[test]
    fn the_table_names_the_target_as_the_flag_does() {
        let table = passing("fanout").table();
        assert!(table.contains("fanout against pubsub"), "{table}");
    }

    #[test]
    fn the_table_says_when_no_slow_subscriber_was_cut() {
        let mut report = passing("slow");
        report.slow = Some(SlowOutcome {
            slow_subscribers: 2,
            still_open: 2,
            ..SlowOutcome::default()
        });
        assert!(report.table().contains("none cut"), "{}", report.table());
        report.slow = Some(SlowOutcome {
            slow_subscribers: 2,
            cut: 2,
            ..SlowOutcome::default()
        });
        assert!(!report.table().contains("none cut"));
    }
}
