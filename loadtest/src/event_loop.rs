//! The harness's event loops. Each thread owns one `mio::Poll` and many
//! non-blocking connections, subscribers and publishers alike, and runs the
//! hot path: reading deliveries, finding each one's probe by byte search,
//! recording latency and order, and generating and writing publishes on
//! schedule (open loop, timed by a `timerfd`) or as the window allows
//! (closed loop). Nothing on the receive path allocates once buffers have
//! grown to their working size.
//!
//! Threads share only [`Shared`]: counters and subscriber progress written
//! once per loop turn (never per message), the per-topic count of live
//! subscribers, and wakers.
//!
//! In `resume`, subscribers also drop their connection on a seeded
//! schedule and open a new one without blocking the loop: a non-blocking
//! TCP connect, the upgrade, then a subscribe with `since_seq` and `epoch`
//! (see [`crate::resume`]); their order is checked by the topic's `seq`.
//!
//! Long on purpose: it is the hot path of every scenario, and a loop turn
//! reads top to bottom here; the protocol codecs (`wsframe`, `wire`,
//! `nats`), the checks (`sequence`, `tally`) and the set-up (`connect`,
//! `run`) are already elsewhere.

use crate::connect::{self, Opened, SocketOptions};
use crate::endpoint::TargetKind;
use crate::nats::{self, NatsEvent, NatsParser};
use crate::nodes::Nodes;
use crate::probe::{Probe, ProbeFinder};
use crate::resume::{ResumePlan, ResumeStream};
use crate::sequence::{Arrival, SequenceCheck};
use crate::tally::Tally;
use crate::wire::{self, PublishEncoder};
use crate::wsframe::{self, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

const WAKER: Token = Token(usize::MAX);
const TIMER: Token = Token(usize::MAX - 1);
/// Bytes read per `read` call into the thread's scratch buffer.
const READ_CHUNK: usize = 256 << 10;
/// A publisher stops generating while this much is waiting to be written.
const OUT_HIGH_WATER: usize = 256 << 10;
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
    window_blocked: AtomicBool,
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
    wakers: Vec<Waker>,
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

    fn progress(&self, subscriber: usize, publisher: usize) -> &AtomicU64 {
        &self.progress[subscriber * self.publishers.len() + publisher]
    }

    /// The first message of `publisher` that some live subscriber has not
    /// received yet (`u64::MAX` if there is no live subscriber).
    fn oldest_undelivered(&self, publisher: usize) -> u64 {
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

/// Resuming subscribers' next drops (time in ns, connection index),
/// soonest first.
#[derive(Default)]
struct DropQueue(BinaryHeap<Reverse<(u64, usize)>>);

impl DropQueue {
    /// Drops connection `index` at `at_ns`, unless that is not before
    /// `end_ns`: no drop after publishing ends.
    fn schedule(&mut self, at_ns: u64, index: usize, end_ns: u64) {
        if at_ns < end_ns {
            self.0.push(Reverse((at_ns, index)));
        }
    }

    fn next_ns(&self) -> Option<u64> {
        self.0.peek().map(|&Reverse((at, _))| at)
    }

    /// The next connection due to be dropped by `now_ns`.
    fn pop_due(&mut self, now_ns: u64) -> Option<usize> {
        if self.next_ns()? > now_ns {
            return None;
        }
        self.0.pop().map(|Reverse((_, index))| index)
    }
}

struct Conn {
    stream: mio::net::TcpStream,
    role: Role,
    /// A frame that the last read cut short.
    carry: Vec<u8>,
    /// A fragmented data message being put together.
    fragments: Vec<u8>,
    in_fragmented_message: bool,
    nats: Option<NatsParser>,
    /// Bytes to write (publishes, pongs) and how many are already written.
    out: Vec<u8>,
    out_written: usize,
    open: bool,
    /// A resuming subscriber's new connection, not yet upgraded.
    handshake: Option<Handshake>,
}

/// How far a resuming subscriber's new connection is.
enum Handshake {
    /// The TCP connect to this node is in progress.
    Connecting { node: usize },
    /// The upgrade request (with this key) is sent.
    Upgrading { key: String },
}

enum Role {
    Subscriber(Subscriber),
    Publisher(Publisher),
}

struct Subscriber {
    id: usize,
    topic: usize,
    /// The node it is connected (or reconnecting) to.
    node: usize,
    /// Listed in `LoopThread::touched` this turn.
    touched: bool,
    /// Per publisher.
    checks: Vec<SequenceCheck>,
    /// `resume`: the topic's stream across reconnects; order is then
    /// checked by `seq`, not by `checks`.
    stream: Option<ResumeStream>,
}

struct Publisher {
    id: usize,
    /// Messages generated so far.
    generated: u64,
    /// Per topic: this publisher's next counter (`lt_n`).
    counters: Vec<u64>,
    /// Messages stamped inside the measured window, and the deliveries
    /// expected for them (mirrored in `PublisherCounters`).
    published_measured: u64,
    expected_measured: u64,
    /// Closed loop: the first message not yet delivered to every live
    /// subscriber, as last computed.
    oldest_undelivered: u64,
    finished: bool,
}

/// How a message (or the bytes around it) ended a connection.
enum Closed {
    ByServer(Option<u16>),
    Protocol(String),
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

    /// Opens one connection (blocking, before the run) and registers it.
    fn open(&mut self, plan: &LoopPlan, spec: ConnSpec) {
        let started = Instant::now();
        let opened = match spec {
            ConnSpec::Subscriber {
                id,
                topic,
                node,
                source,
            } => connect::open_subscriber(
                &plan.nodes.endpoints()[node],
                SocketOptions {
                    source,
                    recv_buffer: None,
                },
                &plan.topics[topic],
                id as u64,
                plan.setup_deadline,
            ),
            ConnSpec::Publisher { node, .. } => {
                connect::open_publisher(&plan.nodes.endpoints()[node], plan.setup_deadline)
            }
        };
        let registered = opened.and_then(|opened| self.register(spec, opened).map_err(Into::into));
        match registered {
            Ok(()) => {
                self.tally.connected += 1;
                self.tally
                    .connect_time
                    .saturating_record(started.elapsed().as_nanos() as u64);
                if let ConnSpec::Subscriber { topic, .. } = spec {
                    self.shared.live_subscribers[topic].fetch_add(1, Ordering::SeqCst);
                }
            }
            Err(error) => {
                self.tally.record_connect_failure(&error);
                if let ConnSpec::Publisher { id, .. } = spec {
                    self.shared.publishers[id]
                        .finished
                        .store(true, Ordering::SeqCst);
                }
            }
        }
    }

    fn register(&mut self, spec: ConnSpec, opened: Opened) -> io::Result<()> {
        let Opened {
            stream,
            unread,
            nats,
            subscribe_ack,
        } = opened;
        let resume_stream = match (spec, &self.resume) {
            (ConnSpec::Subscriber { id, .. }, Some(plan)) => Some(
                ResumeStream::new(&subscribe_ack.unwrap_or_default(), plan, id as u64)
                    .map_err(io::Error::other)?,
            ),
            _ => None,
        };
        stream.set_nonblocking(true)?;
        let mut stream = mio::net::TcpStream::from_std(stream);
        let token = Token(self.conns.len());
        self.poll.registry().register(
            &mut stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let role = match spec {
            ConnSpec::Subscriber {
                id, topic, node, ..
            } => {
                let subscriber = Subscriber {
                    id,
                    topic,
                    node,
                    touched: false,
                    checks: vec![SequenceCheck::default(); self.publishers],
                    stream: resume_stream,
                };
                subscriber.publish_progress(&self.shared, self.topics.len());
                Role::Subscriber(subscriber)
            }
            ConnSpec::Publisher { id, .. } => {
                self.publisher_conns.push(self.conns.len());
                Role::Publisher(Publisher {
                    id,
                    generated: 0,
                    counters: vec![0; self.topics.len()],
                    published_measured: 0,
                    expected_measured: 0,
                    oldest_undelivered: 0,
                    finished: false,
                })
            }
        };
        self.conns.push(Some(Conn {
            stream,
            role,
            carry: unread,
            fragments: Vec::new(),
            in_fragmented_message: false,
            nats,
            out: Vec::new(),
            out_written: 0,
            open: true,
            handshake: None,
        }));
        Ok(())
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

    /// Drops a resuming subscriber's connection (abruptly or cleanly, as
    /// its stream decides) and starts a new one, which `write_connection`
    /// and `read_connection` take through the upgrade and the resume.
    fn reconnect(&mut self, index: usize) {
        let now_ns = self.shared.now_ns();
        let Some(conn) = self.conns[index].as_mut().filter(|conn| conn.open) else {
            return;
        };
        let Role::Subscriber(Subscriber {
            stream: Some(stream),
            node,
            ..
        }) = &mut conn.role
        else {
            return;
        };
        // Resumes on the next node (the same one, against one server).
        *node = self.nodes.next_node(*node);
        let next = *node;
        let addr = self.nodes.endpoints()[next].addr;
        if stream.reconnect(now_ns, &mut self.tally.resume) {
            // SO_LINGER 0: closing the socket resets the connection.
            let _ = socket2::SockRef::from(&conn.stream).set_linger(Some(Duration::ZERO));
        } else {
            conn.out.clear();
            conn.out_written = 0;
            wsframe::append_client_frame(&mut conn.out, OP_CLOSE, &1000u16.to_be_bytes());
            let _ = conn.flush();
        }
        let _ = self.poll.registry().deregister(&mut conn.stream);
        let connected = mio::net::TcpStream::connect(addr).and_then(|mut stream| {
            self.poll.registry().register(
                &mut stream,
                Token(index),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(stream)
        });
        match connected {
            Ok(stream) => {
                // The old socket is closed here.
                conn.stream = stream;
                conn.carry.clear();
                conn.fragments.clear();
                conn.in_fragmented_message = false;
                conn.out.clear();
                conn.out_written = 0;
                conn.handshake = Some(Handshake::Connecting { node: next });
            }
            Err(e) => self.close(index, format!("reconnect: {}", io_reason(&e))),
        }
    }

    /// Generates what each publisher may send now, and writes it.
    fn publish(&mut self, now_ns: u64) {
        let closed_loop = matches!(self.pacing, Pacing::ClosedLoop { .. });
        let blocked_flag = &self.shared.threads[self.index].window_blocked;
        if closed_loop {
            // Raised before the publishers look at their delivery counts,
            // so that a thread adding deliveries after that look sees it
            // and wakes this one: no wake is lost.
            blocked_flag.store(true, Ordering::SeqCst);
        }
        let mut blocked = false;
        for i in 0..self.publisher_conns.len() {
            let index = self.publisher_conns[i];
            let Some(conn) = self.conns[index].as_mut() else {
                continue;
            };
            let Role::Publisher(publisher) = &mut conn.role else {
                continue;
            };
            if !conn.open || publisher.finished {
                continue;
            }
            let env = PublishEnv {
                shared: &self.shared,
                window: &self.window,
                pacing: self.pacing,
                topics: &self.topics,
                publishers: self.publishers,
            };
            blocked |= env.generate(
                publisher,
                &mut conn.out,
                conn.out_written,
                &mut self.encoder,
                &mut self.tally,
                now_ns,
            );
            self.write_connection(index);
        }
        if closed_loop && !blocked {
            self.shared.threads[self.index]
                .window_blocked
                .store(false, Ordering::SeqCst);
        }
    }

    /// Arms the timer for the next open-loop send (or `resume` drop) due
    /// on this thread.
    fn arm_timer(&mut self, now_ns: u64) -> io::Result<()> {
        let Pacing::OpenLoop { rate } = self.pacing else {
            return Ok(());
        };
        let next_due = self
            .publisher_conns
            .iter()
            .filter_map(|&index| self.conns[index].as_ref())
            .filter(|conn| conn.open && conn.pending_out() < OUT_HIGH_WATER)
            .filter_map(|conn| match &conn.role {
                Role::Publisher(p) if !p.finished => Some(due_ns(
                    &self.window,
                    rate,
                    self.publishers,
                    p.id,
                    p.generated,
                )),
                _ => None,
            })
            .chain(self.drops.next_ns())
            .min();
        if next_due == self.timer_due {
            return Ok(());
        }
        match next_due {
            Some(due) => {
                // A zero expiry would disarm the timer: wait at least 1 ns.
                let wait = Duration::from_nanos(due.saturating_sub(now_ns).max(1));
                self.timer.set(
                    Expiration::OneShot(TimeSpec::from_duration(wait)),
                    TimerSetTimeFlags::empty(),
                )?;
            }
            None => self.timer.unset()?,
        }
        self.timer_due = next_due;
        Ok(())
    }

    /// Reads everything the socket holds (`from_socket`) or only what is
    /// already in the connection's carry buffer, and handles each frame.
    fn read_connection(&mut self, index: usize, from_socket: bool) {
        let Some(conn) = self.conns.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        if !conn.open {
            return;
        }
        if matches!(conn.handshake, Some(Handshake::Connecting { .. })) {
            // Nothing to read yet; a failed connect may show as an error
            // event only.
            self.write_connection(index);
            return;
        }
        let mut ctx = Receiver {
            kind: self.kind,
            window: &self.window,
            finder: &self.finder,
            tally: &mut self.tally,
            touched: &mut self.touched,
            drops: &mut self.drops,
            conn_index: index,
        };
        let ended = loop {
            let carried = conn.carry.len();
            if self.scratch.len() < carried + READ_CHUNK {
                self.scratch.resize(carried + READ_CHUNK, 0);
            }
            self.scratch[..carried].copy_from_slice(&conn.carry);
            let mut drained = false;
            let filled = if from_socket {
                match conn.stream.read(&mut self.scratch[carried..]) {
                    Ok(0) => break Some("eof".to_string()),
                    Ok(n) => {
                        // A short read emptied the socket: skip the read
                        // that would only say WouldBlock. Data arriving
                        // later raises a new edge (epoll signals every
                        // arrival), as tokio also relies on.
                        drained = carried + n < self.scratch.len();
                        carried + n
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break None,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => break Some(io_reason(&e)),
                }
            } else {
                carried
            };
            let now_ns = self.shared.now_ns();
            let upgraded = match conn.finish_upgrade(&self.scratch[..filled], &self.topics) {
                Ok(upgraded) => upgraded,
                Err(reason) => break Some(reason),
            };
            let parsed = match upgraded {
                Some(start) => ctx
                    .frames(conn, &self.scratch[start..filled], now_ns)
                    .map(|used| start + used),
                None => Ok(0),
            };
            match parsed {
                Ok(used) => {
                    conn.carry.clear();
                    conn.carry.extend_from_slice(&self.scratch[used..filled]);
                }
                Err(Closed::ByServer(code)) => {
                    // Answer the close; the socket is dropped right after.
                    wsframe::append_client_frame(
                        &mut conn.out,
                        OP_CLOSE,
                        &code.unwrap_or(1000).to_be_bytes(),
                    );
                    let _ = conn.flush();
                    break Some(match code {
                        Some(code) => format!("close {code}"),
                        None => "close".to_string(),
                    });
                }
                Err(Closed::Protocol(error)) => break Some(format!("protocol error: {error}")),
            }
            if !from_socket || drained {
                break None;
            }
        };
        let pong_pending = conn.pending_out() > 0;
        match ended {
            Some(reason) => self.close(index, reason),
            None if pong_pending => self.write_connection(index),
            None => {}
        }
    }

    fn write_connection(&mut self, index: usize) {
        let Some(conn) = self.conns.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        if !conn.open {
            return;
        }
        if let Some(Handshake::Connecting { node }) = conn.handshake {
            match conn.connected() {
                Ok(false) => return,
                Ok(true) => {
                    let (request, key) = connect::upgrade_request(&self.nodes.endpoints()[node]);
                    conn.out.extend_from_slice(&request);
                    conn.handshake = Some(Handshake::Upgrading { key });
                }
                Err(e) => {
                    self.close(index, format!("reconnect: {}", io_reason(&e)));
                    return;
                }
            }
        }
        if let Err(e) = conn.flush() {
            self.close(index, io_reason(&e));
        }
    }

    /// Marks a connection lost; it is deregistered and dropped in `reap`.
    fn close(&mut self, index: usize, reason: String) {
        let Some(conn) = self.conns[index].as_mut() else {
            return;
        };
        if !conn.open {
            return;
        }
        conn.open = false;
        match &mut conn.role {
            Role::Subscriber(subscriber) => {
                self.shared.live_subscribers[subscriber.topic].fetch_sub(1, Ordering::SeqCst);
                // A lost subscriber no longer holds back any window.
                for publisher in 0..self.publishers {
                    self.shared
                        .progress(subscriber.id, publisher)
                        .store(u64::MAX, Ordering::SeqCst);
                }
                self.wake_blocked_threads();
            }
            Role::Publisher(publisher) => {
                publisher.finished = true;
                self.shared.publishers[publisher.id]
                    .finished
                    .store(true, Ordering::SeqCst);
            }
        }
        self.tally.record_disconnect(reason);
    }

    fn reap(&mut self) {
        for slot in &mut self.conns {
            if slot.as_ref().is_some_and(|conn| !conn.open) {
                if let Some(mut conn) = slot.take() {
                    let _ = self.poll.registry().deregister(&mut conn.stream);
                }
            }
        }
    }

    /// Publishes the progress of the subscribers that received something
    /// this turn, and wakes threads whose publishers wait for it.
    fn flush_progress(&mut self) {
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

    fn wake_blocked_threads(&self) {
        for (thread, counters) in self.shared.threads.iter().enumerate() {
            if thread != self.index
                && counters.window_blocked.load(Ordering::SeqCst)
                && counters.window_blocked.swap(false, Ordering::SeqCst)
            {
                let _ = self.shared.wakers[thread].wake();
            }
        }
    }

    fn publish_progress(&self) {
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
    fn finish(mut self) -> Tally {
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
                conn.out.clear();
                conn.out_written = 0;
                wsframe::append_client_frame(&mut conn.out, OP_CLOSE, &1000u16.to_be_bytes());
                let _ = conn.flush();
            }
        }
        self.tally
    }
}

/// What generating publishes needs besides the publisher itself.
struct PublishEnv<'a> {
    shared: &'a Shared,
    window: &'a Window,
    pacing: Pacing,
    topics: &'a [String],
    publishers: usize,
}

impl PublishEnv<'_> {
    /// Appends the publisher's due (open loop) or allowed (closed loop)
    /// messages to `out`. Returns true if the closed-loop window is full.
    fn generate(
        &self,
        publisher: &mut Publisher,
        out: &mut Vec<u8>,
        out_written: usize,
        encoder: &mut PublishEncoder,
        tally: &mut Tally,
        now_ns: u64,
    ) -> bool {
        let counters = &self.shared.publishers[publisher.id];
        let mut blocked = false;
        while out.len() - out_written < OUT_HIGH_WATER {
            let sent_ns = match self.pacing {
                Pacing::OpenLoop { rate } => {
                    let due = due_ns(
                        self.window,
                        rate,
                        self.publishers,
                        publisher.id,
                        publisher.generated,
                    );
                    if due >= self.window.end_ns {
                        publisher.finished = true;
                        break;
                    }
                    if due > now_ns {
                        break;
                    }
                    tally.send_lag.saturating_record(now_ns - due);
                    due
                }
                Pacing::ClosedLoop { window } => {
                    if now_ns >= self.window.end_ns {
                        publisher.finished = true;
                        break;
                    }
                    if publisher.generated >= publisher.oldest_undelivered.saturating_add(window) {
                        publisher.oldest_undelivered = self.shared.oldest_undelivered(publisher.id);
                        if publisher.generated
                            >= publisher.oldest_undelivered.saturating_add(window)
                        {
                            blocked = true;
                            break;
                        }
                    }
                    now_ns
                }
            };
            let topic = (publisher.id + publisher.generated as usize) % self.topics.len();
            let counter = publisher.counters[topic];
            publisher.counters[topic] += 1;
            publisher.generated += 1;
            encoder.append(
                out,
                &self.topics[topic],
                &Probe {
                    sent_ns,
                    publisher: publisher.id as u32,
                    counter,
                },
            );
            let live = self.shared.live_subscribers[topic].load(Ordering::Relaxed);
            if self.window.measures(sent_ns) {
                publisher.published_measured += 1;
                publisher.expected_measured += live;
            }
        }
        counters.sent.store(publisher.generated, Ordering::Relaxed);
        counters
            .published_measured
            .store(publisher.published_measured, Ordering::Relaxed);
        counters
            .expected_measured
            .store(publisher.expected_measured, Ordering::SeqCst);
        if publisher.finished {
            counters.finished.store(true, Ordering::SeqCst);
        }
        blocked
    }
}

/// The intended send time of an open-loop publisher's message number `k`.
/// Publishers are spread evenly across each interval.
fn due_ns(window: &Window, rate: f64, publishers: usize, id: usize, k: u64) -> u64 {
    let interval_ns = publishers as f64 * 1e9 / rate;
    let phase = id as f64 / publishers as f64;
    window.start_ns + ((k as f64 + phase) * interval_ns) as u64
}

/// How many messages an open-loop publisher's schedule holds: the first
/// `k` whose send time is not before the end of the window.
fn planned_messages(window: &Window, rate: f64, publishers: usize, id: usize) -> u64 {
    let interval_ns = publishers as f64 * 1e9 / rate;
    let estimate = ((window.end_ns - window.start_ns) as f64 / interval_ns).max(0.0) as u64;
    let mut k = estimate;
    while k > 0 && due_ns(window, rate, publishers, id, k - 1) >= window.end_ns {
        k -= 1;
    }
    while due_ns(window, rate, publishers, id, k) < window.end_ns {
        k += 1;
    }
    k
}

/// What handling received frames needs from the thread.
struct Receiver<'a> {
    kind: TargetKind,
    window: &'a Window,
    finder: &'a ProbeFinder,
    tally: &'a mut Tally,
    touched: &'a mut Vec<usize>,
    drops: &'a mut DropQueue,
    /// The connection whose bytes are being handled.
    conn_index: usize,
}

impl Receiver<'_> {
    /// Handles every complete frame at the front of `buf`; returns the
    /// bytes consumed.
    fn frames(&mut self, conn: &mut Conn, buf: &[u8], now_ns: u64) -> Result<usize, Closed> {
        let mut used = 0;
        loop {
            let rest = &buf[used..];
            let head = match wsframe::parse_server_frame(rest) {
                Ok(Some(head)) => head,
                Ok(None) => return Ok(used),
                Err(e) => return Err(Closed::Protocol(e.to_string())),
            };
            let payload = head.payload(rest);
            match head.opcode {
                OP_TEXT | OP_BINARY if head.fin && !conn.in_fragmented_message => {
                    self.message(conn, payload, now_ns)?;
                }
                OP_TEXT | OP_BINARY if !conn.in_fragmented_message => {
                    conn.in_fragmented_message = true;
                    conn.fragments.clear();
                    conn.fragments.extend_from_slice(payload);
                }
                OP_CONTINUATION if conn.in_fragmented_message => {
                    conn.fragments.extend_from_slice(payload);
                    if head.fin {
                        conn.in_fragmented_message = false;
                        let message = std::mem::take(&mut conn.fragments);
                        let handled = self.message(conn, &message, now_ns);
                        conn.fragments = message;
                        handled?;
                    }
                }
                OP_TEXT | OP_BINARY | OP_CONTINUATION => {
                    return Err(Closed::Protocol("bad fragmentation".into()));
                }
                OP_PING => wsframe::append_client_frame(&mut conn.out, OP_PONG, payload),
                OP_CLOSE => return Err(Closed::ByServer(wsframe::close_code(payload))),
                _ => {}
            }
            used += head.frame_len();
        }
    }

    /// One complete data message.
    fn message(&mut self, conn: &mut Conn, message: &[u8], now_ns: u64) -> Result<(), Closed> {
        match self.kind {
            TargetKind::Pubsub => {
                match wire::message_type(message) {
                    b"event" => self.delivery(&mut conn.role, message, now_ns),
                    b"ack" => self.ack(&mut conn.role, message, now_ns)?,
                    b"error" => self
                        .tally
                        .record_error(wire::error_code(message).unwrap_or(b"unknown")),
                    _ => {}
                }
                Ok(())
            }
            TargetKind::Nats => {
                let Conn {
                    nats, role, out, ..
                } = conn;
                let parser = nats.get_or_insert_with(NatsParser::default);
                parser
                    .feed(message, |event| match event {
                        NatsEvent::Msg { payload, .. } => self.delivery(role, payload, now_ns),
                        NatsEvent::Ping => wsframe::append_client_frame(out, OP_BINARY, nats::PONG),
                        NatsEvent::Err(text) => self.tally.record_error(text),
                        NatsEvent::Info(_) | NatsEvent::Pong | NatsEvent::Ok => {}
                    })
                    .map_err(|e| Closed::Protocol(e.to_string()))
            }
        }
    }

    /// A publish ack, or a resuming subscriber's subscribe ack: its drop is
    /// scheduled from then.
    fn ack(&mut self, role: &mut Role, message: &[u8], now_ns: u64) -> Result<(), Closed> {
        let Role::Subscriber(Subscriber {
            stream: Some(stream),
            ..
        }) = role
        else {
            self.tally.acks += 1;
            return Ok(());
        };
        let resumed = stream
            .acked(message, now_ns, &mut self.tally.resume)
            .map_err(Closed::Protocol)?;
        if resumed {
            let at = stream.next_drop_ns(now_ns);
            self.drops.schedule(at, self.conn_index, self.window.end_ns);
        }
        Ok(())
    }

    /// One delivery to a subscriber: order check, counts, latency.
    fn delivery(&mut self, role: &mut Role, bytes: &[u8], now_ns: u64) {
        let Role::Subscriber(subscriber) = role else {
            self.tally.malformed += 1;
            return;
        };
        let Some(probe) = self.finder.find(bytes) else {
            self.tally.malformed += 1;
            return;
        };
        let arrival = match subscriber.stream.as_mut() {
            Some(stream) => {
                let Some(seq) = wire::event_seq(bytes) else {
                    self.tally.malformed += 1;
                    return;
                };
                stream.observe(seq, now_ns, &mut self.tally.resume)
            }
            None => {
                let Some(check) = subscriber.checks.get_mut(probe.publisher as usize) else {
                    self.tally.malformed += 1;
                    return;
                };
                check.observe(probe.counter)
            }
        };
        match arrival {
            Arrival::Duplicate => {
                self.tally.duplicates += 1;
                return;
            }
            Arrival::Late => self.tally.out_of_order += 1,
            Arrival::Gap(missing) => self.tally.gaps += missing,
            Arrival::InOrder => {}
        }
        if !subscriber.touched {
            subscriber.touched = true;
            self.touched.push(self.conn_index);
        }
        self.tally.delivered += 1;
        if self.window.measures(probe.sent_ns) {
            self.tally.delivered_measured += 1;
            self.tally
                .latency
                .saturating_record(now_ns.saturating_sub(probe.sent_ns));
        }
    }
}

impl Subscriber {
    /// Stores, for each publisher, the index of the first message this
    /// subscriber still waits for. Publisher `p`'s message `k` goes to
    /// topic `(p + k) % T`, so the `c`-th message to topic `t` has
    /// `k = c * T + (t - p) mod T`.
    fn publish_progress(&self, shared: &Shared, topics: usize) {
        for (publisher, check) in self.checks.iter().enumerate() {
            let offset = (self.topic + topics - publisher % topics) % topics;
            let next = check.next_expected() * topics as u64 + offset as u64;
            shared
                .progress(self.id, publisher)
                .store(next, Ordering::SeqCst);
        }
    }
}

impl Conn {
    /// Whether a non-blocking connect has completed; its error if it
    /// failed.
    fn connected(&self) -> io::Result<bool> {
        if let Some(error) = self.stream.take_error()? {
            return Err(error);
        }
        match self.stream.peer_addr() {
            Ok(_) => {
                self.stream.set_nodelay(true)?;
                Ok(true)
            }
            Err(e) if e.kind() == ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// While the upgrade is awaited: checks the response at the start of
    /// `buf` and once it is whole, queues the resume subscribe. Returns
    /// where WebSocket frames start in `buf` (0 if there was no upgrade to
    /// finish), or `None` while the response is incomplete.
    fn finish_upgrade(&mut self, buf: &[u8], topics: &[String]) -> Result<Option<usize>, String> {
        let Some(Handshake::Upgrading { key }) = &self.handshake else {
            return Ok(Some(0));
        };
        let Some(head_len) =
            connect::upgrade_response(buf, key).map_err(|e| format!("reconnect: {e:#}"))?
        else {
            return Ok(None);
        };
        self.handshake = None;
        if let Role::Subscriber(Subscriber {
            id,
            topic,
            stream: Some(stream),
            ..
        }) = &self.role
        {
            let mut request = Vec::new();
            stream.append_request(&mut request, &topics[*topic], *id as u64);
            wsframe::append_client_frame(&mut self.out, OP_TEXT, &request);
        }
        Ok(Some(head_len))
    }

    fn pending_out(&self) -> usize {
        self.out.len() - self.out_written
    }

    /// Writes pending output until done or the socket is full.
    fn flush(&mut self) -> io::Result<()> {
        while self.out_written < self.out.len() {
            match self.stream.write(&self.out[self.out_written..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => self.out_written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if self.out_written == self.out.len() {
            self.out.clear();
            self.out_written = 0;
        } else if self.out_written >= OUT_HIGH_WATER {
            self.out.drain(..self.out_written);
            self.out_written = 0;
        }
        Ok(())
    }
}

fn io_reason(error: &io::Error) -> String {
    match error.kind() {
        ErrorKind::ConnectionReset => "reset".to_string(),
        ErrorKind::BrokenPipe => "broken pipe".to_string(),
        _ => format!("io error: {error}"),
    }
}
