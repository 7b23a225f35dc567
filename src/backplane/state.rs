//! What a cluster backend's two threads (the request thread and the event
//! thread) share with the workers and the REST side: whether the backend
//! is up and followed, the figures `/metrics` shows, the other nodes'
//! subscriber counts, and the few signals the threads give each other.
//!
//! It holds no connection and knows no backend's commands: a backend's
//! threads write it, and the backend's [`Backend`](super::Backend) methods
//! read it.

use crate::metrics::BackplaneFigures;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, PoisonError, RwLock};
use std::time::Duration;

/// Upper bounds of the round-trip histogram, in seconds.
const RTT_BUCKETS: [f64; 10] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0,
];

/// The threads whose first attempt to reach the backend a node waits for
/// before it listens (see `wait_first_attempts`): the request thread and
/// the event thread.
const THREADS: usize = 2;

pub struct ClusterState {
    pub node_id: String,
    up: AtomicBool,
    /// The event thread is subscribed and has caught up with the backend:
    /// this node knows every topic and delivers their events.
    following: AtomicBool,
    /// Gaps in a topic's stream filled from its ring.
    gaps_repaired: AtomicU64,
    /// `topic_reset`s announced.
    topic_resets: AtomicU64,
    /// Request pipelines' round trips: counts per `RTT_BUCKETS` bucket (and
    /// one over), and their sum in microseconds.
    rtt_counts: [AtomicU64; RTT_BUCKETS.len() + 1],
    rtt_sum_micros: AtomicU64,
    /// Every other live node's subscribers, per topic.
    others: RwLock<HashMap<String, u64>>,
    /// Times the event thread's subscription broke: the backend may have
    /// gone away, so the request thread checks its connection before it
    /// next sends on it.
    subscription_losses: AtomicU64,
    /// The threads that have not yet made their first attempt to reach
    /// the backend.
    first_attempts_left: Mutex<usize>,
    first_attempts_done: Condvar,
}

impl ClusterState {
    pub fn new(node_id: String) -> ClusterState {
        ClusterState {
            node_id,
            up: AtomicBool::new(false),
            following: AtomicBool::new(false),
            gaps_repaired: AtomicU64::new(0),
            topic_resets: AtomicU64::new(0),
            rtt_counts: Default::default(),
            rtt_sum_micros: AtomicU64::new(0),
            others: RwLock::new(HashMap::new()),
            subscription_losses: AtomicU64::new(0),
            first_attempts_left: Mutex::new(THREADS),
            first_attempts_done: Condvar::new(),
        }
    }

    /// One thread has made its first attempt to reach the backend, and it
    /// succeeded or failed (each thread says so once).
    pub fn first_attempt_made(&self) {
        let mut left = self
            .first_attempts_left
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *left = left.saturating_sub(1);
        if *left == 0 {
            self.first_attempts_done.notify_all();
        }
    }

    /// Waits, at most `limit`, until both threads have made their first
    /// attempt: so that a node does not listen while it would still answer
    /// `UNAVAILABLE` (or not know a topic) with the backend up. False on
    /// time-out.
    pub fn wait_first_attempts(&self, limit: Duration) -> bool {
        let left = self
            .first_attempts_left
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (left, _) = self
            .first_attempts_done
            .wait_timeout_while(left, limit, |left| *left > 0)
            .unwrap_or_else(PoisonError::into_inner);
        *left == 0
    }

    /// The event thread lost its subscription (see `subscription_losses`).
    pub fn subscription_lost(&self) {
        self.subscription_losses.fetch_add(1, Ordering::AcqRel);
    }

    pub fn subscription_losses(&self) -> u64 {
        self.subscription_losses.load(Ordering::Acquire)
    }

    /// Requests can be carried out.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Requests can be carried out and events are followed: what
    /// `/readyz` reports.
    pub fn is_ready(&self) -> bool {
        self.is_up() && self.following.load(Ordering::Acquire)
    }

    /// Records whether the event thread follows the backend's events.
    pub fn set_following(&self, following: bool) {
        self.following.store(following, Ordering::Release);
    }

    /// Records whether requests can be carried out; logs each change.
    pub fn set_up(&self, up: bool, why: &str) {
        if self.up.swap(up, Ordering::AcqRel) != up {
            if up {
                log::info!(node = self.node_id.as_str(); "backplane up");
            } else {
                log::warn!(node = self.node_id.as_str(), why; "backplane down");
            }
        }
    }

    pub fn count_gap_repaired(&self) {
        self.gaps_repaired.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_topic_reset(&self) {
        self.topic_resets.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_rtt(&self, rtt: Duration) {
        let seconds = rtt.as_secs_f64();
        let bucket = RTT_BUCKETS
            .iter()
            .position(|&le| seconds <= le)
            .unwrap_or(RTT_BUCKETS.len());
        self.rtt_counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.rtt_sum_micros
            .fetch_add(rtt.as_micros() as u64, Ordering::Relaxed);
    }

    /// The figures `/metrics` shows: up, round trips (cumulative counts
    /// per bucket, count, sum in seconds), gaps repaired, resets.
    pub fn figures(&self) -> BackplaneFigures {
        let mut running = 0;
        let mut rtt_buckets = Vec::with_capacity(RTT_BUCKETS.len());
        for (i, le) in RTT_BUCKETS.iter().enumerate() {
            running += self.rtt_counts[i].load(Ordering::Relaxed);
            rtt_buckets.push((*le, running));
        }
        BackplaneFigures {
            up: self.is_up(),
            rtt_buckets,
            rtt_count: running + self.rtt_counts[RTT_BUCKETS.len()].load(Ordering::Relaxed),
            rtt_sum_seconds: self.rtt_sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            gaps_repaired: self.gaps_repaired.load(Ordering::Relaxed),
            topic_resets: self.topic_resets.load(Ordering::Relaxed),
        }
    }

    /// Subscribers of `topic` on the other live nodes (as of the last
    /// heartbeat).
    pub fn others_subscribers(&self, topic: &str) -> u64 {
        self.others
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(topic)
            .copied()
            .unwrap_or(0)
    }

    /// Every other live node's subscribers, per topic, as the heartbeat
    /// just read them.
    pub fn set_others(&self, others: HashMap<String, u64>) {
        *self.others.write().unwrap_or_else(PoisonError::into_inner) = others;
    }
}
