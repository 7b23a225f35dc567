//! What a connection may use of its worker while it runs: the shared
//! state, this worker's counters, buffers, timers and topic cache, the time
//! of this turn, and the lists the worker acts on at the end of the turn.
//!
//! Connections get a `&mut WorkerCtx` on every call; they never see the
//! worker itself, so imports run one way: worker -> connection -> context.

use super::shared::Shared;
use super::timers::Timers;
use super::topic_cache::TopicCache;
use crate::backplane::ReplyTo;
use crate::broker::change::{Change, Outcome};
use crate::broker::delivery::{ConnectionKey, WorkerMailbox};
use crate::http::gate::Gate;
use crate::http::handler::RestContext;
use crate::metrics::WorkerMetrics;
use crate::protocol::RawJson;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// Every socket read of a worker lands in its read buffer first.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// A worker's drain: until `deadline` every subscriber that keeps reading
/// gets what is queued to it; then (`forced`) what is left is closed.
pub struct Drain {
    pub deadline: Instant,
    pub forced: bool,
}

pub struct WorkerCtx {
    pub id: usize,
    pub shared: Arc<Shared>,
    pub mailbox: Arc<WorkerMailbox>,
    /// This worker's counters (only this thread writes them).
    pub metrics: Arc<WorkerMetrics>,
    /// Every socket read of this worker lands here first.
    pub read_buffer: Box<[u8]>,
    /// Queued events are gathered here into one write.
    pub batch: Vec<u8>,
    pub timers: Timers,
    /// Topics by name, without the broker's shared lock.
    pub topics: TopicCache,
    /// The time at the start of this turn.
    pub now: Instant,
    /// This worker's drain, once it has begun: the one place a worker
    /// keeps whether it drains (`Shared::draining` only asks it to).
    pub drain: Option<Drain>,
    /// Slots of connections that ended this turn, to reap at its end.
    pub ended: Vec<usize>,
    /// Connections that stopped reading with input left (their read budget
    /// ran out): the worker reads them again next turn.
    pub read_next_turn: Vec<ConnectionKey>,
}

impl WorkerCtx {
    pub fn new(id: usize, shared: Arc<Shared>) -> WorkerCtx {
        WorkerCtx {
            id,
            mailbox: Arc::clone(&shared.mailboxes[id]),
            metrics: Arc::clone(&shared.metrics[id]),
            shared,
            read_buffer: vec![0; READ_BUFFER_BYTES].into_boxed_slice(),
            batch: Vec::new(),
            timers: Timers::default(),
            topics: TopicCache::default(),
            now: Instant::now(),
            drain: None,
            ended: Vec::new(),
            read_next_turn: Vec::new(),
        }
    }

    /// Where every WebSocket publish of this worker enters the broker,
    /// through the backplane: where it carries out changes at once (a
    /// single broker), this finds the topic (in this worker's cache),
    /// assigns `seq` and fans out, now; otherwise the backend takes it and
    /// this returns `None`: the outcome comes to `reply_to` later.
    pub fn publish(
        &mut self,
        topic: &str,
        message: RawJson<'_>,
        reply_to: ConnectionKey,
    ) -> Option<Outcome> {
        let shared = &*self.shared;
        let topics = &mut self.topics;
        let reply_to = ReplyTo {
            mailbox: &self.mailbox,
            key: reply_to,
        };
        let outcome = shared.backplane.publish(
            &shared.broker,
            topic,
            message,
            || topics.get(&shared.broker, topic).map(|t| &**t),
            reply_to,
        )?;
        self.count(&outcome);
        Some(outcome)
    }

    /// Where every other change (REST create, delete and publish) enters
    /// the broker, through the backplane; `None` as for [`publish`](Self::publish).
    pub fn change(&mut self, change: &Change, reply_to: ConnectionKey) -> Option<Outcome> {
        let reply_to = ReplyTo {
            mailbox: &self.mailbox,
            key: reply_to,
        };
        let shared = &*self.shared;
        let outcome = shared
            .backplane
            .backend()
            .carry_out(&shared.broker, change, reply_to)?;
        self.count(&outcome);
        Some(outcome)
    }

    /// Counts what a change came to, when its requester learns it.
    pub fn count(&self, outcome: &Outcome) {
        if let Outcome::Published(_) = outcome {
            self.metrics.record_published();
        }
    }

    /// True once this worker has begun to drain.
    pub fn is_draining(&self) -> bool {
        self.drain.is_some()
    }

    /// What the REST handlers see of the world, now.
    pub fn rest_context(&self) -> RestContext<'_> {
        let shared = &*self.shared;
        RestContext {
            gate: Gate {
                api_key: shared.config.api_key.as_deref(),
                tokens: shared.config.tokens.as_deref(),
                allowed_origins: &shared.config.allowed_origins,
            },
            draining: self.is_draining(),
            uptime: shared.started.elapsed(),
            connections: shared.connections.load(Ordering::Relaxed),
            metrics: &shared.metrics,
            backplane: shared.backplane.backend(),
            ..RestContext::new(&shared.broker)
        }
    }
}
