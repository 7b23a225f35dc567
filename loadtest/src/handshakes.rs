//! The `handshakes` scenario's loop: connections opened as fast as the
//! server takes them and closed as soon as they are set up. Set up means
//! the TCP connect, for `wss://` the TLS handshake, and with `upgrade` the
//! WebSocket upgrade (its 101). Each thread owns one `mio::Poll` and a
//! fixed number of connections in flight (`concurrency`); a finished one
//! (set up, or failed) is replaced at once by the next, until the thread's
//! share of the count is reached or the deadline passes. Everything is
//! non-blocking, through [`crate::tls::read`] and [`crate::tls::write`].
//!
//! A TLS connection is closed with close_notify. With `resume`, a TLS 1.3
//! connection first waits (at most [`TICKET_WAIT`]) for the session
//! ticket the server sends after the handshake, so that later connections
//! have one to resume with, as a real client that stays connected would
//! have; whether each handshake was resumed is asked of rustls
//! (`handshake_kind`). The time recorded per connection runs from the
//! connect to the end of the TLS handshake (to the 101 with `upgrade`;
//! the TCP connect alone for `ws://` without it); the ticket wait is not
//! in it.

use crate::connect;
use crate::endpoint::Endpoint;
use crate::run::{NodeOutcome, Outcome, ServerPids};
use crate::sysstat::{rss_kib, CpuSample, Subject};
use crate::tally::Tally;
use crate::tls;
use anyhow::{anyhow, Result};
use mio::{Events, Poll, Token};
use rustls::{ClientConnection, HandshakeKind, ProtocolVersion};
use std::io::{self, ErrorKind, Read, Write};
use std::time::{Duration, Instant};

/// How long a TLS 1.3 connection of `--resume` waits for its session
/// ticket before it closes all the same.
const TICKET_WAIT: Duration = Duration::from_millis(200);
/// The loop wakes at least this often, for deadlines and ticket waits.
const POLL_WAIT: Duration = Duration::from_millis(5);

/// What one thread does.
#[derive(Debug, Clone)]
pub struct ThreadPlan {
    /// The servers; connection `k` of the run goes to `k mod N`. Their TLS
    /// configuration resumes sessions or not, as the run asks.
    pub endpoints: Vec<Endpoint>,
    /// This thread's index among `threads`: it opens connections
    /// `thread`, `thread + threads`, ...
    pub thread: usize,
    pub threads: usize,
    /// Connections this thread opens at most.
    pub quota: u64,
    /// Connections in flight at once.
    pub concurrency: usize,
    /// Also do the WebSocket upgrade.
    pub upgrade: bool,
    /// Wait for a TLS 1.3 session ticket before closing.
    pub resume: bool,
    /// No connection is started after it.
    pub deadline: Instant,
    /// A connection not set up within this time fails.
    pub timeout: Duration,
}

/// How far a connection is.
enum Step {
    Connecting,
    Handshaking,
    /// Handshake done; waiting for a TLS 1.3 session ticket until then.
    AwaitingTicket(Instant),
    /// The upgrade request with this key is sent.
    Upgrading(String),
    Done,
}

struct Slot {
    stream: mio::net::TcpStream,
    tls: Option<Box<ClientConnection>>,
    node: usize,
    started: Instant,
    /// Connect to the end of the TLS handshake (or of the TCP connect).
    established: Option<Duration>,
    step: Step,
    /// Bytes received (the upgrade response).
    received: Vec<u8>,
    /// Bytes to send (the upgrade request) and how many are sent.
    out: Vec<u8>,
    out_written: usize,
}

/// Runs `plans`, one thread each, and measures the run: its length, and
/// the CPU the servers of `pids` (each node, Redis) and the harness used
/// over it.
pub fn run(plans: &[ThreadPlan], pids: &ServerPids) -> Result<Outcome> {
    let servers: Vec<Subject> = pids.nodes.iter().copied().map(Subject::Pid).collect();
    let rss_before: Vec<Option<u64>> = servers.iter().map(|&s| rss_kib(s)).collect();
    let harness_start = CpuSample::take(Subject::Harness);
    let server_start: Vec<Option<CpuSample>> =
        servers.iter().map(|&s| CpuSample::take(s)).collect();
    let redis_start = pids
        .redis
        .and_then(|pid| CpuSample::take(Subject::Pid(pid)));
    let started = Instant::now();
    let tallies: Vec<io::Result<Tally>> = std::thread::scope(|scope| {
        let threads: Vec<_> = plans
            .iter()
            .map(|plan| scope.spawn(move || run_thread(plan)))
            .collect();
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(io::Error::other("a thread panicked")))
            })
            .collect()
    });
    let secs = started.elapsed().as_secs_f64();
    let percent =
        |start: Option<CpuSample>, subject| Some(start?.percent_until(&CpuSample::take(subject)?));
    let node_cpu: Vec<Option<f64>> = servers
        .iter()
        .zip(server_start)
        .map(|(&s, start)| percent(start, s))
        .collect();
    let node_rss: Vec<Option<u64>> = servers.iter().map(|&s| rss_kib(s)).collect();
    let mut tally = Tally::default();
    for thread in tallies {
        tally.merge(thread.map_err(|e| anyhow!("a handshake thread: {e}"))?);
    }
    let endpoints = plans.first().map_or(&[][..], |p| &p.endpoints[..]);
    Ok(Outcome {
        tally,
        published: 0,
        expected: 0,
        measured_secs: secs,
        connect_secs: secs,
        harness_cpu_pct: percent(harness_start, Subject::Harness),
        server_cpu_pct: sum(&node_cpu),
        server_rss_kib: sum(&node_rss),
        server_rss_before_kib: sum(&rss_before),
        nodes: endpoints
            .iter()
            .enumerate()
            .map(|(i, endpoint)| NodeOutcome {
                addr: endpoint.addr.to_string(),
                cpu_pct: node_cpu.get(i).copied().flatten(),
                rss_kib: node_rss.get(i).copied().flatten(),
                ..NodeOutcome::default()
            })
            .collect(),
        redis_cpu_pct: pids
            .redis
            .and_then(|pid| percent(redis_start, Subject::Pid(pid))),
        slow: None,
    })
}

/// The sum of figures that are all known; `None` if one is not, or if
/// there are none.
fn sum<T: Copy + std::iter::Sum<T>>(figures: &[Option<T>]) -> Option<T> {
    if figures.is_empty() {
        return None;
    }
    figures.iter().copied().sum()
}

/// Runs one thread's share of the connections; returns what it counted:
/// `connected` (set up as asked), `connect_failures` with samples,
/// `connect_time`, and `resumed_handshakes`.
fn run_thread(plan: &ThreadPlan) -> io::Result<Tally> {
    let mut thread = HandshakeThread {
        poll: Poll::new()?,
        plan,
        slots: (0..plan.concurrency).map(|_| None).collect(),
        opened: 0,
        tally: Tally::default(),
        scratch: vec![0; 16 << 10],
    };
    for index in 0..thread.slots.len() {
        thread.start(index);
    }
    let mut events = Events::with_capacity(256);
    while thread.slots.iter().any(Option::is_some) {
        match thread.poll.poll(&mut events, Some(POLL_WAIT)) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for event in events.iter() {
            thread.step(event.token().0);
        }
        let now = Instant::now();
        for index in 0..thread.slots.len() {
            let Some(slot) = &thread.slots[index] else {
                continue;
            };
            if now.duration_since(slot.started) >= plan.timeout {
                thread.end(index, Err("timed out".to_string()));
            } else if matches!(slot.step, Step::AwaitingTicket(until) if now >= until) {
                thread.step(index);
            }
        }
    }
    Ok(thread.tally)
}

struct HandshakeThread<'a> {
    poll: Poll,
    plan: &'a ThreadPlan,
    slots: Vec<Option<Slot>>,
    /// Connections started so far.
    opened: u64,
    tally: Tally,
    scratch: Vec<u8>,
}

impl HandshakeThread<'_> {
    /// Starts the next connection in slot `index`, or leaves it empty once
    /// the quota is reached or the deadline has passed.
    fn start(&mut self, index: usize) {
        let plan = self.plan;
        self.slots[index] = None;
        while self.opened < plan.quota && Instant::now() < plan.deadline {
            let k = self.opened * plan.threads as u64 + plan.thread as u64;
            self.opened += 1;
            let node = (k % plan.endpoints.len() as u64) as usize;
            let endpoint = &plan.endpoints[node];
            let opened = connect::start_in_loop(endpoint, self.poll.registry(), Token(index));
            match opened {
                Ok((stream, tls)) => {
                    let tls = tls.map(Box::new);
                    self.slots[index] = Some(Slot {
                        stream,
                        tls,
                        node,
                        started: Instant::now(),
                        established: None,
                        step: Step::Connecting,
                        received: Vec::new(),
                        out: Vec::new(),
                        out_written: 0,
                    });
                    return;
                }
                Err(e) => self
                    .tally
                    .record_connect_failure(&anyhow::anyhow!("connect: {e}")),
            }
        }
    }

    /// Moves slot `index`'s connection on; ends it once set up or failed.
    fn step(&mut self, index: usize) {
        let Some(slot) = self.slots.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        match slot.advance(self.plan, &mut self.scratch) {
            Ok(false) => {}
            Ok(true) => self.end(index, Ok(())),
            Err(reason) => self.end(index, Err(reason)),
        }
    }

    /// Counts slot `index`'s connection, closes it, and starts the next.
    fn end(&mut self, index: usize, outcome: Result<(), String>) {
        let Some(mut slot) = self.slots[index].take() else {
            return;
        };
        match outcome {
            Ok(()) => {
                let elapsed = slot.started.elapsed();
                let time = match self.plan.upgrade {
                    true => elapsed,
                    false => slot.established.unwrap_or(elapsed),
                };
                self.tally.connected += 1;
                self.tally
                    .connect_time
                    .saturating_record(time.as_nanos() as u64);
                if let Some(tls) = slot.tls.as_deref_mut() {
                    self.tally.record_tls_session(tls);
                    if tls.handshake_kind() == Some(HandshakeKind::Resumed) {
                        self.tally.resumed_handshakes += 1;
                    }
                    tls.send_close_notify();
                    let _ = tls::write_pending(tls, &mut slot.stream);
                }
            }
            Err(reason) => {
                let addr = self.plan.endpoints[slot.node].addr;
                self.tally
                    .record_connect_failure(&anyhow::anyhow!("{addr}: {reason}"));
            }
        }
        let _ = self.poll.registry().deregister(&mut slot.stream);
        drop(slot);
        self.start(index);
    }
}

impl Slot {
    /// Goes as far as the socket allows: `Ok(true)` once the connection is
    /// set up as the plan asks, `Ok(false)` while it waits for the server.
    fn advance(&mut self, plan: &ThreadPlan, scratch: &mut [u8]) -> Result<bool, String> {
        loop {
            match &self.step {
                Step::Connecting => {
                    if let Some(error) = self.stream.take_error().map_err(io_text)? {
                        return Err(format!("connect: {error}"));
                    }
                    match self.stream.peer_addr() {
                        Ok(_) => {}
                        Err(e) if e.kind() == ErrorKind::NotConnected => return Ok(false),
                        Err(e) => return Err(format!("connect: {e}")),
                    }
                    self.stream.set_nodelay(true).map_err(io_text)?;
                    if self.tls.is_some() {
                        self.step = Step::Handshaking;
                        // The ClientHello.
                        self.flush()?;
                    } else {
                        self.established = Some(self.started.elapsed());
                        self.after_handshake(plan)?;
                    }
                }
                Step::Handshaking => {
                    self.flush()?;
                    self.receive(scratch)?;
                    let Some(tls) = self.tls.as_deref() else {
                        return Err("no TLS session".to_string());
                    };
                    if tls.is_handshaking() {
                        return Ok(false);
                    }
                    self.established = Some(self.started.elapsed());
                    if plan.resume
                        && tls.protocol_version() == Some(ProtocolVersion::TLSv1_3)
                        && tls.tls13_tickets_received() == 0
                    {
                        self.step = Step::AwaitingTicket(Instant::now() + TICKET_WAIT);
                    } else {
                        self.after_handshake(plan)?;
                    }
                }
                Step::AwaitingTicket(until) => {
                    let until = *until;
                    self.receive(scratch)?;
                    let tickets = self
                        .tls
                        .as_deref()
                        .map_or(0, |t| t.tls13_tickets_received());
                    if tickets == 0 && Instant::now() < until {
                        return Ok(false);
                    }
                    self.after_handshake(plan)?;
                }
                Step::Upgrading(key) => {
                    let key = key.clone();
                    self.flush()?;
                    self.receive(scratch)?;
                    match connect::upgrade_response(&self.received, &key) {
                        Ok(Some(_)) => self.step = Step::Done,
                        Ok(None) => return Ok(false),
                        Err(e) => return Err(format!("{e:#}")),
                    }
                }
                Step::Done => return Ok(true),
            }
        }
    }

    /// After the handshake: the upgrade request, or done.
    fn after_handshake(&mut self, plan: &ThreadPlan) -> Result<(), String> {
        if !plan.upgrade {
            self.step = Step::Done;
            return Ok(());
        }
        let (request, key) = connect::upgrade_request(&plan.endpoints[self.node]);
        self.out = request;
        self.out_written = 0;
        self.step = Step::Upgrading(key);
        self.flush()
    }

    /// Reads what the socket holds (through TLS, if any) into `received`.
    /// The server closing the connection is an error here.
    fn receive(&mut self, scratch: &mut [u8]) -> Result<(), String> {
        loop {
            let read = match self.tls.as_deref_mut() {
                None => self.stream.read(scratch).map(|n| (n, n < scratch.len())),
                Some(tls) => tls::read(tls, &mut self.stream, scratch),
            };
            match read {
                Ok((0, _)) => return Err("closed by the server".to_string()),
                Ok((n, drained)) => {
                    self.received.extend_from_slice(&scratch[..n]);
                    if drained {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(io_text(e)),
            }
        }
    }

    /// Writes what is left of `out` (and over TLS, the records rustls has
    /// to send) until done or the socket is full.
    fn flush(&mut self) -> Result<(), String> {
        match self.tls.as_deref_mut() {
            Some(tls) => {
                self.out_written +=
                    tls::write(tls, &mut self.stream, &self.out[self.out_written..])
                        .map_err(io_text)?;
            }
            None => {
                while self.out_written < self.out.len() {
                    match self.stream.write(&self.out[self.out_written..]) {
                        Ok(0) => return Err("the socket took no byte".to_string()),
                        Ok(n) => self.out_written += n,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => return Err(io_text(e)),
                    }
                }
            }
        }
        Ok(())
    }
}

fn io_text(error: io::Error) -> String {
    error.to_string()
}
