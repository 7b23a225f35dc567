//! What the loop threads and the runner share: the run's [`Window`], the
//! per-publisher and per-thread counters, subscriber progress for the
//! closed-loop window, the per-topic live-subscriber counts, and the
//! wakers. It must not hold any one thread's state, and nothing here is
//! written per message: threads write once per loop turn.

use mio::{Poll, Token, Waker};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

pub(super) const WAKER: Token = Token(usize::MAX);

/// The run's phases, in ns since the epoch.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Publishing starts.
    pub start_ns: u64,
    /// Measurement starts.
    pub warmup_end_ns: u64,
    /// Publishing and measurement end.
    pub end_ns: u64,
}

impl Window {
    pub fn measures(&self, sent_ns: u64) -> bool {
        (self.warmup_end_ns..self.end_ns).contains(&sent_ns)
    }
}

/// Counters of one publisher, written by the thread that owns it.
#[repr(align(128))]
#[derive(Debug, Default)]
pub struct PublisherCounters {
    /// Messages generated, warm-up included.
    pub sent: AtomicU64,
    /// Messages stamped inside the measured window.
    pub published_measured: AtomicU64,
    /// Deliveries expected for those: the live subscribers of the topic at
    /// the time each message was generated, summed.
    pub expected_measured: AtomicU64,
    /// Set once the publisher has generated its last message (or lost its
    /// connection).
    pub finished: AtomicBool,
}

/// A thread's running totals, for the progress line and the end-of-run
/// check, written by that thread once per loop turn.
#[repr(align(128))]
#[derive(Debug, Default)]
pub struct ThreadCounters {
    /// Set-up results, written once before the first barrier.
    pub connected: AtomicU64,
    pub connect_failures: AtomicU64,
    pub delivered: AtomicU64,
    pub delivered_measured: AtomicU64,
    pub disconnects: AtomicU64,
    pub errors: AtomicU64,
    /// `resume`: deliveries that will never come, the `seq`s skipped by
    /// resumes that did not recover.
    pub missed: AtomicU64,
    /// A closed-loop publisher of this thread waits for deliveries that
    /// other threads receive: they wake this thread after recording them.
    pub(super) window_blocked: AtomicBool,
}

/// What the loop threads and the runner share.
pub struct Shared {
    pub epoch: Instant,
    pub stop: AtomicBool,
    /// Set by the runner after every connection is set up.
    pub window: OnceLock<Window>,
    pub publishers: Vec<PublisherCounters>,
    /// Live (connected, subscribed, counted) subscribers per topic.
    pub live_subscribers: Vec<AtomicU64>,
    /// Per subscriber and publisher (`subscriber * publishers + publisher`):
    /// the index of the first message of that publisher the subscriber
    /// still waits for (closed-loop window). `u64::MAX` for a subscriber
    /// that is not connected. Written once per loop turn by the thread that
    /// owns the subscriber.
    progress: Vec<AtomicU64>,
    pub threads: Vec<ThreadCounters>,
    pub(super) wakers: Vec<Waker>,
}

impl Shared {
    /// Creates the shared state and one `Poll` per loop thread.
    pub fn new(
        threads: usize,
        publishers: usize,
        topics: usize,
        subscribers: usize,
    ) -> io::Result<(Arc<Shared>, Vec<Poll>)> {
        let mut polls = Vec::with_capacity(threads);
        let mut wakers = Vec::with_capacity(threads);
        for _ in 0..threads {
            let poll = Poll::new()?;
            wakers.push(Waker::new(poll.registry(), WAKER)?);
            polls.push(poll);
        }
        let shared = Shared {
            epoch: Instant::now(),
            stop: AtomicBool::new(false),
            window: OnceLock::new(),
            publishers: (0..publishers)
                .map(|_| PublisherCounters::default())
                .collect(),
            live_subscribers: (0..topics).map(|_| AtomicU64::new(0)).collect(),
            progress: (0..subscribers * publishers)
                .map(|_| AtomicU64::new(u64::MAX))
                .collect(),
            threads: (0..threads).map(|_| ThreadCounters::default()).collect(),
            wakers,
        };
        Ok((Arc::new(shared), polls))
    }

    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    pub(super) fn progress(&self, subscriber: usize, publisher: usize) -> &AtomicU64 {
        &self.progress[subscriber * self.publishers.len() + publisher]
    }

    /// The first message of `publisher` that some live subscriber has not
    /// received yet (`u64::MAX` if there is no live subscriber).
    pub(super) fn oldest_undelivered(&self, publisher: usize) -> u64 {
        self.progress
            .iter()
            .skip(publisher)
            .step_by(self.publishers.len())
            .map(|slot| slot.load(Ordering::SeqCst))
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Asks every loop thread to finish its turn and return.
    pub fn stop_all(&self) {
        self.stop.store(true, Ordering::SeqCst);
        for waker in &self.wakers {
            // A failed wake only delays the stop by one poll timeout.
            let _ = waker.wake();
        }
    }
}
