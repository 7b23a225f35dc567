//! The cross-thread half of fan-out: a connection's bounded event queue
//! (`SubscriberQueue`) and its worker's list of connections to flush
//! (`WorkerMailbox`).
//!
//! Any worker may push into any connection's queue; only the owning worker
//! pops. After a push the publisher makes sure the owner will look at the
//! connection: the queue's `scheduled` flag lets one publisher, not every
//! one, put the connection on the owner's mailbox, and the mailbox's
//! `wake_pending` flag lets one publisher, not every one, wake the owner's
//! poll. Nothing here blocks, allocates per event or touches a socket.
//!
//! # Why no event is left unseen
//!
//! The claim: every frame a publisher pushes is popped by the owner in a
//! loop turn that starts after the push. The steps, publisher then owner:
//!
//! - P1 push the frame into the `ArrayQueue`; P2 `scheduled.swap(true)`;
//!   if it was false: P3 push the key onto the mailbox's `SegQueue`; P4
//!   unless the owner is the publishing thread itself,
//!   `wake_pending.swap(true)`, and if it was false, `Waker::wake`.
//! - Each turn, after `poll` returns: O1 `wake_pending.swap(false)`; O2 pop
//!   every key; for each, O3 `scheduled.swap(false)`, then O4 pop the queue
//!   until empty. Before blocking in `poll`, O0: if the `SegQueue` is not
//!   empty, poll with a zero timeout.
//!
//! The flags are only ever changed by swaps (read-modify-writes, AcqRel),
//! and the read-modify-writes of one flag are totally ordered. Take P2:
//! - If P2 read `true`, that `true` was written by an earlier P2 whose key is
//!   posted and whose O3 has not yet run (O3 is the only writer of `false`).
//!   That O3 comes later in the flag's order than our P2, so it reads our
//!   `true` and synchronises with it: O4 after it sees our P1.
//! - If P2 read `false`, we post the key (P3). By the same argument on
//!   `wake_pending`, either our P4 reads `false` and wakes the owner, or it
//!   reads `true` set by a wake that the owner's next O1 has not consumed
//!   yet, so a turn is coming whose O2 runs after O1 synchronised with our
//!   P4, and sees our P3. A publisher on the owner's own thread skips P4:
//!   the owner is mid-turn, and O0 keeps it from sleeping on a posted key.
//!
//! The crossbeam queues are linearizable and their push/pop synchronise, so
//! a popped key or frame carries everything written before its push. The
//! stress tests `concurrent_publishers_never_lose_a_post` (below) and
//! `tests/concurrency.rs` exercise this path across threads and workers.

use super::change::Outcome;
use crate::ws::frame::SharedFrame;
use crossbeam_queue::{ArrayQueue, SegQueue};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;

thread_local! {
    /// The worker whose event loop runs on this thread, if any.
    static CURRENT_WORKER: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Marks this thread as worker `id`'s event loop, so that what it publishes
/// to its own connections does not wake its own poll. Called once, by the
/// worker thread itself; every other thread (the REST paths of tests,
/// benchmarks) counts as no worker.
pub fn enter_worker_thread(id: usize) {
    CURRENT_WORKER.with(|current| current.set(Some(id)));
}

/// Names a connection across threads: its slab slot on its worker, and its
/// generation, a number the process gives each connection it accepts (slots
/// are reused, generations are not: a key, logged as `conn`, names one
/// connection for the life of the process).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionKey {
    pub slot: usize,
    pub generation: u64,
}

impl ConnectionKey {
    pub const fn new(slot: usize, generation: u64) -> ConnectionKey {
        ConnectionKey { slot, generation }
    }
}

/// `slot.generation`, as logged.
impl std::fmt::Display for ConnectionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.slot, self.generation)
    }
}

/// One worker's list of connections that have events to write, and the
/// means to wake it.
pub struct WorkerMailbox {
    worker: usize,
    ready: SegQueue<ConnectionKey>,
    /// Outcomes of changes the backplane carried out for this worker's
    /// connections.
    outcomes: SegQueue<(ConnectionKey, Outcome)>,
    wake_pending: AtomicBool,
    waker: Option<mio::Waker>,
}

impl WorkerMailbox {
    /// `waker` is `None` only in tests that drain the mailbox by hand.
    pub fn new(worker: usize, waker: Option<mio::Waker>) -> Self {
        WorkerMailbox {
            worker,
            ready: SegQueue::new(),
            outcomes: SegQueue::new(),
            wake_pending: AtomicBool::new(false),
            waker,
        }
    }

    /// Asks the worker to flush `key`. A worker never wakes itself (it
    /// drains its own mailbox before it polls again), so a post from the
    /// owner's own thread skips the wake.
    fn post(&self, key: ConnectionKey) {
        self.ready.push(key);
        self.wake_unless_owner();
    }

    /// Hands the outcome of a change to the connection `key` that asked
    /// for it (from the backplane's thread).
    pub fn answer(&self, key: ConnectionKey, outcome: Outcome) {
        self.outcomes.push((key, outcome));
        self.wake_unless_owner();
    }

    /// Called by the owner: every outcome answered so far, in order.
    pub fn drain_outcomes(&self, into: &mut Vec<(ConnectionKey, Outcome)>) {
        while let Some(answer) = self.outcomes.pop() {
            into.push(answer);
        }
    }

    /// After a push: at most one wake per turn, and none from the owner.
    fn wake_unless_owner(&self) {
        let from_owner = CURRENT_WORKER.with(Cell::get) == Some(self.worker);
        if !from_owner && !self.wake_pending.swap(true, Ordering::AcqRel) {
            if let Some(waker) = &self.waker {
                if let Err(e) = waker.wake() {
                    log::error!("cannot wake worker {}: {e}", self.worker);
                }
            }
        }
    }

    /// A mailbox of worker 0 with no poll to wake, drained by hand: for
    /// tests, benchmarks and the socket-free harness.
    pub fn unpolled() -> Arc<WorkerMailbox> {
        Arc::new(WorkerMailbox::new(0, None))
    }

    /// Wakes the worker for a reason of its own (shutdown).
    pub fn wake(&self) {
        self.wake_pending.store(true, Ordering::Release);
        if let Some(waker) = &self.waker {
            let _ = waker.wake();
        }
    }

    /// Called by the owner: every connection posted so far, in order.
    pub fn drain(&self, into: &mut Vec<ConnectionKey>) {
        self.wake_pending.swap(false, Ordering::AcqRel);
        while let Some(key) = self.ready.pop() {
            into.push(key);
        }
    }

    /// True if something was posted since the last `drain`; the owner then
    /// must not block in `poll`.
    pub fn has_posts(&self) -> bool {
        !self.ready.is_empty() || !self.outcomes.is_empty()
    }
}

/// What became of one offered frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Queued,
    /// The queue was full: this offer made the connection a slow consumer.
    Overflowed,
    /// The connection was closed, or already a slow consumer.
    Refused,
}

const OPEN: u8 = 0;
const SLOW: u8 = 1;
const CLOSED: u8 = 2;

/// A connection's bounded queue of event frames, shared by all of its
/// subscriptions. Overflow makes the connection a slow consumer.
pub struct SubscriberQueue {
    events: ArrayQueue<SharedFrame>,
    scheduled: AtomicBool,
    state: AtomicU8,
    key: ConnectionKey,
    mailbox: Arc<WorkerMailbox>,
}

impl SubscriberQueue {
    pub fn new(capacity: usize, key: ConnectionKey, mailbox: Arc<WorkerMailbox>) -> Self {
        SubscriberQueue {
            events: ArrayQueue::new(capacity),
            scheduled: AtomicBool::new(false),
            state: AtomicU8::new(OPEN),
            key,
            mailbox,
        }
    }

    /// Queues `frame` and schedules the owner. Never blocks: a full queue
    /// makes the connection a slow consumer instead.
    pub fn offer(&self, frame: &SharedFrame) -> Delivery {
        if self.state.load(Ordering::Acquire) != OPEN {
            return Delivery::Refused;
        }
        if self.events.push(Arc::clone(frame)).is_err() {
            if self
                .state
                .compare_exchange(OPEN, SLOW, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                self.schedule();
                return Delivery::Overflowed;
            }
            return Delivery::Refused;
        }
        self.schedule();
        Delivery::Queued
    }

    /// [`offer`](Self::offer), true if the frame was queued; false means the
    /// connection should leave the topic.
    pub fn deliver(&self, frame: &SharedFrame) -> bool {
        self.offer(frame) == Delivery::Queued
    }

    fn schedule(&self) {
        if !self.scheduled.swap(true, Ordering::AcqRel) {
            self.mailbox.post(self.key);
        }
    }

    /// Called by the owner when it takes the connection off its mailbox,
    /// before it pops: a push after this schedules the connection again.
    pub fn unschedule(&self) {
        self.scheduled.swap(false, Ordering::AcqRel);
    }

    pub fn pop(&self) -> Option<SharedFrame> {
        self.events.pop()
    }

    /// Drops every queued event.
    pub fn clear(&self) {
        while self.events.pop().is_some() {}
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    pub fn is_slow(&self) -> bool {
        self.state.load(Ordering::Acquire) == SLOW
    }

    /// No more deliveries: topics drop this queue the next time they see it.
    pub fn close(&self) {
        self.state.store(CLOSED, Ordering::Release);
    }

    pub fn key(&self) -> ConnectionKey {
        self.key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(capacity: usize, mailbox: &Arc<WorkerMailbox>) -> SubscriberQueue {
        SubscriberQueue::new(capacity, ConnectionKey::new(7, 3), Arc::clone(mailbox))
    }

    #[test]
    fn one_post_per_connection_until_the_owner_unschedules() {
        let mailbox = WorkerMailbox::unpolled();
        let q = queue(10, &mailbox);
        let frame: SharedFrame = Arc::new(b"e".to_vec());
        for _ in 0..5 {
            assert!(q.deliver(&frame));
        }
        let mut posted = Vec::new();
        mailbox.drain(&mut posted);
        assert_eq!(posted, vec![ConnectionKey::new(7, 3)]);
        assert_eq!(q.len(), 5);
        q.unschedule();
        assert!(q.deliver(&frame));
        posted.clear();
        mailbox.drain(&mut posted);
        assert_eq!(posted.len(), 1);
    }

    #[test]
    fn overflow_marks_a_slow_consumer_and_refuses_more() {
        let mailbox = WorkerMailbox::unpolled();
        let q = queue(2, &mailbox);
        let frame: SharedFrame = Arc::new(b"e".to_vec());
        assert!(q.deliver(&frame));
        assert!(q.deliver(&frame));
        assert!(!q.is_slow());
        assert!(!q.deliver(&frame));
        assert!(q.is_slow());
        assert_eq!(q.len(), 2, "the overflowing event is not queued");
        q.clear();
        assert!(!q.deliver(&frame), "a slow consumer takes nothing more");
        assert!(q.is_empty());
    }

    #[test]
    fn a_closed_queue_takes_nothing() {
        let mailbox = WorkerMailbox::unpolled();
        let q = queue(2, &mailbox);
        q.close();
        assert!(!q.deliver(&Arc::new(vec![1])));
        assert!(q.is_empty());
        assert!(!mailbox.has_posts());
    }

    #[test]
    fn concurrent_publishers_never_lose_a_post() {
        // Many threads push while the owner keeps draining; every pushed
        // frame must be popped, and the owner must always have been told.
        let mailbox = WorkerMailbox::unpolled();
        let q = Arc::new(queue(1 << 16, &mailbox));
        let per_thread = 20_000;
        let publishers: Vec<_> = (0..3)
            .map(|_| {
                let q = Arc::clone(&q);
                std::thread::spawn(move || {
                    let frame: SharedFrame = Arc::new(vec![0]);
                    for _ in 0..per_thread {
                        assert!(q.deliver(&frame));
                    }
                })
            })
            .collect();
        let mut popped = 0;
        let mut posts = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while popped < 3 * per_thread && std::time::Instant::now() < deadline {
            posts.clear();
            mailbox.drain(&mut posts);
            for _ in &posts {
                q.unschedule();
                while q.pop().is_some() {
                    popped += 1;
                }
            }
        }
        for p in publishers {
            p.join().unwrap();
        }
        assert_eq!(popped, 3 * per_thread);
    }
}
