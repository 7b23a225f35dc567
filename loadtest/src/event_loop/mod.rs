//! The harness's event loops. Each thread owns one `mio::Poll` and many
//! non-blocking connections, subscribers and publishers alike, and runs the
//! hot path: reading deliveries, finding each one's probe by byte search,
//! recording latency and order, and generating and writing publishes on
//! schedule (open loop, timed by a `timerfd`) or as the window allows
//! (closed loop). Nothing on the receive path allocates once buffers have
//! grown to their working size.
//!
//! A `wss://` connection's bytes go through its `rustls::ClientConnection`
//! (see [`crate::tls`]): one branch on the read and write paths, the plain
//! one unchanged. (rustls's buffered API copies each decrypted record
//! into a `Vec` of its own: over TLS the receive path allocates there.)
//!
//! Threads share only [`Shared`]: counters and subscriber progress written
//! once per loop turn (never per message), the per-topic count of live
//! subscribers, and wakers.
//!
//! In `resume`, subscribers also drop their connection on a seeded
//! schedule and open a new one without blocking the loop: a non-blocking
//! TCP connect, over TLS a handshake driven by the loop, the upgrade, then
//! a subscribe with `since_seq` and `epoch`
//! (see [`crate::resume`]); their order is checked by the topic's `seq`.
//!
//! This file owns a thread's entry ([`run_thread`]), what the run asks of
//! it ([`LoopPlan`], [`ConnSpec`], [`Pacing`]), the thread's state
//! (`LoopThread`) and the order of one loop turn (`LoopThread::run`). It
//! must not hold the work a turn calls on; that lives in rooms beside it:
//! - `shared`: what threads and the runner share ([`Shared`], [`Window`],
//!   the counters).
//! - `conn`: one connection's state (socket, buffers, role, handshake step)
//!   and writing its output; the resume drop schedule.
//! - `lifecycle`: opening, registering, reconnecting, writing, closing and
//!   reaping connections.
//! - `receive`: reading a connection and handling its frames and messages.
//! - `publish`: generating publishes on schedule or within the window, and
//!   the send timer.
//! - `record`: what a thread reports: progress and counters once per turn,
//!   its tally at the end.
//!
//! Imports run one way: `shared` and `conn` import no sibling; this file
//! imports only those two; `lifecycle`, `receive`, `publish` and `record`
//! import from this file and the two (and `record` from `publish`), and
//! add methods to `LoopThread`.

mod conn;
mod lifecycle;
mod publish;
mod receive;
mod record;
mod shared;

pub use shared::{PublisherCounters, Shared, ThreadCounters, Window};

use crate::endpoint::TargetKind;
use crate::nodes::Nodes;
use crate::probe::ProbeFinder;
use crate::resume::ResumePlan;
use crate::tally::Tally;
use crate::wire::PublishEncoder;
use conn::{Conn, DropQueue, Role, Subscriber};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::timerfd::{ClockId, TimerFd, TimerFlags};
use shared::WAKER;
use std::io::{self, ErrorKind};
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const TIMER: Token = Token(usize::MAX - 1);
/// Bytes read per `read` call into the thread's scratch buffer.
const READ_CHUNK: usize = 256 << 10;
/// The loop wakes at least this often to look at the stop flag.
const MAX_POLL_WAIT: Duration = Duration::from_millis(100);

/// How publishers pace themselves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pacing {
    /// A fixed schedule of `rate` publishes per second in total; each
    /// message is stamped with its intended send time.
    OpenLoop { rate: f64 },
    /// As fast as possible, with at most `window` messages per publisher
    /// not yet delivered to every live subscriber.
    ClosedLoop { window: u64 },
}

/// What the run asks of every loop thread.
#[derive(Debug)]
pub struct LoopPlan {
    /// The servers, and which node each connection goes to.
    pub nodes: Nodes,
    pub topics: Vec<String>,
    /// Publishers in the whole run (for the order checks' size).
    pub publishers: usize,
    pub pacing: Pacing,
    pub message_size: usize,
    /// Every connection must be set up by then.
    pub setup_deadline: Instant,
    /// `resume`: subscribers drop and resume.
    pub resume: Option<ResumePlan>,
}

/// One connection a thread opens.
#[derive(Debug, Clone, Copy)]
pub enum ConnSpec {
    Subscriber {
        /// Index among the run's reading subscribers.
        id: usize,
        topic: usize,
        /// Index of the node it connects to.
        node: usize,
        source: Option<IpAddr>,
    },
    Publisher {
        id: usize,
        node: usize,
    },
}

/// Runs one loop thread: opens `specs`, meets the runner at `barrier`
/// (after set-up, then again once the window is set), runs until the
/// stop flag, and returns what it counted.
pub fn run_thread(
    index: usize,
    poll: Poll,
    specs: Vec<ConnSpec>,
    plan: Arc<LoopPlan>,
    shared: Arc<Shared>,
    barrier: Arc<Barrier>,
) -> io::Result<Tally> {
    let mut state = match LoopThread::new(index, poll, &plan, Arc::clone(&shared)) {
        Ok(state) => state,
        Err(error) => {
            // The runner waits for every thread at both barriers.
            barrier.wait();
            barrier.wait();
            return Err(error);
        }
    };
    for spec in specs {
        state.open(&plan, spec);
    }
    let counters = &shared.threads[index];
    counters
        .connected
        .store(state.tally.connected, Ordering::SeqCst);
    counters
        .connect_failures
        .store(state.tally.connect_failures, Ordering::SeqCst);
    barrier.wait();
    barrier.wait();
    if let Some(&window) = shared.window.get() {
        state.run(window)?;
    }
    Ok(state.finish())
}

struct LoopThread {
    index: usize,
    poll: Poll,
    timer: TimerFd,
    /// The send time the timer is armed for.
    timer_due: Option<u64>,
    shared: Arc<Shared>,
    nodes: Nodes,
    kind: TargetKind,
    pacing: Pacing,
    topics: Vec<String>,
    publishers: usize,
    conns: Vec<Option<Conn>>,
    /// Indices of the publishers in `conns`.
    publisher_conns: Vec<usize>,
    scratch: Vec<u8>,
    /// Subscribers (connection indices) that received something this turn:
    /// their progress is published at the end of the turn.
    touched: Vec<usize>,
    finder: ProbeFinder,
    encoder: PublishEncoder,
    tally: Tally,
    window: Window,
    resume: Option<ResumePlan>,
    drops: DropQueue,
}

impl LoopThread {
    fn new(
        index: usize,
        poll: Poll,
        plan: &LoopPlan,
        shared: Arc<Shared>,
    ) -> io::Result<LoopThread> {
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        poll.registry().register(
            &mut SourceFd(&timer.as_fd().as_raw_fd()),
            TIMER,
            Interest::READABLE,
        )?;
        Ok(LoopThread {
            index,
            poll,
            timer,
            timer_due: None,
            shared,
            nodes: plan.nodes.clone(),
            kind: plan.nodes.kind(),
            pacing: plan.pacing,
            topics: plan.topics.clone(),
            publishers: plan.publishers,
            conns: Vec::new(),
            publisher_conns: Vec::new(),
            scratch: vec![0; READ_CHUNK],
            touched: Vec::new(),
            finder: ProbeFinder::default(),
            encoder: PublishEncoder::new(plan.nodes.kind(), plan.message_size),
            tally: Tally::default(),
            window: Window {
                start_ns: 0,
                warmup_end_ns: 0,
                end_ns: 0,
            },
            resume: plan.resume,
            drops: DropQueue::default(),
        })
    }

    fn run(&mut self, window: Window) -> io::Result<()> {
        self.window = window;
        for (index, conn) in self.conns.iter_mut().enumerate() {
            if let Some(Conn {
                role:
                    Role::Subscriber(Subscriber {
                        stream: Some(stream),
                        ..
                    }),
                ..
            }) = conn
            {
                let at = stream.next_drop_ns(window.start_ns);
                self.drops.schedule(at, index, window.end_ns);
            }
        }
        let mut events = Events::with_capacity(1024);
        // Bytes that arrived with the set-up exchange.
        for index in 0..self.conns.len() {
            self.read_connection(index, false);
        }
        while !self.shared.stop.load(Ordering::Relaxed) {
            let now_ns = self.shared.now_ns();
            self.publish(now_ns);
            self.arm_timer(now_ns)?;
            match self.poll.poll(&mut events, Some(MAX_POLL_WAIT)) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for event in events.iter() {
                match event.token() {
                    WAKER => {}
                    TIMER => {
                        // Clears the expiry; `arm_timer` sets the next one.
                        let mut expirations = [0u8; 8];
                        let _ = nix::unistd::read(&self.timer, &mut expirations);
                        self.timer_due = None;
                    }
                    Token(index) => {
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.read_connection(index, true);
                        }
                        if event.is_writable() {
                            self.write_connection(index);
                        }
                    }
                }
                // A send that falls due while a long batch of deliveries is
                // handled goes out now, not after the batch.
                if let Some(due) = self.timer_due {
                    let now_ns = self.shared.now_ns();
                    if now_ns >= due {
                        self.publish(now_ns);
                        self.arm_timer(now_ns)?;
                    }
                }
            }
            while let Some(index) = self.drops.pop_due(self.shared.now_ns()) {
                self.reconnect(index);
            }
            self.flush_progress();
            self.reap();
            self.publish_progress();
        }
        Ok(())
    }
}
