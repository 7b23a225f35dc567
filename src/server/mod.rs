//! The only code that touches sockets: listening sockets, the worker
//! threads and their event loops, connections, timers and shutdown.
//!
//! `Server::start` binds one listening socket per worker on the same
//! address (`SO_REUSEPORT`, so the kernel spreads accepts), starts the
//! workers and returns; `wait` joins them after a shutdown.

mod connection;
mod context;
#[cfg(any(test, fuzzing))]
pub mod harness;
mod http_service;
mod lifecycle;
mod output;
mod session;
mod timers;
mod topic_cache;
mod worker;

use crate::broker::delivery::WorkerMailbox;
use crate::broker::Broker;
use crate::config::Config;
use crate::metrics::WorkerMetrics;
use mio::net::TcpListener;
use mio::{Poll, Waker};
use socket2::{Domain, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

/// What every worker shares.
pub struct Shared {
    pub config: Config,
    pub broker: Broker,
    pub started: Instant,
    /// Set once by the shutdown handle; workers then drain.
    pub draining: AtomicBool,
    /// Open connections, across workers (for `MAX_CONNECTIONS`).
    pub connections: AtomicUsize,
    pub mailboxes: Vec<Arc<WorkerMailbox>>,
    /// Each worker's counters, summed by `/metrics` and `/stats`.
    pub metrics: Vec<Arc<WorkerMetrics>>,
}

impl Shared {
    /// One worker per mailbox.
    pub fn new(config: Config, mailboxes: Vec<Arc<WorkerMailbox>>) -> Shared {
        Shared {
            broker: Broker::new(config.ring_buffer_size),
            config,
            started: Instant::now(),
            draining: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
            metrics: mailboxes.iter().map(|_| Arc::default()).collect(),
            mailboxes,
        }
    }
}

/// A running broker.
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

/// Starts a graceful shutdown from any thread (a signal handler, a test).
#[derive(Clone)]
pub struct ShutdownHandle {
    shared: Arc<Shared>,
}

impl ShutdownHandle {
    /// Begins the drain. Returns false if it had already begun.
    pub fn shutdown(&self) -> bool {
        if self.shared.draining.swap(true, Ordering::AcqRel) {
            return false;
        }
        for mailbox in &self.shared.mailboxes {
            mailbox.wake();
        }
        true
    }
}

impl Server {
    /// Binds `config.addr` and starts `config.workers` event loops.
    pub fn start(config: Config) -> io::Result<Server> {
        let first = bind_listener(config.addr)?;
        let addr = first.local_addr()?;
        let mut listeners = vec![first];
        for _ in 1..config.workers {
            listeners.push(bind_listener(addr)?);
        }
        let mut polls = Vec::new();
        let mut mailboxes = Vec::new();
        for id in 0..config.workers {
            let poll = Poll::new()?;
            let waker = Waker::new(poll.registry(), worker::WAKER)?;
            mailboxes.push(Arc::new(WorkerMailbox::new(id, Some(waker))));
            polls.push(poll);
        }
        let shared = Arc::new(Shared::new(config, mailboxes));
        let mut workers = Vec::new();
        for (id, (poll, listener)) in polls.into_iter().zip(listeners).enumerate() {
            let worker = worker::Worker::new(id, poll, listener, Arc::clone(&shared))?;
            workers.push(
                std::thread::Builder::new()
                    .name(format!("worker-{id}"))
                    .spawn(move || worker.run())?,
            );
        }
        Ok(Server {
            addr,
            shared,
            workers,
        })
    }

    /// The address actually bound (the port is real even if 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Waits for every worker to finish draining.
    pub fn wait(self) {
        for worker in self.workers {
            if worker.join().is_err() {
                log::error!("a worker thread panicked");
            }
        }
    }
}

/// A non-blocking listening socket with `SO_REUSEPORT`, so that every
/// worker can have its own on one address.
fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(TcpListener::from_std(socket.into()))
}
