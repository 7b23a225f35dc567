//! One event-loop thread: its slab of connections and the phases of a
//! loop turn ([`Worker::turn`]), each a function below, in this order:
//!
//! 1. `begin_drain`, when shutdown was asked for since the last turn;
//! 2. `handle_ready`: accept, and read every ready connection;
//! 3. `read_carried_over`: read the connections whose read budget ran out
//!    last turn (their socket is still readable, with no new event);
//! 4. `resume_accepting` after an accept back-off;
//! 5. `take_posts`: the connections publishers queued events to, the
//!    outcomes the backplane answered, the notices other threads sent;
//! 6. `fire_timers`: handshake timeouts, heartbeats, close deadlines;
//! 7. `force_drain` when the drain deadline passed;
//! 8. `flush_touched`: write every connection touched this turn, once;
//! 9. `reap`: free the connections that ended;
//! 10. `close_http_when_drained` and `return_freed_memory`.
//!
//! Where connections come from and how their readiness is learnt is a
//! [`Sockets`]: mio's `Poll` and a listener in the broker
//! ([`MioSockets`], whose [`Worker::run`] polls and turns), memory in the
//! socket-free harness (`server::harness`), which runs this same turn.
//!
//! Connections are only freed in `reap`, so no event, post or timer of a
//! turn can name a slot that was reused.

use super::connection::Connection;
use super::context::{Drain, WorkerCtx};
use super::lifecycle::CLOSE_GRACE;
use super::shared::Shared;
use super::stream::Transport;
use super::stream::{Stream, TlsAcceptor};
use crate::broker::change::Outcome;
use crate::broker::delivery::{self, ConnectionKey, Notice};
use crate::http::Response;
use crate::metrics::DisconnectReason;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use std::io::{self, ErrorKind, Write};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const LISTENER: Token = Token(0);
pub const WAKER: Token = Token(1);
const FIRST_CONNECTION: usize = 2;
/// After running out of file descriptors, accepting pauses this long
/// instead of spinning on a listener that stays readable.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
const QUIET_BEFORE_MEMORY_RELEASE: Duration = Duration::from_secs(1);

/// One readiness event of a loop turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// Connections wait to be accepted.
    Listener,
    /// The connection in `slot` is readable (or closed, or failed) if
    /// `readable`, else only writable.
    Connection { slot: usize, readable: bool },
    /// A wake-up with nothing ready: the mailbox and the timers' turn.
    Wake,
}

/// Where a worker's connections come from, and how it learns that they
/// are ready: the OS through mio ([`MioSockets`]), or memory in tests and
/// fuzzing.
pub trait Sockets {
    type Socket: Transport;
    /// The next connection waiting to be accepted; `WouldBlock` when none.
    fn accept(&mut self) -> io::Result<(Self::Socket, SocketAddr)>;
    /// Reports the readiness of `socket`, the connection in `slot`, from
    /// now on.
    fn register(&mut self, socket: &mut Self::Socket, slot: usize) -> io::Result<()>;
    fn deregister(&mut self, socket: &mut Self::Socket);
    /// Accepts no more connections (the drain has begun).
    fn stop_listening(&mut self);
}

/// The broker's sockets: a non-blocking listener and a `Poll`; TLS over
/// every connection when the broker serves it.
pub struct MioSockets {
    poll: Poll,
    listener: Option<TcpListener>,
    tls: Option<Arc<TlsAcceptor>>,
}

impl MioSockets {
    pub fn new(
        poll: Poll,
        mut listener: TcpListener,
        tls: Option<Arc<TlsAcceptor>>,
    ) -> io::Result<MioSockets> {
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(MioSockets {
            poll,
            listener: Some(listener),
            tls,
        })
    }
}

impl Sockets for MioSockets {
    type Socket = Stream<TcpStream>;

    fn accept(&mut self) -> io::Result<(Stream<TcpStream>, SocketAddr)> {
        let listener = self.listener.as_ref().ok_or(ErrorKind::WouldBlock)?;
        let (socket, peer) = listener.accept()?;
        let _ = socket.set_nodelay(true);
        let stream = match &self.tls {
            Some(tls) => tls.accept(socket)?,
            None => Stream::Plain(socket),
        };
        Ok((stream, peer))
    }

    fn register(&mut self, stream: &mut Stream<TcpStream>, slot: usize) -> io::Result<()> {
        self.poll.registry().register(
            stream.socket_mut(),
            Token(slot + FIRST_CONNECTION),
            Interest::READABLE | Interest::WRITABLE,
        )
    }

    fn deregister(&mut self, stream: &mut Stream<TcpStream>) {
        let _ = self.poll.registry().deregister(stream.socket_mut());
    }

    fn stop_listening(&mut self) {
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
    }
}

/// What mio's events say, as the turn reads them.
fn ready_of(events: &Events) -> impl Iterator<Item = Ready> + '_ {
    events.iter().map(|event| match event.token() {
        LISTENER => Ready::Listener,
        WAKER => Ready::Wake,
        Token(token) => Ready::Connection {
            slot: token - FIRST_CONNECTION,
            readable: event.is_readable() || event.is_read_closed() || event.is_error(),
        },
    })
}

pub struct Worker<S: Sockets = MioSockets> {
    sockets: S,
    connections: Slab<Connection<S::Socket>>,
    ctx: WorkerCtx,
    touched: Vec<usize>,
    posts: Vec<ConnectionKey>,
    outcomes: Vec<(ConnectionKey, Outcome)>,
    notices: Vec<(ConnectionKey, Notice)>,
    accept_paused_until: Option<Instant>,
    /// When this worker, if still quiet, returns freed memory to the system.
    memory_release_at: Option<Instant>,
}

impl Worker<MioSockets> {
    /// Runs until shutdown has drained every connection of this worker.
    pub fn run(mut self) {
        delivery::enter_worker_thread(self.ctx.id);
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.sockets.poll.poll(&mut events, timeout) {
                if e.kind() != ErrorKind::Interrupted {
                    log::error!(worker = self.ctx.id, error:% = e; "poll failed");
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            self.turn(Instant::now(), ready_of(&events));
            if self.is_done() {
                log::debug!(worker = self.ctx.id; "worker drained");
                return;
            }
        }
    }

    fn poll_timeout(&self) -> Option<Duration> {
        if self.wants_another_turn() {
            return Some(Duration::ZERO);
        }
        let drain_deadline = self
            .ctx
            .drain
            .as_ref()
            .filter(|d| !d.forced)
            .map(|d| d.deadline);
        [
            self.ctx.timers.next_deadline(),
            self.accept_paused_until,
            drain_deadline,
            self.memory_release_at,
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|at| at.saturating_duration_since(Instant::now()))
    }
}

impl<S: Sockets> Worker<S> {
    pub fn new(id: usize, sockets: S, shared: Arc<Shared>) -> Worker<S> {
        Worker {
            sockets,
            connections: Slab::new(),
            ctx: WorkerCtx::new(id, shared),
            touched: Vec::new(),
            posts: Vec::new(),
            outcomes: Vec::new(),
            notices: Vec::new(),
            accept_paused_until: None,
            memory_release_at: None,
        }
    }

    /// True once the drain is over: no connection is left.
    pub fn is_done(&self) -> bool {
        self.ctx.drain.is_some() && self.connections.is_empty()
    }

    /// Posts, outcomes or unread input wait: the next turn must come at
    /// once, without waiting for readiness.
    pub fn wants_another_turn(&self) -> bool {
        self.ctx.mailbox.has_posts() || !self.ctx.read_next_turn.is_empty()
    }

    /// One loop turn at `now`, with what is `ready`; the phases of the
    /// module doc, in order.
    pub fn turn(&mut self, now: Instant, ready: impl IntoIterator<Item = Ready>) {
        self.ctx.now = now;
        self.begin_drain();
        // Taken before this turn's reads, which may add to it for the next.
        let carried_over = std::mem::take(&mut self.ctx.read_next_turn);
        let busy = self.handle_ready(ready);
        self.read_carried_over(carried_over);
        self.resume_accepting();
        self.take_posts();
        self.fire_timers();
        self.force_drain();
        self.flush_touched();
        self.reap();
        self.close_http_when_drained();
        self.return_freed_memory(busy);
    }

    /// The connection in `slot`, for the socket-free harness.
    #[cfg(any(test, fuzzing))]
    pub fn connection_mut(&mut self, slot: usize) -> Option<&mut Connection<S::Socket>> {
        self.connections.get_mut(slot)
    }

    /// What a connection may use of this worker, for the harness.
    #[cfg(any(test, fuzzing))]
    pub fn ctx(&self) -> &WorkerCtx {
        &self.ctx
    }

    /// Where its connections come from, for the harness.
    #[cfg(any(test, fuzzing))]
    pub fn sockets(&self) -> &S {
        &self.sockets
    }

    /// Accepts and reads what is ready; true if anything was.
    fn handle_ready(&mut self, ready: impl IntoIterator<Item = Ready>) -> bool {
        let mut busy = false;
        for ready in ready {
            busy = true;
            match ready {
                Ready::Listener => self.accept_connections(),
                Ready::Wake => {}
                Ready::Connection { slot, readable } => {
                    if let Some(conn) = self.connections.get_mut(slot) {
                        if readable {
                            conn.on_readable(&mut self.ctx);
                        }
                        touch(&mut self.touched, conn, slot);
                    }
                }
            }
        }
        busy
    }

    fn read_carried_over(&mut self, keys: Vec<ConnectionKey>) {
        for key in keys {
            if let Some(conn) = self.connections.get_mut(key.slot) {
                if conn.generation() == key.generation {
                    conn.on_readable(&mut self.ctx);
                    touch(&mut self.touched, conn, key.slot);
                }
            }
        }
    }

    fn resume_accepting(&mut self) {
        if self
            .accept_paused_until
            .is_some_and(|until| self.ctx.now >= until)
        {
            self.accept_paused_until = None;
            self.accept_connections();
        }
    }

    /// A worker hands the memory it freed back to the system once it has
    /// been quiet for a moment: mimalloc only does that work when the thread
    /// asks for it, and asking while busy costs latency.
    fn return_freed_memory(&mut self, busy: bool) {
        if busy {
            self.memory_release_at = Some(self.ctx.now + QUIET_BEFORE_MEMORY_RELEASE);
        } else if self.memory_release_at.is_some_and(|at| self.ctx.now >= at) {
            self.memory_release_at = None;
            // SAFETY: mi_collect may be called at any time on any thread; it
            // decommits this thread's free pages.
            unsafe { libmimalloc_sys::mi_collect(true) };
        }
    }

    fn accept_connections(&mut self) {
        if self.accept_paused_until.is_some() {
            return;
        }
        loop {
            let (mut socket, peer) = match self.sockets.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e)
                    if e.kind() == ErrorKind::Interrupted
                        || e.kind() == ErrorKind::ConnectionAborted =>
                {
                    continue
                }
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM: the pending connection
                    // stays in the backlog; try again shortly.
                    log::warn!(
                        worker = self.ctx.id, error:% = e, pause_ms = ACCEPT_BACKOFF.as_millis() as u64;
                        "accept failed; pausing accepts"
                    );
                    self.accept_paused_until = Some(self.ctx.now + ACCEPT_BACKOFF);
                    return;
                }
            };
            let shared = &self.ctx.shared;
            if shared.connections.fetch_add(1, Ordering::AcqRel) >= shared.config.max_connections {
                shared.connections.fetch_sub(1, Ordering::AcqRel);
                self.ctx.metrics.record_rejected();
                log::warn!(
                    peer:% = peer, worker = self.ctx.id, max_connections = shared.config.max_connections;
                    "connection refused: MAX_CONNECTIONS reached"
                );
                // Over TLS, nothing is sent before a handshake: the
                // refusal stays in rustls and the connection just closes.
                let mut refusal = Vec::new();
                Response::error(503, "SERVICE_UNAVAILABLE", "too many open connections")
                    .closing()
                    .write_to(&mut refusal);
                let _ = socket.write_all(&refusal);
                continue;
            }
            let entry = self.connections.vacant_entry();
            let slot = entry.key();
            if let Err(e) = self.sockets.register(&mut socket, slot) {
                log::error!(peer:% = peer, worker = self.ctx.id, error:% = e; "cannot register a connection");
                shared.connections.fetch_sub(1, Ordering::AcqRel);
                continue;
            }
            let generation = super::shared::next_connection_id();
            entry.insert(Connection::new(
                socket,
                slot,
                generation,
                peer,
                &mut self.ctx,
            ));
            self.ctx.metrics.record_accepted();
            log::debug!(conn = format!("{slot}.{generation}"), peer:% = peer, worker = self.ctx.id; "connection opened");
        }
    }

    /// Connections that publishers queued events to.
    fn take_posts(&mut self) {
        self.ctx.mailbox.drain(&mut self.posts);
        self.ctx.mailbox.drain_outcomes(&mut self.outcomes);
        for (key, outcome) in self.outcomes.drain(..) {
            if let Some(conn) = self.connections.get_mut(key.slot) {
                if conn.generation() == key.generation {
                    conn.on_outcome(&mut self.ctx, outcome);
                    touch(&mut self.touched, conn, key.slot);
                }
            }
        }
        for key in self.posts.drain(..) {
            if let Some(conn) = self.connections.get_mut(key.slot) {
                if conn.generation() == key.generation {
                    conn.unschedule();
                    touch(&mut self.touched, conn, key.slot);
                }
            }
        }
        self.ctx.mailbox.drain_notices(&mut self.notices);
        for (key, notice) in self.notices.drain(..) {
            if let Some(conn) = self.connections.get_mut(key.slot) {
                if conn.generation() == key.generation {
                    conn.on_notice(&mut self.ctx, notice);
                    touch(&mut self.touched, conn, key.slot);
                }
            }
        }
    }

    fn fire_timers(&mut self) {
        while let Some(entry) = self.ctx.timers.pop_due(self.ctx.now) {
            let Some(conn) = self.connections.get_mut(entry.slot) else {
                continue;
            };
            if conn.generation() != entry.generation || conn.timer != Some(entry.at) {
                continue;
            }
            conn.on_timer(&mut self.ctx);
            touch(&mut self.touched, conn, entry.slot);
        }
    }

    /// Starts the drain when the shutdown flag is first seen: before this
    /// turn's reads, so that every request read from now on sees it.
    fn begin_drain(&mut self) {
        let shared = Arc::clone(&self.ctx.shared);
        if self.ctx.drain.is_some() || !shared.draining.load(Ordering::Acquire) {
            return;
        }
        self.sockets.stop_listening();
        self.accept_paused_until = None;
        self.ctx.drain = Some(Drain {
            deadline: self.ctx.now + shared.config.shutdown_timeout,
            forced: false,
        });
        // WebSocket connections drain; HTTP connections stay until they
        // are done (answering 503, and /readyz "draining"), see
        // `close_http_when_drained`.
        for (slot, conn) in self.connections.iter_mut() {
            touch(&mut self.touched, conn, slot);
        }
    }

    /// Forces the last step of the drain when its deadline passes, and
    /// ends what is left once the closes had their grace.
    fn force_drain(&mut self) {
        let Some(drain) = &mut self.ctx.drain else {
            return;
        };
        if !drain.forced && self.ctx.now >= drain.deadline {
            drain.forced = true;
            log::info!(
                worker = self.ctx.id, connections = self.connections.len();
                "drain deadline reached; closing what is left"
            );
            for (slot, conn) in self.connections.iter_mut() {
                conn.force_shutdown(&mut self.ctx);
                touch(&mut self.touched, conn, slot);
            }
        } else if drain.forced && self.ctx.now >= drain.deadline + 2 * CLOSE_GRACE {
            for (_, conn) in self.connections.iter_mut() {
                conn.end(&mut self.ctx, DisconnectReason::Shutdown);
            }
        }
    }

    /// Once a draining worker has no WebSocket connection left, its HTTP
    /// connections close too, and the worker can finish.
    fn close_http_when_drained(&mut self) {
        if self.ctx.drain.is_none() || self.connections.iter().any(|(_, c)| c.is_websocket()) {
            return;
        }
        for (slot, conn) in self.connections.iter_mut() {
            conn.close_if_http(&mut self.ctx);
            touch(&mut self.touched, conn, slot);
        }
        self.flush_touched();
        self.reap();
    }

    fn flush_touched(&mut self) {
        // A flush may resume reading a connection that had paused, and that
        // may touch more connections: loop until the list stays empty.
        while !self.touched.is_empty() {
            let touched = std::mem::take(&mut self.touched);
            for &slot in &touched {
                if let Some(conn) = self.connections.get_mut(slot) {
                    conn.touched = false;
                    conn.flush(&mut self.ctx);
                }
            }
            self.touched = touched;
            self.touched.clear();
            self.take_posts();
        }
    }

    fn reap(&mut self) {
        for slot in std::mem::take(&mut self.ctx.ended) {
            let Some(mut conn) = self.connections.try_remove(slot) else {
                continue;
            };
            conn.socket_mut().close();
            self.sockets.deregister(conn.socket_mut());
            conn.release(&self.ctx);
            self.ctx.shared.connections.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn touch<T: Transport>(touched: &mut Vec<usize>, conn: &mut Connection<T>, slot: usize) {
    if !conn.touched {
        conn.touched = true;
        touched.push(slot);
    }
}
