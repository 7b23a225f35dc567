//! The end-of-run report: built from a run's [`Outcome`], printed as a
//! readable table, and serialised as one JSON object (`--json`).

use crate::endpoint::TargetKind;
use crate::run::Outcome;
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
    fn of(histogram: &Histogram<u64>) -> Percentiles {
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
    pub disconnects: u64,
    pub disconnect_reasons: BTreeMap<String, u64>,
    pub errors: u64,
    pub error_codes: BTreeMap<String, u64>,
    pub harness_cpu_pct: Option<f64>,
    pub server_cpu_pct: Option<f64>,
    pub server_rss_kib: Option<u64>,
    pub server_rss_before_kib: Option<u64>,
    /// `conns`: the server's RSS growth per connection held.
    pub server_kib_per_connection: Option<f64>,
    pub slow: Option<SlowOutcome>,
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
            disconnects: tally.disconnect_count(),
            disconnect_reasons: tally.disconnects.clone(),
            errors: tally.error_count(),
            error_codes: tally.errors.clone(),
            harness_cpu_pct: outcome.harness_cpu_pct,
            server_cpu_pct: outcome.server_cpu_pct,
            server_rss_kib: outcome.server_rss_kib,
            server_rss_before_kib: outcome.server_rss_before_kib,
            server_kib_per_connection,
            slow: outcome.slow,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("the report always serialises")
    }

    /// The summary as aligned `name  value` lines.
    pub fn table(&self) -> String {
        let mut rows: Vec<(&str, String)> = vec![
            (
                "scenario",
                format!("{} against {:?}", self.scenario, self.target),
            ),
            ("measured window", format!("{:.1} s", self.measured_secs)),
        ];
        if self.scenario != "conns" {
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
                optional(self.server_cpu_pct.map(|p| format!("{p:.0}%"))),
            ),
            (
                "server RSS",
                optional(self.server_rss_kib.map(|k| format!("{k} KiB"))),
            ),
        ]);
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
    let detail: Vec<String> = parts.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!("{total} ({})", detail.join(", "))
}

fn optional(value: Option<String>) -> String {
    value.unwrap_or_else(|| "-".to_string())
}
