//! What every worker of one broker shares: the settings, the broker's
//! topics, the backplane, the shutdown request, the connection count, each
//! worker's mailbox and counters, the TLS configuration; and the
//! process-wide numbering of connections. Workers and connections reach it through `WorkerCtx`.

use super::stream::TlsAcceptor;
use crate::backplane::Backplane;
use crate::broker::delivery::WorkerMailbox;
use crate::broker::Broker;
use crate::config::Config;
use crate::metrics::WorkerMetrics;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// What every worker shares.
pub struct Shared {
    pub config: Config,
    pub broker: Arc<Broker>,
    /// Where changes to the topics are carried out.
    pub backplane: Backplane,
    pub started: Instant,
    /// Set once by the shutdown handle: each worker sees it at the start
    /// of its next turn and begins its drain (`WorkerCtx::drain`).
    pub draining: AtomicBool,
    /// Open connections, across workers (for `MAX_CONNECTIONS`).
    pub connections: AtomicUsize,
    pub mailboxes: Vec<Arc<WorkerMailbox>>,
    /// Each worker's counters, summed by `/metrics` and `/stats`.
    pub metrics: Vec<Arc<WorkerMetrics>>,
    /// The TLS new connections get, when the broker serves it.
    pub tls: Option<Arc<TlsAcceptor>>,
}

impl Shared {
    /// One worker per mailbox; the backplane `config` asks for, started.
    pub fn new(config: Config, mailboxes: Vec<Arc<WorkerMailbox>>) -> io::Result<Shared> {
        let broker = Arc::new(Broker::new(config.ring_buffer_size));
        Ok(Shared {
            backplane: Backplane::start(&config, &broker)?,
            tls: config
                .tls
                .as_ref()
                .map(|tls| Arc::new(TlsAcceptor::new(tls))),
            broker,
            config,
            started: Instant::now(),
            draining: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
            metrics: mailboxes.iter().map(|_| Arc::default()).collect(),
            mailboxes,
        })
    }
}

/// Numbers the connections of the whole process, whichever worker accepts
/// them: the `generation` of a [`ConnectionKey`](crate::broker::delivery::ConnectionKey),
/// so that a key, logged as `conn`, names one connection for the life of
/// the process.
pub(crate) fn next_connection_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
