//! Counters for `/metrics` and `/stats`, kept per worker and summed when
//! scraped, so that counting costs the publish and flush paths an
//! uncontended relaxed add on a cache line no other thread writes. Also the
//! Prometheus text exposition (format 0.0.4) of the sum.
//!
//! Nothing here knows about sockets; the worker and its connections call
//! the `record_*` methods, and the REST handler renders a snapshot.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Why a connection ended, as counted and logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    Normal,
    SlowConsumer,
    DeadPeer,
    ProtocolError,
    Shutdown,
    HandshakeTimeout,
    ConnectionError,
    /// Its token expired and no newer one came.
    TokenExpired,
    /// Its user was disconnected (`POST /disconnect`).
    Disconnected,
    /// TLS refused it: not TLS at all, or a handshake that failed (no
    /// client certificate, one not trusted, no common version or cipher).
    TlsError,
}

impl DisconnectReason {
    pub const ALL: [DisconnectReason; 10] = [
        DisconnectReason::Normal,
        DisconnectReason::SlowConsumer,
        DisconnectReason::DeadPeer,
        DisconnectReason::ProtocolError,
        DisconnectReason::Shutdown,
        DisconnectReason::HandshakeTimeout,
        DisconnectReason::ConnectionError,
        DisconnectReason::TokenExpired,
        DisconnectReason::Disconnected,
        DisconnectReason::TlsError,
    ];

    /// The label value in metrics and the `reason` field in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectReason::Normal => "normal",
            DisconnectReason::SlowConsumer => "slow_consumer",
            DisconnectReason::DeadPeer => "dead_peer",
            DisconnectReason::ProtocolError => "protocol_error",
            DisconnectReason::Shutdown => "shutdown",
            DisconnectReason::HandshakeTimeout => "handshake_timeout",
            DisconnectReason::ConnectionError => "connection_error",
            DisconnectReason::TokenExpired => "token_expired",
            DisconnectReason::Disconnected => "disconnected",
            DisconnectReason::TlsError => "tls_error",
        }
    }
}

/// Why a request was refused by authentication or authorization (the
/// `reason` of `pubsub_auth_failures_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No API key or token where one is needed.
    Missing,
    /// A wrong API key, or a token that does not verify.
    Invalid,
    /// A token past its `exp` (and the leeway).
    Expired,
    /// A token without the right asked for.
    Forbidden,
    /// A WebSocket upgrade from an origin not in `ALLOWED_ORIGINS`.
    Origin,
    /// A publish over `PUBLISH_RATE`.
    RateLimited,
}

impl AuthFailure {
    pub const ALL: [AuthFailure; 6] = [
        AuthFailure::Missing,
        AuthFailure::Invalid,
        AuthFailure::Expired,
        AuthFailure::Forbidden,
        AuthFailure::Origin,
        AuthFailure::RateLimited,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Invalid => "invalid",
            AuthFailure::Expired => "expired",
            AuthFailure::Forbidden => "forbidden",
            AuthFailure::Origin => "origin",
            AuthFailure::RateLimited => "rate_limited",
        }
    }
}

/// The kind of an open connection: still HTTP, or upgraded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionKind {
    Http,
    WebSocket,
}

/// Upper bounds of the sampled subscriber queue depth histogram.
pub const QUEUE_DEPTH_BUCKETS: [u64; 10] = [0, 1, 2, 5, 10, 25, 50, 100, 1000, 10_000];

/// One worker's counters. Only the owning worker writes them.
#[derive(Default)]
pub struct WorkerMetrics {
    open_http: AtomicI64,
    open_websocket: AtomicI64,
    accepted: AtomicU64,
    rejected_max_connections: AtomicU64,
    published: AtomicU64,
    delivered: AtomicU64,
    bytes_received: AtomicU64,
    bytes_sent: AtomicU64,
    disconnects: [AtomicU64; DisconnectReason::ALL.len()],
    http_responses: [AtomicU64; 5],
    auth_failures: [AtomicU64; AuthFailure::ALL.len()],
    queue_depth_buckets: [AtomicU64; QUEUE_DEPTH_BUCKETS.len()],
    queue_depth_count: AtomicU64,
    queue_depth_sum: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl WorkerMetrics {
    pub fn record_accepted(&self) {
        add(&self.accepted, 1);
        self.open_http.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_rejected(&self) {
        add(&self.rejected_max_connections, 1);
    }

    pub fn record_upgrade(&self) {
        self.open_http.fetch_sub(1, Ordering::Relaxed);
        self.open_websocket.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_closed(&self, kind: ConnectionKind, reason: DisconnectReason) {
        match kind {
            ConnectionKind::Http => self.open_http.fetch_sub(1, Ordering::Relaxed),
            ConnectionKind::WebSocket => self.open_websocket.fetch_sub(1, Ordering::Relaxed),
        };
        let index = DisconnectReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        add(&self.disconnects[index], 1);
    }

    pub fn record_published(&self) {
        add(&self.published, 1);
    }

    pub fn record_delivered(&self, frames: u64) {
        add(&self.delivered, frames);
    }

    pub fn record_received(&self, bytes: usize) {
        add(&self.bytes_received, bytes as u64);
    }

    pub fn record_sent(&self, bytes: usize) {
        add(&self.bytes_sent, bytes as u64);
    }

    pub fn record_http_response(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        add(&self.http_responses[class], 1);
    }

    pub fn record_auth_failure(&self, reason: AuthFailure) {
        add(&self.auth_failures[reason as usize], 1);
    }

    /// One sample of a subscriber queue's depth (taken as a connection is
    /// flushed, so busy connections are sampled more often).
    pub fn record_queue_depth(&self, depth: usize) {
        let depth = depth as u64;
        for (bucket, bound) in self.queue_depth_buckets.iter().zip(QUEUE_DEPTH_BUCKETS) {
            if depth <= bound {
                add(bucket, 1);
                break;
            }
        }
        add(&self.queue_depth_count, 1);
        add(&self.queue_depth_sum, depth);
    }
}

/// The sum over every worker, at one moment.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MetricsSnapshot {
    pub open_http: i64,
    pub open_websocket: i64,
    pub accepted: u64,
    pub rejected_max_connections: u64,
    pub published: u64,
    pub delivered: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub disconnects: [u64; DisconnectReason::ALL.len()],
    pub http_responses: [u64; 5],
    /// Per `AuthFailure::ALL`.
    pub auth_failures: [u64; AuthFailure::ALL.len()],
    /// Per bucket, not cumulative.
    pub queue_depth_buckets: [u64; QUEUE_DEPTH_BUCKETS.len()],
    pub queue_depth_count: u64,
    pub queue_depth_sum: u64,
}

impl MetricsSnapshot {
    pub fn sum<'a>(workers: impl IntoIterator<Item = &'a WorkerMetrics>) -> MetricsSnapshot {
        let mut s = MetricsSnapshot::default();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for w in workers {
            s.open_http += w.open_http.load(Ordering::Relaxed);
            s.open_websocket += w.open_websocket.load(Ordering::Relaxed);
            s.accepted += get(&w.accepted);
            s.rejected_max_connections += get(&w.rejected_max_connections);
            s.published += get(&w.published);
            s.delivered += get(&w.delivered);
            s.bytes_received += get(&w.bytes_received);
            s.bytes_sent += get(&w.bytes_sent);
            for (total, c) in s.disconnects.iter_mut().zip(&w.disconnects) {
                *total += get(c);
            }
            for (total, c) in s.http_responses.iter_mut().zip(&w.http_responses) {
                *total += get(c);
            }
            for (total, c) in s.auth_failures.iter_mut().zip(&w.auth_failures) {
                *total += get(c);
            }
            for (total, c) in s.queue_depth_buckets.iter_mut().zip(&w.queue_depth_buckets) {
                *total += get(c);
            }
            s.queue_depth_count += get(&w.queue_depth_count);
            s.queue_depth_sum += get(&w.queue_depth_sum);
        }
        s
    }

    pub fn slow_consumer_disconnects(&self) -> u64 {
        self.disconnects[1]
    }
}

/// Figures that come from the broker rather than the workers.
pub struct BrokerGauges {
    pub topics: usize,
    pub subscriptions: usize,
    pub uptime_seconds: f64,
    /// Cluster mode only.
    pub backplane: Option<BackplaneFigures>,
}

/// Cluster mode: the backplane's state and counters.
pub struct BackplaneFigures {
    pub up: bool,
    /// Request round trips: (upper bound in seconds, cumulative count).
    pub rtt_buckets: Vec<(f64, u64)>,
    pub rtt_count: u64,
    pub rtt_sum_seconds: f64,
    pub gaps_repaired: u64,
    pub topic_resets: u64,
}

/// Renders Prometheus text exposition format 0.0.4. No label carries a
/// topic name: those are unbounded, and per-topic figures are in `/stats`.
pub fn render_prometheus(s: &MetricsSnapshot, gauges: &BrokerGauges) -> String {
    let mut out = String::with_capacity(4096);
    let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, String)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let one = |v: String| vec![(String::new(), v)];
    family(
        "pubsub_connections",
        "gauge",
        "Open connections by kind.",
        &[
            ("{kind=\"http\"}".into(), s.open_http.max(0).to_string()),
            (
                "{kind=\"websocket\"}".into(),
                s.open_websocket.max(0).to_string(),
            ),
        ],
    );
    family(
        "pubsub_connections_accepted_total",
        "counter",
        "Connections accepted.",
        &one(s.accepted.to_string()),
    );
    family(
        "pubsub_connections_rejected_total",
        "counter",
        "Connections refused at accept, by reason.",
        &[(
            "{reason=\"max_connections\"}".into(),
            s.rejected_max_connections.to_string(),
        )],
    );
    family(
        "pubsub_topics",
        "gauge",
        "Topics that exist.",
        &one(gauges.topics.to_string()),
    );
    family(
        "pubsub_subscriptions",
        "gauge",
        "Subscriptions, summed over topics.",
        &one(gauges.subscriptions.to_string()),
    );
    family(
        "pubsub_messages_published_total",
        "counter",
        "Messages published (acked).",
        &one(s.published.to_string()),
    );
    family(
        "pubsub_messages_delivered_total",
        "counter",
        "Frames written to subscribers from their queues and from replay: events, and topic_deleted notices.",
        &one(s.delivered.to_string()),
    );
    family(
        "pubsub_bytes_received_total",
        "counter",
        "Bytes read from clients.",
        &one(s.bytes_received.to_string()),
    );
    family(
        "pubsub_bytes_sent_total",
        "counter",
        "Bytes written to clients.",
        &one(s.bytes_sent.to_string()),
    );
    family(
        "pubsub_slow_consumer_disconnects_total",
        "counter",
        "Connections cut because their queue overflowed.",
        &one(s.slow_consumer_disconnects().to_string()),
    );
    let by_reason: Vec<(String, String)> = DisconnectReason::ALL
        .iter()
        .zip(s.disconnects)
        .map(|(reason, n)| (format!("{{reason=\"{}\"}}", reason.as_str()), n.to_string()))
        .collect();
    family(
        "pubsub_disconnects_total",
        "counter",
        "Connections closed, by reason.",
        &by_reason,
    );
    let by_class: Vec<(String, String)> = s
        .http_responses
        .iter()
        .enumerate()
        .map(|(i, n)| (format!("{{code=\"{}xx\"}}", i + 1), n.to_string()))
        .collect();
    family(
        "pubsub_http_requests_total",
        "counter",
        "HTTP responses, by status class.",
        &by_class,
    );
    let by_reason: Vec<(String, String)> = AuthFailure::ALL
        .iter()
        .zip(s.auth_failures)
        .map(|(reason, n)| (format!("{{reason=\"{}\"}}", reason.as_str()), n.to_string()))
        .collect();
    family(
        "pubsub_auth_failures_total",
        "counter",
        "Requests refused by authentication or authorization, by reason.",
        &by_reason,
    );
    let mut cumulative = 0;
    let mut histogram: Vec<(String, String)> = QUEUE_DEPTH_BUCKETS
        .iter()
        .zip(s.queue_depth_buckets)
        .map(|(bound, n)| {
            cumulative += n;
            (format!("_bucket{{le=\"{bound}\"}}"), cumulative.to_string())
        })
        .collect();
    histogram.push((
        "_bucket{le=\"+Inf\"}".into(),
        s.queue_depth_count.to_string(),
    ));
    histogram.push(("_sum".into(), s.queue_depth_sum.to_string()));
    histogram.push(("_count".into(), s.queue_depth_count.to_string()));
    family(
        "pubsub_subscriber_queue_depth",
        "histogram",
        "Subscriber queue depth, sampled when a connection is flushed.",
        &histogram,
    );
    if let Some(b) = &gauges.backplane {
        family(
            "pubsub_backplane_up",
            "gauge",
            "Cluster mode: 1 while Redis answers, else 0.",
            &one(u8::from(b.up).to_string()),
        );
        let mut rtt: Vec<(String, String)> = b
            .rtt_buckets
            .iter()
            .map(|(le, n)| (format!("_bucket{{le=\"{le}\"}}"), n.to_string()))
            .collect();
        rtt.push(("_bucket{le=\"+Inf\"}".into(), b.rtt_count.to_string()));
        rtt.push(("_sum".into(), format!("{:.6}", b.rtt_sum_seconds)));
        rtt.push(("_count".into(), b.rtt_count.to_string()));
        family(
            "pubsub_backplane_rtt_seconds",
            "histogram",
            "Cluster mode: round trip of each pipeline of changes sent to Redis.",
            &rtt,
        );
        family(
            "pubsub_backplane_gaps_repaired_total",
            "counter",
            "Cluster mode: gaps in the event stream filled from a topic's ring.",
            &one(b.gaps_repaired.to_string()),
        );
        family(
            "pubsub_backplane_topic_resets_total",
            "counter",
            "Cluster mode: topic_reset notices (messages the ring no longer held, or Redis lost its data).",
            &one(b.topic_resets.to_string()),
        );
    }
    family(
        "pubsub_uptime_seconds",
        "gauge",
        "Seconds since the broker started.",
        &one(format!("{:.3}", gauges.uptime_seconds)),
    );
    family(
        "pubsub_build_info",
        "gauge",
        "Always 1; the labels name the build.",
        &[(
            format!("{{version=\"{}\"}}", env!("CARGO_PKG_VERSION")),
            "1".into(),
        )],
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_are_summed() {
        let (a, b) = (WorkerMetrics::default(), WorkerMetrics::default());
        a.record_accepted();
        a.record_accepted();
        a.record_upgrade();
        b.record_accepted();
        b.record_closed(ConnectionKind::Http, DisconnectReason::HandshakeTimeout);
        a.record_published();
        b.record_delivered(5);
        a.record_http_response(401);
        a.record_auth_failure(AuthFailure::Invalid);
        b.record_auth_failure(AuthFailure::Invalid);
        b.record_auth_failure(AuthFailure::RateLimited);
        b.record_http_response(201);
        a.record_queue_depth(0);
        b.record_queue_depth(7);
        b.record_queue_depth(1_000_000);
        let s = MetricsSnapshot::sum([&a, &b]);
        assert_eq!((s.accepted, s.open_http, s.open_websocket), (3, 1, 1));
        assert_eq!((s.published, s.delivered), (1, 5));
        assert_eq!(s.auth_failures, [0, 2, 0, 0, 0, 1]);
        assert_eq!(s.http_responses, [0, 1, 0, 1, 0]);
        assert_eq!(s.disconnects[5], 1);
        assert_eq!(s.queue_depth_count, 3);
        assert_eq!(s.queue_depth_sum, 1_000_007);
        assert_eq!(s.queue_depth_buckets[0], 1, "0 is in the first bucket");
        assert_eq!(s.queue_depth_buckets[4], 1, "7 is in le=10");
        assert_eq!(
            s.queue_depth_buckets.iter().sum::<u64>(),
            2,
            "past the last bound only +Inf counts it"
        );
    }

    #[test]
    fn renders_every_family_once_with_help_and_type() {
        let gauges = BrokerGauges {
            topics: 2,
            subscriptions: 3,
            uptime_seconds: 1.5,
            backplane: Some(BackplaneFigures {
                up: true,
                rtt_buckets: vec![(0.001, 4), (0.01, 5)],
                rtt_count: 6,
                rtt_sum_seconds: 0.5,
                gaps_repaired: 2,
                topic_resets: 1,
            }),
        };
        let text = render_prometheus(&MetricsSnapshot::default(), &gauges);
        assert!(text.contains("pubsub_backplane_rtt_seconds_bucket{le=\"0.01\"} 5\n"));
        assert!(text.contains("pubsub_backplane_rtt_seconds_bucket{le=\"+Inf\"} 6\n"));
        assert!(text.contains("pubsub_backplane_gaps_repaired_total 2\n"));
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
            "pubsub_backplane_up",
            "pubsub_backplane_rtt_seconds",
            "pubsub_backplane_gaps_repaired_total",
            "pubsub_backplane_topic_resets_total",
            "pubsub_uptime_seconds",
            "pubsub_build_info",
        ] {
            assert_eq!(
                text.matches(&format!("# TYPE {name} ")).count(),
                1,
                "{name}"
            );
        }
        assert!(text.contains("pubsub_topics 2\n"));
        assert!(text.contains("pubsub_subscriber_queue_depth_bucket{le=\"+Inf\"} 0\n"));
        assert!(text.ends_with('\n'));
    }
}
