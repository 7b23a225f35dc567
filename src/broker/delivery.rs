//! The cross-thread half of fan-out: a connection's bounded event queue
//! (`SubscriberQueue`) and its worker's mailbox (`WorkerMailbox`: the
//! connections to flush, the backplane's outcomes, other threads'
//! notices).
//!
//! Long on purpose: the written arguments below sit beside the code they
//! argue about, and the queue's tests beside both.
//!
//! Any worker may push into any connection's queue; only the owning worker
//! pops. After a push the publisher makes sure the owner will look at the
//! connection: the queue's `scheduled` flag lets one publisher, not every
//! one, put the connection on the owner's mailbox, and the mailbox's
//! `wake_pending` flag lets one publisher, not every one, wake the owner's
//! poll. Nothing here touches a socket, and nothing on the live path
//! blocks or allocates per event; only a queue's backlog, which holds what
//! a cluster node fills in from the ring behind a gap, takes a short lock.
//!
//! # Why no event is left unseen
//!
//! The claim: every frame a publisher pushes is popped by the owner in a
//! loop turn that starts after the push. The steps, publisher then owner:
//!
//! - P1 push the frame into one of the queue's lanes; P2
//!   `scheduled.swap(true)`; if it was false: P3 push the key onto the
//!   mailbox's `SegQueue`; P4 unless the owner is the publishing thread
//!   itself, `wake_pending.swap(true)`, and if it was false, `Waker::wake`.
//! - Each turn, after `poll` returns: O1 `wake_pending.swap(false)`; O2 pop
//!   every key; for each, O3 `scheduled.swap(false)`, then O4 pop the queue
//!   until both lanes are empty. Before blocking in `poll`, O0: if the
//!   `SegQueue` is not empty, poll with a zero timeout.
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
//! a popped key or frame carries everything written before its push. A
//! push to the backlog sets `backlogged` before its P2, and O4 reads that
//! flag after an O3 that synchronised with the P2, so it finds the frame.
//! The stress tests `concurrent_publishers_never_lose_a_post` and
//! `filled_and_live_frames_from_many_threads_stay_in_each_thread_order`
//! (below) and `tests/concurrency.rs` exercise this path across threads
//! and workers.
//!
//! # Why the backlog keeps each topic's order
//!
//! A cluster node fills a gap from the ring into the queue's second lane,
//! the backlog (a `Mutex<VecDeque>`), where the frames do not count against
//! the bound. `backlogged` is set under the backlog's lock by every push
//! there, and cleared under it by the owner when it takes the last frame.
//! A live frame goes to the backlog when it reads `backlogged` true; the
//! owner pops the bounded lane first, and before each frame it takes from
//! the backlog it pops the bounded lane once more under the lock. Take two
//! frames A then B of one topic: the topic's lock orders A's push before B's
//! choice of lane.
//! - A and B in the same lane: each lane is FIFO.
//! - A in the backlog, B in the bounded lane: B read `backlogged` false,
//!   and the `true` A's push stored comes before that read, so the owner
//!   had already cleared it, after taking A.
//! - A in the bounded lane, B in the backlog: the owner takes B under the
//!   lock that B's push released, after A's push; its pop of the bounded
//!   lane under that lock sees A, if A is still there, and writes it first.

use super::change::Outcome;
use crate::ws::frame::SharedFrame;
use crossbeam_queue::{ArrayQueue, SegQueue};
use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

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
/// What another thread tells one of a worker's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// Its user was disconnected (`POST /disconnect`): close it.
    Disconnect,
}

pub struct WorkerMailbox {
    worker: usize,
    ready: SegQueue<ConnectionKey>,
    /// Outcomes of changes the backplane carried out for this worker's
    /// connections.
    outcomes: SegQueue<(ConnectionKey, Outcome)>,
    /// What other threads tell this worker's connections.
    notices: SegQueue<(ConnectionKey, Notice)>,
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
            notices: SegQueue::new(),
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

    /// Tells the connection `key` of this worker `notice` (from any thread).
    pub fn notify(&self, key: ConnectionKey, notice: Notice) {
        self.notices.push((key, notice));
        self.wake_unless_owner();
    }

    /// Called by the owner: every notice so far, in order.
    pub fn drain_notices(&self, into: &mut Vec<(ConnectionKey, Notice)>) {
        while let Some(notice) = self.notices.pop() {
            into.push(notice);
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
        !self.ready.is_empty() || !self.outcomes.is_empty() || !self.notices.is_empty()
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
///
/// Live frames go to `events` (the bounded lane, lock-free). Frames a
/// cluster node fills in from the ring go to `backlog`, where they do not
/// count against the bound (the ring's size bounds each repair); while the
/// backlog holds anything, live frames queue behind it there, and count.
pub struct SubscriberQueue {
    events: ArrayQueue<SharedFrame>,
    /// True while `backlog` may hold frames; set and cleared under its
    /// lock, read without it by publishers choosing a lane.
    backlogged: AtomicBool,
    backlog: Mutex<Backlog>,
    scheduled: AtomicBool,
    state: AtomicU8,
    key: ConnectionKey,
    mailbox: Arc<WorkerMailbox>,
}

/// Frames queued behind a repair, in order.
#[derive(Default)]
struct Backlog {
    frames: VecDeque<BackloggedFrame>,
    /// How many of `frames` are live ones (they count against the bound).
    live: usize,
}

struct BackloggedFrame {
    frame: SharedFrame,
    live: bool,
}

impl SubscriberQueue {
    pub fn new(capacity: usize, key: ConnectionKey, mailbox: Arc<WorkerMailbox>) -> Self {
        SubscriberQueue {
            events: ArrayQueue::new(capacity),
            backlogged: AtomicBool::new(false),
            backlog: Mutex::new(Backlog::default()),
            scheduled: AtomicBool::new(false),
            state: AtomicU8::new(OPEN),
            key,
            mailbox,
        }
    }

    /// Queues a live `frame` and schedules the owner. Never blocks: a full
    /// queue makes the connection a slow consumer instead.
    pub fn offer(&self, frame: &SharedFrame) -> Delivery {
        if self.state.load(Ordering::Acquire) != OPEN {
            return Delivery::Refused;
        }
        let queued = if self.backlogged.load(Ordering::Acquire) {
            self.push_backlog(frame, true)
        } else {
            self.events.push(Arc::clone(frame)).is_ok()
        };
        if !queued {
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

    /// Queues a `frame` a cluster node filled in from the ring, behind
    /// everything queued so far; it does not count against the bound.
    pub fn offer_filled(&self, frame: &SharedFrame) -> Delivery {
        if self.state.load(Ordering::Acquire) != OPEN {
            return Delivery::Refused;
        }
        self.push_backlog(frame, false);
        self.schedule();
        Delivery::Queued
    }

    /// Appends to the backlog; false if a live frame finds the queue full.
    fn push_backlog(&self, frame: &SharedFrame, live: bool) -> bool {
        let mut backlog = self.lock_backlog();
        if live {
            if self.events.len() + backlog.live >= self.events.capacity() {
                return false;
            }
            backlog.live += 1;
        }
        backlog.frames.push_back(BackloggedFrame {
            frame: Arc::clone(frame),
            live,
        });
        self.backlogged.store(true, Ordering::Release);
        true
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

    /// The next frame to write: the bounded lane first, then the backlog,
    /// whose frames came after everything that lane held when they came.
    pub fn pop(&self) -> Option<SharedFrame> {
        if let Some(frame) = self.events.pop() {
            return Some(frame);
        }
        if !self.backlogged.load(Ordering::Acquire) {
            return None;
        }
        let mut backlog = self.lock_backlog();
        // A live frame pushed to the bounded lane just before the backlog
        // began is older than the backlog: it goes first.
        if let Some(frame) = self.events.pop() {
            return Some(frame);
        }
        let next = backlog.frames.pop_front();
        if backlog.frames.is_empty() {
            self.backlogged.store(false, Ordering::Release);
        }
        let next = next?;
        if next.live {
            backlog.live -= 1;
        }
        Some(next.frame)
    }

    /// The backlog's lock is held only to push or pop one frame, never
    /// across anything that can panic; a poisoned one is still sound.
    fn lock_backlog(&self) -> MutexGuard<'_, Backlog> {
        self.backlog.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Drops every queued event.
    pub fn clear(&self) {
        while self.events.pop().is_some() {}
        let mut backlog = self.lock_backlog();
        *backlog = Backlog::default();
        self.backlogged.store(false, Ordering::Release);
    }

    /// Frames queued, in both lanes.
    pub fn len(&self) -> usize {
        let backlogged = if self.backlogged.load(Ordering::Acquire) {
            self.lock_backlog().frames.len()
        } else {
            0
        };
        self.events.len() + backlogged
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && !self.backlogged.load(Ordering::Acquire)
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

    fn frame(n: u32) -> SharedFrame {
        Arc::new(n.to_le_bytes().to_vec())
    }

    fn number(frame: &SharedFrame) -> u32 {
        u32::from_le_bytes(frame[..4].try_into().unwrap())
    }

    #[test]
    fn filled_frames_queue_behind_live_ones_and_live_ones_behind_them() {
        let mailbox = WorkerMailbox::unpolled();
        let q = queue(2, &mailbox);
        assert!(q.deliver(&frame(1)));
        for n in 2..=9 {
            assert_eq!(q.offer_filled(&frame(n)), Delivery::Queued);
        }
        assert!(q.deliver(&frame(10)), "behind the backlog, and counted");
        assert_eq!(q.offer(&frame(11)), Delivery::Overflowed);
        assert_eq!(q.len(), 10);
        let popped: Vec<u32> = std::iter::from_fn(|| q.pop()).map(|f| number(&f)).collect();
        assert_eq!(popped, (1..=10).collect::<Vec<_>>());
        assert!(q.is_empty());
    }

    #[test]
    fn the_bounded_lane_is_used_again_once_the_backlog_is_written() {
        let mailbox = WorkerMailbox::unpolled();
        let q = queue(2, &mailbox);
        assert_eq!(q.offer_filled(&frame(1)), Delivery::Queued);
        assert!(q.deliver(&frame(2)));
        assert_eq!(q.pop().map(|f| number(&f)), Some(1));
        assert_eq!(q.pop().map(|f| number(&f)), Some(2));
        assert!(q.pop().is_none());
        assert!(q.deliver(&frame(3)) && q.deliver(&frame(4)));
        assert_eq!(
            q.offer(&frame(5)),
            Delivery::Overflowed,
            "the bound is whole again"
        );
        q.clear();
        assert!(q.is_empty());
        assert_eq!(
            q.offer_filled(&frame(6)),
            Delivery::Refused,
            "nor to a slow consumer"
        );
    }

    #[test]
    fn filled_and_live_frames_from_many_threads_stay_in_each_thread_order() {
        // Each thread stands for a topic: its program order is what the
        // topic's lock gives a real one. It mixes live and filled frames;
        // the owner must pop each thread's frames in order, all of them.
        let mailbox = WorkerMailbox::unpolled();
        let q = Arc::new(queue(1 << 16, &mailbox));
        let (threads, per_thread) = (3u32, 20_000u32);
        let producers: Vec<_> = (0..threads)
            .map(|t| {
                let q = Arc::clone(&q);
                std::thread::spawn(move || {
                    for i in 0..per_thread {
                        let f = frame(t << 24 | i);
                        let offered = if (i / 50) % 3 == 0 {
                            q.offer_filled(&f)
                        } else {
                            q.offer(&f)
                        };
                        assert_eq!(offered, Delivery::Queued);
                    }
                })
            })
            .collect();
        let mut next = vec![0u32; threads as usize];
        let mut posts = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while next.iter().sum::<u32>() < threads * per_thread
            && std::time::Instant::now() < deadline
        {
            posts.clear();
            mailbox.drain(&mut posts);
            for _ in &posts {
                q.unschedule();
                while let Some(f) = q.pop() {
                    let (t, i) = ((number(&f) >> 24) as usize, number(&f) & 0xff_ffff);
                    assert_eq!(i, next[t], "thread {t}'s frames out of order");
                    next[t] += 1;
                }
            }
        }
        for p in producers {
            p.join().unwrap();
        }
        assert_eq!(next, vec![per_thread; threads as usize]);
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
