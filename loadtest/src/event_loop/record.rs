//! What a loop thread reports: subscriber progress for the closed-loop
//! window and the wakes it owes, its running counters once per turn, and
//! at the end its tally (with what publishers left unsent) after closing
//! its connections. It must not be called per message: it writes to
//! [`super::Shared`], which other threads read.

use super::conn::{Conn, Role, Subscriber};
use super::publish::planned_messages;
use super::{LoopThread, Pacing, Shared};
use crate::tally::Tally;
use std::sync::atomic::Ordering;

impl LoopThread {
    /// Publishes the progress of the subscribers that received something
    /// this turn, and wakes threads whose publishers wait for it.
    pub(super) fn flush_progress(&mut self) {
        if self.touched.is_empty() {
            return;
        }
        let mut touched = std::mem::take(&mut self.touched);
        for &index in &touched {
            if let Some(Conn {
                role: Role::Subscriber(subscriber),
                open: true,
                ..
            }) = self.conns[index].as_mut()
            {
                subscriber.touched = false;
                subscriber.publish_progress(&self.shared, self.topics.len());
            }
        }
        touched.clear();
        self.touched = touched;
        self.wake_blocked_threads();
    }

    pub(super) fn wake_blocked_threads(&self) {
        for (thread, counters) in self.shared.threads.iter().enumerate() {
            if thread != self.index
                && counters.window_blocked.load(Ordering::SeqCst)
                && counters.window_blocked.swap(false, Ordering::SeqCst)
            {
                let _ = self.shared.wakers[thread].wake();
            }
        }
    }

    pub(super) fn publish_progress(&self) {
        let counters = &self.shared.threads[self.index];
        counters
            .delivered
            .store(self.tally.delivered, Ordering::Relaxed);
        counters
            .delivered_measured
            .store(self.tally.delivered_measured, Ordering::SeqCst);
        counters
            .disconnects
            .store(self.tally.disconnect_count(), Ordering::Relaxed);
        counters
            .errors
            .store(self.tally.error_count(), Ordering::Relaxed);
        counters
            .missed
            .store(self.tally.resume.missed, Ordering::SeqCst);
    }

    /// Counts what publishers left unsent, closes every connection with a
    /// close frame (best effort), and returns the tally.
    pub(super) fn finish(mut self) -> Tally {
        self.publish_progress();
        for conn in self.conns.iter_mut().flatten() {
            if let Role::Publisher(publisher) = &conn.role {
                if let Pacing::OpenLoop { rate } = self.pacing {
                    let planned =
                        planned_messages(&self.window, rate, self.publishers, publisher.id);
                    self.tally.unsent += planned.saturating_sub(publisher.generated);
                }
                self.tally.unwritten_bytes += conn.pending_out() as u64;
            }
            if let Role::Subscriber(Subscriber {
                stream: Some(stream),
                topic,
                ..
            }) = &conn.role
            {
                if conn.open {
                    self.tally.resume.ends.push(stream.end(*topic));
                }
            }
            if conn.open && conn.handshake.is_none() {
                conn.send_close(1000);
            }
        }
        self.tally
    }
}

impl Subscriber {
    /// Stores, for each publisher, the index of the first message this
    /// subscriber still waits for. Publisher `p`'s message `k` goes to
    /// topic `(p + k) % T`, so the `c`-th message to topic `t` has
    /// `k = c * T + (t - p) mod T`.
    pub(super) fn publish_progress(&self, shared: &Shared, topics: usize) {
        for (publisher, check) in self.checks.iter().enumerate() {
            let offset = (self.topic + topics - publisher % topics) % topics;
            let next = check.next_expected() * topics as u64 + offset as u64;
            shared
                .progress(self.id, publisher)
                .store(next, Ordering::SeqCst);
        }
    }
}
